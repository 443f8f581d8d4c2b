"""ffops.ff_linear and ffops.ff_linear_overlay on the CUDA C++ kernels under
torch.use_deterministic_algorithms(True): the epilogues add their column sums (pos_mean, grad_bias) and
the per-tile sums of squares of very wide rows in a fixed order instead of with float atomics, so
repeated calls agree bitwise, and agree with the atomic path up to rounding. The widths reach every
mapping of csrc/cuda/ff_linear.cu: sub-warp rows, whole-block rows and rows split into column tiles."""

import contextlib

import pytest
import torch

import ffops
from ffops import _backend
from ffops.ops._common import stat_dtype

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not (torch.cuda.is_available() and _backend.CPP_CUDA), reason="needs a GPU and CUDA kernels"),
]

WIDTHS = [65, 3000, 20000]  # sub-warp group, whole block, several column tiles (every dtype)


@contextlib.contextmanager
def _deterministic(monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # torch's condition for a deterministic cuBLAS
    was, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn_only)


def _layer(x, w, b, s, n_pos, overlay):
    """Outputs and gradients of the layer on fixed weights (fresh leaves each call)."""
    w = w.detach().clone().requires_grad_(True)
    b = b.detach().clone().requires_grad_(True)
    if overlay is None:
        h, sumsq, pos_mean = ffops.ff_linear(x, w, b, x_scale=s, n_pos=n_pos)
    else:
        labels, on, classes = overlay
        h, sumsq, pos_mean = ffops.ff_linear_overlay(x, labels, on, w, b, num_classes=classes, x_scale=s, n_pos=n_pos)
    g = torch.linspace(-1, 1, sumsq.numel(), device=x.device, dtype=sumsq.dtype)
    (sumsq * g).sum().add(pos_mean.sum()).backward()
    return h, sumsq, pos_mean, w.grad, b.grad


def _inputs(rows, fan_in, out, dtype, overlay):
    copies, classes = (2, 10) if overlay else (1, 0)
    batch = rows // copies
    x = torch.randn(batch, fan_in, device="cuda", dtype=torch.float64).relu().to(dtype)
    w = (torch.randn(out, fan_in, device="cuda", dtype=torch.float64) / fan_in**0.5).to(dtype)
    b = (0.1 * torch.randn(out, device="cuda", dtype=torch.float64)).to(dtype)
    s = torch.rand(batch * copies, device="cuda", dtype=stat_dtype(dtype)) + 0.5
    if not overlay:
        return x, w, b, s, None
    labels = torch.randint(0, classes, (batch * copies,), device="cuda")
    on = torch.rand(batch, device="cuda", dtype=stat_dtype(dtype)) + 0.5
    return x, w, b, s, (labels, on, classes)


@pytest.mark.parametrize("out", WIDTHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("overlay", [False, True], ids=["linear", "overlay"])
def test_deterministic_mode_is_repeatable_and_matches_atomics(monkeypatch, out, dtype, overlay):
    rows, fan_in = 300, 48
    x, w, b, s, ov = _inputs(rows, fan_in, out, dtype, overlay)
    n_pos = rows // 2 + 1
    with ffops.use_backend("cuda"):
        atomic = _layer(x, w, b, s, n_pos, ov)
        with _deterministic(monkeypatch):
            first = _layer(x, w, b, s, n_pos, ov)
            second = _layer(x, w, b, s, n_pos, ov)
    names = ["h", "sumsq", "pos_mean", "grad_weight", "grad_bias"]
    for name, a, d1, d2 in zip(names, atomic, first, second):
        assert torch.equal(d1, d2), f"{name}: deterministic mode is not repeatable"
        tol = {"rtol": 1e-2, "atol": 1e-2} if dtype == torch.bfloat16 else {}
        torch.testing.assert_close(d1, a, msg=lambda m, name=name: f"{name}: {m}", **tol)
