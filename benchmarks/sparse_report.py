"""Tables, targets and plots of benchmarks/bench_sparse.py (its results: one dict per grid point), of
its linear section and of its conv section (benchmarks/sparse_conv_section.py)."""

import dataclasses

import torch

from benchmarks import harness
from benchmarks.harness import Target

BASELINE = "ffops"
DENSE, CSR, SPARSEPROP = "dense", "torch csr", "sparseprop"
IM2COL = "ffops im2col"  # the conv section's SparseConv2d(algorithm="im2col")
TRITON = "ffops[triton]"  # the linear section's SparseLinear on ffops' Triton backend (CUDA)
SEMI = "2:4"  # the linear section's torch 2:4 semi-structured weight (CUDA, forward only)
TOL = 1e-3  # max relative difference of ffops' outputs and gradients from dense

# Tolerance (max |a - b| / max |b|) of a contender computing in a dtype, against a reference on the same
# (rounded) parameters and inputs computed in float32. float32: TOL. bfloat16 keeps 8 significant
# bits (unit roundoff 2^-8 ~ 3.9e-3): the output and every gradient are rounded to bfloat16 at least
# once (and a kernel may round an intermediate too, e.g. a split-K partial sum), each rounding up to
# ~4e-3 of the largest entry; a few of them stay under 2e-2, while a wrong result (a misplaced index,
# a dropped nonzero) differs by O(1). float16 (unit roundoff 2^-11 ~ 4.9e-4): 1e-2 covers a kernel
# that accumulates in float16 (the 2:4 contender of a float32 run computes in float16).
DTYPE_TOL = {"float32": TOL, "float16": 1e-2, "bfloat16": 2e-2}
DTYPE_SHORT = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``."""
    return str(dtype).removeprefix("torch.")


def tolerance(dtype: str) -> float:
    """The correctness tolerance of a contender computing in ``dtype`` (a name, e.g. "bfloat16")."""
    return DTYPE_TOL.get(dtype, TOL)


def results_dtype(results: list[dict]) -> str:
    """The dtype of a linear run ("float32" for a run from before --dtype, whose info says float32)."""
    return results[0]["info"].get("dtype", "float32") if results else "float32"


def _tol(c: dict) -> float:
    """A contender's tolerance: the one stored with it, else TOL (runs from before per-dtype tolerances)."""
    return c.get("tolerance", TOL)


@dataclasses.dataclass
class ReportedTarget(Target):
    """A target line that is reported, not judged (the GPU targets are the float32 run's; a bfloat16
    run prints the same lines, labelled bf16, with what they would give). JSON: ``judged: false``."""

    judged: bool = False

    def line(self) -> str:
        state = "would be met" if self.met else "would not be met"
        return f"[REPORT, not judged: {state}] {self.description}" + (f": {self.detail}" if self.detail else "")


def phase_ms(result: dict, name: str, phase: str) -> float | None:
    """Median ms of ``phase`` of contender ``name``; None if it did not run (or not that phase: a
    forward-only contender has no bwd / fwd+bwd)."""
    c = harness.contender(result, name)
    return None if c is None or phase not in c["phases"] else c["phases"][phase]["median_s"] * 1e3


def fwdbwd_ms(result: dict, name: str) -> float | None:
    return phase_ms(result, name, "fwdbwd")


def fwd_only_names(results: list[dict]) -> list[str]:
    """The contenders timed forward only (e.g. 2:4, which torch cannot differentiate), in order of appearance."""
    return list(dict.fromkeys(c["name"] for r in results for c in r["contenders"] if c.get("fwd_only")))


def fwd_speedup_over(result: dict, other: str) -> float | None:
    """How many times faster ffops' forward is than ``other``'s (median); None if either did not run."""
    mine, theirs = phase_ms(result, BASELINE, "fwd"), phase_ms(result, other, "fwd")
    return None if theirs is None or mine is None else theirs / mine


def speedup_over(result: dict, other: str) -> float | None:
    """How many times faster ffops is than ``other`` in fwd+bwd (median); None if ``other`` did not run."""
    mine, theirs = fwdbwd_ms(result, BASELINE), fwdbwd_ms(result, other)
    return None if theirs is None else theirs / mine


def ffops_worst_diff(result: dict, name: str = BASELINE) -> float:
    """The worst max rel diff of contender ``name``'s output and gradients vs its reference (dense; a
    float32 dense on the same parameters in a bfloat16 run; 2:4 its own 2:4 dense weight, output only)."""
    c = harness.contender(result, name)
    return max([c["max_rel_diff"], *c["grad_max_rel_diff"].values()])


def summary_rows(results: list[dict], names: list[str]) -> list[dict]:
    """The JSON summary: per point its info, fwd+bwd ms and speedups, ffops' worst diff, cpu/wall and load;
    with forward-only contenders (2:4) also ``ffops_fwd_ms``, ``<name>_fwd_ms`` and ``speedup_fwd_vs_<name>``
    (None where the contender did not run)."""
    fwd_only = [n for n in fwd_only_names(results) if n in names]
    rows = []
    for r in results:
        row = {
            **r["info"],
            **{f"{n}_fwdbwd_ms": fwdbwd_ms(r, n) for n in names},
            **{f"speedup_vs_{n}": speedup_over(r, n) for n in names if n != BASELINE},
            "ffops_max_rel_diff": ffops_worst_diff(r),
            "cpu_per_wall": r["cpu_per_wall"],
            "loadavg_after": r["loadavg_after"],
        }
        if fwd_only:
            row["ffops_fwd_ms"] = phase_ms(r, BASELINE, "fwd")
            for n in fwd_only:
                row[f"{n}_fwd_ms"] = phase_ms(r, n, "fwd")
                row[f"speedup_fwd_vs_{n}"] = fwd_speedup_over(r, n)
        rows.append(row)
    return rows


def _format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]
    line = lambda r: "  ".join(v.rjust(w) for v, w in zip(r, widths))
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _timing_header(names: list[str], fwd_only: tuple = ()) -> list[str]:
    """fwd+bwd columns of ``names``; forward-only contenders (``fwd_only``) get fwd columns instead, beside
    ffops' fwd."""
    full = [n for n in names if n not in fwd_only]
    others = [n for n in full if n != BASELINE]
    header = [*(f"{n} ms" for n in full), *(f"x {n}" for n in others)]
    if fwd_only:
        header += ["ffops fwd ms", *(f"{n} fwd ms" for n in fwd_only), *(f"x {n} fwd" for n in fwd_only)]
    return header + ["ffops diff", "cpu/wall", "load 1m"]


def _cell(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _timing_cells(r: dict, names: list[str], fwd_only: tuple = ()) -> list[str]:
    """Per contender its fwd+bwd ms, then ffops' speedup over each other one (forward-only contenders: the
    fwd ms and ffops' fwd speedup), ffops' diff, cpu/wall, load."""
    full = [n for n in names if n not in fwd_only]
    others = [n for n in full if n != BASELINE]
    row = [_cell(fwdbwd_ms(r, n), ".3g") for n in full]
    row += [_cell(speedup_over(r, n), ".2f") for n in others]
    if fwd_only:
        row += [_cell(phase_ms(r, n, "fwd"), ".3g") for n in (BASELINE, *fwd_only)]
        row += [_cell(fwd_speedup_over(r, n), ".2f") for n in fwd_only]
    load = r["loadavg_after"]
    return row + [f"{ffops_worst_diff(r):.1e}", f"{r['cpu_per_wall']:.2f}", f"{load[0]:.1f}" if load else "-"]


def summary_table(results: list[dict], names: list[str]) -> str:
    fwd_only = tuple(n for n in fwd_only_names(results) if n in names)
    header = ["n", "batch", "sparsity", *_timing_header(names, fwd_only)]
    rows = []
    for r in results:
        i = r["info"]
        rows.append([str(i["n"]), str(i["batch"]), f"{i['sparsity']:g}", *_timing_cells(r, names, fwd_only)])
    table = _format_table(header, rows)
    if fwd_only:
        table += (
            f"\n({', '.join(fwd_only)}: forward only (torch has no backward through it), at the sparsity-0.5 "
            "points; 'x <name> fwd' = its fwd / ffops' fwd)"
        )
    return table


def conv_summary_table(results: list[dict], names: list[str]) -> str:
    """The conv section's summary: per point (layer, HxW, stride, sparsity, ffops' path) the fwd+bwd times."""
    header = ["layer", "HxW", "stride", "sparsity", "ffops path", *_timing_header(names)]
    rows = []
    for r in results:
        i = r["info"]
        where = [i["layer"], f"{i['size']}x{i['size']}", str(i["stride"]), f"{i['sparsity']:g}", i["ffops_path"]]
        rows.append([*where, *_timing_cells(r, names)])
    return _format_table(header, rows)


def _where(r: dict) -> str:
    i = r["info"]
    return f"n={i['n']} b={i['batch']} s={i['sparsity']:g}"


def _conv_where(r: dict) -> str:
    i = r["info"]
    return f"{i['layer']} {i['size']}x{i['size']} stride {i['stride']} s={i['sparsity']:g}"


def _target(description: str, points: list[dict], other: str, ok, need: str, where=_where) -> Target:
    """One target over ``points``: ``ok(speedup over other)`` at each; the detail names the worst point."""
    pairs = [(r, speedup_over(r, other)) for r in points]
    pairs = [(r, s) for r, s in pairs if s is not None]
    if not pairs:
        return Target(description, False, "not measured")
    worst_r, worst = min(pairs, key=lambda p: p[1])
    failing = [f"{where(r)} {s:.2f}x" for r, s in pairs if not ok(s)]
    detail = f"worst {worst:.2f}x at {where(worst_r)} (need {need}, {len(pairs)} points)"
    if failing:
        detail += "; failing: " + ", ".join(failing)
    return Target(description, all(ok(s) for _, s in pairs), detail)


def check_targets(results: list[dict], device: torch.device, sparseprop_note: str | None) -> list[Target]:
    """The linear section's targets. They are the issue's float32 targets: judged (MET / NOT MET) on a
    float32 run; a bfloat16 run prints the same lines, labelled bf16, as :class:`ReportedTarget` (not
    judged). The correctness target is judged in every dtype, with the dtype's tolerance."""
    dtype = results_dtype(results)
    judged = dtype == "float32"
    label = "" if judged else f" {DTYPE_SHORT.get(dtype, dtype)}"

    def pick(pred):
        return [r for r in results if pred(r["info"])]

    def perf(description, points, other, ok, need) -> Target:
        t = _target(description, points, other, ok, need)
        return t if judged else ReportedTarget(t.description, t.met, t.detail)

    targets = []
    if device.type == "cpu":
        desc = f"CPU{label} ffops fwd+bwd >= 1.5x faster than sparseprop at every point with sparsity >= 0.8"
        pts = pick(lambda i: i["sparsity"] >= 0.8)
        if sparseprop_note:
            t = Target(desc, False, f"not measured: sparseprop not importable ({sparseprop_note})")
            targets.append(t if judged else ReportedTarget(t.description, t.met, t.detail))
        else:
            targets.append(perf(desc, pts, SPARSEPROP, lambda s: s >= 1.5, ">= 1.5x"))
        targets.append(
            perf(
                f"CPU{label} ffops fwd+bwd >= 2.5x faster than dense at sparsity 0.9, n=4096, every batch",
                pick(lambda i: i["n"] == 4096 and i["sparsity"] == 0.9),
                DENSE,
                lambda s: s >= 2.5,
                ">= 2.5x",
            )
        )
        targets.append(
            perf(
                f"CPU{label} ffops fwd+bwd not slower than dense at sparsity 0.8, n=4096, every batch",
                pick(lambda i: i["n"] == 4096 and i["sparsity"] == 0.8),
                DENSE,
                lambda s: s >= 1.0,
                ">= 1.0x",
            )
        )
    else:
        targets.append(
            perf(
                f"GPU{label} ffops fwd+bwd faster than torch csr (cuSPARSE) at every point with sparsity >= 0.8",
                pick(lambda i: i["sparsity"] >= 0.8),
                CSR,
                lambda s: s > 1.0,
                "> 1x",
            )
        )
        targets.append(
            perf(
                f"GPU{label} ffops fwd+bwd faster than dense (cuBLAS) at sparsity >= 0.95, n=4096, batch 4096",
                pick(lambda i: i["n"] == 4096 and i["batch"] == 4096 and i["sparsity"] >= 0.95),
                DENSE,
                lambda s: s > 1.0,
                "> 1x",
            )
        )
        targets.append(
            perf(
                f"GPU{label} ffops fwd+bwd faster than dense (cuBLAS) at sparsity >= 0.9, batch 64, every n",
                pick(lambda i: i["batch"] == 64 and i["sparsity"] >= 0.9),
                DENSE,
                lambda s: s > 1.0,
                "> 1x",
            )
        )
    tol = tolerance(dtype)
    ran_triton = any(harness.contender(r, TRITON) for r in results)
    who = "ffops" + (f" (and {TRITON})" if ran_triton else "")
    vs = "dense" if judged else f"a float32 dense on the same {DTYPE_SHORT.get(dtype, dtype)} parameters"
    targets.append(
        _correctness_target(
            f"{who} output and grads (x, weight values, bias) match {vs} within {tol:g} (max rel diff) at every point",
            results,
            [BASELINE, TRITON],
            _where,
        )
    )
    return targets


def _correctness_target(description: str, results: list[dict], names: list[str], where) -> Target:
    """Whether contenders ``names`` (those that ran) match their reference within their tolerance (TOL in
    float32) at every point of ``results``."""
    diffs = [
        (r, n, ffops_worst_diff(r, n), _tol(harness.contender(r, n)))
        for r in results
        for n in names
        if harness.contender(r, n)
    ]
    bad = [f"{where(r)}{'' if n == BASELINE else f' ({n})'} {d:.1e}" for r, n, d, tol in diffs if d > tol]
    return Target(
        description,
        not bad and bool(results),
        (f"worst {max(d for _, _, d, _ in diffs):.1e}" if diffs else "no points")
        + ("; " + ", ".join(bad) if bad else ""),
    )


def check_conv_targets(results: list[dict], device: torch.device) -> list[Target]:
    """The conv section's targets (the issue's, on the CPU) and the correctness of both ffops algorithms."""

    def at(in_c, out_c, size, sparsity):
        return [
            r
            for r in results
            if (r["info"]["in_channels"], r["info"]["out_channels"], r["info"]["size"], r["info"]["stride"])
            == (in_c, out_c, size, 1)
            and r["info"]["sparsity"] == sparsity
        ]

    targets = []
    if device.type == "cpu":
        for (in_c, out_c, size), need in (((64, 64, 32), 1.0), ((256, 256, 14), 1.5)):
            desc = (
                f"CPU ffops fwd+bwd >= {need:.1f}x dense at sparsity 0.9 for {in_c}->{out_c} at {size}x{size} "
                "(batch 32, 3x3)"
            )
            ok = lambda s, need=need: s >= need
            targets.append(_target(desc, at(in_c, out_c, size, 0.9), DENSE, ok, f">= {need:.1f}x", _conv_where))
    targets.append(
        _correctness_target(
            f"conv: ffops (and ffops im2col) output and grads (x, weight values, bias) match dense within {TOL:g} "
            "(max rel diff) at every point",
            results,
            [BASELINE, IM2COL],
            _conv_where,
        )
    )
    return targets


COLORS = {
    BASELINE: "tab:red",
    IM2COL: "tab:orange",
    TRITON: "tab:purple",
    DENSE: "tab:gray",
    CSR: "tab:blue",
    SPARSEPROP: "tab:green",
}


def _pyplot():
    """matplotlib's pyplot on the Agg backend, or None (with a note) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot)")
        return None
    return plt


def _draw_pair(ax_t, ax_s, pts: list[dict], names: list[str], label: str) -> None:
    """fwd+bwd ms vs sparsity per contender on ``ax_t``, the speedup over dense on ``ax_s`` (points sorted)."""
    for name in names:
        xs = [r["info"]["sparsity"] for r in pts if fwdbwd_ms(r, name) is not None]
        if not xs:
            continue
        ax_t.plot(
            xs,
            [fwdbwd_ms(r, name) for r in pts if fwdbwd_ms(r, name) is not None],
            "o-",
            label=name,
            color=COLORS.get(name),
        )
        dense = [
            (r["info"]["sparsity"], fwdbwd_ms(r, DENSE) / fwdbwd_ms(r, name))
            for r in pts
            if fwdbwd_ms(r, name) is not None and fwdbwd_ms(r, DENSE) is not None
        ]
        if name != DENSE and dense:
            ax_s.plot(*zip(*dense), "o-", label=name, color=COLORS.get(name))
    ax_t.set(yscale="log", title=f"{label}: fwd+bwd", xlabel="sparsity", ylabel="ms")
    ax_s.axhline(1.0, color="tab:gray", lw=1, ls="--")
    ax_s.set(yscale="log", title=f"{label}: speedup over dense", xlabel="sparsity", ylabel="dense time / time")
    for ax in (ax_t, ax_s):
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)


def _by_sparsity(results: list[dict], pred) -> list[dict]:
    return sorted((r for r in results if pred(r["info"])), key=lambda r: r["info"]["sparsity"])


def _save(fig, plt, path, title: str) -> bool:
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot(results: list[dict], names: list[str], path, title: str) -> bool:
    plt = _pyplot()
    if plt is None:
        return False
    ns = sorted({r["info"]["n"] for r in results})
    batches = sorted({r["info"]["batch"] for r in results})
    fig, axes = plt.subplots(2 * len(ns), len(batches), figsize=(4.2 * len(batches), 3.4 * 2 * len(ns)), squeeze=False)
    for i, n in enumerate(ns):
        for j, b in enumerate(batches):
            pts = _by_sparsity(results, lambda info: info["n"] == n and info["batch"] == b)
            _draw_pair(axes[i][j], axes[len(ns) + i][j], pts, names, f"n={n}, batch={b}")
    return _save(fig, plt, path, title)


def _conv_layer_key(info: dict) -> tuple:
    return info["in_channels"], info["out_channels"], info["size"], info["stride"]


def plot_conv(results: list[dict], names: list[str], path, title: str, columns: int = 3) -> bool:
    """The conv section's PNG: per layer shape, fwd+bwd ms vs sparsity per contender above the speedup
    over dense; ``columns`` layers a row."""
    plt = _pyplot()
    if plt is None:
        return False
    keys = list(dict.fromkeys(_conv_layer_key(r["info"]) for r in results))  # in the grid's order
    cols = min(columns, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(2 * rows, cols, figsize=(4.2 * cols, 3.4 * 2 * rows), squeeze=False)
    for k, key in enumerate(keys):
        pts = _by_sparsity(results, lambda info: _conv_layer_key(info) == key)
        in_c, out_c, size, stride = key
        label = f"{in_c}->{out_c} {size}x{size}" + (f" stride {stride}" if stride != 1 else "")
        _draw_pair(axes[2 * (k // cols)][k % cols], axes[2 * (k // cols) + 1][k % cols], pts, names, label)
    for k in range(len(keys), rows * cols):  # the empty panels of the last row
        axes[2 * (k // cols)][k % cols].axis("off")
        axes[2 * (k // cols) + 1][k % cols].axis("off")
    return _save(fig, plt, path, title)


# ---- main ----------------------------------------------------------------------------------------
