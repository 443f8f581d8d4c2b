"""Triton kernels of the Forward-Forward family: goodness, FF loss and length normalization.

The math (and the schemas) are those of csrc/ops.cpp and the C++ CPU kernels in csrc/cpu/ff.cpp.
Every operator takes a 2-D activation ``h`` [R, K] whose last dimension is contiguous (any row
stride). Per-row statistics are float32 [R] (float64 for float64 ``h``), contiguous. Sums
accumulate in the statistic's type; elementwise outputs are contiguous and of ``h``'s dtype.

Layout: one program handles ROWS rows (ROWS > 1 only when rows are short), walking K in BLOCK
chunks. When a row fits in one chunk (ONE_PASS) it is loaded once and kept in registers for the
elementwise pass; otherwise the elementwise pass loops over K again (rereading from L2).

These are pure launchers (no validation beyond asserts of the contract, no registration). They
run on CUDA tensors, or on CPU tensors under the Triton interpreter (TRITON_INTERPRET=1).
"""

import torch
import triton
import triton.language as tl

# Widest K chunk (elements) one program loads at a time; halved for float64.
MAX_BLOCK = 8192
# Target elements per program when several short rows share a program.
ROW_TILE = 4096
# Fewest programs worth keeping when packing short rows (keeps the GPU's SMs busy).
MIN_PROGRAMS = 128

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


# ---------------------------------------------------------------------------------------------
# Device helpers
# ---------------------------------------------------------------------------------------------


@triton.jit
def _rows(R, ROWS: tl.constexpr):
    """Row indices (int64) of this program, and their in-range mask."""
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    return rows, rows < R


@triton.jit
def _cols(k0, K, rmask, BLOCK: tl.constexpr):
    """Column indices [1, BLOCK] of the chunk starting at k0, and the [ROWS, BLOCK] mask."""
    cols = k0 + tl.arange(0, BLOCK)
    return cols[None, :], rmask[:, None] & (cols < K)[None, :]


@triton.jit
def _scalar(x, acc_ty: tl.constexpr):
    """A float64 launcher scalar in the accumulation type (rounded once, like the C++ cast)."""
    return tl.full([], x, tl.float64).to(acc_ty)


@triton.jit
def _sqrt(x):
    """Correctly rounded square root (the fast fp32 default is approximate)."""
    if x.dtype.is_fp64():
        return tl.sqrt(x)
    else:
        return tl.sqrt_rn(x)


@triton.jit
def _div(x, y):
    """Correctly rounded division."""
    if y.dtype.is_fp64():
        return x / y
    else:
        return tl.div_rn(x, y)


@triton.jit
def _log1p(x):
    """log(1 + x) accurate for small x (Kahan's trick; libdevice is unavailable in the
    interpreter). NaN propagates."""
    u = 1 + x
    one = u == 1
    return tl.where(one, x, tl.log(u) * (x / tl.where(one, 1, u - 1)))


@triton.jit
def _softplus(z):
    """max(z, 0) + log1p(exp(-|z|)): no overflow for large |z|; NaN propagates."""
    return tl.where(z > 0, z, 0) + _log1p(tl.exp(-tl.abs(z)))


@triton.jit
def _sumsq(x_ptr, ld, rows, rmask, K, ROWS: tl.constexpr, BLOCK: tl.constexpr, acc_ty: tl.constexpr):
    """sum_k x[r, k]^2 for each row r of `rows`, accumulated in acc_ty."""
    base = x_ptr + rows[:, None] * ld
    acc = tl.zeros([ROWS, BLOCK], acc_ty)
    for k0 in range(0, K, BLOCK):
        cols, mask = _cols(k0, K, rmask, BLOCK)
        x = tl.load(base + cols, mask=mask, other=0).to(acc_ty)
        acc += x * x
    return tl.sum(acc, axis=1)


@triton.jit
def _dot(a_ptr, lda, b_ptr, ldb, rows, rmask, K, ROWS: tl.constexpr, BLOCK: tl.constexpr,
         acc_ty: tl.constexpr):
    """sum_k a[r, k] * b[r, k] for each row r of `rows`, accumulated in acc_ty."""
    a_base = a_ptr + rows[:, None] * lda
    b_base = b_ptr + rows[:, None] * ldb
    acc = tl.zeros([ROWS, BLOCK], acc_ty)
    for k0 in range(0, K, BLOCK):
        cols, mask = _cols(k0, K, rmask, BLOCK)
        a = tl.load(a_base + cols, mask=mask, other=0).to(acc_ty)
        b = tl.load(b_base + cols, mask=mask, other=0).to(acc_ty)
        acc += a * b
    return tl.sum(acc, axis=1)


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _goodness_kernel(h_ptr, g_ptr, loss_ptr, t_ptr, R, K, ld_h, scale: tl.float64, coef: tl.float64,
                     theta: tl.float64, ROWS: tl.constexpr, BLOCK: tl.constexpr, LOSS: tl.constexpr,
                     HAS_TARGET: tl.constexpr):
    """g[r] = scale * sum_k h[r, k]^2; with LOSS also loss[r] = softplus(coef * (t[r] - g[r])),
    t[r] = target[r] if HAS_TARGET else theta.

    h_ptr:    [R, K], row stride ld_h, unit column stride; float32/16, bfloat16 or float64.
    g_ptr:    [R] contiguous, accumulation type (float32, float64 for float64 h).
    loss_ptr: [R] contiguous, accumulation type; only written when LOSS (else any pointer).
    t_ptr:    [R] contiguous, accumulation type; only read when LOSS and HAS_TARGET.
    """
    acc_ty: tl.constexpr = g_ptr.dtype.element_ty
    rows, rmask = _rows(R, ROWS)
    g = _scalar(scale, acc_ty) * _sumsq(h_ptr, ld_h, rows, rmask, K, ROWS, BLOCK, acc_ty)
    tl.store(g_ptr + rows, g, mask=rmask)
    if LOSS:
        if HAS_TARGET:
            t = tl.load(t_ptr + rows, mask=rmask, other=0)
        else:
            t = _scalar(theta, acc_ty)
        loss = _softplus(_scalar(coef, acc_ty) * (t - g))
        tl.store(loss_ptr + rows, loss, mask=rmask)


@triton.jit
def _row_scale_kernel(h_ptr, c_ptr, out_ptr, R, K, ld_h, ROWS: tl.constexpr, BLOCK: tl.constexpr):
    """out[r, k] = c[r] * h[r, k], computed in the accumulation type.

    h_ptr:   [R, K], row stride ld_h, unit column stride; float32/16, bfloat16 or float64.
    c_ptr:   [R] contiguous, accumulation type (float32, float64 for float64 h).
    out_ptr: [R, K] contiguous, dtype of h.
    """
    acc_ty: tl.constexpr = c_ptr.dtype.element_ty
    rows, rmask = _rows(R, ROWS)
    c = tl.load(c_ptr + rows, mask=rmask, other=0)[:, None]
    h_base = h_ptr + rows[:, None] * ld_h
    o_base = out_ptr + rows[:, None] * K
    for k0 in range(0, K, BLOCK):
        cols, mask = _cols(k0, K, rmask, BLOCK)
        x = tl.load(h_base + cols, mask=mask, other=0).to(acc_ty)
        tl.store(o_base + cols, (c * x).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _normalize_fwd_kernel(h_ptr, y_ptr, s_ptr, R, K, ld_h, norm_scale: tl.float64, eps: tl.float64,
                          ROWS: tl.constexpr, BLOCK: tl.constexpr, ONE_PASS: tl.constexpr):
    """s[r] = sum_k h[r, k]^2;  y[r, k] = h[r, k] * (1 / (sqrt(norm_scale * s[r]) + eps)).

    h_ptr: [R, K], row stride ld_h, unit column stride; float32/16, bfloat16 or float64.
    y_ptr: [R, K] contiguous, dtype of h.
    s_ptr: [R] contiguous, accumulation type (float32, float64 for float64 h).
    ONE_PASS requires K <= BLOCK.
    """
    acc_ty: tl.constexpr = s_ptr.dtype.element_ty
    out_ty: tl.constexpr = y_ptr.dtype.element_ty
    rows, rmask = _rows(R, ROWS)
    h_base = h_ptr + rows[:, None] * ld_h
    y_base = y_ptr + rows[:, None] * K
    ns = _scalar(norm_scale, acc_ty)
    e = _scalar(eps, acc_ty)
    if ONE_PASS:
        cols, mask = _cols(0, K, rmask, BLOCK)
        x = tl.load(h_base + cols, mask=mask, other=0).to(acc_ty)
        s = tl.sum(x * x, axis=1)
        inv = _div(1.0, _sqrt(ns * s) + e)
        tl.store(y_base + cols, (inv[:, None] * x).to(out_ty), mask=mask)
    else:
        s = _sumsq(h_ptr, ld_h, rows, rmask, K, ROWS, BLOCK, acc_ty)
        inv = _div(1.0, _sqrt(ns * s) + e)[:, None]
        for k0 in range(0, K, BLOCK):
            cols, mask = _cols(k0, K, rmask, BLOCK)
            x = tl.load(h_base + cols, mask=mask, other=0).to(acc_ty)
            tl.store(y_base + cols, (inv * x).to(out_ty), mask=mask)
    tl.store(s_ptr + rows, s, mask=rmask)


@triton.jit
def _normalize_bwd_kernel(gy_ptr, gs_ptr, h_ptr, s_ptr, dh_ptr, R, K, ld_gy, ld_h, norm_scale: tl.float64,
                          eps: tl.float64, ROWS: tl.constexpr, BLOCK: tl.constexpr, ONE_PASS: tl.constexpr,
                          HAS_GS: tl.constexpr):
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
    rows, rmask = _rows(R, ROWS)
    gy_base = gy_ptr + rows[:, None] * ld_gy
    h_base = h_ptr + rows[:, None] * ld_h
    dh_base = dh_ptr + rows[:, None] * K
    ns = _scalar(norm_scale, acc_ty)
    e = _scalar(eps, acc_ty)
    if ONE_PASS:
        cols, mask = _cols(0, K, rmask, BLOCK)
        gy = tl.load(gy_base + cols, mask=mask, other=0).to(acc_ty)
        x = tl.load(h_base + cols, mask=mask, other=0).to(acc_ty)
        dot = tl.sum(gy * x, axis=1)
    else:
        dot = _dot(gy_ptr, ld_gy, h_ptr, ld_h, rows, rmask, K, ROWS, BLOCK, acc_ty)
    n = _sqrt(ns * tl.load(s_ptr + rows, mask=rmask, other=0))
    inv = _div(1.0, n + e)
    pos = n > 0
    c = tl.where(pos, _div(-inv * inv * ns, tl.where(pos, n, 1)) * dot, 0)
    if HAS_GS:
        c += 2 * tl.load(gs_ptr + rows, mask=rmask, other=0)
    inv = inv[:, None]
    c = c[:, None]
    if ONE_PASS:
        tl.store(dh_base + cols, (inv * gy + c * x).to(out_ty), mask=mask)
    else:
        for k0 in range(0, K, BLOCK):
            cols, mask = _cols(k0, K, rmask, BLOCK)
            gy = tl.load(gy_base + cols, mask=mask, other=0).to(acc_ty)
            x = tl.load(h_base + cols, mask=mask, other=0).to(acc_ty)
            tl.store(dh_base + cols, (inv * gy + c * x).to(out_ty), mask=mask)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------


def _stat_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _assert_rows(h):
    assert h.dim() == 2 and h.dtype in _FLOAT_DTYPES, (h.shape, h.dtype)
    assert h.size(1) <= 1 or h.stride(1) == 1, h.stride()


def _assert_stat(v, h):
    assert v.dim() == 1 and v.size(0) == h.size(0) and v.is_contiguous(), v.shape
    assert v.dtype == _stat_dtype(h.dtype) and v.device == h.device, (v.dtype, v.device)


def _config(R, K, dtype):
    """(grid, ROWS, BLOCK, ONE_PASS, num_warps) for R rows of K elements."""
    cap = max(16, MAX_BLOCK // 2 if dtype == torch.float64 else MAX_BLOCK)
    block = min(max(16, triton.next_power_of_2(K)), cap)
    rows = max(1, min(ROW_TILE // block, triton.next_power_of_2(R)))
    while rows > 1 and triton.cdiv(R, rows) < MIN_PROGRAMS:
        rows //= 2
    num_warps = min(16, max(1, rows * block // 256))
    return (triton.cdiv(R, rows),), rows, block, K <= block, num_warps


def _goodness(h, scale, coef, theta, target, loss):
    _assert_rows(h)
    R, K = h.shape
    g = torch.empty(R, dtype=_stat_dtype(h.dtype), device=h.device)
    out = torch.empty_like(g) if loss else g
    if target is not None:
        _assert_stat(target, h)
    if R == 0:
        return g, out
    grid, rows, block, _, num_warps = _config(R, K, h.dtype)
    _goodness_kernel[grid](
        h, g, out, g if target is None else target, R, K, h.stride(0), float(scale), float(coef),
        float(theta), ROWS=rows, BLOCK=block, LOSS=loss, HAS_TARGET=target is not None,
        num_warps=num_warps)
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
    _assert_rows(h)
    _assert_stat(coef, h)
    R, K = h.shape
    out = torch.empty((R, K), dtype=h.dtype, device=h.device)
    if R == 0 or K == 0:
        return out
    grid, rows, block, _, num_warps = _config(R, K, h.dtype)
    _row_scale_kernel[grid](h, coef, out, R, K, h.stride(0), ROWS=rows, BLOCK=block, num_warps=num_warps)
    return out


def normalize_fwd(h, norm_scale, eps):
    """(y, s): s[r] = sum_k h[r, k]^2; y = h / (sqrt(norm_scale * s) + eps)."""
    _assert_rows(h)
    R, K = h.shape
    y = torch.empty((R, K), dtype=h.dtype, device=h.device)
    s = torch.empty(R, dtype=_stat_dtype(h.dtype), device=h.device)
    if R == 0:
        return y, s
    grid, rows, block, one_pass, num_warps = _config(R, K, h.dtype)
    _normalize_fwd_kernel[grid](h, y, s, R, K, h.stride(0), float(norm_scale), float(eps), ROWS=rows,
                                BLOCK=block, ONE_PASS=one_pass, num_warps=num_warps)
    return y, s


def normalize_bwd(grad_y, grad_s, h, s, norm_scale, eps):
    """dh = inv * grad_y + h * (2 * grad_s - [n > 0] * inv^2 * norm_scale / n * <grad_y, h>),
    n = sqrt(norm_scale * s), inv = 1 / (n + eps). grad_s may be None."""
    _assert_rows(h)
    _assert_rows(grad_y)
    assert grad_y.shape == h.shape and grad_y.dtype == h.dtype and grad_y.device == h.device
    _assert_stat(s, h)
    if grad_s is not None:
        _assert_stat(grad_s, h)
    R, K = h.shape
    dh = torch.empty((R, K), dtype=h.dtype, device=h.device)
    if R == 0 or K == 0:
        return dh
    grid, rows, block, one_pass, num_warps = _config(R, K, h.dtype)
    _normalize_bwd_kernel[grid](
        grad_y, s if grad_s is None else grad_s, h, s, dh, R, K, grad_y.stride(0), h.stride(0),
        float(norm_scale), float(eps), ROWS=rows, BLOCK=block, ONE_PASS=one_pass,
        HAS_GS=grad_s is not None, num_warps=num_warps)
    return dh
