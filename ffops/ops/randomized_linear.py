"""The randomized linear op: ``y = ffops.randomized_linear(x, weight, bias, ratio=0.2)``.

``y = x W^T + b`` exactly, but instead of ``x`` the backward keeps a random sketch ``S^T X`` of its
rows (``ratio`` of them: batch and tokens flattened to ``R`` rows, ``k = ceil(ratio R)``) and the
seed of ``S``. ``dX = dY W`` and ``db`` are exact; ``dW = (S^T dY)^T (S^T X)`` is an unbiased
estimate (Bershatsky et al., 2022, "Memory-Efficient Backpropagation through Large Linear Layers").
``S`` is regenerated in the backward from the seed inside the kernel (never stored, never whole
in memory). The specification, with the hash that gives ``S`` and the variance of ``dW``:
ffops.reference.randomized_linear. One kernel operator, ``rmm_sketch`` (schema: csrc/ops.cpp;
kernels: csrc/cpu/randomized_linear.cpp, csrc/cuda/randomized_linear*.{cu,cpp},
kernels/randomized_linear.py); the autograd formula is ``_RandomizedLinear`` below (GEMMs by torch).
"""

import torch
import torch.nn.functional as F

from ffops import _backend
from ffops._validation import check_bias, check_choice, check_float_tensor, check_same_device
from ffops.ops._common import stat_dtype, wire
from ffops.reference import randomized_linear as reference
from ffops.reference.randomized_linear import KINDS, sketch_rows

OP = "ffops.randomized_linear"
SEED_RANGE = 2**62  # seeds drawn for seed=None: [0, 2^62)


def _fake_rmm_sketch(a, seed, k, kind):
    return a.new_empty((k, a.shape[1]))


KERNELS = wire({"rmm_sketch": _fake_rmm_sketch}, "randomized_linear")


def _sketch(impl: str, a: torch.Tensor, seed: torch.Tensor, k: int, kind: int) -> torch.Tensor:
    if impl == "reference":
        return reference.rmm_sketch(a, int(seed), k, KINDS[kind])
    return KERNELS[impl].rmm_sketch(a, seed, k, kind)


class _RandomizedLinear(torch.autograd.Function):
    """``y [R, out] = x [R, in] W^T + b``; saves the sketch of x (not x) and the seed."""

    @staticmethod
    def forward(ctx, x, weight, bias, seed, k, kind, impl, need_sketch):
        y = F.linear(x, weight, bias)
        sx = None
        if need_sketch:
            xs = x
            if torch.is_autocast_enabled(x.device.type):  # the sketch in the dtype the GEMM ran in
                xs = x.to(torch.get_autocast_dtype(x.device.type))
            sx = _sketch(impl, xs.contiguous(), seed, k, kind)
        ctx.save_for_backward(weight, sx, seed)
        ctx.k, ctx.kind, ctx.impl, ctx.x_dtype = k, kind, impl, x.dtype
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, dy):
        weight, sx, seed = ctx.saved_tensors
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = (dy @ weight.to(dy.dtype)).to(ctx.x_dtype)
        if ctx.needs_input_grad[1]:
            sdy = _sketch(ctx.impl, dy.contiguous(), seed, ctx.k, ctx.kind)
            dw = (sdy.t() @ sx.to(sdy.dtype)).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = dy.sum(0, dtype=stat_dtype(dy.dtype)).to(weight.dtype)
        return dx, dw, db, None, None, None, None, None


def check_ratio(op: str, ratio) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
        raise TypeError(f"{op}: ratio must be a float in (0, 1], got {type(ratio).__name__}")
    if not 0 < ratio <= 1:
        raise ValueError(f"{op}: ratio must be in (0, 1] (the fraction of rows kept in the sketch), got {ratio}")
    return float(ratio)


def _seed_tensor(op: str, seed) -> torch.Tensor:
    if seed is None:
        return torch.randint(SEED_RANGE, (), dtype=torch.int64)
    if isinstance(seed, torch.Tensor):
        if seed.dtype != torch.int64 or seed.numel() != 1 or seed.device.type != "cpu":
            raise ValueError(
                f"{op}: a seed tensor must be one int64 value on the CPU, got {seed.dtype} {tuple(seed.shape)}"
            )
        return seed.reshape(())
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"{op}: seed must be None or an int in [0, 2^63), got {seed!r}")
    return torch.tensor(seed, dtype=torch.int64)


def randomized_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    ratio: float,
    seed=None,
    kind: str = "gaussian",
) -> torch.Tensor:
    """``x @ weight.T + bias`` whose backward keeps a random sketch of x's rows instead of x.

    Args:
        x: ``[..., in_features]``; its rows (all leading dimensions flattened) are what is sketched.
        weight: ``[out_features, in_features]``; bias: ``[out_features]`` or None.
        ratio: the sketch's rows as a fraction of x's rows, in (0, 1]: saved for backward are
            ``ceil(ratio * rows) * in_features`` values (x's dtype; the autocast dtype under autocast)
            instead of ``rows * in_features``.
        seed: an int in [0, 2^63) (or a one-element int64 CPU tensor) for a reproducible sketch;
            None (default) draws one from torch's default CPU generator, a fresh one per call.
        kind: ``"gaussian"`` (the paper's) or ``"rademacher"`` (+-1 entries; cheaper to generate).

    Returns ``[..., out_features]``, exactly ``F.linear(x, weight, bias)``. Gradients: x and bias
    exact; weight unbiased, ``E[dW] = dY^T X``, with relative variance about ``1 / (ratio * rows)``
    per entry (ffops.reference.randomized_linear.dw_variance).
    """
    check_float_tensor(OP, "x", x, min_ndim=1)
    check_float_tensor(OP, "weight", weight, min_ndim=0)
    if weight.dim() != 2:
        raise ValueError(f"{OP}: weight must be 2-D [out_features, in_features], got {tuple(weight.shape)}")
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(f"{OP}: x has {x.shape[-1]} features, weight takes {weight.shape[1]}")
    check_same_device(OP, "x", x, {"weight": weight, "bias": bias})
    check_bias(OP, bias, weight.shape[0], weight.dtype)
    ratio = check_ratio(OP, ratio)
    check_choice(OP, "kind", kind, KINDS)
    seed_t = _seed_tensor(OP, seed)
    x2d = x.reshape(-1, x.shape[-1])
    k = sketch_rows(x2d.shape[0], ratio)
    impl = _backend.resolve(x.device)
    need_sketch = weight.requires_grad and torch.is_grad_enabled()  # (grad mode is off inside forward)
    y = _RandomizedLinear.apply(x2d, weight, bias, seed_t, k, KINDS.index(kind), impl, need_sketch)
    return y.reshape(*x.shape[:-1], weight.shape[0])
