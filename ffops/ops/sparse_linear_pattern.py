"""Index structures of a sparse weight: validation of a CSR pattern, its transpose (the CSC order
the backward walks), and patterns from masks or magnitudes.

A pattern is validated once, where it is made (``transpose_pattern``, ``SparseLinear``), so the
kernels can trust it: a bad index is a clear ``ValueError`` here, never a crash in a kernel.
"""

from typing import NamedTuple

import torch

from ffops._validation import check_index_range

INDEX_DTYPES = (torch.int32, torch.int64)


def csr_rows(crow: torch.Tensor) -> torch.Tensor:
    """The row index of every nonzero of a CSR pattern (int64 ``[nnz]``)."""
    counts = (crow[1:] - crow[:-1]).long()
    return torch.repeat_interleave(torch.arange(counts.numel(), device=crow.device), counts)


def dense_weight(values: torch.Tensor, crow: torch.Tensor, col: torch.Tensor, in_features: int) -> torch.Tensor:
    """The dense ``[out, in]`` weight with ``values`` at the pattern's positions and zeros elsewhere
    (differentiable w.r.t. ``values``)."""
    out_features = crow.numel() - 1
    flat = csr_rows(crow) * in_features + col.long()
    w = values.new_zeros(out_features * in_features)
    return w.index_put((flat,), values).view(out_features, in_features)


class TransposedPattern(NamedTuple):
    """W's pattern in CSC order: ``ptr [in + 1]``, ``row [nnz]`` (ascending within a column) and
    ``perm [nnz]`` (each nonzero's position in the CSR ``values``). Same index dtype as the CSR."""

    ptr: torch.Tensor
    row: torch.Tensor
    perm: torch.Tensor


def check_csr(crow: torch.Tensor, col: torch.Tensor, out_features: int, in_features: int, *, op: str) -> None:
    """Raise ``ValueError`` / ``TypeError`` naming the argument unless ``(crow, col)`` is a valid CSR
    pattern of an ``[out_features, in_features]`` matrix with sorted, unique columns per row."""
    for name, t in (("crow_indices", crow), ("col_indices", col)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in INDEX_DTYPES:
            raise TypeError(f"{op}: {name} must be int32 or int64, got {t.dtype}")
        if t.dim() != 1:
            raise ValueError(f"{op}: {name} must be 1-D, got shape {tuple(t.shape)}")
    if crow.dtype != col.dtype:
        raise TypeError(f"{op}: crow_indices and col_indices must have one dtype, got {crow.dtype} and {col.dtype}")
    if crow.device != col.device:
        raise ValueError(
            f"{op}: crow_indices and col_indices must be on one device, got {crow.device} and {col.device}"
        )
    if crow.numel() != out_features + 1:
        raise ValueError(
            f"{op}: crow_indices must have out_features + 1 = {out_features + 1} entries, got {crow.numel()}"
        )
    nnz = col.numel()
    if crow.dtype == torch.int32 and nnz >= 2**31:
        raise ValueError(f"{op}: {nnz} nonzeros need int64 indices")
    c = crow.long()
    if c[0].item() != 0 or c[-1].item() != nnz:
        raise ValueError(
            f"{op}: crow_indices must start at 0 and end at nnz = len(col_indices) = {nnz}, "
            f"got {c[0].item()} ... {c[-1].item()}"
        )
    if bool((c[1:] < c[:-1]).any()):
        raise ValueError(f"{op}: crow_indices must be non-decreasing")
    if nnz == 0:
        return
    cl = col.long()
    check_index_range(op, "col_indices", cl, in_features, "in_features")
    # within a row, each column must exceed the previous one (sorted and unique)
    step = cl[1:] - cl[:-1]
    row_start = torch.zeros(nnz, dtype=torch.bool, device=col.device)
    row_start[c[:-1][c[:-1] < nnz]] = True
    bad = (step <= 0) & ~row_start[1:]
    if bool(bad.any()):
        k = int(bad.nonzero()[0, 0]) + 1
        row = int(torch.searchsorted(c, torch.tensor(k, device=c.device), right=True)) - 1
        what = "duplicate" if step[k - 1] == 0 else "unsorted"
        raise ValueError(
            f"{op}: col_indices of row {row} are {what} (column {cl[k - 1].item()} then "
            f"{cl[k].item()}); each row needs strictly increasing column indices"
        )


def transpose_pattern(
    crow: torch.Tensor, col: torch.Tensor, in_features: int, *, op: str = "ffops.sparse"
) -> TransposedPattern:
    """Validate a CSR pattern and return its CSC order (what the backward kernel walks)."""
    check_csr(crow, col, crow.numel() - 1, in_features, op=op)
    rows = csr_rows(crow)
    # stable sort by column keeps rows ascending within each column
    perm = torch.sort(col.long(), stable=True).indices
    counts = torch.bincount(col.long(), minlength=in_features)
    ptr = torch.zeros(in_features + 1, dtype=torch.int64, device=col.device)
    torch.cumsum(counts, 0, out=ptr[1:])
    dt = crow.dtype
    return TransposedPattern(ptr.to(dt), rows[perm].to(dt), perm.to(dt))


def pattern_from_mask(mask: torch.Tensor, index_dtype: torch.dtype = torch.int32):
    """CSR ``(crow, col)`` of the True / nonzero entries of a 2-D mask, rows and columns ascending."""
    if mask.dim() != 2:
        raise ValueError(f"mask must be 2-D [out, in], got shape {tuple(mask.shape)}")
    mask = mask != 0
    counts = mask.sum(1)
    crow = torch.zeros(mask.shape[0] + 1, dtype=torch.int64, device=mask.device)
    torch.cumsum(counts, 0, out=crow[1:])
    col = mask.nonzero()[:, 1]
    return crow.to(index_dtype), col.to(index_dtype)


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep the ``round((1 - sparsity) * numel)`` largest-magnitude entries (ties broken by position)."""
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    n = weight.numel()
    keep = n - int(round(sparsity * n))
    mask = torch.zeros(n, dtype=torch.bool, device=weight.device)
    if keep > 0:
        mask[weight.detach().abs().flatten().float().topk(keep, sorted=False).indices] = True
    return mask.view_as(weight)
