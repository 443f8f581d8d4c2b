"""Borders and levels of the packed-code activations: ReGELU2 / ReSiLU2 constants and the Few-Bit
tables, found by our own dynamic program.

Few-Bit (k bits): the backward replaces f'(x) by a piecewise-constant q(x) with 2^k pieces,
q(x) = levels[code(x)], code(x) = #{j : x > borders[j]}. Borders and levels minimise the weighted
L2 error ``integral (f'(x) - q(x))^2 w(x) dx`` with w the N(0,1) density. On a grid of ``cells``
equal cells of [lo, hi] (midpoint rule) the problem is an optimal segmentation of a sequence into
2^k runs; for a given run the best level is the weighted mean of f' over it, and the minimum over
all segmentations is found exactly by dynamic programming over run ends:
``D_m[j] = min_{i < j} D_{m-1}[i] + cost(i, j)`` with ``cost`` the weighted variance of f' over
cells i..j-1 (prefix sums), O(2^k cells^2) work. Borders are the cell edges between runs.

Tables for every function of ``FUNCTIONS`` at 1..4 bits with the default grid are shipped in
``_act_tables_data.py`` (written by ``python -m ffops.ops._act_tables``); anything else is
computed at first use and cached for the process.
"""

import functools
import math
import sys

import numpy as np
import torch

from ffops.reference.packed_act import ACTIVATIONS

FUNCTIONS = tuple(ACTIVATIONS)  # index = the kernels' function id
BITS = (1, 2, 3, 4)
GRID = {"lo": -10.0, "hi": 10.0, "cells": 4096}

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


def _grid(fn, lo, hi, cells):
    edges = np.linspace(lo, hi, cells + 1)
    centers = 0.5 * (edges[:-1] + edges[1:])
    w = np.exp(-0.5 * centers**2) / math.sqrt(2 * math.pi) * (edges[1] - edges[0])
    return edges, w, derivative(fn, centers)


def segmentation_cost(w: np.ndarray, v: np.ndarray):
    """``cost(i, j)``: weighted squared error of the best constant for cells i..j-1 (vectorized)."""
    z = np.zeros(1)
    cw, c1, c2 = (np.concatenate([z, np.cumsum(a)]) for a in (w, w * v, w * v * v))

    def cost(i, j):
        dw = cw[j] - cw[i]
        d1 = c1[j] - c1[i]
        return np.maximum(c2[j] - c2[i] - d1 * d1 / np.where(dw > 0, dw, 1.0), 0.0)

    return cost


def optimal_segmentation(w: np.ndarray, v: np.ndarray, pieces: int, chunk: int = 256):
    """Run starts ``[0, s_1, ..., s_{pieces-1}]`` minimising the total cost, and that cost (exact DP)."""
    n = len(v)
    if pieces > n:
        raise ValueError(f"cannot split {n} cells into {pieces} runs")
    cost = segmentation_cost(w, v)
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


def solve(fn: str, bits: int, lo: float = GRID["lo"], hi: float = GRID["hi"], cells: int = GRID["cells"]):
    """``(borders, levels, relative_error)`` of the optimal ``bits``-bit derivative of ``fn`` on the grid.

    ``relative_error = sqrt(min error / integral f'^2 w)`` on the same grid.
    """
    edges, w, v = _grid(fn, lo, hi, cells)
    starts, err = optimal_segmentation(w, v, 2**bits)
    ends = starts[1:] + [cells]
    borders = tuple(float(edges[s]) for s in starts[1:])
    levels = tuple(float(np.dot(w[s:e], v[s:e]) / max(w[s:e].sum(), 1e-300)) for s, e in zip(starts, ends))
    return borders, levels, math.sqrt(err / float(np.dot(w, v * v)))


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
