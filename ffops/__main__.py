"""The ffops command line: ``python -m ffops info``."""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ffops", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, devices, and which backends are built and usable")
    args = parser.parse_args(argv)
    if args.command == "info":
        from ffops._info import report

        print(report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
