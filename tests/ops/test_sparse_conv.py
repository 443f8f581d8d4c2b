"""The direct sparse convolution (CPU; ffops.ops.sparse_conv) against F.conv2d with the dense weight:
output, dx, the weight gradient at the nonzeros and db over kernel sizes, strides, paddings (also wider
than the kernel reaches), dilations, groups, dtypes, index dtypes, layouts and empty patterns; the
gradients each input asks for only; its torch.library contract (opcheck, gradcheck); clear errors
from the op; and that SparseConv2d takes it (and agrees with its im2col path)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ffops import _backend
from ffops.nn import SparseConv2d
from ffops.ops.sparse_conv import DIRECT_OK, direct_conv_applies, sparse_conv2d_direct
from ffops.sparse import magnitude_mask

pytestmark = pytest.mark.skipif(not DIRECT_OK, reason="ffops._C CPU kernels not built")


def _layer(
    c, o, kernel, sparsity, *, padding, dilation, stride=1, groups=1, bias=True, dtype=torch.float32, index=torch.int32
):
    conv = nn.Conv2d(c, o, kernel, stride, padding, dilation, groups=groups, bias=bias, dtype=dtype)
    mask = magnitude_mask(conv.weight.detach(), sparsity)
    return SparseConv2d.from_dense(conv, mask=mask, index_dtype=index)


def _direct(layer, x, bias=True):
    return sparse_conv2d_direct(
        x,
        layer.values,
        layer.crow_indices,
        layer.col_indices,
        layer.transposed,
        layer.bias if bias else None,
        layer.kernel_size,
        layer.stride,
        layer.padding,
        layer.dilation,
    )


def _dense(layer, x):
    w = layer.dense_conv_weight()
    return F.conv2d(x, w, layer.bias, layer.stride, layer.padding, layer.dilation, layer.groups)


def _grads(fn, layer, x, grad_y):
    layer.zero_grad(set_to_none=True)
    xl = x.detach().clone().requires_grad_(True)
    y = fn(layer, xl)
    (y * grad_y).sum().backward()
    return y.detach(), xl.grad, layer.values.grad.clone(), None if layer.bias is None else layer.bias.grad.clone()


GEOMETRIES = [  # C, O, (H, W), kernel, stride, padding, dilation, groups
    (3, 5, (7, 9), (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (4, 6, (8, 5), (3, 3), (1, 1), (0, 0), (1, 1), 1),
    (2, 3, (6, 6), (1, 1), (1, 1), (0, 0), (1, 1), 1),
    (2, 3, (5, 4), (1, 1), (1, 1), (1, 2), (1, 1), 1),  # padding beyond the kernel's reach
    (3, 4, (9, 11), (5, 3), (1, 1), (2, 1), (1, 1), 1),
    (4, 4, (10, 9), (3, 3), (1, 1), (2, 2), (2, 2), 2),
    (6, 4, (7, 8), (2, 4), (1, 1), (3, 1), (2, 3), 2),  # even and unequal kernels, dilation > padding
    (8, 8, (4, 4), (3, 3), (1, 1), (1, 1), (1, 1), 4),
    (16, 24, (13, 13), (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (4, 6, (8, 8), (3, 3), (2, 2), (1, 1), (1, 1), 1),  # ResNet's downsampling 3 x 3
    (4, 6, (9, 7), (1, 1), (2, 2), (0, 0), (1, 1), 1),  # and its 1 x 1 shortcut (odd sizes)
    (3, 5, (11, 10), (3, 5), (3, 2), (2, 1), (1, 2), 1),
    (4, 4, (12, 9), (4, 3), (2, 3), (0, 2), (2, 1), 2),
    (2, 3, (5, 5), (3, 3), (4, 4), (1, 1), (1, 1), 1),  # stride beyond the kernel: inputs never read
]


@pytest.mark.parametrize("c,o,hw,kernel,stride,padding,dilation,groups", GEOMETRIES)
@pytest.mark.parametrize("sparsity", [0.0, 0.8, 1.0])
def test_direct_conv_equals_dense(c, o, hw, kernel, stride, padding, dilation, groups, sparsity):
    layer = _layer(
        c, o, kernel, sparsity, stride=stride, padding=padding, dilation=dilation, groups=groups, dtype=torch.float64
    )
    x = torch.randn(3, c, *hw, dtype=torch.float64)
    y_ref = _dense(layer, x)
    grad_y = torch.randn_like(y_ref)
    got = _grads(_direct, layer, x, grad_y)
    want = _grads(_dense, layer, x, grad_y)
    dense_values_grad = want[2]  # dense_conv_weight is differentiable w.r.t. values
    for a, b, name in zip(got, (*want[:2], dense_values_grad, want[3]), ("y", "dx", "dvalues", "dbias")):
        assert a.shape == b.shape, name
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("index", [torch.int32, torch.int64], ids=str)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
def test_dtypes_indices_bias_layouts(dtype, index, bias, channels_last):
    layer = _layer(12, 20, 3, 0.9, padding=1, dilation=1, bias=bias, dtype=dtype, index=index)
    x = torch.randn(5, 12, 17, 15, dtype=dtype)  # 5 * 17 * 16 positions: not a whole number of vectors
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    grad_y = torch.randn(5, 20, 17, 15, dtype=dtype)
    got, want = _grads(_direct, layer, x, grad_y), _grads(_dense, layer, x, grad_y)
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-10}
    assert got[0].is_contiguous()
    for a, b in zip(got, want):
        if b is None:
            assert a is None
        else:
            torch.testing.assert_close(a, b, **tol)


def test_only_the_asked_gradients():
    layer = _layer(4, 6, 3, 0.7, padding=1, dilation=1)
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    layer.values.requires_grad_(False)
    _direct(layer, x).sum().backward()
    assert x.grad is not None and layer.values.grad is None and layer.bias.grad is not None
    layer.values.requires_grad_(True)
    x2 = torch.randn(2, 4, 6, 6)
    _direct(layer, x2).sum().backward()
    assert layer.values.grad is not None
    with torch.no_grad():
        y = _direct(layer, x2)
    assert y.grad_fn is None
    y = _direct(layer, x)
    assert y.grad_fn.name() == "ffops::SparseConv2dBackward"


def test_a_second_backward_is_refused_not_wrong():
    layer = _layer(3, 4, 3, 0.5, padding=1, dilation=1, dtype=torch.float64)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    (gx,) = torch.autograd.grad(_direct(layer, x).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="first-order only"):
        gx.sum().backward()


def test_empty_batch_and_nan_propagates():
    layer = _layer(3, 4, 3, 0.5, padding=1, dilation=1)
    x = torch.randn(0, 3, 5, 5, requires_grad=True)
    y = _direct(layer, x)
    assert y.shape == (0, 4, 5, 5)
    y.sum().backward()
    assert x.grad.shape == x.shape
    x = torch.randn(1, 3, 5, 5)
    x[0, 0, 2, 2] = float("nan")
    y = _direct(layer, x)
    assert torch.isnan(y).any() == torch.isnan(_dense(layer, x)).any()


GEOMETRY = ([3, 3], [1, 1], [1, 1], [1, 1])  # kernel_size, stride, padding, dilation


def test_opcheck_and_gradcheck():
    layer = _layer(3, 4, 3, 0.6, padding=1, dilation=1, dtype=torch.float64)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    args = (
        x,
        layer.values,
        layer.crow_indices,
        layer.col_indices,
        *layer.transposed,
        layer.bias,
        *GEOMETRY,
    )
    torch.library.opcheck(torch.ops.ffops.sparse_conv2d_fwd.default, args)
    grad_y = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    bwd_args = (grad_y, x.detach(), layer.values.detach(), *layer.transposed, *GEOMETRY)
    torch.library.opcheck(torch.ops.ffops.sparse_conv2d_bwd.default, (*bwd_args, True, True))
    torch.library.opcheck(torch.ops.ffops.sparse_conv2d_bwd.default, (*bwd_args, False, True))
    assert torch.autograd.gradcheck(
        lambda x, v, b: torch.ops.ffops.sparse_conv2d_fwd(x, v, *args[2:7], b, *GEOMETRY), (x, layer.values, layer.bias)
    )


def test_op_errors_name_the_argument():
    layer = _layer(3, 4, 3, 0.5, padding=1, dilation=1)
    t = layer.transposed
    op = torch.ops.ffops.sparse_conv2d_fwd
    base = (layer.values, layer.crow_indices, layer.col_indices, *t, None)
    with pytest.raises(RuntimeError, match=r"x must be \[N, C, H, W\]"):
        op(torch.randn(3, 5, 5), *base, *GEOMETRY)
    with pytest.raises(RuntimeError, match="larger than the padded input"):
        op(torch.randn(1, 3, 2, 2), *base, [3, 3], [1, 1], [0, 0], [1, 1])
    with pytest.raises(RuntimeError, match="stride must be positive"):
        op(torch.randn(1, 3, 5, 5), *base, [3, 3], [0, 1], [1, 1], [1, 1])
    with pytest.raises(RuntimeError, match=r"t_ptr \(C \* kh \* kw \+ 1\) must have 37 entries"):
        op(torch.randn(1, 4, 5, 5), *base, *GEOMETRY)
    with pytest.raises(RuntimeError, match="values must have the dtype of x"):
        op(torch.randn(1, 3, 5, 5, dtype=torch.float64), *base, *GEOMETRY)
    with pytest.raises(RuntimeError, match="float32 or float64 on the CPU"):
        op(torch.randn(1, 3, 5, 5, dtype=torch.bfloat16), *base, *GEOMETRY)


def test_sparse_conv2d_takes_the_direct_path_and_agrees_with_im2col():
    conv = nn.Conv2d(8, 16, 3, padding=1)
    direct = SparseConv2d.from_dense(conv, sparsity=0.9)
    im2col = SparseConv2d.from_dense(conv, sparsity=0.9, algorithm="im2col")
    x = torch.randn(4, 8, 12, 10)
    with _backend.use_backend("cpu"):
        assert direct_conv_applies(x, (3, 3), (1, 1)) and direct_conv_applies(x, (3, 3), (2, 2))
        assert not direct_conv_applies(x.bfloat16(), (3, 3), (1, 1))
        assert not direct_conv_applies(x, (1, 1), (2, 2))  # im2col is a strided gather there
        y = direct(x)
        assert y.grad_fn.name() == "ffops::SparseConv2dBackward"
        assert im2col(x).grad_fn.name() != "ffops::SparseConv2dBackward"
        torch.testing.assert_close(y, im2col(x), rtol=1e-5, atol=1e-5)
    with _backend.use_backend("reference"):
        assert not direct_conv_applies(x, (3, 3), (1, 1))
    with pytest.raises(ValueError, match="algorithm must be one of"):
        SparseConv2d.from_dense(conv, sparsity=0.9, algorithm="winograd")
    assert "algorithm='im2col'" in repr(im2col)
