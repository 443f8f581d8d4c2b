"""Triton kernels of the ``goodness`` ops (Forward-Forward rows): goodness, FF loss, length
normalization and the row scale of their backward.

The math (and the schemas) are those of csrc/ops.cpp and the C++ CPU kernels in csrc/cpu/goodness.cpp.
Every operator takes a 2-D activation ``h`` [R, K] whose last dimension is contiguous (any row
stride). Per-row statistics are float32 [R] (float64 for float64 ``h``), contiguous. Sums
accumulate in the statistic's type; elementwise outputs are contiguous and of ``h``'s dtype.

Layout (ffops.kernels._common.row_config): one program handles ROWS rows (ROWS > 1 only when
rows are short), walking K in BLOCK chunks. When a row fits in one chunk (ONE_PASS) it is loaded
once and kept in registers for the elementwise pass; otherwise the elementwise pass loops over K
again (rereading from L2).

These are pure launchers (no validation beyond asserts of the contract, no registration). They
run on CUDA tensors, or on CPU tensors under the Triton interpreter (TRITON_INTERPRET=1).
"""

import torch
import triton
import triton.language as tl

from ffops.kernels._common import (
    acc_dtype,
    assert_rows,
    assert_stat,
    col_ids,
    div_rn,
    row_config,
    row_ids,
    scalar,
    softplus,
    sqrt_rn,
)

# ---------------------------------------------------------------------------------------------
# Device helpers
# ---------------------------------------------------------------------------------------------


@triton.jit
def _sumsq(x_ptr, ld, rows, rmask, K, ROWS: tl.constexpr, BLOCK: tl.constexpr, acc_ty: tl.constexpr):
    """sum_k x[r, k]^2 for each row r of `rows`, accumulated in acc_ty."""
    base = x_ptr + rows[:, None] * ld
    acc = tl.zeros([ROWS, BLOCK], acc_ty)
    for k0 in range(0, K, BLOCK):
        cols, mask = col_ids(k0, K, rmask, BLOCK)
        x = tl.load(base + cols, mask=mask, other=0).to(acc_ty)
        acc += x * x
    return tl.sum(acc, axis=1)


@triton.jit
def _dot(a_ptr, lda, b_ptr, ldb, rows, rmask, K, ROWS: tl.constexpr, BLOCK: tl.constexpr, acc_ty: tl.constexpr):
    """sum_k a[r, k] * b[r, k] for each row r of `rows`, accumulated in acc_ty."""
    a_base = a_ptr + rows[:, None] * lda
    b_base = b_ptr + rows[:, None] * ldb
    acc = tl.zeros([ROWS, BLOCK], acc_ty)
    for k0 in range(0, K, BLOCK):
        cols, mask = col_ids(k0, K, rmask, BLOCK)
        a = tl.load(a_base + cols, mask=mask, other=0).to(acc_ty)
        b = tl.load(b_base + cols, mask=mask, other=0).to(acc_ty)
        acc += a * b
    return tl.sum(acc, axis=1)


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _goodness_kernel(
    h_ptr,
    g_ptr,
    loss_ptr,
    t_ptr,
    R,
    K,
    ld_h,
    scale: tl.float64,
    coef: tl.float64,
    theta: tl.float64,
    ROWS: tl.constexpr,
    BLOCK: tl.constexpr,
    LOSS: tl.constexpr,
    HAS_TARGET: tl.constexpr,
):
    """g[r] = scale * sum_k h[r, k]^2; with LOSS also loss[r] = softplus(coef * (t[r] - g[r])),
    t[r] = target[r] if HAS_TARGET else theta.

    h_ptr:    [R, K], row stride ld_h, unit column stride; float32/16, bfloat16 or float64.
    g_ptr:    [R] contiguous, accumulation type (float32, float64 for float64 h).
    loss_ptr: [R] contiguous, accumulation type; only written when LOSS (else any pointer).
    t_ptr:    [R] contiguous, accumulation type; only read when LOSS and HAS_TARGET.
    """
    acc_ty: tl.constexpr = g_ptr.dtype.element_ty
    rows, rmask = row_ids(R, ROWS)
    g = scalar(scale, acc_ty) * _sumsq(h_ptr, ld_h, rows, rmask, K, ROWS, BLOCK, acc_ty)
    tl.store(g_ptr + rows, g, mask=rmask)
    if LOSS:
        if HAS_TARGET:
            t = tl.load(t_ptr + rows, mask=rmask, other=0)
        else:
            t = scalar(theta, acc_ty)
        loss = softplus(scalar(coef, acc_ty) * (t - g))
        tl.store(loss_ptr + rows, loss, mask=rmask)


@triton.jit
def _row_scale_kernel(h_ptr, c_ptr, out_ptr, R, K, ld_h, ROWS: tl.constexpr, BLOCK: tl.constexpr):
    """out[r, k] = c[r] * h[r, k], computed in the accumulation type.

    h_ptr:   [R, K], row stride ld_h, unit column stride; float32/16, bfloat16 or float64.
    c_ptr:   [R] contiguous, accumulation type (float32, float64 for float64 h).
    out_ptr: [R, K] contiguous, dtype of h.
    """
    acc_ty: tl.constexpr = c_ptr.dtype.element_ty
    rows, rmask = row_ids(R, ROWS)
    c = tl.load(c_ptr + rows, mask=rmask, other=0)[:, None]
    h_base = h_ptr + rows[:, None] * ld_h
    o_base = out_ptr + rows[:, None] * K
    for k0 in range(0, K, BLOCK):
        cols, mask = col_ids(k0, K, rmask, BLOCK)
        x = tl.load(h_base + cols, mask=mask, other=0).to(acc_ty)
        tl.store(o_base + cols, (c * x).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _normalize_fwd_kernel(
    h_ptr,
    y_ptr,
    s_ptr,
    R,
    K,
    ld_h,
    norm_scale: tl.float64,
    eps: tl.float64,
    ROWS: tl.constexpr,
    BLOCK: tl.constexpr,
    ONE_PASS: tl.constexpr,
):
    """s[r] = sum_k h[r, k]^2;  y[r, k] = h[r, k] * (1 / (sqrt(norm_scale * s[r]) + eps)).

    h_ptr: [R, K], row stride ld_h, unit column stride; float32/16, bfloat16 or float64.
    y_ptr: [R, K] contiguous, dtype of h.
    s_ptr: [R] contiguous, accumulation type (float32, float64 for float64 h).
    ONE_PASS requires K <= BLOCK.
    """
    acc_ty: tl.constexpr = s_ptr.dtype.element_ty
    out_ty: tl.constexpr = y_ptr.dtype.element_ty
    rows, rmask = row_ids(R, ROWS)
    h_base = h_ptr + rows[:, None] * ld_h
    y_base = y_ptr + rows[:, None] * K
    ns = scalar(norm_scale, acc_ty)
    e = scalar(eps, acc_ty)
    if ONE_PASS:
        cols, mask = col_ids(0, K, rmask, BLOCK)
        x = tl.load(h_base + cols, mask=mask, other=0).to(acc_ty)
        s = tl.sum(x * x, axis=1)
        inv = div_rn(1.0, sqrt_rn(ns * s) + e)
        tl.store(y_base + cols, (inv[:, None] * x).to(out_ty), mask=mask)
    else:
        s = _sumsq(h_ptr, ld_h, rows, rmask, K, ROWS, BLOCK, acc_ty)
        inv = div_rn(1.0, sqrt_rn(ns * s) + e)[:, None]
        for k0 in range(0, K, BLOCK):
            cols, mask = col_ids(k0, K, rmask, BLOCK)
            x = tl.load(h_base + cols, mask=mask, other=0).to(acc_ty)
            tl.store(y_base + cols, (inv * x).to(out_ty), mask=mask)
    tl.store(s_ptr + rows, s, mask=rmask)


@triton.jit
def _normalize_bwd_kernel(
    gy_ptr,
    gs_ptr,
    h_ptr,
    s_ptr,
    dh_ptr,
    R,
    K,
    ld_gy,
    ld_h,
    norm_scale: tl.float64,
    eps: tl.float64,
    ROWS: tl.constexpr,
    BLOCK: tl.constexpr,
    ONE_PASS: tl.constexpr,
    HAS_GS: tl.constexpr,
):
    """dh = inv * gy + c * h per row, n = sqrt(norm_scale * s), inv = 1 / (n + eps),
    c = [n > 0] * (-inv^2 * norm_scale / n * <gy, h>) + 2 * gs (the gs term only with HAS_GS).

    gy_ptr: [R, K], row stride ld_gy, unit column stride; dtype of h.
    gs_ptr: [R] contiguous, accumulation type; only read when HAS_GS (else any pointer).
    h_ptr:  [R, K], row stride ld_h, unit column stride; float32/16, bfloat16 or float64.
    s_ptr:  [R] contiguous, accumulation type (float32, float64 for float64 h).
    dh_ptr: [R, K] contiguous, dtype of h.
    ONE_PASS requires K <= BLOCK.
    """
    acc_ty: tl.constexpr = s_ptr.dtype.element_ty
    out_ty: tl.constexpr = dh_ptr.dtype.element_ty
    rows, rmask = row_ids(R, ROWS)
    gy_base = gy_ptr + rows[:, None] * ld_gy
    h_base = h_ptr + rows[:, None] * ld_h
    dh_base = dh_ptr + rows[:, None] * K
    ns = scalar(norm_scale, acc_ty)
    e = scalar(eps, acc_ty)
    if ONE_PASS:
        cols, mask = col_ids(0, K, rmask, BLOCK)
        gy = tl.load(gy_base + cols, mask=mask, other=0).to(acc_ty)
        x = tl.load(h_base + cols, mask=mask, other=0).to(acc_ty)
        dot = tl.sum(gy * x, axis=1)
    else:
        dot = _dot(gy_ptr, ld_gy, h_ptr, ld_h, rows, rmask, K, ROWS, BLOCK, acc_ty)
    n = sqrt_rn(ns * tl.load(s_ptr + rows, mask=rmask, other=0))
    inv = div_rn(1.0, n + e)
    pos = n > 0
    c = tl.where(pos, div_rn(-inv * inv * ns, tl.where(pos, n, 1)) * dot, 0)
    if HAS_GS:
        c += 2 * tl.load(gs_ptr + rows, mask=rmask, other=0)
    inv = inv[:, None]
    c = c[:, None]
    if ONE_PASS:
        tl.store(dh_base + cols, (inv * gy + c * x).to(out_ty), mask=mask)
    else:
        for k0 in range(0, K, BLOCK):
            cols, mask = col_ids(k0, K, rmask, BLOCK)
            gy = tl.load(gy_base + cols, mask=mask, other=0).to(acc_ty)
            x = tl.load(h_base + cols, mask=mask, other=0).to(acc_ty)
            tl.store(dh_base + cols, (inv * gy + c * x).to(out_ty), mask=mask)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------


def _goodness(h, scale, coef, theta, target, loss):
    assert_rows(h)
    R, K = h.shape
    g = torch.empty(R, dtype=acc_dtype(h.dtype), device=h.device)
    out = torch.empty_like(g) if loss else g
    if target is not None:
        assert_stat(target, h)
    if R == 0:
        return g, out
    grid, rows, block, _, num_warps = row_config(R, K, h.dtype)
    _goodness_kernel[grid](
        h,
        g,
        out,
        g if target is None else target,
        R,
        K,
        h.stride(0),
        float(scale),
        float(coef),
        float(theta),
        ROWS=rows,
        BLOCK=block,
        LOSS=loss,
        HAS_TARGET=target is not None,
        num_warps=num_warps,
    )
    return g, out


def goodness_fwd(h, scale):
    """g[r] = scale * sum_k h[r, k]^2 (float32 [R]; float64 for float64 h)."""
    return _goodness(h, scale, 0.0, 0.0, None, loss=False)[0]


def ff_loss_fwd(h, scale, coef, theta, target=None):
    """(g, loss): g as goodness_fwd; loss[r] = softplus(coef * (t[r] - g[r])),
    t = target if given else theta."""
    return _goodness(h, scale, coef, theta, target, loss=True)


def row_scale(h, coef):
    """out[r, k] = coef[r] * h[r, k] (contiguous, dtype of h)."""
    assert_rows(h)
    assert_stat(coef, h)
    R, K = h.shape
    out = torch.empty((R, K), dtype=h.dtype, device=h.device)
    if R == 0 or K == 0:
        return out
    grid, rows, block, _, num_warps = row_config(R, K, h.dtype)
    _row_scale_kernel[grid](h, coef, out, R, K, h.stride(0), ROWS=rows, BLOCK=block, num_warps=num_warps)
    return out


def normalize_fwd(h, norm_scale, eps):
    """(y, s): s[r] = sum_k h[r, k]^2; y = h / (sqrt(norm_scale * s) + eps)."""
    assert_rows(h)
    R, K = h.shape
    y = torch.empty((R, K), dtype=h.dtype, device=h.device)
    s = torch.empty(R, dtype=acc_dtype(h.dtype), device=h.device)
    if R == 0:
        return y, s
    grid, rows, block, one_pass, num_warps = row_config(R, K, h.dtype)
    _normalize_fwd_kernel[grid](
        h,
        y,
        s,
        R,
        K,
        h.stride(0),
        float(norm_scale),
        float(eps),
        ROWS=rows,
        BLOCK=block,
        ONE_PASS=one_pass,
        num_warps=num_warps,
    )
    return y, s


def normalize_bwd(grad_y, grad_s, h, s, norm_scale, eps):
    """dh = inv * grad_y + h * (2 * grad_s - [n > 0] * inv^2 * norm_scale / n * <grad_y, h>),
    n = sqrt(norm_scale * s), inv = 1 / (n + eps). grad_s may be None."""
    assert_rows(h)
    assert_rows(grad_y)
    assert grad_y.shape == h.shape and grad_y.dtype == h.dtype and grad_y.device == h.device
    assert_stat(s, h)
    if grad_s is not None:
        assert_stat(grad_s, h)
    R, K = h.shape
    dh = torch.empty((R, K), dtype=h.dtype, device=h.device)
    if R == 0 or K == 0:
        return dh
    grid, rows, block, one_pass, num_warps = row_config(R, K, h.dtype)
    _normalize_bwd_kernel[grid](
        grad_y,
        s if grad_s is None else grad_s,
        h,
        s,
        dh,
        R,
        K,
        grad_y.stride(0),
        h.stride(0),
        float(norm_scale),
        float(eps),
        ROWS=rows,
        BLOCK=block,
        ONE_PASS=one_pass,
        HAS_GS=grad_s is not None,
        num_warps=num_warps,
    )
    return dh
