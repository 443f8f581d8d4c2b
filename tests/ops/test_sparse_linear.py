"""ffops.sparse_linear on every backend against the dense masked reference (output, dX, dW at the
nonzeros, db), plus its torch.library contract: opcheck, gradcheck in float64, torch.compile."""

import pytest
import torch

import ffops
from ffops.ops.sparse_linear import KERNELS
from ffops.sparse import magnitude_mask, pattern_from_mask, transpose_pattern
from tests.helpers import assert_matches_reference

LOW = (torch.float16, torch.bfloat16)


def _pattern(out_f, in_f, sparsity, index_dtype=torch.int32, *, empty_row=False, empty_col=False):
    keep = magnitude_mask(torch.randn(out_f, in_f), sparsity)
    if empty_row and out_f > 1:
        keep[out_f // 2] = False
    if empty_col and in_f > 1:
        keep[:, in_f // 3] = False
    return keep, *pattern_from_mask(keep, index_dtype)


def _run(x, values, crow, col, bias, out_f, grad_y):
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None for t in (x, values, bias)]
    y = ffops.sparse_linear(leaves[0], leaves[1], crow, col, leaves[2], out_f)
    (y.float() * grad_y.to(y.device)).sum().backward()
    return [y.detach()] + [t.grad if t is not None else None for t in leaves]


CASES = [  # batch shape, in, out, sparsity
    ((1,), 1, 1, 0.0),
    ((5,), 7, 3, 0.5),
    ((2, 9), 33, 17, 0.9),
    ((130,), 64, 40, 0.8),
    ((16,), 20, 24, 1.0),
]


@pytest.mark.parametrize("batch,in_f,out_f,sparsity", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64], ids=str)
@pytest.mark.parametrize("with_bias", [True, False])
def test_sparse_linear_matches_reference(backend_device, batch, in_f, out_f, sparsity, dtype, index_dtype, with_bias):
    backend, device = backend_device
    _, crow, col = _pattern(out_f, in_f, sparsity, index_dtype, empty_row=True, empty_col=True)
    crow, col = crow.to(device), col.to(device)
    x64 = torch.randn(*batch, in_f, dtype=torch.float64)
    v64 = torch.randn(col.numel(), dtype=torch.float64) / in_f**0.5
    b64 = 0.1 * torch.randn(out_f, dtype=torch.float64) if with_bias else None
    x, v = x64.to(device, dtype), v64.to(device, dtype)
    b = None if b64 is None else b64.to(device, dtype)
    grad_y = torch.randn(*batch, out_f)
    if backend == "cpu" and dtype in LOW:
        with pytest.raises(TypeError, match="float32 or float64"):
            ffops.sparse_linear(x, v, crow, col, b, out_f)
        return
    got = _run(x, v, crow, col, b, out_f, grad_y)
    with ffops.use_backend("reference"):
        ref64 = _run(x64.to(device), v64.to(device), crow, col, None if b64 is None else b64.to(device), out_f, grad_y)
        ref_d = _run(x, v, crow, col, b, out_f, grad_y)
    for name, g, r, t in zip(["y", "grad_x", "grad_values", "grad_bias"], got, ref64, ref_d):
        if g is None:
            assert r is None
            continue
        assert_matches_reference(g, r, t, name)


@pytest.mark.parametrize("feature_major", [True, False])
def test_output_layout_follows_input(backend_device, feature_major):
    _, device = backend_device
    _, crow, col = _pattern(12, 10, 0.6)
    crow, col = crow.to(device), col.to(device)
    v = torch.randn(col.numel(), device=device)
    x = torch.randn(10, 6, device=device).t() if feature_major else torch.randn(6, 10, device=device)
    y = ffops.sparse_linear(x, v, crow, col, None, 12)
    assert y.t().is_contiguous() == feature_major and y.is_contiguous() != feature_major
    with ffops.use_backend("reference"):
        assert torch.allclose(y, ffops.sparse_linear(x, v, crow, col, None, 12), atol=1e-5)


def test_empty_batch_and_empty_layers(backend_device):
    _, device = backend_device
    for batch, in_f, out_f in [(0, 8, 5), (4, 8, 0), (4, 0, 5)]:
        _, crow, col = _pattern(out_f, in_f, 0.5)
        crow, col = crow.to(device), col.to(device)
        x = torch.randn(batch, in_f, device=device, requires_grad=True)
        v = torch.randn(col.numel(), device=device, requires_grad=True)
        b = torch.randn(out_f, device=device, requires_grad=True)
        y = ffops.sparse_linear(x, v, crow, col, b, out_f)
        assert y.shape == (batch, out_f)
        if batch and out_f:
            assert torch.allclose(y, b.expand(batch, out_f))  # in_f == 0: bias only
        y.sum().backward()
        assert x.grad.shape == x.shape and v.grad.shape == v.shape and b.grad.shape == b.shape
        assert torch.all(x.grad == 0) and torch.all(v.grad == 0)
        assert torch.all(b.grad == batch)


def test_nan_propagates(backend_device):
    _, device = backend_device
    _, crow, col = _pattern(6, 5, 0.0)
    x = torch.randn(3, 5)
    x[1, 2] = float("nan")
    v = torch.randn(col.numel())
    y = ffops.sparse_linear(x.to(device), v.to(device), crow.to(device), col.to(device), None, 6).cpu()
    assert torch.isnan(y[1]).all() and not torch.isnan(y[[0, 2]]).any()


def test_gradcheck_float64_cpu():
    _, crow, col = _pattern(7, 9, 0.6, torch.int64, empty_row=True, empty_col=True)
    t = transpose_pattern(crow, col, 9)
    x = torch.randn(2, 3, 9, dtype=torch.float64, requires_grad=True)
    v = torch.randn(col.numel(), dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, dtype=torch.float64, requires_grad=True)
    with ffops.use_backend("cpu"):
        assert torch.autograd.gradcheck(
            lambda x, v, b: ffops.sparse_linear(x, v, crow, col, b, 7, transposed=t), (x, v, b)
        )


def test_double_backward_is_refused_not_wrong():
    _, crow, col = _pattern(4, 5, 0.5)
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    v = torch.randn(col.numel(), dtype=torch.float64, requires_grad=True)
    with ffops.use_backend("cpu"):
        y = ffops.sparse_linear(x, v, crow, col, None, 4)
        (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
        with pytest.raises(RuntimeError, match="first-order only"):
            gx.sum().backward()


def _kernel_args(device, dtype=torch.float32):
    _, crow, col = _pattern(9, 11, 0.7, empty_row=True)
    t = transpose_pattern(crow, col, 11)
    xt = torch.randn(11, 6, device=device, dtype=dtype)
    v = torch.randn(col.numel(), device=device, dtype=dtype)
    dyt = torch.randn(9, 6, device=device, dtype=dtype)
    b = torch.randn(9, device=device, dtype=dtype)
    crow, col = crow.to(device), col.to(device)
    return (xt, v, crow, col, b), (dyt, xt, v, *(p.to(device) for p in t), True, True)


def test_opcheck_kernel_ops(backend_device):
    backend, device = backend_device
    kernels = KERNELS["triton" if backend == "triton" else "cpp"]
    fwd, bwd = kernels.sparse_linear_fwd, kernels.sparse_linear_bwd
    fwd_args, bwd_args = _kernel_args(device)
    torch.library.opcheck(fwd, fwd_args)
    torch.library.opcheck(bwd, bwd_args)
    torch.library.opcheck(bwd, bwd_args[:-2] + (False, True))


def test_compile_fullgraph(backend_device):
    _, device = backend_device
    layer = ffops.nn.SparseLinear.from_dense(torch.nn.Linear(16, 12), sparsity=0.75).to(device)
    x = torch.randn(5, 16, device=device)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    y = compiled(x)
    y.sum().backward()
    g = layer.values.grad.clone()
    layer.values.grad = None
    y_eager = layer(x)
    y_eager.sum().backward()
    assert torch.allclose(y, y_eager, atol=1e-6) and torch.allclose(g, layer.values.grad, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 1), (16, 16), (37, 1000), (256, 130), (5, 0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_cpu_transpose(shape, dtype):
    if "cpp" not in KERNELS:
        pytest.skip("ffops._C not built")
    x = torch.randn(*shape, dtype=dtype)
    assert torch.equal(torch.ops.ffops.transpose_2d(x), x.t().contiguous())
    torch.library.opcheck(torch.ops.ffops.transpose_2d.default, (x,))


def test_pattern_is_transposed_once_per_index_tensors():
    from ffops.ops import sparse_linear as sparse_op

    crow, col = torch.tensor([0, 2, 3]), torch.tensor([0, 2, 1])  # rows {0, 2} and {1} of a [2, 3] weight
    x, v = torch.randn(4, 3), torch.randn(3)
    first = sparse_op._transposed_pattern(crow, col, 3)
    assert sparse_op._transposed_pattern(crow, col, 3) is first
    assert sparse_op._transposed_pattern(crow.clone(), col, 3) is not first  # another crow tensor
    y = ffops.sparse_linear(x, v, crow, col, None, 2)
    col[1] = 1  # an in-place change of the pattern (row 0 now uses columns {0, 1}) invalidates it
    assert sparse_op._transposed_pattern(crow, col, 3) is not first
    got = ffops.sparse_linear(x, v, crow, col, None, 2)
    with ffops.use_backend("reference"):
        expected = ffops.sparse_linear(x, v, crow, col, None, 2)
    assert torch.allclose(got, expected, atol=1e-6) and not torch.allclose(y, expected)
