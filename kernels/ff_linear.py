"""Triton kernels of the fused Forward-Forward linear layer: ff_linear_fwd and ff_linear_bwd (its parts
ff_linear_overlay and ff_label_rows have their own files, kernels/ff_linear_overlay.py and
kernels/ff_label_rows.py).

The math (and the schemas) are those of csrc/ops.cpp. x [B, in] and weight [out, in] are
contiguous and of one dtype (float32/16, bfloat16 or float64); x_scale [B] is of the statistic
type (float32; float64 for float64 x) or None (1); bias [out] is of x's dtype or None; rows
r < n_pos are positive data.

Forward: ONE GEMM kernel over [BLOCK_M x BLOCK_N] tiles of h [B, out] (GROUP_M-swizzled for L2
reuse), looping over in with tl.dot into an fp32 (fp64 for float64) accumulator. Its epilogue
applies x_scale, bias and ReLU, stores h, and adds the tile's partial row sums of h^2 (sumsq) and
column sums over positive rows (pos_mean * n_pos) into zeroed buffers with tl.atomic_add (or, with
deterministic=True, stores them into per-tile partial buffers that torch sums afterwards). Both
statistics use the accumulator-precision h, before its rounding to x's dtype.

Backward: ONE GEMM kernel over [BLOCK_N x BLOCK_K] tiles of grad_weight [out, in], reducing over
B in BLOCK_M chunks. Each step loads the h tile transposed [BLOCK_N, BLOCK_M], forms dpre (and
x_scale * dpre) in registers, and accumulates dot(x_scale * dpre^T, x tile). Programs of the first
in-tile also sum dpre over the rows for grad_bias. dpre is never written to memory.

float32 dots follow torch's own setting for float32 matmuls (torch.get_float32_matmul_precision()):
"highest" (torch's default) -> input_precision="ieee" (exact fp32 products, no tensor cores), "high"
or "medium" -> "tf32", so ffops and torch's linear make the same speed/precision trade. float16/bfloat16 dots
feed the tensor cores with x's dtype (in the backward x_scale * dpre is rounded to x's dtype
first). float64 dots are "ieee".

Pure launchers (asserts of the contract, no registration). They run on CUDA tensors, or on CPU
tensors under the Triton interpreter (TRITON_INTERPRET=1), where small blocks are used.
"""

import torch
import triton
import triton.language as tl

from ffops.kernels._common import FLOAT_DTYPES, acc_dtype, cdiv, num_sms

# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _swizzle(num_pid_m, num_pid_n, GROUP_M: tl.constexpr):
    """(pid_m, pid_n) of this program: groups of GROUP_M row tiles walk the column tiles together."""
    pid = tl.program_id(0)
    per_group = GROUP_M * num_pid_n
    first_m = (pid // per_group) * GROUP_M
    group_m = min(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_m
    pid_n = (pid % per_group) // group_m
    return pid_m, pid_n


@triton.jit
def _dot(a, b, acc, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """acc + a @ b; UPCAST computes in float32 (the interpreter's bfloat16 dot reads raw bits)."""
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=PRECISION, out_dtype=acc.dtype)  # float64 dots: float64 out


@triton.jit
def _k_loop(
    x_ptrs,
    w_ptrs,
    acc,
    k_begin,
    K,
    ks,
    EVEN_K: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """acc + x[:, k_begin:K] @ w^T[k_begin:K, :] in BLOCK_K steps; x_ptrs [BLOCK_M, BLOCK_K] and w_ptrs
    [BLOCK_K, BLOCK_N] point at column k_begin. EVEN_K requires (K - k_begin) % BLOCK_K == 0."""
    for k0 in range(k_begin, K, BLOCK_K):
        if EVEN_K:
            a = tl.load(x_ptrs)
            b = tl.load(w_ptrs)
        else:
            a = tl.load(x_ptrs, mask=(ks < K - k0)[None, :], other=0)
            b = tl.load(w_ptrs, mask=(ks < K - k0)[:, None], other=0)
        acc = _dot(a, b, acc, PRECISION, UPCAST)
        x_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
    return acc


@triton.jit
def _ff_linear_fwd_kernel(
    x_ptr,
    w_ptr,
    xs_ptr,
    b_ptr,
    h_ptr,
    ss_ptr,
    cs_ptr,
    B,
    N,
    K,
    n_pos,
    HAS_SCALE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    ATOMIC: tl.constexpr,
    EVEN_K: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """h = relu(xs[:, None] * (x @ w^T) + b); ss[r] += sum_j h[r, j]^2; cs[j] += sum_{r<n_pos} h[r, j].

    x_ptr:  [B, K] contiguous; float32/16, bfloat16 or float64.    w_ptr: [N, K] contiguous, dtype of x.
    xs_ptr: [B] contiguous, stat type (float32; float64 for float64 x); read when HAS_SCALE.
    b_ptr:  [N] contiguous, dtype of x; read when HAS_BIAS.        h_ptr: [B, N] contiguous, dtype of x.
    ss_ptr: stat type; ATOMIC: [B] zeroed, else [cdiv(N, BLOCK_N), B] (one row per column tile).
    cs_ptr: stat type; ATOMIC: [N] zeroed, else [cdiv(n_pos, BLOCK_M), N] (one row per row tile).
    EVEN_K requires K % BLOCK_K == 0. B, N >= 1.
    """
    acc_ty: tl.constexpr = ss_ptr.dtype.element_ty
    pid_m, pid_n = _swizzle(tl.cdiv(B, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)
    rows = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    # Out-of-range rows/columns wrap around (in-bounds loads, masked out in the epilogue).
    x_ptrs = x_ptr + (rows % B)[:, None] * K + ks[None, :]  # [BLOCK_M, BLOCK_K]
    w_ptrs = w_ptr + (cols % N)[None, :] * K + ks[:, None]  # [BLOCK_K, BLOCK_N], w^T
    acc = _k_loop(x_ptrs, w_ptrs, tl.zeros([BLOCK_M, BLOCK_N], acc_ty), 0, K, ks, EVEN_K, PRECISION, UPCAST, BLOCK_K)

    rmask = rows < B
    cmask = cols < N
    if HAS_SCALE:
        acc = acc * tl.load(xs_ptr + rows, mask=rmask, other=0)[:, None]
    if HAS_BIAS:
        acc = acc + tl.load(b_ptr + cols, mask=cmask, other=0).to(acc_ty)[None, :]
    h = tl.where(acc <= 0, 0, acc)  # exact 0 for pre <= 0 (and -0); NaN propagates
    mask = rmask[:, None] & cmask[None, :]
    tl.store(h_ptr + rows[:, None] * N + cols[None, :], h.to(h_ptr.dtype.element_ty), mask=mask)

    h = tl.where(mask, h, 0)
    ss = tl.sum(h * h, axis=1)
    if ATOMIC:
        tl.atomic_add(ss_ptr + rows, ss, mask=rmask, sem="relaxed")
    else:
        tl.store(ss_ptr + pid_n.to(tl.int64) * B + rows, ss, mask=rmask)
    if pid_m * BLOCK_M < n_pos:  # the tile holds positive rows
        cs = tl.sum(tl.where((rows < n_pos)[:, None], h, 0), axis=0)
        if ATOMIC:
            tl.atomic_add(cs_ptr + cols, cs, mask=cmask, sem="relaxed")
        else:
            tl.store(cs_ptr + pid_m.to(tl.int64) * N + cols, cs, mask=cmask)


@triton.jit(do_not_specialize=["n_pos"])  # n_pos == 1 would become a constexpr int (no .to)
def _ff_linear_bwd_kernel(
    x_ptr,
    xs_ptr,
    h_ptr,
    gs_ptr,
    gpm_ptr,
    gw_ptr,
    gb_ptr,
    B,
    N,
    K,
    n_pos,
    HAS_SCALE: tl.constexpr,
    HAS_GPM: tl.constexpr,
    EVEN_M: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_N: tl.constexpr,
):
    """dpre[r, j] = 2 gs[r] h[r, j] + [r < n_pos][h[r, j] > 0] gpm[j] / n_pos (second term if HAS_GPM);
    gw = (xs[:, None] * dpre)^T @ x;  gb = sum_r dpre[r, :].

    x_ptr:   [B, K] contiguous; float32/16, bfloat16 or float64.  h_ptr: [B, N] contiguous, dtype of x.
    xs_ptr:  [B] contiguous, stat type (float32; float64 for float64 x); read when HAS_SCALE.
    gs_ptr:  [B] contiguous, stat type.  gpm_ptr: [N] contiguous, stat type; read when HAS_GPM.
    gw_ptr:  [N, K] contiguous, dtype of x.  gb_ptr: [N] contiguous, dtype of x.
    Grid: cdiv(N, BLOCK_N) * max(1, cdiv(K, BLOCK_K)) programs. EVEN_M requires B % BLOCK_M == 0.
    HAS_GPM requires n_pos >= 1.
    """
    acc_ty: tl.constexpr = gs_ptr.dtype.element_ty
    op_ty: tl.constexpr = x_ptr.dtype.element_ty
    pid_n, pid_k = _swizzle(tl.cdiv(N, BLOCK_N), tl.maximum(tl.cdiv(K, BLOCK_K), 1), GROUP_N)
    cols = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = pid_k.to(tl.int64) * BLOCK_K + tl.arange(0, BLOCK_K)
    cmask = cols < N
    kmask = ks < K
    offs_m = tl.arange(0, BLOCK_M)
    if HAS_GPM:
        gpm = tl.load(gpm_ptr + cols, mask=cmask, other=0)
        if acc_ty == tl.float64:
            gpm = (gpm / n_pos.to(tl.float64))[:, None]
        else:
            gpm = tl.div_rn(gpm, n_pos.to(tl.float32))[:, None]
    acc = tl.zeros([BLOCK_N, BLOCK_K], acc_ty)
    bacc = tl.zeros([BLOCK_N], acc_ty)
    for m0 in range(0, B, BLOCK_M):
        rows = m0 + offs_m.to(tl.int64)
        h_ptrs = h_ptr + rows[None, :] * N + cols[:, None]  # [BLOCK_N, BLOCK_M], h^T
        x_ptrs = x_ptr + rows[:, None] * K + ks[None, :]  # [BLOCK_M, BLOCK_K]
        if EVEN_M:
            ht = tl.load(h_ptrs, mask=cmask[:, None], other=0).to(acc_ty)
            xt = tl.load(x_ptrs, mask=kmask[None, :], other=0)
            gs = tl.load(gs_ptr + rows)
        else:
            rmask = rows < B
            ht = tl.load(h_ptrs, mask=cmask[:, None] & rmask[None, :], other=0).to(acc_ty)
            xt = tl.load(x_ptrs, mask=rmask[:, None] & kmask[None, :], other=0)
            gs = tl.load(gs_ptr + rows, mask=rmask, other=0)
        d = (2 * gs)[None, :] * ht
        if HAS_GPM:
            d += tl.where((rows < n_pos)[None, :] & (ht > 0), gpm, 0)
        if pid_k == 0:
            bacc += tl.sum(d, axis=1)
        if HAS_SCALE:
            if EVEN_M:
                d = d * tl.load(xs_ptr + rows)[None, :]
            else:
                d = d * tl.load(xs_ptr + rows, mask=rmask, other=0)[None, :]
        acc = _dot(d.to(op_ty), xt, acc, PRECISION, UPCAST)

    gw_ptrs = gw_ptr + cols[:, None] * K + ks[None, :]
    tl.store(gw_ptrs, acc.to(op_ty), mask=cmask[:, None] & kmask[None, :])
    if pid_k == 0:
        tl.store(gb_ptr + cols, bacc.to(op_ty), mask=cmask)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------


def _config(dim0, dim1, dtype, device):
    """(BLOCK_0, BLOCK_1, BLOCK_R, num_warps, num_stages) for a GEMM whose output [dim0, dim1] is
    tiled [BLOCK_0, BLOCK_1], its reduced dimension walked in BLOCK_R chunks. Fixed (no autotune)."""
    if device.type != "cuda":  # Triton interpreter: small blocks keep tests quick
        return 16, 16, 16, 1, 1
    if dtype == torch.float64:
        return 64, 64, 16, 4, 2
    reduce = 32 if dtype == torch.float32 else 64
    # Big tiles only when they still fill the GPU; otherwise more, smaller programs.
    if cdiv(dim0, 128) * cdiv(dim1, 128) >= num_sms(device.index or 0):
        return 128, 128, reduce, 8, 3
    return 64, 64, reduce, 4, 3


def _upcast(x):
    """Interpreter workaround: its tl.dot multiplies the raw bits of bfloat16 operands."""
    return x.dtype == torch.bfloat16 and x.device.type != "cuda"


def _precision(dtype, precision):
    if dtype == torch.float32:
        if precision is None:
            precision = "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"
        assert precision in ("ieee", "tf32", "tf32x3"), precision
        return precision
    return "ieee" if dtype == torch.float64 else "tf32"  # 16-bit dots ignore it


def _assert_vec(v, n, dtype, device):
    assert v.dim() == 1 and v.size(0) == n and v.is_contiguous(), v.shape
    assert v.dtype == dtype and v.device == device, (v.dtype, v.device)


def ff_linear_fwd(x, x_scale, weight, bias, n_pos, precision=None, deterministic=None):
    """(h, sumsq, pos_mean): h = relu(x_scale[:, None] * (x @ weight^T) + bias) [B, out] (x's dtype);
    sumsq[r] = sum_j h[r, j]^2 [B]; pos_mean[j] = mean_{r < n_pos} h[r, j] [out] (NaN if n_pos == 0).
    Statistics are of the stat type and use h before its rounding to x's dtype. x_scale and bias
    may be None. precision: float32 dot precision ("ieee", "tf32", "tf32x3"; default: torch's setting).
    deterministic: per-tile partial sums reduced by torch instead of float atomics (whose order
    varies run to run); None follows torch.are_deterministic_algorithms_enabled()."""
    assert x.dim() == 2 and weight.dim() == 2 and x.dtype in FLOAT_DTYPES, (x.shape, x.dtype)
    assert x.is_contiguous() and weight.is_contiguous(), (x.stride(), weight.stride())
    assert weight.dtype == x.dtype and weight.device == x.device and weight.size(1) == x.size(1)
    (B, K), N = x.shape, weight.size(0)
    assert 0 <= n_pos <= B, (n_pos, B)
    st, dev = acc_dtype(x.dtype), x.device
    if x_scale is not None:
        _assert_vec(x_scale, B, st, dev)
    if bias is not None:
        _assert_vec(bias, N, x.dtype, dev)
    h = torch.empty((B, N), dtype=x.dtype, device=dev)
    if B == 0 or N == 0:
        return h, torch.zeros(B, dtype=st, device=dev), torch.zeros(N, dtype=st, device=dev) / n_pos
    if deterministic is None:
        deterministic = torch.are_deterministic_algorithms_enabled()
    bm, bn, bk, num_warps, num_stages = _config(B, N, x.dtype, dev)
    num_pid_m, num_pid_n = cdiv(B, bm), cdiv(N, bn)
    if deterministic:
        ss = torch.empty((num_pid_n, B), dtype=st, device=dev)
        cs = torch.empty((cdiv(n_pos, bm), N), dtype=st, device=dev)
    else:
        ss = torch.zeros(B, dtype=st, device=dev)
        cs = torch.zeros(N, dtype=st, device=dev)
    _ff_linear_fwd_kernel[(num_pid_m * num_pid_n,)](
        x,
        weight,
        ss if x_scale is None else x_scale,
        ss if bias is None else bias,
        h,
        ss,
        cs,
        B,
        N,
        K,
        n_pos,
        HAS_SCALE=x_scale is not None,
        HAS_BIAS=bias is not None,
        ATOMIC=not deterministic,
        EVEN_K=K % bk == 0,
        PRECISION=_precision(x.dtype, precision),
        UPCAST=_upcast(x),
        BLOCK_M=bm,
        BLOCK_N=bn,
        BLOCK_K=bk,
        GROUP_M=8,
        num_warps=num_warps,
        num_stages=num_stages,
    )
    if deterministic:
        ss, cs = ss.sum(0), cs.sum(0)
    return h, ss, cs / n_pos


def ff_linear_bwd(x, x_scale, h, grad_sumsq, grad_pos_mean, n_pos, precision=None):
    """(grad_weight [out, in], grad_bias [out]), both of x's dtype, accumulated in the stat type:
    dpre[r, j] = 2 grad_sumsq[r] h[r, j] + [r < n_pos][h[r, j] > 0] grad_pos_mean[j] / n_pos,
    grad_weight = (x_scale[:, None] * dpre)^T @ x, grad_bias = sum_r dpre[r, :].
    x_scale and grad_pos_mean may be None. precision: float32 dot precision, as for the forward."""
    assert x.dim() == 2 and h.dim() == 2 and x.dtype in FLOAT_DTYPES, (x.shape, x.dtype)
    assert x.is_contiguous() and h.is_contiguous(), (x.stride(), h.stride())
    assert h.dtype == x.dtype and h.device == x.device and h.size(0) == x.size(0)
    (B, K), N = x.shape, h.size(1)
    assert 0 <= n_pos <= B, (n_pos, B)
    st, dev = acc_dtype(x.dtype), x.device
    _assert_vec(grad_sumsq, B, st, dev)
    if x_scale is not None:
        _assert_vec(x_scale, B, st, dev)
    if grad_pos_mean is not None:
        _assert_vec(grad_pos_mean, N, st, dev)
    if B == 0 or N == 0:
        return (torch.zeros((N, K), dtype=x.dtype, device=dev), torch.zeros(N, dtype=x.dtype, device=dev))
    gw = torch.empty((N, K), dtype=x.dtype, device=dev)
    gb = torch.empty(N, dtype=x.dtype, device=dev)
    bn, bk, bm, num_warps, num_stages = _config(N, K, x.dtype, dev)
    has_gpm = grad_pos_mean is not None and n_pos > 0
    grid = (cdiv(N, bn) * max(1, cdiv(K, bk)),)
    _ff_linear_bwd_kernel[grid](
        x,
        grad_sumsq if x_scale is None else x_scale,
        h,
        grad_sumsq,
        grad_pos_mean if has_gpm else grad_sumsq,
        gw,
        gb,
        B,
        N,
        K,
        n_pos,
        HAS_SCALE=x_scale is not None,
        HAS_GPM=has_gpm,
        EVEN_M=B % bm == 0,
        PRECISION=_precision(x.dtype, precision),
        UPCAST=_upcast(x),
        BLOCK_M=bm,
        BLOCK_N=bn,
        BLOCK_K=bk,
        GROUP_N=8,
        num_warps=num_warps,
        num_stages=num_stages,
    )
    return gw, gb
