"""Triton kernels of the memory-saving family: packed-code activations (ReGELU2, ReSiLU2, Few-Bit)
and the MS norms (MS-LayerNorm, MS-RMSNorm).

The math and schemas are those of csrc/ops.cpp and the C++ CPU kernels (csrc/cpu/activations.cpp,
csrc/cpu/norms.cpp); the packed-code layout is ffops.reference.memory's. Compute type: float32
(float64 for float64 data).

Packed activations: elementwise over the contiguous flat tensor, BLOCK elements per program
(BLOCK a multiple of 8, so every program owns whole bytes: BLOCK * bits / 8 of them). The forward
counts the borders below each element, folds each group of 8 codes into one word and stores its
``bits`` bytes; the backward reads the byte(s) holding each element's code and gathers its level
from a 16-entry table. Borders and levels are tiny device tensors cached per (values, dtype, device).

MS norms: one program handles ROWS rows (ROWS > 1 only for short rows), walking K in BLOCK chunks;
a row that fits one chunk (ONE_PASS) is loaded once. Layout and helpers follow ffops.kernels.ff.

These are pure launchers (asserts of the contract only). They run on CUDA tensors, or on CPU
tensors under the Triton interpreter (TRITON_INTERPRET=1).
"""

import os

import torch
import triton
import triton.language as tl

from ffops.kernels.ff import _cols, _config, _div, _rows, _scalar, _sqrt, _stat_dtype

ACT_BLOCK = 1024  # elements per program of the packed activations (a multiple of 8)
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_TABLES: dict = {}
# The interpreter rounds float32 -> bfloat16 toward zero; GPUs round to nearest even. Under the
# interpreter the kernels round by hand, so CI checks the results a GPU gives.
_RNE_BY_HAND = os.environ.get("TRITON_INTERPRET", "0") == "1"


# ---------------------------------------------------------------------------------------------
# Device math (compute type; NaN propagates)
# ---------------------------------------------------------------------------------------------


@triton.jit
def _cast(x, dtype: tl.constexpr, RNE: tl.constexpr):
    """x (float32 / float64) in the storage dtype, rounded to nearest even (by hand for bfloat16
    when RNE: the interpreter's own cast truncates)."""
    if RNE and dtype == tl.bfloat16:
        u = x.to(tl.float32).to(tl.uint32, bitcast=True)
        r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
        r = tl.where(x != x, (u >> 16) | 0x40, r)
        return r.to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return x.to(dtype)


@triton.jit
def _expm1(x):
    """e^x - 1, accurate relative to the result near 0 (Taylor for |x| < 0.35: to x^9 in float32,
    to x^17 in float64)."""
    if x.dtype.is_fp64():
        p = x * (1.0 / 6402373705728000.0) + 1.0 / 355687428096000.0
        p = p * x + 1.0 / 20922789888000.0
        p = p * x + 1.0 / 1307674368000.0
        p = p * x + 1.0 / 87178291200.0
        p = p * x + 1.0 / 6227020800.0
        p = p * x + 1.0 / 479001600.0
        p = p * x + 1.0 / 39916800.0
        p = p * x + 1.0 / 3628800.0
        p = p * x + 1.0 / 362880.0
    else:
        p = x * 0.0 + 1.0 / 362880.0
    p = p * x + 1.0 / 40320.0
    p = p * x + 1.0 / 5040.0
    p = p * x + 1.0 / 720.0
    p = p * x + 1.0 / 120.0
    p = p * x + 1.0 / 24.0
    p = p * x + 1.0 / 6.0
    p = p * x + 0.5
    p = p * (x * x) + x
    return tl.where(tl.abs(x) < 0.35, p, tl.exp(x) - 1.0)


@triton.jit
def _log1p(x):
    """log(1 + x), Kahan's trick (libdevice is unavailable in the interpreter)."""
    u = 1.0 + x
    one = u == 1.0
    return tl.where(one, x, tl.log(u) * (x / tl.where(one, 1.0, u - 1.0)))


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    e = _expm1(2.0 * tl.abs(x))
    t = e / (e + 2.0)
    return tl.where(x < 0, -t, t)


@triton.jit
def _softplus(x):
    return tl.where(x > 0, x, 0.0) + _log1p(tl.exp(-tl.abs(x)))


@triton.jit
def _activation(x, FN: tl.constexpr):
    """The activation with id FN (order of ffops.reference.memory.ACTIVATIONS) at x."""
    if FN == 0:  # gelu
        y = 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))
    elif FN == 1:  # gelu_tanh = x * sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3))
        y = x * _sigmoid(1.5957691216057308 * (x + 0.044715 * x * x * x))
    elif FN == 2:  # silu
        y = x * _sigmoid(x)
    elif FN == 3:  # tanh
        y = _tanh(x)
    elif FN == 4:  # sigmoid
        y = _sigmoid(x)
    elif FN == 5:  # softplus
        y = _softplus(x)
    elif FN == 6:  # elu (alpha 1)
        y = tl.where(x > 0, x, _expm1(x))
    else:  # mish = x n (n + 2) / (n (n + 2) + 2), n = e^x; x for x > 20
        n = tl.exp(tl.minimum(x, 20.0))
        m = n * (n + 2.0)
        y = tl.where(x > 20.0, x, x * (m / (m + 2.0)))
    return y


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _packed_act_fwd_kernel(x_ptr, y_ptr, codes_ptr, borders_ptr, N, NBYTES, FN: tl.constexpr,
                           BITS: tl.constexpr, NB: tl.constexpr, BLOCK: tl.constexpr,
                           RNE: tl.constexpr):
    """y = f(x); codes = sum_j [x > borders[j]] packed BITS bits per element.

    x_ptr:       [N] contiguous; float32/16, bfloat16 or float64.
    y_ptr:       [N] contiguous, dtype of x.
    codes_ptr:   [NBYTES] uint8 contiguous, NBYTES = ceil(N * BITS / 8).
    borders_ptr: [NB] contiguous, compute type (float32; float64 for float64 x), ascending.
    BLOCK is a multiple of 8: this program writes bytes [pid * BLOCK * BITS / 8, ...).
    """
    acc_ty: tl.constexpr = borders_ptr.dtype.element_ty
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    inb = offs < N
    x = tl.load(x_ptr + offs, mask=inb, other=0).to(acc_ty)
    tl.store(y_ptr + offs, _cast(_activation(x, FN), y_ptr.dtype.element_ty, RNE), mask=inb)
    code = tl.zeros([BLOCK], tl.int64)
    for j in tl.static_range(NB):
        code += (x > tl.load(borders_ptr + j)).to(tl.int64)
    code = tl.where(inb, code, 0)
    groups: tl.constexpr = BLOCK // 8
    shifts = (tl.arange(0, 8) * BITS).to(tl.int64)
    words = tl.sum(tl.reshape(code, [groups, 8]) << shifts[None, :], axis=1)  # disjoint fields: sum == or
    nb = tl.arange(0, 4).to(tl.int64)
    vals = (words[:, None] >> (8 * nb[None, :])) & 255
    byte_idx = (pid * groups + tl.arange(0, groups).to(tl.int64))[:, None] * BITS + nb[None, :]
    tl.store(codes_ptr + byte_idx, vals.to(tl.uint8), mask=(nb[None, :] < BITS) & (byte_idx < NBYTES))


@triton.jit
def _packed_act_bwd_kernel(g_ptr, codes_ptr, levels_ptr, dx_ptr, N, NBYTES, BITS: tl.constexpr,
                           BLOCK: tl.constexpr, RNE: tl.constexpr):
    """dx = g * levels[code], the code of element i at bits BITS*i .. of the packed stream.

    g_ptr:      [N] contiguous; float32/16, bfloat16 or float64.
    codes_ptr:  [NBYTES] uint8 contiguous.
    levels_ptr: [2^BITS] contiguous, compute type.
    dx_ptr:     [N] contiguous, dtype of g.
    """
    acc_ty: tl.constexpr = levels_ptr.dtype.element_ty
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inb = offs < N
    bit = offs * BITS
    byte = bit >> 3
    v = tl.load(codes_ptr + byte, mask=inb, other=0).to(tl.int32)
    if BITS == 3:  # a 3-bit code may straddle two bytes
        v |= tl.load(codes_ptr + byte + 1, mask=inb & (byte + 1 < NBYTES), other=0).to(tl.int32) << 8
    code = (v >> (bit & 7).to(tl.int32)) & ((1 << BITS) - 1)
    lv = tl.load(levels_ptr + code, mask=inb, other=0)
    g = tl.load(g_ptr + offs, mask=inb, other=0).to(acc_ty)
    tl.store(dx_ptr + offs, _cast(g * lv, dx_ptr.dtype.element_ty, RNE), mask=inb)


@triton.jit
def _ms_norm_fwd_kernel(x_ptr, y_ptr, rstd_ptr, R, K, ld_x, eps: tl.float64, CENTER: tl.constexpr,
                        ROWS: tl.constexpr, BLOCK: tl.constexpr, ONE_PASS: tl.constexpr, RNE: tl.constexpr):
    """mean = CENTER ? sum_k x / K : 0;  rstd = 1 / sqrt(sum_k (x - mean)^2 / K + eps);
    y = (x - mean) * rstd.

    x_ptr:    [R, K], row stride ld_x, unit column stride; float32/16, bfloat16 or float64.
    y_ptr:    [R, K] contiguous, any float dtype (the requested output dtype).
    rstd_ptr: [R] contiguous, compute type (float32; float64 for float64 x).
    ONE_PASS requires K <= BLOCK.
    """
    acc_ty: tl.constexpr = rstd_ptr.dtype.element_ty
    out_ty: tl.constexpr = y_ptr.dtype.element_ty
    rows, rmask = _rows(R, ROWS)
    x_base = x_ptr + rows[:, None] * ld_x
    y_base = y_ptr + rows[:, None] * K
    k_acc = tl.maximum(K, 1).to(acc_ty)
    inv_k = _div(tl.full([], 1.0, acc_ty), k_acc)
    # The mean by a true division, not a product with inv_k: the compiler may contract x - sum * inv_k
    # into one FMA, which leaves x - mean != 0 on a constant row (and y = that error / sqrt(eps)).
    if ONE_PASS:
        cols, mask = _cols(0, K, rmask, BLOCK)
        x = tl.load(x_base + cols, mask=mask, other=0).to(acc_ty)
        if CENTER:
            mean = _div(tl.sum(x, axis=1), k_acc)
        else:
            mean = tl.zeros([ROWS], acc_ty)
        d = tl.where(mask, x - mean[:, None], 0)
        rstd = _div(1.0, _sqrt(tl.sum(d * d, axis=1) * inv_k + _scalar(eps, acc_ty)))
        tl.store(y_base + cols, _cast(d * rstd[:, None], out_ty, RNE), mask=mask)
    else:
        mean = tl.zeros([ROWS], acc_ty)
        if CENTER:
            acc = tl.zeros([ROWS, BLOCK], acc_ty)
            for k0 in range(0, K, BLOCK):
                cols, mask = _cols(k0, K, rmask, BLOCK)
                acc += tl.load(x_base + cols, mask=mask, other=0).to(acc_ty)
            mean = _div(tl.sum(acc, axis=1), k_acc)
        acc = tl.zeros([ROWS, BLOCK], acc_ty)
        for k0 in range(0, K, BLOCK):
            cols, mask = _cols(k0, K, rmask, BLOCK)
            d = tl.where(mask, tl.load(x_base + cols, mask=mask, other=0).to(acc_ty) - mean[:, None], 0)
            acc += d * d
        rstd = _div(1.0, _sqrt(tl.sum(acc, axis=1) * inv_k + _scalar(eps, acc_ty)))
        for k0 in range(0, K, BLOCK):
            cols, mask = _cols(k0, K, rmask, BLOCK)
            x = tl.load(x_base + cols, mask=mask, other=0).to(acc_ty)
            tl.store(y_base + cols, _cast((x - mean[:, None]) * rstd[:, None], out_ty, RNE), mask=mask)
    tl.store(rstd_ptr + rows, rstd, mask=rmask)


@triton.jit
def _ms_norm_bwd_kernel(g_ptr, y_ptr, rstd_ptr, dx_ptr, R, K, ld_g, CENTER: tl.constexpr, ROWS: tl.constexpr,
                        BLOCK: tl.constexpr, ONE_PASS: tl.constexpr, RNE: tl.constexpr):
    """dx = rstd * (g - a - y * b), a = CENTER ? mean(g) : 0, b = mean(g * y) per row.

    g_ptr:    [R, K], row stride ld_g, unit column stride; dtype of y.
    y_ptr:    [R, K] contiguous; float32/16, bfloat16 or float64.
    rstd_ptr: [R] contiguous, compute type.
    dx_ptr:   [R, K] contiguous, any float dtype (the forward input's dtype).
    ONE_PASS requires K <= BLOCK.
    """
    acc_ty: tl.constexpr = rstd_ptr.dtype.element_ty
    out_ty: tl.constexpr = dx_ptr.dtype.element_ty
    rows, rmask = _rows(R, ROWS)
    g_base = g_ptr + rows[:, None] * ld_g
    y_base = y_ptr + rows[:, None] * K
    dx_base = dx_ptr + rows[:, None] * K
    inv_k = _div(tl.full([], 1.0, acc_ty), tl.maximum(K, 1).to(acc_ty))
    if ONE_PASS:
        cols, mask = _cols(0, K, rmask, BLOCK)
        g = tl.load(g_base + cols, mask=mask, other=0).to(acc_ty)
        y = tl.load(y_base + cols, mask=mask, other=0).to(acc_ty)
        sg = tl.sum(g, axis=1)
        sgy = tl.sum(g * y, axis=1)
    else:
        acc_g = tl.zeros([ROWS, BLOCK], acc_ty)
        acc_gy = tl.zeros([ROWS, BLOCK], acc_ty)
        for k0 in range(0, K, BLOCK):
            cols, mask = _cols(k0, K, rmask, BLOCK)
            g = tl.load(g_base + cols, mask=mask, other=0).to(acc_ty)
            acc_g += g
            acc_gy += g * tl.load(y_base + cols, mask=mask, other=0).to(acc_ty)
        sg = tl.sum(acc_g, axis=1)
        sgy = tl.sum(acc_gy, axis=1)
    if CENTER:
        a = (sg * inv_k)[:, None]
    else:
        a = tl.zeros([ROWS, 1], acc_ty)
    b = (sgy * inv_k)[:, None]
    r = tl.load(rstd_ptr + rows, mask=rmask, other=0)[:, None]
    if ONE_PASS:
        tl.store(dx_base + cols, _cast(r * (g - a - y * b), out_ty, RNE), mask=mask)
    else:
        for k0 in range(0, K, BLOCK):
            cols, mask = _cols(k0, K, rmask, BLOCK)
            g = tl.load(g_base + cols, mask=mask, other=0).to(acc_ty)
            y = tl.load(y_base + cols, mask=mask, other=0).to(acc_ty)
            tl.store(dx_base + cols, _cast(r * (g - a - y * b), out_ty, RNE), mask=mask)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------


def _table(values, dtype, device) -> torch.Tensor:
    """A small constant vector on the device, made once per (values, dtype, device)."""
    key = (tuple(float(v) for v in values), dtype, str(device))
    t = _TABLES.get(key)
    if t is None:
        t = _TABLES[key] = torch.tensor(key[0], dtype=dtype, device=device)
    return t


def _acc(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _nbytes(n, bits):
    return (n * bits + 7) // 8


def packed_act_fwd(x, fn, borders, levels, bits):
    """(y, codes): y = f(x) (contiguous, x's dtype), codes uint8[ceil(numel * bits / 8)]."""
    assert x.is_contiguous() and x.dtype in _FLOAT_DTYPES, (x.dtype, x.stride())
    assert 1 <= bits <= 4 and len(borders) == 2**bits - 1 and len(levels) == 2**bits
    n = x.numel()
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    codes = torch.empty(_nbytes(n, bits), dtype=torch.uint8, device=x.device)
    if n == 0:
        return y, codes
    b = _table(borders, _acc(x.dtype), x.device)
    grid = (triton.cdiv(n, ACT_BLOCK),)
    _packed_act_fwd_kernel[grid](x, y, codes, b, n, codes.numel(), FN=fn, BITS=bits, NB=len(borders),
                                 BLOCK=ACT_BLOCK, RNE=_RNE_BY_HAND, num_warps=4)
    return y, codes


def packed_act_bwd(grad_y, codes, levels, bits):
    """dx = grad_y * levels[code] (contiguous, grad_y's dtype)."""
    assert grad_y.is_contiguous() and grad_y.dtype in _FLOAT_DTYPES
    n = grad_y.numel()
    assert codes.dtype == torch.uint8 and codes.is_contiguous() and codes.numel() == _nbytes(n, bits)
    assert len(levels) == 2**bits and codes.device == grad_y.device
    dx = torch.empty_like(grad_y)
    if n == 0:
        return dx
    lv = _table(levels, _acc(grad_y.dtype), grad_y.device)
    _packed_act_bwd_kernel[(triton.cdiv(n, ACT_BLOCK),)](grad_y, codes, lv, dx, n, codes.numel(), BITS=bits,
                                                         BLOCK=ACT_BLOCK, RNE=_RNE_BY_HAND, num_warps=4)
    return dx


def _assert_rows(t):
    assert t.dim() == 2 and t.dtype in _FLOAT_DTYPES, (t.shape, t.dtype)
    assert t.size(1) <= 1 or t.stride(1) == 1, t.stride()


def ms_norm_fwd(x, eps, center, out_dtype=None):
    """(y, rstd) of the MS norm over the rows of x [R, K]; y in out_dtype (default x's dtype)."""
    _assert_rows(x)
    out_dtype = out_dtype or x.dtype
    assert (out_dtype == torch.float64) == (x.dtype == torch.float64), (x.dtype, out_dtype)
    R, K = x.shape
    y = torch.empty((R, K), dtype=out_dtype, device=x.device)
    rstd = torch.empty(R, dtype=_stat_dtype(x.dtype), device=x.device)
    if R == 0:
        return y, rstd
    grid, rows, block, one_pass, num_warps = _config(R, K, x.dtype)
    _ms_norm_fwd_kernel[grid](x, y, rstd, R, K, x.stride(0), float(eps), CENTER=center, ROWS=rows, BLOCK=block,
                              ONE_PASS=one_pass, RNE=_RNE_BY_HAND, num_warps=num_warps)
    return y, rstd


def ms_norm_bwd(grad_y, y, rstd, center, dx_dtype):
    """dx = rstd * (grad_y - [center] mean(grad_y) - y * mean(grad_y * y)) in dx_dtype."""
    _assert_rows(y)
    _assert_rows(grad_y)
    assert y.is_contiguous() and grad_y.shape == y.shape and grad_y.dtype == y.dtype
    R, K = y.shape
    assert rstd.shape == (R,) and rstd.dtype == _stat_dtype(y.dtype) and rstd.is_contiguous()
    dx = torch.empty((R, K), dtype=dx_dtype, device=y.device)
    if R == 0 or K == 0:
        return dx
    grid, rows, block, one_pass, num_warps = _config(R, K, y.dtype)
    _ms_norm_bwd_kernel[grid](grad_y, y, rstd, dx, R, K, grad_y.stride(0), CENTER=center, ROWS=rows, BLOCK=block,
                              ONE_PASS=one_pass, RNE=_RNE_BY_HAND, num_warps=num_warps)
    return dx
