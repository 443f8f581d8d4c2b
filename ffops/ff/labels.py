"""Label overlay for supervised Forward-Forward: the label is written into the input.

The first ``num_classes`` input features are overwritten with a one-hot vector scaled by the "on"
value (Hinton's code: 1.0; some ports use the data's maximum, ``on_value="max"``). Prediction by
goodness runs every candidate label; the softmax head reads a neutral overlay (``1 / num_classes``
of the on value in every label position, 0.1 for ten classes).
"""

import numbers

import torch

from ffops._validation import check_label_range
from ffops.nn.ff import OverlayRows
from ffops.ops._common import stat_dtype


def _check_images(op: str, x: torch.Tensor, num_classes: int) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(
            f"{op}: x must be a float tensor [batch, features], got "
            f"{type(x).__name__ if not isinstance(x, torch.Tensor) else x.dtype}"
        )
    if x.dim() != 2:
        raise ValueError(f"{op}: x must be [batch, features], got shape {tuple(x.shape)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 2 <= num_classes <= x.shape[1]:
        raise ValueError(
            f"{op}: num_classes must be an int in [2, {x.shape[1]}] (the label is written into "
            f"the first num_classes features), got {num_classes!r}"
        )


def _on_values(op: str, x: torch.Tensor, on_value) -> torch.Tensor:
    """The on value per sample ``[B, 1]``: a constant, or ``"max"``: each sample's maximum."""
    if isinstance(on_value, str):
        if on_value != "max":
            raise ValueError(f"{op}: on_value must be a number or 'max', got {on_value!r}")
        return x.detach().amax(1, keepdim=True)
    if isinstance(on_value, bool) or not isinstance(on_value, numbers.Real):
        raise TypeError(f"{op}: on_value must be a number or 'max', got {type(on_value).__name__}")
    return x.new_full((x.shape[0], 1), float(on_value))


def check_labels(op: str, labels, batch: int, num_classes: int, device=None) -> torch.Tensor:
    """``labels`` as an int64 tensor ``[batch]`` with values in ``[0, num_classes)`` (the range is not
    read inside ``labels_range_checked()``)."""
    if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(
            f"{op}: labels must be an integer tensor [batch], got "
            f"{labels.dtype if isinstance(labels, torch.Tensor) else type(labels).__name__}"
        )
    if labels.shape != (batch,):
        raise ValueError(f"{op}: labels must have shape ({batch},), got {tuple(labels.shape)}")
    check_label_range(op, labels, num_classes)
    return labels.to(device=device, dtype=torch.long)


def overlay_labels(x: torch.Tensor, labels: torch.Tensor, num_classes: int, on_value=1.0) -> torch.Tensor:
    """A copy of ``x`` ``[B, D]`` whose first ``num_classes`` features are ``on * one_hot(labels)``."""
    op = "ffops.ff.overlay_labels"
    _check_images(op, x, num_classes)
    labels = check_labels(op, labels, x.shape[0], num_classes, x.device)
    on = _on_values(op, x, on_value)
    out = x.clone()
    out[:, :num_classes] = 0
    out[torch.arange(x.shape[0], device=x.device), labels] = on[:, 0].to(x.dtype)
    return out


def overlay_rows(x: torch.Tensor, labels: torch.Tensor, num_classes: int, on_value=1.0) -> OverlayRows:
    """``overlay_labels`` of ``x`` ``[B, D]`` with ``k`` labels per sample, kept unmaterialized:
    ``labels`` ``[k * B]``, row ``r`` is sample ``r % B`` with label ``labels[r]`` (e.g.
    ``cat([y, y_wrong])``: supervised FF's positive then negative rows). FFLinear runs it with one
    GEMM over the ``B`` samples (ffops.ff_linear_overlay); ``.materialize()`` gives the rows."""
    op = "ffops.ff.overlay_rows"
    _check_images(op, x, num_classes)
    b = x.shape[0]
    if (
        not isinstance(labels, torch.Tensor)
        or labels.dim() != 1
        or (labels.shape[0] != 0 if b == 0 else (labels.shape[0] < b or labels.shape[0] % b))
    ):
        raise ValueError(
            f"{op}: labels must be a [k * {b}] tensor (k >= 1 labels per sample), got "
            f"{tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__}"
        )
    labels = check_labels(op, labels, labels.shape[0], num_classes, x.device)
    stat = stat_dtype(x.dtype)
    return OverlayRows(x, labels, _on_values(op, x, on_value)[:, 0].to(stat), num_classes)


def overlay_all_labels(x: torch.Tensor, num_classes: int, on_value=1.0) -> torch.Tensor:
    """Every sample with every label: ``[B * num_classes, D]``, row ``b * num_classes + c`` is
    sample ``b`` with label ``c`` (for prediction by goodness in one batched pass)."""
    op = "ffops.ff.overlay_all_labels"
    _check_images(op, x, num_classes)
    on = _on_values(op, x, on_value)
    b = x.shape[0]
    out = x.repeat_interleave(num_classes, dim=0)
    out[:, :num_classes] = 0
    eye = torch.eye(num_classes, dtype=x.dtype, device=x.device)
    out[:, :num_classes] = (eye.expand(b, num_classes, num_classes) * on[:, :, None].to(x.dtype)).reshape(
        b * num_classes, num_classes
    )
    return out


def neutral_overlay(x: torch.Tensor, num_classes: int, on_value=1.0, value=None) -> torch.Tensor:
    """A copy of ``x`` with ``value`` in every label position; default ``on / num_classes`` (0.1 for
    ten classes and on value 1), the "neutral label" of the softmax head."""
    op = "ffops.ff.neutral_overlay"
    _check_images(op, x, num_classes)
    out = x.clone()
    if value is None:
        out[:, :num_classes] = (_on_values(op, x, on_value) / num_classes).to(x.dtype)
    else:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{op}: value must be a number or None, got {type(value).__name__}")
        out[:, :num_classes] = float(value)
    return out
