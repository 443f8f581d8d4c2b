"""ffops.ff_linear (the fused FF layer op) on every backend against the reference, plus its
torch.library contract: opcheck, gradcheck in float64, torch.compile."""

import pytest
import torch

import ffops
from ffops.ops._common import stat_dtype
from ffops.ops.ff_linear import KERNELS
from tests.conftest import BACKEND_DEVICES
from tests.helpers import assert_matches_reference, kernel_op


def _inputs(batch, fan_in, fan_out, dtype, device, *, scale=True, bias=True):
    x = torch.randn(batch, fan_in, dtype=torch.float64).relu().to(device=device, dtype=dtype)
    w = (torch.randn(fan_out, fan_in, dtype=torch.float64) / fan_in**0.5).to(device=device, dtype=dtype)
    b = (0.1 * torch.randn(fan_out, dtype=torch.float64)).to(device=device, dtype=dtype) if bias else None
    stat = stat_dtype(dtype)
    s = (torch.rand(batch, dtype=torch.float64) + 0.5).to(device=device, dtype=stat) if scale else None
    return x, w, b, s


def _run(x, w, b, s, n_pos, peer_weights, sumsq_weights):
    w = w.detach().clone().requires_grad_(True)
    b = None if b is None else b.detach().clone().requires_grad_(True)
    h, sumsq, pos_mean = ffops.ff_linear(x, w, b, x_scale=s, n_pos=n_pos)
    total = (sumsq * sumsq_weights.to(sumsq)).sum()
    if n_pos > 0:
        total = total + (pos_mean * peer_weights.to(pos_mean)).sum()
    total.backward()
    return h, sumsq.detach(), pos_mean.detach(), w.grad, None if b is None else b.grad


CASES = [  # batch, in, out, n_pos
    (1, 1, 1, 1),
    (5, 3, 7, 2),
    (37, 40, 33, 20),
    (64, 129, 65, 0),
]


@pytest.mark.parametrize("batch,fan_in,fan_out,n_pos", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64], ids=str)
@pytest.mark.parametrize("with_scale,with_bias", [(True, True), (False, False)])
def test_ff_linear_matches_reference(backend_device, batch, fan_in, fan_out, n_pos, dtype, with_scale, with_bias):
    _, device = backend_device
    x, w, b, s = _inputs(batch, fan_in, fan_out, dtype, device, scale=with_scale, bias=with_bias)
    peer, sq = torch.randn(fan_out), torch.randn(batch)
    got = _run(x, w, b, s, n_pos, peer, sq)
    with ffops.use_backend("reference"):
        ref64 = _run(x.double(), w.double(), None if b is None else b.double(), s, n_pos, peer, sq)
        ref_d = _run(x, w, b, s, n_pos, peer, sq)
    names = ["h", "sumsq", "pos_mean", "grad_weight", "grad_bias"]
    for name, g, r, t in zip(names, got, ref64, ref_d):
        if g is None:
            assert r is None and t is None
            continue
        if name == "pos_mean" and n_pos == 0:
            assert torch.isnan(g).all()
            continue
        assert_matches_reference(g, r, t, name)


def test_ff_linear_nan_propagates_per_row(backend_device):
    _, device = backend_device
    x, w, b, s = _inputs(6, 8, 5, torch.float32, device)
    x[2, 3] = float("nan")
    h, sumsq, _ = ffops.ff_linear(x, w, b, x_scale=s, n_pos=3)
    assert torch.isnan(h[2]).all() and torch.isnan(sumsq[2])
    keep = [0, 1, 3, 4, 5]
    assert torch.isfinite(h[keep]).all() and torch.isfinite(sumsq[keep]).all()


def test_ff_linear_gradient_does_not_reach_the_input(backend_device):
    _, device = backend_device
    x, w, b, s = _inputs(4, 6, 5, torch.float32, device)
    x.requires_grad_(True)
    w.requires_grad_(True)
    h, sumsq, _ = ffops.ff_linear(x, w, b, x_scale=s, n_pos=2)
    assert not h.requires_grad
    sumsq.sum().backward()
    assert x.grad is None and w.grad is not None


def test_ff_linear_bad_input():
    x, w, b, s = _inputs(4, 6, 5, torch.float32, "cpu")
    with pytest.raises(ValueError, match=r"weight must be \[out, 6\]"):
        ffops.ff_linear(x, w[:, :5], b)
    with pytest.raises(TypeError, match="weight must have the dtype of x"):
        ffops.ff_linear(x, w.double(), b)
    with pytest.raises(ValueError, match=r"bias must be a \[5\] tensor"):
        ffops.ff_linear(x, w, b[:4])
    with pytest.raises(ValueError, match=r"x_scale must have shape \(4,\)"):
        ffops.ff_linear(x, w, b, x_scale=s[:3])
    with pytest.raises(ValueError, match=r"n_pos must be an int in \[0, 4\], got 5"):
        ffops.ff_linear(x, w, b, n_pos=5)
    with pytest.raises(TypeError, match="x must be float32"):
        ffops.ff_linear(x.int(), w, b)


@pytest.mark.parametrize("backend_device", BACKEND_DEVICES)
def test_ff_linear_opcheck(backend_device):
    backend, device = backend_device
    fwd = kernel_op(backend, "ff_linear_fwd")
    bwd = kernel_op(backend, "ff_linear_bwd")
    x, w, b, s = _inputs(9, 12, 7, torch.float32, device)
    torch.library.opcheck(fwd, (x, s, w.requires_grad_(True), b.requires_grad_(True), 4))
    torch.library.opcheck(fwd, (x, None, w, None, 9))  # (n_pos = 0 gives a NaN pos_mean, which opcheck cannot compare)
    h = torch.relu(torch.randn(9, 7, device=device))
    torch.library.opcheck(bwd, (x, s, h, torch.randn(9, device=device), torch.randn(7, device=device), 4))
    torch.library.opcheck(bwd, (x, None, h, torch.randn(9, device=device), None, 0))


@pytest.mark.skipif("cpp" not in KERNELS, reason="ffops._C not built")
def test_ff_linear_gradcheck_fp64():
    x, w, b, s = _inputs(7, 5, 4, torch.float64, "cpu")
    w.requires_grad_(True)
    b.requires_grad_(True)
    with ffops.use_backend("cpu"):

        def fn(w, b):
            _, sumsq, pos_mean = ffops.ff_linear(x, w, b, x_scale=s, n_pos=3)
            return sumsq, pos_mean

        assert torch.autograd.gradcheck(fn, (w, b))


def test_ff_linear_torch_compile_fullgraph(backend_device):
    _, device = backend_device
    x, w, b, s = _inputs(8, 10, 6, torch.float32, device)
    w.requires_grad_(True)

    def step(x, w, b, s):
        h, sumsq, pos_mean = ffops.ff_linear(x, w, b, x_scale=s, n_pos=4)
        return h, (sumsq.mean() + pos_mean.square().mean())

    torch._dynamo.reset()
    h_c, loss_c = torch.compile(step, fullgraph=True)(x, w, b, s)
    (g_c,) = torch.autograd.grad(loss_c, w)
    h_e, loss_e = step(x, w, b, s)
    (g_e,) = torch.autograd.grad(loss_e, w)
    torch.testing.assert_close(h_c, h_e)
    torch.testing.assert_close(loss_c, loss_e)
    torch.testing.assert_close(g_c, g_e)
