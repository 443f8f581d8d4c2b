"""Pure-torch implementations of every ffops op, one module per op (``ffops/reference/<op>.py``):
the specification, the test oracle and the eager baseline of the benchmarks. They take validated
arguments (see ffops.ops)."""
