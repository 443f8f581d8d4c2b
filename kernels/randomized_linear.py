"""Triton kernel of the ``randomized_linear`` op: the random sketch ``S^T a`` of its backward.

The math is that of csrc/ops.cpp and the specification ffops.reference.randomized_linear: S [rows, k]
has entries of variance 1 / k given by a counter-based hash of (seed, row, column) (the same bits
on every backend). One program computes a [BLOCK_K, BLOCK_N] tile of the output: it walks the rows
in steps of BLOCK_R, generates that step's [BLOCK_K, BLOCK_R] tile of S^T in registers (S is never
in memory) and multiplies it with the [BLOCK_R, BLOCK_N] tile of a (IEEE float32, or float64).

A pure launcher (asserts of the contract only); runs on CUDA tensors, or on CPU tensors under the
Triton interpreter (TRITON_INTERPRET=1).
"""

import torch
import triton
import triton.language as tl

from ffops.kernels._common import FLOAT_DTYPES, acc_dtype, cdiv

MASK32 = 0xFFFFFFFF


@triton.jit
def _mix32(x):
    """Wellons' lowbias32 on uint32."""
    x ^= x >> 16
    x *= 0x7FEB352D
    x ^= x >> 15
    x *= 0x846CA68B
    return x ^ (x >> 16)


@triton.jit
def _rmm_sketch_kernel(
    a_ptr,
    out_ptr,
    ROWS,
    N,
    K,
    seed_lo,
    seed_hi,
    scale,
    KIND: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    """out[c, j] = sum_r S[r, c] a[r, j] for c < K, j < N.

    a_ptr:   [ROWS, N] contiguous; float32/16, bfloat16 or float64.
    out_ptr: [K, N] contiguous, compute type (float32; float64 for float64 a).
    seed_lo, seed_hi: the low / high 32 bits of the seed; scale = 1 / sqrt(K).
    """
    acc_ty: tl.constexpr = out_ptr.dtype.element_ty
    c = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    j = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    ct = c.to(tl.uint32) * 0x85EBCA77 + seed_hi.to(tl.uint32)
    acc = tl.zeros([BLOCK_K, BLOCK_N], acc_ty)
    for r0 in range(0, ROWS, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        rh = _mix32(r.to(tl.uint32) * 0x9E3779B1 + seed_lo.to(tl.uint32))
        h = _mix32(rh[None, :] ^ ct[:, None])  # [BLOCK_K, BLOCK_R]
        if KIND == 1:  # rademacher
            s = tl.where((h >> 31) != 0, -1.0, 1.0).to(acc_ty)
        else:  # gaussian (Box-Muller)
            h2 = _mix32(h ^ 0x68E31DA4)
            u1 = ((h >> 8).to(acc_ty) + 0.5) * 5.9604644775390625e-08
            u2 = (h2 >> 8).to(acc_ty) * 5.9604644775390625e-08
            s = tl.sqrt(-2.0 * tl.log(u1)) * tl.cos(6.283185307179586 * u2)
        s = tl.where((c[:, None] < K) & (r[None, :] < ROWS), s * scale, 0.0).to(acc_ty)
        a = tl.load(
            a_ptr + r[:, None].to(tl.int64) * N + j[None, :], mask=(r[:, None] < ROWS) & (j[None, :] < N), other=0
        )
        a = a.to(acc_ty)
        if acc_ty == tl.float64:
            acc += tl.sum(s[:, :, None] * a[None, :, :], axis=1)
        else:
            acc += tl.dot(s, a, input_precision="ieee")
    tl.store(out_ptr + c[:, None].to(tl.int64) * N + j[None, :], acc, mask=(c[:, None] < K) & (j[None, :] < N))


def rmm_sketch(a, seed, k, kind):
    """S^T a [k, n] in a's dtype (accumulated in the compute type)."""
    assert a.dim() == 2 and a.is_contiguous() and a.dtype in FLOAT_DTYPES, (a.dtype, a.shape)
    assert seed.device.type == "cpu" and seed.dtype == torch.int64 and seed.numel() == 1 and k >= 1 and kind in (0, 1)
    s = int(seed.item())
    rows, n = a.shape
    out = torch.empty((k, n), dtype=acc_dtype(a.dtype), device=a.device)
    if out.numel() == 0:
        return out.to(a.dtype)
    if rows == 0:
        return out.zero_().to(a.dtype)
    grid = (cdiv(k, 32), cdiv(n, 64))
    _rmm_sketch_kernel[grid](
        a,
        out,
        rows,
        n,
        k,
        s & MASK32,
        (s >> 32) & MASK32,
        1.0 / k**0.5,
        KIND=kind,
        BLOCK_K=32,
        BLOCK_N=64,
        BLOCK_R=32,
        num_warps=4,
    )
    return out.to(a.dtype)
