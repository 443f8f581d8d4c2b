import pytest
import torch

from ffops import ff


def test_overlay_writes_one_hot_in_first_features_and_keeps_the_rest():
    x = torch.rand(6, 20)
    y = torch.tensor([0, 1, 2, 3, 4, 1])
    out = ff.overlay_labels(x, y, 5, on_value=0.7)
    expected = torch.zeros(6, 5)
    expected[torch.arange(6), y] = 0.7
    assert torch.equal(out[:, :5], expected)
    assert torch.equal(out[:, 5:], x[:, 5:])
    assert not torch.equal(x[:, :5], out[:, :5])  # the input is not modified in place
    x2 = x.clone()
    ff.overlay_labels(x2, y, 5)
    assert torch.equal(x2, x)


def test_overlay_on_value_max_uses_each_samples_maximum():
    x = torch.rand(4, 12) * torch.tensor([1.0, 2.0, 3.0, 4.0])[:, None]
    out = ff.overlay_labels(x, torch.tensor([1, 0, 2, 1]), 3, on_value="max")
    assert torch.allclose(out[torch.arange(4), torch.tensor([1, 0, 2, 1])], x.amax(1))


def test_overlay_all_labels_matches_one_overlay_per_label():
    x = torch.rand(3, 10)
    allx = ff.overlay_all_labels(x, 4, on_value=1.0)
    assert allx.shape == (12, 10)
    for c in range(4):
        assert torch.equal(allx[c::4], ff.overlay_labels(x, torch.full((3,), c), 4))


def test_neutral_overlay_is_one_over_c_of_the_on_value():
    x = torch.rand(2, 30)
    assert torch.allclose(ff.neutral_overlay(x, 10)[:, :10], torch.full((2, 10), 0.1))
    assert torch.allclose(ff.neutral_overlay(x, 10, on_value=2.0)[:, :10], torch.full((2, 10), 0.2))
    assert torch.allclose(ff.neutral_overlay(x, 10, value=0.25)[:, :10], torch.full((2, 10), 0.25))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"labels": torch.tensor([0, 5]), "num_classes": 5}, "labels must be in"),
        ({"labels": torch.tensor([0.0, 1.0]), "num_classes": 5}, "labels must be an integer"),
        ({"labels": torch.tensor([0, 1, 2]), "num_classes": 5}, "labels must have shape"),
        ({"labels": torch.tensor([0, 1]), "num_classes": 30}, "num_classes must be"),
    ],
)
def test_overlay_errors_name_the_argument(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ff.overlay_labels(torch.rand(2, 20), **kwargs)
    with pytest.raises(ValueError, match="on_value"):
        ff.overlay_labels(torch.rand(2, 20), torch.tensor([0, 1]), 5, on_value="min")


@pytest.mark.parametrize("on_value", [0.7, "max"])
def test_overlay_rows_materialize_to_overlay_labels(on_value):
    x = torch.rand(4, 12) * torch.tensor([1.0, 2.0, 3.0, 4.0])[:, None]
    y, wrong = torch.tensor([1, 0, 2, 1]), torch.tensor([0, 2, 1, 2])
    rows = ff.overlay_rows(x, torch.cat([y, wrong]), 3, on_value)
    expected = torch.cat([ff.overlay_labels(x, y, 3, on_value), ff.overlay_labels(x, wrong, 3, on_value)])
    assert rows.shape == expected.shape and rows.dtype == x.dtype and rows.device == x.device
    assert torch.equal(rows.materialize(), expected)
    torch.testing.assert_close(rows.sumsq(), expected.square().sum(1))


def test_overlay_rows_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"labels must be a \[k \* 2\] tensor"):
        ff.overlay_rows(torch.rand(2, 20), torch.tensor([0, 1, 2]), 5)
    with pytest.raises(ValueError, match="labels must be in"):
        ff.overlay_rows(torch.rand(2, 20), torch.tensor([0, 1, 2, 5]), 5)
