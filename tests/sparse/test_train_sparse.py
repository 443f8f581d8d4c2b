"""Gradual magnitude pruning (ffops.sparse.pruning) and ``python -m ffops train-sparse``."""

import itertools
import json

import pytest
import torch
from torch import nn

import ffops
from ffops.__main__ import main
from ffops.cli import train_sparse
from ffops.nn import SparseLinear
from ffops.sparse import pattern_from_mask
from ffops.sparse.pruning import (
    GradualMagnitudePruner,
    cubic_sparsity,
    nested_magnitude_mask,
    schedule_points,
)
from tests.helpers import write_prototype_idx

HAS_CPU_KERNEL = torch._C._dispatch_has_kernel_for_dispatch_key("ffops::sparse_linear_fwd", "CPU")


@pytest.fixture
def sparse_backend():
    """The default backend once the C++ CPU sparse kernel is built, else the reference."""
    with ffops.use_backend("auto" if HAS_CPU_KERNEL else "reference"):
        yield


# ------------------------------------------------------------------------------------- schedule


@pytest.mark.parametrize("final, initial", [(0.9, 0.0), (0.95, 0.0), (0.8, 0.5), (0.999, 0.0)])
@pytest.mark.parametrize("total", [1, 7, 100])
def test_cubic_schedule_is_monotone_and_hits_the_final_sparsity_exactly(final, initial, total):
    values = [cubic_sparsity(t, total, final, initial) for t in range(-3, total + 5)]
    assert all(b >= a for a, b in itertools.pairwise(values))
    assert cubic_sparsity(0, total, final, initial) == initial
    assert cubic_sparsity(total, total, final, initial) == final  # exactly, not approximately
    assert cubic_sparsity(total + 10, total, final, initial) == final
    assert all(initial <= v <= final for v in values)


def test_cubic_schedule_formula_and_begin_step():
    # Zhu & Gupta: s_t = s_f + (s_i - s_f)(1 - (t - t0) / T)^3
    assert cubic_sparsity(50, 100, 0.9) == pytest.approx(0.9 * (1 - 0.5**3))
    assert cubic_sparsity(25, 100, 0.8, 0.2) == pytest.approx(0.8 - 0.6 * 0.75**3)
    assert cubic_sparsity(10, 100, 0.9, begin_step=10) == 0.0
    assert cubic_sparsity(60, 100, 0.9, begin_step=10) == pytest.approx(0.9 * (1 - 0.5**3))
    # front-loaded: half of the steps prune most of the weights
    assert cubic_sparsity(50, 100, 0.9) > 0.75
    with pytest.raises(ValueError):
        cubic_sparsity(1, 10, 1.5)


def test_schedule_points_end_at_the_last_step():
    pts = schedule_points(10, 4, 0.9)
    assert [t for t, _ in pts] == [4, 8, 10]
    assert pts[-1][1] == 0.9
    assert [t for t, _ in schedule_points(12, 4, 0.9)] == [4, 8, 12]


# ----------------------------------------------------------------------------------------- masks


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.95, 1.0])
def test_mask_keeps_the_largest_magnitudes(sparsity):
    w = torch.randn(37, 53)
    mask = nested_magnitude_mask(w, sparsity)
    keep = w.numel() - round(sparsity * w.numel())
    assert mask.dtype == torch.bool and mask.shape == w.shape
    assert int(mask.sum()) == keep
    if 0 < keep < w.numel():
        assert w.abs()[mask].min() >= w.abs()[~mask].max()
    assert torch.equal(mask, ffops.sparse.magnitude_mask(w, sparsity))  # no previous mask: plain magnitude


def test_masks_are_nested_even_when_pruned_weights_grew_back():
    w = torch.randn(40, 30)
    m1 = nested_magnitude_mask(w, 0.5)
    w2 = w.clone()
    w2[~m1] = 100.0  # pruned weights that an optimizer moved: must not come back
    m2 = nested_magnitude_mask(w2, 0.8, m1)
    assert not (m2 & ~m1).any()
    assert int(m2.sum()) == w.numel() - round(0.8 * w.numel())
    alive = w2.abs()[m1]
    assert w2.abs()[m2].min() >= alive[~m2[m1]].max()  # the largest of the alive ones


def _mlp(sizes=(20, 32, 32, 4)):
    torch.manual_seed(0)
    return train_sparse.MLP(list(sizes))


def _blobs(n, features=20, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, features, generator=torch.Generator().manual_seed(123)) * 2
    y = torch.randint(0, classes, (n,), generator=g)
    return centers[y] + torch.randn(n, features, generator=g), y


def test_pruner_follows_the_schedule_and_keeps_pruned_weights_at_zero():
    model = _mlp()
    names = ["layers.0", "layers.1"]
    out_w = model.layers[2].weight.detach().clone()
    pruner = GradualMagnitudePruner(model, 0.9, total_steps=20, update_every=3, names=names)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = _blobs(64)
    previous = {n: m.clone() for n, m in pruner.masks.items()}
    for _t in range(1, 26):
        train_sparse.train_step(model, opt, x, y, pruner)
        for i, n in enumerate(names):
            m = pruner.masks[n]
            assert not (m & ~previous[n]).any(), "masks only shrink"
            assert (model.layers[i].weight[~m] == 0).all()
            previous[n] = m.clone()
    assert [t for t, _ in pruner.history] == [t for t, _ in schedule_points(20, 3, 0.9)]
    for n, s in pruner.layer_sparsity().items():
        numel = pruner.masks[n].numel()
        assert s == pytest.approx(round(0.9 * numel) / numel)
    assert pruner.done and pruner.sparsity == 0.9
    assert not torch.equal(model.layers[2].weight, out_w)  # the output layer trains, unpruned
    nn.functional.cross_entropy(model(x), y).backward()
    pruner.mask_gradients()
    assert all((model.layers[i].weight.grad[~pruner.masks[n]] == 0).all() for i, n in enumerate(names))
    assert model.layers[0].weight.grad[pruner.masks["layers.0"]].abs().sum() > 0
    assert (model.layers[2].weight != 0).all()


def test_pruner_rejects_bad_arguments():
    model = _mlp()
    with pytest.raises(ValueError, match="final_sparsity"):
        GradualMagnitudePruner(model, 1.5, total_steps=10)
    with pytest.raises(ValueError, match="no layer"):
        GradualMagnitudePruner(model, 0.5, total_steps=10, names=["layers.7"])


# ------------------------------------------------------------------------ prune, then fine-tune


def test_finetuned_sparse_pattern_is_the_pruning_mask(sparse_backend):
    model = _mlp()
    x, y = _blobs(256)
    xt, yt = _blobs(128, seed=1)
    names = train_sparse.pruned_layer_names(model.sizes, prune_output=False)
    assert names == ["layers.0", "layers.1"]
    pruner, hist = train_sparse.prune(
        model,
        (x, y),
        (xt, yt),
        sparsity=0.9,
        names=names,
        epochs=2,
        batch_size=32,
        lr=1e-2,
        prune_every=3,
        seed=0,
        phase="prune",
        quiet=True,
    )
    assert hist[-1]["sparsity"] == 0.9
    masks = {n: m.clone() for n, m in pruner.masks.items()}
    rows = train_sparse.to_sparse(model, masks)
    assert [r["layer"] for r in rows] == names
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    train_sparse.train_epochs(model, opt, (x, y), (xt, yt), epochs=2, batch_size=32, seed=0, phase="ft", quiet=True)
    for i, n in enumerate(names):
        layer = model.layers[i]
        assert isinstance(layer, SparseLinear)
        crow, col = pattern_from_mask(masks[n])
        assert torch.equal(layer.crow_indices, crow) and torch.equal(layer.col_indices, col)
        assert layer.sparsity == pytest.approx(0.9, abs=1e-3)
        w = layer.dense_weight().detach()
        assert (w[~masks[n]] == 0).all()
    assert isinstance(model.layers[2], nn.Linear)
    assert train_sparse.evaluate(model, xt, yt) > 0.9


# ---------------------------------------------------------------------------------- the command


def test_command_end_to_end_writes_log_png_and_checkpoints(tmp_path, capsys):
    data_root, out = tmp_path / "data", tmp_path / "run"
    write_prototype_idx(data_root)
    backend = ffops.get_backend()
    rc = main(
        [
            "train-sparse",
            "--data-root",
            str(data_root),
            "--layers",
            "784,64,64,10",
            "--epochs",
            "2",
            "--prune-epochs",
            "1",
            "--finetune-epochs",
            "1",
            "--prune-every",
            "3",
            "--batch-size",
            "50",
            "--sparsities",
            "0.9,0.95",
            "--timing-steps",
            "3",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    assert ffops.get_backend() == backend  # the command's backend choice does not leak
    printed = capsys.readouterr().out
    assert "finetune 95%" in printed and "speedup" in printed
    log = json.loads((out / "log.json").read_text())
    assert set(log["history"]) == {
        "dense",
        "dense-longer",
        "prune-90",
        "finetune-90",
        "prune-95",
        "finetune-95",
    }
    assert log["config"]["pruned_layers"] == ["layers.0", "layers.1"]
    assert log["config"]["dense_layers"] == ["layers.2"]
    assert [r["model"] for r in log["results"]] == ["dense", "dense-longer", "sparse-90", "sparse-95"]
    for r in log["results"]:
        assert r["step_ms"] > 0 and r["forward_ms"] > 0 and r["speedup"] > 0
    assert log["results"][0]["speedup"] == 1.0
    assert log["mask_updates"]["95"][-1][1] == 0.95
    for r in log["history"]["finetune-90"] + log["history"]["dense"]:
        assert {"loss", "test_accuracy", "samples_per_s"} <= set(r)
    png = (out / "sparsity.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    test = ffops.data.load_dataset("mnist", data_root, split="test")
    for r in log["results"]:
        model = train_sparse.load_checkpoint(out / r["checkpoint"])
        with ffops.use_backend("auto" if HAS_CPU_KERNEL else "reference"):
            acc = train_sparse.evaluate(model, test.images, test.labels)
        assert acc == pytest.approx(r["test_accuracy"])
        sparse = [m for m in model.layers if isinstance(m, SparseLinear)]
        assert len(sparse) == (0 if r["sparsity"] == 0 else 2)
        assert all(m.sparsity == pytest.approx(r["sparsity"], abs=1e-3) for m in sparse)
    assert log["results"][0]["test_accuracy"] > 0.8  # the prototypes are learnable


def test_command_reports_a_missing_dataset(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train-sparse", "--data-root", str(tmp_path / "nothing"), "--out", str(tmp_path / "run")])
    assert exc.value.code == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_help_documents_the_longer_run(capsys):
    with pytest.raises(SystemExit):
        main(["train-sparse", "--help"])
    out = capsys.readouterr().out
    assert "Recommended longer run" in out and "--prune-epochs" in out
