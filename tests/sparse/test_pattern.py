"""CSR pattern validation and transposition: bad patterns are clear errors where they are made."""

import pytest
import torch

import ffops
from ffops.sparse import check_csr, magnitude_mask, pattern_from_mask, transpose_pattern


def _csr(rows, in_f=6, dtype=torch.int64):
    crow = [0]
    for r in rows:
        crow.append(crow[-1] + len(r))
    return torch.tensor(crow, dtype=dtype), torch.tensor([c for r in rows for c in r], dtype=dtype)


@pytest.mark.parametrize(
    "rows,message",
    [
        ([[0, 6]], r"col_indices must be in \[0, in_features = 6\)"),
        ([[-1, 2]], r"col_indices must be in \[0"),
        ([[3, 1]], "row 0 are unsorted"),
        ([[1, 2], [4, 4]], "row 1 are duplicate"),
    ],
)
def test_bad_columns_are_named(rows, message):
    crow, col = _csr(rows)
    with pytest.raises(ValueError, match=message):
        check_csr(crow, col, len(rows), 6, op="test")
    with pytest.raises(ValueError, match=message):
        ffops.nn.SparseLinear(6, len(rows), crow, col)
    with pytest.raises(ValueError, match=message):
        ffops.sparse_linear(torch.randn(2, 6), torch.randn(col.numel()), crow, col, None, len(rows))


def test_bad_row_pointers_and_lengths():
    crow, col = _csr([[0, 1], [2]])
    with pytest.raises(ValueError, match="out_features \\+ 1 = 4"):
        check_csr(crow, col, 3, 6, op="t")
    with pytest.raises(ValueError, match="non-decreasing"):
        check_csr(torch.tensor([0, 3, 2, 3]), torch.tensor([0, 1, 2]), 3, 6, op="t")
    with pytest.raises(ValueError, match="end at nnz"):
        check_csr(torch.tensor([0, 1, 2]), col, 2, 6, op="t")
    with pytest.raises(TypeError, match="int32 or int64"):
        check_csr(crow.float(), col, 2, 6, op="t")
    with pytest.raises(TypeError, match="one dtype"):
        check_csr(crow.int(), col, 2, 6, op="t")
    with pytest.raises(ValueError, match="one entry per nonzero"):
        ffops.sparse_linear(torch.randn(2, 6), torch.randn(2), crow, col, None, 2)
    with pytest.raises(ValueError, match="values must have shape"):
        ffops.nn.SparseLinear(6, 2, crow, col, values=torch.randn(5))


def test_unsorted_boundary_between_rows_is_fine():
    crow, col = _csr([[4, 5], [0, 1], [], [3]])  # columns restart at each row
    check_csr(crow, col, 4, 6, op="t")


def test_transpose_pattern_is_the_csc_order():
    keep = torch.rand(9, 7) < 0.4
    keep[3] = False
    keep[:, 2] = False
    crow, col = pattern_from_mask(keep)
    t = transpose_pattern(crow, col, 7)
    rows, cols = keep.nonzero(as_tuple=True)
    csc_rows, csc_cols = keep.t().nonzero(as_tuple=True)  # column-major order of the nonzeros
    assert torch.equal(t.row.long(), csc_cols)
    assert torch.equal(t.ptr.long(), torch.cat([torch.zeros(1, dtype=torch.long), keep.sum(0).cumsum(0)]))
    assert torch.equal(rows[t.perm.long()], csc_cols) and torch.equal(cols[t.perm.long()], csc_rows)
    assert t.ptr.dtype == t.row.dtype == t.perm.dtype == torch.int32


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.9, 1.0])
def test_magnitude_mask_keeps_the_largest(sparsity):
    w = torch.randn(20, 30)
    keep = magnitude_mask(w, sparsity)
    assert keep.sum().item() == 600 - round(sparsity * 600)
    if 0 < keep.sum() < 600:
        assert w.abs()[keep].min() >= w.abs()[~keep].max()
    with pytest.raises(ValueError, match="sparsity"):
        magnitude_mask(w, 1.5)
