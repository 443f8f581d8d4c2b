"""Two gloo processes training sparse layers under DistributedDataParallel end with the same values
as one process on the same global batches."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import ffops
from tests.helpers import init_gloo

STEPS, GLOBAL_BATCH = 4, 32


def _model_and_data():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 48), nn.ReLU(), nn.Linear(48, 5))
    ffops.sparse.sparsify(model, 0.85)
    x, y = torch.randn(STEPS, GLOBAL_BATCH, 20), torch.randint(0, 5, (STEPS, GLOBAL_BATCH))
    return model, x, y


def _train(model, x, y, rank=0, world=1):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    per = GLOBAL_BATCH // world
    for s in range(STEPS):
        opt.zero_grad()
        out = model(x[s, rank * per : (rank + 1) * per])
        nn.functional.cross_entropy(out, y[s, rank * per : (rank + 1) * per]).backward()
        opt.step()


def _worker(rank, world, out_dir):
    torch.set_num_threads(1)
    init_gloo(rank, world, out_dir)
    try:
        model, x, y = _model_and_data()
        ddp = nn.parallel.DistributedDataParallel(model)
        _train(ddp, x, y, rank, world)
        torch.save([p.detach() for p in model.parameters()], os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_match_one(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    model, x, y = _model_and_data()
    initial = [p.detach().clone() for p in model.parameters()]
    _train(model, x, y)
    for r in range(2):
        got = torch.load(tmp_path / f"rank{r}.pt")
        for g, want in zip(got, model.parameters()):
            assert torch.allclose(g, want.detach(), atol=1e-5, rtol=1e-4), (g - want).abs().max()
    assert max((p.detach() - q).abs().max() for p, q in zip(model.parameters(), initial)) > 1e-3
