"""ffops.ms_layernorm / ms_rmsnorm on every backend against torch's LayerNorm / RMSNorm: outputs
and gradients (judged against torch's own low-precision error), output dtype under autocast and
the memory it shares with the next linear, layouts, NaN and degenerate rows."""

import pytest
import torch
import torch.nn.functional as F

import ffops
from ffops.memory import saved_bytes
from tests.helpers import assert_matches_reference, grads_of, make

SHAPES = [(1, 1), (5, 7), (33, 300), (3, 4100), (2, 9000), (4, 3, 5, 6)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
EPS = 1e-5


def _torch_norm(center):
    if center:
        return lambda x: F.layer_norm(x, x.shape[-1:], eps=EPS)
    return lambda x: F.rms_norm(x, x.shape[-1:], eps=EPS)


def _ours(center):
    return (lambda x: ffops.ms_layernorm(x, EPS)) if center else (lambda x: ffops.ms_rmsnorm(x, EPS))


def _compare(center, x, g):
    outs, grads = grads_of(_ours(center), [x], [g])
    t64, tg64 = grads_of(_torch_norm(center), [x.double()], [g])
    td, tgd = grads_of(_torch_norm(center), [x], [g])
    assert_matches_reference(outs[0].cpu(), t64[0].cpu(), td[0].cpu(), "y")
    assert_matches_reference(grads[0].cpu(), tg64[0].cpu(), tgd[0].cpu(), "dx")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("center", [True, False], ids=["layernorm", "rmsnorm"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matches_torch(backend_device, shape, center, dtype):
    _, device = backend_device
    x = make(shape, dtype, device, scale=2.0) + 0.5
    _compare(center, x, torch.randn(shape))


@pytest.mark.parametrize("layout", ["transposed", "row-strided", "every-other-row"])
@pytest.mark.parametrize("center", [True, False], ids=["layernorm", "rmsnorm"])
def test_non_contiguous(backend_device, layout, center):
    _, device = backend_device
    x = make((9, 40), torch.float32, device, layout=layout)
    _compare(center, x, torch.randn(9, 40))


@pytest.mark.parametrize("center", [True, False], ids=["layernorm", "rmsnorm"])
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16], ids=str)
def test_out_dtype(backend_device, center, out_dtype):
    """y in out_dtype (the rounding of the float32 result), dx back in x's dtype."""
    _, device = backend_device
    x = make((7, 65), torch.float32, device).requires_grad_()
    op = ffops.ms_layernorm if center else ffops.ms_rmsnorm
    y = op(x, EPS, out_dtype=out_dtype)
    assert y.dtype == out_dtype
    y32 = op(x.detach(), EPS)
    torch.testing.assert_close(y.float(), y32.to(out_dtype).float(), rtol=0, atol=0)
    g = torch.randn(7, 65, device=device).to(out_dtype)
    y.backward(g)
    assert x.grad.dtype == torch.float32
    with ffops.use_backend("reference"):
        xr = x.detach().clone().requires_grad_()
        op(xr, EPS, out_dtype=out_dtype).backward(g)
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("center", [True, False], ids=["layernorm", "rmsnorm"])
def test_autocast_output_is_shared_with_plain_linear(backend_device, center):
    """Under autocast the norm returns the autocast dtype, so nn.Linear's cast is a no-op and it
    saves the very same tensor: the pair saves y (bf16) + rstd + nothing else of the activation."""
    _, device = backend_device
    x = torch.randn(16, 64, device=device, requires_grad=True)
    lin = torch.nn.Linear(64, 32).to(device)
    op = ffops.ms_layernorm if center else ffops.ms_rmsnorm
    with torch.autocast(device, dtype=torch.bfloat16):
        y = op(x, EPS)
        assert y.dtype == torch.bfloat16
        nbytes = saved_bytes(lambda t: lin(op(t, EPS)), x)
    assert nbytes == 16 * 64 * 2 + 16 * 4  # y in bf16 + rstd; the linear adds nothing
    with torch.autocast(device, dtype=torch.bfloat16, enabled=False):
        assert op(x, EPS).dtype == torch.float32
    with torch.autocast(device, dtype=torch.bfloat16):  # float64 is never cast by autocast
        assert op(x.double(), EPS).dtype == torch.float64


def test_nan_row_and_constant_row(backend_device):
    _, device = backend_device
    x = torch.randn(4, 33, device=device)
    x[1, 7] = float("nan")
    x[2] = 3.0  # zero variance: y = 0, rstd = 1 / sqrt(eps), finite gradient
    x.requires_grad_()
    for op in (ffops.ms_layernorm, ffops.ms_rmsnorm):
        x.grad = None
        y = op(x, EPS)
        assert torch.isnan(y[1]).all() and torch.isfinite(y[[0, 2, 3]]).all()
        y.backward(torch.ones_like(y))
        assert torch.isnan(x.grad[1]).all() and torch.isfinite(x.grad[[0, 2, 3]]).all()
    assert (ffops.ms_layernorm(x.detach(), EPS)[2] == 0).all()


def test_empty(backend_device):
    _, device = backend_device
    for op in (ffops.ms_layernorm, ffops.ms_rmsnorm):
        e = torch.empty(0, 8, device=device, requires_grad=True)
        y = op(e)
        assert y.shape == (0, 8)
        y.sum().backward()
        assert e.grad.shape == (0, 8)


def test_rmsnorm_default_eps_is_torchs(backend_device):
    _, device = backend_device
    x = make((5, 16), torch.float32, device) * 1e-4
    torch.testing.assert_close(ffops.ms_rmsnorm(x), F.rms_norm(x, (16,)), rtol=1e-5, atol=1e-6)


def test_saves_only_output_and_rstd(backend_device):
    _, device = backend_device
    x = torch.randn(10, 48, device=device, dtype=torch.bfloat16, requires_grad=True)
    assert saved_bytes(ffops.ms_layernorm, x) == 10 * 48 * 2 + 10 * 4
