"""Pure-torch specification of the sparse linear layer (SpMM forward, SpMM + SDDMM backward).

The kernel-level functions use the kernels' feature-major layout (``xt [in, batch]``) and the
index structure of csrc/ops.cpp; ``sparse_linear`` is the public op: the dense masked layer
``x @ W^T + b`` with ``W`` scattered from ``values``, so autograd gives ``dW`` at the nonzeros.
"""

import torch

from ffops.ops._common import stat_dtype
from ffops.ops.sparse_linear_pattern import csr_rows, dense_weight


def sparse_linear(x, values, crow, col, bias, out_features: int):
    """``x @ W^T + b`` for ``x [..., in]``; W dense-from-CSR, computed in x's dtype by torch."""
    w = dense_weight(values, crow, col, x.shape[-1])
    assert w.shape[0] == out_features
    return torch.nn.functional.linear(x, w, bias)


def sparse_linear_fwd(xt, values, crow, col, bias):
    """Kernel spec: ``yt [N, B] = W @ xt (+ bias[:, None])`` with fp32 (fp64) accumulation."""
    acc = stat_dtype(xt.dtype)
    w = dense_weight(values.to(acc), crow, col, xt.shape[0])
    yt = w @ xt.to(acc)
    if bias is not None:
        yt = yt + bias.to(acc)[:, None]
    return yt.to(xt.dtype)


def sparse_linear_bwd(dyt, xt, values, t_ptr, t_row, t_perm, need_dx: bool, need_dvalues: bool):
    """Kernel spec: ``dxt = W^T @ dyt``; ``dvalues[k] = <dyt[row_k], xt[col_k]>`` (see csrc/ops.cpp)."""
    acc = stat_dtype(xt.dtype)
    in_features = xt.shape[0]
    cols = csr_rows(t_ptr)  # the column of every nonzero, in CSC order
    rows = t_row.long()
    dxt = dyt.new_empty(0)
    dvalues = values.new_empty(0)
    if need_dx:
        wt = values.new_zeros(in_features * dyt.shape[0], dtype=acc)
        wt = wt.index_put((cols * dyt.shape[0] + rows,), values[t_perm.long()].to(acc))
        dxt = (wt.view(in_features, dyt.shape[0]) @ dyt.to(acc)).to(dyt.dtype)
    if need_dvalues:
        dots = (dyt.to(acc)[rows] * xt.to(acc)[cols]).sum(1)
        dvalues = values.new_empty(values.shape)
        dvalues[t_perm.long()] = dots.to(values.dtype)
    return dxt, dvalues
