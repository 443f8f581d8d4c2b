"""torch.library wiring of the Forward-Forward kernels: fake (meta) implementations, autograd
(Python for the Triton set; the C++ set's is in csrc/ff_autograd.cpp), and the Triton launchers
wrapped as opaque custom ops.

Two kernel sets compute the same five row-wise operators (math: csrc/ops.cpp):
  ``cpp``    ``ffops::<name>``, C++ kernels registered per device (CPU, CUDA) by ffops._C;
  ``triton`` ``ffops::triton_<name>``, custom ops around ffops.kernels.ff (GPU, or CPU tensors
             under TRITON_INTERPRET=1).
Each forward op's backward is itself an op of the same set, so the whole graph stays inside
ffops under ``torch.compile``.
"""

from typing import NamedTuple

import torch

from ffops import _backend


class FFKernels(NamedTuple):
    goodness_fwd: object
    row_scale: object
    ff_loss_fwd: object
    normalize_fwd: object
    normalize_bwd: object


def stat_dtype(dtype: torch.dtype) -> torch.dtype:
    """Per-row statistics are kept in the accumulation type."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def rows_last_contiguous(t: torch.Tensor) -> torch.Tensor:
    """A 2-D tensor with unit stride in its last dimension (any row stride), copying only if needed."""
    return t if t.size(1) <= 1 or t.stride(1) == 1 else t.contiguous()


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


# ---- autograd ------------------------------------------------------------------------------------


def _register_autograd(names: dict[str, str], kernels: FFKernels) -> None:
    def setup_goodness(ctx, inputs, output):
        h, scale = inputs
        ctx.save_for_backward(h)
        ctx.scale = scale

    def backward_goodness(ctx, grad_g):
        (h,) = ctx.saved_tensors
        return kernels.row_scale(h, (2.0 * ctx.scale) * grad_g.contiguous()), None

    def setup_ff_loss(ctx, inputs, output):
        h, scale, coef, theta, target = inputs
        g, _ = output
        ctx.save_for_backward(h, g, target)
        ctx.scale, ctx.coef, ctx.theta = scale, coef, theta

    def backward_ff_loss(ctx, grad_g, grad_loss):
        # loss = softplus(z), z = coef * (t - g): dloss/dg = -coef * sigmoid(z), dloss/dt = coef * sigmoid(z)
        h, g, target = ctx.saved_tensors
        t = ctx.theta if target is None else target
        dloss_dz = torch.sigmoid(ctx.coef * (t - g)) * grad_loss
        dg = grad_g - ctx.coef * dloss_dz
        dh = kernels.row_scale(h, ((2.0 * ctx.scale) * dg).contiguous())
        dtarget = None if target is None else ctx.coef * dloss_dz
        return dh, None, None, None, dtarget

    def setup_normalize(ctx, inputs, output):
        h, norm_scale, eps = inputs
        _, s = output
        ctx.save_for_backward(h, s)
        ctx.norm_scale, ctx.eps = norm_scale, eps

    def backward_normalize(ctx, grad_y, grad_s):
        h, s = ctx.saved_tensors
        grad_s = None if grad_s is None else grad_s.contiguous()
        if grad_y is None:
            return kernels.row_scale(h, 2.0 * grad_s), None, None
        grad_y = rows_last_contiguous(grad_y)
        return kernels.normalize_bwd(grad_y, grad_s, h, s, ctx.norm_scale, ctx.eps), None, None

    torch.library.register_autograd(names["goodness_fwd"], backward_goodness, setup_context=setup_goodness)
    torch.library.register_autograd(names["ff_loss_fwd"], backward_ff_loss, setup_context=setup_ff_loss)
    torch.library.register_autograd(names["normalize_fwd"], backward_normalize, setup_context=setup_normalize)


_FAKES = {
    "goodness_fwd": _fake_goodness_fwd,
    "row_scale": _fake_row_scale,
    "ff_loss_fwd": _fake_ff_loss_fwd,
    "normalize_fwd": _fake_normalize_fwd,
    "normalize_bwd": _fake_normalize_bwd,
}


def _wire(prefix: str, python_autograd: bool) -> FFKernels:
    """Fake implementations for one kernel set, and its autograd where it is not in C++ (the C++
    set's is csrc/ff_autograd.cpp: the same formulas)."""
    names = {op: f"ffops::{prefix}{op}" for op in FFKernels._fields}
    for op, name in names.items():
        torch.library.register_fake(name)(_FAKES[op])
    kernels = FFKernels(*(getattr(torch.ops.ffops, prefix + op).default for op in FFKernels._fields))
    if python_autograd:
        _register_autograd(names, kernels)
    return kernels


def _define_triton_ops() -> None:
    """Wrap the Triton launchers as opaque custom ops ``ffops::triton_<name>`` (schemas as in csrc/ops.cpp)."""
    from ffops.kernels import ff as tk

    def goodness_fwd(h: torch.Tensor, scale: float) -> torch.Tensor:
        return tk.goodness_fwd(h, scale)

    def row_scale(h: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        return tk.row_scale(h, coef)

    def ff_loss_fwd(
        h: torch.Tensor, scale: float, coef: float, theta: float, target: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return tk.ff_loss_fwd(h, scale, coef, theta, target)

    def normalize_fwd(h: torch.Tensor, norm_scale: float, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        return tk.normalize_fwd(h, norm_scale, eps)

    def normalize_bwd(
        grad_y: torch.Tensor, grad_s: torch.Tensor | None, h: torch.Tensor, s: torch.Tensor, norm_scale: float, eps: float
    ) -> torch.Tensor:
        return tk.normalize_bwd(grad_y, grad_s, h, s, norm_scale, eps)

    for name, fn in [
        ("goodness_fwd", goodness_fwd),
        ("row_scale", row_scale),
        ("ff_loss_fwd", ff_loss_fwd),
        ("normalize_fwd", normalize_fwd),
        ("normalize_bwd", normalize_bwd),
    ]:
        torch.library.custom_op(f"ffops::triton_{name}", mutates_args=())(fn)


KERNELS: dict[str, FFKernels] = {}
if _backend.CPP_LOADED:
    # an extension built before csrc/ff_autograd.cpp existed has no C++ autograd: use the Python formulas
    KERNELS["cpp"] = _wire("", python_autograd=not torch._C._dispatch_has_kernel_for_dispatch_key(
        "ffops::goodness_fwd", "Autograd"))
if _backend.TRITON_OK:
    _define_triton_ops()
    KERNELS["triton"] = _wire("triton_", python_autograd=True)
