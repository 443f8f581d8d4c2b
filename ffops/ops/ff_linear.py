"""The fused Forward-Forward layer op: ``h, sumsq, pos_mean = ffops.ff_linear(x, weight, bias, ...)``.

One GEMM for the whole (positive + negative) batch with bias, ReLU, the goodness' sum of squares
and the positive-row column means fused into its epilogue, and the input's length normalization
applied as a per-row scale after the GEMM (so the normalized input is never materialized). The
backward forms ``x_scale * dL/dpre`` in one pass over ``h`` and multiplies it into the weight
gradient. ffops.nn.FFLinear builds the FF loss on top of it.

``ff_label_rows`` is the first layer's inference on every (sample, label) overlay (prediction by
goodness, ffops.ff.goodness_per_label): one GEMM on the label-free input, expanded into the ``C``
label rows of every sample in one fused pass.

``ff_linear_overlay`` is ``ff_linear`` (with autograd) on label-overlaid rows that share their
images, as supervised FF's positive and negative rows do: the GEMMs of the forward and of the
weight gradient run on the shared images only (half the first layer's FLOPs for one negative per
positive), the labels enter as one weight column per row.

``ff_linear_known_output`` attaches the layer's backward (either kind of rows) to an output computed
earlier with the same parameters, without the forward GEMM: FFTrainer's hard-negative pass has run
every layer on every label, the rows of the step among them.
"""

import torch

from ffops import _backend
from ffops._validation import check_bias, check_float_tensor, check_label_range, check_same_device
from ffops.ops._common import stat_dtype, wire
from ffops.reference import ff_linear as reference

# ---- fake implementations (shapes and dtypes only) --------------------------------------------


def _fake_fwd(x, x_scale, weight, bias, n_pos):
    stat = stat_dtype(x.dtype)
    return (
        x.new_empty((x.shape[0], weight.shape[0])),
        x.new_empty((x.shape[0],), dtype=stat),
        x.new_empty((weight.shape[0],), dtype=stat),
    )


def _fake_bwd(x, x_scale, h, grad_sumsq, grad_pos_mean, n_pos):
    return x.new_empty((h.shape[1], x.shape[1])), x.new_empty((h.shape[1],))


def _fake_label_rows(pre, on, scale, label_weight, bias):
    rows = pre.shape[0] * label_weight.shape[1]
    return pre.new_empty((rows, pre.shape[1])), pre.new_empty((rows,), dtype=stat_dtype(pre.dtype))


def _fake_overlay_fwd(base, labels, on, x_scale, weight, bias, num_classes, n_pos):
    stat = stat_dtype(base.dtype)
    rows, out = labels.shape[0], weight.shape[0]
    return (
        base.new_empty((rows, out)),
        base.new_empty((rows,), dtype=stat),
        base.new_empty((out,), dtype=stat),
    )


def _fake_overlay_bwd(base, labels, on, x_scale, h, grad_sumsq, grad_pos_mean, num_classes, n_pos):
    return base.new_empty((h.shape[1], base.shape[1])), base.new_empty((h.shape[1],))


KERNELS = wire(
    {
        "ff_linear_fwd": _fake_fwd,
        "ff_linear_bwd": _fake_bwd,
        "ff_label_rows": _fake_label_rows,
        "ff_linear_overlay_fwd": _fake_overlay_fwd,
        "ff_linear_overlay_bwd": _fake_overlay_bwd,
    },
    triton_module={
        "ff_linear_fwd": "ff_linear",
        "ff_linear_bwd": "ff_linear",
        "ff_label_rows": "ff_label_rows",
        "ff_linear_overlay_fwd": "ff_linear_overlay",
        "ff_linear_overlay_bwd": "ff_linear_overlay",
    },
)


# ---- public functions --------------------------------------------------------------------------


def ff_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    x_scale: torch.Tensor | None = None,
    n_pos: int = 0,
):
    """Fused FF layer forward.

    Args:
        x: input activity ``[B, in]`` (positive rows first, then negative rows). It receives no
            gradient: FF layers learn from local losses only.
        weight: ``[out, in]``, same dtype and device as ``x``.
        bias: ``[out]`` or None.
        x_scale: per-row scale ``[B]`` of the input (e.g. ``1 / (||x|| + eps)``, its length
            normalization) or None. Receives no gradient.
        n_pos: how many leading rows are positive data (for ``pos_mean``).

    Returns:
        ``(h, sumsq, pos_mean)``: ``h = relu(x_scale * (x @ weight^T) + bias)`` ``[B, out]`` in x's
        dtype and non-differentiable (the next layer's input); ``sumsq [B]`` the per-row sum of
        ``h^2`` and ``pos_mean [out]`` the mean of ``h`` over the first ``n_pos`` rows, both float32
        (float64 for float64 input) and differentiable w.r.t. ``weight`` and ``bias``.
    """
    op = "ffops.ff_linear"
    check_float_tensor(op, "x", x, min_ndim=2)
    check_float_tensor(op, "weight", weight, min_ndim=2)
    if x.dim() != 2 or weight.dim() != 2:
        raise ValueError(f"{op}: x and weight must be 2-D, got {tuple(x.shape)} and {tuple(weight.shape)}")
    if weight.shape[1] != x.shape[1]:
        raise ValueError(
            f"{op}: weight must be [out, {x.shape[1]}] for x of shape {tuple(x.shape)}, got {tuple(weight.shape)}"
        )
    check_same_device(op, "x", x, {"weight": weight, "bias": bias, "x_scale": x_scale})
    if weight.dtype != x.dtype:
        raise TypeError(f"{op}: weight must have the dtype of x ({x.dtype}), got {weight.dtype}")
    check_bias(op, bias, weight.shape[0], x.dtype)
    if x_scale is not None:
        check_float_tensor(op, "x_scale", x_scale)
        if x_scale.shape != (x.shape[0],):
            raise ValueError(f"{op}: x_scale must have shape ({x.shape[0]},), got {tuple(x_scale.shape)}")
    if isinstance(n_pos, bool) or not isinstance(n_pos, int) or not 0 <= n_pos <= x.shape[0]:
        raise ValueError(f"{op}: n_pos must be an int in [0, {x.shape[0]}], got {n_pos!r}")

    impl = _backend.resolve(x.device)
    if impl == "reference":
        return reference.ff_linear(x, weight, bias, x_scale=x_scale, n_pos=n_pos)
    if x_scale is not None:
        x_scale = x_scale.detach().to(stat_dtype(x.dtype)).contiguous()
    return KERNELS[impl].ff_linear_fwd(
        x.detach().contiguous(),
        x_scale,
        weight.contiguous(),
        None if bias is None else bias.contiguous(),
        n_pos,
    )


def ff_label_rows(
    pre: torch.Tensor,
    on: torch.Tensor,
    label_weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    scale: torch.Tensor | None = None,
):
    """An FF layer's output on every (sample, label) overlay, from one GEMM on the label-free input.

    The label overlay only changes the first ``C`` input features, so with ``x0`` the input with
    those features zeroed and ``pre = x0 @ W^T``, row ``b * C + c`` (sample ``b`` with ``on[b]`` at
    feature ``c``) is ``relu(scale[b] * (pre[b] + on[b] * W[:, c]) + bias)``. Inference only (no
    autograd).

    Args:
        pre: ``[B, out]``, the GEMM on the label-free input.
        on: ``[B]``, the value written at the label's feature.
        label_weight: ``W[:, :C]``, ``[out, C]`` with ``C >= 1``, dtype of ``pre``.
        bias: ``[out]`` (dtype of ``pre``) or None.
        scale: ``[B]``, the input's length normalization (a per-sample scale applied after the GEMM,
            as ``ff_linear``'s ``x_scale``), or None.

    Returns:
        ``(h, sumsq)``: ``h [B * C, out]`` in ``pre``'s dtype (computed in float32, float64 for float64
        ``pre``) and ``sumsq [B * C]`` its per-row sum of squares (float32; float64 for float64).
    """
    op = "ffops.ff_label_rows"
    check_float_tensor(op, "pre", pre, min_ndim=2)
    tensors = {"on": on, "label_weight": label_weight, "bias": bias, "scale": scale}
    for name, t in tensors.items():
        if t is not None:
            check_float_tensor(op, name, t)
    check_same_device(op, "pre", pre, tensors)
    if pre.dim() != 2:
        raise ValueError(f"{op}: pre must be 2-D [batch, out], got {tuple(pre.shape)}")
    batch, out = pre.shape
    if label_weight.dim() != 2 or label_weight.shape[0] != out or label_weight.shape[1] < 1:
        raise ValueError(
            f"{op}: label_weight must be [{out}, C] with C >= 1 for pre of shape "
            f"{tuple(pre.shape)}, got {tuple(label_weight.shape)}"
        )
    if label_weight.dtype != pre.dtype:
        raise TypeError(f"{op}: label_weight must have the dtype of pre ({pre.dtype}), got {label_weight.dtype}")
    check_bias(op, bias, out, pre.dtype)
    for name, t in (("on", on), ("scale", scale)):
        if t is not None and t.shape != (batch,):
            raise ValueError(f"{op}: {name} must have shape ({batch},), got {tuple(t.shape)}")

    pre, on, label_weight = pre.detach(), on.detach(), label_weight.detach()
    bias = None if bias is None else bias.detach()
    scale = None if scale is None else scale.detach()
    impl = _backend.resolve(pre.device)
    if impl == "reference":
        return reference.ff_label_rows(pre, on, label_weight, bias, scale=scale)
    stat = stat_dtype(pre.dtype)
    return KERNELS[impl].ff_label_rows(
        pre.contiguous(),
        on.to(stat).contiguous(),
        None if scale is None else scale.to(stat).contiguous(),
        label_weight.contiguous(),
        None if bias is None else bias.contiguous(),
    )


def ff_linear_overlay(
    base: torch.Tensor,
    labels: torch.Tensor,
    on,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    num_classes: int,
    x_scale: torch.Tensor | None = None,
    n_pos: int = 0,
):
    """``ff_linear`` on the label overlays of shared inputs, without materializing them.

    Row ``r`` of the layer's input is ``base[r % B]`` with its first ``num_classes`` features replaced
    by ``on[r % B] * one_hot(labels[r])``: e.g. ``labels = cat([y, y_wrong])`` gives supervised FF's
    positive rows then its negative rows of the same ``B`` images. The result equals
    ``ff_linear(rows, weight, bias, x_scale=x_scale, n_pos=n_pos)`` on the materialized rows (up to
    float rounding), but the GEMMs of the forward and of the weight gradient run on the ``B`` shared
    rows (``k`` times fewer FLOPs for ``k = R / B`` labels per input).

    Args:
        base: ``[B, in]`` inputs; their first ``num_classes`` features are ignored (replaced).
        labels: integer ``[R]``, ``R = k * B`` (``k >= 1``), values in ``[0, num_classes)``.
        on: the value written at the label's feature: a number or a ``[B]`` float tensor.
        weight: ``[out, in]`` of base's dtype; bias ``[out]`` or None.
        num_classes: how many leading features hold the label (``1 <= num_classes <= in``).
        x_scale: per-row scale ``[R]`` of the input (its length normalization) or None.
        n_pos: how many leading rows are positive data (for ``pos_mean``).

    Returns:
        ``(h, sumsq, pos_mean)`` as ``ff_linear`` over the ``R`` rows: ``h`` ``[R, out]``
        non-differentiable, ``sumsq`` ``[R]`` and ``pos_mean`` ``[out]`` differentiable w.r.t. weight
        and bias.
    """
    op = "ffops.ff_linear_overlay"
    check_float_tensor(op, "base", base, min_ndim=2)
    check_float_tensor(op, "weight", weight, min_ndim=2)
    if base.dim() != 2 or weight.dim() != 2:
        raise ValueError(f"{op}: base and weight must be 2-D, got {tuple(base.shape)} and {tuple(weight.shape)}")
    batch, in_features = base.shape
    if weight.shape[1] != in_features:
        raise ValueError(
            f"{op}: weight must be [out, {in_features}] for base of shape {tuple(base.shape)}, "
            f"got {tuple(weight.shape)}"
        )
    if weight.dtype != base.dtype:
        raise TypeError(f"{op}: weight must have the dtype of base ({base.dtype}), got {weight.dtype}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 1 <= num_classes <= in_features:
        raise ValueError(f"{op}: num_classes must be an int in [1, {in_features}], got {num_classes!r}")
    if (
        not isinstance(labels, torch.Tensor)
        or labels.dtype.is_floating_point
        or labels.dtype.is_complex
        or labels.dtype == torch.bool
        or labels.dim() != 1
    ):
        raise TypeError(
            f"{op}: labels must be a 1-D integer tensor, got "
            f"{labels.dtype if isinstance(labels, torch.Tensor) else type(labels).__name__}"
            f"{' ' + str(tuple(labels.shape)) if isinstance(labels, torch.Tensor) else ''}"
        )
    rows = labels.shape[0]
    if (rows != 0) if batch == 0 else (rows < batch or rows % batch):
        raise ValueError(f"{op}: labels must hold k * {batch} row labels (k >= 1: k labels per base row), got {rows}")
    check_label_range(op, labels, num_classes)
    stat = stat_dtype(base.dtype)
    if isinstance(on, torch.Tensor):
        check_float_tensor(op, "on", on)
        if on.shape != (batch,):
            raise ValueError(f"{op}: on must be a number or a [{batch}] tensor, got shape {tuple(on.shape)}")
    elif isinstance(on, (int, float)) and not isinstance(on, bool):
        on = torch.full((batch,), float(on), dtype=stat, device=base.device)
    else:
        raise TypeError(f"{op}: on must be a number or a [{batch}] float tensor, got {type(on).__name__}")
    check_same_device(
        op, "base", base, {"labels": labels, "on": on, "weight": weight, "bias": bias, "x_scale": x_scale}
    )
    check_bias(op, bias, weight.shape[0], base.dtype)
    if x_scale is not None:
        check_float_tensor(op, "x_scale", x_scale)
        if x_scale.shape != (rows,):
            raise ValueError(f"{op}: x_scale must have shape ({rows},), got {tuple(x_scale.shape)}")
    if isinstance(n_pos, bool) or not isinstance(n_pos, int) or not 0 <= n_pos <= rows:
        raise ValueError(f"{op}: n_pos must be an int in [0, {rows}], got {n_pos!r}")

    impl = _backend.resolve(base.device)
    if impl == "reference":
        return reference.ff_linear_overlay(
            base, labels.long(), on, weight, bias, num_classes=num_classes, x_scale=x_scale, n_pos=n_pos
        )
    return KERNELS[impl].ff_linear_overlay_fwd(
        base.detach().contiguous(),
        labels.detach().long().contiguous(),
        on.detach().to(stat).contiguous(),
        None if x_scale is None else x_scale.detach().to(stat).contiguous(),
        weight.contiguous(),
        None if bias is None else bias.contiguous(),
        num_classes,
        n_pos,
    )


class _KnownOutput(torch.autograd.Function):
    """``(sumsq, pos_mean)`` of an ``h`` computed earlier, with ff_linear's gradient to weight and bias
    (``weight_grads(grad_sumsq, grad_pos_mean)`` runs the backward kernel)."""

    @staticmethod
    def forward(ctx, weight, bias, h, sumsq, n_pos, weight_grads):
        ctx.set_materialize_grads(False)
        ctx.weight_grads, ctx.has_bias = weight_grads, bias is not None
        pos_mean = h[:n_pos].to(sumsq.dtype).mean(0)  # NaN for n_pos == 0, as ff_linear's
        return sumsq.clone(), pos_mean

    @staticmethod
    def backward(ctx, grad_sumsq, grad_pos_mean):
        grad_w, grad_b = ctx.weight_grads(grad_sumsq, grad_pos_mean)
        return grad_w, grad_b if ctx.has_bias else None, None, None, None, None


def ff_linear_known_output(
    x,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    h: torch.Tensor,
    sumsq: torch.Tensor,
    *,
    x_scale: torch.Tensor | None = None,
    n_pos: int = 0,
    overlay: tuple | None = None,
):
    """``ff_linear``'s differentiable outputs for an ``h`` it computed earlier, without the GEMM.

    A caller that already ran the layer on these rows with the current parameters (FFTrainer's
    hard-negative pass scores every label, the rows of the step among them) attaches the layer's
    backward to that output instead of running the forward again.

    Args:
        x: the layer's input rows ``[R, in]``, or None with ``overlay``.
        weight, bias, x_scale, n_pos: as ``ff_linear`` (the values ``h`` was computed with).
        h: ``[R, out]``, ``relu(x_scale * (x @ weight^T) + bias)``, contiguous, of weight's dtype.
        sumsq: ``[R]``, its per-row sum of squares (float32; float64 for float64).
        overlay: ``(base, labels, on, num_classes)`` when the rows are label overlays of shared
            images (as ``ff_linear_overlay``); then ``x`` is ignored.

    Returns:
        ``(sumsq, pos_mean)`` as ``ff_linear`` returns them, differentiable w.r.t. weight and bias.
    """
    op = "ffops.ff_linear_known_output"
    check_float_tensor(op, "weight", weight, min_ndim=2)
    check_float_tensor(op, "h", h, min_ndim=2)
    check_float_tensor(op, "sumsq", sumsq)
    stat = stat_dtype(weight.dtype)
    rows, out = h.shape[0], weight.shape[0]
    if h.dim() != 2 or h.shape[1] != out or h.dtype != weight.dtype:
        raise ValueError(f"{op}: h must be [rows, {out}] of {weight.dtype}, got {tuple(h.shape)} {h.dtype}")
    if sumsq.shape != (rows,) or sumsq.dtype != stat:
        raise ValueError(f"{op}: sumsq must be [{rows}] of {stat}, got {tuple(sumsq.shape)} {sumsq.dtype}")
    if isinstance(n_pos, bool) or not isinstance(n_pos, int) or not 0 <= n_pos <= rows:
        raise ValueError(f"{op}: n_pos must be an int in [0, {rows}], got {n_pos!r}")
    if x_scale is not None:
        check_float_tensor(op, "x_scale", x_scale)
        if x_scale.shape != (rows,):
            raise ValueError(f"{op}: x_scale must have shape ({rows},), got {tuple(x_scale.shape)}")
        x_scale = x_scale.detach().to(stat).contiguous()
    check_bias(op, bias, out, weight.dtype)
    if overlay is None and (
        not isinstance(x, torch.Tensor) or x.shape != (rows, weight.shape[1]) or x.dtype != weight.dtype
    ):
        raise ValueError(
            f"{op}: x must be a [{rows}, {weight.shape[1]}] tensor of {weight.dtype} (or overlay "
            f"given), got {tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}"
            f"{' ' + str(x.dtype) if isinstance(x, torch.Tensor) else ''}"
        )
    bias = None if bias is None else bias.contiguous()
    h, sumsq = h.detach().contiguous(), sumsq.detach()
    impl = _backend.resolve(weight.device)
    if impl == "reference":  # the specification has no kernels: run the layer again
        if overlay is not None:
            base, labels, on, num_classes = overlay
            return reference.ff_linear_overlay(
                base, labels.long(), on, weight, bias, num_classes=num_classes, x_scale=x_scale, n_pos=n_pos
            )[1:]
        return reference.ff_linear(x, weight, bias, x_scale=x_scale, n_pos=n_pos)[1:]
    kernels = KERNELS[impl]
    if overlay is not None:
        base, labels, on, num_classes = overlay
        base, labels, on = (
            base.detach().contiguous(),
            labels.detach().long().contiguous(),
            on.detach().to(stat),
        )

        def weight_grads(grad_sumsq, grad_pos_mean):
            return kernels.ff_linear_overlay_bwd(
                base,
                labels,
                on,
                x_scale,
                h,
                _grad_or_zeros(grad_sumsq, sumsq),
                _contiguous(grad_pos_mean),
                num_classes,
                n_pos,
            )
    else:
        x = x.detach().contiguous()

        def weight_grads(grad_sumsq, grad_pos_mean):
            return kernels.ff_linear_bwd(
                x, x_scale, h, _grad_or_zeros(grad_sumsq, sumsq), _contiguous(grad_pos_mean), n_pos
            )

    return _KnownOutput.apply(weight, bias, h, sumsq, n_pos, weight_grads)


def _grad_or_zeros(grad: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if grad is None else grad.contiguous()


def _contiguous(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.contiguous()
