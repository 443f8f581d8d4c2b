"""Memory-lean training tools: measure what a model saves for backward, and patch a model to
save less (memory-saving activations, MS norms with their affine folded into the next linears).

* ``saved_bytes(fn, *args)``: bytes saved for backward by one call (deduplicated by storage).
* ``track_memory()``: context manager counting the same (and the CUDA peak memory).
* ``patch(model, activations="regelu2" | "fewbit:k" | None, norms=True)``: replace GELU / SiLU and
  LayerNorm / RMSNorm (torch's and any ``*Norm`` of that math) in place, folding each norm's affine into
  the linear layers that consume it, and fuse LoRA's dropout into ``lora_A``; returns a
  ``PatchReport``. ``calibrate=inputs`` fits each Few-Bit layer's table to the inputs it sees;
  ``linears="rmm:0.2"`` makes linear layers keep a random sketch of a fifth of their input rows
  (``ffops.nn.RandomizedLinear``).
* ``unpatch(model)``: undo ``patch`` after training (original module types, trained weights mapped
  back: norm weights restored, linears and ``lora_A`` unscaled), for ``save_pretrained`` and the like.
* ``fewbit_table(fn, bits, samples=... | std=...)``: a ``FewBitTable`` fitted to recorded inputs or
  to N(mean, std^2), for ``ffops.fewbit(x, table=...)`` and ``ffops.nn.FewBitAct``.
"""

from ffops.memory.fewbit_calibration import fewbit_table
from ffops.memory.measure import MemoryStats, SavedTensorTracker, saved_bytes, track_memory
from ffops.memory.patch import PatchReport, patch
from ffops.memory.unpatch import unpatch
from ffops.ops._act_tables import FewBitTable

__all__ = [
    "FewBitTable",
    "MemoryStats",
    "PatchReport",
    "SavedTensorTracker",
    "fewbit_table",
    "patch",
    "saved_bytes",
    "track_memory",
    "unpatch",
]
