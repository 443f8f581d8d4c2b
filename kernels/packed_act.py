"""Triton kernels of the ``packed_act`` ops: the activations with a packed-code backward (ReGELU2,
ReSiLU2, Few-Bit).

The math and schemas are those of csrc/ops.cpp and the C++ CPU kernels (csrc/cpu/packed_act.cpp); the
packed-code layout is ffops.reference.packed_act's. Compute type: float32 (float64 for float64 data).

Elementwise over the contiguous flat tensor, BLOCK elements per program (BLOCK a multiple of 8, so
every program owns whole bytes: BLOCK * bits / 8 of them). The forward counts the borders below each
element, folds each group of 8 codes into one word and stores its ``bits`` bytes; the backward reads
the byte(s) holding each element's code and gathers its level from a 16-entry table. Borders and
levels are tiny device tensors cached per (values, dtype, device).

These are pure launchers (asserts of the contract only). They run on CUDA tensors, or on CPU
tensors under the Triton interpreter (TRITON_INTERPRET=1).
"""

import torch
import triton
import triton.language as tl

from ffops.kernels._common import FLOAT_DTYPES, RNE_BY_HAND, acc_dtype, cast, cdiv, log1p, softplus
from ffops.reference.packed_act import packed_nbytes  # the packed-code layout is specified there

ACT_BLOCK = 1024  # elements per program of the packed activations (a multiple of 8)
_TABLES: dict = {}


# ---------------------------------------------------------------------------------------------
# Device math (compute type; NaN propagates)
# ---------------------------------------------------------------------------------------------


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
    p = tl.where(x == 0, x, p)  # keeps the sign of a zero x (p is +0 at -0)
    return tl.where(tl.abs(x) < 0.35, p, tl.exp(x) - 1.0)


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    """sign(x) e / (e + 2), e = e^(2|x|) - 1; 2|x| is capped at 40, where e / (e + 2) rounds to 1 in
    float32 and float64 (so e never overflows into inf / inf)."""
    e = _expm1(tl.minimum(2.0 * tl.abs(x), 40.0, propagate_nan=tl.PropagateNan.ALL))
    t = e / (e + 2.0)
    return tl.where(x < 0, -t, tl.where(x == 0, x, t))  # tanh(-0) = -0


@triton.jit
def _activation(x, FN: tl.constexpr):
    """The activation with id FN (order of ffops.reference.packed_act.ACTIVATIONS) at x."""
    if FN == 0:  # gelu
        y = 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))
    elif FN == 1:  # gelu_tanh = x * sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3)), divided as silu
        y = x / (1.0 + tl.exp(-1.5957691216057308 * (x + 0.044715 * x * x * x)))
    elif FN == 2:  # silu = x / (1 + e^-x), as torch: full precision where sigmoid(x) would be subnormal
        y = x / (1.0 + tl.exp(-x))
    elif FN == 3:  # tanh
        y = _tanh(x)
    elif FN == 4:  # sigmoid
        y = _sigmoid(x)
    elif FN == 5:  # softplus
        y = softplus(x)
    elif FN == 6:  # elu (alpha 1)
        y = tl.where(x > 0, x, _expm1(x))
    elif FN == 7:  # mish = x n (n + 2) / (n (n + 2) + 2), n = e^x; x for x > 20
        n = tl.exp(tl.minimum(x, 20.0))
        m = n * (n + 2.0)
        y = tl.where(x > 20.0, x, x * (m / (m + 2.0)))
    elif FN == 8:  # hardswish = x min(max(x + 3, 0), 6) / 6 (t / 6 first: x t never overflows)
        t = x + 3.0
        t = tl.where(t < 0, 0.0, t)
        t = tl.where(t > 6.0, 6.0, t)
        y = x * (t / 6.0)
    elif FN == 9:  # leaky_relu, negative slope 0.01
        y = tl.where(x > 0, x, x * 0.01)
    elif FN == 10:  # selu
        y = tl.where(x > 0, 1.0507009873554805 * x, 1.7580993408473766 * _expm1(x))
    elif FN == 11:  # celu, alpha 1 (= elu)
        y = tl.where(x > 0, x, _expm1(x))
    elif FN == 12:  # logsigmoid = min(x, 0) - log1p(e^-|x|) (+0 where e^-|x| underflows, as torch)
        y = tl.where(x < 0, x, 0.0) - log1p(tl.exp(-tl.abs(x)))
    elif FN == 13:  # softsign
        y = x / (1.0 + tl.abs(x))
    else:  # relu6 (keeps -0 and NaN)
        t = tl.where(x < 0, 0.0, x)
        y = tl.where(t > 6.0, 6.0, t)
    return y


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _packed_act_fwd_kernel(
    x_ptr,
    y_ptr,
    codes_ptr,
    borders_ptr,
    N,
    NBYTES,
    FN: tl.constexpr,
    BITS: tl.constexpr,
    NB: tl.constexpr,
    BLOCK: tl.constexpr,
    RNE: tl.constexpr,
):
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
    tl.store(y_ptr + offs, cast(_activation(x, FN), y_ptr.dtype.element_ty, RNE), mask=inb)
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
def _packed_act_bwd_kernel(
    g_ptr,
    codes_ptr,
    levels_ptr,
    dx_ptr,
    N,
    NBYTES,
    BITS: tl.constexpr,
    BLOCK: tl.constexpr,
    RNE: tl.constexpr,
):
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
    tl.store(dx_ptr + offs, cast(g * lv, dx_ptr.dtype.element_ty, RNE), mask=inb)


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


def packed_act_fwd(x, fn, borders, levels, bits):
    """(y, codes): y = f(x) (contiguous, x's dtype), codes uint8[ceil(numel * bits / 8)]."""
    assert x.is_contiguous() and x.dtype in FLOAT_DTYPES, (x.dtype, x.stride())
    assert 1 <= bits <= 4 and len(borders) == 2**bits - 1 and len(levels) == 2**bits
    n = x.numel()
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    codes = torch.empty(packed_nbytes(n, bits), dtype=torch.uint8, device=x.device)
    if n == 0:
        return y, codes
    b = _table(borders, acc_dtype(x.dtype), x.device)
    grid = (cdiv(n, ACT_BLOCK),)
    _packed_act_fwd_kernel[grid](
        x,
        y,
        codes,
        b,
        n,
        codes.numel(),
        FN=fn,
        BITS=bits,
        NB=len(borders),
        BLOCK=ACT_BLOCK,
        RNE=RNE_BY_HAND,
        num_warps=4,
    )
    return y, codes


def packed_act_bwd(grad_y, codes, levels, bits):
    """dx = grad_y * levels[code] (contiguous, grad_y's dtype)."""
    assert grad_y.is_contiguous() and grad_y.dtype in FLOAT_DTYPES
    n = grad_y.numel()
    assert codes.dtype == torch.uint8 and codes.is_contiguous() and codes.numel() == packed_nbytes(n, bits)
    assert len(levels) == 2**bits and codes.device == grad_y.device
    dx = torch.empty_like(grad_y)
    if n == 0:
        return dx
    lv = _table(levels, acc_dtype(grad_y.dtype), grad_y.device)
    _packed_act_bwd_kernel[(cdiv(n, ACT_BLOCK),)](
        grad_y, codes, lv, dx, n, codes.numel(), BITS=bits, BLOCK=ACT_BLOCK, RNE=RNE_BY_HAND, num_warps=4
    )
    return dx
