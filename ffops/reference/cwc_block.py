"""The epilogue of a channel-wise competitive (CwC) conv FF block in plain torch (the specification).

After the convolution ``z`` of a CwComp block (Papachristodoulou et al., AAAI 2024, their
``Conv_Layer.forward`` and ``CwC_CE`` criterion): ``p = max_pool2d(relu(z), 2)`` (or ``relu(z)``
without pooling), ``y = batch_norm(p)`` (batch statistics in training, running ones otherwise; the
running statistics updated in place as ``torch.nn.BatchNorm2d`` does), and the class-group goodness
``G[n, k]`` = mean of ``y^2`` over the channels of group ``k`` and all positions. Low-precision ``z``
is computed in float32; ``y`` is returned in ``z``'s dtype, ``G`` in float32 (float64 for float64).
"""

import torch
import torch.nn.functional as F


def cwc_block(
    z: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    num_classes: int,
    *,
    pool: bool = True,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y, G)`` of the block epilogue on the convolution output ``z`` ``[N, C, H, W]``."""
    acc = z if z.dtype in (torch.float32, torch.float64) else z.float()
    p = F.relu(acc)
    if pool:
        p = F.max_pool2d(p, 2)
    # running statistics in the compute dtype (batch_norm takes one dtype), written back after
    stats = [None if s is None else s.to(acc.dtype) for s in (running_mean, running_var)]
    y = F.batch_norm(p, *stats, weight.to(acc.dtype), bias.to(acc.dtype), training, momentum, eps)
    for running, computed in zip((running_mean, running_var), stats):
        if running is not None and computed is not running:
            running.copy_(computed)
    g = y.reshape(len(y), num_classes, -1).square().mean(2)
    return y.to(z.dtype), g
