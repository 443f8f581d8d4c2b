"""The torch.library contract of the memory-saving ops: opcheck, gradcheck in float64 (the MS
norms, whose backward is exact), torch.compile(fullgraph=True), and bad input errors."""

import pytest
import torch

import ffops
from ffops.ops._act_tables import REGELU2, table
from ffops.ops._common import stat_dtype
from ffops.ops.ms_norm import KERNELS
from tests.conftest import BACKEND_DEVICES

_PREFIX = {"cpu": "", "cuda": "", "triton": "triton_"}
NAMES = ["packed_act_fwd", "packed_act_bwd", "ms_norm_fwd", "ms_norm_bwd"]


def _op(backend, name):
    return getattr(torch.ops.ffops, _PREFIX[backend] + name).default


def _samples(device, dtype=torch.float32):
    x = torch.randn(5, 37, device=device, dtype=dtype, requires_grad=True)
    strided = torch.randn(5, 40, device=device, dtype=dtype)[:, :37].requires_grad_(True)
    b3, l3 = table("gelu", 3)
    codes2 = torch.randint(0, 256, ((5 * 37 * 2 + 7) // 8,), dtype=torch.uint8, device=device)
    codes3 = torch.randint(0, 256, ((5 * 37 * 3 + 7) // 8,), dtype=torch.uint8, device=device)
    stat = stat_dtype(dtype)
    rstd = torch.rand(5, device=device, dtype=stat) + 0.5
    y = torch.randn(5, 37, device=device, dtype=dtype)
    return {
        "packed_act_fwd": [(x, 0, list(REGELU2[0]), list(REGELU2[1]), 2), (x, 7, list(b3), list(l3), 3)],
        "packed_act_bwd": [
            (torch.randn_like(x.detach()), codes2, list(REGELU2[1]), 2),
            (torch.randn_like(x.detach()), codes3, list(l3), 3),
        ],
        "ms_norm_fwd": [(x, 1e-5, True, None), (strided, 1e-6, False, None)]
        + ([(x, 1e-5, True, torch.bfloat16)] if dtype != torch.float64 else []),
        "ms_norm_bwd": [
            (torch.randn_like(y), y, rstd, True, dtype),
            (torch.randn_like(y), y, rstd, False, dtype),
        ],
    }


@pytest.mark.parametrize("backend_device", BACKEND_DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_opcheck(backend_device, name):
    backend, device = backend_device
    for args in _samples(device)[name]:
        torch.library.opcheck(_op(backend, name), args)


@pytest.mark.skipif("cpp" not in KERNELS, reason="ffops._C not built")
@pytest.mark.parametrize("center", [True, False])
def test_gradcheck_ms_norm_cpu_kernel_fp64(center):
    x = torch.randn(4, 9, dtype=torch.float64, requires_grad=True)
    strided = torch.randn(4, 12, dtype=torch.float64)[:, :9].requires_grad_(True)
    for t in (x, strided):
        assert torch.autograd.gradcheck(lambda a: _op("cpu", "ms_norm_fwd")(a, 1e-5, center, None)[0], (t,))


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
        "regelu2": lambda x: ffops.regelu2(x),
        "resilu2": lambda x: ffops.resilu2(x),
        "fewbit-3": lambda x: ffops.fewbit(x, "gelu", 3),
        "fewbit-tanh-1": lambda x: ffops.fewbit(x, "tanh", 1),
        "ms_layernorm": lambda x: ffops.ms_layernorm(x),
        "ms_rmsnorm": lambda x: ffops.ms_rmsnorm(x),
        "ms_layernorm-bf16-out": lambda x: ffops.ms_layernorm(x, out_dtype=torch.bfloat16).float(),
    }


@pytest.mark.parametrize("call", list(_public_calls()))
def test_torch_compile_fullgraph(backend_device, call):
    """Each public op compiles with fullgraph=True (no graph break) and gives the eager result and gradient."""
    _, device = backend_device
    fn = _public_calls()[call]
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True)
    x = torch.randn(6, 35, device=device, requires_grad=True)
    g = torch.randn(6, 35, device=device)
    out_c, out_e = compiled(x), fn(x)
    torch.testing.assert_close(out_c, out_e)
    (gc,) = torch.autograd.grad(out_c, x, g)
    (ge,) = torch.autograd.grad(out_e, x, g)
    torch.testing.assert_close(gc, ge)


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


X = torch.randn(4, 8)


@pytest.mark.parametrize(
    "call,exc,pattern",
    [
        (lambda: ffops.regelu2(X.long()), TypeError, r"ffops.regelu2: x must be float32.*got torch.int64"),
        (
            lambda: ffops.regelu2(X.numpy()),
            TypeError,
            r"ffops.regelu2: x must be a torch.Tensor, got ndarray",
        ),
        (
            lambda: ffops.regelu2(X, approximate="fast"),
            ValueError,
            r"approximate must be one of 'none' \| 'tanh'",
        ),
        (lambda: ffops.resilu2(X.to(torch.complex64)), TypeError, r"ffops.resilu2: x must be float32"),
        (
            lambda: ffops.fewbit(X, "relu6"),
            ValueError,
            r"ffops.fewbit: fn must be one of 'gelu' \|.*got 'relu6'",
        ),
        (lambda: ffops.fewbit(X, "gelu", 5), ValueError, r"ffops.fewbit: bits must be in 1..4, got 5"),
        (lambda: ffops.fewbit(X, "gelu", 0), ValueError, r"bits must be in 1..4, got 0"),
        (lambda: ffops.fewbit(X, "gelu", 2.0), TypeError, r"bits must be an int in 1..4, got float"),
        (lambda: ffops.fewbit(X, "gelu", True), TypeError, r"bits must be an int in 1..4, got bool"),
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
        (lambda: ffops.nn.FewBitAct("gelu", 7), ValueError, r"FewBitAct: bits must be in 1..4, got 7"),
        (lambda: ffops.nn.FewBitAct("swish"), ValueError, r"FewBitAct: fn must be one of"),
        (lambda: ffops.nn.ReGELU2("erf"), ValueError, r"ReGELU2: approximate must be one of"),
    ],
)
def test_bad_input_raises_clear_error(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


def test_reference_backend_validates_too():
    with ffops.use_backend("reference"), pytest.raises(ValueError, match="bits must be in 1..4"):
        ffops.fewbit(X, "gelu", 9)


@pytest.mark.skipif("cpp" not in KERNELS, reason="ffops._C not built")
def test_kernel_checks_guard_direct_calls():
    op = torch.ops.ffops
    with pytest.raises(RuntimeError, match="need 3 borders"):
        op.packed_act_fwd(X, 0, [0.0], [0.0] * 4, 2)
    with pytest.raises(RuntimeError, match="fn must be an activation id"):
        op.packed_act_fwd(X, 8, [0.0], [0.0, 1.0], 1)
    for borders in ([1.0, 0.0, 2.0], [0.0, float("nan"), 2.0]):
        with pytest.raises(RuntimeError, match="borders must be ascending numbers"):
            op.packed_act_fwd(X, 0, borders, [0.0] * 4, 2)
    with pytest.raises(RuntimeError, match="codes must be a contiguous uint8 vector of 8 bytes"):
        op.packed_act_bwd(X, torch.zeros(3, dtype=torch.uint8), [0.0] * 4, 2)
    with pytest.raises(RuntimeError, match="x must be 2-D"):
        op.ms_norm_fwd(X[0], 1e-5, True, None)
    with pytest.raises(RuntimeError, match="out_dtype must be float32"):
        op.ms_norm_fwd(X, 1e-5, True, torch.float64)
