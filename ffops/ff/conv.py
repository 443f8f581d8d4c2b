"""``FFConvNet``: a convolutional Forward-Forward net of channel-wise competitive (CwC) blocks.

After CwComp (Papachristodoulou et al., "Convolutional Channel-wise Competitive Learning for the
Forward-Forward Algorithm", AAAI 2024): each block is ``conv -> ReLU -> max-pool 2x2 (optional) ->
BatchNorm``; its ``C`` output channels are split into ``num_classes`` groups, each group's goodness
is the mean square of its channels, and the block's local loss is the cross-entropy of the groups'
goodness against the label (``ffops.cwc_loss``): no negative samples, no label overlay. Every block
receives the detached output of the block below, so no gradient crosses blocks. Prediction sums the
groups' goodness over the blocks and takes the argmax (CwComp's goodness-accumulation predictor);
``predict(x, "last")`` uses the last block's goodness alone (CwComp's "GA" predictor), and
``predict(x, "head")`` a linear softmax head trained on the detached output of the last block
(CwComp's "Sf" predictor; no gradient reaches the blocks from it either).

``objective="symba"`` trains the same blocks the way of Hinton's FF instead: the label is overlaid
on the image (Hinton, "The Forward-Forward Algorithm: Some Preliminary Investigations", 2022, sec. 3.3;
a conv net would see label pixels at one corner only, so here it is ``num_classes`` one-hot planes
appended to the input channels), each block's goodness is per sample (the mean of ``y^2`` over all
channels and positions), and the loss is SymBa's (Lee & Song, "Symmetric Backpropagation-free
Learning", 2023): ``softplus(-alpha * (G_pos - G_neg))`` for each image with its label (positive) and
with a wrong label (negative), both in one batch. The output handed on is also divided by its
per-sample RMS (Hinton's length normalization: the next block cannot read the goodness off its
input). Prediction runs the net once per label and takes the label of the largest goodness.

CwComp's CFSE net for 28 x 28 images is ``FFConvNet(1, [20, 80, 240, 480], groups=[1, 10, 1, 10],
pool=[False, True, False, True])``: grouped convolutions (one group per class) alternate with full
ones, and pooling follows the grouped ones.
"""

import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from ffops.ff.labels import check_labels
from ffops.ff.negatives import random_wrong_labels
from ffops.ops.cwc_block import cwc_block


class CwCBlock(nn.Module):
    """``conv -> ReLU -> max-pool 2x2 (if pool) -> BatchNorm`` and the class-group goodness of its output.

    Everything after the convolution is one fused op, ``ffops.cwc_block`` (channels_last); the norm's
    parameters and running statistics live in ``self.norm`` (an ``nn.BatchNorm2d``, eps 1e-4 as
    CwComp's). ``out_channels`` must be a multiple of ``num_classes`` (one group of channels per
    class; ``num_classes=1``: one goodness per sample); ``groups`` is the convolution's (CwComp's
    CFSE blocks use one group per class).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_classes: int,
        *,
        kernel_size: int = 3,
        padding: int | None = None,
        groups: int = 1,
        pool: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if out_channels % num_classes:
            raise ValueError(
                f"CwCBlock: out_channels ({out_channels}) must be a multiple of num_classes ({num_classes})"
            )
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"CwCBlock: groups ({groups}) must divide in_channels ({in_channels}) and out_channels ({out_channels})"
            )
        padding = kernel_size // 2 if padding is None else padding
        self.num_classes = num_classes
        self.pool = bool(pool)
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=padding, groups=groups, device=device, dtype=dtype
        )
        self.norm = nn.BatchNorm2d(out_channels, eps=1e-4, device=device, dtype=dtype)

    def forward_goodness(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y, G)``: the block's output and its group goodness ``[N, num_classes]`` (float32 for
        low-precision x); ``cross_entropy(G, labels)`` is the block's CwC loss."""
        norm = self.norm
        if norm.training and norm.track_running_stats:
            norm.num_batches_tracked.add_(1)
        return cwc_block(
            self.conv(x),
            norm.weight,
            norm.bias,
            norm.running_mean,
            norm.running_var,
            num_classes=self.num_classes,
            pool=self.pool,
            training=norm.training,
            momentum=norm.momentum,
            eps=norm.eps,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_goodness(x)[0]


PREDICTORS = ("goodness", "last", "head")
OBJECTIVES = ("cwc", "symba")


class FFConvNet(nn.Module):
    """A stack of CwC blocks: ``FFConvNet(1, [20, 80, 240])`` pools after every block but the first;
    see the module docstring for CwComp's CFSE channel plan.

    Args:
        in_channels: channels of the input images (1 for MNIST / Fashion-MNIST).
        channels: output channels of each block, each a multiple of ``num_classes``.
        num_classes: classes = channel groups per block.
        kernel_size: of every convolution (same padding).
        groups: the convolution groups of each block (default: 1 everywhere).
        pool: one bool per block (default: no pooling in the first block, 2x2 max-pool after the rest).
        image_size: ``(height, width)`` or one int for square inputs; needed only by ``head``.
        head: add a linear softmax head on the flattened, detached output of the last block
            (scaled by 1 / sqrt(features)); objective ``cwc`` only.
        objective: ``cwc`` (channel-wise competitive, CwComp's CwC_CE) or ``symba`` (label overlay,
            per-sample goodness, SymBa's loss with scale ``alpha``); see the module docstring.
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        *,
        num_classes: int = 10,
        kernel_size: int = 3,
        groups: Sequence[int] | None = None,
        pool: Sequence[bool] | None = None,
        image_size: int | Sequence[int] | None = None,
        head: bool = False,
        objective: str = "cwc",
        alpha: float = 8.0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"FFConvNet: objective must be one of {OBJECTIVES}, got {objective!r}")
        if not (isinstance(alpha, int | float) and not isinstance(alpha, bool) and math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"FFConvNet: alpha must be a finite float > 0, got {alpha!r}")
        if objective == "symba" and head:
            raise ValueError("FFConvNet: head=True needs objective='cwc' (a symba net predicts by goodness per label)")
        channels = list(channels)
        if not channels or any(isinstance(c, bool) or not isinstance(c, int) or c <= 0 for c in channels):
            raise ValueError(f"FFConvNet: channels must be a non-empty list of positive ints, got {channels}")
        pool = [i > 0 for i in range(len(channels))] if pool is None else [bool(p) for p in pool]
        if len(pool) != len(channels):
            raise ValueError(f"FFConvNet: pool needs one bool per block ({len(channels)}), got {len(pool)}")
        groups = [1] * len(channels) if groups is None else list(groups)
        if len(groups) != len(channels) or any(isinstance(g, bool) or not isinstance(g, int) or g <= 0 for g in groups):
            raise ValueError(f"FFConvNet: groups needs one positive int per block ({len(channels)}), got {groups}")
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        if head and image_size is None:
            raise ValueError("FFConvNet: head=True needs image_size (the head's input size depends on it)")
        self.config = {
            "in_channels": in_channels,
            "channels": channels,
            "num_classes": num_classes,
            "kernel_size": kernel_size,
            "groups": groups,
            "pool": pool,
            "image_size": None if image_size is None else list(image_size),
            "head": head,
            "objective": objective,
            "alpha": float(alpha),
        }
        self.num_classes = num_classes
        self.objective, self.alpha = objective, float(alpha)
        # symba: the first block also sees the label planes; one goodness group (per sample)
        overlay = num_classes if objective == "symba" else 0
        goodness_groups = num_classes if objective == "cwc" else 1
        ins = [in_channels + overlay] + channels[:-1]
        self.blocks = nn.ModuleList(
            CwCBlock(i, o, goodness_groups, kernel_size=kernel_size, groups=g, pool=p, device=device, dtype=dtype)
            for i, o, g, p in zip(ins, channels, groups, pool)
        )
        self.head = None
        if head:
            height, width = image_size
            for p in pool:  # same padding keeps the size; each 2x2 pool halves it (floor)
                height, width = (height // 2, width // 2) if p else (height, width)
            if height == 0 or width == 0:
                raise ValueError(f"FFConvNet: image_size {tuple(image_size)} is pooled to nothing by {pool}")
            self.head = nn.Linear(channels[-1] * height * width, num_classes, device=device, dtype=dtype)

    @classmethod
    def from_config(cls, config: dict, **kwargs) -> "FFConvNet":
        """The net ``FFConvNet(**config)`` (the ``config`` attribute of a net; e.g. from a checkpoint)."""
        config = dict(config)
        return cls(config.pop("in_channels"), config.pop("channels"), **config, **kwargs)

    def overlay(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``x`` with the one-hot planes of ``labels`` appended to its channels (the input of a
        ``symba`` net's first block), in ``x``'s memory format."""
        labels = check_labels("FFConvNet.overlay", labels, x.shape[0], self.num_classes, x.device)
        planes = nn.functional.one_hot(labels, self.num_classes).to(x.dtype)[:, :, None, None]
        out = torch.cat([x, planes.expand(-1, -1, *x.shape[2:])], 1)
        return out.contiguous(memory_format=torch.channels_last) if _is_channels_last(x) else out

    def _hand_on(self, y: torch.Tensor) -> torch.Tensor:
        """The block output the next block receives: detached, and for ``symba`` divided by its
        per-sample RMS, ``y / (sqrt(mean(y^2)) + 1e-8)`` as ``ffops.ff_normalize(y, "rms")``."""
        y = y.detach()
        if self.objective == "symba":
            rms = y.float().square().mean((1, 2, 3), keepdim=True).sqrt_()
            y = (y / (rms + 1e-8)).to(y.dtype)
        return y

    def _outputs_and_goodness(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Each block's output and goodness (``[N, num_classes]`` for cwc, ``[N, 1]`` for symba; a
        symba ``x`` carries its label planes already); every block gets the handed-on output below."""
        outs, goodness = [], []
        for block in self.blocks:
            y, g = block.forward_goodness(x)
            outs.append(y)
            goodness.append(g)
            x = self._hand_on(y)
        return outs, goodness

    def block_outputs(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Each block's output (``symba``: for ``x`` overlaid with ``labels``); every block gets the
        detached (``symba``: and normalized) output of the one below."""
        if (labels is None) != (self.objective == "cwc"):
            raise ValueError(
                f"FFConvNet.block_outputs: labels are {'not ' if self.objective == 'cwc' else ''}"
                f"taken by a net of objective {self.objective!r}"
            )
        return self._outputs_and_goodness(x if labels is None else self.overlay(x, labels))[0]

    def iter_losses(
        self, x: torch.Tensor, labels: torch.Tensor, negative_labels: torch.Tensor | None = None
    ) -> Iterator[torch.Tensor]:
        """Yields the local loss of every block in turn, and last the head's cross-entropy if the net
        has a head. ``cwc``: ``cross_entropy(G, labels)`` (CwComp's CwC_CE). ``symba``: the images
        with ``labels`` (positive) and with ``negative_labels`` (default: uniformly random wrong
        labels) run as one batch, and the loss is ``mean(softplus(-alpha * (G_pos - G_neg)))``.

        A block runs when its loss is asked for, on the detached output of the block below: calling
        ``backward`` on each loss as it comes frees that block's saved tensors before the next block
        runs, so the memory saved for backward stays one block's worth whatever the depth."""
        if self.objective == "cwc":
            if negative_labels is not None:
                raise ValueError("FFConvNet.iter_losses: negative_labels are for objective 'symba', not 'cwc'")
            for block in self.blocks:
                y, g = block.forward_goodness(x)
                yield nn.functional.cross_entropy(g, labels)
                x = self._hand_on(y)
            if self.head is not None:
                yield nn.functional.cross_entropy(self._head_logits(x), labels)
            return
        n = x.shape[0]
        if negative_labels is None:
            negative_labels = random_wrong_labels(labels, self.num_classes)
        x = torch.cat([self.overlay(x, labels), self.overlay(x, negative_labels)])
        for block in self.blocks:
            y, g = block.forward_goodness(x)
            yield nn.functional.softplus(-self.alpha * (g[:n, 0] - g[n:, 0])).mean()
            x = self._hand_on(y)

    def losses(
        self, x: torch.Tensor, labels: torch.Tensor, negative_labels: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """All of ``iter_losses``. ``sum(losses).backward()`` trains every block on its own loss only
        (the blocks' and the head's inputs are detached), so one optimizer over all parameters is
        block-local training."""
        return list(self.iter_losses(x, labels, negative_labels))

    def _head_logits(self, y: torch.Tensor) -> torch.Tensor:
        # features scaled by 1/sqrt(F): an Adam step (~lr per weight) then moves a logit by
        # O(lr * sqrt(F)), not O(lr * F), so one learning rate suits the blocks and a wide head
        return self.head(y.flatten(1) * (1.0 / math.sqrt(self.head.in_features)))

    @torch.no_grad()
    def block_goodness(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each block's goodness per class ``[N, num_classes]`` (float32 for low-precision x): the
        class groups' goodness (``cwc``), or the goodness of ``x`` overlaid with each label
        (``symba``: one pass of the net per label)."""
        if self.objective == "cwc":
            return [g.float() for g in self._outputs_and_goodness(x)[1]]
        per_label = []
        for c in range(self.num_classes):
            labels = torch.full((x.shape[0],), c, dtype=torch.long, device=x.device)
            per_label.append(self._outputs_and_goodness(self.overlay(x, labels))[1])
        return [torch.cat([g[b].float() for g in per_label], 1) for b in range(len(self.blocks))]

    def goodness(self, x: torch.Tensor) -> torch.Tensor:
        """The goodness per class summed over blocks, ``[N, num_classes]``."""
        return torch.stack(self.block_goodness(x)).sum(0)

    @torch.no_grad()
    def scores(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every predictor's class scores ``[N, num_classes]`` (float32): ``goodness`` (summed over
        blocks), ``last`` (the last block's goodness), ``head`` (the head's logits, if any), and
        ``block_<i>`` (block i's goodness alone, 1-based). One pass for ``cwc``, one per label for
        ``symba``."""
        if self.objective == "cwc":
            outs, goodness = self._outputs_and_goodness(x)
            per_block = [g.float() for g in goodness]
        else:
            per_block = self.block_goodness(x)
        scores = {"goodness": torch.stack(per_block).sum(0), "last": per_block[-1]}
        if self.head is not None:
            scores["head"] = self._head_logits(outs[-1]).float()
        scores.update({f"block_{b + 1}": g for b, g in enumerate(per_block)})
        return scores

    def predict(self, x: torch.Tensor, method: str = "goodness") -> torch.Tensor:
        """Class of each image: the argmax of ``method``'s scores (see ``scores``)."""
        if method not in PREDICTORS:
            raise ValueError(f"FFConvNet.predict: method must be one of {PREDICTORS}, got {method!r}")
        if method == "head" and self.head is None:
            raise ValueError("FFConvNet.predict: method 'head' needs a net built with head=True")
        return self.scores(x)[method].argmax(1)


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
