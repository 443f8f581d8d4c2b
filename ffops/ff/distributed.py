"""Data-parallel Forward-Forward with ``torch.nn.parallel.DistributedDataParallel``.

FF's losses are local, so each layer can be wrapped in its *own* DDP: a layer's ``loss.backward()``
allreduces that layer's gradients right away, and its saved tensors are freed before the next
layer runs (memory does not grow with depth). Every rank sees the same global batch order (same
seed), draws the random numbers of the *global* batch (negative labels, Gumbel noise, hybrid
masks) and keeps its contiguous shard, so training matches one process on the global batch: the
losses are means, and DDP averages the equal-size shards' gradients into the full-batch gradient.
"""

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` when torch.distributed is not initialized."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_bounds(n: int, rank: int, world_size: int, *, exact: bool = True) -> tuple[int, int]:
    """The ``[start, stop)`` rows of ``n`` owned by ``rank``: contiguous, in rank order.

    ``exact=True`` (training batches) requires ``n`` divisible by ``world_size`` (equal shards keep the
    averaged gradient equal to the full batch's); otherwise the first ranks take one row more."""
    if exact and n % world_size:
        raise ValueError(f"batch_size ({n}) must be divisible by the world size ({world_size}) under DDP")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def wrap(module: nn.Module, **ddp_kwargs) -> DistributedDataParallel:
    """``DistributedDataParallel(module)``; on CUDA with the module's device as ``device_ids``."""
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("ddp=True needs torch.distributed initialized (dist.init_process_group) first")
    device = next(module.parameters()).device
    if device.type == "cuda":
        ddp_kwargs.setdefault("device_ids", [device.index])
    return DistributedDataParallel(module, **ddp_kwargs)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks in place (a no-op without torch.distributed); returns ``t``."""
    if world()[1] > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t
