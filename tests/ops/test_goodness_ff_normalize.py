"""ffops.ff_normalize and ffops.goodness_and_normalize on every backend against the reference."""

import pytest
import torch

import ffops
from tests.helpers import assert_matches_reference, grads_of, make

SHAPES = [(1, 1), (5, 7), (33, 300), (3, 4100), (4, 3, 5, 6)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def _compare(fn, h, weights):
    outs, grads = grads_of(fn, [h], weights)
    with ffops.use_backend("reference"):
        outs64, grads64 = grads_of(fn, [h.double()], weights)
        outs_d, grads_d = grads_of(fn, [h], weights)
    for i, (o, r, t) in enumerate(zip(outs, outs64, outs_d)):
        assert_matches_reference(o, r, t, f"output {i}")
    assert_matches_reference(grads[0], grads64[0], grads_d[0], "gradient")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["l2", "rms"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_ff_normalize_matches_reference(backend_device, shape, mode, dtype):
    _, device = backend_device
    h = make(shape, dtype, device)
    _compare(lambda x: ffops.ff_normalize(x, mode=mode, eps=1e-6), h, [torch.randn(shape)])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["l2", "rms"])
@pytest.mark.parametrize("goodness", ["sum", "mean"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_goodness_and_normalize_matches_reference(backend_device, shape, mode, goodness, dtype):
    _, device = backend_device
    h = make(shape, dtype, device)
    fn = lambda x: ffops.goodness_and_normalize(x, mode=mode, eps=1e-6, goodness=goodness)
    _compare(fn, h, [torch.randn(shape[0]), torch.randn(shape)])


def test_goodness_and_normalize_is_goodness_and_normalize(backend_device):
    _, device = backend_device
    h = make((6, 30), torch.float32, device)
    g, y = ffops.goodness_and_normalize(h, mode="rms", goodness="mean")
    torch.testing.assert_close(g, ffops.goodness(h, reduction="mean"))
    torch.testing.assert_close(y, ffops.ff_normalize(h, mode="rms"))


@pytest.mark.parametrize("layout", ["transposed", "row-strided", "every-other-row"])
def test_ff_normalize_non_contiguous(backend_device, layout):
    _, device = backend_device
    h = make((9, 40), torch.float32, device, layout=layout)
    _compare(lambda x: ffops.goodness_and_normalize(x, mode="l2"), h, [torch.randn(9), torch.randn(9, 40)])


def test_ff_normalize_zero_row_has_finite_gradient(backend_device):
    """An all-zero row (a dead ReLU layer) normalizes to zero with gradient grad / eps, as torch's norm."""
    _, device = backend_device
    h = make((3, 16), torch.float32, device)
    h[1] = 0
    _compare(lambda x: ffops.ff_normalize(x, mode="rms", eps=1e-4), h, [torch.randn(3, 16)])


def test_ff_normalize_nan_propagates_and_empty_works(backend_device):
    _, device = backend_device
    h = torch.randn(3, 5, device=device)
    h[0, 0] = float("nan")
    y = ffops.ff_normalize(h).cpu()
    assert torch.isnan(y[0]).all() and torch.isfinite(y[1:]).all()
    assert ffops.ff_normalize(torch.empty(0, 5, device=device)).shape == (0, 5)
    g, y = ffops.goodness_and_normalize(torch.empty(2, 0, device=device))
    assert g.shape == (2,) and y.shape == (2, 0)
