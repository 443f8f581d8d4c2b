"""The Few-Bit tables: the dynamic program is exactly optimal (brute force on small grids), the
shipped tables are what it computes, and the tables are optimal on the fine grid too."""

import itertools
import math

import numpy as np
import pytest

from ffops.ops import _act_tables as T
from ffops.ops._act_tables_data import TABLES
from ffops.reference.packed_act import relative_derivative_error


def _brute_force(w, v, pieces):
    cost = T.segmentation_cost(w, w * v, w * v * v)
    n = len(v)
    best = math.inf
    for cuts in itertools.combinations(range(1, n), pieces - 1):
        edges = (0, *cuts, n)
        best = min(best, sum(float(cost(a, b)) for a, b in zip(edges[:-1], edges[1:])))
    return best


@pytest.mark.parametrize("fn", ["gelu", "silu", "tanh", "softplus"])
@pytest.mark.parametrize("pieces", [2, 3, 4])
def test_dp_is_optimal_against_brute_force(fn, pieces):
    c = T.normal_cells(fn, 0.0, 1.0, cells=24, span=4.0)
    w, v = c.w, c.v_mid
    starts, err = T.optimal_segmentation(c.w, c.wv, c.wvv, pieces, chunk=5)
    assert err == pytest.approx(_brute_force(w, v, pieces), rel=1e-12, abs=1e-15)
    assert starts[0] == 0 and all(a < b for a, b in zip(starts[:-1], starts[1:])) and len(starts) == pieces
    cost = T.segmentation_cost(c.w, c.wv, c.wvv)
    ends = starts[1:] + [len(v)]
    assert sum(float(cost(a, b)) for a, b in zip(starts, ends)) == pytest.approx(err, rel=1e-12, abs=1e-15)


def test_dp_on_random_sequences():
    rng = np.random.default_rng(0)
    for _ in range(5):
        w, v = rng.random(14) + 0.1, rng.normal(size=14)
        for pieces in (2, 4, 5):
            err = T.optimal_segmentation(w, w * v, w * v * v, pieces)[1]
            assert err == pytest.approx(_brute_force(w, v, pieces), rel=1e-12)


@pytest.mark.parametrize("fn,bits", [("gelu", 1), ("gelu", 2), ("silu", 2), ("sigmoid", 1), ("tanh", 3)])
def test_shipped_tables_are_what_the_dp_computes(fn, bits):
    borders, levels, err = T.solve(fn, bits)
    sb, sl, serr = TABLES[(fn, bits)]
    np.testing.assert_allclose(borders, sb, rtol=0, atol=1e-12)
    np.testing.assert_allclose(levels, sl, rtol=1e-12, atol=1e-14)
    assert err == pytest.approx(serr, rel=1e-9)


def test_shipped_tables_cover_every_function_and_bit_width():
    assert set(TABLES) == {(fn, bits) for fn in T.FUNCTIONS for bits in T.BITS}
    for (_fn, bits), (borders, levels, err) in TABLES.items():
        assert len(borders) == 2**bits - 1 and len(levels) == 2**bits
        assert list(borders) == sorted(borders)
        assert 0 <= err < 1


@pytest.mark.parametrize("fn", T.FUNCTIONS)
def test_error_falls_with_bits(fn):
    """Strictly, until the table is exact (leaky_relu from 1 bit, relu6 from 2: zero up to rounding)."""
    errs = [TABLES[(fn, b)][2] for b in T.BITS]
    assert all(a > b or (a < 1e-6 and b < 1e-6) for a, b in zip(errs[:-1], errs[1:])), errs


@pytest.mark.parametrize(
    "fn,bits,borders,levels",
    [("leaky_relu", 1, [0.0], [0.01, 1.0]), ("relu6", 2, [0.0, 6.0], [0.0, 1.0, 0.0])],
)
def test_piecewise_constant_derivatives_get_exact_tables(fn, bits, borders, levels):
    """The jumps of f' are cell edges (KINKS), so the DP puts borders exactly there: error 0."""
    b, lv, err = TABLES[(fn, bits)]
    assert err < 1e-6
    assert set(borders) <= set(b)
    x = np.linspace(-9.0, 9.0, 3601)
    x = x[~np.isin(x, borders)]  # at the kinks themselves the left piece's level is used
    q = np.asarray(lv)[np.searchsorted(np.asarray(b), x, side="left")]
    np.testing.assert_allclose(q, T.derivative(fn, x), rtol=0, atol=1e-9)
    assert set(np.round(lv, 9)) == set(levels)


def test_tables_are_locally_optimal_on_the_continuous_objective():
    """Moving any border of the GELU tables by +-0.02 (levels re-fitted) never lowers the error
    measured independently (trapezoid rule on 200k points)."""
    x = np.linspace(-10, 10, 200001)
    w = np.exp(-0.5 * x * x)
    v = T.derivative("gelu", x)

    def err(borders):
        code = np.searchsorted(np.asarray(borders), x, side="left")  # x > b_j counts
        levels = [np.sum((w * v)[code == c]) / max(np.sum(w[code == c]), 1e-300) for c in range(len(borders) + 1)]
        return np.sum(w * (v - np.asarray(levels)[code]) ** 2)

    for bits in (1, 2, 3):
        borders = list(TABLES[("gelu", bits)][0])
        base = err(borders)
        for j in range(len(borders)):
            for d in (-0.02, 0.02):
                moved = sorted(borders[:j] + [borders[j] + d] + borders[j + 1 :])
                assert err(moved) >= base * (1 - 1e-6)


def test_gelu_tables_beat_the_papers_two_bit_table():
    """Our 2-bit GELU table has a lower weighted derivative error than Few-Bit's published one
    (borders +-0.4536, levels -0.0015, 0.325, 0.675, 1.0015): ~0.132 vs ~0.141."""
    ours = relative_derivative_error("gelu", *T.table("gelu", 2))
    paper = relative_derivative_error("gelu", (-0.4536, 0.0, 0.4536), (-0.0015, 0.325, 0.675, 1.0015))
    assert ours < paper
    assert ours == pytest.approx(TABLES[("gelu", 2)][2], rel=1e-3)
    assert relative_derivative_error("gelu", *T.REGELU2) == pytest.approx(0.36, abs=0.01)
