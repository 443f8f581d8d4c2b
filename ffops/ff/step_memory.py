"""Measure the memory autograd saves for backward during one training step.

``saved_bytes_per_step`` returns the peak of ffops.memory.SavedTensorTracker over one training step:
every tensor saved for backward, deduplicated by storage, from the moment it is saved until
autograd frees it. With per-layer backward the peak is one layer's worth, whatever the depth.
"""

import copy

import torch

from ffops.memory.measure import SavedTensorTracker


def saved_bytes_per_step(trainer, images: torch.Tensor, labels: torch.Tensor, *, restore: bool = True) -> int:
    """Peak bytes saved for backward during ``trainer.train_step(images, labels)`` (one global batch
    on the model's device), counting each storage once. With ``restore=True`` (default) the trainer's
    weights, optimizers and generators are put back afterwards, so the measurement changes nothing."""
    state = copy.deepcopy(trainer.state_dict()) if restore else None
    x = torch.as_tensor(images).reshape(len(images), -1).to(trainer.model.device, trainer.model.dtype)
    y = torch.as_tensor(labels).to(trainer.model.device)
    with SavedTensorTracker() as tracker:
        trainer.train_step(x, y)
    if state is not None:
        trainer.load_state_dict(state)
    return tracker.peak
