"""Memory-lean training tools: measure what a model saves for backward, and patch a model to
save less (memory-saving activations, MS norms with their affine folded into the next linears).

* ``saved_bytes(fn, *args)``: bytes saved for backward by one call (deduplicated by storage).
* ``track_memory()``: context manager counting the same (and the CUDA peak memory).
"""

from ffops.memory.measure import MemoryStats, saved_bytes, track_memory

__all__ = ["MemoryStats", "saved_bytes", "track_memory"]
