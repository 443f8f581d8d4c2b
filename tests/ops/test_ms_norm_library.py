"""The torch.library contract of the ms_norm ops (MS-LayerNorm, MS-RMSNorm): opcheck, gradcheck in
float64 (their backward is exact), torch.compile(fullgraph=True) with and without autocast, bad input
errors and the kernels' own checks."""

import pytest
import torch

import ffops
from ffops.ops._common import stat_dtype
from ffops.ops.ms_norm import KERNELS
from tests.conftest import BACKEND_DEVICES
from tests.helpers import assert_compile_matches_eager, kernel_op

NAMES = ["ms_norm_fwd", "ms_norm_bwd"]
X = torch.randn(4, 8)


def _samples(device, dtype=torch.float32):
    x = torch.randn(5, 37, device=device, dtype=dtype, requires_grad=True)
    strided = torch.randn(5, 40, device=device, dtype=dtype)[:, :37].requires_grad_(True)
    rstd = torch.rand(5, device=device, dtype=stat_dtype(dtype)) + 0.5
    y = torch.randn(5, 37, device=device, dtype=dtype)
    x3 = torch.randn(2, 3, 37, device=device, dtype=dtype, requires_grad=True)  # N-D: rows of the last dim
    y3, rstd3 = y[:3].reshape(3, 1, 37).contiguous(), rstd[:3].reshape(3, 1).contiguous()
    return {
        "ms_norm_fwd": [(x, 1e-5, True, None), (strided, 1e-6, False, None), (x3, 1e-5, False, None)]
        + ([(x, 1e-5, True, torch.bfloat16)] if dtype != torch.float64 else []),
        "ms_norm_bwd": [
            (torch.randn_like(y), y, rstd, True, dtype),
            (torch.randn_like(y), y, rstd, False, dtype),
            (torch.randn_like(y3), y3, rstd3, True, dtype),
        ],
    }


@pytest.mark.parametrize("backend_device", BACKEND_DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_opcheck(backend_device, name):
    backend, device = backend_device
    for args in _samples(device)[name]:
        torch.library.opcheck(kernel_op(backend, name), args)


@pytest.mark.skipif("cpp" not in KERNELS, reason="ffops._C not built")
@pytest.mark.parametrize("center", [True, False])
def test_gradcheck_ms_norm_cpu_kernel_fp64(center):
    x = torch.randn(4, 9, dtype=torch.float64, requires_grad=True)
    strided = torch.randn(4, 12, dtype=torch.float64)[:, :9].requires_grad_(True)
    for t in (x, strided):
        assert torch.autograd.gradcheck(lambda a: kernel_op("cpu", "ms_norm_fwd")(a, 1e-5, center, None)[0], (t,))


@pytest.mark.skipif("cpp" not in KERNELS, reason="ffops._C not built")
def test_gradcheck_public_norms_fp64():
    x = torch.randn(2, 3, 7, dtype=torch.float64, requires_grad=True)
    with ffops.use_backend("cpu"):
        assert torch.autograd.gradcheck(lambda a: ffops.ms_layernorm(a, 1e-3), (x,))
        assert torch.autograd.gradcheck(lambda a: ffops.ms_rmsnorm(a, 1e-3), (x,))
        m = ffops.nn.MSLayerNorm((3, 7), eps=1e-3)
        assert torch.autograd.gradcheck(m, (x,))


def _public_calls():
    return {
        "ms_layernorm": lambda x: ffops.ms_layernorm(x),
        "ms_rmsnorm": lambda x: ffops.ms_rmsnorm(x),
        "ms_layernorm-bf16-out": lambda x: ffops.ms_layernorm(x, out_dtype=torch.bfloat16).float(),
    }


@pytest.mark.parametrize("call", list(_public_calls()))
def test_torch_compile_fullgraph(backend_device, call):
    """Each public op compiles with fullgraph=True (no graph break) and gives the eager result and gradient."""
    _, device = backend_device
    x = torch.randn(6, 35, device=device, requires_grad=True)
    assert_compile_matches_eager(_public_calls()[call], x, torch.randn(6, 35, device=device))


def test_torch_compile_under_autocast(backend_device):
    """The autocast check inside ms_layernorm is traced, not a graph break."""
    _, device = backend_device
    lin = torch.nn.Linear(32, 8).to(device)
    fn = lambda x: lin(ffops.ms_layernorm(x))
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True)
    x = torch.randn(4, 32, device=device, requires_grad=True)
    with torch.autocast(device, dtype=torch.bfloat16):
        out_c, out_e = compiled(x), fn(x)
    assert out_c.dtype == out_e.dtype == torch.bfloat16
    torch.testing.assert_close(out_c, out_e)


@pytest.mark.parametrize(
    "call,exc,pattern",
    [
        (
            lambda: ffops.ms_layernorm(torch.tensor(1.0)),
            ValueError,
            r"ffops.ms_layernorm: x must have at least 1",
        ),
        (lambda: ffops.ms_layernorm(X.int()), TypeError, r"ffops.ms_layernorm: x must be float32"),
        (
            lambda: ffops.ms_layernorm(X, float("nan")),
            ValueError,
            r"ffops.ms_layernorm: eps must be finite, got nan",
        ),
        (lambda: ffops.ms_layernorm(X, -1.0), ValueError, r"eps must be >= 0, got -1.0"),
        (lambda: ffops.ms_rmsnorm(X, "1e-5"), TypeError, r"ffops.ms_rmsnorm: eps must be a real number.*str"),
        (
            lambda: ffops.ms_rmsnorm(X, out_dtype=torch.int32),
            TypeError,
            r"out_dtype must be None, torch.float32",
        ),
        (lambda: ffops.ms_rmsnorm(X, out_dtype=torch.float64), TypeError, r"float64 only for float64 x"),
        (lambda: ffops.ms_rmsnorm(X, out_dtype="bf16"), TypeError, r"out_dtype must be None"),
        (
            lambda: ffops.nn.MSLayerNorm(8)(torch.randn(4, 9)),
            ValueError,
            r"MSLayerNorm: expected an input ending in \(8,\)",
        ),
        (lambda: ffops.nn.MSRMSNorm(()), ValueError, r"MSRMSNorm: normalized_shape must be"),
    ],
)
def test_bad_input_raises_clear_error(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


@pytest.mark.skipif("cpp" not in KERNELS, reason="ffops._C not built")
def test_kernel_checks_guard_direct_calls():
    op = torch.ops.ffops
    with pytest.raises(RuntimeError, match="at least 1 dimension, got a 0-D tensor"):
        op.ms_norm_fwd(X[0, 0], 1e-5, True, None)
    with pytest.raises(RuntimeError, match="3 dimensions must be contiguous"):
        op.ms_norm_fwd(torch.randn(2, 4, 8).transpose(0, 1), 1e-5, True, None)
    with pytest.raises(RuntimeError, match="rstd must be a contiguous tensor of 4 per-row values"):
        op.ms_norm_bwd(X, X, torch.ones(3), True, torch.float32)
    with pytest.raises(RuntimeError, match="out_dtype must be float32"):
        op.ms_norm_fwd(X, 1e-5, True, torch.float64)
