"""The ffops command line: ``python -m ffops info | train-ff | train-sparse | memory-demo``."""

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
    from ffops.cli import memory_demo

    commands["memory-demo"] = sub.add_parser(
        "memory-demo",
        help="patch a small Llama-style model to save memory; train it beside the original",
        description=memory_demo.__doc__,
    )
    memory_demo.add_arguments(commands["memory-demo"])
    args = parser.parse_args(argv)
    if args.command == "info":
        from ffops._info import report

        print(report())
        return 0
    run = {"train-ff": train_ff.run, "train-sparse": train_sparse.run, "memory-demo": memory_demo.run}[args.command]
    try:
        return run(args)
    except UsageError as exc:  # one line and exit 2, as argparse's own errors
        commands[args.command].error(str(exc))


if __name__ == "__main__":
    sys.exit(main())
