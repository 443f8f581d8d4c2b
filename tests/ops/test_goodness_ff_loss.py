"""ffops.ff_loss on every backend against the reference: loss, goodness and gradients."""

import itertools

import pytest
import torch

import ffops
from tests.helpers import assert_matches_reference, grads_of, make

VARIANTS = [
    dict(goodness=g, loss=lo, sign=s, reduction=r)
    for g, lo, s, r in itertools.product(["mean", "sum"], ["softplus", "symba"], [1, -1], ["mean", "sum", "none"])
]


def _variant_id(v):
    return "-".join(str(x) for x in v.values())


def _run(backend, device, pos_shape, neg_shape, dtype, threshold, variant, layout="contiguous", scale=1.0):
    h_pos = make(pos_shape, dtype, device, layout=layout, scale=scale)
    h_neg = make(neg_shape, dtype, device, layout=layout, scale=scale)

    def fn(p, n):
        return ffops.ff_loss(p, n, threshold, alpha=3.0, return_goodness=True, **variant)

    with ffops.use_backend("reference"):
        shapes = [o.shape for o in fn(h_pos.double(), h_neg.double())]
    weights = [torch.randn(s) for s in shapes]
    outs, grads = grads_of(fn, [h_pos, h_neg], weights)
    with ffops.use_backend("reference"):
        outs64, grads64 = grads_of(fn, [h_pos.double(), h_neg.double()], weights)
        outs_d, grads_d = grads_of(fn, [h_pos, h_neg], weights)
    for name, o, r, t in zip(["loss", "g_pos", "g_neg"], outs, outs64, outs_d):
        assert_matches_reference(o, r, t, name)
    for name, o, r, t in zip(["dL/dh_pos", "dL/dh_neg"], grads, grads64, grads_d):
        assert_matches_reference(o, r, t, name)


@pytest.mark.parametrize("variant", VARIANTS, ids=_variant_id)
def test_ff_loss_variants(backend_device, variant):
    _run(*backend_device, (6, 50), (6, 50), torch.float32, 1.0, variant)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize(
    "pos_shape,neg_shape", [((1, 1), (1, 1)), ((17, 300), (17, 300)), ((4, 3, 5, 6), (4, 3, 5, 6))]
)
@pytest.mark.parametrize("loss", ["softplus", "symba"])
def test_ff_loss_dtypes_and_shapes(backend_device, dtype, pos_shape, neg_shape, loss):
    variant = dict(goodness="mean", loss=loss, sign=1, reduction="mean")
    _run(*backend_device, pos_shape, neg_shape, dtype, 1.0, variant)


def test_ff_loss_unequal_batches_softplus(backend_device):
    variant = dict(goodness="sum", loss="softplus", sign=1, reduction="none")
    _run(*backend_device, (7, 40), (3, 40), torch.float32, 40.0, variant)


@pytest.mark.parametrize("layout", ["transposed", "row-strided", "every-other-row"])
def test_ff_loss_non_contiguous(backend_device, layout):
    variant = dict(goodness="mean", loss="softplus", sign=1, reduction="mean")
    _run(*backend_device, (9, 40), (9, 40), torch.float32, 1.0, variant, layout)


@pytest.mark.parametrize("scale", [1e-3, 30.0])
def test_ff_loss_saturated_logits_are_stable(backend_device, scale):
    """Goodness far below or above the threshold: softplus must neither overflow nor lose the gradient."""
    variant = dict(goodness="sum", loss="softplus", sign=1, reduction="sum")
    _run(*backend_device, (5, 64), (5, 64), torch.float32, 2.0, variant, scale=scale)


def test_ff_loss_empty_batch(backend_device):
    _, device = backend_device
    h = torch.randn(3, 8, device=device)
    empty = torch.empty(0, 8, device=device)
    loss, g_pos, g_neg = ffops.ff_loss(empty, h, 1.0, reduction="mean", return_goodness=True)
    assert g_pos.shape == (0,) and g_neg.shape == (3,)
    with ffops.use_backend("reference"):
        expected = ffops.ff_loss(empty.cpu(), h.cpu(), 1.0)
    torch.testing.assert_close(loss.cpu(), expected)
    both_empty = ffops.ff_loss(empty, empty, 1.0, loss="symba")
    assert torch.isnan(both_empty)  # the mean of no pairs, as torch's mean of an empty tensor
    assert ffops.ff_loss(empty, empty, 1.0, reduction="sum").item() == 0.0


def test_ff_loss_nan_and_inf_propagate(backend_device):
    _, device = backend_device
    h_pos = torch.randn(4, 8, device=device)
    h_neg = torch.randn(4, 8, device=device)
    h_pos[2, 1] = float("nan")
    per_row = ffops.ff_loss(h_pos, h_neg, 1.0, reduction="none").cpu()
    assert torch.isnan(per_row[2]) and torch.isfinite(per_row[[0, 1, 3, 4, 5, 6, 7]]).all()
    h_neg[0, 0] = float("inf")  # infinite goodness on a negative row: infinite loss
    per_row = ffops.ff_loss(h_pos, h_neg, 1.0, reduction="none").cpu()
    assert per_row[4] == float("inf")
