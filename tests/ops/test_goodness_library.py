"""The torch.library contract of the FF ops: opcheck, gradcheck in float64, torch.compile."""

import pytest
import torch

import ffops
from ffops.ops._common import stat_dtype
from ffops.ops.goodness import KERNELS
from tests.conftest import BACKEND_DEVICES
from tests.helpers import kernel_op


def _samples(device, dtype=torch.float32):
    h = torch.randn(5, 37, device=device, dtype=dtype, requires_grad=True)
    strided = torch.randn(5, 40, device=device, dtype=dtype)[:, :37].requires_grad_(True)
    coef = torch.randn(5, device=device, dtype=stat_dtype(dtype))
    s = (h.detach().float() ** 2).sum(1).to(coef.dtype)
    return {
        "goodness_fwd": [(h, 0.5), (strided, 1.0)],
        "row_scale": [(h.detach(), coef), (strided.detach(), coef)],
        "ff_loss_fwd": [
            (h, 1 / 37, 1.0, 2.0, None),
            (strided, 1.0, -4.0, 0.0, coef.clone().requires_grad_(True)),
        ],
        "normalize_fwd": [(h, 1.0, 1e-6), (strided, 1 / 37, 1e-8)],
        "normalize_bwd": [
            (torch.randn_like(h.detach()), coef, h.detach(), s, 1.0, 1e-6),
            (torch.randn_like(h.detach()), None, strided.detach(), s, 1 / 37, 1e-8),
        ],
    }


@pytest.mark.parametrize("backend_device", BACKEND_DEVICES)
@pytest.mark.parametrize("name", ["goodness_fwd", "row_scale", "ff_loss_fwd", "normalize_fwd", "normalize_bwd"])
def test_opcheck(backend_device, name):
    backend, device = backend_device
    for args in _samples(device)[name]:
        torch.library.opcheck(kernel_op(backend, name), args)


@pytest.mark.skipif("cpp" not in KERNELS, reason="ffops._C not built")
@pytest.mark.parametrize("name", ["goodness_fwd", "ff_loss_fwd", "normalize_fwd"])
def test_gradcheck_cpu_kernels_fp64(name):
    samples = _samples("cpu", torch.float64)[name]
    for args in samples:
        tensors = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]

        def fn(*ts, args=args):
            it = iter(ts)
            full = [next(it) if isinstance(a, torch.Tensor) and a.requires_grad else a for a in args]
            return kernel_op("cpu", name)(*full)

        assert torch.autograd.gradcheck(fn, tensors, eps=1e-6, atol=1e-7)


@pytest.mark.skipif("cpp" not in KERNELS, reason="ffops._C not built")
def test_gradcheck_public_ops_fp64():
    h_pos = torch.randn(4, 9, dtype=torch.float64, requires_grad=True)
    h_neg = torch.randn(4, 9, dtype=torch.float64, requires_grad=True)
    with ffops.use_backend("cpu"):
        for loss in ["softplus", "symba"]:
            fn = lambda p, n, loss=loss: ffops.ff_loss(p, n, 1.0, loss=loss, return_goodness=True)
            assert torch.autograd.gradcheck(fn, (h_pos, h_neg))
        assert torch.autograd.gradcheck(lambda h: ffops.goodness_and_normalize(h, mode="rms"), (h_pos,))
        x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda h: ffops.goodness(h, "mean", dims=(2, 3)), (x,))


def _public_calls():
    return {
        "goodness": lambda h, n: ffops.goodness(h, reduction="mean"),
        "goodness-per-channel": lambda h, n: ffops.goodness(h.view(h.shape[0], 4, 2, 4), dims=(2, 3)),
        "ff_loss-softplus": lambda h, n: ffops.ff_loss(h, n, 1.0, return_goodness=True),
        "ff_loss-symba": lambda h, n: ffops.ff_loss(h, n, 1.0, loss="symba", goodness="sum"),
        "ff_normalize": lambda h, n: ffops.ff_normalize(h, mode="rms"),
        "goodness_and_normalize": lambda h, n: ffops.goodness_and_normalize(h),
    }


@pytest.mark.parametrize("call", list(_public_calls()))
def test_torch_compile_fullgraph(backend_device, call):
    """Each public op compiles with fullgraph=True (no graph break) and gives the eager result, gradients too."""
    _, device = backend_device
    fn = _public_calls()[call]
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True)
    h = torch.randn(6, 32, device=device, requires_grad=True)
    n = torch.randn(6, 32, device=device, requires_grad=True)
    out_c = compiled(h, n)
    out_e = fn(h, n)
    out_c = out_c if isinstance(out_c, tuple) else (out_c,)
    out_e = out_e if isinstance(out_e, tuple) else (out_e,)
    for a, b in zip(out_c, out_e):
        torch.testing.assert_close(a, b)
    gc = torch.autograd.grad(sum(o.sum() for o in out_c), (h, n), allow_unused=True)
    ge = torch.autograd.grad(sum(o.sum() for o in out_e), (h, n), allow_unused=True)
    for a, b in zip(gc, ge):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)
