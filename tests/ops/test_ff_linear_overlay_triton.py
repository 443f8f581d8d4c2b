"""The Triton launchers of ff_linear_overlay_{fwd,bwd} (kernels/ff_linear_overlay.py) against the
reference on the materialized rows: forward outputs, and weight/bias gradients via autograd.

Runs on CPU tensors under the Triton interpreter (own pytest process:
``TRITON_INTERPRET=1 pytest -m triton tests/ops/test_ff_linear_overlay_triton.py``), or on a GPU."""

import pytest
import torch

from ffops.reference import ff_linear as reference
from tests.conftest import HAS_GPU, INTERPRET
from tests.helpers import assert_matches_reference

pytest.importorskip("triton")
from ffops.kernels import ff_linear_overlay as kernels
from ffops.ops._common import stat_dtype

pytestmark = pytest.mark.triton

DEVICES = [
    pytest.param(
        "cpu",
        id="interpreter",
        marks=pytest.mark.skipif(not INTERPRET, reason="needs TRITON_INTERPRET=1 (own pytest process)"),
    ),
    pytest.param("cuda", id="cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not HAS_GPU, reason="needs a GPU")]),
]

_stat = stat_dtype


def _inputs(B, K, N, C, k, dtype, device):
    """(base, labels, on, weight, bias, x_scale, grad_sumsq, grad_pos_mean) with R = k * B rows."""
    st = _stat(dtype)
    base = torch.randn(B, K, dtype=torch.float64).relu().to(device=device, dtype=dtype)
    labels = torch.randint(0, C, (k * B,), device=device)
    on = (torch.rand(B, dtype=torch.float64) + 0.5).to(device=device, dtype=st)
    w = (torch.randn(N, K, dtype=torch.float64) / K**0.5).to(device=device, dtype=dtype)
    b = (0.1 * torch.randn(N, dtype=torch.float64)).to(device=device, dtype=dtype)
    s = (torch.rand(k * B, dtype=torch.float64) + 0.5).to(device=device, dtype=st)
    gs = torch.randn(k * B, dtype=torch.float64).to(device=device, dtype=st)
    gpm = torch.randn(N, dtype=torch.float64).to(device=device, dtype=st)
    return base, labels, on, w, b, s, gs, gpm


def _reference(base, labels, on, w, b, s, C, n_pos, gs, gpm):
    """(h, sumsq, pos_mean, grad_weight, grad_bias) of the reference; a None bias is a zero bias
    there (same forward), so that grad_bias is defined."""
    w = w.detach().clone().requires_grad_(True)
    b = (torch.zeros_like(w[:, 0]) if b is None else b.detach().clone()).requires_grad_(True)
    h, ss, pm = reference.ff_linear_overlay(base, labels, on, w, b, num_classes=C, x_scale=s, n_pos=n_pos)
    total = (ss * gs.to(ss)).sum()
    if gpm is not None and n_pos > 0:  # pos_mean is NaN for n_pos == 0
        total = total + (pm * gpm.to(pm)).sum()
    gw, gb = torch.autograd.grad(total, (w, b))
    return h, ss.detach(), pm.detach(), gw, gb


def _f64(t):
    return None if t is None else t.double()


CASES = [  # B, K, N, C, k, n_pos, scale, bias, grad_pos_mean, deterministic
    pytest.param(5, 37, 19, 10, 1, 5, True, True, True, False, id="k1-npos=B"),
    pytest.param(5, 37, 19, 10, 2, 3, True, False, True, True, id="k2-partial-nobias-det"),
    pytest.param(5, 37, 19, 10, 3, 0, False, True, True, False, id="k3-npos0-noscale"),
    pytest.param(5, 37, 19, 10, 3, 12, False, False, False, True, id="k3-partial-nogpm-det"),
    # C > BLOCK_K (interpreter: 16): the label features span two k-tiles; two row tiles
    pytest.param(20, 40, 19, 20, 3, 27, True, True, True, True, id="label-2-ktiles-det"),
    pytest.param(20, 40, 19, 20, 2, 20, True, True, True, False, id="label-2-ktiles-npos=B"),
    # C == K: no shared features (EVEN_K); three column tiles; every row positive
    pytest.param(17, 16, 33, 16, 2, 34, True, True, True, True, id="C=K-npos=R-det"),
    # C == 1, EVEN_K with label-free k-tiles after the label one
    pytest.param(3, 48, 16, 1, 3, 4, True, False, True, False, id="C=1"),
]


def _check(B, K, N, C, k, n_pos, with_scale, with_bias, with_gpm, deterministic, dtype, device):
    base, labels, on, w, b, s, gs, gpm = _inputs(B, K, N, C, k, dtype, device)
    b = b if with_bias else None
    s = s if with_scale else None
    gpm = gpm if with_gpm else None
    h, ss, pm = kernels.ff_linear_overlay_fwd(base, labels, on, s, w, b, C, n_pos, deterministic=deterministic)
    gw, gb = kernels.ff_linear_overlay_bwd(base, labels, on, s, h, gs, gpm, C, n_pos)
    ref64 = _reference(base.double(), labels, on.double(), w.double(), _f64(b), _f64(s), C, n_pos, gs, gpm)
    ref_d = _reference(base, labels, on, w, b, s, C, n_pos, gs, gpm)
    for name, out, r64, rd in zip(
        ["h", "sumsq", "pos_mean", "grad_weight", "grad_bias"], (h, ss, pm, gw, gb), ref64, ref_d
    ):
        assert_matches_reference(out, r64, rd.to(out.dtype), name)
    if n_pos == 0:
        assert torch.isnan(pm).all()
    return h, ss, pm


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("B,K,N,C,k,n_pos,with_scale,with_bias,with_gpm,deterministic", CASES)
def test_matches_reference(device, dtype, B, K, N, C, k, n_pos, with_scale, with_bias, with_gpm, deterministic):
    _check(B, K, N, C, k, n_pos, with_scale, with_bias, with_gpm, deterministic, dtype, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_matches_reference_16bit(device, dtype):
    _check(20, 40, 19, 20, 3, 27, True, True, True, False, dtype, device)


@pytest.mark.parametrize("device", DEVICES)
def test_deterministic_mode_is_repeatable_and_matches_atomics(device):
    base, labels, on, w, b, s, _, _ = _inputs(20, 40, 19, 20, 3, torch.float32, device)
    det1 = kernels.ff_linear_overlay_fwd(base, labels, on, s, w, b, 20, 27, deterministic=True)
    det2 = kernels.ff_linear_overlay_fwd(base, labels, on, s, w, b, 20, 27, deterministic=True)
    atom = kernels.ff_linear_overlay_fwd(base, labels, on, s, w, b, 20, 27, deterministic=False)
    for d1, d2, a in zip(det1, det2, atom):
        assert torch.equal(d1, d2)
        torch.testing.assert_close(d1, a)


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch_and_no_outputs(device):
    base, labels, on, w, b, s, gs, gpm = _inputs(0, 37, 19, 10, 2, torch.float32, device)
    h, ss, pm = kernels.ff_linear_overlay_fwd(base, labels, on, s, w, b, 10, 0)
    assert h.shape == (0, 19) and ss.shape == (0,) and pm.shape == (19,) and torch.isnan(pm).all()
    gw, gb = kernels.ff_linear_overlay_bwd(base, labels, on, s, h, gs, gpm, 10, 0)
    assert torch.equal(gw, torch.zeros_like(w)) and torch.equal(gb, torch.zeros_like(b))

    base, labels, on, w, _, s, gs, _ = _inputs(3, 37, 0, 10, 2, torch.float32, device)
    h, ss, pm = kernels.ff_linear_overlay_fwd(base, labels, on, s, w, None, 10, 4)
    assert h.shape == (6, 0) and torch.equal(ss, torch.zeros(6, device=device)) and pm.shape == (0,)
    gw, gb = kernels.ff_linear_overlay_bwd(base, labels, on, s, h, gs, None, 10, 4)
    assert gw.shape == (0, 37) and gb.shape == (0,)


@pytest.mark.parametrize("device", DEVICES)
def test_nan_propagates_from_shared_features_only(device):
    B, C, k = 5, 10, 2
    base, labels, on, w, b, s, _, _ = _inputs(B, 37, 19, C, k, torch.float32, device)
    base[1, 20] = float("nan")  # a shared feature: every copy of row 1 is NaN
    base[2, 3] = float("nan")  # a label feature: replaced by the overlay in every row
    h, ss, pm = kernels.ff_linear_overlay_fwd(base, labels, on, s, w, b, C, 3)
    nan_rows = torch.tensor([r % B == 1 for r in range(k * B)], device=device)
    assert torch.isnan(h[nan_rows]).all() and torch.isnan(ss[nan_rows]).all()
    assert torch.isfinite(h[~nan_rows]).all() and torch.isfinite(ss[~nan_rows]).all()
    assert torch.isnan(pm).all()  # row 1 is positive
    h_ref, ss_ref, _ = reference.ff_linear_overlay(base, labels, on, w, b, num_classes=C, x_scale=s, n_pos=3)
    torch.testing.assert_close(h, h_ref, equal_nan=True)
    torch.testing.assert_close(ss, ss_ref, equal_nan=True)
