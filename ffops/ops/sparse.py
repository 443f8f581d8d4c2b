"""The sparse linear op: ``y = ffops.sparse_linear(x, values, crow_indices, col_indices, bias, out_features)``.

``y = x @ W^T + b`` for a weight ``W [out, in]`` stored in CSR whose index structure is fixed and
whose nonzero ``values`` are the trainable parameter. The forward is an SpMM; the backward forms
``dX = dY W`` and ``dW`` only at the nonzeros (SDDMM) in one pass over the transposed pattern, and
``db``. Work and memory scale with the number of nonzeros, never with ``out * in``.

The kernels run on feature-major activations (``x^T``, one contiguous batch vector per input
feature; see csrc/ops.cpp). The op transposes on the way in and out; an input that already is
a transposed view (``x.t()`` of a contiguous tensor) is used as it is and the output keeps that
layout, so chains of sparse layers (with elementwise ops between) never transpose.
"""

import torch
from torch.autograd.function import once_differentiable

from ffops import _backend, reference
from ffops._validation import check_float_tensor
from ffops.ops._sparse_library import KERNELS
from ffops.sparse.pattern import INDEX_DTYPES, TransposedPattern, transpose_pattern

OP = "ffops.sparse_linear"
CPU_DTYPES = (torch.float32, torch.float64)


class _SparseLinearT(torch.autograd.Function):
    """yt = W @ xt + bias on feature-major activations, with the fused sparse backward."""

    @staticmethod
    def forward(ctx, xt, values, crow, col, t_ptr, t_row, t_perm, bias, impl):
        kernels = KERNELS[impl]
        ctx.save_for_backward(xt, values, t_ptr, t_row, t_perm)
        ctx.impl = impl
        ctx.has_bias = bias is not None
        return kernels.fwd(xt, values, crow, col, bias)

    @staticmethod
    @once_differentiable  # first-order only: a second backward raises instead of being silently wrong
    def backward(ctx, grad_yt):
        xt, values, t_ptr, t_row, t_perm = ctx.saved_tensors
        need_dx, need_dvalues = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_db = ctx.has_bias and ctx.needs_input_grad[7]
        dyt = grad_yt.contiguous()
        dxt = dvalues = db = None
        if need_dx or need_dvalues:
            dxt, dvalues = KERNELS[ctx.impl].bwd(dyt, xt, values, t_ptr, t_row, t_perm, need_dx, need_dvalues)
        if need_db:
            db = dyt.sum(1, dtype=torch.float64 if dyt.dtype == torch.float64 else torch.float32).to(dyt.dtype)
        return (dxt if need_dx else None, dvalues if need_dvalues else None,
                None, None, None, None, None, db, None)


def _check_transposed(transposed, crow: torch.Tensor, nnz: int, in_features: int) -> TransposedPattern:
    if not isinstance(transposed, tuple) or len(transposed) != 3:
        raise TypeError(f"{OP}: transposed must be the (ptr, row, perm) tuple of ffops.sparse.transpose_pattern, "
                        f"got {type(transposed).__name__}")
    ptr, row, perm = transposed
    if isinstance(ptr, torch.Tensor) and ptr.dim() == 1 and ptr.numel() != in_features + 1:
        raise ValueError(f"{OP}: x has {in_features} features but the pattern was made for {ptr.numel() - 1} "
                         "(transposed.ptr has in_features + 1 entries)")
    for name, t, n in (("ptr", ptr, in_features + 1), ("row", row, nnz), ("perm", perm, nnz)):
        if not isinstance(t, torch.Tensor) or t.dtype != crow.dtype or t.shape != (n,) or t.device != crow.device:
            raise ValueError(f"{OP}: transposed.{name} must be a [{n}] {crow.dtype} tensor on {crow.device} "
                             "(from ffops.sparse.transpose_pattern of this pattern)")
    return TransposedPattern(ptr.contiguous(), row.contiguous(), perm.contiguous())


def check_args(x, values, crow, col, bias, out_features) -> int:
    """Per-call checks (O(1) in the number of nonzeros); returns ``out_features``."""
    check_float_tensor(OP, "x", x)
    check_float_tensor(OP, "values", values)
    if values.dim() != 1:
        raise ValueError(f"{OP}: values must be 1-D [nnz], got shape {tuple(values.shape)}")
    for name, t in (("crow_indices", crow), ("col_indices", col)):
        if not isinstance(t, torch.Tensor) or t.dtype not in INDEX_DTYPES or t.dim() != 1:
            got = f"{t.dtype} of shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise TypeError(f"{OP}: {name} must be a 1-D int32 or int64 tensor, got {got}")
    if crow.dtype != col.dtype:
        raise TypeError(f"{OP}: crow_indices and col_indices must have one dtype, got {crow.dtype} and {col.dtype}")
    if values.numel() != col.numel():
        raise ValueError(f"{OP}: values must have one entry per nonzero (len(col_indices) = {col.numel()}), "
                         f"got {values.numel()}")
    if out_features is None:
        out_features = crow.numel() - 1
    if isinstance(out_features, bool) or not isinstance(out_features, int) or out_features < 0:
        raise TypeError(f"{OP}: out_features must be a non-negative int, got {out_features!r}")
    if crow.numel() != out_features + 1:
        raise ValueError(f"{OP}: crow_indices must have out_features + 1 = {out_features + 1} entries, "
                         f"got {crow.numel()}")
    for name, t in (("values", values), ("bias", bias), ("crow_indices", crow), ("col_indices", col)):
        if t is not None and t.device != x.device:
            raise ValueError(f"{OP}: {name} must be on the device of x ({x.device}), got {t.device}")
    if values.dtype != x.dtype:
        raise TypeError(f"{OP}: values must have the dtype of x ({x.dtype}), got {values.dtype}")
    if bias is not None:
        check_float_tensor(OP, "bias", bias)
        if bias.shape != (out_features,) or bias.dtype != x.dtype:
            raise ValueError(f"{OP}: bias must be a [{out_features}] tensor of {x.dtype}, "
                             f"got {tuple(bias.shape)} {bias.dtype}")
    return out_features


def sparse_linear_t(xt, values, crow, col, transposed: TransposedPattern, bias=None):
    """Feature-major form: ``yt [out, B] = W @ xt + bias[:, None]`` for ``xt [in, B]``.

    For callers that hold activations feature-major already (SparseConv2d's unfolded patches).
    Arguments are trusted (validated by the caller); ``xt`` is made contiguous.
    """
    impl = _backend.resolve(xt.device)
    if impl == "reference":
        w = reference.sparse.dense_weight(values, crow, col, xt.shape[0])
        yt = w @ xt
        return yt if bias is None else yt + bias[:, None]
    if impl == "cpp" and xt.device.type == "cpu" and xt.dtype not in CPU_DTYPES:
        raise TypeError(f"{OP}: the C++ CPU kernels take float32 or float64, got {xt.dtype}; "
                        "cast, or run the pure-torch reference with ffops.use_backend('reference')")
    return _SparseLinearT.apply(xt.contiguous(), values.contiguous(), crow, col, *transposed, bias, impl)


def sparse_linear(x: torch.Tensor, values: torch.Tensor, crow_indices: torch.Tensor, col_indices: torch.Tensor,
                  bias: torch.Tensor | None = None, out_features: int | None = None, *,
                  transposed: TransposedPattern | None = None) -> torch.Tensor:
    """``x @ W^T + bias`` for a CSR weight ``W [out_features, in_features]``.

    Args:
        x: ``[..., in_features]`` (any leading batch dimensions), floating point.
        values: ``[nnz]`` nonzero values in CSR order, dtype and device of ``x``; receives the
            gradient at the nonzeros only.
        crow_indices: ``[out_features + 1]`` row pointers (int32 or int64).
        col_indices: ``[nnz]`` column of each nonzero, strictly increasing within a row.
        bias: ``[out_features]`` or None.
        out_features: the number of rows of ``W`` (default: ``len(crow_indices) - 1``).
        transposed: the pattern in CSC order from ``ffops.sparse.transpose_pattern`` (what
            ``ffops.nn.SparseLinear`` keeps). When omitted, the pattern is validated and
            transposed on every call: O(nnz) extra work, fine for one-off calls.

    Returns:
        ``[..., out_features]`` in ``x``'s dtype. Contiguous, unless ``x`` (as a 2-D matrix) was a
        transposed view of a contiguous tensor: then the output is one too (the kernels' layout).

    Kernels: CPU float32 / float64; GPU float32 / float16 / bfloat16 / float64.
    """
    out_features = check_args(x, values, crow_indices, col_indices, bias, out_features)
    in_features = x.shape[-1]
    if transposed is None:
        transposed = transpose_pattern(crow_indices, col_indices, in_features, op=OP)
    else:
        transposed = _check_transposed(transposed, crow_indices, col_indices.numel(), in_features)
    x2 = x.reshape(x.shape[:-1].numel(), in_features)  # not -1: in_features may be 0
    feature_major = x2.t().is_contiguous() and not x2.is_contiguous()
    yt = sparse_linear_t(x2.t(), values, crow_indices, col_indices, transposed, bias)
    y = yt.t() if feature_major else yt.t().contiguous()
    return y.reshape(*x.shape[:-1], out_features)
