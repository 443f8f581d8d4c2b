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

import weakref

import torch

from ffops import _backend
from ffops._validation import check_bias, check_float_tensor, check_same_device
from ffops.ops._common import wire
from ffops.ops.sparse_linear_pattern import INDEX_DTYPES, TransposedPattern, transpose_pattern
from ffops.reference import sparse_linear as reference

OP = "ffops.sparse_linear"
CPU_DTYPES = (torch.float32, torch.float64)


def _fake_fwd(xt, values, crow, col, bias):
    return xt.new_empty((crow.shape[0] - 1, xt.shape[1]))


def _fake_bwd(dyt, xt, values, t_ptr, t_row, t_perm, need_dx, need_dvalues):
    dxt = dyt.new_empty(xt.shape if need_dx else (0,))
    dvalues = values.new_empty(values.shape if need_dvalues else (0,))
    return dxt, dvalues


# The kernels (schemas and math: csrc/ops.cpp; kernels: csrc/cpu/sparse_linear.cpp,
# csrc/cuda/sparse_linear.cu, kernels/sparse_linear.py) and the layer op over them, ffops::sparse_linear /
# triton_sparse_linear: one dispatcher call that transposes in and out, runs the forward kernel and
# records its C++ autograd node (csrc/sparse_linear.cpp). The layer op is composite (no fake of its own:
# under fake tensors it runs on the kernels' fakes).
KERNELS = wire({"sparse_linear_fwd": _fake_fwd, "sparse_linear_bwd": _fake_bwd}, "sparse_linear")
LAYER = {
    impl: getattr(torch.ops.ffops, "triton_sparse_linear" if impl == "triton" else "sparse_linear").default
    for impl in KERNELS
}
if _backend.CPP_LOADED:
    torch.library.register_fake("ffops::transpose_2d")(lambda x: x.new_empty((x.shape[1], x.shape[0])))


def _check_transposed(transposed, crow: torch.Tensor, nnz: int, in_features: int) -> TransposedPattern:
    if not isinstance(transposed, tuple) or len(transposed) != 3:
        raise TypeError(
            f"{OP}: transposed must be the (ptr, row, perm) tuple of ffops.sparse.transpose_pattern, "
            f"got {type(transposed).__name__}"
        )
    ptr, row, perm = transposed
    if isinstance(ptr, torch.Tensor) and ptr.dim() == 1 and ptr.numel() != in_features + 1:
        raise ValueError(
            f"{OP}: x has {in_features} features but the pattern was made for {ptr.numel() - 1} "
            "(transposed.ptr has in_features + 1 entries)"
        )
    for name, t, n in (("ptr", ptr, in_features + 1), ("row", row, nnz), ("perm", perm, nnz)):
        if not isinstance(t, torch.Tensor) or t.dtype != crow.dtype or t.shape != (n,) or t.device != crow.device:
            raise ValueError(
                f"{OP}: transposed.{name} must be a [{n}] {crow.dtype} tensor on {crow.device} "
                "(from ffops.sparse.transpose_pattern of this pattern)"
            )
    return TransposedPattern(ptr.contiguous(), row.contiguous(), perm.contiguous())


# id(col_indices) -> (weakrefs to col_indices and crow_indices, versions, their TransposedPattern).
# Keyed by id: tensors compare elementwise, so they cannot be dictionary keys themselves.
_PATTERNS: dict[int, tuple] = {}
_PATTERNS_MAX = 64


def _transposed_pattern(crow: torch.Tensor, col: torch.Tensor, in_features: int) -> TransposedPattern:
    """Validate and transpose a pattern once, then reuse it while the same index tensors are passed
    unchanged (their in-place version counters are part of the key)."""
    if torch.compiler.is_compiling():
        return transpose_pattern(crow, col, in_features, op=OP)
    versions = (crow._version, col._version, in_features)
    hit = _PATTERNS.get(id(col))
    if hit is not None and hit[0]() is col and hit[1]() is crow and hit[2] == versions:
        return hit[3]
    pattern = transpose_pattern(crow, col, in_features, op=OP)
    if len(_PATTERNS) >= _PATTERNS_MAX:  # drop the entries of freed tensors, else start over
        for key in [k for k, v in _PATTERNS.items() if v[0]() is None]:
            del _PATTERNS[key]
        if len(_PATTERNS) >= _PATTERNS_MAX:
            _PATTERNS.clear()
    _PATTERNS[id(col)] = (weakref.ref(col), weakref.ref(crow), versions, pattern)
    return pattern


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
        raise ValueError(
            f"{OP}: values must have one entry per nonzero (len(col_indices) = {col.numel()}), got {values.numel()}"
        )
    if out_features is None:
        out_features = crow.numel() - 1
    if isinstance(out_features, bool) or not isinstance(out_features, int) or out_features < 0:
        raise TypeError(f"{OP}: out_features must be a non-negative int, got {out_features!r}")
    if crow.numel() != out_features + 1:
        raise ValueError(
            f"{OP}: crow_indices must have out_features + 1 = {out_features + 1} entries, got {crow.numel()}"
        )
    check_same_device(OP, "x", x, {"values": values, "bias": bias, "crow_indices": crow, "col_indices": col})
    if values.dtype != x.dtype:
        raise TypeError(f"{OP}: values must have the dtype of x ({x.dtype}), got {values.dtype}")
    check_bias(OP, bias, out_features, x.dtype)
    return out_features


def _run(x2, values, crow, col, transposed: TransposedPattern, bias):
    """``x2 [B, in] @ W^T + bias`` with trusted arguments, on the backend for x2's device."""
    impl = _backend.resolve(x2.device)
    if impl == "reference":
        return reference.sparse_linear(x2, values, crow, col, bias, crow.numel() - 1)
    if impl == "cpp" and x2.device.type == "cpu" and x2.dtype not in CPU_DTYPES:
        raise TypeError(
            f"{OP}: the C++ CPU kernels take float32 or float64, got {x2.dtype}; "
            "cast, or run the pure-torch reference with ffops.use_backend('reference')"
        )
    return LAYER[impl](x2, values, crow, col, *transposed, bias)


def sparse_linear_t(xt, values, crow, col, transposed: TransposedPattern, bias=None):
    """Feature-major form: ``yt [out, B] = W @ xt + bias[:, None]`` for ``xt [in, B]``.

    For callers that hold activations feature-major already (SparseConv2d's unfolded patches).
    Arguments are trusted (validated by the caller). Returns a contiguous ``yt`` when ``xt`` is.
    """
    return _run(xt.t(), values, crow, col, transposed, bias).t()


def sparse_linear(
    x: torch.Tensor,
    values: torch.Tensor,
    crow_indices: torch.Tensor,
    col_indices: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_features: int | None = None,
    *,
    transposed: TransposedPattern | None = None,
) -> torch.Tensor:
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
            ``ffops.nn.SparseLinear`` keeps). When omitted, the pattern is validated and transposed
            on the first call and reused while the same, unmodified index tensors come back; under
            ``torch.compile`` pass it (the validation reads values on the host).

    Returns:
        ``[..., out_features]`` in ``x``'s dtype. Contiguous, unless ``x`` (as a 2-D matrix) was a
        transposed view of a contiguous tensor: then the output is one too (the kernels' layout).

    Kernels: CPU float32 / float64; GPU float32 / float16 / bfloat16 / float64.
    """
    out_features = check_args(x, values, crow_indices, col_indices, bias, out_features)
    in_features = x.shape[-1]
    if transposed is None:
        transposed = _transposed_pattern(crow_indices, col_indices, in_features)
    else:
        transposed = _check_transposed(transposed, crow_indices, col_indices.numel(), in_features)
    if x.dim() == 2:  # no reshape: not even a view node between the caller and the op's node
        return _run(x, values, crow_indices, col_indices, transposed, bias)
    x2 = x.reshape(x.shape[:-1].numel(), in_features)  # not -1: in_features may be 0
    return _run(x2, values, crow_indices, col_indices, transposed, bias).reshape(*x.shape[:-1], out_features)
