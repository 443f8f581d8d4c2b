"""SparseProp (``pip install sparseprop``, Nikdan et al., ICML 2023) as a benchmark contender.

SparseProp's ``sparseprop.modules.SparseLinear(dense_weight, bias)`` keeps the weight's nonzeros as
CSR (``scipy.sparse.csr_matrix`` of the dense weight: int32 ``indptr`` / ``indices`` in
``W_idx``, the values in the parameter ``W_val``) and runs its own AVX2 + OpenMP kernels
(``sparseprop/lib/sparse_linear.cpp``): the forward is an SpMM on feature-major activations
(``x^T``, transposed on the way in and out), the backward one pass over the nonzeros that forms
``dX`` and ``dW_val`` together (OpenMP work-sharing over the nonzeros of one row at a time).

OpenMP reads its thread count from ``OMP_NUM_THREADS`` when the runtime initializes, so the
variable must be set before torch (whose libgomp SparseProp shares) or sparseprop is imported;
``sparseprop.set_num_threads`` only sets that variable. :func:`import_sparseprop` imports it or
says why not.

What is aligned here: SparseProp builds its pattern from the dense weight's nonzeros, so a masked
weight whose kept entries include an exact zero would get fewer nonzeros than the mask. The layer
is built the documented way (from the masked dense weight) and then given the mask's exact CSR
pattern and values, so that every contender computes with the same nonzeros.
"""

import torch
from torch import nn


def import_sparseprop():
    """``(sparseprop.modules, None)``, or ``(None, reason)`` when it cannot be imported."""
    try:
        from sparseprop import modules
    except ImportError as exc:  # not installed, or its extension does not load
        return None, f"{type(exc).__name__}: {exc}"
    return modules, None


def sparseprop_linear(
    modules,
    masked_weight: torch.Tensor,
    bias: torch.Tensor | None,
    crow: torch.Tensor,
    col: torch.Tensor,
    values: torch.Tensor,
):
    """A ``sparseprop.modules.SparseLinear`` with exactly the CSR pattern ``(crow, col)`` and ``values``.

    ``masked_weight`` is the dense weight with zeros off the pattern (float32, CPU); ``bias`` is
    copied into a fresh parameter. Returns the module.
    """
    layer = modules.SparseLinear(
        dense_weight=masked_weight.detach().float().clone(),
        bias=None if bias is None else nn.Parameter(bias.detach().float().clone()),
    )
    idx_n, idx_m = layer.W_idx
    crow32, col32 = crow.to(torch.int32).contiguous(), col.to(torch.int32).contiguous()
    if not (torch.equal(idx_n, crow32) and torch.equal(idx_m, col32)):
        layer.W_idx = (crow32, col32)
    with torch.no_grad():
        if layer.W_val.shape != values.shape:
            layer.W_val = nn.Parameter(values.detach().float().clone())
        else:
            layer.W_val.copy_(values)
    return layer
