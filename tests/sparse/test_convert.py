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


def _bn_model():
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.Flatten(),
        nn.Linear(16 * 8 * 8, 10),
    )


def test_measured_sparsify_keeps_slower_layers_dense(monkeypatch):
    """The decision follows the timing: a layer whose sparse form is measured slower stays dense."""
    from ffops.sparse import convert
    from ffops.sparse.speed import LayerTiming

    speedups = {(16, 3, 3, 3): 0.8, (16, 16, 3, 3): 2.0, (10, 1024): 3.0}
    seen = {}

    def fake_time_layer(dense, sparse, spec, repeats):
        seen[tuple(dense.weight.shape)] = spec
        return LayerTiming(spec.shape, 2.0, 2.0 / speedups[tuple(dense.weight.shape)])

    monkeypatch.setattr(convert, "time_layer", fake_time_layer)
    model = _bn_model()
    report = ffops.sparse.sparsify(model, 0.9, example_input=torch.randn(4, 3, 8, 8))
    assert isinstance(model[0], nn.Conv2d) and isinstance(model[3], SparseConv2d)
    assert isinstance(model[5], SparseLinear)
    slow = {c.name: c for c in report.skipped}["0"]
    assert "< min_speedup 1.05" in slow.reason and slow.timing.speedup == 0.8
    assert [c.name for c in report.swapped] == ["3", "5"]
    assert "2.00x faster than dense" in {c.name: c.reason for c in report.swapped}["3"]
    # recorded inputs: shapes, and only the first layer's input needs no gradient
    assert seen[(16, 3, 3, 3)].shape == (4, 3, 8, 8) and not seen[(16, 3, 3, 3)].requires_grad
    assert seen[(16, 16, 3, 3)].requires_grad and seen[(10, 1024)].shape == (4, 1024)
    text = str(report)
    assert "0.80x" in text and "speed not measured" not in text
    model = _bn_model()
    report = ffops.sparse.sparsify(model, 0.9, example_input=torch.randn(4, 3, 8, 8), min_speedup=0)
    assert len(report.swapped) == 3 and isinstance(model[0], SparseConv2d)


def test_unmeasured_report_says_so():
    model = _bn_model()
    assert "speed not measured: pass example_input" in str(ffops.sparse.sparsify(model, 0.9))


def test_measuring_leaves_the_model_state_alone():
    torch.manual_seed(0)
    model = _bn_model().train()
    bn = model[1]
    stats = (bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone())
    report = ffops.sparse.sparsify(model, 0.9, example_input=torch.randn(4, 3, 8, 8), repeats=2)
    assert report.measured and all(c.timing is not None for c in report.changes)
    assert all(c.timing.dense_ms > 0 and c.timing.sparse_ms > 0 for c in report.changes)
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])
    assert torch.equal(bn.num_batches_tracked, stats[2])
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="min_speedup must be a number"):
        ffops.sparse.sparsify(_bn_model(), 0.9, min_speedup=float("nan"))
    with pytest.raises(ValueError, match="repeats must be a positive int"):
        ffops.sparse.sparsify(_bn_model(), 0.9, example_input=torch.randn(1, 3, 8, 8), repeats=0)
