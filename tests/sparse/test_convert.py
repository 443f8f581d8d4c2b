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


def _dense_reasons(report) -> dict:
    return {c.name: c.reason for c in report.skipped}


def test_multihead_attention_out_proj_stays_dense():
    """nn.MultiheadAttention hands ``out_proj.weight`` to F.multi_head_attention_forward: a swapped
    out_proj broke its next forward (AttributeError: no attribute 'weight')."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(32, 4, batch_first=True)
    q = torch.randn(2, 5, 32)
    before = mha(q, q, q)[0]
    report = ffops.sparse.sparsify(mha, 0.9)
    assert not report.swapped and type(mha.out_proj).__name__ == "NonDynamicallyQuantizableLinear"
    assert "MultiheadAttention.forward reads its .weight directly" in _dense_reasons(report)["out_proj"]
    assert torch.equal(mha(q, q, q)[0], before)


def test_transformer_encoder_layer_trains_and_infers_after_sparsify():
    """The layer's inference fast path reads linear1 / linear2's weights (and its attention's out_proj's):
    they stay dense, the rest of the model is swapped, and the model trains and runs in eval mode."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.TransformerEncoderLayer(32, 4, 64, batch_first=True), nn.Linear(32, 3))
    report = ffops.sparse.sparsify(model, 0.9, min_sparsity=0)
    reasons = _dense_reasons(report)
    assert set(reasons) == {"1.self_attn.out_proj", "1.linear1", "1.linear2"}
    assert all("TransformerEncoderLayer.forward reads its .weight directly" in r for r in reasons.values())
    assert [c.name for c in report.swapped] == ["0", "2"] and isinstance(model[2], SparseLinear)
    x, y = torch.randn(8, 5, 16), torch.randint(0, 3, (8, 5))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    values = model[2].values.detach().clone()
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0] and not torch.equal(model[2].values, values)
    model.eval()
    with torch.no_grad():  # the fast path (eval, no grad, batch_first)
        assert torch.allclose(model(x), model[2](model[1](model[0](x))), atol=1e-5)


def test_torchvision_vit_runs_after_sparsify():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(16, 4, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)
    report = ffops.sparse.sparsify(vit, 0.9, min_sparsity=0)
    reasons = _dense_reasons(report)
    assert set(reasons) == {f"encoder.layers.encoder_layer_{i}.self_attention.out_proj" for i in range(2)}
    swapped = {c.name for c in report.swapped}
    assert "encoder.layers.encoder_layer_0.mlp.0" in swapped and "heads.head" in swapped
    x = torch.randn(2, 3, 16, 16)
    vit(x).sum().backward()
    assert vit.heads.head.values.grad is not None
    vit.eval()
    with torch.no_grad():
        assert vit(x).shape == (2, 1000)


def test_subclasses_with_their_own_forward_stay_dense():
    """timm's weight-standardized StdConv2d and Conv2dSame compute something else than nn.Conv2d's
    forward: swapped, StdConv2d's output was 0.93 off (relative) at sparsity 0 and Conv2dSame's 8 x 8
    output became 7 x 7."""
    layers = pytest.importorskip("timm.layers")
    torch.manual_seed(0)
    model = nn.Sequential(layers.StdConv2d(3, 8, 3, padding=1), layers.Conv2dSame(8, 8, 3, stride=2))
    x = torch.randn(2, 3, 16, 16)
    before = model(x)
    assert before.shape == (2, 8, 8, 8)
    report = ffops.sparse.sparsify(model, 0.0, min_sparsity=0)
    reasons = _dense_reasons(report)
    assert reasons == {
        "0": "StdConv2d has its own forward: a sparse layer computes nn.Conv2d's",
        "1": "Conv2dSame has its own forward: a sparse layer computes nn.Conv2d's",
    }
    assert torch.equal(model(x), before)


def test_parametrized_hooked_and_tied_layers_stay_dense():
    """A weight_norm parametrization, a forward hook and a weight shared with another module would be
    dropped or untied by a sparse layer; a subclass that keeps nn.Linear's forward is swapped."""

    class Plain(nn.Linear):  # nn.Linear's own forward: swapped
        pass

    torch.manual_seed(0)
    model = nn.ModuleDict(
        {
            "norm": nn.utils.parametrizations.weight_norm(nn.Linear(8, 8)),
            "hooked": nn.Linear(8, 8),
            "embed": nn.Embedding(10, 8),
            "tied": nn.Linear(8, 10, bias=False),
            "plain": Plain(8, 8),
        }
    )
    model["hooked"].register_forward_hook(lambda module, args, out: 2 * out)
    model["tied"].weight = model["embed"].weight
    x = torch.randn(4, 8)
    before = {name: model[name](x) for name in ("norm", "hooked", "tied")}
    report = ffops.sparse.sparsify(model, 0.0, min_sparsity=0)
    reasons = _dense_reasons(report)
    assert set(reasons) == {"norm", "hooked", "tied"} and [c.name for c in report.swapped] == ["plain"]
    assert "parametrized (weight" in reasons["norm"] and "forward hooks" in reasons["hooked"]
    assert reasons["tied"] == "weight shared with embed.weight: a sparse layer would untie it"
    assert nn.utils.parametrize.is_parametrized(model["norm"]) and model["tied"].weight is model["embed"].weight
    for name, want in before.items():
        assert torch.equal(model[name](x), want)
    assert isinstance(model["plain"], SparseLinear)
