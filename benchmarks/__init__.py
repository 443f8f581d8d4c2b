"""Benchmarks of the ffops kernels against eager and ``torch.compile``'d pure-torch references.

``benchmarks.harness`` holds the shared timing / memory / reporting machinery; each
``benchmarks/bench_*.py`` script runs with ``python -m benchmarks.<script>`` from the repository
root and writes its numbers to ``benchmarks/results/<script>_<device>.json``.
"""
