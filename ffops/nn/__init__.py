"""nn.Module layers built on ffops' fused ops."""

from ffops.nn.ff import FFConv2d, FFLayerOutput, FFLinear

__all__ = ["FFConv2d", "FFLayerOutput", "FFLinear"]
