"""ffops: fused Triton and C++/CUDA kernels for Forward-Forward, sparse-backprop and
memory-lean training, exposed as PyTorch ops with autograd.

Backends (see ``ffops.set_backend``): ``auto`` (default), ``reference``, ``cpu``, ``cuda``, ``triton``.
"""

__version__ = "0.1.0"

from ffops._backend import (
    BACKENDS,
    BackendUnavailableError,
    available,
    get_backend,
    set_backend,
    use_backend,
)
from ffops.ops.cwc_block import cwc_block
from ffops.ops.ff_linear import ff_linear, ff_linear_overlay
from ffops.ops.goodness import cwc_loss, ff_loss, ff_normalize, goodness, goodness_and_normalize
from ffops.ops.ms_norm import ms_layernorm, ms_rmsnorm
from ffops.ops.packed_act import fewbit, regelu2, resilu2
from ffops.ops.randomized_linear import randomized_linear
from ffops.ops.sparse_linear import sparse_linear

__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "available",
    "cwc_block",
    "cwc_loss",
    "fewbit",
    "ff_linear",
    "ff_linear_overlay",
    "ff_loss",
    "ff_normalize",
    "get_backend",
    "goodness",
    "goodness_and_normalize",
    "ms_layernorm",
    "ms_rmsnorm",
    "randomized_linear",
    "regelu2",
    "resilu2",
    "set_backend",
    "sparse_linear",
    "use_backend",
]

# the families' tools as attributes: ffops.memory.patch, ffops.nn.ReGELU2, ffops.sparse.sparsify, ...
from ffops import memory, nn, sparse  # noqa: F401
