"""Sparse-weight training (SparseProp-style sparse backprop).

* ``ffops.sparse_linear`` — the op; ``ffops.nn.SparseLinear`` / ``ffops.nn.SparseConv2d`` — layers.
* ``sparsify(model, sparsity)`` / ``densify(model)`` — swap a model's layers in place.
* ``transpose_pattern``, ``pattern_from_mask``, ``magnitude_mask``, ``check_csr`` — index structures.
"""

from ffops.sparse.pattern import (
    TransposedPattern,
    check_csr,
    magnitude_mask,
    pattern_from_mask,
    transpose_pattern,
)

__all__ = [
    "LayerChange",
    "SparsifyReport",
    "TransposedPattern",
    "check_csr",
    "densify",
    "magnitude_mask",
    "pattern_from_mask",
    "sparsify",
    "transpose_pattern",
]


def __getattr__(name):
    # convert imports ffops.nn, which imports this package: load it on first use
    if name in ("sparsify", "densify", "SparsifyReport", "LayerChange"):
        from ffops.sparse import convert

        return getattr(convert, name)
    raise AttributeError(f"module 'ffops.sparse' has no attribute {name!r}")
