"""Measure the memory autograd saves for backward during one training step.

``SavedTensorTracker`` counts every tensor saved for backward (``torch.autograd.graph.
saved_tensors_hooks``), deduplicated by storage, from the moment it is saved until autograd frees
it; ``saved_bytes_per_step`` returns its peak over one training step. With per-layer backward the peak is one layer's worth, whatever the depth.
"""

import copy

import torch


class SavedTensorTracker(torch.autograd.graph.saved_tensors_hooks):
    """Context manager: bytes of the tensors autograd saves for backward inside it, each storage
    counted once (a saved view counts its whole storage). ``peak``: the most alive at once (a saved
    tensor dies when autograd frees its graph, e.g. at a layer's own backward); ``total``: all that
    was saved over the region (what one backward at the end would keep alive)."""

    def __init__(self):
        super().__init__(lambda t: _Saved(t, self), lambda saved: saved.tensor)
        self._live, self.current, self.peak, self.total = {}, 0, 0, 0

    def __enter__(self):
        super().__enter__()
        return self

    def _add(self, t: torch.Tensor):
        storage = t.untyped_storage()
        key = (storage.device, storage.data_ptr())
        count, nbytes = self._live.get(key, (0, storage.nbytes()))
        if count == 0:
            self.current += nbytes
            self.total += nbytes
            self.peak = max(self.peak, self.current)
        self._live[key] = (count + 1, nbytes)
        return key

    def _remove(self, key):
        count, nbytes = self._live[key]
        if count == 1:
            del self._live[key]
            self.current -= nbytes
        else:
            self._live[key] = (count - 1, nbytes)


class _Saved:
    """What autograd keeps in place of a saved tensor; released when autograd frees it."""

    __slots__ = ("key", "tensor", "tracker")

    def __init__(self, tensor, tracker):
        self.tensor, self.tracker = tensor, tracker
        self.key = tracker._add(tensor)

    def __del__(self):
        self.tracker._remove(self.key)


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
