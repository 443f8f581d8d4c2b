"""The ffops command line: ``python -m ffops info | train-ff | train-sparse``."""

import sys

from ffops.cli.args import Parser, UsageError


def main(argv=None) -> int:
    parser = Parser(prog="python -m ffops", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, devices, and which backends are built and usable")
    from ffops.cli import train_ff

    commands = {
        "train-ff": sub.add_parser(
            "train-ff", help="Forward-Forward training on MNIST / Fashion-MNIST", description=train_ff.__doc__
        ),
    }
    train_ff.add_arguments(commands["train-ff"])
    from ffops.cli import train_sparse

    commands["train-sparse"] = sub.add_parser(
        "train-sparse", help="prune an MLP gradually and fine-tune it sparse", description=train_sparse.__doc__
    )
    train_sparse.add_arguments(commands["train-sparse"])
    args = parser.parse_args(argv)
    if args.command == "info":
        from ffops._info import report

        print(report())
        return 0
    run = train_sparse.run if args.command == "train-sparse" else train_ff.run
    try:
        return run(args)
    except UsageError as exc:  # one line and exit 2, as argparse's own errors
        commands[args.command].error(str(exc))


if __name__ == "__main__":
    sys.exit(main())
