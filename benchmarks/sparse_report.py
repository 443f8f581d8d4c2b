"""Tables, targets and plots of benchmarks/bench_sparse.py (its results: one dict per grid point), of
its linear section and of its conv section (benchmarks/sparse_conv_section.py)."""

import torch

from benchmarks import harness
from benchmarks.harness import Target

BASELINE = "ffops"
DENSE, CSR, SPARSEPROP = "dense", "torch csr", "sparseprop"
IM2COL = "ffops im2col"  # the conv section's SparseConv2d(algorithm="im2col")
TOL = 1e-3  # max relative difference of ffops' outputs and gradients from dense


def fwdbwd_ms(result: dict, name: str) -> float | None:
    c = harness.contender(result, name)
    return None if c is None else c["phases"]["fwdbwd"]["median_s"] * 1e3


def speedup_over(result: dict, other: str) -> float | None:
    """How many times faster ffops is than ``other`` in fwd+bwd (median); None if ``other`` did not run."""
    mine, theirs = fwdbwd_ms(result, BASELINE), fwdbwd_ms(result, other)
    return None if theirs is None else theirs / mine


def ffops_worst_diff(result: dict, name: str = BASELINE) -> float:
    """The worst max rel diff of contender ``name``'s output and gradients vs dense."""
    c = harness.contender(result, name)
    return max(c["max_rel_diff"], *c["grad_max_rel_diff"].values())


def summary_rows(results: list[dict], names: list[str]) -> list[dict]:
    """The JSON summary: per point its info, fwd+bwd ms and speedups, ffops' worst diff, cpu/wall and load."""
    return [
        {
            **r["info"],
            **{f"{n}_fwdbwd_ms": fwdbwd_ms(r, n) for n in names},
            **{f"speedup_vs_{n}": speedup_over(r, n) for n in names if n != BASELINE},
            "ffops_max_rel_diff": ffops_worst_diff(r),
            "cpu_per_wall": r["cpu_per_wall"],
            "loadavg_after": r["loadavg_after"],
        }
        for r in results
    ]


def _format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]
    line = lambda r: "  ".join(v.rjust(w) for v, w in zip(r, widths))
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _timing_header(names: list[str]) -> list[str]:
    others = [n for n in names if n != BASELINE]
    return [*(f"{n} ms" for n in names), *(f"x {n}" for n in others), "ffops diff", "cpu/wall", "load 1m"]


def _timing_cells(r: dict, names: list[str]) -> list[str]:
    """Per contender its fwd+bwd ms, then ffops' speedup over each other one, ffops' diff, cpu/wall, load."""
    others = [n for n in names if n != BASELINE]
    row = [f"{fwdbwd_ms(r, n):.3g}" if fwdbwd_ms(r, n) is not None else "-" for n in names]
    row += [f"{speedup_over(r, n):.2f}" if speedup_over(r, n) is not None else "-" for n in others]
    load = r["loadavg_after"]
    return row + [f"{ffops_worst_diff(r):.1e}", f"{r['cpu_per_wall']:.2f}", f"{load[0]:.1f}" if load else "-"]


def summary_table(results: list[dict], names: list[str]) -> str:
    header = ["n", "batch", "sparsity", *_timing_header(names)]
    rows = []
    for r in results:
        i = r["info"]
        rows.append([str(i["n"]), str(i["batch"]), f"{i['sparsity']:g}", *_timing_cells(r, names)])
    return _format_table(header, rows)


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
    def pick(pred):
        return [r for r in results if pred(r["info"])]

    targets = []
    if device.type == "cpu":
        desc = "CPU ffops fwd+bwd >= 1.5x faster than sparseprop at every point with sparsity >= 0.8"
        pts = pick(lambda i: i["sparsity"] >= 0.8)
        if sparseprop_note:
            targets.append(Target(desc, False, f"not measured: sparseprop not importable ({sparseprop_note})"))
        else:
            targets.append(_target(desc, pts, SPARSEPROP, lambda s: s >= 1.5, ">= 1.5x"))
        targets.append(
            _target(
                "CPU ffops fwd+bwd >= 2.5x faster than dense at sparsity 0.9, n=4096, every batch",
                pick(lambda i: i["n"] == 4096 and i["sparsity"] == 0.9),
                DENSE,
                lambda s: s >= 2.5,
                ">= 2.5x",
            )
        )
        targets.append(
            _target(
                "CPU ffops fwd+bwd not slower than dense at sparsity 0.8, n=4096, every batch",
                pick(lambda i: i["n"] == 4096 and i["sparsity"] == 0.8),
                DENSE,
                lambda s: s >= 1.0,
                ">= 1.0x",
            )
        )
    else:
        targets.append(
            _target(
                "GPU ffops fwd+bwd faster than torch csr (cuSPARSE) at every point with sparsity >= 0.8",
                pick(lambda i: i["sparsity"] >= 0.8),
                CSR,
                lambda s: s > 1.0,
                "> 1x",
            )
        )
        targets.append(
            _target(
                "GPU ffops fwd+bwd faster than dense (cuBLAS) at sparsity >= 0.95, n=4096, batch 4096",
                pick(lambda i: i["n"] == 4096 and i["batch"] == 4096 and i["sparsity"] >= 0.95),
                DENSE,
                lambda s: s > 1.0,
                "> 1x",
            )
        )
    targets.append(
        _correctness_target(
            f"ffops output and grads (x, weight values, bias) match dense within {TOL:g} (max rel diff) at every point",
            results,
            [BASELINE],
            _where,
        )
    )
    return targets


def _correctness_target(description: str, results: list[dict], names: list[str], where) -> Target:
    """Whether contenders ``names`` (those that ran) match dense within TOL at every point of ``results``."""
    diffs = [(r, n, ffops_worst_diff(r, n)) for r in results for n in names if harness.contender(r, n)]
    bad = [f"{where(r)}{'' if n == BASELINE else f' ({n})'} {d:.1e}" for r, n, d in diffs if d > TOL]
    return Target(
        description,
        not bad and bool(results),
        (f"worst {max(d for _, _, d in diffs):.1e}" if diffs else "no points") + ("; " + ", ".join(bad) if bad else ""),
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


COLORS = {BASELINE: "tab:red", IM2COL: "tab:orange", DENSE: "tab:gray", CSR: "tab:blue", SPARSEPROP: "tab:green"}


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
