"""Tables, targets and plots of benchmarks/bench_sparse.py (its results: one dict per grid point)."""

import torch

from benchmarks import harness
from benchmarks.harness import Target

BASELINE = "ffops"
DENSE, CSR, SPARSEPROP = "dense", "torch csr", "sparseprop"
TOL = 1e-3  # max relative difference of ffops' outputs and gradients from dense


def fwdbwd_ms(result: dict, name: str) -> float | None:
    c = harness.contender(result, name)
    return None if c is None else c["phases"]["fwdbwd"]["median_s"] * 1e3


def speedup_over(result: dict, other: str) -> float | None:
    """How many times faster ffops is than ``other`` in fwd+bwd (median); None if ``other`` did not run."""
    mine, theirs = fwdbwd_ms(result, BASELINE), fwdbwd_ms(result, other)
    return None if theirs is None else theirs / mine


def ffops_worst_diff(result: dict) -> float:
    c = harness.contender(result, BASELINE)
    return max(c["max_rel_diff"], *c["grad_max_rel_diff"].values())


def summary_table(results: list[dict], names: list[str]) -> str:
    others = [n for n in names if n != BASELINE]
    header = [
        "n",
        "batch",
        "sparsity",
        *(f"{n} ms" for n in names),
        *(f"x {n}" for n in others),
        "ffops diff",
        "cpu/wall",
        "load 1m",
    ]
    rows = []
    for r in results:
        i = r["info"]
        row = [str(i["n"]), str(i["batch"]), f"{i['sparsity']:g}"]
        row += [f"{fwdbwd_ms(r, n):.3g}" if fwdbwd_ms(r, n) is not None else "-" for n in names]
        row += [f"{speedup_over(r, n):.2f}" if speedup_over(r, n) is not None else "-" for n in others]
        load = r["loadavg_after"]
        row += [f"{ffops_worst_diff(r):.1e}", f"{r['cpu_per_wall']:.2f}", f"{load[0]:.1f}" if load else "-"]
        rows.append(row)
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]
    line = lambda r: "  ".join(v.rjust(w) for v, w in zip(r, widths))
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _where(r: dict) -> str:
    i = r["info"]
    return f"n={i['n']} b={i['batch']} s={i['sparsity']:g}"


def _target(description: str, points: list[dict], other: str, ok, need: str) -> Target:
    """One target over ``points``: ``ok(speedup over other)`` at each; the detail names the worst point."""
    pairs = [(r, speedup_over(r, other)) for r in points]
    pairs = [(r, s) for r, s in pairs if s is not None]
    if not pairs:
        return Target(description, False, "not measured")
    worst_r, worst = min(pairs, key=lambda p: p[1])
    failing = [f"{_where(r)} {s:.2f}x" for r, s in pairs if not ok(s)]
    detail = f"worst {worst:.2f}x at {_where(worst_r)} (need {need}, {len(pairs)} points)"
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
    bad = [f"{_where(r)} {ffops_worst_diff(r):.1e}" for r in results if ffops_worst_diff(r) > TOL]
    targets.append(
        Target(
            f"ffops output and grads (x, weight values, bias) match dense within {TOL:g} (max rel diff) at every point",
            not bad and bool(results),
            ("worst " + f"{max(map(ffops_worst_diff, results)):.1e}" if results else "no points")
            + ("; " + ", ".join(bad) if bad else ""),
        )
    )
    return targets


def plot(results: list[dict], names: list[str], path, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot)")
        return False
    ns = sorted({r["info"]["n"] for r in results})
    batches = sorted({r["info"]["batch"] for r in results})
    fig, axes = plt.subplots(2 * len(ns), len(batches), figsize=(4.2 * len(batches), 3.4 * 2 * len(ns)), squeeze=False)
    colors = {BASELINE: "tab:red", DENSE: "tab:gray", CSR: "tab:blue", SPARSEPROP: "tab:green"}
    for i, n in enumerate(ns):
        for j, b in enumerate(batches):
            pts = sorted(
                (r for r in results if r["info"]["n"] == n and r["info"]["batch"] == b),
                key=lambda r: r["info"]["sparsity"],
            )
            ax_t, ax_s = axes[i][j], axes[len(ns) + i][j]
            for name in names:
                xs = [r["info"]["sparsity"] for r in pts if fwdbwd_ms(r, name) is not None]
                if not xs:
                    continue
                ax_t.plot(
                    xs,
                    [fwdbwd_ms(r, name) for r in pts if fwdbwd_ms(r, name) is not None],
                    "o-",
                    label=name,
                    color=colors.get(name),
                )
                dense = [
                    (r["info"]["sparsity"], fwdbwd_ms(r, DENSE) / fwdbwd_ms(r, name))
                    for r in pts
                    if fwdbwd_ms(r, name) is not None and fwdbwd_ms(r, DENSE) is not None
                ]
                if name != DENSE and dense:
                    ax_s.plot(*zip(*dense), "o-", label=name, color=colors.get(name))
            ax_t.set(yscale="log", title=f"n={n}, batch={b}: fwd+bwd", xlabel="sparsity", ylabel="ms")
            ax_s.axhline(1.0, color="tab:gray", lw=1, ls="--")
            ax_s.set(
                yscale="log",
                title=f"n={n}, batch={b}: speedup over dense",
                xlabel="sparsity",
                ylabel="dense time / time",
            )
            for ax in (ax_t, ax_s):
                ax.grid(True, which="both", alpha=0.3)
                if ax.get_legend_handles_labels()[0]:
                    ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ---- main ----------------------------------------------------------------------------------------
