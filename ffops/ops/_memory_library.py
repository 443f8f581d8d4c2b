"""torch.library wiring of the memory-saving kernels: fake (meta) implementations, autograd, and
the Triton launchers wrapped as opaque custom ops ``ffops::triton_<name>``.

Two kernel sets compute the same four operators (math: csrc/ops.cpp):
  ``cpp``    ``ffops::<name>``, C++ kernels registered per device (CPU, CUDA) by ffops._C, with
             their autograd in C++ too (csrc/memory_autograd.cpp: a Python formula would cost tens
             of microseconds per call, more than the op itself on small tensors);
  ``triton`` ``ffops::triton_<name>``, custom ops around ffops.kernels.memory, autograd below.

What autograd saves is the point of this family:
  * ``packed_act_fwd`` saves only its packed ``codes`` output (``bits`` bits per element); the
    backward is ``packed_act_bwd`` (gradient times the level of each element's code).
  * ``ms_norm_fwd`` saves only its outputs ``y`` and ``rstd``; ``y`` is the very tensor that the
    caller hands on (to the next linear layer, which saves it too: one copy for both). ``rstd`` is
    non-differentiable. The backward is ``ms_norm_bwd``.
"""

from typing import NamedTuple

import torch

from ffops import _backend
from ffops.ops._ff_library import rows_last_contiguous, stat_dtype


class MemoryKernels(NamedTuple):
    packed_act_fwd: object
    packed_act_bwd: object
    ms_norm_fwd: object
    ms_norm_bwd: object


def packed_nbytes(numel, bits):
    """Bytes of ``numel`` codes of ``bits`` bits: ``ceil(numel * bits / 8)`` (works on SymInts)."""
    return (numel * bits + 7) // 8


# ---- fake implementations (shapes and dtypes only) --------------------------------------------


def _fake_packed_act_fwd(x, fn, borders, levels, bits):
    return x.new_empty(x.shape), x.new_empty((packed_nbytes(x.numel(), bits),), dtype=torch.uint8)


def _fake_packed_act_bwd(grad_y, codes, levels, bits):
    return grad_y.new_empty(grad_y.shape)


def _fake_ms_norm_fwd(x, eps, center, out_dtype):
    return x.new_empty(x.shape, dtype=out_dtype or x.dtype), x.new_empty((x.shape[0],), dtype=stat_dtype(x.dtype))


def _fake_ms_norm_bwd(grad_y, y, rstd, center, dx_dtype):
    return y.new_empty(y.shape, dtype=dx_dtype)


_FAKES = {
    "packed_act_fwd": _fake_packed_act_fwd,
    "packed_act_bwd": _fake_packed_act_bwd,
    "ms_norm_fwd": _fake_ms_norm_fwd,
    "ms_norm_bwd": _fake_ms_norm_bwd,
}


# ---- autograd ------------------------------------------------------------------------------------


def _register_autograd(names: dict[str, str], kernels: MemoryKernels) -> None:
    def setup_act(ctx, inputs, output):
        _, _, _, levels, bits = inputs
        _, codes = output
        ctx.save_for_backward(codes)
        ctx.levels, ctx.bits = levels, bits

    def backward_act(ctx, grad_y, grad_codes):
        (codes,) = ctx.saved_tensors
        return kernels.packed_act_bwd(grad_y.contiguous(), codes, ctx.levels, ctx.bits), None, None, None, None

    def setup_norm(ctx, inputs, output):
        x, _, center, _ = inputs
        y, rstd = output
        ctx.mark_non_differentiable(rstd)
        ctx.save_for_backward(y, rstd)
        ctx.center, ctx.x_dtype = center, x.dtype

    def backward_norm(ctx, grad_y, grad_rstd):
        y, rstd = ctx.saved_tensors
        if y.numel() == 0:  # an empty gradient may carry any strides
            return y.new_empty(y.shape, dtype=ctx.x_dtype), None, None, None
        dx = kernels.ms_norm_bwd(rows_last_contiguous(grad_y), y, rstd, ctx.center, ctx.x_dtype)
        return dx, None, None, None

    torch.library.register_autograd(names["packed_act_fwd"], backward_act, setup_context=setup_act)
    torch.library.register_autograd(names["ms_norm_fwd"], backward_norm, setup_context=setup_norm)


def _wire(prefix: str, python_autograd: bool) -> MemoryKernels:
    names = {op: f"ffops::{prefix}{op}" for op in MemoryKernels._fields}
    for op, name in names.items():
        torch.library.register_fake(name)(_FAKES[op])
    kernels = MemoryKernels(*(getattr(torch.ops.ffops, prefix + op).default for op in MemoryKernels._fields))
    if python_autograd:
        _register_autograd(names, kernels)
    return kernels


def _define_triton_ops() -> None:
    """Wrap the Triton launchers as opaque custom ops ``ffops::triton_<name>`` (schemas as in csrc/ops.cpp)."""
    from ffops.kernels import memory as tk

    def packed_act_fwd(
        x: torch.Tensor, fn: int, borders: list[float], levels: list[float], bits: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return tk.packed_act_fwd(x, fn, borders, levels, bits)

    def packed_act_bwd(grad_y: torch.Tensor, codes: torch.Tensor, levels: list[float], bits: int) -> torch.Tensor:
        return tk.packed_act_bwd(grad_y, codes, levels, bits)

    def ms_norm_fwd(
        x: torch.Tensor, eps: float, center: bool, out_dtype: torch.dtype | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return tk.ms_norm_fwd(x, eps, center, out_dtype)

    def ms_norm_bwd(
        grad_y: torch.Tensor, y: torch.Tensor, rstd: torch.Tensor, center: bool, dx_dtype: torch.dtype
    ) -> torch.Tensor:
        return tk.ms_norm_bwd(grad_y, y, rstd, center, dx_dtype)

    for name, fn in [
        ("packed_act_fwd", packed_act_fwd),
        ("packed_act_bwd", packed_act_bwd),
        ("ms_norm_fwd", ms_norm_fwd),
        ("ms_norm_bwd", ms_norm_bwd),
    ]:
        torch.library.custom_op(f"ffops::triton_{name}", mutates_args=())(fn)


def _has_memory_ops() -> bool:
    """ffops._C may predate this family (an old build): then only the reference / Triton run."""
    return _backend.CPP_LOADED and hasattr(torch.ops.ffops, "packed_act_fwd")


KERNELS: dict[str, MemoryKernels] = {}
if _has_memory_ops():
    KERNELS["cpp"] = _wire("", python_autograd=False)
if _backend.TRITON_OK:
    _define_triton_ops()
    KERNELS["triton"] = _wire("triton_", python_autograd=True)
