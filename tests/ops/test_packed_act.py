"""ffops.regelu2 / resilu2 / fewbit on every backend against the reference: exact forward, exact
packed codes (size, layout, padding), backward = grad * level[code], NaN, odd sizes, layouts."""

import math

import pytest
import torch
import torch.nn.functional as F

import ffops
from ffops import _backend
from ffops.memory import saved_bytes
from ffops.ops._act_tables import FUNCTIONS, REGELU2, REGELU2_A, REGELU2_C, RESILU2, table
from ffops.ops._common import stat_dtype
from ffops.ops.packed_act import KERNELS
from ffops.reference import packed_act as ref
from tests.helpers import assert_matches_reference, make

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
SIZES = [1, 3, 7, 8, 13, 1000, 2053, 4099]  # odd counts, not multiples of 4 or 8; above one CPU chunk


def _kernels(backend):
    return KERNELS[{"cpu": "cpp", "cuda": "cpp", "triton": "triton"}[backend]]


def _inputs(n, dtype, device, scale=3.0):
    return make((n,), dtype, device, scale=scale)


@pytest.mark.parametrize("fn", FUNCTIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_forward_matches_torch(backend_device, fn, dtype):
    """y = f(x) as torch computes it: error at most 2x torch's own error in the dtype (+ a few ulps)."""
    _, device = backend_device
    x = make((37, 29), dtype, device, scale=4.0)
    out = ffops.fewbit(x, fn, bits=3)
    torch_fn = ref.ACTIVATIONS[fn]
    assert_matches_reference(out.cpu(), torch_fn(x.cpu().double()), torch_fn(x.cpu()), f"{fn} forward")


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_packed_codes_are_exact(backend_device, n, bits, dtype):
    """The codes bytes equal the reference's: ceil(n * bits / 8) bytes, layout and zero padding included."""
    backend, device = backend_device
    x = _inputs(n, dtype, device)
    borders, levels = table("gelu", bits)
    y, codes = _kernels(backend).packed_act_fwd(x, 0, list(borders), list(levels), bits)
    assert codes.dtype == torch.uint8 and codes.shape == (math.ceil(n * bits / 8),)
    _y_ref, codes_ref = ref.packed_act_fwd(x.cpu(), "gelu", borders, bits)
    assert torch.equal(codes.cpu(), codes_ref)
    assert y.shape == x.shape and y.dtype == dtype and y.is_contiguous()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_16_bit_codes_exact_on_every_value(backend_device, dtype):
    """Every 16-bit pattern (NaNs, infinities, -0, subnormals) against borders that are representable
    in the dtype, lie between two of its values, or lie beyond its range: the codes equal the reference's
    float comparisons (the C++ CPU path compares bit-pattern keys instead). Not under the Triton
    interpreter: its numpy bfloat16 -> float32 conversion flushes subnormals to zero."""
    backend, device = backend_device
    if backend == "triton" and device == "cpu":
        pytest.skip("the Triton interpreter flushes bfloat16 subnormals to zero")
    x = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype).to(device)
    tiny = torch.finfo(dtype).tiny
    cases = {
        1: [0.0],
        2: [-1.0, 1e-3, 3.0e4],
        3: [-7e4, -0.5, -tiny, 0.1, 0.3333, float(torch.tensor(2.5, dtype=dtype)), 6.1e4],
        4: sorted(
            [
                -3e38,
                -2.0,
                -1.0,
                -1.0 / 3,
                -1e-6,
                -tiny / 4,
                0.0,
                tiny / 4,
                1e-6,
                0.2,
                0.7,
                1.0,
                1.5,
                1e4,
                3e38,
            ]
        ),
    }  # ascending, as the op requires
    for bits, borders in cases.items():
        levels = [float(i) for i in range(2**bits)]
        _, codes = _kernels(backend).packed_act_fwd(x, 0, borders, levels, bits)
        _, codes_ref = ref.packed_act_fwd(x.cpu(), "gelu", borders, bits)
        assert torch.equal(codes.cpu(), codes_ref), f"{bits} bits"


def test_two_bit_layout_is_lomems():
    """bits = 2: element i at bits 2 * (i % 4) of byte i // 4 (lomem's layout), spelled out by hand."""
    codes = torch.tensor([0, 1, 2, 3, 3, 2, 1, 0, 2])
    packed = ref.pack(codes, 2)
    assert packed.tolist() == [0 | 1 << 2 | 2 << 4 | 3 << 6, 3 | 2 << 2 | 1 << 4 | 0 << 6, 2]
    assert torch.equal(ref.unpack(packed, 2, 9), codes)
    three = torch.arange(8) % 8  # 3 bits: 8 codes fill exactly 3 bytes
    assert ref.pack(three, 3).numel() == 3 and torch.equal(ref.unpack(ref.pack(three, 3), 3, 8), three)


@pytest.mark.parametrize("n", [1, 13, 2053])
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_backward_is_grad_times_level(backend_device, n, bits, dtype):
    """dx = grad * levels[code(x)] in the compute type: bitwise equal to the reference."""
    _, device = backend_device
    x = _inputs(n, dtype, device).requires_grad_()
    g = make((n,), dtype, device)
    ffops.fewbit(x, "silu", bits).backward(g)
    borders, levels = table("silu", bits)
    acc = stat_dtype(dtype)
    expected = (g.cpu().to(acc) * torch.tensor(levels, dtype=acc)[ref.codes(x.cpu(), borders)]).to(dtype)
    assert torch.equal(x.grad.cpu(), expected)


@pytest.mark.parametrize("op,fn", [(ffops.regelu2, "gelu"), (ffops.resilu2, "silu")])
def test_regelu2_resilu2_match_reference(backend_device, op, fn):
    _, device = backend_device
    x = make((6, 333), torch.float32, device, scale=4.0).requires_grad_()
    g = torch.randn(6, 333, device=device)
    op(x).backward(g)
    with ffops.use_backend("reference"):
        xr = x.detach().clone().requires_grad_()
        y_ref = op(xr)
        y_ref.backward(g)
    torch.testing.assert_close(op(x.detach()), y_ref.detach(), rtol=0, atol=2e-6)
    assert torch.equal(x.grad, xr.grad)


def test_regelu2_levels_are_the_derivative_of_the_relu_fit():
    """ReGELU2's backward is d/dx of sum_i a_i relu(x - c_i): checked against autograd of that fit."""
    x = torch.linspace(-6, 6, 2001, dtype=torch.float64).requires_grad_()
    fit = sum(a * torch.relu(x - c) for a, c in zip(REGELU2_A, REGELU2_C))
    (d_fit,) = torch.autograd.grad(fit.sum(), x)
    with ffops.use_backend("reference"):
        xr = x.detach().clone().requires_grad_()
        ffops.regelu2(xr).sum().backward()
    torch.testing.assert_close(xr.grad, d_fit)
    assert abs(sum(REGELU2_A) - 1) < 1e-12 and abs(sum(a * c for a, c in zip(REGELU2_A, REGELU2_C))) < 1e-12
    assert REGELU2[1][0] == 0.0 and RESILU2[1][0] == 0.0


def test_regelu2_tanh_forward(backend_device):
    _, device = backend_device
    x = make((50,), torch.float32, device, scale=3.0)
    assert_matches_reference(
        ffops.regelu2(x, approximate="tanh").cpu(),
        F.gelu(x.cpu().double(), approximate="tanh"),
        F.gelu(x.cpu(), approximate="tanh"),
    )


@pytest.mark.parametrize("layout", ["transposed", "row-strided", "every-other-row"])
def test_non_contiguous_input(backend_device, layout):
    _, device = backend_device
    x = make((9, 40), torch.float32, device, layout=layout).requires_grad_()
    g = torch.randn(9, 40, device=device)
    y = ffops.fewbit(x, "gelu", 3)
    y.backward(g)
    with ffops.use_backend("reference"):
        xr = x.detach().clone().requires_grad_()
        y_ref = ffops.fewbit(xr, "gelu", 3)
        y_ref.backward(g)
    torch.testing.assert_close(y.detach(), y_ref.detach(), rtol=0, atol=2e-6)
    assert torch.equal(x.grad, xr.grad)


def test_nan_propagates_and_empty_works(backend_device):
    _, device = backend_device
    for op in (
        ffops.regelu2,
        ffops.resilu2,
        lambda t: ffops.fewbit(t, "mish", 4),
        lambda t: ffops.fewbit(t, "elu", 1),
    ):
        x = torch.randn(3, 17, device=device)
        x[1, 3] = float("nan")
        x.requires_grad_()
        y = op(x)
        assert torch.isnan(y[1, 3]) and torch.isfinite(y[0]).all() and torch.isfinite(y[2]).all()
        g = torch.ones_like(y)
        g[2, 5] = float("nan")
        y.backward(g)
        assert torch.isnan(x.grad[2, 5]) and torch.isfinite(x.grad[0]).all()
        e = torch.empty(0, 4, device=device, requires_grad=True)
        out = op(e)
        assert out.shape == (0, 4)
        out.sum().backward()
        assert e.grad.shape == (0, 4)


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_saves_only_the_packed_codes(backend_device, bits):
    """What autograd keeps for backward is ceil(n * bits / 8) bytes, not the input."""
    _, device = backend_device
    n = 1001
    x = torch.randn(n, device=device, requires_grad=True)
    assert saved_bytes(ffops.fewbit, x, "gelu", bits) == math.ceil(n * bits / 8)
    if bits == 2:
        assert saved_bytes(ffops.regelu2, x) == math.ceil(n / 4)
        assert saved_bytes(ffops.resilu2, x.bfloat16()) == math.ceil(n / 4)


@pytest.mark.skipif(not _backend.CPP_CPU, reason="ffops._C CPU kernels not built")
def test_cpu_kernel_is_deterministic_across_threads():
    """Chunks are independent: 1 and 2 threads give identical bytes (codes of a chunk start on a byte)."""
    x = torch.randn(100_003)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = KERNELS["cpp"].packed_act_fwd(x, 0, list(REGELU2[0]), list(REGELU2[1]), 2)
        torch.set_num_threads(max(2, threads))
        many = KERNELS["cpp"].packed_act_fwd(x, 0, list(REGELU2[0]), list(REGELU2[1]), 2)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], many[0]) and torch.equal(one[1], many[1])
