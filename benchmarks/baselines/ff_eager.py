"""Eager Forward-Forward training, written the way the most popular PyTorch port writes it.

The port is mohammadpz/pytorch_forward_forward (``main.py``). Its layer is an ``nn.Linear``
subclass with its own Adam optimizer; per training step and layer it does::

    x_direction = x / (x.norm(2, 1, keepdim=True) + eps)
    h = relu(torch.mm(x_direction, W.T) + b.unsqueeze(0))        # forward(), called per batch half
    g_pos = forward(x_pos).pow(2).mean(1); g_neg = forward(x_neg).pow(2).mean(1)
    loss = log(1 + exp(cat([-g_pos + threshold, g_neg - threshold]))).mean()
    opt.zero_grad(); loss.backward(); opt.step()
    return forward(x_pos).detach(), forward(x_neg).detach()      # the next layer's input

Faithful to the port: the ``nn.Linear`` subclass and its ``forward`` expression; two forward
calls per step (positive and negative halves separately); mean goodness; the loss written as
``log(1 + exp(.))`` (softplus written naively: the same math as ffops' stable softplus wherever
``exp`` does not overflow, which it does not for these goodness values); one Adam per layer;
zero_grad / backward / step per layer; and, in :func:`eager_ff_step`, the next layer's input
recomputed by a fresh forward *after* the optimizer step.

Aligned to ffops' ``FFLinear`` defaults, so all contenders compute the same function:
``eps = 1e-8`` (the port uses 1e-4), ``threshold = 2.0`` and Adam ``lr = 0.03`` (as the port),
and one training step runs every layer once on one batch (the port instead trains layer by layer,
1000 full-batch steps each: the same per-step work, only the loop order differs).

:func:`eager_ff_step_fair` does *not* recompute the forward: it hands the pre-step activities to
the next layer, as ``FFLinear`` does (one forward per layer and step). Compare ffops to it first;
the port-faithful step is reported too. Its ``layer_loss`` argument takes a compiled per-layer
loss (:func:`compiled_layer_loss`) for the ``torch.compile`` contender.
"""

import itertools
from collections.abc import Callable, Sequence

import torch
from torch import nn

EPS = 1e-8
THRESHOLD = 2.0
LR = 0.03

LayerLoss = Callable[["EagerFFLayer", torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def direction_linear_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """The port's layer forward: ``relu(x / (||x||_2 + eps) @ W^T + b)`` (row-wise L2 norm)."""
    x_direction = x / (x.norm(2, 1, keepdim=True) + eps)
    return torch.relu(torch.mm(x_direction, weight.T) + bias.unsqueeze(0))


def ff_layer_loss(
    weight: torch.Tensor,
    bias: torch.Tensor,
    x_pos: torch.Tensor,
    x_neg: torch.Tensor,
    threshold: float,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One layer's FF loss as the port writes it, plus the detached activities for the next layer.

    A pure function of tensors (and two constants), so that ``torch.compile`` can take it whole.
    """
    h_pos = direction_linear_relu(x_pos, weight, bias, eps)
    h_neg = direction_linear_relu(x_neg, weight, bias, eps)
    g_pos = h_pos.pow(2).mean(1)
    g_neg = h_neg.pow(2).mean(1)
    loss = torch.log(1 + torch.exp(torch.cat([-g_pos + threshold, g_neg - threshold]))).mean()
    return loss, h_pos.detach(), h_neg.detach()


class EagerFFLayer(nn.Linear):
    """The port's ``Layer``: an ``nn.Linear`` whose forward normalizes its input's length first.

    Unlike the port, the optimizer lives outside the layer (:func:`make_optimizers`) so that the
    benchmark can build identical optimizers for every contender.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        threshold: float = THRESHOLD,
        eps: float = EPS,
        device=None,
        dtype=None,
    ):
        super().__init__(in_features, out_features, bias=True, device=device, dtype=dtype)
        self.threshold, self.eps = float(threshold), float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return direction_linear_relu(x, self.weight, self.bias, self.eps)

    def goodness(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(h, mean goodness)`` of one batch (the port's ``forward(x).pow(2).mean(1)``)."""
        h = self.forward(x)
        return h, h.pow(2).mean(1)


def eager_layer_loss(layer: EagerFFLayer, x_pos: torch.Tensor, x_neg: torch.Tensor):
    """:func:`ff_layer_loss` of ``layer``'s parameters, run eagerly."""
    return ff_layer_loss(layer.weight, layer.bias, x_pos, x_neg, layer.threshold, layer.eps)


def compiled_layer_loss(**compile_kwargs) -> LayerLoss:
    """``torch.compile`` of :func:`ff_layer_loss` (inductor, ``dynamic=False`` by default), as a
    ``layer_loss`` for :func:`eager_ff_step_fair`.

    Only the layer math is compiled (forward and, through AOTAutograd, its backward); the Adam
    step stays the eager ``torch.optim.Adam`` shared by every contender, so that the comparison
    isolates the layer. One compiled graph per layer shape (two for 784-2000-2000).
    """
    compile_kwargs.setdefault("dynamic", False)
    fn = torch.compile(ff_layer_loss, **compile_kwargs)

    def layer_loss(layer: EagerFFLayer, x_pos: torch.Tensor, x_neg: torch.Tensor):
        return fn(layer.weight, layer.bias, x_pos, x_neg, layer.threshold, layer.eps)

    return layer_loss


def make_layers(
    sizes: Sequence[int], *, threshold: float = THRESHOLD, eps: float = EPS, device=None, dtype=None
) -> list[EagerFFLayer]:
    """``EagerFFLayer`` s for widths ``sizes`` (e.g. ``[784, 2000, 2000]``: two layers)."""
    return [
        EagerFFLayer(i, o, threshold=threshold, eps=eps, device=device, dtype=dtype)
        for i, o in itertools.pairwise(sizes)
    ]


def make_optimizers(layers: Sequence[nn.Module], lr: float = LR) -> list[torch.optim.Optimizer]:
    """One ``torch.optim.Adam(lr)`` per layer, as the port (default Adam settings otherwise)."""
    return [torch.optim.Adam(layer.parameters(), lr=lr) for layer in layers]


def eager_ff_step(
    layers: Sequence[EagerFFLayer],
    optimizers: Sequence[torch.optim.Optimizer],
    x_pos: torch.Tensor,
    x_neg: torch.Tensor,
) -> list[torch.Tensor]:
    """One port-faithful training step over all layers; returns the per-layer losses (detached).

    As the port: loss from two forward calls, zero_grad / backward / step, then the next layer's
    input is a *fresh* forward of the updated layer (three forward passes per layer and step).
    """
    losses = []
    for layer, opt in zip(layers, optimizers):
        _, g_pos = layer.goodness(x_pos)
        _, g_neg = layer.goodness(x_neg)
        loss = torch.log(1 + torch.exp(torch.cat([-g_pos + layer.threshold, g_neg - layer.threshold]))).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
        x_pos, x_neg = layer(x_pos).detach(), layer(x_neg).detach()
    return losses


def eager_ff_step_fair(
    layers: Sequence[EagerFFLayer],
    optimizers: Sequence[torch.optim.Optimizer],
    x_pos: torch.Tensor,
    x_neg: torch.Tensor,
    layer_loss: LayerLoss = eager_layer_loss,
) -> list[torch.Tensor]:
    """One training step without the port's recomputation; returns the per-layer losses (detached).

    The next layer's input is the activity computed *before* the optimizer step (as ffops'
    ``FFLinear`` does): one forward per layer and step. ``layer_loss`` defaults to the eager
    :func:`eager_layer_loss`; pass :func:`compiled_layer_loss` () for the compiled contender.
    """
    losses = []
    for layer, opt in zip(layers, optimizers):
        loss, x_pos, x_neg = layer_loss(layer, x_pos, x_neg)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return losses
