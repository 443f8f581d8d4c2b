"""Bad input to the FF ops raises a clear error naming the argument, the expectation and the value."""

import pytest
import torch

import ffops

H = torch.randn(4, 8)


@pytest.mark.parametrize(
    "call,exc,pattern",
    [
        (lambda: ffops.goodness(H.long()), TypeError, r"ffops.goodness: h must be float32.*got torch.int64"),
        (lambda: ffops.goodness(H.to(torch.complex64)), TypeError, r"h must be float32.*complex64"),
        (lambda: ffops.goodness(H.numpy()), TypeError, r"h must be a torch.Tensor, got ndarray"),
        (lambda: ffops.goodness(torch.tensor(1.0)), ValueError, r"h must have at least 1 dimensions"),
        (
            lambda: ffops.goodness(H, reduction="max"),
            ValueError,
            r"reduction must be one of 'sum' \| 'mean', got 'max'",
        ),
        (lambda: ffops.goodness(H, dims=(2,)), ValueError, r"dims entry 2 is out of range for a 2-D input"),
        (lambda: ffops.goodness(H, dims=(1, -1)), ValueError, r"dims must be non-empty without repeats"),
        (lambda: ffops.goodness(H, dims="1"), TypeError, r"dims must be an int or a tuple of ints"),
        (
            lambda: ffops.ff_loss(H[0], H[0], 1.0),
            ValueError,
            r"h_pos must have at least 2 dimensions.*\(8,\)",
        ),
        (
            lambda: ffops.ff_loss(H, torch.randn(4, 9), 1.0),
            ValueError,
            r"same feature shape.*\(4, 8\) and \(4, 9\)",
        ),
        (
            lambda: ffops.ff_loss(H, H.double(), 1.0),
            TypeError,
            r"same dtype, got torch.float32 and torch.float64",
        ),
        (lambda: ffops.ff_loss(H, H.to("meta"), 1.0), ValueError, r"same device, got cpu and meta"),
        (lambda: ffops.ff_loss(H, H, float("nan")), ValueError, r"threshold must be finite, got nan"),
        (lambda: ffops.ff_loss(H, H, float("inf")), ValueError, r"threshold must be finite, got inf"),
        (lambda: ffops.ff_loss(H, H, "2"), TypeError, r"threshold must be a real number \(float\), got str"),
        (
            lambda: ffops.ff_loss(H, H, torch.tensor(2.0)),
            TypeError,
            r"threshold must be a real number.*Tensor",
        ),
        (
            lambda: ffops.ff_loss(H, H, 1.0, loss="hinge"),
            ValueError,
            r"loss must be one of 'softplus' \| 'symba'",
        ),
        (lambda: ffops.ff_loss(H, H, 1.0, reduction="avg"), ValueError, r"reduction must be one of 'mean'"),
        (
            lambda: ffops.ff_loss(H, H, 1.0, goodness="rms"),
            ValueError,
            r"goodness must be one of 'sum' \| 'mean', got 'rms'",
        ),
        (lambda: ffops.ff_loss(H, H, 1.0, sign=2), ValueError, r"sign must be \+1 or -1, got 2"),
        (lambda: ffops.ff_loss(H, H, 1.0, alpha=-1.0), ValueError, r"alpha must be > 0, got -1.0"),
        (lambda: ffops.ff_loss(H, H[:3], 1.0, loss="symba"), ValueError, r"same batch size; got 4 and 3"),
        (
            lambda: ffops.ff_normalize(H, mode="l1"),
            ValueError,
            r"mode must be one of 'l2' \| 'rms', got 'l1'",
        ),
        (lambda: ffops.ff_normalize(H, eps=float("nan")), ValueError, r"eps must be finite"),
        (lambda: ffops.ff_normalize(H.int()), TypeError, r"ffops.ff_normalize: h must be float32"),
        (lambda: ffops.goodness_and_normalize(H, goodness="max"), ValueError, r"goodness must be one of"),
    ],
)
def test_bad_input_raises_clear_error(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


def test_reference_backend_validates_too():
    with ffops.use_backend("reference"), pytest.raises(ValueError, match="threshold must be finite"):
        ffops.ff_loss(H, H, float("nan"))
