"""nn.Module layers built on ffops' fused ops."""

from ffops.nn.ff import FFConv2d, FFLayerOutput, FFLinear, OverlayRows
from ffops.nn.memory import FewBitAct, MSLayerNorm, MSRMSNorm, RandomizedLinear, ReGELU2, ReSiLU2
from ffops.nn.sparse import SparseConv2d, SparseLinear

__all__ = [
    "FFConv2d",
    "FFLayerOutput",
    "FFLinear",
    "FewBitAct",
    "MSLayerNorm",
    "MSRMSNorm",
    "OverlayRows",
    "RandomizedLinear",
    "ReGELU2",
    "ReSiLU2",
    "SparseConv2d",
    "SparseLinear",
]
