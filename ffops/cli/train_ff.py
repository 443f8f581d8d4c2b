"""``python -m ffops train-ff``: Forward-Forward training on a real dataset with ffops' fused layers.

Shows a progress bar, prints one line per epoch (loss per layer, train / test error, samples/s),
and writes ``log.json`` (config + per-epoch history), ``checkpoint.pt`` and ``curves.png`` (error
curves and goodness histograms per layer) into ``--out``.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from ffops import ff
from ffops.cli import args as cli_args
from ffops.cli import train_ff_conv
from ffops.cli.args import UsageError
from ffops.cli.progress import Progress
from ffops.ff.step import COLLAB_LAYERS, MODES
from ffops.ff.train import NEGATIVES

EXAMPLES = """examples:
  python -m ffops train-ff --dataset mnist --layers 784,500,500 --epochs 30
  python -m ffops train-ff --dataset mnist --layers 784,2000,2000,2000,2000 --epochs 60 --negatives head --eval-every 5
  python -m ffops train-ff --dataset fashion-mnist --device cuda --out runs/fashion
  python -m ffops train-ff --resume runs/fashion/checkpoint.pt --epochs 60
  python -m ffops train-ff --arch conv --dataset fashion-mnist --epochs 30 --head --bf16 --channels-last
"""

# the MLP path's defaults of options the conv path defaults differently (None in the parser)
MLP_DEFAULTS = {"lr": 3e-3, "batch_size": 100}
# options only one architecture takes: giving one to the other is an error, not ignored (--alpha,
# SymBa's scale, is taken by both: by --loss symba of mlp and --objective symba of conv)
MLP_ONLY = (
    "layers",
    "mode",
    "collab_layers",
    "collab_weight",
    "skip_first",
    "loss",
    "goodness",
    "norm",
    "threshold",
    "negatives",
    "input_dropout",
    "peer_weight",
    "eval_every",
)
CONV_ONLY = (
    "objective",
    "channels",
    "groups",
    "pool",
    "kernel_size",
    "head",
    "augment",
    "padding",
    "schedule",
    "bf16",
    "channels_last",
    "valid",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EXAMPLES
    p.add_argument(
        "--arch",
        default="mlp",
        choices=("mlp", "conv"),
        help="mlp: FFNet of fused FF linears with label overlay; conv: FFConvNet of channel-wise "
        "competitive conv blocks (default: mlp)",
    )
    p.add_argument("--dataset", default="mnist", choices=("mnist", "fashion-mnist"), help="(default: mnist)")
    p.add_argument("--data-root", default=None, help="directory of IDX files (default: the packaged data)")
    p.add_argument(
        "--layers",
        default=[784, 500, 500],
        type=cli_args.size_list(2),
        help="input size and layer widths, e.g. 784,2000,2000 (default: 784,500,500)",
    )
    p.add_argument(
        "--epochs",
        type=cli_args.positive_int,
        default=None,
        help="epochs of the schedule (default 30; with --resume: the resumed run's)",
    )
    p.add_argument(
        "--batch-size",
        type=cli_args.positive_int,
        default=None,
        help="samples per step (mlp: positive samples, as many negatives; default 100, conv 128)",
    )
    p.add_argument(
        "--device",
        type=cli_args.device,
        default=None,
        help="cpu | cuda | cuda:N (default: cpu; with --resume: the run's)",
    )
    p.add_argument("--mode", default="all", choices=MODES, help="which loss each layer learns from (default: all)")
    p.add_argument(
        "--collab-layers",
        default="others",
        choices=COLLAB_LAYERS,
        help="collaborative mode: the goodness of all other layers (others) or of those below (past)",
    )
    p.add_argument(
        "--collab-weight",
        type=cli_args.finite_float,
        default=1.0,
        help="scale of the other layers' goodness in a layer's logit (1: collaborative FF, 0: plain)",
    )
    p.add_argument("--skip-first", action="store_true", help="leave layer 1 out of goodness prediction (Hinton)")
    p.add_argument("--loss", default="symba", choices=("symba", "softplus"), help="(default: symba)")
    p.add_argument("--alpha", type=cli_args.positive_float, default=8.0, help="SymBa's scale of G_pos - G_neg")
    p.add_argument("--goodness", default="mean", choices=("mean", "sum"), help="(default: mean)")
    p.add_argument(
        "--norm", default="rms", choices=("rms", "l2"), help="length normalization between layers (default: rms)"
    )
    p.add_argument(
        "--threshold", type=cli_args.positive_float, default=None, help="default: 2.0 (mean) or the width (sum)"
    )
    p.add_argument(
        "--negatives",
        default="hard",
        choices=NEGATIVES,
        help="hard (from the net's goodness per label), head (from the softmax head), random, hybrid "
        "(unsupervised) (default: hard)",
    )
    p.add_argument("--optimizer", default="adam", choices=("adam", "adamw", "sgd"), help="(default: adam)")
    p.add_argument("--lr", type=cli_args.positive_float, default=None, help="(default: 3e-3, conv 0.01)")
    p.add_argument(
        "--weight-decay", type=cli_args.nonnegative_float, default=0.0, help="the optimizer's weight decay (default 0)"
    )
    p.add_argument(
        "--input-dropout",
        type=cli_args.fraction,
        default=0.1,
        help="fraction of input pixels zeroed at random in each training sample (default 0.1; 0: off)",
    )
    p.add_argument(
        "--cuda-graph",
        choices=("auto", "on", "off"),
        default="auto",
        help="replay each training step from a CUDA graph (ffops.ff.cuda_graph); auto: on a GPU where the "
        "options allow it (not with --negatives hybrid) (default auto)",
    )
    p.add_argument(
        "--peer-weight", type=cli_args.nonnegative_float, default=0.0, help="peer normalization weight (Hinton: 0.03)"
    )
    p.add_argument(
        "--eval-every",
        type=cli_args.positive_int,
        default=None,
        help="train / test errors every N epochs and after the last (default 1; with --resume: the run's)",
    )
    p.add_argument("--train-subset", type=cli_args.positive_int, default=None, help="train on the first N samples only")
    p.add_argument("--threads", type=cli_args.positive_int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=cli_args.nonnegative_int, default=0)
    p.add_argument(
        "--out",
        default=None,
        help="output directory (default: runs/train-ff-<time>; with --resume: the checkpoint's)",
    )
    p.add_argument(
        "--resume",
        default=None,
        metavar="CHECKPOINT",
        help="go on with an interrupted run from its checkpoint.pt (saved after every epoch) with the "
        "run's own settings; only --epochs, --eval-every, --device, --threads and --out may be given anew",
    )
    train_ff_conv.add_conv_arguments(p)


class _ConsoleCallback(ff.Callback):
    """Progress bar per epoch and one summary line per epoch."""

    bar = None

    def on_fit_start(self, trainer, info):
        self.steps = info["steps_per_epoch"]
        self.epochs = info["epochs"]

    def on_epoch_start(self, trainer, info):
        phase = "" if info["phase"] is None else f"layer {info['phase'] + 1} "
        self.bar = Progress(self.steps, f"{phase}epoch {info['epoch']}/{info['epochs']}")

    def on_batch_end(self, trainer, info):
        if info["step"] % 10 == 0 or info["step"] == info["steps"]:
            losses = {f"L{i + 1}": float(v) for i, v in info["losses"].items()}
            self.bar.update(10 if info["step"] % 10 == 0 else info["step"] % 10, **losses)

    def on_epoch_end(self, trainer, record):
        self.bar.close()
        losses = " ".join("-" if v is None else f"{v:.4f}" for v in record["loss"])
        parts = [
            ("" if record["phase"] is None else f"layer {record['phase'] + 1} ")
            + f"epoch {record['epoch']:>3}/{self.epochs}",
            f"loss [{losses}]",
        ]
        for split in ("train", "test"):
            errs = [
                f"{m} {100 * record[k]:.2f}%"
                for m in ("goodness", "head")
                if (k := f"{split}_error_{m}") in record and record[k] is not None
            ]
            if errs:
                parts.append(f"{split} err " + ", ".join(errs))
        parts.append(f"{record['samples_per_s']:,.0f} samples/s")
        print("  ".join(parts), flush=True)


# options a resumed run may change; the others come from its checkpoint
_RESUME_OPTIONS = ("epochs", "eval_every", "device", "threads", "out", "resume")


class _SaveEachEpoch(ff.Callback):
    """Writes checkpoint.pt and log.json after every epoch, so that an interrupted run can resume."""

    def __init__(self, out, log):
        self.out, self.log = out, log

    def on_epoch_end(self, trainer, record):
        _save_run(self.out, trainer, self.log)


def _save_run(out: Path, trainer, log: dict) -> None:
    """log.json (with the history so far) and checkpoint.pt (with the command's arguments, for --resume)."""
    log["history"] = trainer.history
    (out / "log.json").write_text(json.dumps(log, indent=1, default=str))
    ff.save_checkpoint(out / "checkpoint.pt", trainer, cli_args=log["args"])


def _resumed_args(args: argparse.Namespace, defaults: dict) -> tuple[argparse.Namespace, dict]:
    """The saved run's arguments (with the options a resume may change) and its checkpoint state."""
    import pickle

    import torch

    path = Path(args.resume)
    if not path.is_file():
        raise UsageError(f"--resume {path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise UsageError(f"--resume {path}: not a train-ff checkpoint ({type(exc).__name__})") from None
    saved = state.get("cli_args") if isinstance(state, dict) else None
    if saved is None:
        raise UsageError(
            f"--resume {path}: no train-ff arguments in it (saved by save_checkpoint directly, or not a "
            "train-ff checkpoint)"
        )
    changed = [
        k for k, v in vars(args).items() if k not in _RESUME_OPTIONS and v != defaults.get(k) and v != saved.get(k)
    ]
    if changed:
        raise UsageError(
            "--resume takes the run's own settings; these options differ from the run's: "
            + ", ".join(f"--{k.replace('_', '-')} {getattr(args, k)} (run: {saved.get(k)})" for k in changed)
        )
    merged = {**defaults, **saved}  # a run saved before an option existed has its default
    merged.update({k: getattr(args, k) for k in _RESUME_OPTIONS if getattr(args, k) is not None})
    merged["out"] = args.out or str(path.parent)
    return argparse.Namespace(**merged), state


def run(args: argparse.Namespace) -> int:
    """Train; a user mistake raises ``UsageError`` before any training starts."""
    import torch

    from ffops import data
    from ffops.cli.plots import plot_ff_history

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    defaults = vars(parser.parse_args([]))
    state = None
    if args.resume:
        args, state = _resumed_args(args, defaults)
    arch = getattr(args, "arch", "mlp")  # checkpoints of runs before --arch are MLP runs
    others = [k for k in (CONV_ONLY if arch == "mlp" else MLP_ONLY) if getattr(args, k, None) != defaults[k]]
    if others:
        raise UsageError(f"--arch {arch} does not take " + ", ".join(f"--{k.replace('_', '-')}" for k in others))
    symba = getattr(args, "objective", "cwc") == "symba" if arch == "conv" else args.loss == "symba"
    if args.alpha != defaults["alpha"] and not symba:
        raise UsageError("--alpha is SymBa's scale: it needs --loss symba (mlp) or --objective symba (conv)")
    if arch == "conv":
        if args.epochs is None:
            args.epochs = 30
        if args.device is None:
            args.device = "cpu"
        return train_ff_conv.run_conv(args, state)
    for name, default in MLP_DEFAULTS.items():
        if getattr(args, name, None) is None:
            setattr(args, name, default)
    for name, default in (("epochs", 30), ("eval_every", 1), ("device", "cpu")):
        if getattr(args, name, None) is None:
            setattr(args, name, default)
    plots = cli_args.has_module("matplotlib")
    if not plots:
        print("warning: matplotlib is not installed: no curves.png (pip install matplotlib)", file=sys.stderr)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = args.layers if isinstance(args.layers, list) else cli_args.size_list(2)(args.layers)
    try:
        train_set = data.load_dataset(args.dataset, args.data_root, split="train" if args.data_root else "train+valid")
        test_set = data.load_dataset(args.dataset, args.data_root, split="test")
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    train_x, train_y = train_set.images, train_set.labels
    if sizes[0] != train_x.shape[1]:
        raise UsageError(f"--layers must start with the input size of {args.dataset}, {train_x.shape[1]}; got {sizes}")
    if args.train_subset:
        train_x, train_y = train_x[: args.train_subset], train_y[: args.train_subset]
    callbacks = [_ConsoleCallback()]
    if state is None:
        torch.manual_seed(args.seed)
        try:
            model = ff.FFNet(
                sizes,
                num_classes=train_set.num_classes,
                threshold=args.threshold,
                goodness=args.goodness,
                norm=args.norm,
                loss=args.loss,
                alpha=args.alpha,
                peer_weight=args.peer_weight,
                device=args.device,
            )
            trainer = ff.FFTrainer(
                model,
                mode=args.mode,
                collab_layers=args.collab_layers,
                collab_weight=args.collab_weight,
                negatives=args.negatives,
                optimizer=args.optimizer,
                lr=args.lr,
                weight_decay=args.weight_decay,
                input_dropout=args.input_dropout,
                cuda_graph={"auto": "auto", "on": True, "off": False}[args.cuda_graph],
                skip_first=args.skip_first,
                seed=args.seed,
                callbacks=callbacks,
            )
        except (TypeError, ValueError) as exc:  # a combination of options the net or trainer refuses
            raise UsageError(str(exc)) from None
        done, wall_before = 0, 0.0
    else:
        trainer = ff.load_checkpoint(args.resume, device=args.device, callbacks=callbacks)
        model = trainer.model
        done = len(trainer.history)
        wall_before = sum(r["time_s"] + r["eval_time_s"] for r in trainer.history)
        if done >= args.epochs * (len(model.layers) if args.mode == "greedy" else 1):
            raise UsageError(
                f"--resume {args.resume}: the run has done all its {done} epochs; give a larger --epochs to train on"
            )
    out = Path(args.out or f"runs/train-ff-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"{args.dataset}: {len(train_x)} train / {len(test_set)} test samples; net {sizes}; "
        f"device {args.device}{' (CUDA graphs)' if trainer.uses_cuda_graph else ''}; mode {args.mode}; "
        f"loss {args.loss}; negatives {args.negatives}",
        flush=True,
    )
    if state is not None:
        print(f"resuming {args.resume} after epoch {done} of {args.epochs}", flush=True)
    log = {"args": vars(args), "model": model.config, "trainer": trainer.config}
    trainer.callbacks.append(_SaveEachEpoch(out, log))
    t0 = time.perf_counter()
    history = trainer.fit(
        train_x,
        train_y,
        test_images=test_set.images,
        test_labels=test_set.labels,
        epochs=args.epochs,
        batch_size=args.batch_size,
        eval_every=args.eval_every,
        start_epoch=done,
    )
    wall = wall_before + time.perf_counter() - t0
    log["wall_time_s"] = wall
    _save_run(out, trainer, log)
    written = ["log.json", "checkpoint.pt"]
    if plots:
        plot_ff_history(history, out / "curves.png", title=f"FF {args.dataset} {sizes}")
        written.append("curves.png")
    last = history[-1]
    best = {k: last[k] for k in last if k.startswith("test_error")}
    print(
        f"done in {wall:.0f} s; final "
        + ", ".join(f"{k} {100 * v:.2f}%" for k, v in best.items())
        + f"; wrote {out}/{', '.join(written)}"
    )
    return 0
