"""``python -m ffops train-sparse``: train an MLP, prune it gradually to each target sparsity, and
fine-tune it with ffops' sparse layers; compare accuracy and training step time with the dense model.

Flow (one process, CPU or GPU):
  1. dense: train the MLP for ``--epochs`` (Adam, cross-entropy); test accuracy. A copy trained for
     ``--prune-epochs + --finetune-epochs`` more ("dense-longer") is the fair accuracy baseline.
  2. for every sparsity in ``--sparsities``, starting from the dense weights:
     a. gradual magnitude pruning for ``--prune-epochs`` (Zhu & Gupta 2017: cubic schedule
        ``s_t = s_f (1 - (1 - t/T)^3)``, masks recomputed every ``--prune-every`` steps, masked
        dense training between updates; ``--prune-epochs 0`` prunes once, by magnitude);
     b. the pruned layers become ``ffops.nn.SparseLinear`` whose pattern is the final mask, and
        the model is fine-tuned for ``--finetune-epochs`` with the sparse kernels.
  3. timing: the dense model and every sparse model train on the same batches, step by step in
     rotating order (fair on a noisy machine); median time of one training step (forward,
     backward, Adam step) and of one forward pass (inference), and the speedup over dense.

All hidden layers are pruned; the output layer (e.g. 1024 x 10, ~1 % of the weights) stays dense
unless ``--prune-output``: it is too small for the sparse kernels to gain anything and pruning
the classifier costs accuracy for nothing. Sparsities are per pruned layer.

Writes into ``--out``: ``log.json`` (config, per-phase histories, mask schedules, the final
table), ``dense.pt`` and ``sparse-<pct>.pt`` (model state_dicts; ``load_checkpoint`` rebuilds a
model), and ``sparsity.png`` (test accuracy and step time vs sparsity, speedups annotated).

The default run is a short demo (a few minutes on 2 CPU cores). Recommended longer run:
  python -m ffops train-sparse --epochs 10 --prune-epochs 10 --finetune-epochs 10 \\
      --sparsities 0.8,0.9,0.95,0.98 --layers 784,2048,2048,10
"""

import argparse
import copy
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ffops.cli import args as cli_args
from ffops.cli.args import UsageError
from ffops.cli.progress import Progress


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--dataset", default="mnist", choices=("mnist", "fashion-mnist"), help="(default: mnist)")
    p.add_argument("--data-root", default=None, help="directory of IDX files (default: the packaged data)")
    p.add_argument(
        "--layers",
        default=[784, 1024, 1024, 10],
        type=cli_args.size_list(3),
        help="input size, hidden widths and classes (default: 784,1024,1024,10)",
    )
    p.add_argument("--epochs", type=cli_args.positive_int, default=3, help="dense training epochs (default: 3)")
    p.add_argument(
        "--prune-epochs",
        type=cli_args.nonnegative_int,
        default=2,
        help="gradual pruning epochs per sparsity; 0 = one-shot magnitude pruning (default: 2)",
    )
    p.add_argument(
        "--finetune-epochs",
        type=cli_args.nonnegative_int,
        default=2,
        help="sparse fine-tuning epochs per sparsity (default: 2)",
    )
    p.add_argument(
        "--sparsities",
        default=[0.9, 0.95],
        type=cli_args.sparsity_list,
        help="target sparsities of the pruned layers (default: 0.9,0.95)",
    )
    p.add_argument(
        "--prune-every", type=cli_args.positive_int, default=50, help="steps between mask updates (default: 50)"
    )
    p.add_argument("--prune-output", action="store_true", help="prune the output layer too (default: it stays dense)")
    p.add_argument("--batch-size", type=cli_args.positive_int, default=128)
    p.add_argument(
        "--lr", type=cli_args.positive_float, default=1e-3, help="Adam learning rate, dense and pruning (default: 1e-3)"
    )
    p.add_argument(
        "--finetune-lr",
        type=cli_args.positive_float,
        default=None,
        help="Adam learning rate of fine-tuning (default: --lr)",
    )
    p.add_argument(
        "--timing-steps",
        type=cli_args.nonnegative_int,
        default=50,
        help="timed training steps per model, interleaved (default: 50; 0 skips timing)",
    )
    p.add_argument("--train-subset", type=cli_args.positive_int, default=None, help="train on the first N samples only")
    p.add_argument("--device", type=cli_args.device, default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument(
        "--backend", default="auto", choices=("auto", "reference", "cpu", "cuda", "triton"), help="ffops backend"
    )
    p.add_argument("--threads", type=cli_args.positive_int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=cli_args.nonnegative_int, default=0)
    p.add_argument("--out", default=None, help="output directory (default: runs/train-sparse-<time>)")


# ----------------------------------------------------------------------------------------- model


class MLP(nn.Module):
    """``Linear -> ReLU -> ... -> Linear`` over ``sizes`` (input, hidden..., classes).

    When the first layer is sparse the input is handed over feature-major (``x.t().contiguous().t()``):
    the sparse kernels work on that layout and keep it, so a chain of sparse layers never transposes
    (see ffops/ops/sparse_linear.py)."""

    def __init__(self, sizes, device=None):
        super().__init__()
        if len(sizes) < 2:
            raise ValueError(f"MLP: need at least input and output sizes, got {sizes}")
        self.sizes = list(sizes)
        self.layers = nn.ModuleList(nn.Linear(a, b, device=device) for a, b in itertools.pairwise(sizes))

    def forward(self, x):
        from ffops.nn import SparseLinear

        if isinstance(self.layers[0], SparseLinear) and x.dim() == 2:
            x = x.t().contiguous().t()
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = F.relu(x)
        return x


def pruned_layer_names(sizes, prune_output: bool) -> list[str]:
    n = len(sizes) - 1
    return [f"layers.{i}" for i in range(n if prune_output else n - 1)]


def to_sparse(model: MLP, masks: dict) -> list[dict]:
    """Swap the layers named in ``masks`` for ``SparseLinear`` with exactly that pattern (in place;
    a kept weight that happens to be 0 stays in the pattern). Returns one row per swapped layer."""
    from ffops.nn import SparseLinear

    rows = []
    for name, mask in masks.items():
        idx = int(name.split(".")[1])
        dense = model.layers[idx]
        sparse = SparseLinear.from_dense(dense, mask=mask)
        sparse.train(dense.training)
        model.layers[idx] = sparse
        rows.append({"layer": name, "shape": list(dense.weight.shape), "nnz": sparse.nnz, "sparsity": sparse.sparsity})
    return rows


def load_checkpoint(path, map_location="cpu") -> MLP:
    """The model of a ``dense.pt`` / ``sparse-<pct>.pt`` checkpoint (sparse layers where it has them)."""
    from ffops.nn import SparseLinear

    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    model = MLP(ckpt["sizes"])
    for name in ckpt["sparse_layers"]:
        idx = int(name.split(".")[1])
        dense = model.layers[idx]
        # an empty pattern of the right shape; load_state_dict takes over the checkpoint's pattern
        model.layers[idx] = SparseLinear.from_dense(dense, mask=torch.zeros_like(dense.weight, dtype=torch.bool))
    model.load_state_dict(ckpt["state_dict"])
    return model


def weight_stats(model: MLP) -> dict:
    """Stored weights of every layer (nonzeros of sparse layers, all entries of dense ones)."""
    from ffops.nn import SparseLinear

    stored = total = 0
    for layer in model.layers:
        if isinstance(layer, SparseLinear):
            stored += layer.nnz
            total += layer.weight_numel()
        else:
            stored += layer.weight.numel()
            total += layer.weight.numel()
    return {"stored_weights": stored, "dense_weights": total, "overall_sparsity": 1.0 - stored / total}


# -------------------------------------------------------------------------------------- training


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(model, opt, x, y, pruner=None) -> torch.Tensor:
    """One step: forward, cross-entropy, backward, optimizer step, (pruning: masks re-applied or
    updated). Gradients are not masked: Adam is elementwise, the kept weights' updates are the same."""
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    if pruner is not None:
        pruner.step()
    return loss


@torch.no_grad()
def evaluate(model, images, labels, batch_size: int = 2000) -> float:
    """Test accuracy (fraction)."""
    was = model.training
    model.eval()
    correct = 0
    for i in range(0, len(images), batch_size):
        correct += (model(images[i : i + batch_size]).argmax(1) == labels[i : i + batch_size]).sum().item()
    model.train(was)
    return correct / max(len(images), 1)


def train_epochs(
    model,
    opt,
    train,
    test,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    phase: str,
    pruner=None,
    quiet: bool = False,
) -> list[dict]:
    """``epochs`` epochs over shuffled ``train = (x, y)`` with a progress bar and one line per epoch."""
    x, y = train
    device = x.device
    gen = torch.Generator().manual_seed(seed)
    steps = (len(x) + batch_size - 1) // batch_size
    history = []
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(len(x), generator=gen).to(device)
        bar = Progress(steps, f"{phase} epoch {epoch}/{epochs}")
        total, seen = torch.zeros((), device=device), 0
        _sync(device)
        t0 = time.perf_counter()
        for s in range(steps):
            idx = perm[s * batch_size : (s + 1) * batch_size]
            loss = train_step(model, opt, x[idx], y[idx], pruner)
            total += loss.detach() * len(idx)
            seen += len(idx)
            if s % 10 == 9 or s == steps - 1:
                fields = {"loss": loss.item()}
                if pruner is not None:
                    fields["sparsity"] = pruner.sparsity
                bar.update(10 if s % 10 == 9 else s % 10 + 1, **fields)
        _sync(device)
        dt = time.perf_counter() - t0
        bar.close()
        record = {
            "phase": phase,
            "epoch": epoch,
            "loss": total.item() / max(seen, 1),
            "test_accuracy": evaluate(model, *test),
            "samples_per_s": seen / dt if dt > 0 else None,
            "epoch_time_s": dt,
        }
        if pruner is not None:
            record["sparsity"] = pruner.sparsity
        history.append(record)
        if not quiet:
            extra = f"  sparsity {100 * record['sparsity']:5.1f}%" if pruner is not None else ""
            print(
                f"{phase:<14} epoch {epoch:>2}/{epochs}  loss {record['loss']:.4f}  "
                f"test acc {100 * record['test_accuracy']:.2f}%{extra}  {record['samples_per_s']:,.0f} samples/s",
                flush=True,
            )
    return history


def prune(
    model,
    train,
    test,
    *,
    sparsity: float,
    names,
    epochs: int,
    batch_size: int,
    lr: float,
    prune_every: int,
    seed: int,
    phase: str,
    quiet: bool = False,
):
    """Gradual magnitude pruning of ``model`` (dense layers, in place) to ``sparsity``; returns the
    pruner (``.masks``, ``.history``) and the epoch history."""
    from ffops.sparse.pruning import GradualMagnitudePruner

    steps = epochs * ((len(train[0]) + batch_size - 1) // batch_size)
    pruner = GradualMagnitudePruner(model, sparsity, total_steps=max(steps, 1), update_every=prune_every, names=names)
    if steps == 0:  # one-shot magnitude pruning
        pruner.update_masks(sparsity)
        pruner.step_count = 1
        return pruner, []
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history = train_epochs(
        model,
        opt,
        train,
        test,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        phase=phase,
        pruner=pruner,
        quiet=quiet,
    )
    return pruner, history


def time_steps(models: dict, train, *, batch_size: int, steps: int, lr: float, seed: int, warmup: int = 5) -> dict:
    """Median time of a training step and of a forward pass for every model, interleaved on the
    same batches in rotating order. The models are copied (the originals are not trained)."""
    x, y = train
    device = x.device
    gen = torch.Generator().manual_seed(seed)
    n_batches = min(16, max(1, len(x) // batch_size))
    batches = []
    for _ in range(n_batches):
        idx = torch.randperm(len(x), generator=gen)[:batch_size].to(device)
        batches.append((x[idx], y[idx]))
    runs = {}
    for k, m in models.items():
        m = copy.deepcopy(m)
        runs[k] = (m, torch.optim.Adam(m.parameters(), lr=lr))
    keys = list(runs)
    step_t = {k: [] for k in keys}
    fwd_t = {k: [] for k in keys}
    bar = Progress(warmup + steps, "timing")
    for r in range(warmup + steps):
        xb, yb = batches[r % n_batches]
        order = keys[r % len(keys) :] + keys[: r % len(keys)]
        for k in order:
            model, opt = runs[k]
            _sync(device)
            t0 = time.perf_counter()
            train_step(model, opt, xb, yb)
            _sync(device)
            t1 = time.perf_counter()
            with torch.no_grad():
                model(xb)
            _sync(device)
            t2 = time.perf_counter()
            if r >= warmup:
                step_t[k].append(t1 - t0)
                fwd_t[k].append(t2 - t1)
        bar.update(1)
    bar.close()

    def q(v, f):
        v = sorted(v)
        return v[min(len(v) - 1, int(f * len(v)))]

    return {
        k: {
            "step_ms": 1e3 * statistics.median(step_t[k]),
            "step_ms_q25": 1e3 * q(step_t[k], 0.25),
            "step_ms_q75": 1e3 * q(step_t[k], 0.75),
            "forward_ms": 1e3 * statistics.median(fwd_t[k]),
        }
        for k in keys
    }


# ------------------------------------------------------------------------------------------- run


def _choose_backend(name: str, device: torch.device) -> tuple[str, str]:
    """The ffops backend to run with and what ``ffops.sparse_linear`` then runs on ``device``
    (``"cpp"``, ``"triton"`` or ``"reference"``): ``auto`` falls back to the reference, with a
    warning, where this build has no C++ sparse kernel for the device."""
    from ffops import _backend

    with _backend.use_backend(name):
        impl = _backend.resolve(device)
    if impl == "cpp":
        key = "CUDA" if device.type == "cuda" else "CPU"
        if not torch._C._dispatch_has_kernel_for_dispatch_key("ffops::sparse_linear_fwd", key):
            if name != "auto":
                raise UsageError(
                    f"ffops backend {name!r} has no sparse_linear kernel for {key} in this "
                    "build; use --backend reference (or rebuild ffops)"
                )
            print(
                f"warning: this ffops build has no C++ sparse_linear kernel for {key}; the sparse layers run the "
                "pure-torch reference (dense math), so their step times show no speedup",
                file=sys.stderr,
            )
            return "reference", "reference"
    return name, impl


def _pct(s: float) -> str:
    return f"{100 * s:g}"


def run(args: argparse.Namespace) -> int:
    """Train, prune, fine-tune and time; a user mistake raises ``UsageError`` before training starts."""
    import ffops

    sizes, sparsities = args.layers, args.sparsities
    if not cli_args.has_module("matplotlib"):
        print("warning: matplotlib is not installed: no sparsity.png (pip install matplotlib)", file=sys.stderr)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    backend, impl = _choose_backend(args.backend, device)
    with ffops.use_backend(backend):  # scoped: run() may be called in a process that goes on
        return _run(args, sizes, sparsities, device, impl)


def _run(args, sizes, sparsities, device, impl) -> int:
    import ffops
    from ffops import data
    from ffops.cli.plots import plot_sparse_results

    plots = cli_args.has_module("matplotlib")

    try:
        train_set = data.load_dataset(args.dataset, args.data_root, split="train" if args.data_root else "train+valid")
        test_set = data.load_dataset(args.dataset, args.data_root, split="test")
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    train_x, train_y = train_set.images, train_set.labels
    if args.train_subset:
        train_x, train_y = train_x[: args.train_subset], train_y[: args.train_subset]
    if train_x.shape[1] != sizes[0] or train_set.num_classes != sizes[-1]:
        raise UsageError(
            f"--layers {','.join(map(str, sizes))} must start with the input size {train_x.shape[1]} and end "
            f"with the number of classes {train_set.num_classes}"
        )
    train = (train_x.to(device), train_y.to(device))
    test = (test_set.images.to(device), test_set.labels.to(device))
    out = Path(args.out or f"runs/train-sparse-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    names = pruned_layer_names(sizes, args.prune_output)
    ft_lr = args.finetune_lr if args.finetune_lr is not None else args.lr
    print(
        f"{args.dataset}: {len(train_x)} train / {len(test[0])} test samples; MLP {sizes}; pruned layers "
        f"{', '.join(names)}; sparsities {', '.join(_pct(s) + '%' for s in sparsities)}; device {device}; "
        f"sparse kernels: {impl}; threads {torch.get_num_threads()}",
        flush=True,
    )
    t_start = time.perf_counter()

    torch.manual_seed(args.seed)
    dense = MLP(sizes, device=device)
    opt = torch.optim.Adam(dense.parameters(), lr=args.lr)
    histories = {
        "dense": train_epochs(
            dense,
            opt,
            train,
            test,
            epochs=args.epochs,
            batch_size=args.batch_size,
            seed=args.seed,
            phase="dense",
        )
    }
    dense_acc = evaluate(dense, *test)
    torch.save(
        {
            "sizes": sizes,
            "sparsity": 0.0,
            "sparse_layers": [],
            "test_accuracy": dense_acc,
            "state_dict": dense.state_dict(),
        },
        out / "dense.pt",
    )

    results = [
        {
            "model": "dense",
            "sparsity": 0.0,
            "test_accuracy": dense_acc,
            "pruned_accuracy": None,
            **weight_stats(dense),
            "checkpoint": "dense.pt",
        }
    ]
    models = {"dense": dense}
    schedules = {}
    for s in sparsities:
        tag = f"sparse-{_pct(s)}"
        model = copy.deepcopy(dense)
        pruner, hist = prune(
            model,
            train,
            test,
            sparsity=s,
            names=names,
            epochs=args.prune_epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            prune_every=args.prune_every,
            seed=args.seed + 1,
            phase=f"prune {_pct(s)}%",
        )
        histories[f"prune-{_pct(s)}"] = hist
        schedules[_pct(s)] = pruner.history
        pruned_acc = evaluate(model, *test)
        layers = to_sparse(model, pruner.masks)
        opt = torch.optim.Adam(model.parameters(), lr=ft_lr)
        histories[f"finetune-{_pct(s)}"] = train_epochs(
            model,
            opt,
            train,
            test,
            epochs=args.finetune_epochs,
            batch_size=args.batch_size,
            seed=args.seed + 2,
            phase=f"finetune {_pct(s)}%",
        )
        acc = evaluate(model, *test)
        torch.save(
            {
                "sizes": sizes,
                "sparsity": s,
                "sparse_layers": names,
                "test_accuracy": acc,
                "state_dict": model.state_dict(),
            },
            out / f"{tag}.pt",
        )
        results.append(
            {
                "model": tag,
                "sparsity": s,
                "test_accuracy": acc,
                "pruned_accuracy": pruned_acc,
                **weight_stats(model),
                "layers": layers,
                "checkpoint": f"{tag}.pt",
            }
        )
        models[tag] = model

    extra_epochs = args.prune_epochs + args.finetune_epochs
    if extra_epochs > 0:
        # the sparse models trained for extra_epochs more than the dense one: a dense copy trained
        # as long is the fair accuracy baseline (same architecture: timed as "dense")
        longer = copy.deepcopy(dense)
        opt = torch.optim.Adam(longer.parameters(), lr=args.lr)
        histories["dense-longer"] = train_epochs(
            longer,
            opt,
            train,
            test,
            epochs=extra_epochs,
            batch_size=args.batch_size,
            seed=args.seed + 1,
            phase=f"dense +{extra_epochs} epochs",
        )
        acc = evaluate(longer, *test)
        torch.save(
            {
                "sizes": sizes,
                "sparsity": 0.0,
                "sparse_layers": [],
                "test_accuracy": acc,
                "state_dict": longer.state_dict(),
            },
            out / "dense-longer.pt",
        )
        results.insert(
            1,
            {
                "model": "dense-longer",
                "sparsity": 0.0,
                "test_accuracy": acc,
                "pruned_accuracy": None,
                **weight_stats(longer),
                "checkpoint": "dense-longer.pt",
            },
        )

    if args.timing_steps > 0:
        print(
            f"timing {args.timing_steps} training steps per model (batch {args.batch_size}), interleaved ...",
            flush=True,
        )
        times = time_steps(
            models, train, batch_size=args.batch_size, steps=args.timing_steps, lr=args.lr, seed=args.seed + 3
        )
        base = times["dense"]
        for r in results:
            t = times[r["model"] if r["model"] in times else "dense"]
            r.update(t)
            r["speedup"] = base["step_ms"] / t["step_ms"]
            r["forward_speedup"] = base["forward_ms"] / t["forward_ms"]
    wall = time.perf_counter() - t_start

    config = {
        "sizes": sizes,
        "pruned_layers": names,
        "dense_layers": [f"layers.{i}" for i in range(len(sizes) - 1) if f"layers.{i}" not in names],
        "sparsities": sparsities,
        "sparse_impl": impl,
        "backend": ffops.get_backend(),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "train_samples": len(train_x),
        "test_samples": len(test[0]),
        "optimizer": "adam",
        "finetune_lr": ft_lr,
        "schedule": "cubic (Zhu & Gupta 2017)",
    }
    log = {
        "args": vars(args),
        "config": config,
        "history": histories,
        "mask_updates": schedules,
        "results": results,
        "wall_time_s": wall,
    }
    (out / "log.json").write_text(json.dumps(log, indent=1, default=str))
    if plots:
        plot_sparse_results(
            results,
            out / "sparsity.png",
            title=f"{args.dataset} MLP {sizes}, batch {args.batch_size}, {device} ({impl})",
        )

    print()
    print(format_table(results))
    print(
        f"done in {wall:.0f} s; wrote {out}/log.json, dense.pt, "
        + ", ".join(f"{r['checkpoint']}" for r in results[1:])
        + (", sparsity.png" if plots else "")
    )
    return 0


def format_table(results: list[dict]) -> str:
    head = (
        f"{'model':<12} {'sparsity':>8} {'weights':>10} {'pruned acc':>10} {'test acc':>9} "
        f"{'step ms':>8} {'speedup':>8} {'fwd ms':>7} {'fwd speedup':>11}"
    )
    rows = [head, "-" * len(head)]
    for r in results:
        pa = "-" if r.get("pruned_accuracy") is None else f"{100 * r['pruned_accuracy']:.2f}%"
        timing = (
            f"{r['step_ms']:>8.2f} {r['speedup']:>7.2f}x {r['forward_ms']:>7.2f} {r['forward_speedup']:>10.2f}x"
            if "step_ms" in r
            else f"{'-':>8} {'-':>8} {'-':>7} {'-':>11}"
        )
        rows.append(
            f"{r['model']:<12} {100 * r['sparsity']:>7.1f}% {r['stored_weights']:>10,} {pa:>10} "
            f"{100 * r['test_accuracy']:>8.2f}% {timing}"
        )
    return "\n".join(rows)
