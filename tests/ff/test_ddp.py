"""Two gloo processes on CPU with each layer in its own DistributedDataParallel end with the same
parameters, and report the same history (losses and errors of the global batches), as one process
training on the same global batches; a ``ddp=False`` trainer inside a process group is one process."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ffops import ff
from tests.ff.helpers import blobs
from tests.helpers import init_gloo

CONFIG = {"negatives": "hard", "lr": 1e-2, "head_layers": "all", "hist_samples": 16, "eval_train_samples": 40}
EPOCHS, BATCH = 2, 40
# the default recipe, collaborative FF (its offsets come from each rank's hard-negative pass), and
# negatives from the head (the head scores each rank's shard before its own DDP step)
RECIPES = {
    "all-symba": ({"loss": "symba"}, {"mode": "all"}),
    "collaborative-softplus": ({"loss": "softplus"}, {"mode": "collaborative"}),
    "all-symba-head-negatives": ({"loss": "symba"}, {"mode": "all", "negatives": "head"}),
}


def _train(ddp: bool, recipe: str):
    net_kw, trainer_kw = RECIPES[recipe]
    torch.manual_seed(0)
    trainer = ff.FFTrainer(
        ff.FFNet([24, 16, 16], num_classes=4, peer_weight=0.0, **net_kw), ddp=ddp, **{**CONFIG, **trainer_kw}
    )
    x, y = blobs(120)
    trainer.fit(x, y, test_images=x[:30], test_labels=y[:30], epochs=EPOCHS, batch_size=BATCH)
    return trainer


def _own_errors(trainer, x, y) -> dict:
    """The error rates of this process's model on every sample, from its own predictions."""
    return {f"error_{m}": (trainer.predict(x, m) != y).double().mean().item() for m in trainer.methods()}


def _worker(rank: int, world: int, out_dir: str, recipe: str):
    torch.set_num_threads(1)
    init_gloo(rank, world, out_dir)
    try:
        trainer = _train(ddp=True, recipe=recipe)
        x, y = blobs(31, seed=1)  # odd: the ranks score 16 and 15 samples
        result = {
            "params": [p.detach() for p in trainer.model.parameters()]
            + [p.detach() for p in trainer.head.parameters()],
            "history": trainer.history,
            "evaluate": trainer.evaluate(x, y),
            "own_errors": _own_errors(trainer, x, y),
        }
        if recipe == "all-symba":
            local = _train(ddp=False, recipe=recipe)
            result["local"] = {
                "history": local.history,
                "evaluate": local.evaluate(x, y),
                "own_errors": _own_errors(local, x, y),
            }
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _without_times(history: list) -> list:
    return [
        {k: v for k, v in record.items() if not k.endswith("time_s") and k != "samples_per_s"} for record in history
    ]


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_ddp_per_layer_matches_single_process(tmp_path, recipe):
    mp.spawn(_worker, args=(2, str(tmp_path), recipe), nprocs=2, join=True)
    single = _train(ddp=False, recipe=recipe)
    expected = [p.detach() for p in single.model.parameters()] + [p.detach() for p in single.head.parameters()]
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for res in results:
        assert len(res["params"]) == len(expected)
        for got, want in zip(res["params"], expected):
            assert torch.allclose(got, want, atol=1e-5, rtol=1e-4), (got - want).abs().max()
    # the history is the global batches': the losses and the error counts reduced over ranks, the same on
    # both ranks and as the single process's (the parameters agree to float rounding, so the losses do too)
    assert _without_times(results[0]["history"]) == _without_times(results[1]["history"])
    assert len(results[0]["history"]) == len(single.history) == EPOCHS
    for got, want in zip(results[0]["history"], single.history):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-4, abs=1e-6)
        assert got["head_loss"] == pytest.approx(want["head_loss"], rel=1e-4, abs=1e-6)
        for key in ("test_error_goodness", "test_error_head"):
            assert abs(got[key] - want[key]) <= 1 / 30
    # evaluate with ddp=True: each rank scores its share (16 and 15 samples), the counts summed give the
    # model's own error rates over all samples
    for res in results:
        assert res["evaluate"] == res["own_errors"] == results[0]["own_errors"]
    if recipe == "all-symba":  # ddp=False inside the process group: each rank is one process, no reduction
        for res in results:
            local = res["local"]
            assert local["evaluate"] == local["own_errors"]
            assert _without_times(local["history"]) == _without_times(single.history)
    torch.manual_seed(0)
    initial = ff.FFNet([24, 16, 16], num_classes=4).layers[0].weight
    assert (expected[0] - initial).abs().max() > 1e-3  # training moved the weights: the match is not vacuous
