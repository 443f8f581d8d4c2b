"""Pure-torch implementations of every ffops op: the specification, the test oracle and the
eager baseline of the benchmarks. They take validated arguments (see ffops.ops)."""

from ffops.reference import sparse
from ffops.reference.ff import ff_loss, ff_normalize, goodness, goodness_and_normalize
from ffops.reference.ff_linear import ff_label_rows, ff_linear, ff_linear_overlay

__all__ = ["ff_label_rows", "ff_linear", "ff_linear_overlay", "ff_loss", "ff_normalize", "goodness", "goodness_and_normalize", "sparse"]
