"""Borders and levels of the packed-code activations: ReGELU2 / ReSiLU2 constants and the Few-Bit
tables, found by our own dynamic program.

Few-Bit (k bits): the backward replaces f'(x) by a piecewise-constant q(x) with 2^k pieces,
q(x) = levels[code(x)], code(x) = #{j : x > borders[j]}. Borders and levels minimise the weighted
L2 error ``E (f'(X) - q(X))^2`` of the derivative for an input distribution X: by default N(0, 1)
(the shipped tables), or N(mean, std^2), or the empirical distribution of recorded inputs
(``ffops.memory.fewbit_table``).

The real line is cut into cells (cell i = ``(edges[i], edges[i+1]]``): for a normal distribution the
``cells`` equal cells of [mean - 10 std, mean + 10 std] (midpoint rule), for samples ~4096 cells of
equal sample count plus a uniform grid over their range (the statistics of each cell summed over
its samples exactly). Points where f' jumps (``KINKS``: relu6's 0 and 6, ...) are always cell
edges, so a derivative that is already piecewise constant gets an exact table. Per cell: the weight
``w``, ``sum w f'`` and ``sum w f'^2``. The best level of a run of cells is its weighted mean of f',
and the minimum over all segmentations into 2^k runs is found exactly by dynamic programming over
run ends: ``D_m[j] = min_{i < j} D_{m-1}[i] + cost(i, j)`` with ``cost`` the weighted variance of
f' over cells i..j-1 (prefix sums), O(2^k cells^2) work. Borders are the cell edges between runs.

Tables for every function of ``FUNCTIONS`` at 1..4 bits on N(0, 1) are shipped in
``_act_tables_data.py`` (written by ``python -m ffops.ops._act_tables``); anything else is
computed at first use and cached for the process.
"""

import dataclasses
import functools
import math
import sys

import numpy as np
import torch

from ffops.reference.packed_act import ACTIVATIONS, relative_derivative_error

FUNCTIONS = tuple(ACTIVATIONS)  # index = the kernels' function id
BITS = (1, 2, 3, 4)
GRID = {"lo": -10.0, "hi": 10.0, "cells": 4096}
SAMPLE_CELLS = 4096  # equal-count cells of an empirical distribution (plus a uniform grid of 512)
KINKS = {"hardswish": (-3.0, 3.0), "leaky_relu": (0.0,), "selu": (0.0,), "relu6": (0.0, 6.0)}  # where f' jumps

# Approx-BP (LowMemoryBP): borders c and derivative jumps a; levels = [0, a0, a0 + a1, a0 + a1 + a2].
REGELU2_C = (-3.1858810036855245, -0.001178821281161997, 3.190832613414926)
REGELU2_A = (-0.04922261145617846, 1.0979632065417297, -0.048740595085551286)
RESILU2_C = (-6.3050461001646445, -0.0008684942046214787, 6.325815242089708)
RESILU2_A = (-0.04060357190528599, 1.080925428529668, -0.040321856624382146)


def _levels_from_jumps(a):
    return (0.0, a[0], a[0] + a[1], a[0] + a[1] + a[2])


REGELU2 = (REGELU2_C, _levels_from_jumps(REGELU2_A))
RESILU2 = (RESILU2_C, _levels_from_jumps(RESILU2_A))


def derivative(fn: str, x: np.ndarray) -> np.ndarray:
    """f'(x) in float64 (autograd through the reference function)."""
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(ACTIVATIONS[fn](t).sum(), t)
    return g.numpy()


@dataclasses.dataclass(frozen=True)
class Cells:
    """A partition of the line into cells ``(edges[i], edges[i+1]]`` with, per cell, the weight ``w``,
    ``wv = sum w f'`` and ``wvv = sum w f'^2``, and ``v_mid``: f' at a point of the cell (the level of
    a run that holds no weight)."""

    edges: np.ndarray
    w: np.ndarray
    wv: np.ndarray
    wvv: np.ndarray
    v_mid: np.ndarray


def _with_kinks(fn: str, edges: np.ndarray) -> np.ndarray:
    inside = [k for k in KINKS.get(fn, ()) if edges[0] < k < edges[-1]]
    return np.union1d(edges, inside) if inside else edges


def normal_cells(fn: str, mean: float = 0.0, std: float = 1.0, cells: int = GRID["cells"], span: float = 10.0) -> Cells:
    """Cells of N(mean, std^2) on [mean - span std, mean + span std] (midpoint rule)."""
    edges = _with_kinks(fn, np.linspace(mean - span * std, mean + span * std, cells + 1))
    centers = 0.5 * (edges[:-1] + edges[1:])
    z = (centers - mean) / std
    w = np.exp(-0.5 * z * z) / (math.sqrt(2 * math.pi) * std) * np.diff(edges)
    v = derivative(fn, centers)
    return Cells(edges, w, w * v, w * v * v, v)


def sample_cells(fn: str, samples: np.ndarray, cells: int = SAMPLE_CELLS) -> Cells:
    """Cells of the empirical distribution of ``samples`` (finite float64): edges at ``cells`` quantiles,
    a uniform grid of 512 over their range and the kinks; each cell's sums taken over its samples."""
    x = np.sort(np.asarray(samples, dtype=np.float64).reshape(-1))
    lo, hi = x[0], x[-1]
    inner = np.quantile(x, np.linspace(0.0, 1.0, cells + 1)[1:-1])
    grid = np.linspace(lo, hi, 513) if hi > lo else np.linspace(lo - 1.0, hi + 1.0, 513)
    inner = _with_kinks(fn, np.unique(np.concatenate([inner, grid, [lo - 1.0, hi + 1.0]])))
    edges = np.concatenate([[-np.inf], inner, [np.inf]])
    cell = np.searchsorted(inner, x, side="left")  # inner[c - 1] < x <= inner[c]
    v = derivative(fn, x)
    n = len(edges) - 1
    w = np.bincount(cell, minlength=n).astype(np.float64) / len(x)
    wv = np.bincount(cell, weights=v, minlength=n) / len(x)
    wvv = np.bincount(cell, weights=v * v, minlength=n) / len(x)
    mids = 0.5 * (inner[:-1] + inner[1:])
    v_mid = derivative(fn, np.concatenate([[inner[0]], mids, [inner[-1]]]))
    return Cells(edges, w, wv, wvv, v_mid)


def segmentation_cost(w: np.ndarray, wv: np.ndarray, wvv: np.ndarray):
    """``cost(i, j)``: weighted squared error of the best constant for cells i..j-1 (vectorized)."""
    z = np.zeros(1)
    cw, c1, c2 = (np.concatenate([z, np.cumsum(a)]) for a in (w, wv, wvv))

    def cost(i, j):
        dw = cw[j] - cw[i]
        d1 = c1[j] - c1[i]
        return np.maximum(c2[j] - c2[i] - d1 * d1 / np.where(dw > 0, dw, 1.0), 0.0)

    return cost


def optimal_segmentation(w: np.ndarray, wv: np.ndarray, wvv: np.ndarray, pieces: int, chunk: int = 256):
    """Run starts ``[0, s_1, ..., s_{pieces-1}]`` minimising the total cost, and that cost (exact DP)."""
    n = len(w)
    if pieces > n:
        raise ValueError(f"cannot split {n} cells into {pieces} runs")
    cost = segmentation_cost(w, wv, wvv)
    idx = np.arange(n + 1)
    best = cost(0, idx)  # best[j]: one run over cells 0..j-1
    best[0] = np.inf
    back = []
    for _ in range(1, pieces):
        new = np.full(n + 1, np.inf)
        arg = np.zeros(n + 1, dtype=np.int64)
        for j0 in range(1, n + 1, chunk):
            j = idx[j0 : j0 + chunk]
            total = best[:, None] + cost(idx[:, None], j[None, :])
            total[idx[:, None] >= j[None, :]] = np.inf  # runs are non-empty
            arg[j] = np.argmin(total, axis=0)
            new[j] = total[arg[j], j - j0]
        back.append(arg)
        best = new
    starts, j = [], n
    for arg in reversed(back):
        j = int(arg[j])
        starts.append(j)
    return [0] + starts[::-1], float(best[n])


def solve_cells(c: Cells, bits: int):
    """``(borders, levels, relative_error)`` of the optimal ``bits``-bit derivative on the cells c.

    ``relative_error = sqrt(min error / sum w f'^2)``."""
    starts, err = optimal_segmentation(c.w, c.wv, c.wvv, 2**bits)
    ends = starts[1:] + [len(c.w)]
    borders = tuple(float(c.edges[s]) for s in starts[1:])
    levels = []
    for s, e in zip(starts, ends):
        weight = c.w[s:e].sum()
        levels.append(float(c.wv[s:e].sum() / weight) if weight > 0 else float(c.v_mid[s:e].mean()))
    total = float(c.wvv.sum())
    return borders, tuple(levels), math.sqrt(err / total) if total > 0 else 0.0


def solve(fn: str, bits: int):
    """``(borders, levels, relative_error)`` of the optimal ``bits``-bit derivative of ``fn`` for N(0, 1)
    inputs (the shipped tables' grid, ``GRID``)."""
    return solve_cells(normal_cells(fn, 0.0, 1.0, GRID["cells"], span=GRID["hi"]), bits)


@dataclasses.dataclass(frozen=True)
class FewBitTable:
    """A Few-Bit backward for activation ``fn``: ``bits`` bits per element, ``2^bits - 1`` ascending
    finite ``borders`` and ``2^bits`` finite ``levels``; the backward is ``grad * levels[code]`` with
    ``code = #{j : x > borders[j]}``. Made by ``ffops.memory.fewbit_table`` (fitted to a distribution)
    or by hand; ``error(...)`` measures it. ``fitted_to`` says what it was fitted to (not compared)."""

    fn: str
    bits: int
    borders: tuple
    levels: tuple
    fitted_to: str = dataclasses.field(default="", compare=False)

    def __post_init__(self):
        where = "FewBitTable"
        if self.fn not in FUNCTIONS:
            raise ValueError(f"{where}: fn must be one of {FUNCTIONS}, got {self.fn!r}")
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 1 <= self.bits <= 4:
            raise ValueError(f"{where}: bits must be an int in 1..4, got {self.bits!r}")
        borders = _float_tuple(where, "borders", self.borders, 2**self.bits - 1)
        levels = _float_tuple(where, "levels", self.levels, 2**self.bits)
        if any(b > a for a, b in zip(borders[1:], borders[:-1])):
            raise ValueError(f"{where}: borders must be ascending, got {borders}")
        object.__setattr__(self, "borders", borders)
        object.__setattr__(self, "levels", levels)

    def error(self, samples=None, *, std: float | None = None, mean: float = 0.0) -> float:
        """Relative L2 error of this derivative, ``sqrt(E (f' - q)^2 / E f'^2)``: over ``samples`` (a
        tensor or array of inputs), or for N(mean, std^2) inputs (std = 1 when neither is given)."""
        if samples is not None:
            if std is not None:
                raise ValueError("FewBitTable.error: give samples or std, not both")
            x = np.asarray(torch.as_tensor(samples).detach().double().cpu().reshape(-1))
            v = derivative(self.fn, x)
            q = np.asarray(self.levels)[np.searchsorted(np.asarray(self.borders), x, side="left")]
            return math.sqrt(float(np.mean((v - q) ** 2)) / max(float(np.mean(v * v)), 1e-300))
        s = 1.0 if std is None else std
        return relative_derivative_error(self.fn, self.borders, self.levels, mean=mean, std=s)


def _float_tuple(where, name, values, count):
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise TypeError(f"{where}: {name} must be a sequence of {count} numbers, got {values!r}") from None
    if len(out) != count:
        raise ValueError(f"{where}: {name} must hold {count} numbers, got {len(out)}")
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{where}: {name} must be finite, got {out}")
    return out


def default_table(fn: str, bits: int) -> FewBitTable:
    """The shipped N(0, 1) table of ``fn`` at ``bits`` bits as a ``FewBitTable``."""
    return FewBitTable(fn, bits, *table(fn, bits), fitted_to="N(0, 1)")


@torch.compiler.assume_constant_result
def table(fn: str, bits: int):
    """``(borders, levels)`` of Few-Bit ``fn`` at ``bits`` bits (shipped table, else computed once).

    A constant for torch.compile: evaluated once while tracing, never traced into."""
    return _table(fn, bits)


@functools.cache
def _table(fn: str, bits: int):
    from ffops.ops._act_tables_data import TABLES

    if (fn, bits) in TABLES:
        borders, levels, _ = TABLES[(fn, bits)]
        return tuple(borders), tuple(levels)
    borders, levels, _ = solve(fn, bits)
    return borders, levels


def _write_data(path) -> None:
    lines = [
        '"""Few-Bit tables: (fn, bits) -> (borders, levels, relative error); generated by',
        f'``python -m ffops.ops._act_tables`` with the grid {GRID} (do not edit)."""',
        "",
        "TABLES = {",
    ]
    for fn in FUNCTIONS:
        for bits in BITS:
            borders, levels, err = solve(fn, bits)
            lines.append(f"    ({fn!r}, {bits}): (")
            lines.append(f"        {tuple(borders)!r},")
            lines.append(f"        {tuple(levels)!r},")
            lines.append(f"        {err!r},")
            lines.append("    ),")
    lines.append("}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    import os

    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "_act_tables_data.py")
    _write_data(out)
    print(f"wrote {out}")
