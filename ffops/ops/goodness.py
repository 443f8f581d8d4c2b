"""The ``goodness`` ops (Forward-Forward rows): goodness, the fused FF losses and length normalization.

Each public function validates its arguments, picks the implementation for the tensors' device
and the backend setting (ffops._backend), flattens the activity to rows and calls the row-wise
kernels: five operators (schemas and math: csrc/ops.cpp; autograd: csrc/goodness.cpp; kernels:
csrc/cpu/goodness.cpp, csrc/cuda/goodness.cu, kernels/goodness.py). Each forward's backward is itself
an operator of the same kernel set, so the whole graph stays inside ffops under ``torch.compile``.
The pure-torch specification is ffops.reference.goodness.
"""

import math

import torch

from ffops import _backend
from ffops._validation import (
    check_choice,
    check_finite_real,
    check_float_tensor,
    check_pair,
    check_same_device,
    normalize_dims,
)
from ffops.ops._common import rows_last_contiguous, stat_dtype, wire
from ffops.reference import goodness as reference

REDUCTIONS = ("sum", "mean")
LOSSES = ("softplus", "symba")
LOSS_REDUCTIONS = ("mean", "sum", "none")
NORM_MODES = ("l2", "rms")


# ---- fake implementations (shapes and dtypes only) --------------------------------------------


def _stat_like(h):
    return h.new_empty((h.shape[0],), dtype=stat_dtype(h.dtype))


def _fake_goodness_fwd(h, scale):
    return _stat_like(h)


def _fake_row_scale(h, coef):
    return h.new_empty(h.shape)


def _fake_ff_loss_fwd(h, scale, coef, theta, target):
    return _stat_like(h), _stat_like(h)


def _fake_normalize_fwd(h, norm_scale, eps):
    return h.new_empty(h.shape), _stat_like(h)


def _fake_normalize_bwd(grad_y, grad_s, h, s, norm_scale, eps):
    return h.new_empty(h.shape)


KERNELS = wire(
    {
        "goodness_fwd": _fake_goodness_fwd,
        "row_scale": _fake_row_scale,
        "ff_loss_fwd": _fake_ff_loss_fwd,
        "normalize_fwd": _fake_normalize_fwd,
        "normalize_bwd": _fake_normalize_bwd,
    },
    triton_module="goodness",
)


# ---- public functions --------------------------------------------------------------------------


def _per_sample_rows(h: torch.Tensor) -> torch.Tensor:
    """``h`` as ``[batch, features]`` rows (a view when the layout allows; ``h`` itself when 2-D, so
    no view node joins the autograd graph)."""
    rows = h if h.dim() == 2 else h.reshape(h.shape[0], math.prod(list(h.shape[1:])))
    return rows_last_contiguous(rows)


def _mean_scale(reduction: str, features: int) -> float:
    if reduction == "sum":
        return 1.0
    return 1.0 / features if features else math.nan  # the mean of nothing is NaN, as in torch


def goodness(h: torch.Tensor, reduction: str = "sum", dims=None) -> torch.Tensor:
    """Goodness of an activity: the sum (or mean) of squares over ``dims``.

    Args:
        h: activity, ``[N, D]`` or ``[N, C, H, W]`` (any rank >= 1, any strides).
        reduction: ``"sum"`` or ``"mean"`` of the squares.
        dims: dimensions to reduce; default all but the first (per-sample goodness). For
            per-channel goodness of a conv activity use ``dims=(2, 3)``, giving ``[N, C]``.

    Returns:
        The goodness, shaped like ``h`` without ``dims``, in ``h``'s dtype (accumulated in float32).
    """
    op = "ffops.goodness"
    check_float_tensor(op, "h", h)
    check_choice(op, "reduction", reduction, REDUCTIONS)
    dims = normalize_dims(op, "dims", dims, h.dim())
    impl = _backend.resolve(h.device)
    if impl == "reference":
        return reference.goodness(h, reduction, dims)
    kept = tuple(d for d in range(h.dim()) if d not in dims)
    out_shape = [h.shape[d] for d in kept]
    features = math.prod([h.shape[d] for d in dims])
    # [N, D] over dim 1 goes to the kernel as it is: each permute / reshape would be an autograd node
    rows = h if dims == (1,) and h.dim() == 2 else h.permute(kept + dims).reshape(math.prod(out_shape), features)
    g = KERNELS[impl].goodness_fwd(rows_last_contiguous(rows), _mean_scale(reduction, features))
    return (g if g.dim() == len(out_shape) else g.reshape(out_shape)).to(h.dtype)


def ff_loss(
    h_pos: torch.Tensor,
    h_neg: torch.Tensor,
    threshold: float,
    *,
    goodness: str = "mean",
    loss: str = "softplus",
    alpha: float = 4.0,
    sign: int = 1,
    reduction: str = "mean",
    return_goodness: bool = False,
):
    """The Forward-Forward layer loss, goodness and loss fused in one kernel per direction.

    The logit of "this sample is positive" is ``sign * (G - threshold)``, with ``G`` the
    per-sample goodness (``goodness="mean"`` or ``"sum"`` of squares over all but the batch dim).

    * ``loss="softplus"`` (Hinton): ``softplus(-logit)`` for each positive row and
      ``softplus(logit)`` for each negative row, i.e. BCE-with-logits with targets 1 / 0.
      ``h_pos`` and ``h_neg`` may have different batch sizes.
    * ``loss="symba"`` (SymBa): ``softplus(-alpha * sign * (G_pos - G_neg))`` per pair; needs
      equal batch sizes.

    ``sign=-1`` turns goodness into energy (positive data should have *low* sum of squares).
    ``reduction="mean"`` averages over all rows (softplus: positive and negative together; symba:
    the pairs), ``"sum"`` adds them, ``"none"`` returns the per-row losses (softplus: positive rows
    then negative rows). With ``return_goodness=True`` returns ``(loss, g_pos, g_neg)`` as well, for
    logging without a second pass. Results are in the input dtype (accumulated in float32).
    """
    op = "ffops.ff_loss"
    check_float_tensor(op, "h_pos", h_pos, min_ndim=2)
    check_float_tensor(op, "h_neg", h_neg, min_ndim=2)
    check_pair(op, ("h_pos", "h_neg"), h_pos, h_neg)
    threshold = check_finite_real(op, "threshold", threshold)
    check_choice(op, "goodness", goodness, REDUCTIONS)
    check_choice(op, "loss", loss, LOSSES)
    check_choice(op, "reduction", reduction, LOSS_REDUCTIONS)
    alpha = check_finite_real(op, "alpha", alpha, positive=True)
    if sign not in (1, -1) or isinstance(sign, bool):
        raise ValueError(f"{op}: sign must be +1 or -1, got {sign!r}")
    if loss == "symba" and h_pos.shape[0] != h_neg.shape[0]:
        raise ValueError(
            f"{op}: loss='symba' pairs positive and negative samples, so h_pos and h_neg need the same "
            f"batch size; got {h_pos.shape[0]} and {h_neg.shape[0]}"
        )
    impl = _backend.resolve(h_pos.device)
    if impl == "reference":
        return reference.ff_loss(
            h_pos,
            h_neg,
            threshold,
            goodness=goodness,
            loss=loss,
            alpha=alpha,
            sign=sign,
            reduction=reduction,
            return_goodness=return_goodness,
        )
    kernels = KERNELS[impl]
    pos, neg = _per_sample_rows(h_pos), _per_sample_rows(h_neg)
    scale = _mean_scale(goodness, pos.shape[1])
    if loss == "softplus":
        # positive rows: z = sign * (theta - G); negative rows: z = -sign * (theta - G)
        g_pos, loss_pos = kernels.ff_loss_fwd(pos, scale, float(sign), threshold, None)
        g_neg, loss_neg = kernels.ff_loss_fwd(neg, scale, -float(sign), threshold, None)
        per_row = torch.cat([loss_pos, loss_neg])
    else:
        # z = -alpha * sign * (G_pos - G_neg), computed in the negative pass with G_pos as target
        g_pos = kernels.goodness_fwd(pos, scale)
        g_neg, per_row = kernels.ff_loss_fwd(neg, scale, -alpha * sign, 0.0, g_pos)
    if reduction == "mean":
        out = per_row.mean()
    elif reduction == "sum":
        out = per_row.sum()
    else:
        out = per_row
    out = out.to(h_pos.dtype)
    if return_goodness:
        return out, g_pos.to(h_pos.dtype), g_neg.to(h_neg.dtype)
    return out


def _check_normalize_args(op, h, mode, eps):
    check_float_tensor(op, "h", h, min_ndim=2)
    check_choice(op, "mode", mode, NORM_MODES)
    return check_finite_real(op, "eps", eps)


def _normalize_rows(h, mode, eps, impl):
    rows = _per_sample_rows(h)
    features = rows.shape[1]
    norm_scale = 1.0 if mode == "l2" or features == 0 else 1.0 / features
    y, sumsq = KERNELS[impl].normalize_fwd(rows, norm_scale, eps)
    return (y if h.dim() == 2 else y.view(h.shape)), sumsq, features


def ff_normalize(h: torch.Tensor, mode: str = "l2", eps: float = 1e-8) -> torch.Tensor:
    """Length normalization between FF layers, per sample (over all but the batch dim).

    ``mode="l2"``: ``h / (||h||_2 + eps)``; ``mode="rms"``: ``h / (sqrt(mean(h^2)) + eps)``.
    Returns a contiguous tensor of ``h``'s shape and dtype. The gradient at an all-zero row is
    ``grad / eps`` (torch's zero subgradient of the norm).
    """
    op = "ffops.ff_normalize"
    eps = _check_normalize_args(op, h, mode, eps)
    impl = _backend.resolve(h.device)
    if impl == "reference":
        return reference.ff_normalize(h, mode=mode, eps=eps)
    return _normalize_rows(h, mode, eps, impl)[0]


def goodness_and_normalize(h: torch.Tensor, mode: str = "l2", eps: float = 1e-8, goodness: str = "sum"):
    """``(goodness(h, goodness), ff_normalize(h, mode, eps))`` from one pass over ``h``.

    The norm is the square root of the sum-goodness, so both come from the same sum of squares.
    Returns ``(g, y)``: ``g`` of shape ``[N]`` and ``y`` of ``h``'s shape, both in ``h``'s dtype.
    """
    op = "ffops.goodness_and_normalize"
    eps = _check_normalize_args(op, h, mode, eps)
    check_choice(op, "goodness", goodness, REDUCTIONS)
    impl = _backend.resolve(h.device)
    if impl == "reference":
        return reference.goodness_and_normalize(h, mode=mode, eps=eps, goodness=goodness)
    y, sumsq, features = _normalize_rows(h, mode, eps, impl)
    g = sumsq * _mean_scale(goodness, features)
    return g.to(h.dtype), y


def cwc_loss(
    h: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    reduction: str = "mean",
    return_goodness: bool = False,
):
    """Channel-wise competitive (CwC) loss of a conv FF layer: no negative samples.

    From CwComp (Papachristodoulou et al., "Convolutional Channel-wise Competitive Learning for the
    Forward-Forward Algorithm", AAAI 2024; their ``CwC_CE`` criterion): the ``C`` channels of ``h``
    form ``num_classes`` groups of ``C / num_classes`` consecutive channels, each group's goodness
    ``G[n, k]`` is the mean of ``h^2`` over its channels and positions, and the loss is
    ``cross_entropy(G, labels)``. ``G`` comes from ffops' fused goodness kernels (one pass over
    ``h``; the backward is one more, ``dh = h * coef[n, k]``); the cross-entropy over the small
    ``[N, num_classes]`` matrix is torch's. Summing ``G`` over layers and taking the argmax is the
    layer-wise prediction of that line of work.

    Args:
        h: activity ``[N, C, ...]`` (e.g. ``[N, C, H, W]``), ``C`` a multiple of ``num_classes``.
        labels: int64 ``[N]`` class of each sample, in ``[0, num_classes)``.
        num_classes: number of channel groups (classes), at least 2.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` over the batch, as ``F.cross_entropy``.
        return_goodness: also return ``G`` (``[N, num_classes]``, float32 for low-precision ``h``).

    Returns:
        The loss, or ``(loss, G)``.
    """
    op = "ffops.cwc_loss"
    check_float_tensor(op, "h", h, min_ndim=2)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"{op}: num_classes must be an int >= 2, got {num_classes!r}")
    if h.shape[1] % num_classes:
        raise ValueError(
            f"{op}: the channels of h (dim 1, {h.shape[1]}) must be a multiple of num_classes ({num_classes})"
        )
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.shape != (h.shape[0],):
        got = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"{op}: labels must be an int64 [{h.shape[0]}] tensor (one class per sample), got {got}")
    check_same_device(op, "h", h, {"labels": labels})
    check_choice(op, "reduction", reduction, LOSS_REDUCTIONS)
    impl = _backend.resolve(h.device)
    if impl == "reference":
        loss, g = reference.cwc_loss(h, labels, num_classes, reduction)
    else:
        groups = h.reshape(h.shape[0] * num_classes, math.prod(h.shape[1:]) // num_classes)
        g = KERNELS[impl].goodness_fwd(rows_last_contiguous(groups), _mean_scale("mean", groups.shape[1]))
        g = g.view(h.shape[0], num_classes)
        loss = torch.nn.functional.cross_entropy(g, labels, reduction=reduction).to(h.dtype)
    return (loss, g) if return_goodness else loss
