"""Two gloo processes on CPU with each layer in its own DistributedDataParallel end with the same
parameters as one process training on the same global batches."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ffops import ff
from tests.ff.helpers import blobs
from tests.helpers import free_port

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


def _worker(rank: int, world: int, port: int, out_dir: str, recipe: str):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        trainer = _train(ddp=True, recipe=recipe)
        torch.save(
            {
                "params": [p.detach() for p in trainer.model.parameters()]
                + [p.detach() for p in trainer.head.parameters()],
                "history": trainer.history,
            },
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_ddp_per_layer_matches_single_process(tmp_path, recipe):
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path), recipe), nprocs=2, join=True)
    single = _train(ddp=False, recipe=recipe)
    expected = [p.detach() for p in single.model.parameters()] + [p.detach() for p in single.head.parameters()]
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for res in results:
        assert len(res["params"]) == len(expected)
        for got, want in zip(res["params"], expected):
            assert torch.allclose(got, want, atol=1e-5, rtol=1e-4), (got - want).abs().max()
    # the error counts are summed over ranks: same as the single process's
    for key in ("test_error_goodness", "test_error_head"):
        assert results[0]["history"][-1][key] == results[1]["history"][-1][key]
        assert abs(results[0]["history"][-1][key] - single.history[-1][key]) <= 1 / 30
    torch.manual_seed(0)
    initial = ff.FFNet([24, 16, 16], num_classes=4).layers[0].weight
    assert (expected[0] - initial).abs().max() > 1e-3  # training moved the weights: the match is not vacuous
