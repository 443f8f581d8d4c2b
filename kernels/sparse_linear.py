"""Triton kernels of the sparse linear layer: sparse_linear_fwd (SpMM) and sparse_linear_bwd
(transposed SpMM + SDDMM, fused).

The math (and the schemas) are those of csrc/ops.cpp; the pure-torch spec is
ffops.reference.sparse_linear. W [N, M] is unstructured-sparse in CSR (crow [N + 1], col [nnz],
values [nnz]); the backward walks its CSC order (t_ptr [M + 1], t_row [nnz], t_perm [nnz], see
ffops.ops.sparse_linear_pattern.transpose_pattern). Activations are feature-major: xt [M, B], dyt [N, B]
contiguous, so every nonzero is one contiguous vector over the batch. Index tensors are int32 or
int64 (one dtype per call); data is float32/16, bfloat16 or float64, accumulated in float32
(float64 for float64).

Forward: grid (N, cdiv(B, BLOCK_B)); a program owns output row i and a BLOCK_B slice of the batch.
It walks the row's nonzeros BLOCK_K at a time: loads their column indices and values (masked at
the row's end), gathers the [BLOCK_K, BLOCK_B] tile of xt rows (each row slice is a coalesced
contiguous load) and accumulates values * tile into a [BLOCK_K, BLOCK_B] accumulator, reduced over
the nonzeros once at the end; adds the bias and stores yt[i, slice]. Empty rows store the bias (0).

Backward: ONE kernel, grid (M, cdiv(B, BLOCK_B)); a program owns input column j (a CSC column of
W) and a BLOCK_B slice of the batch. Per BLOCK_K chunk of the column's nonzeros it gathers the
[BLOCK_K, BLOCK_B] tile of dyt rows once and uses it twice:
  dx   (need_dx):      accumulates values[t_perm] * tile, reduced at the end -> dxt[j, slice];
  dval (need_dvalues): the partial dots sum_b tile[k, b] * xt[j, b] over the slice, one per nonzero.
The program owns its nonzeros for its batch slice only, so the dvalues partials are combined as:
  * one batch slice (B <= BLOCK_B): stored directly, in values' dtype (no atomics, deterministic);
  * several slices (default): tl.atomic_add into a zeroed buffer of the accumulation type (values
    itself for float32/float64, a float32 buffer cast afterwards for float16/bfloat16). The float
    addition order then varies run to run (last-bit differences);
  * several slices under torch.use_deterministic_algorithms(True): a deterministic two-stage
    reduction -- each program stores its partials into row pid_b of a [cdiv(B, BLOCK_B), nnz]
    buffer (accumulation type) that torch sums over dim 0 afterwards (costs that buffer's memory).

Block sizes (_config): on CUDA, BLOCK_B = next_pow2(B) capped at ~512 bytes of a row (256 for
16-bit, 128 for float32, 64 for float64), halved (down to 32) while the grid has fewer than
4 programs per SM; BLOCK_K = next_pow2 of the mean nonzeros per row (column), in [16, TILE /
BLOCK_B] with TILE = 4096 elements (2048 for float64), 4 warps. Under the interpreter small
blocks (BLOCK_B <= 32, BLOCK_K = 8) so tests cover several batch slices and nonzero chunks.

Pure launchers (asserts of the contract, no registration). They run on CUDA tensors, or on CPU
tensors under the Triton interpreter (TRITON_INTERPRET=1), where bfloat16 results are rounded to
nearest even by hand (the interpreter's own cast truncates; see ffops.kernels._common.cast).
"""

import torch
import triton
import triton.language as tl

from ffops.kernels._common import FLOAT_DTYPES, RNE_BY_HAND, acc_dtype, cast, cdiv, next_pow2, num_sms

_INDEX_DTYPES = (torch.int32, torch.int64)
# Fewest programs per SM before the batch slices are made narrower (keeps H100's SMs busy).
_PROGRAMS_PER_SM = 4

# dvalues combination modes of the backward kernel
_DV_STORE, _DV_ATOMIC, _DV_PARTIAL = 0, 1, 2


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _sparse_linear_fwd_kernel(
    xt_ptr,
    v_ptr,
    crow_ptr,
    col_ptr,
    b_ptr,
    yt_ptr,
    B,
    HAS_BIAS: tl.constexpr,
    ACC64: tl.constexpr,
    RNE: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_B: tl.constexpr,
):
    """yt[i, b] = bias[i] + sum_{k = crow[i]}^{crow[i+1]-1} values[k] * xt[col[k], b].

    xt_ptr:   [M, B] contiguous; float32/16, bfloat16 or float64.   v_ptr: [nnz], dtype of xt.
    crow_ptr: [N + 1], col_ptr: [nnz]; int32 or int64 (one dtype), a valid CSR pattern.
    b_ptr:    [N], dtype of xt; read when HAS_BIAS.                 yt_ptr: [N, B] contiguous, dtype of xt.
    Grid (N, cdiv(B, BLOCK_B)); ACC64: accumulate in float64 (else float32). B >= 1.
    """
    if ACC64:
        acc_ty: tl.constexpr = tl.float64
    else:
        acc_ty: tl.constexpr = tl.float32
    row = tl.program_id(0).to(tl.int64)
    bs = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    bmask = bs < B
    offs = tl.arange(0, BLOCK_K)
    start = tl.load(crow_ptr + row)
    end = tl.load(crow_ptr + row + 1)
    acc = tl.zeros([BLOCK_K, BLOCK_B], acc_ty)
    for k0 in range(start, end, BLOCK_K):
        ks = k0 + offs
        kmask = ks < end
        c = tl.load(col_ptr + ks, mask=kmask, other=0).to(tl.int64)
        v = tl.load(v_ptr + ks, mask=kmask, other=0).to(acc_ty)
        x = tl.load(xt_ptr + c[:, None] * B + bs[None, :], mask=kmask[:, None] & bmask[None, :], other=0)
        acc += v[:, None] * x.to(acc_ty)
    y = tl.sum(acc, axis=0)
    if HAS_BIAS:
        y += tl.load(b_ptr + row).to(acc_ty)
    tl.store(yt_ptr + row * B + bs, cast(y, yt_ptr.dtype.element_ty, RNE), mask=bmask)


@triton.jit
def _sparse_linear_bwd_kernel(
    dyt_ptr,
    xt_ptr,
    v_ptr,
    tptr_ptr,
    trow_ptr,
    tperm_ptr,
    dx_ptr,
    dv_ptr,
    B,
    nnz,
    NEED_DX: tl.constexpr,
    NEED_DV: tl.constexpr,
    DV_MODE: tl.constexpr,
    ACC64: tl.constexpr,
    RNE: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_B: tl.constexpr,
):
    """Over CSC column j (k = t_ptr[j] .. t_ptr[j+1]-1) and one BLOCK_B batch slice:
    dxt[j, b] = sum_k values[t_perm[k]] * dyt[t_row[k], b]            (NEED_DX)
    dvalues[t_perm[k]] (+)= sum_{b in slice} dyt[t_row[k], b] * xt[j, b]  (NEED_DV)

    dyt_ptr: [N, B], xt_ptr: [M, B] contiguous; v_ptr: [nnz]; all one float dtype.
    tptr_ptr: [M + 1], trow_ptr / tperm_ptr: [nnz]; int32 or int64 (one dtype), a valid CSC order.
    dx_ptr:  [M, B] contiguous, dtype of dyt; written when NEED_DX.
    dv_ptr:  DV_MODE 0: [nnz], dtype of values (grid has one batch slice);
             DV_MODE 1: [nnz] zeroed, accumulation type (atomic adds);
             DV_MODE 2: [cdiv(B, BLOCK_B), nnz], accumulation type (row pid_b stored, summed later).
    Grid (M, cdiv(B, BLOCK_B)); ACC64: accumulate in float64 (else float32). B >= 1.
    """
    if ACC64:
        acc_ty: tl.constexpr = tl.float64
    else:
        acc_ty: tl.constexpr = tl.float32
    j = tl.program_id(0).to(tl.int64)
    pid_b = tl.program_id(1)
    bs = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    bmask = bs < B
    offs = tl.arange(0, BLOCK_K)
    start = tl.load(tptr_ptr + j)
    end = tl.load(tptr_ptr + j + 1)
    if NEED_DV:
        xj = tl.load(xt_ptr + j * B + bs, mask=bmask, other=0).to(acc_ty)
    acc = tl.zeros([BLOCK_K, BLOCK_B], acc_ty)
    for k0 in range(start, end, BLOCK_K):
        ks = k0 + offs
        kmask = ks < end
        r = tl.load(trow_ptr + ks, mask=kmask, other=0).to(tl.int64)
        p = tl.load(tperm_ptr + ks, mask=kmask, other=0)
        dy = tl.load(dyt_ptr + r[:, None] * B + bs[None, :], mask=kmask[:, None] & bmask[None, :], other=0)
        dy = dy.to(acc_ty)
        if NEED_DX:
            w = tl.load(v_ptr + p, mask=kmask, other=0).to(acc_ty)
            acc += w[:, None] * dy
        if NEED_DV:
            part = tl.sum(dy * xj[None, :], axis=1)
            if DV_MODE == 0:
                tl.store(dv_ptr + p, cast(part, dv_ptr.dtype.element_ty, RNE), mask=kmask)
            elif DV_MODE == 1:
                tl.atomic_add(dv_ptr + p, part, mask=kmask, sem="relaxed")
            else:
                tl.store(dv_ptr + pid_b.to(tl.int64) * nnz + p, part, mask=kmask)
    if NEED_DX:
        tl.store(dx_ptr + j * B + bs, cast(tl.sum(acc, axis=0), dx_ptr.dtype.element_ty, RNE), mask=bmask)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------


def _config(rows, nnz, B, dtype, device):
    """(BLOCK_K, BLOCK_B, num_warps) for a grid of `rows` programs (times the batch slices), each
    walking ~nnz / rows nonzeros over a batch of B. Fixed (no autotune)."""
    if device.type != "cuda":  # Triton interpreter: small blocks keep tests quick and cover the loops
        return 8, min(32, max(1, next_pow2(B))), 1
    cap = 64 if dtype == torch.float64 else 128 if dtype == torch.float32 else 256
    block_b = min(cap, max(16, next_pow2(B)))
    index = device.index if device.index is not None else torch.cuda.current_device()
    target = _PROGRAMS_PER_SM * num_sms(index)
    while block_b > 32 and rows * cdiv(B, block_b) < target:
        block_b //= 2
    tile = 2048 if dtype == torch.float64 else 4096
    avg = cdiv(nnz, max(rows, 1))
    block_k = min(max(16, next_pow2(avg)), max(16, tile // block_b))
    return block_k, block_b, 4


def _assert_index(t, n, dtype, device):
    assert t.dim() == 1 and t.is_contiguous() and (n is None or t.numel() == n), (t.shape, n)
    assert t.dtype == dtype and t.device == device, (t.dtype, t.device)


def sparse_linear_fwd(xt, values, crow, col, bias):
    """yt [N, B] (contiguous, xt's dtype) = W @ xt + bias[:, None], W [N, M] the CSR matrix
    (crow [N + 1], col [nnz], values [nnz]); bias [N] or None. fp32 (fp64) accumulation."""
    assert xt.dim() == 2 and xt.is_contiguous() and xt.dtype in FLOAT_DTYPES, (xt.shape, xt.dtype)
    dev = xt.device
    assert crow.dtype in _INDEX_DTYPES and crow.dim() == 1 and crow.numel() >= 1, (crow.dtype, crow.shape)
    N, nnz = crow.numel() - 1, col.numel()
    _assert_index(crow, None, crow.dtype, dev)
    _assert_index(col, nnz, crow.dtype, dev)
    assert values.dim() == 1 and values.numel() == nnz and values.is_contiguous(), values.shape
    assert values.dtype == xt.dtype and values.device == dev, (values.dtype, values.device)
    if bias is not None:
        assert bias.dim() == 1 and bias.numel() == N and bias.is_contiguous(), bias.shape
        assert bias.dtype == xt.dtype and bias.device == dev, (bias.dtype, bias.device)
    B = xt.size(1)
    yt = torch.empty((N, B), dtype=xt.dtype, device=dev)
    if N == 0 or B == 0:
        return yt
    block_k, block_b, num_warps = _config(N, nnz, B, xt.dtype, dev)
    grid = (N, cdiv(B, block_b))
    _sparse_linear_fwd_kernel[grid](
        xt,
        values,
        crow,
        col,
        yt if bias is None else bias,
        yt,
        B,
        HAS_BIAS=bias is not None,
        ACC64=xt.dtype == torch.float64,
        RNE=RNE_BY_HAND,
        BLOCK_K=block_k,
        BLOCK_B=block_b,
        num_warps=num_warps,
    )
    return yt


def sparse_linear_bwd(dyt, xt, values, t_ptr, t_row, t_perm, need_dx: bool, need_dvalues: bool):
    """(dxt [M, B], dvalues [nnz]), contiguous, values' dtype, over W's CSC order (t_ptr [M + 1],
    t_row [nnz], t_perm [nnz]):  dxt = W^T @ dyt;  dvalues[t_perm[k]] = <dyt[t_row[k]], xt[j]>
    for k in column j. An output not needed is an empty [0] tensor. fp32 (fp64) accumulation.
    dvalues over several batch slices: float atomics, or a deterministic two-stage sum when
    torch.are_deterministic_algorithms_enabled()."""
    dtype, dev = values.dtype, values.device
    assert dtype in FLOAT_DTYPES and values.dim() == 1 and values.is_contiguous(), (dtype, values.shape)
    assert dyt.dim() == 2 and xt.dim() == 2, (dyt.shape, xt.shape)
    assert dyt.is_contiguous() and xt.is_contiguous(), (dyt.stride(), xt.stride())
    assert dyt.dtype == dtype and xt.dtype == dtype and dyt.device == dev and xt.device == dev
    B, M, nnz = dyt.size(1), xt.size(0), values.numel()
    assert xt.size(1) == B, (xt.shape, dyt.shape)
    assert t_ptr.dtype in _INDEX_DTYPES, t_ptr.dtype
    _assert_index(t_ptr, M + 1, t_ptr.dtype, dev)
    _assert_index(t_row, nnz, t_ptr.dtype, dev)
    _assert_index(t_perm, nnz, t_ptr.dtype, dev)
    dxt = dyt.new_empty(0)
    dvalues = values.new_empty(0)
    if need_dx:
        dxt = (torch.empty if nnz > 0 else torch.zeros)((M, B), dtype=dtype, device=dev)  # kernel fills all
    if need_dvalues:
        dvalues = (torch.empty if B > 0 else torch.zeros)(nnz, dtype=dtype, device=dev)
    if not (need_dx or need_dvalues) or nnz == 0 or B == 0:  # nnz > 0 implies M, N >= 1
        return dxt, dvalues
    block_k, block_b, num_warps = _config(M, nnz, B, dtype, dev)
    n_slices = cdiv(B, block_b)
    acc = acc_dtype(dtype)
    dv_buf, mode = dvalues, _DV_STORE
    if need_dvalues and n_slices > 1:
        if torch.are_deterministic_algorithms_enabled():
            dv_buf, mode = torch.empty((n_slices, nnz), dtype=acc, device=dev), _DV_PARTIAL
        else:
            dv_buf = torch.zeros(nnz, dtype=acc, device=dev) if dtype != acc else dvalues.zero_()
            mode = _DV_ATOMIC
    _sparse_linear_bwd_kernel[(M, n_slices)](
        dyt,
        xt,
        values,
        t_ptr,
        t_row,
        t_perm,
        dxt if need_dx else dyt,
        dv_buf if need_dvalues else values,
        B,
        nnz,
        NEED_DX=need_dx,
        NEED_DV=need_dvalues,
        DV_MODE=mode,
        ACC64=dtype == torch.float64,
        RNE=RNE_BY_HAND,
        BLOCK_K=block_k,
        BLOCK_B=block_b,
        num_warps=num_warps,
    )
    if mode == _DV_PARTIAL:
        dvalues.copy_(dv_buf.sum(0))
    elif mode == _DV_ATOMIC and dv_buf is not dvalues:
        dvalues.copy_(dv_buf)
    return dxt, dvalues
