"""``FFNet``: a stack of fused Forward-Forward linear layers (ffops.nn.FFLinear).

The network never runs end-to-end backprop: every layer has its own local loss and receives the
detached activity of the layer below (with its ``sumsq``, so the next layer's length normalization
costs no extra pass). Training lives in ffops.ff.train; this module only holds the layers, their
configuration and the inference chain used for prediction.
"""

import math
from collections.abc import Sequence

import torch
from torch import nn

from ffops._validation import check_choice
from ffops.nn.ff import GOODNESS, LOSSES, NORMS, FFLayerOutput, FFLinear, OverlayRows

INITS = ("torch", "fan_in", "fan_out")


def _check_sizes(sizes) -> list[int]:
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
        raise TypeError(f"FFNet: sizes must be a list of ints like [784, 500, 500], got {sizes!r}")
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"FFNet: sizes needs the input size and at least one layer width, got {sizes}")
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, int) or s <= 0:
            raise ValueError(f"FFNet: sizes must be positive ints, got {sizes}")
    return sizes


def default_threshold(goodness: str, width: int) -> float:
    """The usual threshold: 2.0 for mean goodness (PyTorch ports), the layer width for sum goodness
    (Hinton's MATLAB code); the two coincide up to scale (``sum - D == D * (mean - 1)``)."""
    return 2.0 if goodness == "mean" else float(width)


class FFNet(nn.Module):
    """A Forward-Forward MLP: ``sizes = [in, h1, h2, ...]`` gives ``len(sizes) - 1`` FFLinear layers.

    Args:
        sizes: input size then the layer widths, e.g. ``[784, 500, 500]``.
        num_classes: labels overlaid on the first ``num_classes`` input features (supervised FF).
        threshold: theta of every layer (a float), one per layer (a list), or None for
            ``default_threshold`` (2.0 for mean goodness, the width for sum goodness).
        goodness, norm, loss, alpha, sign, eps, peer_weight, peer_momentum: as ffops.nn.FFLinear
            (``norm`` is the length normalization of each layer's input, the raw image included).
            The defaults (SymBa's loss with alpha 8) are the recipe measured best with FFTrainer's
            (how it was chosen: benchmarks/results/README.md); FFLinear's own default is Hinton's softplus loss.
        init: ``"torch"`` (nn.Linear's default), ``"fan_in"`` / ``"fan_out"``: normal weights with std
            ``1 / sqrt(fan)`` and zero biases (Hinton's code / the loeweX port use these).
    """

    def __init__(
        self,
        sizes,
        *,
        num_classes: int = 10,
        threshold=None,
        goodness: str = "mean",
        norm: str = "rms",
        loss: str = "symba",
        alpha: float = 8.0,
        sign: int = 1,
        eps: float = 1e-8,
        peer_weight: float = 0.0,
        peer_momentum: float = 0.9,
        init: str = "fan_in",
        device=None,
        dtype=None,
    ):
        super().__init__()
        sizes = _check_sizes(sizes)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"FFNet: num_classes must be an int >= 2, got {num_classes!r}")
        check_choice("FFNet", "goodness", goodness, GOODNESS)
        check_choice("FFNet", "norm", norm, NORMS)
        check_choice("FFNet", "loss", loss, LOSSES)
        check_choice("FFNet", "init", init, INITS)
        n = len(sizes) - 1
        if threshold is None:
            thresholds = [default_threshold(goodness, w) for w in sizes[1:]]
        elif isinstance(threshold, Sequence) and not isinstance(threshold, str):
            thresholds = [float(t) for t in threshold]
            if len(thresholds) != n:
                raise ValueError(f"FFNet: threshold has {len(thresholds)} entries for {n} layers")
        else:
            thresholds = [threshold] * n
        self.sizes, self.num_classes = sizes, num_classes
        self.config = {
            "sizes": sizes,
            "num_classes": num_classes,
            "threshold": thresholds,
            "goodness": goodness,
            "norm": norm,
            "loss": loss,
            "alpha": alpha,
            "sign": sign,
            "eps": eps,
            "peer_weight": peer_weight,
            "peer_momentum": peer_momentum,
            "init": init,
        }
        self.layers = nn.ModuleList(
            FFLinear(
                sizes[i],
                sizes[i + 1],
                threshold=thresholds[i],
                goodness=goodness,
                norm=norm,
                loss=loss,
                alpha=alpha,
                sign=sign,
                eps=eps,
                peer_weight=peer_weight,
                peer_momentum=peer_momentum,
                device=device,
                dtype=dtype,
            )
            for i in range(n)
        )
        if init != "torch":
            with torch.no_grad():
                for layer in self.layers:
                    fan = layer.in_features if init == "fan_in" else layer.out_features
                    layer.weight.normal_(0.0, 1.0 / math.sqrt(fan))
                    if layer.bias is not None:
                        layer.bias.zero_()

    @classmethod
    def from_config(cls, config: dict, **kwargs) -> "FFNet":
        """Rebuild a net from ``net.config`` (e.g. from a checkpoint); kwargs: device, dtype."""
        return cls(**config, **kwargs)

    @property
    def device(self) -> torch.device:
        return self.layers[0].weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.layers[0].weight.dtype

    @property
    def in_features(self) -> int:
        return self.sizes[0]

    def __len__(self) -> int:
        return len(self.layers)

    def layer_goodness(self, index: int, out: FFLayerOutput) -> torch.Tensor:
        """Layer ``index``'s own goodness ``[B]`` (without any collaborative offset) from its output."""
        return self.goodness_from_sumsq(index, out.sumsq)

    def goodness_from_sumsq(self, index: int, sumsq: torch.Tensor) -> torch.Tensor:
        """Layer ``index``'s goodness from its output's per-row sum of squares."""
        layer = self.layers[index]
        return sumsq * (1.0 / layer.out_features if layer.goodness_kind == "mean" else 1.0)

    def layer_logit(self, index: int, goodness: torch.Tensor) -> torch.Tensor:
        """``sign * (G - threshold)``: the layer's log-odds that a row is positive data."""
        layer = self.layers[index]
        return layer.sign * (goodness - layer.threshold)

    @torch.no_grad()
    def forward(self, x: torch.Tensor | OverlayRows) -> list[FFLayerOutput]:
        """Inference through all layers (no loss, no autograd): one FFLayerOutput per layer.

        ``x``: ``[B, in_features]`` with labels already overlaid (see ffops.ff.overlay_labels), or
        ffops.nn.OverlayRows."""
        if (not isinstance(x, OverlayRows) and x.dim() != 2) or x.shape[1] != self.in_features:
            raise ValueError(f"FFNet: x must be [batch, {self.in_features}], got {tuple(x.shape)}")
        outs, h, sumsq = [], x, None
        for layer in self.layers:
            out = layer(h, None, x_sumsq=sumsq)
            outs.append(out)
            h, sumsq = out.h, out.sumsq
        return outs

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, num_classes={self.num_classes}"
