"""The randomized linear op in plain torch (the specification): ``y = x W^T + b`` exactly, with a
backward that keeps a random sketch of the input instead of the input (Bershatsky et al., 2022,
"Memory-Efficient Backpropagation through Large Linear Layers").

With ``X [R, in]`` the input's rows (batch and tokens flattened), ``k = ceil(ratio * R)`` and a random
``S [R, k]`` with independent entries of mean 0 and variance ``1 / k``:

  forward   ``Y = X W^T + b``; saved for backward: ``S^T X [k, in]`` (in x's dtype) and the seed;
  backward  ``dX = dY W`` and ``db = sum_r dY[r]`` exactly, ``dW ~ (S^T dY)^T (S^T X)``, unbiased
            since ``E[S S^T] = I``. Its variance (per entry, Gaussian S):
            ``Var[dW_ij] = (|dY_:i|^2 |X_:j|^2 + (dY_:i . X_:j)^2) / k``.

``S`` is never stored: entry ``(r, c)`` is a counter-based hash of ``(seed, r, c)``, regenerated
wherever it is needed (every backend computes the same bits; the Gaussian's log / cos agree to
float rounding):

  ``h1 = mix32(r * 0x9E3779B1 + seed_lo)``, ``h = mix32(h1 ^ (c * 0x85EBCA77 + seed_hi))`` (uint32
  arithmetic, ``seed_lo`` / ``seed_hi`` the low / high 32 bits of the int64 seed), with ``mix32``
  Wellons' lowbias32: ``x ^= x >> 16; x *= 0x7FEB352D; x ^= x >> 15; x *= 0x846CA68B; x ^= x >> 16``.
  * ``rademacher``: ``S = (1 - 2 * (h >> 31)) / sqrt(k)``;
  * ``gaussian``: ``h2 = mix32(h ^ 0x68E31DA4)``, ``u1 = ((h >> 8) + 0.5) 2^-24``, ``u2 = (h2 >> 8) 2^-24``,
    ``S = sqrt(-2 ln u1) cos(2 pi u2) / sqrt(k)`` (Box-Muller), computed in float32 (float64 for
    float64 x).
"""

import math

import torch
import torch.nn.functional as F

from ffops.ops._common import stat_dtype

KINDS = ("gaussian", "rademacher")  # the kernels number them in this order
MASK = 0xFFFFFFFF


def sketch_rows(rows: int, ratio: float) -> int:
    """``k = ceil(ratio * rows)`` (at least 1): the rows of the sketch."""
    return max(1, math.ceil(ratio * rows - 1e-9))


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``x * c mod 2^32`` for int64 tensors holding uint32 values, without int64 overflow."""
    lo = (x & 0xFFFF) * c
    hi = (((x >> 16) * c) & 0xFFFF) << 16
    return (lo + hi) & MASK


def _mix32(x: torch.Tensor) -> torch.Tensor:
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def hash_bits(seed: int, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """The uint32 hash of every (row, col) pair of the broadcast ``rows`` x ``cols`` (int64 tensors)."""
    lo, hi = seed & MASK, (seed >> 32) & MASK
    h1 = _mix32((_mul32(rows & MASK, 0x9E3779B1) + lo) & MASK)
    return _mix32(h1 ^ ((_mul32(cols & MASK, 0x85EBCA77) + hi) & MASK))


def sketch_matrix(seed: int, rows: int, k: int, kind: str, dtype=torch.float32, device=None) -> torch.Tensor:
    """``S [rows, k]`` (materialized: the specification only; the kernels never build it)."""
    r = torch.arange(rows, device=device, dtype=torch.int64)[:, None]
    c = torch.arange(k, device=device, dtype=torch.int64)[None, :]
    h = hash_bits(seed, r, c)
    if kind == "rademacher":
        s = (1 - 2 * (h >> 31)).to(dtype)
    else:
        h2 = _mix32(h ^ 0x68E31DA4)
        u1 = ((h >> 8).to(dtype) + 0.5) * 2.0**-24
        u2 = (h2 >> 8).to(dtype) * 2.0**-24
        s = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)
    return s / math.sqrt(k)


def rmm_sketch(a: torch.Tensor, seed: int, k: int, kind: str) -> torch.Tensor:
    """``S^T a [k, n]`` of a 2-D ``a [rows, n]``, accumulated in the compute type, in a's dtype."""
    acc = stat_dtype(a.dtype)
    s = sketch_matrix(seed, a.shape[0], k, kind, acc, a.device)
    return (s.t() @ a.to(acc)).to(a.dtype)


class _RandomizedLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x2d, weight, bias, seed, k, kind):
        ctx.save_for_backward(weight, rmm_sketch(x2d, seed, k, kind))
        ctx.seed, ctx.k, ctx.kind, ctx.x_dtype = seed, k, kind, x2d.dtype
        return F.linear(x2d, weight, bias)

    @staticmethod
    def backward(ctx, dy):
        weight, sx = ctx.saved_tensors
        dx = (dy @ weight.to(dy.dtype)).to(ctx.x_dtype)
        sdy = rmm_sketch(dy.contiguous(), ctx.seed, ctx.k, ctx.kind)
        acc = stat_dtype(weight.dtype)
        dw = (sdy.to(acc).t() @ sx.to(acc)).to(weight.dtype)
        db = dy.sum(0, dtype=acc).to(weight.dtype)
        return dx, dw, db, None, None, None


def randomized_linear(x: torch.Tensor, weight, bias, seed: int, k: int, kind: str) -> torch.Tensor:
    """``x W^T + b`` (x of any leading shape) with the sketched backward of the module docstring."""
    x2d = x.reshape(-1, x.shape[-1]).contiguous()
    y = _RandomizedLinear.apply(x2d, weight, bias, seed, k, kind)
    return y.reshape(*x.shape[:-1], weight.shape[0])


def dw_variance(x2d: torch.Tensor, dy: torch.Tensor, k: int) -> torch.Tensor:
    """The variance of each entry of the Gaussian-sketch ``dW`` estimate: ``(|dY_:i|^2 |X_:j|^2 +
    (dY_:i . X_:j)^2) / k`` (float64)."""
    x, g = x2d.double(), dy.double()
    return ((g * g).sum(0)[:, None] * (x * x).sum(0)[None, :] + (g.t() @ x) ** 2) / k
