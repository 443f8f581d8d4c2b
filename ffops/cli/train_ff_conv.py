"""``python -m ffops train-ff --arch conv``: a convolutional FF net (``ffops.ff.FFConvNet``, CwC blocks)
trained block-locally on MNIST / Fashion-MNIST.

The last ``--valid`` training images are held out (recipes are chosen on them, never on the test
set). Per epoch: a progress bar, one line with the blocks' losses and the validation / test errors of
the predictors (summed goodness, last block's goodness, head), and ``log.json`` + ``checkpoint.pt``
(``--resume`` goes on from it); ``curves.png`` at the end.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from ffops.cli import args as cli_args
from ffops.cli.args import UsageError
from ffops.cli.progress import Progress
from ffops.ff import Callback, save_checkpoint

# defaults of the conv path where the MLP path has its own (None in the shared parser)
CONV_DEFAULTS = {"lr": 0.01, "batch_size": 128}
# the recipe's net: CwComp's CFSE channel plan for 28 x 28 images
DEFAULT_CHANNELS, DEFAULT_GROUPS, DEFAULT_POOL = [20, 80, 240, 480], [1, 10, 1, 10], [0, 1, 0, 1]


def _bool_list(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or any(p not in ("0", "1") for p in parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated 0 / 1 flags (e.g. 0,1,0,1), got {text!r}")
    return [int(p) for p in parts]


def add_conv_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``--arch conv`` (an error with ``--arch mlp``)."""
    g = p.add_argument_group("conv net (--arch conv)")
    g.add_argument(
        "--objective",
        default="cwc",
        choices=("cwc", "symba"),
        help="cwc: channel-wise competitive blocks (CwComp); symba: label planes overlaid on the input, "
        "per-sample goodness, SymBa's loss with --alpha, random wrong labels as negatives (default: cwc)",
    )
    g.add_argument(
        "--channels",
        type=cli_args.size_list(1),
        default=None,
        help="output channels per block, multiples of the classes (default: 20,80,240,480, CwComp's CFSE)",
    )
    g.add_argument(
        "--groups", type=cli_args.size_list(1), default=None, help="conv groups per block (default: 1,10,1,10)"
    )
    g.add_argument(
        "--pool", type=_bool_list, default=None, help="2x2 max-pool after each block, 0/1 (default: 0,1,0,1)"
    )
    g.add_argument("--kernel-size", type=cli_args.positive_int, default=3, help="(default: 3)")
    g.add_argument("--head", action="store_true", help="add a linear softmax head on the last block's output")
    g.add_argument(
        "--augment",
        default=None,
        choices=("none", "crop", "crop-flip"),
        help="on-the-fly augmentation (default: crop-flip for fashion-mnist, crop for mnist)",
    )
    g.add_argument("--padding", type=cli_args.nonnegative_int, default=2, help="random-crop padding (default: 2)")
    g.add_argument("--schedule", default="cosine", choices=("constant", "cosine"), help="lr schedule (default: cosine)")
    g.add_argument("--bf16", action="store_true", help="bfloat16 autocast of the blocks (faster on AVX512-BF16 / GPUs)")
    g.add_argument("--channels-last", action="store_true", help="NHWC memory format (faster oneDNN / cuDNN convs)")
    g.add_argument(
        "--valid",
        type=cli_args.nonnegative_int,
        default=10000,
        help="last N training images held out for validation (default: 10000; 0: train on all)",
    )


def _with_defaults(args: argparse.Namespace) -> argparse.Namespace:
    for name, default in (
        ("channels", DEFAULT_CHANNELS),
        ("groups", None if args.channels else DEFAULT_GROUPS),
        ("pool", None if args.channels else DEFAULT_POOL),
        ("augment", "crop-flip" if args.dataset == "fashion-mnist" else "crop"),
        *CONV_DEFAULTS.items(),
    ):
        if getattr(args, name) is None:
            setattr(args, name, default)
    return args


class _ConsoleCallback(Callback):
    """Progress bar per epoch and one summary line per epoch."""

    def on_fit_start(self, trainer, info):
        self.steps, self.epochs = info["steps_per_epoch"], info["epochs"]

    def on_epoch_start(self, trainer, info):
        self.bar = Progress(self.steps, f"epoch {info['epoch']}/{info['epochs']}")

    def on_batch_end(self, trainer, info):
        if info["step"] % 10 == 0 or info["step"] == info["steps"]:
            losses = {f"L{i + 1}": v for i, v in enumerate(info["losses"])}
            self.bar.update(10 if info["step"] % 10 == 0 else info["step"] % 10, **losses)

    def on_epoch_end(self, trainer, record):
        self.bar.close()
        parts = [
            f"epoch {record['epoch']:>3}/{self.epochs}",
            "loss [" + " ".join(f"{v:.4f}" for v in record["loss"]) + "]",
        ]
        for split in ("valid", "test"):
            if split in record:
                errs = record[split]
                parts.append(
                    f"{split} err "
                    + ", ".join(f"{m} {100 * errs[m]:.2f}%" for m in ("goodness", "last", "head") if m in errs)
                )
        parts.append(f"{record['samples_per_s']:,.0f} samples/s")
        print("  ".join(parts), flush=True)


class _SaveEachEpoch(Callback):
    """Writes checkpoint.pt and log.json after every epoch, so that an interrupted run can resume."""

    def __init__(self, out: Path, log: dict):
        self.out, self.log = out, log

    def on_epoch_end(self, trainer, record):
        save_run(self.out, trainer, self.log)


def save_run(out: Path, trainer, log: dict) -> None:
    """log.json (with the history so far) and checkpoint.pt (with the command's arguments, for --resume)."""
    log["history"] = trainer.history
    (out / "log.json").write_text(json.dumps(log, indent=1, default=str))
    save_checkpoint(out / "checkpoint.pt", trainer, cli_args=log["args"])


def run_conv(args: argparse.Namespace, state: dict | None) -> int:
    """Train the conv net of ``args`` (``state``: a checkpoint to resume)."""
    import torch

    from ffops import data
    from ffops.cli.plots import plot_conv_history
    from ffops.ff import ConvFFTrainer, FFConvNet

    args = _with_defaults(args)
    objective = getattr(args, "objective", "cwc")  # checkpoints of runs before --objective are cwc runs
    plots = cli_args.has_module("matplotlib")
    if not plots:
        print("warning: matplotlib is not installed: no curves.png (pip install matplotlib)", file=sys.stderr)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        split = "train" if args.data_root or args.dataset == "fashion-mnist" else "train+valid"
        train_set = data.load_dataset(args.dataset, args.data_root, split=split)
        test_set = data.load_dataset(args.dataset, args.data_root, split="test")
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    side = int(train_set.images.shape[1] ** 0.5)
    images, labels = train_set.images.view(-1, 1, side, side), train_set.labels
    if args.valid >= len(images):
        raise UsageError(f"--valid {args.valid} leaves no training images (the set has {len(images)})")
    valid = (images[-args.valid :], labels[-args.valid :]) if args.valid else None
    train_x, train_y = (images[: -args.valid], labels[: -args.valid]) if args.valid else (images, labels)
    if args.train_subset:
        train_x, train_y = train_x[: args.train_subset], train_y[: args.train_subset]
    test = (test_set.images.view(-1, 1, side, side), test_set.labels)
    callbacks = [_ConsoleCallback()]
    if state is None:
        torch.manual_seed(args.seed)
        try:
            model = FFConvNet(
                1,
                args.channels,
                num_classes=train_set.num_classes,
                kernel_size=args.kernel_size,
                groups=args.groups,
                pool=args.pool,
                image_size=side,
                head=args.head,
                objective=objective,
                alpha=args.alpha,
                device=args.device,
            )
            trainer = ConvFFTrainer(
                model,
                optimizer=args.optimizer,
                lr=args.lr,
                weight_decay=args.weight_decay,
                schedule=args.schedule,
                augment=args.augment,
                padding=args.padding,
                bf16=args.bf16,
                channels_last=args.channels_last,
                seed=args.seed,
                callbacks=callbacks,
            )
        except (TypeError, ValueError) as exc:  # a combination of options the net or trainer refuses
            raise UsageError(str(exc)) from None
        done, wall_before = 0, 0.0
    else:
        trainer = ConvFFTrainer.from_state_dict(state, device=args.device, callbacks=callbacks)
        model, done = trainer.model, len(trainer.history)
        wall_before = sum(r["time_s"] + r["eval_time_s"] for r in trainer.history)
        if done >= args.epochs:
            raise UsageError(
                f"--resume {args.resume}: the run has done all its {done} epochs; give a larger --epochs to train on"
            )
    out = Path(args.out or f"runs/train-ff-conv-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"{args.dataset}: {len(train_x)} train / {0 if valid is None else len(valid[0])} valid / {len(test[0])} test; "
        f"{objective} blocks {args.channels} groups {args.groups} pool {args.pool}{' + head' if args.head else ''}; "
        f"{args.optimizer} lr {args.lr} {args.schedule}; augment {args.augment}; device {args.device}"
        f"{'; bf16' if args.bf16 else ''}{'; channels_last' if args.channels_last else ''}",
        flush=True,
    )
    if state is not None:
        print(f"resuming {args.resume} after epoch {done} of {args.epochs}", flush=True)
    log = {"args": vars(args), "arch": "conv", "model": model.config, "trainer": trainer.config}
    trainer.callbacks.append(_SaveEachEpoch(out, log))
    t0 = time.perf_counter()
    history = trainer.fit(
        train_x,
        train_y,
        valid=valid,
        test=test,
        epochs=args.epochs,
        batch_size=args.batch_size,
        start_epoch=done,
    )
    log["wall_time_s"] = wall_before + time.perf_counter() - t0
    save_run(out, trainer, log)
    written = ["log.json", "checkpoint.pt"]
    if plots:
        plot_conv_history(history, out / "curves.png", title=f"conv FF {args.dataset} {args.channels}")
        written.append("curves.png")
    last = history[-1]["test"]
    print(
        f"done in {log['wall_time_s']:.0f} s; final test error "
        + ", ".join(f"{m} {100 * last[m]:.2f}%" for m in ("goodness", "last", "head") if m in last)
        + f"; wrote {out}/{', '.join(written)}"
    )
    return 0
