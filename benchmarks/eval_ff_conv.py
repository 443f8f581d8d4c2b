"""Evaluate a finished ``train-ff --arch conv`` run: every predictor, with and without flip test-time
augmentation, on the run's validation split and the test set; the predictor is chosen on validation.

Run from the repository root::

    python -m benchmarks.eval_ff_conv runs/<run> --out train_ff_conv_fmnist_cfse_35ep

Reads ``<run>/checkpoint.pt`` (the trainer and the command's arguments: dataset, validation split),
prints one line per (predictor, flip TTA) with its validation and test error, marks the one with the
lowest validation error (ties: the first in the table), and writes
``benchmarks/results/<--out>_eval.json``.

A run on all training images (``--valid 0``) has nothing to choose on: give the predictor chosen on
the validation split of an earlier run of the recipe, ``--predictor head --flip-tta --chosen-by
<that run's eval JSON>``; every row's test error is still printed, the given one is marked.
"""

import argparse
import json
from pathlib import Path

import torch

from benchmarks import harness
from ffops.data import load_dataset
from ffops.ff import ConvFFTrainer

PREDICTORS = ("goodness", "last", "head")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.eval_ff_conv", description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path, help="the run's output directory (with checkpoint.pt)")
    p.add_argument("--out", required=True, help="name of the JSON under benchmarks/results (<out>_eval.json)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--predictor", choices=PREDICTORS, help="for a run without validation split: the chosen one")
    p.add_argument("--flip-tta", action="store_true", help="with --predictor: the choice uses flip TTA")
    p.add_argument("--chosen-by", help="with --predictor: where the choice was made (e.g. an earlier eval JSON)")
    args = p.parse_args(argv)
    if (args.predictor is None) != (args.chosen_by is None) or (args.flip_tta and args.predictor is None):
        p.error("--predictor and --chosen-by go together (--flip-tta with them): the choice and where it was made")
    if args.threads:
        torch.set_num_threads(args.threads)
    state = torch.load(args.run / "checkpoint.pt", map_location="cpu", weights_only=True)
    cli = state["cli_args"]
    trainer = ConvFFTrainer.from_state_dict(state)
    split = "train" if cli["data_root"] or cli["dataset"] == "fashion-mnist" else "train+valid"
    train = load_dataset(cli["dataset"], cli["data_root"], split=split)
    test = load_dataset(cli["dataset"], cli["data_root"], split="test")
    side = int(train.images.shape[1] ** 0.5)
    images = train.images.view(-1, 1, side, side)
    if bool(cli["valid"]) == (args.predictor is not None):
        p.error(
            f"{args.run}: the run held out {cli['valid']} validation images: "
            + ("choose on them (no --predictor)" if cli["valid"] else "nothing to choose on, give --predictor")
        )
    splits = {"test": (test.images.view(-1, 1, side, side), test.labels)}
    if cli["valid"]:
        splits["valid"] = (images[-cli["valid"] :], train.labels[-cli["valid"] :])
    rows = []
    for tta in (False, True):
        errs = {name: trainer.evaluate(*data, flip_tta=tta) for name, data in splits.items()}
        for m in PREDICTORS:
            if m in errs["test"]:
                rows.append({"predictor": m, "flip_tta": tta, **{name: errs[name][m] for name in errs}})
    if args.predictor is None:
        best = min(rows, key=lambda r: r["valid"])
    else:
        best = next(r for r in rows if r["predictor"] == args.predictor and r["flip_tta"] == args.flip_tta)
    epochs = len(state["history"])
    train_s = sum(r["time_s"] for r in state["history"])
    print(f"{args.run}: {cli['dataset']}, {epochs} epochs, {train_s:.0f} s of training")
    for r in rows:
        mark = "" if r is not best else f"  <- chosen on {args.chosen_by or 'validation'}"
        valid = f"  valid {100 * r['valid']:5.2f} %" if "valid" in r else ""
        print(
            f"  {r['predictor']:>8} {'flip TTA' if r['flip_tta'] else '        '}{valid}"
            f"  test {100 * r['test']:5.2f} %{mark}"
        )
    payload = {
        "run": str(args.run),
        "cli_args": cli,
        "epochs": epochs,
        "train_time_s": train_s,
        "rows": rows,
        "chosen": best,
        "chosen_by": args.chosen_by or "validation",
        "meta": harness.metadata(torch.device("cpu")),
    }
    path = harness.RESULTS_DIR / f"{args.out}_eval.json"
    path.write_text(json.dumps(payload, indent=1, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
