"""sparsify / densify: which layers are swapped, the report, and that the model's function is kept."""

import pytest
import torch
from torch import nn

import ffops
from ffops.nn import SparseConv2d, SparseLinear


def _model():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"),
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 32),
        nn.ReLU(),
        nn.Linear(32, 10),
    )


def test_sparsify_swaps_and_reports():
    torch.manual_seed(0)
    model = _model()
    report = ffops.sparse.sparsify(model, 0.9)
    assert isinstance(model[0], SparseConv2d) and isinstance(model[4], SparseLinear)
    assert isinstance(model[6], SparseLinear)
    assert isinstance(model[2], nn.Conv2d)  # reflect padding: left dense, with the reason
    skipped = {c.name: c.reason for c in report.skipped}
    assert "padding_mode" in skipped["2"]
    assert {c.name for c in report.swapped} == {"0", "4", "6"}
    assert all(abs(c.sparsity - 0.9) < 0.02 for c in report.swapped)
    assert "left dense" in str(report)


def test_min_sparsity_and_layer_filter():
    model = _model()
    report = ffops.sparse.sparsify(model, 0.5)
    assert not report.swapped and all("min_sparsity" in c.reason for c in report.skipped if c.name != "2")
    report = ffops.sparse.sparsify(model, {"4": 0.95}, layers=(nn.Linear,))
    assert [c.name for c in report.swapped] == ["4"] and isinstance(model[6], nn.Linear)
    with pytest.raises(ValueError, match="layers must be"):
        ffops.sparse.sparsify(model, 0.9, layers=(nn.ReLU,))
    with pytest.raises(ValueError, match="method must be"):
        ffops.sparse.sparsify(model, 0.9, method="random")


def test_existing_zeros_and_densify_round_trip():
    torch.manual_seed(0)
    model = _model()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.mul_(ffops.sparse.magnitude_mask(m.weight, 0.92))
    x = torch.randn(2, 3, 6, 6)
    before = model(x)
    report = ffops.sparse.sparsify(model)  # sparsity=None: keep the current nonzeros
    assert len(report.swapped) == 3
    assert torch.allclose(model(x), before, atol=1e-5)
    back = ffops.sparse.densify(model)
    assert len(back.swapped) == 3 and isinstance(model[0], nn.Conv2d) and isinstance(model[4], nn.Linear)
    assert torch.allclose(model(x), before, atol=1e-5)
