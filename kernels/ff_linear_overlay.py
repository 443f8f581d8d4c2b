"""Triton kernels of ff_linear_overlay_fwd / ff_linear_overlay_bwd: the fused Forward-Forward layer
on label-overlaid rows that share their images, with the GEMMs on the B shared rows only.

The math (and the schemas) are those of csrc/ops.cpp. base [B, in] and weight [out, in] are
contiguous and of one dtype (float32/16, bfloat16 or float64); labels [R] are int64 with R = k * B
(k >= 1 copies) and values in [0, C), C = num_classes in [1, in]; on [B] and x_scale [R] (or None)
are of the statistic type (float32; float64 for float64 base); bias [out] is of base's dtype or
None; rows r < n_pos are positive data. Row r is x_r = base[r % B] with its first C features
replaced by on[r % B] * one_hot(labels[r], C), and the ops are ff_linear_fwd / ff_linear_bwd on
those R rows (kernels/ff_linear.py), which are never materialized:

  pre[r, j] = x_scale[r] * (base[r % B, C:] . weight[j, C:] + on[r % B] * weight[j, labels[r]]) + bias[j]

Forward: ONE GEMM kernel over [BLOCK_M x BLOCK_N] tiles of base[:, C:] @ weight[:, C:]^T [B, out]
(GROUP_M-swizzled; the label features are masked to 0 in the k-tiles that hold them). Its epilogue
walks the k copies: for the rows r = j * B + b of copy j it gathers the label weights
weight[cols, labels[r]] (from a [C, out] transposed copy, so each gather reads a row), applies on,
x_scale, bias and ReLU, stores h, and adds the partial row sums of h^2 (sumsq) and column sums over
positive rows (pos_mean * n_pos) with tl.atomic_add (or, with deterministic=True, stores them into
per-tile partial buffers that torch sums afterwards). Both statistics use the accumulator-precision
h, before its rounding to base's dtype, and on[b] * weight[j, c] is formed in that precision too.

Backward: ONE GEMM kernel over [BLOCK_N x BLOCK_K] tiles of grad_weight [out, in], reducing over
the B shared rows in BLOCK_M chunks. Per chunk it loads the k copies' h tiles transposed, forms
dpre and u = x_scale * dpre in registers, sums u over the copies and runs ONE dot with the base tile
(label features masked to 0). The k-tiles that hold label features (k0 < C) also add the label
term grad_weight[n, c] += sum_r on[r % B] * u[r, n] * [labels[r] == c] as one dot per copy with the
one-hot tile L[m, kk] = on[b] * [labels[r] == kk]; only those tiles pay k dots. Programs of the
first k-tile also sum dpre over the R rows for grad_bias. Nothing of size [R, out] is written.

Dot precision follows kernels/ff_linear.py (_precision; 16-bit dots round their operands, u and
the one-hot tile included, to base's dtype). Label values are not checked here (that is done at the
Python boundary). Pure launchers (asserts of the contract, no registration). They run on CUDA
tensors, or on CPU tensors under the Triton interpreter (TRITON_INTERPRET=1), where small blocks
are used.
"""

import torch
import triton
import triton.language as tl

from ffops.kernels._common import FLOAT_DTYPES, acc_dtype, cdiv
from ffops.kernels.ff_linear import (
    _assert_vec,
    _config,
    _dot,
    _k_loop,
    _precision,
    _swizzle,
    _upcast,
)

# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _ff_linear_overlay_fwd_kernel(
    x_ptr,
    lab_ptr,
    on_ptr,
    xs_ptr,
    w_ptr,
    wt_ptr,
    b_ptr,
    h_ptr,
    ss_ptr,
    cs_ptr,
    B,
    R,
    N,
    K,
    C,
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
    """Row r = j * B + b: h[r] = relu(xs[r] * (x[b, C:] @ w[:, C:]^T + on[b] * wt[lab[r], :]) + bias);
    ss[r] += sum_j h[r, j]^2; cs[j] += sum_{r<n_pos} h[r, j].

    x_ptr:  [B, K] contiguous; float32/16, bfloat16 or float64.    w_ptr: [N, K] contiguous, dtype of x.
    lab_ptr: [R] int64 in [0, C).   wt_ptr: [C, N] contiguous (w[:, :C]^T), dtype of x.
    on_ptr: [B], xs_ptr: [R] contiguous, stat type (float32; float64 for float64 x); xs read when HAS_SCALE.
    b_ptr:  [N] contiguous, dtype of x; read when HAS_BIAS.        h_ptr: [R, N] contiguous, dtype of x.
    ss_ptr: stat type; ATOMIC: [R] zeroed, else [cdiv(N, BLOCK_N), R] (one row per column tile).
    cs_ptr: stat type, zeroed; ATOMIC: [N], else [cdiv(n_pos, B) * cdiv(B, BLOCK_M), N] (one row per
            (copy, row tile), row j * cdiv(B, BLOCK_M) + pid_m).
    EVEN_K requires K % BLOCK_K == 0. B, N >= 1; R a multiple of B; 1 <= C <= K.
    """
    acc_ty: tl.constexpr = ss_ptr.dtype.element_ty
    num_pid_m = tl.cdiv(B, BLOCK_M)
    pid_m, pid_n = _swizzle(num_pid_m, tl.cdiv(N, BLOCK_N), GROUP_M)
    rows = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    # Out-of-range rows/columns wrap around (in-bounds loads, masked out in the epilogue).
    x_ptrs = x_ptr + (rows % B)[:, None] * K + ks[None, :]  # [BLOCK_M, BLOCK_K]
    w_ptrs = w_ptr + (cols % N)[None, :] * K + ks[:, None]  # [BLOCK_K, BLOCK_N], w^T
    acc = tl.zeros([BLOCK_M, BLOCK_N], acc_ty)
    # The k-tiles holding label features: those x columns (< C) are replaced in every row -> 0.
    for k0 in range(0, C, BLOCK_K):
        kin = ks < K - k0
        a = tl.load(x_ptrs, mask=(kin & (ks >= C - k0))[None, :], other=0)
        b = tl.load(w_ptrs, mask=kin[:, None], other=0)
        acc = _dot(a, b, acc, PRECISION, UPCAST)
        x_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
    acc = _k_loop(x_ptrs, w_ptrs, acc, tl.cdiv(C, BLOCK_K) * BLOCK_K, K, ks, EVEN_K, PRECISION, UPCAST, BLOCK_K)

    rmask = rows < B
    cmask = cols < N
    mask = rmask[:, None] & cmask[None, :]
    on = tl.load(on_ptr + rows, mask=rmask, other=0)[:, None]
    if HAS_BIAS:
        bias = tl.load(b_ptr + cols, mask=cmask, other=0).to(acc_ty)[None, :]
    for r0 in range(0, R, B):  # copy j = r0 / B: rows r0 + rows
        r = r0 + rows
        lab = tl.load(lab_ptr + r, mask=rmask, other=0)
        wl = tl.load(wt_ptr + lab[:, None] * N + cols[None, :], mask=mask, other=0).to(acc_ty)
        v = acc + on * wl
        if HAS_SCALE:
            v = v * tl.load(xs_ptr + r, mask=rmask, other=0)[:, None]
        if HAS_BIAS:
            v = v + bias
        h = tl.where(v <= 0, 0, v)  # exact 0 for pre <= 0 (and -0); NaN propagates
        tl.store(h_ptr + r[:, None] * N + cols[None, :], h.to(h_ptr.dtype.element_ty), mask=mask)

        h = tl.where(mask, h, 0)
        ss = tl.sum(h * h, axis=1)
        if ATOMIC:
            tl.atomic_add(ss_ptr + r, ss, mask=rmask, sem="relaxed")
        else:
            tl.store(ss_ptr + pid_n.to(tl.int64) * R + r, ss, mask=rmask)
        if r0 + pid_m * BLOCK_M < n_pos:  # the tile holds positive rows
            cs = tl.sum(tl.where((r < n_pos)[:, None], h, 0), axis=0)
            if ATOMIC:
                tl.atomic_add(cs_ptr + cols, cs, mask=cmask, sem="relaxed")
            else:
                tile = pid_m.to(tl.int64) + (r0 // B) * num_pid_m  # r0 // B may be a constexpr int
                tl.store(cs_ptr + tile * N + cols, cs, mask=cmask)


@triton.jit(do_not_specialize=["n_pos"])  # n_pos == 1 would become a constexpr int (no .to)
def _ff_linear_overlay_bwd_kernel(
    x_ptr,
    lab_ptr,
    on_ptr,
    xs_ptr,
    h_ptr,
    gs_ptr,
    gpm_ptr,
    gw_ptr,
    gb_ptr,
    B,
    R,
    N,
    K,
    C,
    n_pos,
    HAS_SCALE: tl.constexpr,
    HAS_GPM: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_N: tl.constexpr,
):
    """dpre[r, j] = 2 gs[r] h[r, j] + [r < n_pos][h[r, j] > 0] gpm[j] / n_pos (second term if HAS_GPM);
    u = xs[:, None] * dpre;  gw[:, C:] = (sum_j u[j * B + b])^T @ x[:, C:];
    gw[n, c] = sum_r on[r % B] u[r, n] [lab[r] == c] (c < C);  gb = sum_r dpre[r, :].

    x_ptr:   [B, K] contiguous; float32/16, bfloat16 or float64.  h_ptr: [R, N] contiguous, dtype of x.
    lab_ptr: [R] int64 in [0, C).  on_ptr: [B], xs_ptr: [R] contiguous, stat type (float32; float64
             for float64 x); xs read when HAS_SCALE.
    gs_ptr:  [R] contiguous, stat type.  gpm_ptr: [N] contiguous, stat type; read when HAS_GPM.
    gw_ptr:  [N, K] contiguous, dtype of x.  gb_ptr: [N] contiguous, dtype of x.
    Grid: cdiv(N, BLOCK_N) * cdiv(K, BLOCK_K) programs. B, N >= 1; R a multiple of B; 1 <= C <= K.
    HAS_GPM requires n_pos >= 1.
    """
    acc_ty: tl.constexpr = gs_ptr.dtype.element_ty
    op_ty: tl.constexpr = x_ptr.dtype.element_ty
    pid_n, pid_k = _swizzle(tl.cdiv(N, BLOCK_N), tl.cdiv(K, BLOCK_K), GROUP_N)
    cols = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = pid_k.to(tl.int64) * BLOCK_K + tl.arange(0, BLOCK_K)
    cmask = cols < N
    xkmask = (ks < K) & (ks >= C)  # label features of x are replaced in every row -> 0
    has_label = pid_k * BLOCK_K < C
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
        rmask = rows < B
        hmask = cmask[:, None] & rmask[None, :]
        xt = tl.load(x_ptr + rows[:, None] * K + ks[None, :], mask=rmask[:, None] & xkmask[None, :], other=0)
        on = tl.load(on_ptr + rows, mask=rmask & has_label, other=0)[:, None]
        usum = tl.zeros([BLOCK_N, BLOCK_M], acc_ty)
        for r0 in range(0, R, B):  # copy j = r0 / B: rows r0 + rows
            r = r0 + rows
            ht = tl.load(h_ptr + r[None, :] * N + cols[:, None], mask=hmask, other=0).to(acc_ty)  # h^T
            d = (2 * tl.load(gs_ptr + r, mask=rmask, other=0))[None, :] * ht
            if HAS_GPM:
                d += tl.where((r < n_pos)[None, :] & (ht > 0), gpm, 0)
            if pid_k == 0:
                bacc += tl.sum(d, axis=1)
            if HAS_SCALE:
                d = d * tl.load(xs_ptr + r, mask=rmask, other=0)[None, :]
            usum += d
            if has_label:
                lab = tl.load(lab_ptr + r, mask=rmask, other=0)
                onehot = tl.where(lab[:, None] == ks[None, :], on, 0)  # [BLOCK_M, BLOCK_K]
                acc = _dot(d.to(op_ty), onehot.to(op_ty), acc, PRECISION, UPCAST)
        acc = _dot(usum.to(op_ty), xt, acc, PRECISION, UPCAST)

    gw_ptrs = gw_ptr + cols[:, None] * K + ks[None, :]
    tl.store(gw_ptrs, acc.to(op_ty), mask=cmask[:, None] & (ks < K)[None, :])
    if pid_k == 0:
        tl.store(gb_ptr + cols, bacc.to(op_ty), mask=cmask)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------


def _assert_overlay_args(base, labels, on, x_scale, num_classes, n_pos):
    """Asserts the arguments both ops share; returns (B, K, R, stat dtype)."""
    assert base.dim() == 2 and base.is_contiguous(), (base.shape, base.stride())
    assert base.dtype in FLOAT_DTYPES, base.dtype
    (B, K), dev = base.shape, base.device
    assert labels.dim() == 1 and labels.is_contiguous(), (labels.shape, labels.stride())
    assert labels.dtype == torch.int64 and labels.device == dev, (labels.dtype, labels.device)
    R = labels.size(0)
    assert (R == 0) if B == 0 else (R >= B and R % B == 0), (R, B)
    assert 1 <= num_classes <= K, (num_classes, K)
    assert 0 <= n_pos <= R, (n_pos, R)
    st = acc_dtype(base.dtype)
    _assert_vec(on, B, st, dev)
    if x_scale is not None:
        _assert_vec(x_scale, R, st, dev)
    return B, K, R, st


def ff_linear_overlay_fwd(
    base, labels, on, x_scale, weight, bias, num_classes, n_pos, precision=None, deterministic=None
):
    """(h, sumsq, pos_mean) of ff_linear_fwd on the R = labels.numel() rows x_r = base[r % B] with
    their first num_classes features replaced by on[r % B] * one_hot(labels[r]): h [R, out] (base's
    dtype), sumsq [R] and pos_mean [out] (stat type; NaN if n_pos == 0). The GEMM runs on the B rows
    of base. x_scale [R] and bias may be None. precision, deterministic: as for ff_linear_fwd."""
    B, K, R, st = _assert_overlay_args(base, labels, on, x_scale, num_classes, n_pos)
    assert weight.dim() == 2 and weight.is_contiguous() and weight.size(1) == K, (
        weight.shape,
        weight.stride(),
    )
    assert weight.dtype == base.dtype and weight.device == base.device, (weight.dtype, weight.device)
    N, dev = weight.size(0), base.device
    if bias is not None:
        _assert_vec(bias, N, base.dtype, dev)
    h = torch.empty((R, N), dtype=base.dtype, device=dev)
    if B == 0 or N == 0:
        return h, torch.zeros(R, dtype=st, device=dev), torch.zeros(N, dtype=st, device=dev) / n_pos
    if deterministic is None:
        deterministic = torch.are_deterministic_algorithms_enabled()
    wt = weight[:, :num_classes].t().contiguous()  # [C, out]: each row's label weights read contiguously
    bm, bn, bk, num_warps, num_stages = _config(B, N, base.dtype, dev)
    num_pid_m, num_pid_n = cdiv(B, bm), cdiv(N, bn)
    if deterministic:
        ss = torch.empty((num_pid_n, R), dtype=st, device=dev)
        cs = torch.zeros((cdiv(n_pos, B) * num_pid_m, N), dtype=st, device=dev)
    else:
        ss = torch.zeros(R, dtype=st, device=dev)
        cs = torch.zeros(N, dtype=st, device=dev)
    _ff_linear_overlay_fwd_kernel[(num_pid_m * num_pid_n,)](
        base,
        labels,
        on,
        ss if x_scale is None else x_scale,
        weight,
        wt,
        wt if bias is None else bias,
        h,
        ss,
        cs,
        B,
        R,
        N,
        K,
        num_classes,
        n_pos,
        HAS_SCALE=x_scale is not None,
        HAS_BIAS=bias is not None,
        ATOMIC=not deterministic,
        EVEN_K=K % bk == 0,
        PRECISION=_precision(base.dtype, precision),
        UPCAST=_upcast(base),
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


def ff_linear_overlay_bwd(base, labels, on, x_scale, h, grad_sumsq, grad_pos_mean, num_classes, n_pos, precision=None):
    """(grad_weight [out, in], grad_bias [out]), both of base's dtype, of ff_linear_bwd on the rows of
    ff_linear_overlay_fwd (h [R, out] its output, grad_sumsq [R], grad_pos_mean [out] or None, stat
    type), accumulated in the stat type with one GEMM over the B rows of base. x_scale may be None.
    precision: float32 dot precision, as for ff_linear_fwd."""
    B, K, R, st = _assert_overlay_args(base, labels, on, x_scale, num_classes, n_pos)
    assert h.dim() == 2 and h.is_contiguous() and h.size(0) == R, (h.shape, h.stride())
    assert h.dtype == base.dtype and h.device == base.device, (h.dtype, h.device)
    N, dev = h.size(1), base.device
    _assert_vec(grad_sumsq, R, st, dev)
    if grad_pos_mean is not None:
        _assert_vec(grad_pos_mean, N, st, dev)
    if B == 0 or N == 0:
        return (
            torch.zeros((N, K), dtype=base.dtype, device=dev),
            torch.zeros(N, dtype=base.dtype, device=dev),
        )
    gw = torch.empty((N, K), dtype=base.dtype, device=dev)
    gb = torch.empty(N, dtype=base.dtype, device=dev)
    bn, bk, bm, num_warps, num_stages = _config(N, K, base.dtype, dev)
    has_gpm = grad_pos_mean is not None and n_pos > 0
    _ff_linear_overlay_bwd_kernel[(cdiv(N, bn) * cdiv(K, bk),)](
        base,
        labels,
        on,
        grad_sumsq if x_scale is None else x_scale,
        h,
        grad_sumsq,
        grad_pos_mean if has_gpm else grad_sumsq,
        gw,
        gb,
        B,
        R,
        N,
        K,
        num_classes,
        n_pos,
        HAS_SCALE=x_scale is not None,
        HAS_GPM=has_gpm,
        PRECISION=_precision(base.dtype, precision),
        UPCAST=_upcast(base),
        BLOCK_M=bm,
        BLOCK_N=bn,
        BLOCK_K=bk,
        GROUP_N=8,
        num_warps=num_warps,
        num_stages=num_stages,
    )
    return gw, gb
