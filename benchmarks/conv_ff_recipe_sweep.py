"""Short runs of conv FF recipes (``ffops.ff.FFConvNet`` + ``ConvFFTrainer``) to choose a long run's.

Run from the repository root::

    python -m benchmarks.conv_ff_recipe_sweep                                   # every recipe below
    python -m benchmarks.conv_ff_recipe_sweep --recipes cfse,cfse-bf16 --train-size 50000 --epochs 2

Each recipe trains from seed 0 on the first ``--train-size`` images of the dataset's 50k training part
(the last 10k of the 60k training images are the validation split; the test set is never used),
with a cosine schedule over ``--epochs``, and is scored on the validation split by each predictor:
summed goodness, the last block's goodness, and the softmax head (when the recipe has one). One
line per recipe is appended to
``benchmarks/results/conv_ff_recipe_sweep_<dataset>_<train-size>_<epochs>ep_cpu.jsonl``.
A short run is a proxy: it ranks how fast a recipe learns (augmentation pays only in long runs).
"""

import argparse
import json
import time

import torch

from benchmarks import harness
from ffops.data import load_dataset
from ffops.ff import ConvFFTrainer, FFConvNet

CFSE = {"channels": [20, 80, 240, 480], "groups": [1, 10, 1, 10], "pool": [0, 1, 0, 1], "head": True}
TRAIN = {"optimizer": "adam", "lr": 0.01, "schedule": "cosine", "augment": "crop-flip"}
# name -> (FFConvNet keyword arguments, ConvFFTrainer keyword arguments), spelled out in full
RECIPES = {
    "cfse": (CFSE, TRAIN),
    "cfse-bf16": (CFSE, {**TRAIN, "bf16": True, "channels_last": True}),
    "cfse-noaug": (CFSE, {**TRAIN, "augment": "none"}),
    "cfse-crop": (CFSE, {**TRAIN, "augment": "crop"}),
    "cfse-lr3e-3": (CFSE, {**TRAIN, "lr": 3e-3}),
    "cfse-adamw": (CFSE, {**TRAIN, "optimizer": "adamw", "weight_decay": 0.05}),
    "plain-3": ({"channels": [20, 80, 240], "groups": [1, 1, 1], "pool": [0, 1, 1], "head": True}, TRAIN),
    "cfse-wide": ({**CFSE, "channels": [40, 160, 480, 960]}, {**TRAIN, "bf16": True, "channels_last": True}),
    # Hinton's label overlay (as input planes) with SymBa's loss instead of CwC; no head
    "cfse-symba": (
        {**CFSE, "head": False, "objective": "symba"},
        {**TRAIN, "lr": 3e-3, "bf16": True, "channels_last": True},
    ),
}
PREDICTORS = ("goodness", "last", "head")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.conv_ff_recipe_sweep", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=("fashion-mnist", "mnist"), default="fashion-mnist")
    p.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated, of: {', '.join(RECIPES)}")
    p.add_argument("--train-size", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    unknown = [r for r in args.recipes.split(",") if r not in RECIPES]
    if unknown:
        p.error(f"--recipes: unknown {unknown}; choose from {', '.join(RECIPES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    meta = harness.metadata(torch.device("cpu"))
    print(f"conv_ff_recipe_sweep: {harness.machine_line(meta)}, torch {meta['torch']}, ffops {meta['ffops']}")
    split = "train" if args.dataset == "fashion-mnist" else "train+valid"
    data = load_dataset(args.dataset, split=split)
    images, labels = data.images.view(-1, 1, 28, 28), data.labels
    train = (images[: min(args.train_size, len(images) - 10000)], labels[: min(args.train_size, len(images) - 10000)])
    valid = (images[-10000:], labels[-10000:])
    out = harness.RESULTS_DIR / f"conv_ff_recipe_sweep_{args.dataset}_{len(train[0])}_{args.epochs}ep_cpu.jsonl"
    print(f"{args.dataset}: {len(train[0])} train / 10000 valid images, {args.epochs} epochs, batch {args.batch}")
    for name in args.recipes.split(","):
        net_kwargs, trainer_kwargs = RECIPES[name]
        torch.manual_seed(0)
        net = FFConvNet(
            1, net_kwargs["channels"], **{k: v for k, v in net_kwargs.items() if k != "channels"}, image_size=28
        )
        trainer = ConvFFTrainer(net, seed=0, **trainer_kwargs)
        t0 = time.perf_counter()
        history = trainer.fit(*train, valid=valid, epochs=args.epochs, batch_size=args.batch)
        seconds = time.perf_counter() - t0
        last = history[-1]["valid"]
        best = min((m for m in PREDICTORS if m in last), key=lambda m: last[m])
        print(
            f"{name:>14}: valid err "
            + ", ".join(f"{m} {100 * last[m]:.2f}%" for m in PREDICTORS if m in last)
            + f"  (per epoch: {best} {[round(100 * r['valid'][best], 2) for r in history]})  {seconds:.0f} s",
            flush=True,
        )
        row = {
            "recipe": name,
            "net": net_kwargs,
            "trainer": trainer_kwargs,
            "args": vars(args),
            "seconds": seconds,
            "history": [{k: r[k] for k in ("epoch", "loss", "valid", "time_s")} for r in history],
            "metadata": meta,
        }
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")
    print(f"appended to {out}")


if __name__ == "__main__":
    main()
