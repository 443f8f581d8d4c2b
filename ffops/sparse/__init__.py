"""Sparse-weight training (SparseProp-style sparse backprop).

* ``ffops.sparse_linear`` — the op; ``ffops.nn.SparseLinear`` / ``ffops.nn.SparseConv2d`` — layers.
* ``sparsify(model, sparsity, example_input=x)`` / ``densify(model)`` — swap a model's layers in place
  (with ``example_input``, only where the sparse layer is measured faster: ``ffops.sparse.speed``).
* ``transpose_pattern``, ``pattern_from_mask``, ``magnitude_mask``, ``check_csr`` — index structures.
"""

from ffops.ops.sparse_linear_pattern import (
    TransposedPattern,
    check_csr,
    magnitude_mask,
    pattern_from_mask,
    transpose_pattern,
)
from ffops.sparse.convert import LayerChange, SparsifyReport, densify, sparsify
from ffops.sparse.speed import LayerTiming

__all__ = [
    "LayerChange",
    "LayerTiming",
    "SparsifyReport",
    "TransposedPattern",
    "check_csr",
    "densify",
    "magnitude_mask",
    "pattern_from_mask",
    "sparsify",
    "transpose_pattern",
]
