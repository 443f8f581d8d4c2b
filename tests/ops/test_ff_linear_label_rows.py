"""ffops' ff_label_rows (the first FF layer on every label overlay, for prediction by goodness) on
every backend against the reference, its errors, its torch.library contract (opcheck), and the
prediction path built on it (ffops.ff.goodness_per_label's fast first layer)."""

import pytest
import torch

import ffops
from ffops import ff
from ffops.ff.predict import _first_layer_all_labels
from ffops.ops._common import stat_dtype
from ffops.ops.ff_linear import KERNELS, ff_label_rows
from tests.conftest import BACKEND_DEVICES
from tests.helpers import assert_matches_reference, kernel_op

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]

_stat = stat_dtype


def _inputs(batch, out, labels, dtype, device, *, scale=True, bias=True):
    """(pre, on, label_weight, bias, scale): pre and weights of an FF layer's size, on > 0."""
    pre = torch.randn(batch, out, dtype=torch.float64).to(device=device, dtype=dtype)
    on = (torch.rand(batch, dtype=torch.float64) + 0.5).to(device=device, dtype=_stat(dtype))
    w = torch.randn(out, labels, dtype=torch.float64).to(device=device, dtype=dtype)
    b = (0.1 * torch.randn(out, dtype=torch.float64)).to(device=device, dtype=dtype) if bias else None
    s = (torch.rand(batch, dtype=torch.float64) + 0.5).to(device=device, dtype=_stat(dtype)) if scale else None
    return pre, on, w, b, s


def _double(t):
    return None if t is None else t.double()


CASES = [  # batch, out, labels
    (1, 1, 1),
    (5, 7, 2),
    (13, 33, 10),
    (6, 64, 10),  # out a multiple of every vector width
    (0, 7, 3),
]


@pytest.mark.parametrize("batch,out,labels", CASES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("with_scale,with_bias", [(True, True), (False, False), (True, False)])
def test_ff_label_rows_matches_reference(backend_device, batch, out, labels, dtype, with_scale, with_bias):
    _, device = backend_device
    pre, on, w, b, s = _inputs(batch, out, labels, dtype, device, scale=with_scale, bias=with_bias)
    h, sumsq = ff_label_rows(pre, on, w, b, scale=s)
    assert h.shape == (batch * labels, out) and h.is_contiguous() and sumsq.shape == (batch * labels,)
    assert sumsq.dtype == _stat(dtype)
    with ffops.use_backend("reference"):
        ref64 = ff_label_rows(pre.double(), on.double(), w.double(), _double(b), scale=_double(s))
        ref_d = ff_label_rows(pre, on, w, b, scale=s)
    for name, got, r64, rd in zip(["h", "sumsq"], (h, sumsq), ref64, ref_d):
        assert_matches_reference(got, r64, rd, name)


def test_ff_label_rows_reference_is_the_overlay_definition():
    """Row b * C + c is the layer on sample b with on[b] at feature c (the spec, in float64)."""
    x = torch.rand(4, 9, dtype=torch.float64)
    weight, bias = torch.randn(6, 9, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    on, scale, labels = torch.rand(4, dtype=torch.float64) + 1, torch.rand(4, dtype=torch.float64), 3
    base = x.clone()
    base[:, :labels] = 0
    with ffops.use_backend("reference"):
        h, sumsq = ff_label_rows(base @ weight.t(), on, weight[:, :labels], bias, scale=scale)
    overlay = base.repeat_interleave(labels, 0)
    overlay[torch.arange(4 * labels), torch.arange(labels).repeat(4)] = on.repeat_interleave(labels)
    expected = torch.relu(scale.repeat_interleave(labels)[:, None] * (overlay @ weight.t()) + bias)
    torch.testing.assert_close(h, expected)
    torch.testing.assert_close(sumsq, expected.square().sum(1))


def test_ff_label_rows_zero_width(backend_device):
    _, device = backend_device
    pre, on, w, b, s = _inputs(3, 0, 2, torch.float32, device)
    h, sumsq = ff_label_rows(pre, on, w, b, scale=s)
    assert h.shape == (6, 0) and torch.equal(sumsq, torch.zeros(6, device=device))


def test_ff_label_rows_nan_propagates(backend_device):
    _, device = backend_device
    pre, on, w, b, s = _inputs(5, 9, 3, torch.float32, device)
    pre[1, 4] = float("nan")  # column 4 of sample 1's rows
    on[3] = float("nan")  # every entry of sample 3's rows
    h, sumsq = ff_label_rows(pre, on, w, b, scale=s)
    h, sumsq = h.view(5, 3, 9), sumsq.view(5, 3)
    assert torch.isnan(h[1, :, 4]).all() and torch.isnan(sumsq[1]).all()
    assert torch.isnan(h[3]).all() and torch.isnan(sumsq[3]).all()
    assert not torch.isnan(h[1, :, [0, 1, 2, 3, 5, 6, 7, 8]]).any()
    assert not torch.isnan(h[[0, 2, 4]]).any() and not torch.isnan(sumsq[[0, 2, 4]]).any()


def test_ff_label_rows_bad_input():
    pre, on, w, b, s = _inputs(4, 6, 3, torch.float32, "cpu")
    with pytest.raises(ValueError, match=r"label_weight must be \[6, C\] with C >= 1"):
        ff_label_rows(pre, on, w[:5], b)
    with pytest.raises(ValueError, match=r"label_weight must be \[6, C\] with C >= 1"):
        ff_label_rows(pre, on, w[:, :0], b)
    with pytest.raises(TypeError, match="label_weight must have the dtype of pre"):
        ff_label_rows(pre, on, w.double(), b)
    with pytest.raises(ValueError, match=r"bias must be a \[6\] tensor of torch.float32"):
        ff_label_rows(pre, on, w, b[:5])
    with pytest.raises(ValueError, match=r"on must have shape \(4,\)"):
        ff_label_rows(pre, on[:3], w, b)
    with pytest.raises(ValueError, match=r"scale must have shape \(4,\)"):
        ff_label_rows(pre, on, w, b, scale=s[:, None])
    with pytest.raises(ValueError, match="pre must be 2-D"):
        ff_label_rows(pre[None], on, w, b)
    with pytest.raises(TypeError, match="pre must be float32"):
        ff_label_rows(pre.int(), on, w, b)
    with pytest.raises(TypeError, match="on must be a torch.Tensor"):
        ff_label_rows(pre, 1.0, w, b)


@pytest.mark.skipif("cpp" not in KERNELS, reason="ffops._C not built")
def test_ff_label_rows_kernel_checks_its_arguments():
    """Direct calls of the C++ op get clear errors, not a crash."""
    op = torch.ops.ffops.ff_label_rows.default
    pre, on, w, b, s = _inputs(4, 6, 3, torch.float32, "cpu")
    with pytest.raises(RuntimeError, match="pre must be a contiguous"):
        op(pre.t(), on, s, w, b)
    with pytest.raises(RuntimeError, match="pre must be float32, float64, float16 or bfloat16"):
        op(pre.int(), on, s, w, b)
    with pytest.raises(RuntimeError, match="on must be Float"):
        op(pre, on.double(), s, w, b)
    with pytest.raises(RuntimeError, match="scale must be a contiguous vector of 4"):
        op(pre, on, s[:3], w, b)
    with pytest.raises(RuntimeError, match=r"label_weight must be a contiguous \[6, C\] matrix with C >= 1"):
        op(pre, on, s, w[:, :0], b)
    with pytest.raises(RuntimeError, match=r"label_weight must be a contiguous \[6, C\]"):
        op(pre, on, s, torch.randn(3, 6).t(), b)
    with pytest.raises(RuntimeError, match="label_weight must have the dtype of pre"):
        op(pre, on, s, w.half(), b)
    with pytest.raises(RuntimeError, match=r"bias must be a contiguous \[6\] vector of Float"):
        op(pre, on, s, w, b.double())


@pytest.mark.parametrize("backend_device", BACKEND_DEVICES)
def test_ff_label_rows_opcheck(backend_device):
    backend, device = backend_device
    op = kernel_op(backend, "ff_label_rows")
    pre, on, w, b, s = _inputs(5, 7, 3, torch.float32, device)
    torch.library.opcheck(op, (pre, on, s, w, b))
    torch.library.opcheck(op, (pre, on, None, w, None))
    torch.library.opcheck(op, (pre[:0], on[:0], None, w, b))


# ---- the prediction path ------------------------------------------------------------------------


def _net(dtype, device, norm, normalize_input, bias):
    net = ff.FFNet([30, 20, 12], num_classes=5, norm=norm, device=device, dtype=dtype)
    first = net.layers[0]
    first.normalize_input = normalize_input
    if not bias:
        first.bias = None
    return net


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("on_value", [1.0, "max"])
@pytest.mark.parametrize("norm,normalize_input,bias", [("rms", True, True), ("l2", True, False), ("l2", False, True)])
def test_fast_first_layer_is_the_layer_on_every_overlay(backend_device, dtype, on_value, norm, normalize_input, bias):
    _, device = backend_device
    net = _net(dtype, device, norm, normalize_input, bias)
    x = torch.rand(7, 30, device=device, dtype=dtype)
    fast = ff.goodness_per_label(net, x, on_value=on_value, chunk_size=3)
    plain = ff.goodness_per_label(net, x, on_value=on_value, fast_first_layer=False)
    assert fast.shape == (7, 5) and fast.dtype == torch.float64  # label scores are summed in float64
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
    with ffops.use_backend("reference"):
        torch.testing.assert_close(ff.goodness_per_label(net, x, on_value=on_value), fast, atol=1e-5, rtol=1e-5)
    # the first layer's rows themselves, against the plain layer on the B * C overlaid rows
    h, sumsq = _first_layer_all_labels(net.layers[0], x, 5, on_value)
    out = net.layers[0](ff.overlay_all_labels(x, 5, on_value), None)
    tol = 1e-12 if dtype == torch.float64 else 1e-5  # float64 nets compute in float64 end to end
    torch.testing.assert_close(h, out.h, atol=tol, rtol=tol)
    torch.testing.assert_close(sumsq, out.sumsq, atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_fast_first_layer_low_precision(backend_device, dtype):
    """16-bit nets: the fast path (rows computed in float32) agrees with the plain one within the
    16-bit rounding of the activities."""
    _, device = backend_device
    net = _net(dtype, device, "rms", True, True)
    x = torch.rand(6, 30, device=device, dtype=dtype)
    fast = ff.goodness_per_label(net, x)
    plain = ff.goodness_per_label(net, x, fast_first_layer=False)
    torch.testing.assert_close(fast, plain, atol=0.05, rtol=0.05)
