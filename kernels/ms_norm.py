"""Triton kernels of the ``ms_norm`` ops: the memory-sharing norms (MS-LayerNorm, MS-RMSNorm).

The math and schemas are those of csrc/ops.cpp and the C++ CPU kernels (csrc/cpu/ms_norm.cpp).
Compute type: float32 (float64 for float64 data).

One program handles ROWS rows (ROWS > 1 only for short rows), walking K in BLOCK chunks; a row that
fits one chunk (ONE_PASS) is loaded once (ffops.kernels._common.row_config).

These are pure launchers (asserts of the contract only). They run on CUDA tensors, or on CPU
tensors under the Triton interpreter (TRITON_INTERPRET=1).
"""

import torch
import triton
import triton.language as tl

from ffops.kernels._common import (
    RNE_BY_HAND,
    acc_dtype,
    as_rows,
    assert_rows,
    cast,
    col_ids,
    div_rn,
    row_config,
    row_ids,
    scalar,
    sqrt_rn,
)

# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _ms_norm_fwd_kernel(
    x_ptr,
    y_ptr,
    rstd_ptr,
    R,
    K,
    ld_x,
    eps: tl.float64,
    CENTER: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK: tl.constexpr,
    ONE_PASS: tl.constexpr,
    RNE: tl.constexpr,
):
    """mean = CENTER ? sum_k x / K : 0;  rstd = 1 / sqrt(sum_k (x - mean)^2 / K + eps);
    y = (x - mean) * rstd.

    x_ptr:    [R, K], row stride ld_x, unit column stride; float32/16, bfloat16 or float64.
    y_ptr:    [R, K] contiguous, any float dtype (the requested output dtype).
    rstd_ptr: [R] contiguous, compute type (float32; float64 for float64 x).
    ONE_PASS requires K <= BLOCK.
    """
    acc_ty: tl.constexpr = rstd_ptr.dtype.element_ty
    out_ty: tl.constexpr = y_ptr.dtype.element_ty
    rows, rmask = row_ids(R, ROWS)
    x_base = x_ptr + rows[:, None] * ld_x
    y_base = y_ptr + rows[:, None] * K
    k_acc = tl.maximum(K, 1).to(acc_ty)
    inv_k = div_rn(tl.full([], 1.0, acc_ty), k_acc)
    # The mean by a true division, not a product with inv_k: the compiler may contract x - sum * inv_k
    # into one FMA, which leaves x - mean != 0 on a constant row (and y = that error / sqrt(eps)).
    if ONE_PASS:
        cols, mask = col_ids(0, K, rmask, BLOCK)
        x = tl.load(x_base + cols, mask=mask, other=0).to(acc_ty)
        if CENTER:
            mean = div_rn(tl.sum(x, axis=1), k_acc)
        else:
            mean = tl.zeros([ROWS], acc_ty)
        d = tl.where(mask, x - mean[:, None], 0)
        rstd = div_rn(1.0, sqrt_rn(tl.sum(d * d, axis=1) * inv_k + scalar(eps, acc_ty)))
        tl.store(y_base + cols, cast(d * rstd[:, None], out_ty, RNE), mask=mask)
    else:
        mean = tl.zeros([ROWS], acc_ty)
        if CENTER:
            acc = tl.zeros([ROWS, BLOCK], acc_ty)
            for k0 in range(0, K, BLOCK):
                cols, mask = col_ids(k0, K, rmask, BLOCK)
                acc += tl.load(x_base + cols, mask=mask, other=0).to(acc_ty)
            mean = div_rn(tl.sum(acc, axis=1), k_acc)
        acc = tl.zeros([ROWS, BLOCK], acc_ty)
        for k0 in range(0, K, BLOCK):
            cols, mask = col_ids(k0, K, rmask, BLOCK)
            d = tl.where(mask, tl.load(x_base + cols, mask=mask, other=0).to(acc_ty) - mean[:, None], 0)
            acc += d * d
        rstd = div_rn(1.0, sqrt_rn(tl.sum(acc, axis=1) * inv_k + scalar(eps, acc_ty)))
        for k0 in range(0, K, BLOCK):
            cols, mask = col_ids(k0, K, rmask, BLOCK)
            x = tl.load(x_base + cols, mask=mask, other=0).to(acc_ty)
            tl.store(y_base + cols, cast((x - mean[:, None]) * rstd[:, None], out_ty, RNE), mask=mask)
    tl.store(rstd_ptr + rows, rstd, mask=rmask)


@triton.jit
def _ms_norm_bwd_kernel(
    g_ptr,
    y_ptr,
    rstd_ptr,
    dx_ptr,
    R,
    K,
    ld_g,
    CENTER: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK: tl.constexpr,
    ONE_PASS: tl.constexpr,
    RNE: tl.constexpr,
):
    """dx = rstd * (g - a - y * b), a = CENTER ? mean(g) : 0, b = mean(g * y) per row.

    g_ptr:    [R, K], row stride ld_g, unit column stride; dtype of y.
    y_ptr:    [R, K] contiguous; float32/16, bfloat16 or float64.
    rstd_ptr: [R] contiguous, compute type.
    dx_ptr:   [R, K] contiguous, any float dtype (the forward input's dtype).
    ONE_PASS requires K <= BLOCK.
    """
    acc_ty: tl.constexpr = rstd_ptr.dtype.element_ty
    out_ty: tl.constexpr = dx_ptr.dtype.element_ty
    rows, rmask = row_ids(R, ROWS)
    g_base = g_ptr + rows[:, None] * ld_g
    y_base = y_ptr + rows[:, None] * K
    dx_base = dx_ptr + rows[:, None] * K
    inv_k = div_rn(tl.full([], 1.0, acc_ty), tl.maximum(K, 1).to(acc_ty))
    if ONE_PASS:
        cols, mask = col_ids(0, K, rmask, BLOCK)
        g = tl.load(g_base + cols, mask=mask, other=0).to(acc_ty)
        y = tl.load(y_base + cols, mask=mask, other=0).to(acc_ty)
        sg = tl.sum(g, axis=1)
        sgy = tl.sum(g * y, axis=1)
    else:
        acc_g = tl.zeros([ROWS, BLOCK], acc_ty)
        acc_gy = tl.zeros([ROWS, BLOCK], acc_ty)
        for k0 in range(0, K, BLOCK):
            cols, mask = col_ids(k0, K, rmask, BLOCK)
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
        tl.store(dx_base + cols, cast(r * (g - a - y * b), out_ty, RNE), mask=mask)
    else:
        for k0 in range(0, K, BLOCK):
            cols, mask = col_ids(k0, K, rmask, BLOCK)
            g = tl.load(g_base + cols, mask=mask, other=0).to(acc_ty)
            y = tl.load(y_base + cols, mask=mask, other=0).to(acc_ty)
            tl.store(dx_base + cols, cast(r * (g - a - y * b), out_ty, RNE), mask=mask)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------


def ms_norm_fwd(x, eps, center, out_dtype=None):
    """(y, rstd) of the MS norm over the rows of x [..., K]; y in out_dtype (default x's dtype) and
    x's shape, rstd shaped as x's leading dimensions."""
    xr = as_rows(x)
    assert_rows(xr)
    out_dtype = out_dtype or x.dtype
    assert (out_dtype == torch.float64) == (x.dtype == torch.float64), (x.dtype, out_dtype)
    R, K = xr.shape
    y = torch.empty(x.shape, dtype=out_dtype, device=x.device)
    rstd = torch.empty(x.shape[:-1], dtype=acc_dtype(x.dtype), device=x.device)
    if R == 0:
        return y, rstd
    grid, rows, block, one_pass, num_warps = row_config(R, K, x.dtype)
    _ms_norm_fwd_kernel[grid](
        xr,
        y,
        rstd,
        R,
        K,
        xr.stride(0),
        float(eps),
        CENTER=center,
        ROWS=rows,
        BLOCK=block,
        ONE_PASS=one_pass,
        RNE=RNE_BY_HAND,
        num_warps=num_warps,
    )
    return y, rstd


def ms_norm_bwd(grad_y, y, rstd, center, dx_dtype):
    """dx = rstd * (grad_y - [center] mean(grad_y) - y * mean(grad_y * y)) in dx_dtype, y's shape."""
    assert y.is_contiguous() and grad_y.shape == y.shape and grad_y.dtype == y.dtype
    y_rows, grad_rows = as_rows(y), as_rows(grad_y)
    assert_rows(y_rows)
    assert_rows(grad_rows)
    R, K = y_rows.shape
    assert rstd.numel() == R and rstd.dtype == acc_dtype(y.dtype) and rstd.is_contiguous()
    dx = torch.empty(y.shape, dtype=dx_dtype, device=y.device)
    if R == 0 or K == 0:
        return dx
    grid, rows, block, one_pass, num_warps = row_config(R, K, y.dtype)
    _ms_norm_bwd_kernel[grid](
        grad_rows,
        y,
        rstd,
        dx,
        R,
        K,
        grad_rows.stride(0),
        CENTER=center,
        ROWS=rows,
        BLOCK=block,
        ONE_PASS=one_pass,
        RNE=RNE_BY_HAND,
        num_warps=num_warps,
    )
    return dx
