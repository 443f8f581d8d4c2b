"""Large outputs of the C++ CPU kernels come from a huge-page buffer cache (csrc/cpu/alloc.h):
recycled buffers must never alias live tensors and must not leak old contents into results."""

import pytest
import torch

import ffops
from ffops import _backend

pytestmark = pytest.mark.skipif(not _backend.CPP_CPU, reason="ffops._C CPU kernels not built")

ROWS, FEATURES = 1024, 1100  # 4.3 MiB in float32: above the cache's 4 MiB threshold


def test_recycled_buffers_give_correct_distinct_results():
    h = torch.randn(ROWS, FEATURES)
    with ffops.use_backend("reference"):
        expected = ffops.ff_normalize(h)
    live = []
    for step in range(20):  # more than the cache holds: allocation, reuse and eviction all happen
        y = ffops.ff_normalize(h * (step + 1))
        torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-6)
        if step % 3 == 0:
            live.append(y.clone())
            live.append(y)  # kept alive: its buffer must not be handed out again
        else:
            y.fill_(float("nan"))  # poison the buffer before it goes back to the cache
        del y
    kept = live[1::2]
    assert len({t.untyped_storage().data_ptr() for t in kept}) == len(kept), "a live buffer was handed out again"
    for copy, original in zip(live[0::2], kept):
        assert torch.equal(copy, original), "a live buffer was overwritten"


def test_recycled_gradient_buffers_in_a_training_loop():
    h = torch.randn(ROWS, FEATURES)
    with ffops.use_backend("reference"):
        leaf = h.clone().requires_grad_()
        ffops.ff_loss(leaf, leaf.flip(0), 2.0, goodness="sum").backward()
        expected = leaf.grad
    for _ in range(5):
        leaf = h.clone().requires_grad_()
        ffops.ff_loss(leaf, leaf.flip(0), 2.0, goodness="sum").backward()
        torch.testing.assert_close(leaf.grad, expected, rtol=1e-5, atol=1e-6)
        leaf.grad.fill_(float("nan"))
