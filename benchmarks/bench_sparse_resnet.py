"""Training-step time of a ResNet-18 (CIFAR form, 32 x 32 inputs) made sparse with ``ffops.sparse.sparsify``.

Run from the repository root::

    python -m benchmarks.bench_sparse_resnet                  # CPU, 2 threads, batch 32, sparsity 0.9
    python -m benchmarks.bench_sparse_resnet --quick          # fewer rounds (a smoke run)
    python -m benchmarks.bench_sparse_resnet --device cuda    # GPU (SparseConv2d runs im2col there)

Model: ResNet-18 as trained on CIFAR-10 (3 x 3 stem with 64 channels and no max-pool, four stages of
two basic blocks with 64 / 128 / 256 / 512 channels, 1 x 1 stride-2 shortcuts, global average pool,
a 10-way linear head; 11.2 M parameters), batch norm, random inputs and labels (timing only). One
training step: forward, cross-entropy, backward, SGD with momentum. Contenders, side by side in one
process, built from one dense model with one magnitude mask per layer:

  dense              the model with the masked weights (torch's dense convolutions / GEMMs)
  ffops all          ``sparsify(model, s)``: every conv and the head sparse (what a user gets without
                     measuring); ``min_sparsity`` keeps nothing dense at s >= 0.8
  ffops measured     ``sparsify(model, s, example_input=x)``: each layer timed dense vs sparse on its
                     own input and kept dense unless it is 1.05x faster (the report is printed)
  sparseprop         SparseProp's modules (``pip install sparseprop``; CPU only) for every conv and the
                     head, each conv in the vectorization mode its ``sparsify_conv2d_auto`` picks

Every contender starts from the same weights and masks; each one's logits on the batch are checked
against dense (max difference relative to the largest logit). Timing: warm-up steps, then rounds in
which every contender takes one step (order rotated each round), the median and p20-p80 per
contender, and each one's speedup over dense (the issue sets no number for the model, only for its
layers: see bench_sparse's conv section). Results: ``benchmarks/results/
bench_sparse_resnet_<device>.json``.
"""

import argparse
import copy
import os
import sys
import time
from pathlib import Path

if __name__ == "__main__":  # SparseProp's OpenMP (shared with torch) reads its thread count at load time
    _threads = sys.argv[sys.argv.index("--threads") + 1] if "--threads" in sys.argv[:-1] else "2"
    os.environ.setdefault("OMP_NUM_THREADS", _threads)

import torch
import torch.nn.functional as F
from torch import nn

import ffops
from benchmarks import harness
from benchmarks.baselines.sparseprop_layer import import_sparseprop
from ffops.sparse.speed import record_inputs

SCRIPT = "bench_sparse_resnet"


# ---- the model -----------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 in its CIFAR form (32 x 32 inputs)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        blocks, cin = [], 64
        for cout, stride in ((64, 1), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1)):
            blocks.append(BasicBlock(cin, cout, stride))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        out = self.blocks(F.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def mask_model(model: nn.Module, sparsity: float) -> None:
    """Zero all but the largest-magnitude ``1 - sparsity`` of every conv and linear weight, in place."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(ffops.sparse.magnitude_mask(m.weight, sparsity))


# ---- contenders ----------------------------------------------------------------------------------


def sparseprop_model(model: nn.Module, example: torch.Tensor, modules) -> nn.Module:
    """``model`` with every conv and linear layer replaced by SparseProp's (from the masked weights)."""
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    shapes = {name: spec.shape for name, spec in record_inputs(model, convs, example).items()}
    for name, m in list(model.named_modules()):
        if isinstance(m, nn.Conv2d):
            new = modules.sparsify_conv2d_auto(m, shapes[name])
        elif isinstance(m, nn.Linear):
            bias = None if m.bias is None else nn.Parameter(m.bias.detach().clone())
            new = modules.SparseLinear(m.weight.detach().clone(), bias=bias)
        else:
            continue
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)
    return model


def build_contenders(dense: nn.Module, x: torch.Tensor, sparsity: float, sparseprop_modules, repeats: int):
    """``{name: model}`` (deep copies of the masked ``dense``) and the measured sparsify report."""
    models = {"dense": dense}
    models["ffops all"] = copy.deepcopy(dense)
    ffops.sparse.sparsify(models["ffops all"], sparsity=None)  # the masked weights' nonzeros
    models["ffops measured"] = copy.deepcopy(dense)
    report = ffops.sparse.sparsify(models["ffops measured"], sparsity=None, example_input=x, repeats=repeats)
    if sparseprop_modules is not None and x.device.type == "cpu":
        models["sparseprop"] = sparseprop_model(copy.deepcopy(dense), x, sparseprop_modules)
    return models, report


# ---- timing --------------------------------------------------------------------------------------


def make_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """A closure that takes one SGD training step and returns the loss (a tensor)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return step


def time_steps(steps: dict, device: torch.device, warmup: int, rounds: int) -> dict:
    """``{name: samples_s}``: ``rounds`` interleaved steps per contender after ``warmup`` each."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    harness._sync(device)
    samples = {name: [] for name in steps}
    names = list(steps)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            harness._sync(device)
            start = time.perf_counter()
            steps[name]()
            harness._sync(device)
            samples[name].append(time.perf_counter() - start)
    return samples


# ---- main ----------------------------------------------------------------------------------------


def add_step_args(p: argparse.ArgumentParser, rounds: int, quick_rounds: int, measure_repeats: int) -> None:
    """The options of a training-step benchmark of sparsified models (this one, bench_sparsify_models)."""
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=int, default=2, help="torch and OpenMP threads on CPU (default 2)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument(
        "--rounds", type=int, default=None, help=f"timed steps per contender (default {rounds}, quick {quick_rounds})"
    )
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per contender first (default 2)")
    p.add_argument(
        "--measure-repeats",
        type=int,
        default=measure_repeats,
        help=f"sparsify's timed rounds per layer (default {measure_repeats})",
    )
    p.add_argument("--quick", action="store_true", help=f"{quick_rounds} rounds, 2 repeats per measured layer")
    p.add_argument("--no-json", action="store_true", help="print only")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/<script>_<device>.json)")


def check_step_args(p: argparse.ArgumentParser, args, rounds: int, quick_rounds: int) -> None:
    """Validates the options of :func:`add_step_args` and fills in the rounds and the quick settings."""
    if not 0.0 < args.sparsity < 1.0:
        p.error(f"--sparsity must be in (0, 1), got {args.sparsity}")
    args.rounds = args.rounds or (quick_rounds if args.quick else rounds)
    if args.quick:
        args.measure_repeats = min(args.measure_repeats, 2)


def step_device(args) -> torch.device:
    """The device of :func:`add_step_args`' options (an error without CUDA), its CPU threads set."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here")
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    return device


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog=f"python -m benchmarks.{SCRIPT}", description=__doc__.split("\n")[0])
    add_step_args(p, rounds=12, quick_rounds=4, measure_repeats=5)
    p.add_argument("--no-sparseprop", action="store_true", help="leave SparseProp out")
    args = p.parse_args(argv)
    check_step_args(p, args, rounds=12, quick_rounds=4)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = step_device(args)
    sparseprop_modules, sparseprop_note = (None, "left out (--no-sparseprop)") if args.no_sparseprop else (None, None)
    if not args.no_sparseprop:
        sparseprop_modules, sparseprop_note = import_sparseprop() if device.type == "cpu" else (None, "CPU only")
    meta = harness.metadata(device)
    print(
        f"{SCRIPT}: {harness.machine_line(meta)}, torch {meta['torch']}, batch "
        f"{args.batch}, sparsity {args.sparsity}, {args.rounds} rounds"
        + (f"; sparseprop: {sparseprop_note}" if sparseprop_note else ""),
        flush=True,
    )
    torch.manual_seed(0)
    dense = ResNet18().to(device).train()
    mask_model(dense, args.sparsity)
    x = torch.randn(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)

    start = time.perf_counter()
    models, report = build_contenders(dense, x, args.sparsity, sparseprop_modules, args.measure_repeats)
    setup_s = time.perf_counter() - start
    print(f"\nsparsify(model, example_input=x) report ({setup_s:.1f} s to build every contender):\n{report}\n")

    # the same logits from the same weights (batch norm in training mode: the batch's statistics)
    with torch.no_grad():
        logits = {name: m(x) for name, m in models.items()}
    scale = logits["dense"].abs().max().item()
    diffs = {name: (v - logits["dense"]).abs().max().item() / scale for name, v in logits.items()}
    steps = {name: make_step(m, x, y) for name, m in models.items()}
    samples = time_steps(steps, device, args.warmup, args.rounds)

    stats = {name: harness.summarize(s) for name, s in samples.items()}
    dense_ms = stats["dense"]["median_s"] * 1e3
    print(f"{'contender':<16} {'step ms':>9} {'p20-p80':>17} {'x dense':>8} {'logits diff':>12}")
    for name, s in stats.items():
        ms = s["median_s"] * 1e3
        spread = f"{s['p20_s'] * 1e3:.0f}-{s['p80_s'] * 1e3:.0f}"
        print(f"{name:<16} {ms:>9.1f} {spread:>17} {dense_ms / ms:>7.2f}x {diffs[name]:>12.1e}")
    print(f"load average at the end {harness.load_average()}")
    if not args.no_json:
        path = harness.results_path(SCRIPT, device) if args.out is None else Path(args.out)
        payload = {
            "script": SCRIPT,
            "metadata": meta,
            "config": {**vars(args), "sparseprop_note": sparseprop_note, "setup_s": setup_s},
            "report": [
                {
                    "name": c.name,
                    "kind": c.kind,
                    "shape": list(c.shape),
                    "action": c.action,
                    "sparsity": c.sparsity,
                    "dense_ms": c.timing.dense_ms if c.timing else None,
                    "sparse_ms": c.timing.sparse_ms if c.timing else None,
                    "reason": c.reason,
                }
                for c in report.changes
            ],
            "logits_max_rel_diff": diffs,
            "step": {name: {**s, "speedup_vs_dense": dense_ms / (s["median_s"] * 1e3)} for name, s in stats.items()},
            "loadavg_at_end": harness.load_average(),
        }
        harness.write_json(path, payload)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
