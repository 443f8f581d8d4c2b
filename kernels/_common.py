"""What every Triton kernel file of ffops shares: dtypes, the row-wise launch configuration, the
contract asserts, host-side integer math and the device helpers (rounding, row tiles, NaN-safe
softplus).

Host helpers are plain Python: ``triton.cdiv`` / ``triton.next_power_of_2`` are
``constexpr_function`` objects that cost microseconds per call from host code.
"""

import functools
import math
import os

import torch
import triton
import triton.language as tl

from ffops.ops._common import stat_dtype as acc_dtype  # accumulation / per-row statistic dtype

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

# Row-wise kernels: widest K chunk (elements) one program loads at a time (halved for float64),
# target elements per program when several short rows share a program, and the fewest programs
# worth keeping when packing short rows (keeps the GPU's SMs busy).
MAX_BLOCK = 8192
ROW_TILE = 4096
MIN_PROGRAMS = 128

# The interpreter rounds float32 -> bfloat16 toward zero; GPUs round to nearest even. Under the
# interpreter the kernels round by hand (``cast``), so CI checks the results a GPU gives.
RNE_BY_HAND = os.environ.get("TRITON_INTERPRET", "0") == "1"


# ---------------------------------------------------------------------------------------------
# Host helpers
# ---------------------------------------------------------------------------------------------


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_pow2(n: int) -> int:
    """The smallest power of two >= n (0 for n = 0, as ``triton.next_power_of_2``)."""
    return 1 << (n - 1).bit_length() if n > 0 else 0


@functools.cache
def num_sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


@functools.cache
def row_config(R: int, K: int, dtype: torch.dtype):
    """(grid, ROWS, BLOCK, ONE_PASS, num_warps) of a row-wise kernel over R rows of K elements:
    one program handles ROWS rows (ROWS > 1 only when rows are short), walking K in BLOCK chunks;
    a row that fits one chunk (ONE_PASS) is loaded once."""
    cap = max(16, MAX_BLOCK // 2 if dtype == torch.float64 else MAX_BLOCK)
    block = min(max(16, next_pow2(K)), cap)
    rows = max(1, min(ROW_TILE // block, next_pow2(R)))
    while rows > 1 and cdiv(R, rows) < MIN_PROGRAMS:
        rows //= 2
    num_warps = min(16, max(1, rows * block // 256))
    return (cdiv(R, rows),), rows, block, block >= K, num_warps


def assert_rows(h: torch.Tensor) -> None:
    """A 2-D float matrix with a contiguous last dimension (any row stride)."""
    assert h.dim() == 2 and h.dtype in FLOAT_DTYPES, (h.shape, h.dtype)
    assert h.size(1) <= 1 or h.stride(1) == 1, h.stride()


def as_rows(t: torch.Tensor) -> torch.Tensor:
    """The rows of t [..., K] as a 2-D view [rows, K] (t itself when 2-D; N-D t must be contiguous)."""
    if t.dim() == 2:
        return t
    assert t.dim() >= 1 and t.is_contiguous(), (t.shape, t.stride())
    return t.view(math.prod(t.shape[:-1]), t.shape[-1])


def assert_stat(v: torch.Tensor, h: torch.Tensor) -> None:
    """A contiguous vector of one accumulation-type value per row of h."""
    assert v.dim() == 1 and v.size(0) == h.size(0) and v.is_contiguous(), v.shape
    assert v.dtype == acc_dtype(h.dtype) and v.device == h.device, (v.dtype, v.device)


# ---------------------------------------------------------------------------------------------
# Device helpers
# ---------------------------------------------------------------------------------------------


@triton.jit
def row_ids(R, ROWS: tl.constexpr):
    """Row indices (int64) of this program, and their in-range mask."""
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    return rows, rows < R


@triton.jit
def col_ids(k0, K, rmask, BLOCK: tl.constexpr):
    """Column indices [1, BLOCK] of the chunk starting at k0, and the [ROWS, BLOCK] mask."""
    cols = k0 + tl.arange(0, BLOCK)
    return cols[None, :], rmask[:, None] & (cols < K)[None, :]


@triton.jit
def scalar(x, acc_ty: tl.constexpr):
    """A float64 launcher scalar in the accumulation type (rounded once, like the C++ cast)."""
    return tl.full([], x, tl.float64).to(acc_ty)


@triton.jit
def sqrt_rn(x):
    """Correctly rounded square root (the fast fp32 default is approximate)."""
    if x.dtype.is_fp64():
        return tl.sqrt(x)
    else:
        return tl.sqrt_rn(x)


@triton.jit
def div_rn(x, y):
    """Correctly rounded division."""
    if y.dtype.is_fp64():
        return x / y
    else:
        return tl.div_rn(x, y)


@triton.jit
def log1p(x):
    """log(1 + x) accurate for small x (Kahan's trick; libdevice is unavailable in the
    interpreter). NaN propagates."""
    u = 1.0 + x
    one = u == 1.0
    return tl.where(one, x, tl.log(u) * (x / tl.where(one, 1.0, u - 1.0)))


@triton.jit
def softplus(z):
    """max(z, 0) + log1p(exp(-|z|)): no overflow for large |z|; NaN propagates."""
    return tl.where(z > 0, z, 0.0) + log1p(tl.exp(-tl.abs(z)))


@triton.jit
def cast(x, dtype: tl.constexpr, RNE: tl.constexpr):
    """x (float32 / float64) in the storage dtype, rounded to nearest even (by hand for bfloat16
    when RNE: the interpreter's own cast truncates)."""
    if RNE and dtype == tl.bfloat16:
        u = x.to(tl.float32).to(tl.uint32, bitcast=True)
        r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
        r = tl.where(x != x, (u >> 16) | 0x40, r)
        return r.to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return x.to(dtype)
