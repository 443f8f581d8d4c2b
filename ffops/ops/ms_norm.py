"""The ``ms_norm`` ops: memory-sharing norms (MS-LayerNorm, MS-RMSNorm).

The norms normalize without affine and save only their output and ``rstd``; under autocast they
return the autocast dtype, so the next ``nn.Linear`` saves the *same* tensor (its cast is a no-op)
and the two share one copy.

Each public function validates its arguments, picks the implementation for the tensor's device and
the backend setting (ffops._backend) and calls the kernels: two operators, ``ms_norm_fwd`` (autograd
saves only its outputs ``y`` and ``rstd``; ``rstd`` is non-differentiable) and ``ms_norm_bwd``;
schemas and math: csrc/ops.cpp; autograd: csrc/ms_norm.cpp; kernels: csrc/cpu/ms_norm.cpp,
csrc/cuda/ms_norm.cu, kernels/ms_norm.py. The pure-torch specification is ffops.reference.ms_norm.
"""

import torch

from ffops import _backend
from ffops._validation import check_finite_real, check_float_tensor
from ffops.ops._common import rows_last_contiguous, stat_dtype, wire
from ffops.reference import ms_norm as reference


def _fake_ms_norm_fwd(x, eps, center, out_dtype):
    return x.new_empty(x.shape, dtype=out_dtype or x.dtype), x.new_empty(x.shape[:-1], dtype=stat_dtype(x.dtype))


def _fake_ms_norm_bwd(grad_y, y, rstd, center, dx_dtype):
    return y.new_empty(y.shape, dtype=dx_dtype)


KERNELS = wire({"ms_norm_fwd": _fake_ms_norm_fwd, "ms_norm_bwd": _fake_ms_norm_bwd}, "ms_norm")


def norm_out_dtype(x: torch.Tensor, out_dtype: torch.dtype | None) -> torch.dtype:
    """The dtype an MS norm returns: ``out_dtype`` if given; else the autocast dtype when autocast
    is on for x's device (what the next linear would cast to; float64 is never cast); else x's."""
    if out_dtype is not None:
        return out_dtype
    device_type = x.device.type
    if x.dtype != torch.float64 and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return x.dtype


def _ms_norm(op: str, x: torch.Tensor, eps: float, center: bool, out_dtype) -> torch.Tensor:
    check_float_tensor(op, "x", x, min_ndim=1)
    eps = check_finite_real(op, "eps", eps)
    if eps < 0:
        raise ValueError(f"{op}: eps must be >= 0, got {eps}")
    if out_dtype is not None and (
        not isinstance(out_dtype, torch.dtype)
        or out_dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64)
        or (out_dtype == torch.float64) != (x.dtype == torch.float64)
    ):
        raise TypeError(
            f"{op}: out_dtype must be None, torch.float32, torch.float16 or torch.bfloat16 "
            f"(torch.float64 only for float64 x), got {out_dtype!r} for x of {x.dtype}"
        )
    dtype = norm_out_dtype(x, out_dtype)
    impl = _backend.resolve(x.device)
    if impl == "reference":
        return reference.ms_norm(x, eps, center, dtype)
    # the kernels take x [..., K] as it is (2-D: any row stride; N-D: contiguous), so no reshape or
    # view joins the autograd graph: one node per call, like torch's layer_norm
    x = rows_last_contiguous(x) if x.dim() == 2 else x.contiguous()
    y, _ = KERNELS[impl].ms_norm_fwd(x, eps, center, None if dtype == x.dtype else dtype)
    return y


def ms_layernorm(x: torch.Tensor, eps: float = 1e-5, *, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """LayerNorm over the last dimension without affine, saving only its output and ``rstd``.

    ``y = (x - mean) / sqrt(var + eps)`` (biased variance), computed in float32 (float64 for float64
    x). Returned in ``out_dtype``; by default the autocast dtype when autocast is on for x's device
    (so the next linear shares the saved tensor), else x's dtype. Backward from the output:
    ``dx = rstd * (g - mean(g) - y * mean(g * y))``, in x's dtype.
    """
    return _ms_norm("ffops.ms_layernorm", x, eps, True, out_dtype)


def ms_rmsnorm(x: torch.Tensor, eps: float | None = None, *, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """RMSNorm over the last dimension without affine, saving only its output and ``rstd``.

    ``y = x / sqrt(mean(x^2) + eps)``; ``eps=None`` is ``torch.finfo(x.dtype).eps`` (as
    ``torch.nn.RMSNorm``). Output dtype as :func:`ms_layernorm`. Backward from the output:
    ``dx = rstd * (g - y * mean(g * y))``.
    """
    op = "ffops.ms_rmsnorm"
    if eps is None and isinstance(x, torch.Tensor) and x.is_floating_point():
        eps = torch.finfo(x.dtype).eps
    return _ms_norm(op, x, eps, False, out_dtype)
