"""torch.library wiring of the fused FF layer: fake implementations, autograd (Python for the
Triton set; the C++ set's is in csrc/ff_autograd.cpp), and the Triton launchers
(ffops.kernels.ff_linear) wrapped as opaque custom ops ``ffops::triton_ff_linear_*`` and
``ffops::triton_ff_label_rows``.

The layer output ``h`` is the *activity handed to the next layer*: it is marked non-differentiable
(gradient never crosses FF layers). Gradients flow from the per-row ``sumsq`` (the goodness) and
the positive-row column means ``pos_mean`` (peer normalization) into the weight and bias only.
``ff_label_rows`` (the first layer on every label overlay, for prediction) is inference-only: it
has no autograd. ``ff_linear_overlay_fwd`` (the first layer on label-overlaid rows sharing their
images) has the same autograd as ``ff_linear_fwd``, through ``ff_linear_overlay_bwd``.
"""

from typing import NamedTuple

import torch

from ffops import _backend
from ffops.ops._ff_library import stat_dtype


class FFLinearKernels(NamedTuple):
    fwd: object
    bwd: object
    label_rows: object
    overlay_fwd: object
    overlay_bwd: object


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
    return base.new_empty((rows, out)), base.new_empty((rows,), dtype=stat), base.new_empty((out,), dtype=stat)


def _fake_overlay_bwd(base, labels, on, x_scale, h, grad_sumsq, grad_pos_mean, num_classes, n_pos):
    return base.new_empty((h.shape[1], base.shape[1])), base.new_empty((h.shape[1],))


def _register_overlay_autograd(fwd_name: str, kernels: FFLinearKernels) -> None:
    def setup_context(ctx, inputs, output):
        base, labels, on, x_scale, _weight, bias, num_classes, n_pos = inputs
        h, _, _ = output
        ctx.mark_non_differentiable(h)
        ctx.save_for_backward(base, labels, on, x_scale, h)
        ctx.num_classes, ctx.n_pos, ctx.has_bias = num_classes, n_pos, bias is not None

    def backward(ctx, grad_h, grad_sumsq, grad_pos_mean):
        base, labels, on, x_scale, h = ctx.saved_tensors
        grad_w, grad_b = kernels.overlay_bwd(
            base, labels, on, x_scale, h, grad_sumsq.contiguous(),
            None if grad_pos_mean is None else grad_pos_mean.contiguous(), ctx.num_classes, ctx.n_pos,
        )
        return None, None, None, None, grad_w, grad_b if ctx.has_bias else None, None, None

    torch.library.register_autograd(fwd_name, backward, setup_context=setup_context)


def _register_autograd(fwd_name: str, kernels: FFLinearKernels) -> None:
    def setup_context(ctx, inputs, output):
        x, x_scale, _weight, bias, n_pos = inputs
        h, _, _ = output
        ctx.mark_non_differentiable(h)
        ctx.save_for_backward(x, x_scale, h)
        ctx.n_pos = n_pos
        ctx.has_bias = bias is not None

    def backward(ctx, grad_h, grad_sumsq, grad_pos_mean):
        x, x_scale, h = ctx.saved_tensors
        grad_w, grad_b = kernels.bwd(
            x, x_scale, h, grad_sumsq.contiguous(),
            None if grad_pos_mean is None else grad_pos_mean.contiguous(), ctx.n_pos,
        )
        return None, None, grad_w, grad_b if ctx.has_bias else None, None

    torch.library.register_autograd(fwd_name, backward, setup_context=setup_context)


def _wire(prefix: str, python_autograd: bool) -> FFLinearKernels:
    """Fake implementations for one kernel set, and its autograd where it is not in C++ (the C++
    set's is csrc/ff_autograd.cpp: the same formulas)."""
    fwd_name, bwd_name = f"ffops::{prefix}ff_linear_fwd", f"ffops::{prefix}ff_linear_bwd"
    torch.library.register_fake(fwd_name)(_fake_fwd)
    torch.library.register_fake(bwd_name)(_fake_bwd)
    torch.library.register_fake(f"ffops::{prefix}ff_label_rows")(_fake_label_rows)
    torch.library.register_fake(f"ffops::{prefix}ff_linear_overlay_fwd")(_fake_overlay_fwd)
    torch.library.register_fake(f"ffops::{prefix}ff_linear_overlay_bwd")(_fake_overlay_bwd)
    kernels = FFLinearKernels(*(getattr(torch.ops.ffops, prefix + name).default for name in (
        "ff_linear_fwd", "ff_linear_bwd", "ff_label_rows", "ff_linear_overlay_fwd", "ff_linear_overlay_bwd")))
    if python_autograd:
        _register_autograd(fwd_name, kernels)
        _register_overlay_autograd(f"ffops::{prefix}ff_linear_overlay_fwd", kernels)
    return kernels


def _define_triton_ops() -> None:
    """Opaque custom ops around the Triton launchers (schemas as in csrc/ops.cpp)."""

    @torch.library.custom_op("ffops::triton_ff_linear_fwd", mutates_args=())
    def fwd(
        x: torch.Tensor, x_scale: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor | None, n_pos: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from ffops.kernels import ff_linear

        return ff_linear.ff_linear_fwd(x, x_scale, weight, bias, n_pos)

    @torch.library.custom_op("ffops::triton_ff_linear_bwd", mutates_args=())
    def bwd(
        x: torch.Tensor,
        x_scale: torch.Tensor | None,
        h: torch.Tensor,
        grad_sumsq: torch.Tensor,
        grad_pos_mean: torch.Tensor | None,
        n_pos: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from ffops.kernels import ff_linear

        return ff_linear.ff_linear_bwd(x, x_scale, h, grad_sumsq, grad_pos_mean, n_pos)

    @torch.library.custom_op("ffops::triton_ff_label_rows", mutates_args=())
    def label_rows(
        pre: torch.Tensor,
        on: torch.Tensor,
        scale: torch.Tensor | None,
        label_weight: torch.Tensor,
        bias: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from ffops.kernels import ff_linear

        return ff_linear.ff_label_rows(pre, on, scale, label_weight, bias)

    @torch.library.custom_op("ffops::triton_ff_linear_overlay_fwd", mutates_args=())
    def overlay_fwd(
        base: torch.Tensor,
        labels: torch.Tensor,
        on: torch.Tensor,
        x_scale: torch.Tensor | None,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        num_classes: int,
        n_pos: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from ffops.kernels import ff_linear_overlay

        return ff_linear_overlay.ff_linear_overlay_fwd(base, labels, on, x_scale, weight, bias, num_classes, n_pos)

    @torch.library.custom_op("ffops::triton_ff_linear_overlay_bwd", mutates_args=())
    def overlay_bwd(
        base: torch.Tensor,
        labels: torch.Tensor,
        on: torch.Tensor,
        x_scale: torch.Tensor | None,
        h: torch.Tensor,
        grad_sumsq: torch.Tensor,
        grad_pos_mean: torch.Tensor | None,
        num_classes: int,
        n_pos: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from ffops.kernels import ff_linear_overlay

        return ff_linear_overlay.ff_linear_overlay_bwd(base, labels, on, x_scale, h, grad_sumsq, grad_pos_mean,
                                                       num_classes, n_pos)


KERNELS: dict[str, FFLinearKernels] = {}
if _backend.CPP_LOADED:
    # an extension built before csrc/ff_autograd.cpp existed has no C++ autograd: use the Python formulas
    KERNELS["cpp"] = _wire("", python_autograd=not torch._C._dispatch_has_kernel_for_dispatch_key(
        "ffops::ff_linear_fwd", "Autograd"))
if _backend.TRITON_OK:
    _define_triton_ops()
    KERNELS["triton"] = _wire("triton_", python_autograd=True)
