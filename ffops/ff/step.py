"""One Forward-Forward training step's forward/backward over the layers (no optimizer, no data).

``layer_losses`` runs the concatenated positive + negative batch up the layer chain. Each layer gets
the detached activity of the layer below with its ``sumsq`` (so its input normalization needs no
extra pass), computes its local loss, and, with ``backward="per_layer"``, calls ``loss.backward()``
at once: the tensors it saved for backward are freed before the next layer runs, so the memory
saved for backward is that of one layer, whatever the depth. ``backward="joint"`` sums the losses
and calls backward once (same gradients, since none crosses layers; memory grows with depth).

Modes:
* ``"all"``: every layer learns from every step.
* ``"greedy"``: only ``train_layers`` (one layer at a time) learns; layers below run without autograd,
  layers above do not run.
* ``"collaborative"`` (Lorberbom et al.): layer ``i``'s logit is ``sign * (G_i + gamma_i - theta_i)``
  with ``gamma_i = sum_{t != i} stopgrad(G_t - theta_t)`` (``collab_layers="others"``) or over
  ``t < i`` only (``"past"``). This is the paper's ``G_i + sum_{t != i} G_t - theta`` with
  ``theta = sum_t theta_t``: every layer's logit is the whole net's summed log-odds, with gradient
  through its own goodness only. ``"others"`` needs the upper layers' goodness before the lower
  layers learn: it first runs the whole net once without autograd, then attaches the learning
  layers' backward to that pass's outputs (no second forward), unless the caller already has those
  goodnesses (``centered_goodness``: FFTrainer takes them from its hard-negative pass, which scores
  every label, the true and the drawn wrong one included, with the same parameters); ``"past"``
  needs nothing extra (single pass). ``collab_weight`` (``w`` in ``G_i + w * gamma_i``) scales the offset:
  1 is the paper's collaborative FF, 0 plain FF, values in between let each layer keep part of its
  own objective (in deep nets full collaboration can silence the upper layers).
"""

import torch

MODES = ("all", "greedy", "collaborative")
COLLAB_LAYERS = ("others", "past")
BACKWARDS = ("per_layer", "joint")


def layer_losses(
    model,
    x: torch.Tensor,
    n_pos: int,
    *,
    mode: str = "all",
    collab_layers: str = "others",
    train_layers=None,
    backward: str = "per_layer",
    modules=None,
    centered_goodness=None,
    collab_weight: float = 1.0,
    outputs=None,
):
    """Forward (and backward) of one step on ``x = cat([x_pos, x_neg])`` with ``n_pos`` positive rows
    (a tensor, or ffops.nn.OverlayRows: label overlays of shared images, for the first layer).

    Args:
        model: an ffops.ff.FFNet.
        mode, collab_layers, collab_weight, backward: see the module docstring.
        train_layers: indices of the layers that learn (default all; greedy: one).
        modules: callables to run in place of ``model.layers[i]`` for the learning layers (e.g. each
            layer wrapped in its own DistributedDataParallel); default the layers themselves.
        centered_goodness: for collaborative ``"others"``: per layer ``[rows]`` its goodness minus its
            threshold on the rows of ``x`` with the current parameters; saves the extra forward pass.
        outputs: per run layer ``(h, sumsq)`` on the rows of ``x`` with the current parameters (e.g.
            from FFTrainer's hard-negative pass): no layer runs its forward again, the learning layers
            attach their backward to these (FFLinear's ``output``).

    Returns:
        ``(losses, goodness)``: ``losses`` a dict ``{layer index: detached loss}`` of the learning
        layers; ``goodness`` a list ``[B]`` per run layer of its own (offset-free) goodness.
        Gradients are accumulated into the learning layers' ``.grad`` (backward already done).
    """
    n_layers = len(model.layers)
    train_layers = sorted(set(range(n_layers) if train_layers is None else train_layers))
    top = train_layers[-1] if mode == "greedy" else n_layers - 1
    modules = modules if modules is not None else model.layers
    offsets = None
    if mode == "collaborative" and collab_layers == "others":
        centered = centered_goodness
        if centered is None:
            with torch.no_grad():  # the extra pass: every layer's goodness with the current parameters
                pass_outputs = model(x)
            centered = [model.layer_goodness(i, out) - model.layers[i].threshold for i, out in enumerate(pass_outputs)]
            if outputs is None:  # the layers need not run on x again
                outputs = [(out.h, out.sumsq) for out in pass_outputs]
        elif len(centered) != n_layers or any(c.shape != (x.shape[0],) for c in centered):
            raise ValueError(
                f"layer_losses: centered_goodness must hold {n_layers} tensors of shape "
                f"[{x.shape[0]}], got {[tuple(c.shape) for c in centered]}"
            )
        total = torch.stack(list(centered)).sum(0)
        offsets = [total - c for c in centered]
    if outputs is not None and len(outputs) != top + 1:
        raise ValueError(f"layer_losses: outputs must hold the {top + 1} run layers' (h, sumsq), got {len(outputs)}")
    losses, goodness, joint = {}, [], []
    past = torch.zeros(x.shape[0], device=x.device)
    h, sumsq = x, None
    for i in range(top + 1):
        layer = model.layers[i]
        known = {} if outputs is None else {"output": outputs[i]}
        if i in train_layers:
            offset = None
            if mode == "collaborative":
                offset = offsets[i] if offsets is not None else (past if i > 0 else None)
                if offset is not None and collab_weight != 1.0:
                    offset = collab_weight * offset
            out = modules[i](h, n_pos, x_sumsq=sumsq, goodness_offset=offset, **known)
            if backward == "per_layer":
                out.loss.backward()
            else:
                joint.append(out.loss)
            losses[i] = out.loss.detach()
        else:
            with torch.no_grad():
                out = layer(h, None, x_sumsq=sumsq, **known)
        g = model.layer_goodness(i, out)
        goodness.append(g)
        if mode == "collaborative" and offsets is None:
            past = past + (g - layer.threshold)
        h, sumsq = out.h, out.sumsq
    if joint:
        torch.stack(joint).sum().backward()
    return losses, goodness
