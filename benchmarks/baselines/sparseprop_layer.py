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

Its conv, ``sparseprop.modules.SparseConv2d(dense_weight, bias, padding, stride,
vectorizing_over_on)`` (``sparseprop/lib/sparse_conv2d*.cpp``: stride 1 or 2, square kernels, int
padding, no dilation or groups), keeps the weight's nonzeros in ``W_val`` with its own index tuple
``(W_OC, W_IC, W_X, W_Y)``, and runs either vectorized over the batch (activations permuted to
``[C, H, W, N]`` on the way in and out) or over the output width (``vectorizing_over_on``; its
strided forward always over the batch). :func:`sparseprop_conv2d` builds it the documented way,
``sparsify_conv2d_auto(conv, input_shape)``, which times one fwd+bwd of each mode on a random input of
that shape and keeps the faster. Its ``W_val`` order is its own: :func:`sparseprop_conv2d_values`
turns a ``W_val`` gradient into a dense weight (``from_sparse_format_conv2d``) and takes it at the
mask, in our CSR (o, c, i, j) order.
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


def sparseprop_conv2d(modules, conv: nn.Conv2d, input_shape: tuple, mask: torch.Tensor):
    """SparseProp's conv of ``conv`` (holding the masked weight; float32, CPU) by its
    ``sparsify_conv2d_auto(conv, input_shape)``, which picks the faster of its two vectorizing modes.

    Checks that ``conv`` is what SparseProp supports (square kernel, one padding and stride, stride
    1 or 2, no dilation or groups) and that its nonzeros are the mask's (a kept weight that is
    exactly zero would drop out of SparseProp's pattern). Returns the module (its bias is a copy).
    """
    (kh, kw), (sh, sw) = conv.kernel_size, conv.stride
    if (
        kh != kw
        or isinstance(conv.padding, str)  # "same" / "valid"
        or conv.padding[0] != conv.padding[1]
        or sh != sw
        or sh not in (1, 2)
        or conv.dilation != (1, 1)
        or conv.groups != 1
        or conv.padding_mode != "zeros"
    ):
        raise ValueError(f"sparseprop_conv2d: SparseProp's SparseConv2d does not support {conv}")
    layer = modules.sparsify_conv2d_auto(conv, tuple(input_shape))
    if layer.W_val.numel() != int(mask.sum()):
        raise ValueError(
            f"sparseprop_conv2d: SparseProp kept {layer.W_val.numel()} nonzeros, the mask {int(mask.sum())} "
            "(a kept weight is exactly zero)"
        )
    return layer


def sparseprop_conv2d_values(layer, grad_w_val: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A gradient of SparseProp's conv ``W_val`` (its order) as the values at ``mask``'s nonzeros in
    row-major (o, c, i, j) order, the order of ``ffops.nn.SparseConv2d.values``."""
    from sparseprop.modules.utils import from_sparse_format_conv2d  # (W_val, W_idx, shape) -> dense weight

    shape = (layer.OC, layer.IC, layer.K, layer.K)
    dense = from_sparse_format_conv2d(grad_w_val.detach().float().contiguous(), layer.W_idx, shape)
    return dense.to(mask.device)[mask]
