"""Triton kernels of the ``cwc_block`` ops: the epilogue of a channel-wise competitive conv FF block
(ReLU, 2x2 max-pool, batch norm, class-group goodness) and its backward.

The math (and the schemas) are those of csrc/ops.cpp and the C++ CPU kernels in
csrc/cpu/cwc_block.cpp. Tensors are channels_last: an [N, C, H, W] tensor is [N * H * W, C] rows in
memory, so a program's tile is ROWS pixels of one sample by BLOCK_C channels, loaded along the
contiguous channels. Per-channel and per-(sample, group) sums are written as per-program partials
and added up by torch (deterministic, no atomics).

These are pure launchers (no validation beyond asserts of the contract, no registration). They run
on CUDA tensors, or on CPU tensors under the Triton interpreter (TRITON_INTERPRET=1).
"""

import torch
import triton
import triton.language as tl

from ffops.kernels._common import RNE_BY_HAND, acc_dtype, cast, cdiv, next_pow2

_TL = {torch.float32: tl.float32, torch.float64: tl.float64, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}


def _config(pixels: int, channels: int):
    """(ROWS, BLOCK_C, row blocks per sample): tiles of about 4096 elements."""
    block_c = min(max(16, next_pow2(channels)), 256)
    rows = max(1, min(4096 // block_c, next_pow2(pixels)))
    return rows, block_c, cdiv(pixels, rows)


@triton.jit
def _tile(pid_r, pid_c, PIX, C, ROWS: tl.constexpr, BLOCK_C: tl.constexpr, NBLK):
    """Sample i, its pixels s [ROWS] and channels k [BLOCK_C] of this program, and the tile's mask."""
    i = pid_r // NBLK
    s = (pid_r % NBLK) * ROWS + tl.arange(0, ROWS)
    k = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (s[:, None] < PIX) & (k[None, :] < C)
    return i, s, k, mask


@triton.jit
def _pool_relu_kernel(
    z_ptr, p_ptr, idx_ptr, part_ptr, C, H, W, WO, PIX, NBLK,
    POOL: tl.constexpr, STATS: tl.constexpr, ROWS: tl.constexpr, BLOCK_C: tl.constexpr,
    acc_ty: tl.constexpr,
):  # fmt: skip
    pid_r, pid_c = tl.program_id(0), tl.program_id(1)
    i, s, k, mask = _tile(pid_r, pid_c, PIX, C, ROWS, BLOCK_C, NBLK)
    out = (i * PIX + s)[:, None].to(tl.int64) * C + k[None, :]
    if POOL:
        oy, ox = s // WO, s % WO
        base = ((i * H + 2 * oy) * W + 2 * ox)[:, None].to(tl.int64) * C + k[None, :]
        best = tl.load(z_ptr + base, mask=mask, other=0).to(acc_ty)
        q = tl.zeros([ROWS, BLOCK_C], tl.int32)
        for j in tl.static_range(1, 4):
            off = base + ((j // 2) * W + (j % 2)) * C
            v = tl.load(z_ptr + off, mask=mask, other=0).to(acc_ty)
            take = (v > best) | (v != v)  # NaN wins, as torch's max_pool2d
            best = tl.where(take, v, best)
            q = tl.where(take, j, q)
        tl.store(idx_ptr + out, q.to(tl.uint8), mask=mask)
    else:
        best = tl.load(z_ptr + out, mask=mask, other=0).to(acc_ty)
    p = tl.where((best > 0) | (best != best), best, 0.0)
    tl.store(p_ptr + out, p.to(p_ptr.dtype.element_ty), mask=mask)
    if STATS:
        tl.store(part_ptr + pid_r * C + k, tl.sum(tl.where(mask, p, 0.0), axis=0), mask=k < C)


@triton.jit
def _centered_sq_kernel(p_ptr, mean_ptr, part_ptr, C, PIX, NBLK, ROWS: tl.constexpr, BLOCK_C: tl.constexpr,
                        acc_ty: tl.constexpr):  # fmt: skip
    pid_r, pid_c = tl.program_id(0), tl.program_id(1)
    i, s, k, mask = _tile(pid_r, pid_c, PIX, C, ROWS, BLOCK_C, NBLK)
    p = tl.load(p_ptr + (i * PIX + s)[:, None].to(tl.int64) * C + k[None, :], mask=mask, other=0).to(acc_ty)
    d = tl.where(mask, p - tl.load(mean_ptr + k, mask=k < C, other=0)[None, :], 0.0)
    tl.store(part_ptr + pid_r * C + k, tl.sum(d * d, axis=0), mask=k < C)


@triton.jit
def _normalize_kernel(
    p_ptr, y_ptr, a_ptr, b_ptr, part_ptr, C, PIX, NBLK,
    ROWS: tl.constexpr, BLOCK_C: tl.constexpr, acc_ty: tl.constexpr, RNE: tl.constexpr,
):  # fmt: skip
    pid_r, pid_c = tl.program_id(0), tl.program_id(1)
    i, s, k, mask = _tile(pid_r, pid_c, PIX, C, ROWS, BLOCK_C, NBLK)
    off = (i * PIX + s)[:, None].to(tl.int64) * C + k[None, :]
    p = tl.load(p_ptr + off, mask=mask, other=0).to(acc_ty)
    a = tl.load(a_ptr + k, mask=k < C, other=0)[None, :]
    b = tl.load(b_ptr + k, mask=k < C, other=0)[None, :]
    y = a * p + b
    tl.store(y_ptr + off, cast(y, y_ptr.dtype.element_ty, RNE), mask=mask)
    tl.store(part_ptr + pid_r * C + k, tl.sum(tl.where(mask, y * y, 0.0), axis=0), mask=k < C)


@triton.jit
def _dy(p, gy_ptr, off, mask, gk, a, b, HAS_GY: tl.constexpr, acc_ty: tl.constexpr):
    """dy = grad_y + gk * y, y = a p + b (recomputed)."""
    d = gk * (a * p + b)
    if HAS_GY:
        d += tl.load(gy_ptr + off, mask=mask, other=0).to(acc_ty)
    return d


@triton.jit
def _channel_vector(ptr, k, kmask):
    """ptr[k] as a [1, BLOCK_C] row (0 past the channels)."""
    return tl.load(ptr + k, mask=kmask, other=0)[None, :]


@triton.jit
def _dy_tile(p_ptr, gy_ptr, gk_ptr, a_ptr, b_ptr, C, PIX, NBLK, HAS_GY: tl.constexpr, ROWS: tl.constexpr,
             BLOCK_C: tl.constexpr, acc_ty: tl.constexpr):  # fmt: skip
    """This program's tile of the backward: its sample i, pixels s, channels k (and kmask), mask,
    offsets, p, a and dy (masked-out entries of dy are not zeroed)."""
    i, s, k, mask = _tile(tl.program_id(0), tl.program_id(1), PIX, C, ROWS, BLOCK_C, NBLK)
    kmask = k < C
    off = (i * PIX + s)[:, None].to(tl.int64) * C + k[None, :]
    p = tl.load(p_ptr + off, mask=mask, other=0).to(acc_ty)
    a = _channel_vector(a_ptr, k, kmask)
    gk = tl.load(gk_ptr + i * C + k, mask=kmask, other=0)[None, :]
    d = _dy(p, gy_ptr, off, mask, gk, a, _channel_vector(b_ptr, k, kmask), HAS_GY, acc_ty)
    return i, s, k, kmask, mask, off, p, a, d


@triton.jit
def _bwd_sums_kernel(
    p_ptr, gy_ptr, gk_ptr, a_ptr, b_ptr, mean_ptr, part_dy_ptr, part_dyx_ptr, C, PIX, NBLK,
    HAS_GY: tl.constexpr, ROWS: tl.constexpr, BLOCK_C: tl.constexpr, acc_ty: tl.constexpr,
):  # fmt: skip
    _, _, k, kmask, mask, _, p, _, d = _dy_tile(p_ptr, gy_ptr, gk_ptr, a_ptr, b_ptr, C, PIX, NBLK, HAS_GY, ROWS,
                                                BLOCK_C, acc_ty)  # fmt: skip
    d = tl.where(mask, d, 0.0)
    mean = _channel_vector(mean_ptr, k, kmask)
    pid_r = tl.program_id(0)
    tl.store(part_dy_ptr + pid_r * C + k, tl.sum(d, axis=0), mask=kmask)
    tl.store(part_dyx_ptr + pid_r * C + k, tl.sum(d * (p - mean), axis=0), mask=kmask)


@triton.jit
def _bwd_dz_kernel(
    p_ptr, gy_ptr, gk_ptr, idx_ptr, a_ptr, b_ptr, c0_ptr, c1_ptr, dz_ptr, C, H, W, WO, PIX, NBLK,
    POOL: tl.constexpr, HAS_GY: tl.constexpr, ROWS: tl.constexpr, BLOCK_C: tl.constexpr,
    acc_ty: tl.constexpr, RNE: tl.constexpr,
):  # fmt: skip
    i, s, k, kmask, mask, off, p, a, d = _dy_tile(p_ptr, gy_ptr, gk_ptr, a_ptr, b_ptr, C, PIX, NBLK, HAS_GY, ROWS,
                                                  BLOCK_C, acc_ty)  # fmt: skip
    c0, c1 = _channel_vector(c0_ptr, k, kmask), _channel_vector(c1_ptr, k, kmask)
    dp = tl.where(p > 0, a * d + c0 + c1 * p, 0.0)
    if POOL:
        q = tl.load(idx_ptr + off, mask=mask, other=0).to(tl.int32)
        oy, ox = s // WO, s % WO
        base = ((i * H + 2 * oy) * W + 2 * ox)[:, None].to(tl.int64) * C + k[None, :]
        for j in tl.static_range(0, 4):
            v = tl.where(q == j, dp, 0.0)
            tl.store(dz_ptr + base + ((j // 2) * W + (j % 2)) * C, cast(v, dz_ptr.dtype.element_ty, RNE), mask=mask)
    else:
        tl.store(dz_ptr + off, cast(dp, dz_ptr.dtype.element_ty, RNE), mask=mask)


def _nhwc_empty(like: torch.Tensor, n, c, h, w, dtype=None, zero=False):
    make = torch.zeros if zero else torch.empty
    return make((n, h, w, c), dtype=dtype or like.dtype, device=like.device).permute(0, 3, 1, 2)


def _assert_nhwc(t: torch.Tensor) -> None:
    assert t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and t.dtype in _TL


def cwc_block_fwd(z, weight, bias, mean, var, num_classes: int, pool: bool, eps: float):
    _assert_nhwc(z)
    n, c, h, w = z.shape
    assert c % num_classes == 0 and (mean is None) == (var is None)
    ho, wo = (h // 2, w // 2) if pool else (h, w)
    pix, acc = ho * wo, acc_dtype(z.dtype)
    assert weight.dtype == bias.dtype == acc
    p, y = _nhwc_empty(z, n, c, ho, wo), _nhwc_empty(z, n, c, ho, wo)
    idx = _nhwc_empty(z, n, c, ho, wo, torch.uint8) if pool else z.new_empty((0,), dtype=torch.uint8)
    rows, block_c, nblk = _config(pix, c)
    grid = (n * nblk, cdiv(c, block_c))
    acc_ty = _TL[acc]
    batch_stats = mean is None
    part = torch.empty((n * nblk, c), dtype=acc, device=z.device)
    if n * pix > 0:
        _pool_relu_kernel[grid](z, p, idx if pool else p, part, c, h, w, wo, pix, nblk, POOL=pool,
                                STATS=batch_stats, ROWS=rows, BLOCK_C=block_c, acc_ty=acc_ty)  # fmt: skip
    if batch_stats:
        count = n * pix
        mean = part.sum(0, dtype=torch.float64).div(count).to(acc) if count else weight.new_full((c,), float("nan"))
        if count:
            _centered_sq_kernel[grid](p, mean, part, c, pix, nblk, ROWS=rows, BLOCK_C=block_c, acc_ty=acc_ty)
            var = part.sum(0, dtype=torch.float64).div(count).to(acc)
        else:
            var = weight.new_full((c,), float("nan"))
    else:
        mean, var = mean.clone(), var.clone()
    a = weight / torch.sqrt(var + eps)
    b = bias - mean * a
    if n * pix > 0:
        _normalize_kernel[grid](p, y, a, b, part, c, pix, nblk, ROWS=rows, BLOCK_C=block_c, acc_ty=acc_ty,
                                RNE=RNE_BY_HAND)  # fmt: skip
        g = part.view(n, nblk, num_classes, c // num_classes).sum((1, 3)) / ((c // num_classes) * pix)
    else:
        g = torch.full((n, num_classes), float("nan"), dtype=acc, device=z.device)
    return y, g, p, idx, mean, var


def cwc_block_bwd(grad_y, grad_g, p, idx, weight, bias, mean, var, num_classes: int, pool: bool, batch_stats: bool,
                  eps: float, height: int, width: int):  # fmt: skip
    _assert_nhwc(p)
    n, c, ho, wo = p.shape
    pix, acc = ho * wo, acc_dtype(p.dtype)
    cg = c // num_classes
    rows, block_c, nblk = _config(pix, c)
    grid = (n * nblk, cdiv(c, block_c))
    acc_ty = _TL[acc]
    rstd = torch.rsqrt(var + eps)
    a = weight * rstd
    b = bias - mean * a
    if grad_g is None:
        gk = torch.zeros((n, c), dtype=acc, device=p.device)
    else:
        gk = (grad_g * (2.0 / (cg * pix))).repeat_interleave(cg, dim=1).contiguous()
    has_gy = grad_y is not None
    gy = grad_y if has_gy else p
    part_dy = torch.empty((n * nblk, c), dtype=acc, device=p.device)
    part_dyx = torch.empty_like(part_dy)
    if n * pix > 0:
        _bwd_sums_kernel[grid](p, gy, gk, a, b, mean, part_dy, part_dyx, c, pix, nblk, HAS_GY=has_gy, ROWS=rows,
                               BLOCK_C=block_c, acc_ty=acc_ty)  # fmt: skip
    dbias = part_dy.sum(0, dtype=torch.float64).to(acc)
    dweight = (part_dyx.sum(0, dtype=torch.float64) * rstd).to(acc)
    if batch_stats:
        m = n * pix
        u = a * dweight * rstd / m
        c1, c0 = -u, -a * dbias / m + u * mean
    else:
        c1 = c0 = torch.zeros_like(a)
    dz = _nhwc_empty(p, n, c, height, width, zero=pool and (height % 2 or width % 2))
    if n * pix > 0:
        _bwd_dz_kernel[grid](p, gy, gk, idx if pool else p, a, b, c0.contiguous(), c1.contiguous(), dz, c, height,
                             width, wo, pix, nblk, POOL=pool, HAS_GY=has_gy, ROWS=rows, BLOCK_C=block_c,
                             acc_ty=acc_ty, RNE=RNE_BY_HAND)  # fmt: skip
    return dz, dweight, dbias
