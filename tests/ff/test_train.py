import json
import math

import pytest
import torch

from ffops import ff
from tests.ff.helpers import blobs


def _net(sizes=(24, 32, 32), **kw):
    torch.manual_seed(0)
    return ff.FFNet(list(sizes), num_classes=4, **kw)


@pytest.mark.parametrize(
    "mode, collab",
    [("all", "others"), ("greedy", "others"), ("collaborative", "others"), ("collaborative", "past")],
)
@pytest.mark.parametrize("negatives", ["random", "hard"])
@pytest.mark.parametrize("loss", ["symba", "softplus"])
def test_modes_learn_a_separable_task_both_prediction_ways(mode, collab, negatives, loss):
    x, y = blobs(600)
    xt, yt = blobs(300, seed=1)
    trainer = ff.FFTrainer(
        _net(loss=loss),
        mode=mode,
        collab_layers=collab,
        negatives=negatives,
        lr=1e-2,
        head_lr=3e-2,
        hist_samples=64,
    )
    history = trainer.fit(x, y, test_images=xt, test_labels=yt, epochs=4, batch_size=50)
    last = history[-1]
    assert len(history) == (8 if mode == "greedy" else 4)
    assert last["test_error_goodness"] < 0.1 and last["test_error_head"] < 0.1, last
    first = next(r for r in history if r["phase"] in (None, 0))
    assert first["loss"][0] > [r for r in history if r["phase"] in (None, 0)][-1]["loss"][0]


def test_head_negatives_learn_a_separable_task():
    x, y = blobs(600)
    xt, yt = blobs(300, seed=1)
    trainer = ff.FFTrainer(_net(), negatives="head", lr=1e-2, head_lr=3e-2, hist_samples=64)
    last = trainer.fit(x, y, test_images=xt, test_labels=yt, epochs=4, batch_size=50)[-1]
    assert last["test_error_goodness"] < 0.1 and last["test_error_head"] < 0.1, last
    batch = trainer.make_batch(x[:50], y[:50])
    assert torch.equal(batch.head_features, trainer._head_features(batch.images))  # the step's (dropped-out) images
    assert not (batch.rows.labels[50:] == y[:50]).any()  # the true label is never a negative


def test_unsupervised_hybrid_negatives_train_with_the_head():
    x, y = blobs(400, features=36)
    trainer = ff.FFTrainer(_net((36, 32, 32)), negatives="hybrid", lr=1e-2, head_lr=3e-2, hist_samples=64)
    history = trainer.fit(x, y, test_images=x, test_labels=y, epochs=3, batch_size=50)
    assert "test_error_goodness" not in history[-1]  # no label in the input: head only
    assert history[-1]["test_error_head"] < 0.2
    assert trainer.config["image_shape"] is None  # a square image (6 x 6) is inferred


def test_gradient_never_crosses_layers():
    net = _net()
    x, y = blobs(8)
    batch = torch.cat([ff.overlay_labels(x, y, 4), ff.overlay_labels(x, ff.random_wrong_labels(y, 4), 4)])
    out1 = net.layers[0](batch, 8)
    assert not out1.h.requires_grad and not out1.sumsq.requires_grad  # handed over detached
    out2 = net.layers[1](out1.h, 8, x_sumsq=out1.sumsq)
    grads = torch.autograd.grad(
        out2.loss, list(net.layers[0].parameters()) + list(net.layers[1].parameters()), allow_unused=True
    )
    assert grads[0] is None and grads[1] is None  # layer 2's loss does not reach layer 1
    assert grads[2] is not None and grads[2].abs().sum() > 0


@pytest.mark.parametrize("mode", ["all", "collaborative"])
def test_per_layer_and_joint_backward_give_the_same_gradients(mode):
    x, y = blobs(16)
    grads = {}
    for backward in ("per_layer", "joint"):
        net = _net((24, 16, 16, 16))
        batch = torch.cat([ff.overlay_labels(x, y, 4), ff.overlay_labels(x, (y + 1) % 4, 4)])
        ff.layer_losses(net, batch, 16, mode=mode, backward=backward)
        grads[backward] = [p.grad.clone() for p in net.parameters()]
    for a, b in zip(grads["per_layer"], grads["joint"]):
        assert torch.allclose(a, b, atol=1e-6)


def test_collaborative_offsets_are_the_other_layers_centered_goodness():
    x, y = blobs(16)
    batch = torch.cat([ff.overlay_labels(x, y, 4), ff.overlay_labels(x, (y + 1) % 4, 4)])
    for collab in ("others", "past"):
        net = _net((24, 16, 16, 16))
        centered = [net.layer_goodness(i, o) - net.layers[i].threshold for i, o in enumerate(net(batch))]
        seen = []

        def record(module, args, kwargs, out, seen=seen):  # learning calls only (n_pos given), not the pre-pass
            if args[1] is not None:
                seen.append(kwargs.get("goodness_offset"))

        for layer in net.layers:
            layer.register_forward_hook(record, with_kwargs=True)
        ff.layer_losses(net, batch, 16, mode="collaborative", collab_layers=collab)
        assert len(seen) == 3
        for i in range(3):
            others = [c for t, c in enumerate(centered) if (t != i if collab == "others" else t < i)]
            if not others:
                assert seen[-3 + i] is None
            else:
                assert torch.allclose(seen[-3 + i], sum(others), atol=1e-5)


@pytest.mark.parametrize("collab", ["others", "past"])
def test_collab_weight_scales_the_offsets_between_plain_and_collaborative_ff(collab):
    x, y = blobs(16)
    batch = torch.cat([ff.overlay_labels(x, y, 4), ff.overlay_labels(x, (y + 1) % 4, 4)])
    grads = {}
    for name, kw in (
        ("all", {"mode": "all"}),
        ("w0", {"collab_weight": 0.0}),
        ("w1", {"collab_weight": 1.0}),
        ("w.5", {"collab_weight": 0.5}),
    ):
        net = _net((24, 16, 16, 16))
        ff.layer_losses(net, batch, 16, **{"mode": "collaborative", "collab_layers": collab, **kw})
        grads[name] = [p.grad for p in net.parameters()]
    same = lambda a, b: all(torch.allclose(u, v, atol=1e-7) for u, v in zip(grads[a], grads[b]))
    assert same("all", "w0") and not same("w0", "w1") and not same("w.5", "w1") and not same("w.5", "w0")


def test_hard_negative_pass_gives_the_collaborative_offsets():
    """The hard-negative pass scores the true and the drawn wrong label with the current parameters:
    its per-layer goodness is what the extra forward of collaborative "others" would compute, so a
    step with it matches a step with that forward."""
    x, y = blobs(32)
    trainer = ff.FFTrainer(_net((24, 16, 16, 16)), negatives="hard", seed=3)
    batch = trainer.make_batch(x, y)
    expected = [
        trainer.model.layer_goodness(i, o) - trainer.model.layers[i].threshold
        for i, o in enumerate(trainer.model(batch.rows))
    ]
    for got, want in zip(batch.centered, expected, strict=True):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)
    grads = {}
    for given in (batch.centered, None):
        trainer.model.zero_grad(set_to_none=True)
        ff.layer_losses(trainer.model, batch.rows, batch.n_pos, mode="collaborative", centered_goodness=given)
        grads[given is None] = [p.grad.clone() for p in trainer.model.parameters()]
    for a, b in zip(grads[False], grads[True], strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="centered_goodness must hold 3 tensors"):
        ff.layer_losses(
            trainer.model, batch.rows, batch.n_pos, mode="collaborative", centered_goodness=batch.centered[:2]
        )


@pytest.mark.parametrize("mode", ["all", "collaborative", "greedy"])
def test_hard_negative_pass_outputs_replace_the_layers_forward(mode):
    """With hard negatives the pass has run every layer on every label, the step's rows among them:
    the step attaches the layers' backward to those outputs. It trains as the step that runs the
    layers again (a shard larger than chunk_size keeps no outputs)."""
    x, y = blobs(32)
    trainers = [
        ff.FFTrainer(_net((24, 16, 16, 16)), mode=mode, negatives="hard", seed=3, chunk_size=size) for size in (1024, 8)
    ]
    train_layers, top = ([1], 2) if mode == "greedy" else (None, None)
    batch, chunked = (t.make_batch(x, y, num_layers=top) for t in trainers)  # the same random draws in both
    assert len(batch.outputs) == (top or 3) and chunked.outputs is None
    for (h, sumsq), out in zip(batch.outputs, trainers[0].model(batch.rows)):
        torch.testing.assert_close(h, out.h, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(sumsq, out.sumsq, rtol=1e-5, atol=1e-5)
    losses = [[t.train_step(x, y, train_layers=train_layers)["losses"] for _ in range(3)] for t in trainers]
    for a, b in zip(*losses, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    for p, q in zip(trainers[0].model.parameters(), trainers[1].model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="outputs must hold the 3 run layers"):
        ff.layer_losses(trainers[0].model, batch.rows, batch.n_pos, outputs=batch.outputs[:2])


def test_greedy_trains_one_layer_per_phase():
    x, y = blobs(200)
    trainer = ff.FFTrainer(_net(), mode="greedy", hist_samples=32)
    snapshots = []

    class Snap(ff.Callback):
        def on_epoch_end(self, t, record):
            snapshots.append((record["phase"], [p.detach().clone() for p in t.model.parameters()]))

    trainer.callbacks.append(Snap())
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.fit(x, y, epochs=2, batch_size=50)
    (ph0, after0), (ph1, after1) = snapshots[1], snapshots[3]
    assert ph0 == 0 and ph1 == 1
    assert not torch.equal(after0[0], before[0]) and torch.equal(after0[2], before[2])  # phase 0: layer 1 only
    assert torch.equal(after1[0], after0[0]) and not torch.equal(after1[2], after0[2])  # phase 1: layer 2 only


def test_training_is_deterministic_under_a_seed():
    x, y = blobs(200)
    params = []
    for _ in range(2):
        trainer = ff.FFTrainer(_net(), negatives="hard", seed=7, hist_samples=32)
        trainer.fit(x, y, epochs=2, batch_size=40)
        params.append([p.detach().clone() for p in trainer.model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*params))


def test_history_is_json_serializable_with_histograms_and_callbacks_in_order():
    x, y = blobs(200)
    events = []

    class Recorder(ff.Callback):
        def on_fit_start(self, t, info):
            events.append(("fit_start", info["steps_per_epoch"]))

        def on_epoch_start(self, t, info):
            events.append(("epoch_start", info["epoch"]))

        def on_batch_end(self, t, info):
            events.append(("batch", info["step"]))

        def on_epoch_end(self, t, record):
            events.append(("epoch_end", record["epoch"]))

        def on_fit_end(self, t, history):
            events.append(("fit_end", len(history)))

    trainer = ff.FFTrainer(_net(), callbacks=[Recorder()], hist_samples=50, hist_bins=10)
    history = trainer.fit(x, y, test_images=x[:50], test_labels=y[:50], epochs=2, batch_size=64)
    assert events == (
        [("fit_start", 3)]
        + [("epoch_start", 1)]
        + [("batch", s) for s in (1, 2, 3)]
        + [("epoch_end", 1), ("epoch_start", 2)]
        + [("batch", s) for s in (1, 2, 3)]
        + [("epoch_end", 2), ("fit_end", 2)]
    )
    json.loads(json.dumps(history))
    rec = history[-1]
    for key in (
        "loss",
        "head_loss",
        "samples_per_s",
        "train_error_goodness",
        "train_error_head",
        "test_error_goodness",
        "test_error_head",
        "lr",
        "time_s",
    ):
        assert key in rec
    assert len(rec["goodness"]) == 2
    for layer in rec["goodness"]:
        assert len(layer["edges"]) == 11 and sum(layer["pos"]) == 50 and sum(layer["neg"]) == 50
    for r in history:  # SymBa (FFNet's default loss): [0, the largest goodness rounded up to 1, 2, 5 x 10^k]
        for layer in r["goodness"]:
            top = layer["edges"][-1]
            assert layer["edges"][0] == 0 and max(layer["pos_mean"], layer["neg_mean"]) <= top
            assert top / 10 ** math.floor(math.log10(top)) in (1, 2, 5, 10)
    assert rec["lr"] < trainer.config["lr"] * 0.5  # linear cooldown in the second half


def test_histogram_bins_of_the_softplus_loss_are_fixed_by_the_threshold():
    x, y = blobs(200)
    trainer = ff.FFTrainer(_net(loss="softplus", threshold=1.5), hist_samples=50, hist_bins=10)
    history = trainer.fit(x, y, epochs=2, batch_size=64)
    for r in history:
        assert [layer["edges"][-1] for layer in r["goodness"]] == [4.5, 4.5]
        assert [sum(layer["pos"]) for layer in r["goodness"]] == [50, 50]  # values above clamped in


def test_checkpoint_round_trip(tmp_path):
    x, y = blobs(200)
    trainer = ff.FFTrainer(_net(), hist_samples=32, lr=5e-3)
    trainer.fit(x, y, epochs=1, batch_size=50)
    path = tmp_path / "ff.pt"
    ff.save_checkpoint(path, trainer, cli_args={"epochs": 1})
    loaded = ff.load_checkpoint(path)
    assert loaded.checkpoint_extra == {"cli_args": {"epochs": 1}}
    assert loaded.history == trainer.history and loaded.config == trainer.config
    for method in ("goodness", "head"):
        assert torch.equal(loaded.predict(x, method), trainer.predict(x, method))
    # resuming continues exactly like the original (optimizer state and generators restored)
    trainer.fit(x, y, epochs=1, batch_size=50)
    loaded.fit(x, y, epochs=1, batch_size=50)
    for a, b in zip(trainer.model.parameters(), loaded.model.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mode": "layerwise"}, "mode must be one of"),
        ({"negatives": "mixed"}, "negatives must be one of"),
        ({"lr": -1.0}, "lr must be > 0"),
        ({"head_layers": [7]}, "head_layers"),
        ({"negatives": "hybrid", "head": False}, "predicts with the head"),
        ({"negatives": "head", "head": False}, "samples wrong labels from the softmax head"),
    ],
)
def test_trainer_rejects_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ff.FFTrainer(_net(), **kwargs)


def test_fit_rejects_bad_data():
    trainer = ff.FFTrainer(_net())
    x, y = blobs(20)
    with pytest.raises(ValueError, match="train_images has 10 features"):
        trainer.fit(x[:, :10], y, epochs=1, batch_size=5)
    with pytest.raises(ValueError, match="batch_size"):
        trainer.fit(x, y, epochs=1, batch_size=50)
    with pytest.raises(ValueError, match="labels must be in"):
        trainer.fit(x, y + 4, epochs=1, batch_size=5)
    with pytest.raises(ValueError, match="test_images and test_labels"):
        trainer.fit(x, y, test_images=x, epochs=1, batch_size=5)
    with pytest.raises(ValueError, match=r"start_epoch must be an int in \[0, 2\)"):
        trainer.fit(x, y, epochs=2, batch_size=5, start_epoch=2)
