"""``FFConvNet``: a convolutional Forward-Forward net of channel-wise competitive (CwC) blocks.

After CwComp (Papachristodoulou et al., "Convolutional Channel-wise Competitive Learning for the
Forward-Forward Algorithm", AAAI 2024): each block is ``conv -> ReLU -> max-pool 2x2 (optional) ->
BatchNorm``; its ``C`` output channels are split into ``num_classes`` groups, each group's goodness
is the mean square of its channels, and the block's local loss is the cross-entropy of the groups'
goodness against the label (``ffops.cwc_loss``): no negative samples, no label overlay. Every block
receives the detached output of the block below, so no gradient crosses blocks. Prediction sums the
groups' goodness over the blocks and takes the argmax (CwComp's goodness-accumulation predictor).
"""

import math
from collections.abc import Sequence

import torch
from torch import nn

from ffops.ops.goodness import cwc_loss, goodness


class CwCBlock(nn.Module):
    """``conv -> ReLU -> max-pool 2x2 (if pool) -> BatchNorm`` with the CwC loss on its output.

    ``out_channels`` must be a multiple of ``num_classes`` (one group of channels per class).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_classes: int,
        *,
        kernel_size: int = 3,
        padding: int | None = None,
        pool: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if out_channels % num_classes:
            raise ValueError(
                f"CwCBlock: out_channels ({out_channels}) must be a multiple of num_classes ({num_classes})"
            )
        padding = kernel_size // 2 if padding is None else padding
        self.num_classes = num_classes
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, device=device, dtype=dtype)
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()
        self.norm = nn.BatchNorm2d(out_channels, eps=1e-4, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.pool(torch.relu(self.conv(x))))

    def loss(self, y: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cwc_loss, G)`` of this block's output ``y``; ``G`` is ``[N, num_classes]``."""
        return cwc_loss(y, labels, self.num_classes, return_goodness=True)


class FFConvNet(nn.Module):
    """A stack of CwC blocks: ``FFConvNet(1, [20, 80, 240, 480])`` is CwComp's channel plan for
    28 x 28 images (pooling after every block but the first, as ``pool`` says).

    Args:
        in_channels: channels of the input images (1 for MNIST / Fashion-MNIST).
        channels: output channels of each block, each a multiple of ``num_classes``.
        num_classes: classes = channel groups per block.
        kernel_size: of every convolution (same padding).
        pool: one bool per block (default: no pooling in the first block, 2x2 max-pool after the rest).
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        *,
        num_classes: int = 10,
        kernel_size: int = 3,
        pool: Sequence[bool] | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        channels = list(channels)
        if not channels or any(isinstance(c, bool) or not isinstance(c, int) or c <= 0 for c in channels):
            raise ValueError(f"FFConvNet: channels must be a non-empty list of positive ints, got {channels}")
        pool = [i > 0 for i in range(len(channels))] if pool is None else list(pool)
        if len(pool) != len(channels):
            raise ValueError(f"FFConvNet: pool needs one bool per block ({len(channels)}), got {len(pool)}")
        self.num_classes = num_classes
        ins = [in_channels] + channels[:-1]
        self.blocks = nn.ModuleList(
            CwCBlock(i, o, num_classes, kernel_size=kernel_size, pool=p, device=device, dtype=dtype)
            for i, o, p in zip(ins, channels, pool)
        )

    def block_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each block's output; every block gets the detached output of the one below."""
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
            x = x.detach()
        return outs

    def losses(self, x: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
        """The local loss of every block. ``sum(losses).backward()`` trains every block on its own
        loss only (the blocks' inputs are detached), so one optimizer over all parameters is
        block-local training."""
        return [block.loss(y, labels)[0] for block, y in zip(self.blocks, self.block_outputs(x))]

    @torch.no_grad()
    def block_goodness(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each block's group goodness ``[N, num_classes]`` (float32 for low-precision x)."""
        return [
            goodness(
                y.reshape(len(y), self.num_classes, math.prod(y.shape[1:]) // self.num_classes), "mean", dims=(2,)
            ).float()
            for y in self.block_outputs(x)
        ]

    def goodness(self, x: torch.Tensor) -> torch.Tensor:
        """The groups' goodness summed over blocks, ``[N, num_classes]``."""
        return torch.stack(self.block_goodness(x)).sum(0)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class of each image: the argmax of the goodness summed over blocks."""
        return self.goodness(x).argmax(1)
