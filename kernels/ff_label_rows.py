"""Triton kernel of ff_label_rows, a part of the ff_linear op: the first layer on every label overlay,
for prediction by goodness (schema and math: csrc/ops.cpp; C++: csrc/cpu/ff_label_rows.cpp).

No GEMM (the caller ran it on the label-free input); one program per BLOCK_M output rows walks the
columns in BLOCK_N chunks, writes each element of h once and keeps the rows' sums of squares in
registers (stored once: deterministic, no atomics).

A pure launcher (asserts of the contract, no registration). It runs on CUDA tensors, or on CPU tensors
under the Triton interpreter (TRITON_INTERPRET=1), where small blocks are used.
"""

import torch
import triton
import triton.language as tl

from ffops.kernels._common import FLOAT_DTYPES, acc_dtype, cdiv, next_pow2
from ffops.kernels.ff_linear import _assert_vec


@triton.jit
def _ff_label_rows_kernel(
    pre_ptr,
    on_ptr,
    s_ptr,
    wt_ptr,
    b_ptr,
    h_ptr,
    ss_ptr,
    R,
    C,
    N,
    HAS_SCALE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Row r = b * C + c: h[r, j] = relu(s[b] * (pre[b, j] + on[b] * wt[c, j]) + bias[j]) in the stat
    type; ss[r] = sum_j h[r, j]^2 (unrounded h).

    pre_ptr: [R / C, N] contiguous; float32/16, bfloat16 or float64.  wt_ptr: [C, N] contiguous, dtype of pre.
    on_ptr, s_ptr: [R / C] contiguous, stat type (float32; float64 for float64 pre); s read when HAS_SCALE.
    b_ptr: [N] contiguous, dtype of pre; read when HAS_BIAS.  h_ptr: [R, N] contiguous, dtype of pre.
    ss_ptr: [R] contiguous, stat type. R >= 1.
    """
    acc_ty: tl.constexpr = ss_ptr.dtype.element_ty
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < R
    b = rows // C
    c = rows - b * C
    on = tl.load(on_ptr + b, mask=rmask, other=0)[:, None]
    if HAS_SCALE:
        sc = tl.load(s_ptr + b, mask=rmask, other=0)[:, None]
    acc = tl.zeros([BLOCK_M, BLOCK_N], acc_ty)
    for n0 in range(0, N, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        cmask = cols < N
        mask = rmask[:, None] & cmask[None, :]
        p = tl.load(pre_ptr + b[:, None] * N + cols[None, :], mask=mask, other=0).to(acc_ty)
        w = tl.load(wt_ptr + c[:, None] * N + cols[None, :], mask=mask, other=0).to(acc_ty)
        v = p + on * w
        if HAS_SCALE:
            v = v * sc
        if HAS_BIAS:
            v = v + tl.load(b_ptr + cols, mask=cmask, other=0).to(acc_ty)[None, :]
        h = tl.where(v <= 0, 0, v)  # exact 0 for v <= 0 (and -0); NaN propagates
        tl.store(h_ptr + rows[:, None] * N + cols[None, :], h.to(h_ptr.dtype.element_ty), mask=mask)
        h = tl.where(mask, h, 0)
        acc += h * h
    tl.store(ss_ptr + rows, tl.sum(acc, axis=1), mask=rmask)


def ff_label_rows(pre, on, scale, label_weight, bias):
    """(h, sumsq) with B * C rows, C = label_weight.size(1): row b * C + c is
    h = relu(scale[b] * (pre[b, :] + on[b] * label_weight[:, c]) + bias) (pre's dtype, computed in the
    stat type) and sumsq its sum of squares (stat type, from the unrounded h). pre [B, out] and
    label_weight [out, C] contiguous, bias [out] (or None) of pre's dtype; on and scale (or None) [B]
    of the stat type."""
    assert pre.dim() == 2 and pre.is_contiguous() and pre.dtype in FLOAT_DTYPES, (
        pre.shape,
        pre.stride(),
        pre.dtype,
    )
    (B, N), C = pre.shape, label_weight.size(1)
    assert label_weight.shape == (N, C) and C >= 1 and label_weight.is_contiguous(), label_weight.shape
    assert label_weight.dtype == pre.dtype and label_weight.device == pre.device
    st, dev = acc_dtype(pre.dtype), pre.device
    _assert_vec(on, B, st, dev)
    if scale is not None:
        _assert_vec(scale, B, st, dev)
    if bias is not None:
        _assert_vec(bias, N, pre.dtype, dev)
    h = torch.empty((B * C, N), dtype=pre.dtype, device=dev)
    ss = torch.empty(B * C, dtype=st, device=dev)
    if B == 0:
        return h, ss
    wt = label_weight.t().contiguous()  # [C, out]: each label row's weights read contiguously
    if dev.type == "cuda":
        bm, num_warps = 8, 4
        bn = min(max(next_pow2(N), 16), 4096 // bm)
    else:  # Triton interpreter: small blocks keep tests quick
        bm, bn, num_warps = 4, 16, 1
    _ff_label_rows_kernel[(cdiv(B * C, bm),)](
        pre,
        on,
        on if scale is None else scale,
        wt,
        wt if bias is None else bias,
        h,
        ss,
        B * C,
        C,
        N,
        HAS_SCALE=scale is not None,
        HAS_BIAS=bias is not None,
        BLOCK_M=bm,
        BLOCK_N=bn,
        num_warps=num_warps,
    )
    return h, ss
