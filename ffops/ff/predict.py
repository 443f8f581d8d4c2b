"""Prediction with a Forward-Forward net, both ways.

(a) By goodness: every sample with every candidate label, ``B * C`` rows in one batched inference
    pass (chunked over samples to bound memory); the score of a label is the sum over layers of the
    layer's log-odds ``sign * (G - threshold)`` (optionally skipping the first layer, as Hinton does);
    argmax. Because the label only changes the first ``C`` input features, the first layer is run
    once per sample plus a rank-``C`` correction (exact: the input norm does not depend on which
    label is on), which makes it ``C`` times cheaper than a plain pass; the ``C`` rows of a sample are
    written in one fused pass (ffops' ff_label_rows kernels).
(b) By a linear softmax head (``LinearHead``) on the length-normalized activities of (upper)
    layers, computed in one pass with a neutral label (``1 / C`` in every label position).
"""

from collections.abc import Sequence

import torch
from torch import nn

from ffops.ff.labels import neutral_overlay, overlay_all_labels
from ffops.ff.model import FFNet
from ffops.ops._common import stat_dtype
from ffops.ops.ff_linear import ff_label_rows

METHODS = ("goodness", "head")


def _check_x(op: str, model: FFNet, x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{op}: x must be a float tensor [batch, {model.in_features}]")
    if x.dim() != 2 or x.shape[1] != model.in_features:
        raise ValueError(f"{op}: x must be [batch, {model.in_features}], got {tuple(x.shape)}")
    return x.to(model.device, model.dtype)


def _check_chunk(op: str, chunk_size) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"{op}: chunk_size must be an int >= 1, got {chunk_size!r}")
    return chunk_size


def _first_layer_all_labels(layer, x: torch.Tensor, num_classes: int, on_value):
    """``layer`` (an FFLinear) on every (sample, label) overlay of ``x``: ``(h, sumsq)`` with
    ``B * C`` rows, from one GEMM on ``B`` rows and one fused expansion pass (ffops' ff_label_rows).
    Row ``b * C + c``: sample ``b`` with label ``c``."""
    c = num_classes
    on = x.amax(1) if on_value == "max" else x.new_full((x.shape[0],), float(on_value))
    base = x.clone()
    base[:, :c] = 0
    pre = base @ layer.weight.t()  # [B, out]
    scale = None
    if layer.normalize_input:  # FFLinear's input scale, from |overlay|^2 = |base|^2 + on^2
        stat = stat_dtype(x.dtype)
        x_sumsq = base.to(stat).square().sum(1) + on.to(stat).square()
        norm_scale = 1.0 if layer.norm == "l2" else 1.0 / layer.in_features
        scale = 1.0 / (torch.sqrt(x_sumsq * norm_scale) + layer.eps)
    return ff_label_rows(pre, on, layer.weight[:, :c], layer.bias, scale=scale)


@torch.no_grad()
def goodness_per_label(
    model: FFNet,
    x: torch.Tensor,
    *,
    on_value=1.0,
    skip_first: bool = False,
    chunk_size: int = 1024,
    fast_first_layer: bool = True,
    num_layers: int | None = None,
) -> torch.Tensor:
    """Scores ``[B, C]`` (float64): for each label, the sum over layers of ``sign * (G - threshold)``
    with that label overlaid (``skip_first``: leave out the first layer's term, when there are
    several layers). ``chunk_size`` samples (``chunk_size * C`` rows) go through the net at a time.
    ``fast_first_layer=False`` runs the first layer on all ``B * C`` overlays (the plain way).
    ``num_layers``: use only the first ``num_layers`` layers (e.g. while greedy training is below)."""
    layer_g = layer_goodness_per_label(
        model,
        x,
        on_value=on_value,
        chunk_size=chunk_size,
        fast_first_layer=fast_first_layer,
        num_layers=num_layers,
        op="ffops.ff.goodness_per_label",
    )
    first = 1 if skip_first and len(layer_g) > 1 else 0
    scores = torch.zeros(layer_g.shape[1:], device=layer_g.device, dtype=torch.float64)
    for i in range(first, len(layer_g)):
        scores += model.layer_logit(i, layer_g[i])
    return scores


def _check_num_layers(op: str, model: FFNet, num_layers) -> int:
    n_layers = len(model.layers)
    if num_layers is None:
        return n_layers
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or not 1 <= num_layers <= n_layers:
        raise ValueError(f"{op}: num_layers must be an int in [1, {n_layers}] or None, got {num_layers!r}")
    return num_layers


def _iter_label_outputs(model: FFNet, x: torch.Tensor, n_layers: int, on_value, fast_first_layer: bool):
    """Yields the first ``n_layers`` layers' ``(h, sumsq)`` on every (sample, label) overlay of ``x``:
    ``B * C`` rows, row ``b * C + c`` is sample ``b`` with label ``c``."""
    c = model.num_classes
    if fast_first_layer:
        h, sumsq = _first_layer_all_labels(model.layers[0], x, c, on_value)
    else:
        out = model.layers[0](overlay_all_labels(x, c, on_value), None)
        h, sumsq = out.h, out.sumsq
    yield h, sumsq
    for i in range(1, n_layers):
        out = model.layers[i](h, None, x_sumsq=sumsq)
        h, sumsq = out.h, out.sumsq
        yield h, sumsq


@torch.no_grad()
def layer_goodness_per_label(
    model: FFNet,
    x: torch.Tensor,
    *,
    on_value=1.0,
    chunk_size: int = 1024,
    fast_first_layer: bool = True,
    num_layers: int | None = None,
    op: str = "ffops.ff.layer_goodness_per_label",
) -> torch.Tensor:
    """Each layer's own goodness ``G`` ``[L, B, C]`` for every sample with every label overlaid (see
    ``goodness_per_label`` for the arguments; ``L`` is ``num_layers`` or all layers). Held in float64, so
    the sums over layers of ``G - threshold`` decide near-ties as float64 arithmetic does."""
    x = _check_x(op, model, x)
    chunk_size = _check_chunk(op, chunk_size)
    c, n_layers = model.num_classes, _check_num_layers(op, model, num_layers)
    out_g = torch.empty(n_layers, x.shape[0], c, device=x.device, dtype=torch.float64)
    for start in range(0, x.shape[0], chunk_size):
        xb = x[start : start + chunk_size]
        for i, (_h, sumsq) in enumerate(_iter_label_outputs(model, xb, n_layers, on_value, fast_first_layer)):
            out_g[i, start : start + xb.shape[0]] = model.goodness_from_sumsq(i, sumsq).view(xb.shape[0], c)
    return out_g


@torch.no_grad()
def layer_outputs_per_label(model: FFNet, x: torch.Tensor, *, on_value=1.0, num_layers: int | None = None):
    """Each layer's ``(h [B * C, width], sumsq [B * C])`` on every (sample, label) overlay of ``x``
    (row ``b * C + c``: sample ``b`` with label ``c``), all kept: ``B * C * sum(widths)`` values, for a
    training batch whose rows are among them (FFTrainer's hard-negative pass)."""
    op = "ffops.ff.layer_outputs_per_label"
    x = _check_x(op, model, x)
    return list(_iter_label_outputs(model, x, _check_num_layers(op, model, num_layers), on_value, True))


def resolve_head_layers(layers, n_layers: int) -> list[int]:
    """``"upper"``: all layers but the first (the first alone for a one-layer net); ``"all"``; or a
    list of layer indices."""
    if layers == "upper":
        return list(range(1, n_layers)) if n_layers > 1 else [0]
    if layers == "all":
        return list(range(n_layers))
    if (
        isinstance(layers, Sequence)
        and not isinstance(layers, str)
        and layers
        and all(isinstance(i, int) and not isinstance(i, bool) and -n_layers <= i < n_layers for i in layers)
    ):
        return sorted({i % n_layers for i in layers})
    raise ValueError(
        f"head_layers must be 'upper', 'all' or a non-empty list of layer indices in [0, {n_layers}), got {layers!r}"
    )


@torch.no_grad()
def head_features(
    model: FFNet,
    x: torch.Tensor,
    layers="upper",
    *,
    on_value=1.0,
    neutral_value=None,
    supervised: bool = True,
) -> torch.Tensor:
    """The softmax head's input ``[B, sum of widths]``: the length-normalized activities (the layer's
    own ``norm``) of ``layers`` after one pass with a neutral label (``supervised=False``: the raw
    input, for unsupervised FF)."""
    x = _check_x("ffops.ff.head_features", model, x)
    idx = resolve_head_layers(layers, len(model.layers))
    if supervised:
        x = neutral_overlay(x, model.num_classes, on_value, neutral_value)
    outs = model(x)
    feats = []
    for i in idx:
        layer, out = model.layers[i], outs[i]
        norm_scale = 1.0 if layer.norm == "l2" else 1.0 / layer.out_features
        scale = 1.0 / (torch.sqrt(out.sumsq * norm_scale) + layer.eps)
        feats.append(out.h * scale.to(out.h.dtype)[:, None])
    return torch.cat(feats, 1)


class LinearHead(nn.Linear):
    """Linear softmax classifier on FF features (zero-initialized, as in the loeweX port); train it
    with cross-entropy on detached features. ``layers`` records which layers feed it."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        layers="upper",
        bias: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__(in_features, num_classes, bias=bias, device=device, dtype=dtype)
        self.layers = layers
        with torch.no_grad():
            self.weight.zero_()
            if self.bias is not None:
                self.bias.zero_()

    @classmethod
    def for_model(cls, model: FFNet, layers="upper", **kwargs) -> "LinearHead":
        idx = resolve_head_layers(layers, len(model.layers))
        width = sum(model.layers[i].out_features for i in idx)
        return cls(width, model.num_classes, layers=layers, device=model.device, dtype=model.dtype, **kwargs)


@torch.no_grad()
def predict(
    model: FFNet,
    x: torch.Tensor,
    method: str = "goodness",
    *,
    head: LinearHead | None = None,
    on_value=1.0,
    neutral_value=None,
    skip_first: bool = False,
    supervised: bool = True,
    chunk_size: int = 1024,
    num_layers: int | None = None,
) -> torch.Tensor:
    """Predicted labels ``[B]``: ``method="goodness"`` (argmax of goodness_per_label) or ``"head"``
    (argmax of ``head`` on head_features; needs ``head``)."""
    op = "ffops.ff.predict"
    if method not in METHODS:
        raise ValueError(f"{op}: method must be one of {METHODS}, got {method!r}")
    chunk_size = _check_chunk(op, chunk_size)
    if method == "goodness":
        if not supervised:
            raise ValueError(f"{op}: method='goodness' needs a supervised (label-overlay) net; use 'head'")
        return goodness_per_label(
            model, x, on_value=on_value, skip_first=skip_first, chunk_size=chunk_size, num_layers=num_layers
        ).argmax(1)
    if head is None:
        raise ValueError(f"{op}: method='head' needs head= (a trained LinearHead)")
    preds = [
        head(
            head_features(model, xb, head.layers, on_value=on_value, neutral_value=neutral_value, supervised=supervised)
        ).argmax(1)
        for xb in _check_x(op, model, x).split(chunk_size)
    ]
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long, device=model.device)
