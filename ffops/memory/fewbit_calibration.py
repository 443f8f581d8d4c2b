"""Few-Bit tables fitted to the inputs an activation really sees.

* ``fewbit_table(fn, bits, samples=... | std=..., mean=0)``: the table (borders and levels) that
  minimises the derivative's L2 error over recorded inputs (their empirical distribution) or over
  N(mean, std^2), by the exact dynamic program of ffops.ops._act_tables.
* ``record_inputs(model, modules, inputs)``: the inputs of some modules of ``model`` during one
  forward (no grad, eval mode), subsampled to a bounded number per module; used by
  ``ffops.memory.patch(..., calibrate=inputs)``.
"""

import functools

import numpy as np
import torch
from torch import nn

from ffops._validation import check_choice, check_finite_real
from ffops.memory import consumers as cons
from ffops.ops._act_tables import FUNCTIONS, FewBitTable, default_table, normal_cells, sample_cells, solve_cells
from ffops.ops.packed_act import check_bits

MAX_SAMPLES = 1 << 21  # recorded inputs kept per module (a random subset beyond that)


def fewbit_table(fn: str, bits: int, samples=None, *, std: float | None = None, mean: float = 0.0) -> FewBitTable:
    """The optimal ``bits``-bit Few-Bit table of activation ``fn`` for the given inputs.

    Args:
        fn: an activation of ``ffops.fewbit`` (``gelu``, ``silu``, ...).
        bits: 1..4.
        samples: inputs of the activation (a tensor or array of any shape, finite): the table
            minimises the mean of ``(f'(x) - q(x))^2`` over them (cells of equal sample count, so its
            borders resolve where the inputs are).
        std, mean: instead of samples, inputs distributed as N(mean, std^2).

    Returns a ``FewBitTable`` for ``ffops.fewbit(x, table=...)`` / ``ffops.nn.FewBitAct``.
    Takes about a second (1 bit) to ten seconds (4 bits) on a CPU core.
    """
    op = "ffops.memory.fewbit_table"
    check_choice(op, "fn", fn, FUNCTIONS)
    bits = check_bits(op, bits)
    mean = check_finite_real(op, "mean", mean)
    if samples is not None:
        if std is not None:
            raise ValueError(f"{op}: give samples or std, not both")
        x = _as_float64(op, samples)
        return FewBitTable(fn, bits, *solve_cells(sample_cells(fn, x), bits)[:2], fitted_to=_describe(x))
    std = 1.0 if std is None else check_finite_real(op, "std", std, positive=True)
    return _normal_table(fn, bits, mean, std)


@functools.lru_cache(maxsize=256)
def _normal_table(fn, bits, mean, std):
    borders, levels, _ = solve_cells(normal_cells(fn, mean, std), bits)
    return FewBitTable(fn, bits, borders, levels, fitted_to=f"N({mean:g}, {std:g}^2)")


def _as_float64(op: str, samples) -> np.ndarray:
    if isinstance(samples, torch.Tensor):
        if not (samples.is_floating_point() or samples.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"{op}: samples must be a real tensor, got {samples.dtype}")
        x = samples.detach().reshape(-1).to(device="cpu", dtype=torch.float64).numpy()
    else:
        try:
            x = np.asarray(samples, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise TypeError(
                f"{op}: samples must be a tensor or an array of numbers, got {type(samples).__name__}"
            ) from None
    if x.size == 0:
        raise ValueError(f"{op}: samples is empty")
    bad = int((~np.isfinite(x)).sum())
    if bad:
        raise ValueError(f"{op}: samples must be finite, got {bad} NaN / inf values of {x.size}")
    return x


def _describe(x: np.ndarray) -> str:
    return f"{x.size} samples (mean {x.mean():.3g}, std {x.std():.3g})"


def record_inputs(model: nn.Module, modules: dict, inputs, max_samples: int = MAX_SAMPLES, seed: int = 0) -> dict:
    """``{name: float64 tensor}``: the first argument of each of ``modules`` (name -> module) during one
    forward of ``model`` on ``inputs`` (a tensor, a tuple of positional or a dict of keyword
    arguments), without grad and in eval mode; at most ``max_samples`` values per module (a seeded
    random subset, drawn per call)."""
    gen = torch.Generator().manual_seed(seed)
    recorded = {name: [] for name in modules}

    def hook_for(name):
        def hook(_module, args):
            x = args[0].detach().reshape(-1)
            if x.numel() > max_samples:
                x = x[torch.randint(x.numel(), (max_samples,), generator=gen).to(x.device)]
            recorded[name].append(x.to(device="cpu", dtype=torch.float64))

        return hook

    handles = [m.register_forward_pre_hook(hook_for(name)) for name, m in modules.items()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            cons._call(model, inputs)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    out = {}
    for name, parts in recorded.items():
        if not parts:
            continue
        x = torch.cat(parts)
        if x.numel() > max_samples:
            x = x[torch.randperm(x.numel(), generator=gen)[:max_samples]]
        out[name] = x
    return out


def table_errors(table: FewBitTable, samples: torch.Tensor) -> tuple[float, float]:
    """``(error of table, error of the shipped N(0, 1) table)`` over ``samples`` (relative L2 error of
    the derivative)."""
    return table.error(samples), default_table(table.fn, table.bits).error(samples)


__all__ = ["fewbit_table", "record_inputs", "table_errors"]
