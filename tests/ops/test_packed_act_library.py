"""The torch.library contract of the packed_act ops (ReGELU2, ReSiLU2, Few-Bit): opcheck,
torch.compile(fullgraph=True), bad input errors and the kernels' own checks."""

import pytest
import torch

import ffops
from ffops.ops._act_tables import REGELU2, table
from ffops.ops.packed_act import KERNELS
from tests.conftest import BACKEND_DEVICES
from tests.helpers import assert_compile_matches_eager, kernel_op

NAMES = ["packed_act_fwd", "packed_act_bwd"]
X = torch.randn(4, 8)


def _samples(device, dtype=torch.float32):
    x = torch.randn(5, 37, device=device, dtype=dtype, requires_grad=True)
    b3, l3 = table("gelu", 3)
    codes2 = torch.randint(0, 256, ((5 * 37 * 2 + 7) // 8,), dtype=torch.uint8, device=device)
    codes3 = torch.randint(0, 256, ((5 * 37 * 3 + 7) // 8,), dtype=torch.uint8, device=device)
    return {
        "packed_act_fwd": [(x, 0, list(REGELU2[0]), list(REGELU2[1]), 2), (x, 7, list(b3), list(l3), 3)],
        "packed_act_bwd": [
            (torch.randn_like(x.detach()), codes2, list(REGELU2[1]), 2),
            (torch.randn_like(x.detach()), codes3, list(l3), 3),
        ],
    }


@pytest.mark.parametrize("backend_device", BACKEND_DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_opcheck(backend_device, name):
    backend, device = backend_device
    for args in _samples(device)[name]:
        torch.library.opcheck(kernel_op(backend, name), args)


def _public_calls():
    return {
        "regelu2": lambda x: ffops.regelu2(x),
        "resilu2": lambda x: ffops.resilu2(x),
        "fewbit-3": lambda x: ffops.fewbit(x, "gelu", 3),
        "fewbit-tanh-1": lambda x: ffops.fewbit(x, "tanh", 1),
    }


@pytest.mark.parametrize("call", list(_public_calls()))
def test_torch_compile_fullgraph(backend_device, call):
    """Each public op compiles with fullgraph=True (no graph break) and gives the eager result and gradient."""
    _, device = backend_device
    x = torch.randn(6, 35, device=device, requires_grad=True)
    assert_compile_matches_eager(_public_calls()[call], x, torch.randn(6, 35, device=device))


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
            lambda: ffops.fewbit(X, "relu"),
            ValueError,
            r"ffops.fewbit: fn must be one of 'gelu' \|.*got 'relu'",
        ),
        (lambda: ffops.fewbit(X, "gelu", 5), ValueError, r"ffops.fewbit: bits must be in 1..4, got 5"),
        (lambda: ffops.fewbit(X, "gelu", 0), ValueError, r"bits must be in 1..4, got 0"),
        (lambda: ffops.fewbit(X, "gelu", 2.0), TypeError, r"bits must be an int in 1..4, got float"),
        (lambda: ffops.fewbit(X, "gelu", True), TypeError, r"bits must be an int in 1..4, got bool"),
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
        op.packed_act_fwd(X, 15, [0.0], [0.0, 1.0], 1)
    for borders in ([1.0, 0.0, 2.0], [0.0, float("nan"), 2.0]):
        with pytest.raises(RuntimeError, match="borders must be ascending numbers"):
            op.packed_act_fwd(X, 0, borders, [0.0] * 4, 2)
    with pytest.raises(RuntimeError, match="codes must be a contiguous uint8 vector of 8 bytes"):
        op.packed_act_bwd(X, torch.zeros(3, dtype=torch.uint8), [0.0] * 4, 2)
