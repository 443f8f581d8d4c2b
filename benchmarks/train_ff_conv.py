"""First measurements of the conv FF net (ffops.ff.FFConvNet, CwC blocks) on Fashion-MNIST or MNIST.

Trains block-locally with one Adam over all parameters (the blocks' inputs are detached, so each
block learns from its own ``cwc_loss`` only), holds out the last ``--valid`` training images for
validation (recipe choices are made on them, never on the test set), and prints per epoch the mean
loss of every block, the validation accuracy of the summed-goodness predictor and of each block
alone, the test accuracy, and the seconds taken. No augmentation yet.

    python -m benchmarks.train_ff_conv --dataset fashion-mnist --channels 20,80,240,480 --epochs 3 \\
        --out train_ff_conv_fmnist_first

Writes ``benchmarks/results/<--out>.json``. This is the seed of issue 18's recipe sweep, not the recipe.
"""

import argparse
import json
import sys
import time

import torch

from benchmarks import harness
from ffops.data import load_dataset
from ffops.ff import FFConvNet


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.train_ff_conv", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=("fashion-mnist", "mnist"), default="fashion-mnist")
    p.add_argument("--channels", default="20,80,240,480", help="output channels per block (multiples of 10)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--valid", type=int, default=10000, help="last N training images held out for validation")
    p.add_argument("--train-subset", type=int, default=None, help="train on the first N images only (smoke runs)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="name of the JSON under benchmarks/results")
    args = p.parse_args(argv)
    try:
        args.channels = [int(c) for c in args.channels.split(",")]
    except ValueError:
        p.error(f"--channels: expected comma-separated ints like 20,80,240,480, got {args.channels!r}")
    return args


@torch.no_grad()
def accuracies(net: FFConvNet, images: torch.Tensor, labels: torch.Tensor, batch: int = 1000) -> dict:
    """Accuracy of the summed-goodness predictor and of each block's own group goodness."""
    net.eval()
    total, per_block = 0, [0] * len(net.blocks)
    for i in range(0, len(images), batch):
        x, y = images[i : i + batch], labels[i : i + batch]
        summed = 0
        for b, g in enumerate(net.block_goodness(x)):
            per_block[b] += (g.argmax(1) == y).sum().item()
            summed = summed + g
        total += (summed.argmax(1) == y).sum().item()
    net.train()
    return {"summed": total / len(images), "blocks": [c / len(images) for c in per_block]}


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train, test = load_dataset(args.dataset, split="train"), load_dataset(args.dataset, split="test")
    images, labels = train.images.view(-1, 1, 28, 28), train.labels
    tr_x, tr_y = images[: -args.valid], labels[: -args.valid]
    va_x, va_y = images[-args.valid :], labels[-args.valid :]
    if args.train_subset:
        tr_x, tr_y = tr_x[: args.train_subset], tr_y[: args.train_subset]
    te_x, te_y = test.images.view(-1, 1, 28, 28), test.labels
    net = FFConvNet(1, args.channels, num_classes=train.num_classes)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    print(
        f"{args.dataset}: {len(tr_x)} train / {len(va_x)} valid / {len(te_x)} test, blocks {args.channels}, "
        f"batch {args.batch}, Adam lr {args.lr}, {args.threads} threads",
        flush=True,
    )
    history = []
    for epoch in range(args.epochs):
        start, sums, steps = time.perf_counter(), torch.zeros(len(net.blocks)), 0
        order = torch.randperm(len(tr_x))
        for i in range(0, len(tr_x), args.batch):
            idx = order[i : i + args.batch]
            losses = net.losses(tr_x[idx], tr_y[idx])
            opt.zero_grad()
            sum(losses).backward()
            opt.step()
            sums += torch.stack([loss.detach() for loss in losses])
            steps += 1
        seconds = time.perf_counter() - start
        va, te = accuracies(net, va_x, va_y), accuracies(net, te_x, te_y)
        record = {
            "epoch": epoch + 1,
            "block_losses": (sums / steps).tolist(),
            "valid": va,
            "test": te,
            "seconds": seconds,
        }
        history.append(record)
        print(
            f"epoch {epoch + 1}: losses {[round(v, 3) for v in record['block_losses']]}, valid "
            f"{100 * va['summed']:.2f} % (blocks {[round(100 * b, 1) for b in va['blocks']]}), test error "
            f"{100 * (1 - te['summed']):.2f} %, {seconds:.0f} s",
            flush=True,
        )
    if args.out:
        path = harness.RESULTS_DIR / f"{args.out}.json"
        payload = {"args": vars(args), "meta": harness.metadata(torch.device("cpu")), "history": history}
        path.write_text(json.dumps(payload, indent=1))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
