"""ffops.ff_linear_overlay (the FF layer on label overlays of shared inputs) on every backend: equal
to ffops.ff_linear on the materialized rows and to the reference, plus its torch.library contract."""

import pytest
import torch

import ffops
from ffops.ops._common import stat_dtype
from ffops.ops.ff_linear import KERNELS
from ffops.reference.ff_linear import overlay_rows
from tests.conftest import BACKEND_DEVICES
from tests.helpers import assert_matches_reference, kernel_op


def _inputs(batch, fan_in, fan_out, classes, copies, dtype, device, *, scale=True, bias=True):
    base = torch.randn(batch, fan_in, dtype=torch.float64).relu().to(device=device, dtype=dtype)
    labels = torch.randint(0, classes, (copies * batch,), device=device)
    stat = stat_dtype(dtype)
    on = (torch.rand(batch, dtype=torch.float64) + 0.5).to(device=device, dtype=stat)
    w = (torch.randn(fan_out, fan_in, dtype=torch.float64) / fan_in**0.5).to(device=device, dtype=dtype)
    b = (0.1 * torch.randn(fan_out, dtype=torch.float64)).to(device=device, dtype=dtype) if bias else None
    s = (torch.rand(copies * batch, dtype=torch.float64) + 0.5).to(device=device, dtype=stat) if scale else None
    return base, labels, on, w, b, s


def _run(fn, w, b, n_pos, peer_weights, sumsq_weights):
    """Forward of ``fn(w, b)`` and the gradients of a weighted sum of its statistics."""
    w = w.detach().clone().requires_grad_(True)
    b = None if b is None else b.detach().clone().requires_grad_(True)
    h, sumsq, pos_mean = fn(w, b)
    total = (sumsq * sumsq_weights.to(sumsq)).sum()
    if n_pos > 0:
        total = total + (pos_mean * peer_weights.to(pos_mean)).sum()
    total.backward()
    return h, sumsq.detach(), pos_mean.detach(), w.grad, None if b is None else b.grad


CASES = [  # batch, in, out, classes, copies, n_pos
    (1, 1, 1, 1, 1, 1),
    (5, 37, 19, 10, 2, 5),
    (7, 40, 33, 20, 3, 9),
    (6, 12, 17, 12, 2, 0),  # every feature is a label feature
    (0, 9, 4, 3, 1, 0),
]


@pytest.mark.parametrize("batch,fan_in,fan_out,classes,copies,n_pos", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("with_scale,with_bias", [(True, True), (False, False)])
def test_matches_reference(
    backend_device, batch, fan_in, fan_out, classes, copies, n_pos, dtype, with_scale, with_bias
):
    _, device = backend_device
    base, labels, on, w, b, s = _inputs(
        batch, fan_in, fan_out, classes, copies, dtype, device, scale=with_scale, bias=with_bias
    )
    peer, sq = torch.randn(fan_out), torch.randn(copies * batch)

    def overlay(base, on, s):
        return lambda w, b: ffops.ff_linear_overlay(base, labels, on, w, b, num_classes=classes, x_scale=s, n_pos=n_pos)

    got = _run(overlay(base, on, s), w, b, n_pos, peer, sq)
    with ffops.use_backend("reference"):
        ref64 = _run(
            overlay(base.double(), on.double(), None if s is None else s.double()),
            w.double(),
            None if b is None else b.double(),
            n_pos,
            peer,
            sq,
        )
        ref_d = _run(overlay(base, on, s), w, b, n_pos, peer, sq)
    for name, g, r, t in zip(["h", "sumsq", "pos_mean", "grad_weight", "grad_bias"], got, ref64, ref_d):
        if g is None:
            assert r is None and t is None
        elif name == "pos_mean" and n_pos == 0:
            assert torch.isnan(g).all()
        else:
            assert_matches_reference(g, r, t, name)


def test_equals_ff_linear_on_the_materialized_rows(backend_device):
    _, device = backend_device
    base, labels, on, w, b, s = _inputs(9, 30, 21, 10, 2, torch.float64, device)
    peer, sq = torch.randn(21), torch.randn(18)
    got = _run(
        lambda w, b: ffops.ff_linear_overlay(base, labels, on, w, b, num_classes=10, x_scale=s, n_pos=9),
        w,
        b,
        9,
        peer,
        sq,
    )
    rows = overlay_rows(base, labels, on, 10)
    want = _run(lambda w, b: ffops.ff_linear(rows, w, b, x_scale=s, n_pos=9), w, b, 9, peer, sq)
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)


def test_label_features_of_base_are_ignored(backend_device):
    _, device = backend_device
    base, labels, on, w, b, s = _inputs(4, 16, 8, 5, 2, torch.float32, device)
    noisy = base.clone()
    noisy[:, :5] = torch.randn(4, 5, device=device)
    clean = ffops.ff_linear_overlay(base, labels, on, w, b, num_classes=5, x_scale=s, n_pos=4)
    other = ffops.ff_linear_overlay(noisy, labels, on, w, b, num_classes=5, x_scale=s, n_pos=4)
    for c, o in zip(clean, other):
        torch.testing.assert_close(c, o)


def test_nan_propagates_to_every_copy_of_its_image(backend_device):
    _, device = backend_device
    base, labels, on, w, b, s = _inputs(5, 12, 6, 4, 2, torch.float32, device)
    base[2, 7] = float("nan")
    h, sumsq, _ = ffops.ff_linear_overlay(base, labels, on, w, b, num_classes=4, x_scale=s, n_pos=5)
    assert torch.isnan(h[[2, 7]]).all() and torch.isnan(sumsq[[2, 7]]).all()
    keep = [0, 1, 3, 4, 5, 6, 8, 9]
    assert torch.isfinite(h[keep]).all() and torch.isfinite(sumsq[keep]).all()


def test_scalar_on_value():
    base, labels, _on, w, b, s = _inputs(3, 8, 5, 4, 2, torch.float32, "cpu")
    got = ffops.ff_linear_overlay(base, labels, 0.7, w, b, num_classes=4, x_scale=s)
    want = ffops.ff_linear_overlay(base, labels, torch.full((3,), 0.7), w, b, num_classes=4, x_scale=s)
    torch.testing.assert_close(got[:2], want[:2])


def test_bad_input():
    base, labels, on, w, b, s = _inputs(4, 6, 5, 3, 2, torch.float32, "cpu")
    call = ffops.ff_linear_overlay
    with pytest.raises(ValueError, match=r"labels must hold k \* 4 row labels"):
        call(base, labels[:7], on, w, b, num_classes=3)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        call(base, labels + 3, on, w, b, num_classes=3)
    with pytest.raises(TypeError, match="labels must be a 1-D integer tensor"):
        call(base, labels.float(), on, w, b, num_classes=3)
    with pytest.raises(ValueError, match=r"num_classes must be an int in \[1, 6\]"):
        call(base, labels, on, w, b, num_classes=7)
    with pytest.raises(ValueError, match=r"on must be a number or a \[4\] tensor"):
        call(base, labels, on[:3], w, b, num_classes=3)
    with pytest.raises(ValueError, match=r"x_scale must have shape \(8,\)"):
        call(base, labels, on, w, b, num_classes=3, x_scale=s[:4])
    with pytest.raises(ValueError, match=r"weight must be \[out, 6\]"):
        call(base, labels, on, w[:, :5], b, num_classes=3)
    with pytest.raises(ValueError, match=r"n_pos must be an int in \[0, 8\], got 9"):
        call(base, labels, on, w, b, num_classes=3, n_pos=9)


@pytest.mark.parametrize("backend_device", BACKEND_DEVICES)
def test_opcheck(backend_device):
    backend, device = backend_device
    fwd = kernel_op(backend, "ff_linear_overlay_fwd")
    bwd = kernel_op(backend, "ff_linear_overlay_bwd")
    base, labels, on, w, b, s = _inputs(5, 12, 7, 4, 2, torch.float32, device)
    torch.library.opcheck(fwd, (base, labels, on, s, w.requires_grad_(True), b.requires_grad_(True), 4, 6))
    torch.library.opcheck(fwd, (base, labels, on, None, w, None, 4, 10))
    h = torch.relu(torch.randn(10, 7, device=device))
    torch.library.opcheck(
        bwd, (base, labels, on, s, h, torch.randn(10, device=device), torch.randn(7, device=device), 4, 6)
    )
    torch.library.opcheck(bwd, (base, labels, on, None, h, torch.randn(10, device=device), None, 4, 0))


@pytest.mark.skipif("cpp" not in KERNELS, reason="ffops._C not built")
def test_gradcheck_fp64():
    base, labels, on, w, b, s = _inputs(4, 9, 5, 3, 3, torch.float64, "cpu")
    w.requires_grad_(True)
    b.requires_grad_(True)
    with ffops.use_backend("cpu"):

        def fn(w, b):
            _, sumsq, pos_mean = ffops.ff_linear_overlay(base, labels, on, w, b, num_classes=3, x_scale=s, n_pos=5)
            return sumsq, pos_mean

        assert torch.autograd.gradcheck(fn, (w, b))
