"""Measuring what a forward pass keeps for backward: ``saved_bytes(fn, *args)`` and the context
manager ``track_memory()``; ``SavedTensorTracker`` also follows each saved tensor until autograd
frees it (the peak alive at once, e.g. over a training step with per-layer backward).

Saved tensors are seen through ``torch.autograd.graph.saved_tensors_hooks`` and deduplicated by
storage: a tensor saved by two ops (an MS norm's output and the next linear's input) counts once,
and a saved view counts its whole storage (it keeps all of it alive). Parameters, and tensors
derived from one parameter by casts, views or transposes (autocast's low-precision weight copies),
are left out by default: they exist whether or not anything is saved. A cast of a frozen parameter
has no autograd history to tell where it came from, so ``track_memory`` also watches the block's
aten calls (a ``TorchDispatchMode``) for casts and views of parameters (held weakly).
"""

import contextlib
import dataclasses
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# autograd nodes that only re-express one parameter (a cast, a view, a transpose)
_PARAM_VIEW_NODES = (
    "ToCopyBackward",
    "TBackward",
    "ViewBackward",
    "TransposeBackward",
    "PermuteBackward",
    "ExpandBackward",
    "UnsqueezeBackward",
    "SqueezeBackward",
    "AliasBackward",
)


def _is_parameter_derived(t: torch.Tensor) -> bool:
    if isinstance(t, torch.nn.Parameter) or isinstance(t._base, torch.nn.Parameter):
        return True
    node = t.grad_fn
    for _ in range(8):
        if node is None:
            return False
        name = type(node).__name__
        if name == "AccumulateGrad":
            return isinstance(node.variable, torch.nn.Parameter)
        if not name.startswith(_PARAM_VIEW_NODES):
            return False
        nexts = [n for n, _ in node.next_functions if n is not None]
        if len(nexts) != 1:
            return False
        node = nexts[0]
    return False


_aten = torch.ops.aten
# aten ops that re-express one tensor: a cast (autocast's copies) or a view
_PARAM_COPY_OPS = {
    _aten._to_copy,
    _aten.t,
    _aten.transpose,
    _aten.permute,
    _aten.view,
    _aten._unsafe_view,
    _aten.expand,
    _aten.unsqueeze,
    _aten.squeeze,
    _aten.alias,
    _aten.detach,
}


class _ParameterCopies(TorchDispatchMode):
    """Remembers (weakly) the tensors computed inside it from one parameter alone by casts and views, such
    as autocast's low-precision copies of frozen weights (which have no ``grad_fn``). A tensor's Python
    object lives as long as the tensor once made, so the one autograd hands to the pack hook is this one."""

    def __init__(self):
        super().__init__()
        self.copies: dict = {}  # id -> weakref.ref of the tensor

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket in _PARAM_COPY_OPS and isinstance(out, torch.Tensor) and args:
            src = args[0]
            if isinstance(src, torch.nn.Parameter) or self._known(src):
                key = id(out)
                self.copies[key] = weakref.ref(out, lambda ref, key=key: self._forget(key, ref))
        return out

    def _forget(self, key, ref) -> None:
        if self.copies.get(key) is ref:
            del self.copies[key]

    def _known(self, t) -> bool:
        ref = self.copies.get(id(t))
        return ref is not None and ref() is t

    def holds(self, t: torch.Tensor) -> bool:
        return self._known(t) or (t._base is not None and self._known(t._base))


@dataclasses.dataclass
class MemoryStats:
    """What ``track_memory`` saw.

    saved_bytes:   bytes of the distinct storages saved for backward (parameters excluded unless
                   ``include_parameters``);
    saved_tensors: how many tensors were saved (counting repeats);
    storages:      how many distinct storages they live in;
    by_dtype:      saved bytes per dtype name;
    peak_bytes:    CUDA only: peak allocated memory inside the block above what was allocated when
                   it was entered (``None`` on CPU).
    """

    saved_bytes: int = 0
    saved_tensors: int = 0
    storages: int = 0
    by_dtype: dict = dataclasses.field(default_factory=dict)
    peak_bytes: int | None = None

    @property
    def saved_mib(self) -> float:
        return self.saved_bytes / 2**20


class _Recorder:
    def __init__(self, include_parameters: bool, copies: _ParameterCopies | None):
        self.include_parameters = include_parameters
        self.copies = copies
        self.storages: dict = {}
        self.count = 0

    def pack(self, t: torch.Tensor):
        if self.include_parameters or not (_is_parameter_derived(t) or self.copies.holds(t)):
            self.count += 1
            try:
                s = t.untyped_storage()
                key, nbytes = (str(t.device), s.data_ptr()), s.nbytes()
            except (RuntimeError, NotImplementedError):  # tensors without a storage (subclasses)
                key, nbytes = ("id", id(t)), t.numel() * t.element_size()
            if key not in self.storages:
                self.storages[key] = (nbytes, str(t.dtype).replace("torch.", ""), t)
        return t

    def fill(self, stats: MemoryStats) -> None:
        stats.saved_tensors = self.count
        stats.storages = len(self.storages)
        stats.saved_bytes = sum(n for n, _, _ in self.storages.values())
        by_dtype: dict = {}
        for n, dtype, _ in self.storages.values():
            by_dtype[dtype] = by_dtype.get(dtype, 0) + n
        stats.by_dtype = by_dtype
        self.storages.clear()  # drop the references: the graph owns what it saved


@contextlib.contextmanager
def track_memory(device: torch.device | str | None = None, *, include_parameters: bool = False):
    """Count the bytes saved for backward inside the block (and, on CUDA, the peak memory).

    >>> with ffops.memory.track_memory() as stats:
    ...     loss = model(x).sum()
    >>> stats.saved_mib

    ``device``: the CUDA device whose peak memory is measured (default: the current one, when CUDA
    is initialized); on CPU only saved bytes are counted. Storages are keyed by address, so the
    tensors saved inside the block are kept alive until it exits (they are anyway, by the graph).
    """
    stats = MemoryStats()
    copies = None if include_parameters else _ParameterCopies()
    rec = _Recorder(include_parameters, copies)
    dev = None
    if device is not None:
        dev = torch.device(device)
    elif torch.cuda.is_available() and torch.cuda.is_initialized():
        dev = torch.device("cuda", torch.cuda.current_device())
    cuda = dev is not None and dev.type == "cuda"
    if cuda:
        torch.cuda.synchronize(dev)
        base = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    try:
        with torch.autograd.graph.saved_tensors_hooks(rec.pack, lambda t: t), copies or contextlib.nullcontext():
            yield stats
    finally:
        rec.fill(stats)
        if copies is not None:
            copies.copies.clear()
        if cuda:
            torch.cuda.synchronize(dev)
            stats.peak_bytes = torch.cuda.max_memory_allocated(dev) - base


def saved_bytes(fn, *args, include_parameters: bool = False, **kwargs) -> int:
    """Bytes saved for backward by one call ``fn(*args, **kwargs)`` (distinct storages, parameters
    and their casts excluded). The call's result is dropped."""
    with track_memory(include_parameters=include_parameters) as stats:
        out = fn(*args, **kwargs)
    del out
    return stats.saved_bytes


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
