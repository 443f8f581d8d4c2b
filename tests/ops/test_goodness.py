"""ffops.goodness on every backend against the reference: values and gradients."""

import pytest
import torch

import ffops
from ffops.reference import goodness as reference
from tests.helpers import assert_matches_reference, grads_of, make

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
CASES = [  # (shape, dims)
    ((1, 1), None),
    ((5, 7), None),
    ((33, 300), None),
    ((3, 4100), None),
    ((4, 3, 5, 6), None),  # per sample over C, H, W
    ((4, 3, 5, 6), (2, 3)),  # per channel over H, W -> [N, C]
    ((4, 3, 5, 6), (1,)),  # over channels -> [N, H, W]
    ((6, 10), (0,)),
]


def _run(backend, device, shape, dims, reduction, dtype, layout="contiguous"):
    h = make(shape, dtype, device, layout=layout)
    weight = torch.randn(reference.goodness(h.double().cpu(), reduction, dims).shape)
    fn = lambda x: ffops.goodness(x, reduction=reduction, dims=dims)
    (out,), (grad,) = grads_of(fn, [h], [weight])
    with ffops.use_backend("reference"):
        (ref64,), (grad64,) = grads_of(fn, [h.double()], [weight])
        (ref_d,), (grad_d,) = grads_of(fn, [h], [weight])
    assert_matches_reference(out, ref64, ref_d, "goodness")
    assert_matches_reference(grad, grad64, grad_d, "d goodness / d h")


@pytest.mark.parametrize("shape,dims", CASES)
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_goodness_matches_reference(backend_device, shape, dims, reduction, dtype):
    _run(*backend_device, shape, dims, reduction, dtype)


@pytest.mark.parametrize("layout", ["transposed", "row-strided", "every-other-row"])
@pytest.mark.parametrize("shape,dims", [((9, 40), None), ((4, 3, 5, 6), (2, 3))])
def test_goodness_non_contiguous(backend_device, layout, shape, dims):
    _run(*backend_device, shape, dims, "mean", torch.float32, layout)


def test_goodness_empty_and_nonfinite(backend_device):
    _, device = backend_device
    assert ffops.goodness(torch.empty(0, 5, device=device)).shape == (0,)
    g = ffops.goodness(torch.empty(3, 0, device=device), reduction="sum")
    assert torch.equal(g.cpu(), torch.zeros(3))
    assert torch.isnan(ffops.goodness(torch.empty(3, 0, device=device), reduction="mean")).all()
    h = torch.randn(4, 6, device=device)
    h[1, 2] = float("nan")
    h[2, 3] = float("inf")
    g = ffops.goodness(h).cpu()
    assert torch.isnan(g[1]) and g[2] == float("inf") and torch.isfinite(g[[0, 3]]).all()
