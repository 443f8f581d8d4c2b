"""``ffops.randomized_linear`` / ``RandomizedLinear``: the sketch kernels give the specification's
bits on every backend, the forward and the x / bias gradients are exact, the weight gradient is the
sketched product and unbiased with the paper's variance (tested statistically over many seeds), and
the memory saved for backward is the sketch's."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ffops
from ffops.memory import saved_bytes
from ffops.reference import randomized_linear as ref
from tests.helpers import kernel_op

KINDS = ("gaussian", "rademacher")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rows,n,k", [(70, 50, 13), (3000, 9, 600), (5, 3, 1)])
def test_sketch_kernel_matches_the_specification(backend_device, dtype, kind, rows, n, k):
    backend, device = backend_device
    if backend == "triton" and rows > 1000:
        pytest.skip("the interpreter is slow on big sketches; the small shapes cover the Triton kernel")
    a = torch.randn(rows, n, dtype=dtype, device=device)
    seed = 2**40 + 12345
    got = kernel_op(backend, "rmm_sketch")(a, torch.tensor(seed), k, KINDS.index(kind))
    want = ref.rmm_sketch(a, seed, k, kind)
    assert got.dtype == dtype and got.shape == (k, n)
    tol = {torch.float32: 2e-5, torch.float64: 1e-12, torch.bfloat16: 1e-2}[dtype]
    torch.testing.assert_close(got.double(), want.double(), rtol=tol, atol=tol * rows**0.5)


def test_sketch_of_empty_rows_is_zero(backend_device):
    backend, device = backend_device
    out = kernel_op(backend, "rmm_sketch")(torch.empty(0, 4, device=device), torch.tensor(1), 3, 0)
    assert out.shape == (3, 4) and not out.any()


@pytest.mark.parametrize("kind", KINDS)
def test_forward_and_exact_gradients(backend_device, kind):
    _, device = backend_device
    x = torch.randn(4, 25, 12, device=device, requires_grad=True)
    lin = nn.Linear(12, 7, device=device)
    y = ffops.randomized_linear(x, lin.weight, lin.bias, ratio=0.3, seed=99, kind=kind)
    torch.testing.assert_close(y, F.linear(x, lin.weight, lin.bias), rtol=0, atol=0)
    g = torch.randn_like(y)
    dx, dw, db = torch.autograd.grad(y, (x, lin.weight, lin.bias), g)
    ex, ew, eb = torch.autograd.grad(F.linear(x, lin.weight, lin.bias), (x, lin.weight, lin.bias), g)
    torch.testing.assert_close(dx, ex)
    torch.testing.assert_close(db, eb)
    # the weight gradient is (S^T dY)^T (S^T X) with S regenerated from the seed
    rows, k = 100, ref.sketch_rows(100, 0.3)
    s = ref.sketch_matrix(99, rows, k, kind, torch.float64, device)
    x2, g2 = x.detach().reshape(rows, 12).double(), g.reshape(rows, 7).double()
    torch.testing.assert_close(dw.double(), (s.t() @ g2).t() @ (s.t() @ x2), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(dw, ew, atol=1e-3)  # an estimate, not the exact gradient


@pytest.mark.parametrize("kind", KINDS)
def test_weight_gradient_is_unbiased_with_the_papers_variance(kind):
    """Over 3000 seeds the mean of dW converges to dY^T X: each entry's z-score (mean - exact) /
    sqrt(Var / M) is within 5, and for the Gaussian sketch the z-scores have unit variance (the
    formula of ffops.reference.randomized_linear.dw_variance; Rademacher's variance is smaller)."""
    gen = torch.Generator().manual_seed(0)
    rows, nin, nout, ratio, draws = 48, 5, 4, 0.25, 3000
    x = torch.randn(rows, nin, generator=gen, dtype=torch.float64)
    g = torch.randn(rows, nout, generator=gen, dtype=torch.float64)
    w = torch.randn(nout, nin, dtype=torch.float64, requires_grad=True)
    k = ref.sketch_rows(rows, ratio)
    total = torch.zeros(nout, nin, dtype=torch.float64)
    for seed in range(draws):
        y = ffops.randomized_linear(x, w, ratio=ratio, seed=seed, kind=kind)
        (dw,) = torch.autograd.grad(y, w, g)
        total += dw
    z = (total / draws - g.t() @ x) / (ref.dw_variance(x, g, k) / draws).sqrt()
    assert z.abs().max() < 5, z
    if kind == "gaussian":
        assert 0.6 < (z * z).mean() < 1.5, (z * z).mean()


def test_saved_for_backward_is_the_sketch():
    x = torch.randn(64, 32, 256)
    lin = nn.Linear(256, 256)
    plain = saved_bytes(lambda: lin(x))
    sketched = saved_bytes(lambda: ffops.randomized_linear(x, lin.weight, lin.bias, ratio=0.2))
    rows = 64 * 32
    assert plain == rows * 256 * 4
    assert sketched == ref.sketch_rows(rows, 0.2) * 256 * 4 + 8  # + the seed


def test_autocast_sketches_in_the_autocast_dtype():
    lin = nn.Linear(16, 8)
    x = torch.randn(40, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ffops.randomized_linear(x, lin.weight, lin.bias, ratio=0.5, seed=3)
        nbytes = saved_bytes(lambda: ffops.randomized_linear(x, lin.weight, lin.bias, ratio=0.5, seed=3))
    assert y.dtype == torch.bfloat16 and nbytes == 20 * 16 * 2 + 8
    y.float().sum().backward()
    assert x.grad.dtype == torch.float32 and lin.weight.grad.dtype == torch.float32 and lin.bias.grad is not None


def test_gradcheck_of_the_exact_parts():
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 5, dtype=torch.float64)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, b: ffops.randomized_linear(x, w, b, ratio=0.5, seed=1), (x, b))


def test_opcheck_of_the_sketch_operator():
    a = torch.randn(30, 7)
    torch.library.opcheck(torch.ops.ffops.rmm_sketch.default, (a, torch.tensor(5), 4, 0))


def test_compiles_fullgraph_and_matches_eager():
    lin = nn.Linear(12, 6)
    x = torch.randn(20, 12, requires_grad=True)

    def fn(x):
        return ffops.randomized_linear(x, lin.weight, lin.bias, ratio=0.4, seed=11)

    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    g = torch.randn(20, 6)
    out_c, out_e = compiled(x), fn(x)
    torch.testing.assert_close(out_c, out_e)
    grads_c = torch.autograd.grad(out_c, (x, lin.weight), g)
    grads_e = torch.autograd.grad(out_e, (x, lin.weight), g)
    for a, b in zip(grads_c, grads_e):
        torch.testing.assert_close(a, b)


def test_module_shares_the_parameters_and_is_plain_without_grad():
    lin = nn.Linear(10, 4)
    rl = ffops.nn.RandomizedLinear.from_linear(lin, 0.25)
    assert rl.weight is lin.weight and rl.bias is lin.bias and isinstance(rl, nn.Linear)
    assert "ratio=0.25, kind='gaussian'" in repr(rl)
    x = torch.randn(8, 10)
    with torch.no_grad():
        torch.testing.assert_close(rl(x), lin(x))
    assert saved_bytes(lambda: rl(x)) == ref.sketch_rows(8, 0.25) * 10 * 4 + 8
    fresh = ffops.nn.RandomizedLinear(10, 4, ratio=0.5, kind="rademacher")
    assert set(fresh.state_dict()) == {"weight", "bias"}


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"ratio": 0.0}, ValueError, r"ratio must be in \(0, 1\]"),
        ({"ratio": 1.5}, ValueError, r"ratio must be in \(0, 1\]"),
        ({"ratio": "a"}, TypeError, r"ratio must be a float"),
        ({"ratio": 0.5, "kind": "uniform"}, ValueError, r"kind must be one of"),
        ({"ratio": 0.5, "seed": -1}, ValueError, r"seed must be None or an int in \[0, 2\^63\)"),
        ({"ratio": 0.5, "w": torch.randn(3, 4)}, ValueError, r"x has 5 features, weight takes 4"),
        ({"ratio": 0.5, "w": torch.randn(5)}, ValueError, r"weight must be 2-D"),
        ({"ratio": 0.5, "b": torch.randn(4)}, ValueError, r"bias must be a \[3\] tensor"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    w = kwargs.pop("w", torch.randn(3, 5))
    b = kwargs.pop("b", None)
    with pytest.raises(exc, match=match):
        ffops.randomized_linear(torch.randn(2, 5), w, b, **kwargs)
