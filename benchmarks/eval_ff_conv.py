"""Evaluate a finished ``train-ff --arch conv`` run: every predictor, with and without flip test-time
augmentation, on the run's validation split and the test set; the predictor is chosen on validation.

Run from the repository root::

    python -m benchmarks.eval_ff_conv runs/<run> --out train_ff_conv_fmnist_cfse_35ep

Reads ``<run>/checkpoint.pt`` (the trainer and the command's arguments: dataset, validation split),
prints one line per (predictor, flip TTA) with its validation and test error, marks the one with the
lowest validation error (ties: the first in the table), and writes
``benchmarks/results/<--out>_eval.json``.
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
    args = p.parse_args(argv)
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
    if not cli["valid"]:
        raise SystemExit(f"{args.run}: the run held out no validation images (--valid 0): nothing to choose on")
    valid = (images[-cli["valid"] :], train.labels[-cli["valid"] :])
    test = (test.images.view(-1, 1, side, side), test.labels)
    rows = []
    for tta in (False, True):
        errs = {name: trainer.evaluate(*data, flip_tta=tta) for name, data in (("valid", valid), ("test", test))}
        for m in PREDICTORS:
            if m in errs["valid"]:
                rows.append({"predictor": m, "flip_tta": tta, "valid": errs["valid"][m], "test": errs["test"][m]})
    best = min(rows, key=lambda r: r["valid"])
    epochs = len(state["history"])
    train_s = sum(r["time_s"] for r in state["history"])
    print(f"{args.run}: {cli['dataset']}, {epochs} epochs, {train_s:.0f} s of training")
    for r in rows:
        mark = "  <- chosen on validation" if r is best else ""
        print(
            f"  {r['predictor']:>8} {'flip TTA' if r['flip_tta'] else '        '}  valid {100 * r['valid']:5.2f} %"
            f"  test {100 * r['test']:5.2f} %{mark}"
        )
    payload = {
        "run": str(args.run),
        "cli_args": cli,
        "epochs": epochs,
        "train_time_s": train_s,
        "rows": rows,
        "chosen": best,
        "meta": harness.metadata(torch.device("cpu")),
    }
    path = harness.RESULTS_DIR / f"{args.out}_eval.json"
    path.write_text(json.dumps(payload, indent=1, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
