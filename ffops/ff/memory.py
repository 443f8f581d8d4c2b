"""Measure the memory autograd saves for backward during one training step.

``saved_bytes_per_step`` counts every tensor saved for backward (``torch.autograd.graph.
saved_tensors_hooks``), deduplicated by storage, from the moment it is saved until autograd frees
it, and returns the peak. With per-layer backward the peak is one layer's worth, whatever the depth.
"""

import copy

import torch


class _Tracker:
    def __init__(self):
        self.live, self.current, self.peak = {}, 0, 0

    def add(self, t: torch.Tensor):
        storage = t.untyped_storage()
        key = (storage.device, storage.data_ptr())
        count, nbytes = self.live.get(key, (0, storage.nbytes()))
        if count == 0:
            self.current += nbytes
            self.peak = max(self.peak, self.current)
        self.live[key] = (count + 1, nbytes)
        return key

    def remove(self, key):
        count, nbytes = self.live[key]
        if count == 1:
            del self.live[key]
            self.current -= nbytes
        else:
            self.live[key] = (count - 1, nbytes)


class _Saved:
    """What autograd keeps in place of a saved tensor; released when autograd frees it."""

    __slots__ = ("key", "tensor", "tracker")

    def __init__(self, tensor, tracker):
        self.tensor, self.tracker = tensor, tracker
        self.key = tracker.add(tensor)

    def __del__(self):
        self.tracker.remove(self.key)


def saved_bytes_per_step(trainer, images: torch.Tensor, labels: torch.Tensor, *, restore: bool = True) -> int:
    """Peak bytes saved for backward during ``trainer.train_step(images, labels)`` (one global batch
    on the model's device), counting each storage once. With ``restore=True`` (default) the trainer's
    weights, optimizers and generators are put back afterwards, so the measurement changes nothing."""
    state = copy.deepcopy(trainer.state_dict()) if restore else None
    tracker = _Tracker()
    x = torch.as_tensor(images).reshape(len(images), -1).to(trainer.model.device, trainer.model.dtype)
    y = torch.as_tensor(labels).to(trainer.model.device)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: _Saved(t, tracker), lambda s: s.tensor):
        trainer.train_step(x, y)
    if state is not None:
        trainer.load_state_dict(state)
    return tracker.peak
