"""Argument types and user errors of the command line.

Every user mistake ends as one line ``<prog>: error: <what>`` on stderr and exit status 2, as
argparse's own errors do, before any training starts: bad values are refused by the argument types
below while parsing, and what can only be checked afterwards (a checkpoint file, a dataset, the
layer sizes against the data) raises ``UsageError``, which ``python -m ffops`` reports the same way.
"""

import argparse
import importlib.util
import math


class UsageError(Exception):
    """A user mistake found after parsing (a file, a dataset, a combination of options)."""


class Parser(argparse.ArgumentParser):
    """argparse, with errors in one line (no usage block) and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _number(kind, text: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
        ) from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = _number(int, text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected an integer > 0, got {text!r}")
    return value


def nonnegative_int(text: str) -> int:
    value = _number(int, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def finite_float(text: str) -> float:
    return _number(float, text)


def positive_float(text: str) -> float:
    value = _number(float, text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    value = _number(float, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1)."""
    value = _number(float, text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def size_list(min_len: int):
    """A type: comma-separated positive integers, at least ``min_len`` of them (e.g. ``784,500,500``)."""

    def parse(text: str) -> list[int]:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        try:
            sizes = [int(p) for p in parts]
        except ValueError:
            sizes = None
        if sizes is None or any(s <= 0 for s in sizes):
            raise argparse.ArgumentTypeError(f"expected comma-separated integers > 0 (e.g. 784,500,500), got {text!r}")
        if len(sizes) < min_len:
            raise argparse.ArgumentTypeError(f"expected at least {min_len} sizes, got {text!r}")
        return sizes

    return parse


def sparsity_list(text: str) -> list[float]:
    """Comma-separated sparsities in (0, 1)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = None
    if not values or not all(0 < v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers in (0, 1) (e.g. 0.9,0.95), got {text!r}")
    return values


def device(text: str) -> str:
    """A torch device this machine has: ``cpu``, ``cuda`` or ``cuda:N``."""
    import torch

    try:
        dev = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(
                f"{text!r}: this machine has no CUDA device (torch.cuda.is_available() is False)"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return text


def has_module(name: str) -> bool:
    """Whether an optional dependency is installed (without importing it)."""
    return importlib.util.find_spec(name) is not None
