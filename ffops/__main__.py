"""The ffops command line: ``python -m ffops info | train-ff | train-sparse``."""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ffops", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, devices, and which backends are built and usable")
    from ffops.cli import train_ff

    train_ff.add_arguments(
        sub.add_parser(
            "train-ff", help="Forward-Forward training on MNIST / Fashion-MNIST", description=train_ff.__doc__
        )
    )
    from ffops.cli import train_sparse

    train_sparse.add_arguments(
        sub.add_parser(
            "train-sparse",
            help="prune an MLP gradually and fine-tune it sparse",
            description=train_sparse.__doc__,
        )
    )
    args = parser.parse_args(argv)
    if args.command == "info":
        from ffops._info import report

        print(report())
        return 0
    if args.command == "train-sparse":
        return train_sparse.run(args)
    return train_ff.run(args)


if __name__ == "__main__":
    sys.exit(main())
