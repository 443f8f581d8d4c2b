"""ffops.ff.augment: random crop after zero padding and horizontal flip, seeded."""

import pytest
import torch

from ffops.ff import augment, random_crop, random_hflip


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_crop_is_a_shifted_copy_of_each_image():
    x = torch.arange(2 * 3 * 5 * 6, dtype=torch.float32).view(2, 3, 5, 6) + 1
    out = random_crop(x, 2, _gen(3))
    offsets = torch.randint(0, 5, (2, 2), generator=_gen(3))  # the draws random_crop made
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for n in range(2):
        dy, dx = offsets[0, n], offsets[1, n]
        torch.testing.assert_close(out[n], padded[n, :, dy : dy + 5, dx : dx + 6], rtol=0, atol=0)


def test_crop_draws_every_offset_and_keeps_shape_dtype():
    x = torch.ones(4000, 1, 4, 4, dtype=torch.bfloat16)
    out = random_crop(x, 1, _gen())
    assert out.shape == x.shape and out.dtype == x.dtype
    # ones shifted by (dy, dx) in {-1, 0, 1}^2: the count of zeros tells the shift's kind
    zeros = (out == 0).flatten(1).sum(1)
    assert set(zeros.tolist()) == {0, 4, 7}  # no shift, a row or column shifted out, both


def test_padding_zero_and_none_are_identity():
    x = torch.randn(3, 2, 5, 5)
    assert random_crop(x, 0) is x
    assert augment(x, "none") is x


def test_flip_mirrors_about_half_the_images():
    x = torch.randn(2000, 1, 3, 4)
    out = random_hflip(x, _gen())
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, x)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert bool((flipped | kept).all())
    assert 900 < int(flipped.sum()) < 1100


def test_same_seed_same_batches_and_nan_propagates():
    x = torch.randn(8, 1, 6, 6)
    x[0, 0, 3, 3] = float("nan")
    a, b = augment(x, "crop-flip", generator=_gen(5)), augment(x, "crop-flip", generator=_gen(5))
    torch.testing.assert_close(a, b, equal_nan=True)
    assert not torch.equal(torch.nan_to_num(a), torch.nan_to_num(augment(x, "crop-flip", generator=_gen(6))))


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: random_crop(torch.zeros(2, 3, 4), 1), r"\[N, C, H, W\]"),
        (lambda: random_crop(torch.zeros(1, 1, 4, 4), -1), "padding must be >= 0"),
        (lambda: augment(torch.zeros(1, 1, 4, 4), "rotate"), "kind must be one of"),
    ],
)
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
