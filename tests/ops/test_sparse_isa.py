"""The sparse kernels of every vector ISA (csrc/cpu/sparse_kernels_{avx512,avx2,baseline}.cpp), chosen by
``FFOPS_CPU_ISA`` (csrc/cpu/vector_isa.h): each ISA has its own vector width and register blocking, so
each is checked against the dense computation on this machine, the lower ones in a subprocess (the
variable is read once per process)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ffops  # noqa: F401  (loads the extension)
from ffops.sparse import magnitude_mask, pattern_from_mask, transpose_pattern

ROOT = Path(__file__).resolve().parents[2]
ISAS = ("baseline", "AVX2", "AVX-512")  # lowest first
ENV_NAMES = {"baseline": "baseline", "AVX2": "avx2", "AVX-512": "avx512"}


def _running_isa() -> str:
    return torch.ops.ffops.cpu_vector_isa()


def _python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env={**os.environ, **env}
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64], ids=str)
@pytest.mark.parametrize("batch", [1, 100, 256])  # all tail; panels and a tail; whole panels only
@pytest.mark.parametrize("need", ["both", "dx", "dvalues"])
def test_kernels_match_dense(dtype, index_dtype, batch, need):
    """Forward and backward kernels on a pattern wide enough for every code path of every ISA: columns
    of up to ~150 nonzeros (whole and partial groups of the transposing sum), several panels and a tail
    of the batch, empty rows and columns."""
    torch.manual_seed(0)
    n_out, n_in = 300, 290
    keep = magnitude_mask(torch.randn(n_out, n_in), 0.5)
    keep[7], keep[:, 11] = False, False
    crow, col = pattern_from_mask(keep, index_dtype)
    values = torch.randn(col.numel(), dtype=dtype)
    bias = torch.randn(n_out, dtype=dtype)
    xt = torch.randn(n_in, batch, dtype=dtype)
    dyt = torch.randn(n_out, batch, dtype=dtype)
    dense = torch.zeros(n_out, n_in, dtype=torch.float64)
    dense[keep] = values.double()

    yt = torch.ops.ffops.sparse_linear_fwd(xt, values, crow, col, bias)
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-10}
    torch.testing.assert_close(yt.double(), dense @ xt.double() + bias.double()[:, None], **tol)

    t = transpose_pattern(crow, col, n_in)
    need_dx, need_dv = need in ("both", "dx"), need in ("both", "dvalues")
    dxt, dvalues = torch.ops.ffops.sparse_linear_bwd(dyt, xt, values, t.ptr, t.row, t.perm, need_dx, need_dv)
    if need_dx:
        torch.testing.assert_close(dxt.double(), dense.t() @ dyt.double(), **tol)
    if need_dv:
        torch.testing.assert_close(dvalues.double(), (dyt.double() @ xt.double().t())[keep], **tol)


def test_the_variable_picks_the_kernels_and_bad_values_are_refused():
    best = _running_isa() if not os.environ.get("FFOPS_CPU_ISA") else None
    probe = "import ffops, torch; print(torch.ops.ffops.cpu_vector_isa())"
    for isa in ISAS[: ISAS.index(best) + 1] if best else ():
        out = _python(probe, FFOPS_CPU_ISA=ENV_NAMES[isa])
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == isa
    bad = _python(probe, FFOPS_CPU_ISA="sse9")
    assert bad.returncode != 0
    assert "FFOPS_CPU_ISA must be one of avx512, avx2, baseline" in bad.stderr and "'sse9'" in bad.stderr
    if best and best != "AVX-512":
        too_high = _python(probe, FFOPS_CPU_ISA="avx512")
        assert too_high.returncode != 0 and "supports at most" in too_high.stderr


@pytest.mark.parametrize("isa", ISAS[:-1])
def test_lower_isa_kernels(isa):
    """This file's kernel test and the sparse ops' reference tests, run on the kernels of a lower ISA."""
    if os.environ.get("FFOPS_CPU_ISA"):
        pytest.skip("FFOPS_CPU_ISA is set: this process already runs a chosen ISA")
    if ISAS.index(isa) >= ISAS.index(_running_isa()):
        pytest.skip(f"this CPU runs {_running_isa()}; {isa} is not below it")
    args = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-x",
        "-p",
        "no:cacheprovider",
        "-m",
        "not triton",
        "-k",
        "kernels_match_dense or matches_reference or equals_dense or dtypes or only_the_asked",
        "tests/ops/test_sparse_isa.py",
        "tests/ops/test_sparse_linear.py",
        "tests/ops/test_sparse_conv.py",
    ]
    run = subprocess.run(
        args, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "FFOPS_CPU_ISA": ENV_NAMES[isa]}
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
