"""ffops.cwc_loss (channel-wise competitive loss) on every backend against the reference."""

import pytest
import torch

import ffops
from ffops.reference import goodness as reference
from tests.helpers import assert_compile_matches_eager, assert_matches_reference, grads_of, make

CASES = [  # (shape, num_classes)
    ((4, 10, 5, 5), 10),  # one channel per class
    ((3, 20, 7, 7), 10),  # two channels per class
    ((5, 6, 3), 3),
    ((6, 12), 4),  # [N, C]: groups of 3 features
]


def _run(shape, num_classes, reduction, dtype, device):
    h = make(shape, dtype, device)
    labels = torch.randint(0, num_classes, (shape[0],), device=device)
    out_shape = () if reduction != "none" else (shape[0],)
    weights = [torch.randn(out_shape), torch.randn(shape[0], num_classes)]

    def fn(x):
        return ffops.cwc_loss(x, labels, num_classes, reduction=reduction, return_goodness=True)

    outs, (grad,) = grads_of(fn, [h], weights)
    with ffops.use_backend("reference"):
        outs64, (grad64,) = grads_of(fn, [h.double()], weights)
        outs_d, (grad_d,) = grads_of(fn, [h], weights)
    assert_matches_reference(outs[0], outs64[0], outs_d[0], "loss")
    assert_matches_reference(outs[1], outs64[1], outs_d[1], "group goodness")
    assert_matches_reference(grad, grad64, grad_d, "d loss / d h")


@pytest.mark.parametrize("shape,num_classes", CASES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
def test_cwc_loss_matches_reference(backend_device, shape, num_classes, reduction, dtype):
    _run(shape, num_classes, reduction, dtype, backend_device[1])


def test_cwc_loss_is_cwcomps_criterion():
    """The reference is CwComp's CwC_CE: split channels into class groups, mean of squares, CE."""
    h = torch.randn(8, 20, 6, 6, dtype=torch.float64)
    labels = torch.randint(0, 10, (8,))
    groups = torch.split(h, 2, dim=1)
    g = torch.cat([s.pow(2).mean((1, 2, 3)).unsqueeze(-1) for s in groups], 1)
    expected = torch.nn.functional.cross_entropy(g, labels)
    loss, goodness = reference.cwc_loss(h, labels, 10)
    torch.testing.assert_close(goodness, g)
    torch.testing.assert_close(loss, expected)


def test_cwc_loss_gradcheck(backend_device):
    h = torch.randn(3, 6, 2, 2, dtype=torch.float64, device=backend_device[1], requires_grad=True)
    labels = torch.tensor([0, 2, 1], device=backend_device[1])
    assert torch.autograd.gradcheck(lambda x: ffops.cwc_loss(x, labels, 3), (h,))


def test_cwc_loss_nan_propagates(backend_device):
    h = torch.randn(2, 4, 3, 3, device=backend_device[1])
    h[1, 0, 1, 1] = float("nan")
    loss, g = ffops.cwc_loss(h, torch.tensor([0, 1]), 2, reduction="none", return_goodness=True)
    assert torch.isfinite(loss[0]) and torch.isnan(loss[1])
    assert torch.isfinite(g[0]).all() and torch.isnan(g[1, 0]) and torch.isfinite(g[1, 1])


def test_cwc_loss_compiles_without_graph_break():
    labels = torch.tensor([1, 0, 2, 1])
    h = torch.randn(4, 6, 5, 5, requires_grad=True)
    assert_compile_matches_eager(lambda x: ffops.cwc_loss(x, labels, 3), h, torch.tensor(1.0))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"h": torch.randn(4, 10, 3, 3), "num_classes": 3}, "multiple of num_classes"),
        ({"h": torch.randn(4), "num_classes": 2}, "at least 2 dimensions"),
        ({"h": torch.randn(4, 10), "num_classes": 1}, "num_classes must be an int >= 2"),
        ({"h": torch.randn(4, 10), "labels": torch.zeros(4, dtype=torch.int32)}, "labels must be an int64 \\[4\\]"),
        ({"h": torch.randn(4, 10), "labels": torch.zeros(3, dtype=torch.int64)}, "labels must be an int64 \\[4\\]"),
        ({"h": torch.randn(4, 10), "reduction": "avg"}, "reduction"),
        ({"h": torch.randn(4, 10).int()}, "h must be float32"),
    ],
)
def test_cwc_loss_bad_arguments(kwargs, match):
    args = {"h": None, "labels": torch.zeros(4, dtype=torch.int64), "num_classes": 2, "reduction": "mean"}
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        ffops.cwc_loss(args["h"], args["labels"], args["num_classes"], reduction=args["reduction"])


def test_cwc_loss_empty_batch(backend_device):
    h = torch.empty(0, 4, 2, 2, device=backend_device[1])
    loss, g = ffops.cwc_loss(h, torch.empty(0, dtype=torch.long), 2, reduction="none", return_goodness=True)
    assert loss.shape == (0,) and g.shape == (0, 2)
