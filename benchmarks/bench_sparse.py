"""Benchmark of the sparse linear layer: ffops vs dense nn.Linear, torch's CSR path and SparseProp.

Run from the repository root::

    python -m benchmarks.bench_sparse                   # CPU (2 threads): the full grid (3.5 min on a quiet
                                                        # 2-core machine; 16 min at load average 6)
    python -m benchmarks.bench_sparse --quick           # a small subset, well under 2 min
    python -m benchmarks.bench_sparse --device cuda     # GPU grid (adds batch 4096; no SparseProp)

Problem: ``y = x @ W^T + b``, ``W [n, n]`` (in = out = n) pruned by magnitude
(``ffops.sparse.magnitude_mask``) to the given sparsity, ``x [batch, n]``, float32. Grid: n in
{1024, 4096}, batch in {64, 128, 256} (and 4096 on CUDA), sparsity in {0.5, 0.8, 0.9, 0.95, 0.98}.
All contenders run side by side in one process on the same data (one ``x``, one dense weight, one
mask, one bias), and each one differentiates ``x``, its own weight (values) and its own bias:

  ffops        ``ffops.nn.SparseLinear.from_dense(linear, mask=mask)`` (backend ``--ffops-backend``)
  dense        ``nn.Linear`` holding the masked dense weight (``SparseLinear.to_dense()``): dense
               GEMMs, its weight gradient is dense ``[n, n]``
  torch csr    a sparse CSR leaf weight, ``torch.sparse.mm(W_csr, x.t()).t() + b`` (MKL on CPU,
               cuSPARSE on CUDA); its gradient is a sparse CSR tensor on the weight's pattern
  sparseprop   ``sparseprop.modules.SparseLinear`` (benchmarks/baselines/sparseprop_layer.py), CPU
               only; skipped with a note when it cannot be imported. OpenMP reads its thread count
               from ``OMP_NUM_THREADS`` when it loads (with torch, whose libgomp SparseProp
               shares), so this script sets that variable to ``--threads`` before importing torch.

Methodology: benchmarks/harness.py's (phases fwd / bwd / fwd+bwd with autograd on; the same
fixed-seed upstream gradient for every contender; warm-up outside the timings; interleaved
rounds rotated by one each round; gc off; median and p20-p80; CUDA events after an L2 flush on
CUDA), with three differences, because the contenders hold different parameters and their speeds
differ by up to ~100x:
  * every contender gets its own input tuple ``(x, weight, bias)`` (the same ``x``), so
    ``harness.compare``, which shares one tuple, is not used; its runner and clock are;
  * the timed ``bwd`` runs on the outputs of the timed ``fwd`` of the same round (no extra
    untimed forward: saves time on the slow contenders);
  * each contender has its own quota of rounds: at least ``--min-repeats`` (``--min-slow`` for a
    contender whose rounds would not fit its share), then more while its timed seconds stay under
    its share of ``--budget`` (budget / number of contenders) and its rounds under
    ``--max-repeats``. A contender whose first fwd+bwd takes over 0.5 s gets no further warm-up;
    one whose minimum rounds would take over 40 s gets fewer (at least 2).
Saved bytes for backward: the harness' saved-tensor hooks, with a sparse tensor counted by its
values and indices; SparseProp keeps its activations on ``ctx`` attributes, which the hooks do not
see (its "saved" column reads ~0). ``cpu_per_wall`` (process CPU time / wall time of the timed
rounds) and the load averages are stored per point: this machine may be shared, and OpenMP's
spinning threads count as CPU time, so the load average is the better sign of competition.
Correctness, once per point: the output and the gradients of x, of the weight at the nonzeros and
of the bias, of every contender against dense (max |a - b| / max |b|; warning above 1e-3).

Targets (MET / NOT MET at the end, and in the JSON), on the fwd+bwd medians:
  CPU  ffops >= 1.5x faster than sparseprop at every point with sparsity >= 0.8;
       ffops >= 2.5x faster than dense at sparsity 0.9, n = 4096, every batch;
       ffops not slower than dense at sparsity 0.8, n = 4096, every batch.
  GPU  ffops faster than torch csr (cuSPARSE) at every point with sparsity >= 0.8;
       ffops faster than dense (cuBLAS) at sparsity >= 0.95, n = 4096, batch 4096.
Results: ``benchmarks/results/bench_sparse_<device>.json`` and ``.png`` (fwd+bwd time vs sparsity
per contender, one panel per n x batch, and the speedup over dense); ``--quick`` or a custom grid
adds a suffix, so a smoke run never overwrites a full one.
"""

import os
import sys

DEFAULT_CPU_THREADS = 2


def _set_omp_threads(argv) -> None:
    """Set OMP_NUM_THREADS before torch (and its OpenMP runtime, shared by SparseProp) loads."""
    import argparse

    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None)
    known, _ = p.parse_known_args(argv)
    if known.device != "cuda" or known.threads:
        os.environ["OMP_NUM_THREADS"] = str(known.threads or DEFAULT_CPU_THREADS)


if __name__ == "__main__":
    _set_omp_threads(sys.argv[1:])

import argparse
import functools
import gc
import importlib.metadata
import json
import time
import warnings
from pathlib import Path

import torch
from torch import nn

import ffops
from benchmarks import harness
from benchmarks.baselines.sparseprop_layer import import_sparseprop, sparseprop_linear
from benchmarks.harness import Contender
from benchmarks.sparse_report import (
    BASELINE,
    CSR,
    DENSE,
    SPARSEPROP,
    TOL,
    check_targets,
    ffops_worst_diff,
    fwdbwd_ms,
    plot,
    speedup_over,
    summary_table,
)
from ffops.nn import SparseLinear
from ffops.sparse import magnitude_mask

SCRIPT = "bench_sparse"
NS = (1024, 4096)
BATCHES = (64, 128, 256)
CUDA_EXTRA_BATCHES = (4096,)
SPARSITIES = (0.5, 0.8, 0.9, 0.95, 0.98)
QUICK = {"n": (1024, 4096), "batch": (64,), "sparsity": (0.8, 0.9, 0.98)}
QUICK_CUDA = {"n": (1024, 4096), "batch": (64, 4096), "sparsity": (0.8, 0.95)}
SLOW_FIRST_CALL_S = 0.5  # no further warm-up for a contender whose first fwd+bwd takes longer
VERY_SLOW_S = 40.0  # a contender's minimum rounds are cut (down to 2) to stay near this many seconds

# torch's sparse CSR support warns that it is in beta on every CSR tensor made
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)


# ---- contenders ----------------------------------------------------------------------------------


def _module_fn(module: nn.Module):
    """``fn(x, weight, bias) = module(x)``: the parameters are inputs only so that they are differentiated."""

    def fn(x, *params):
        return module(x)

    return fn


def csr_linear(x, w_csr, bias):
    """``x @ W^T + b`` through torch's sparse CSR matmul (the weight is the sparse operand)."""
    return torch.sparse.mm(w_csr, x.t()).t() + bias


def build_contenders(
    linear: nn.Linear, mask: torch.Tensor, device: torch.device, ffops_backend: str, sparseprop_modules
) -> tuple[list[tuple[Contender, tuple]], dict]:
    """``[(contender, (weight, bias)), ...]`` (ffops first, dense second) on one weight and mask, and info."""
    layer = SparseLinear.from_dense(linear, mask=mask)
    ctx = None if ffops_backend == "auto" else (lambda: ffops.use_backend(ffops_backend))
    entries = [(Contender(BASELINE, _module_fn(layer), context=ctx), (layer.values, layer.bias))]
    dense = layer.to_dense()  # nn.Linear with the masked weight, the same bias
    entries.append((Contender(DENSE, _module_fn(dense)), (dense.weight, dense.bias)))
    values = layer.values.detach()
    w_csr = torch.sparse_csr_tensor(
        layer.crow_indices.long(),
        layer.col_indices.long(),
        values.clone(),
        size=(linear.out_features, linear.in_features),
        device=device,
    )
    w_csr.requires_grad_()
    entries.append((Contender(CSR, csr_linear), (w_csr, layer.bias.detach().clone().requires_grad_())))
    if sparseprop_modules is not None and device.type == "cpu":
        sp = sparseprop_linear(
            sparseprop_modules,
            dense.weight.detach(),
            layer.bias,
            layer.crow_indices,
            layer.col_indices,
            values,
        )
        entries.append((Contender(SPARSEPROP, _module_fn(sp)), (sp.W_val, sp.bias)))
    info = {"nnz": layer.nnz, "sparsity_exact": layer.sparsity}
    return entries, info


# ---- timing --------------------------------------------------------------------------------------


def _weight_grad_values(g: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A weight gradient as the values at the nonzeros in CSR (row-major) order."""
    if g.layout != torch.strided:
        g = g.to_dense()
    return g[mask] if g.dim() == 2 else g


def _storages(t: torch.Tensor) -> list[tuple[tuple, int]]:
    """``[(key, nbytes)]`` of the storages behind ``t``: a sparse tensor's values and index tensors."""
    if t.layout in (torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr, torch.sparse_bsc):
        rows = t.crow_indices() if t.layout in (torch.sparse_csr, torch.sparse_bsr) else t.ccol_indices()
        cols = t.col_indices() if t.layout in (torch.sparse_csr, torch.sparse_bsr) else t.row_indices()
        parts = (t.values(), rows, cols)
    elif t.layout == torch.sparse_coo:
        parts = (t._values(), t._indices())
    else:
        parts = (t,)
    return [entry for p in parts for entry in harness.dense_storages(p)]


def _diffs(got: dict, ref: dict) -> dict:
    return {k: harness._max_diff((got[k],), (ref[k],)) for k in ref}


def time_point(
    name: str,
    info: dict,
    entries: list[tuple[Contender, tuple]],
    x: torch.Tensor,
    mask: torch.Tensor,
    device: torch.device,
    *,
    budget_s: float,
    min_repeats: int,
    min_slow: int,
    max_repeats: int,
    warmup: int,
) -> dict:
    """Time the contenders side by side on ``x``; a result in ``harness.compare``'s layout.

    Each contender's entry also has ``rounds`` (its own count), ``max_rel_diff`` (output vs
    dense) and ``grad_max_rel_diff`` (``x`` / ``weight`` / ``bias`` vs dense).
    """
    load_before = harness.load_average()
    share = budget_s / len(entries)
    grad_outputs, checks, runs = None, {}, []
    for c, params in entries:
        runner = harness._Runner(c, (x, *params), None)
        start = time.perf_counter()
        outputs = runner.forward()
        if grad_outputs is None:
            grad_outputs = harness._upstream_grads(outputs)
        runner.grad_outputs = grad_outputs
        gx, gw, gb = runner.backward(outputs)
        harness._sync(device)
        first = time.perf_counter() - start
        checks[c.name] = {
            "out": outputs[0].detach(),
            "x": gx,
            "weight": _weight_grad_values(gw, mask),
            "bias": gb,
        }
        del outputs, gx, gw, gb
        est = first
        if first <= SLOW_FIRST_CALL_S:
            for _ in range(warmup - 1):
                t0 = time.perf_counter()
                runner.fwdbwd()
                harness._sync(device)
                est = time.perf_counter() - t0
        res = {"name": c.name, "compiled": False, "first_call_s": first, "warm_fwdbwd_s": est}
        # a saved sparse tensor counts by its values and indices (not as a dense [n, n])
        res["saved_bytes"], res["saved_extra_bytes"] = harness.saved_bytes(
            runner.forward, tuple(runner.diff_inputs), storages=_storages
        )
        if device.type == "cuda":  # peak memory of one fwd+bwd, above what is allocated already
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            runner.fwdbwd()
            harness._sync(device)
            res["peak_extra_bytes"] = torch.cuda.max_memory_allocated(device) - base
        # a round times fwd, bwd and fwd+bwd: about two fwd+bwd
        quota = min_repeats if 2 * est * min_repeats <= share else min_slow
        if 2 * est * quota > VERY_SLOW_S:  # e.g. SparseProp's backward on a loaded machine: seconds per call
            quota = max(2, min(quota, int(VERY_SLOW_S / (2 * est))))
        runs.append(
            {
                "runner": runner,
                "res": res,
                "min": quota,
                "n": 0,
                "spent": 0.0,
                "samples": {p: [] for p in harness.PHASES},
            }
        )
    ref = checks[DENSE]
    for run in runs:
        d = _diffs(checks[run["res"]["name"]], ref)
        run["res"]["max_rel_diff"] = d.pop("out")
        run["res"]["grad_max_rel_diff"] = d
    del checks, ref

    clock = harness._Clock(device)
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start, cpu_start, rounds = time.perf_counter(), time.process_time(), 0
        while True:
            active = [r for r in runs if r["n"] < r["min"] or (r["spent"] < share and r["n"] < max_repeats)]
            if not active:
                break
            shift = rounds % len(active)
            for run in active[shift:] + active[:shift]:
                runner, s = run["runner"], run["samples"]
                t_fwd, outputs = clock.time(runner.forward)
                t_bwd, _ = clock.time(functools.partial(runner.backward, outputs))
                del outputs, _
                t_fb, _ = clock.time(runner.fwdbwd)
                del _
                s["fwd"].append(t_fwd)
                s["bwd"].append(t_bwd)
                s["fwdbwd"].append(t_fb)
                run["spent"] += t_fwd + t_bwd + t_fb
                run["n"] += 1
            rounds += 1
    finally:
        if gc_was_enabled:
            gc.enable()
    timed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    contenders = []
    for run in runs:
        res = run["res"]
        res["rounds"] = run["n"]
        res["phases"] = {p: harness.summarize(v) for p, v in run["samples"].items()}
        contenders.append(res)
    return {
        "case": name,
        "info": info,
        "bytes_moved": {},
        "rounds": rounds,
        "timed_s": timed,
        "cpu_per_wall": cpu / timed if timed > 0 else 0.0,
        "loadavg_before": load_before,
        "loadavg_after": harness.load_average(),
        "contenders": contenders,
    }


# ---- the grid ------------------------------------------------------------------------------------


def run_grid(device, grid, args, sparseprop_modules, on_point=None) -> list[dict]:
    """Every point of ``grid``; ``on_point(results)`` after each (the JSON is rewritten as the run goes)."""
    results = []
    for n in grid["n"]:
        torch.manual_seed(n)
        linear = nn.Linear(n, n, device=device)  # nn.Linear's init: U(-1/sqrt(n), 1/sqrt(n))
        gen = torch.Generator(device=device).manual_seed(n + 1)
        xs = {b: torch.randn(b, n, generator=gen, device=device).requires_grad_() for b in grid["batch"]}
        for sparsity in grid["sparsity"]:
            setup = time.perf_counter()
            mask = magnitude_mask(linear.weight, sparsity)
            entries, winfo = build_contenders(linear, mask, device, args.ffops_backend, sparseprop_modules)
            setup = time.perf_counter() - setup
            for batch in grid["batch"]:
                info = {
                    "n": n,
                    "batch": batch,
                    "sparsity": sparsity,
                    **winfo,
                    "dtype": "float32",
                    "setup_s": round(setup, 3),
                }
                r = time_point(
                    f"n={n} batch={batch} sparsity={sparsity}",
                    info,
                    entries,
                    xs[batch],
                    mask,
                    device,
                    budget_s=args.budget,
                    min_repeats=args.min_repeats,
                    min_slow=args.min_slow,
                    max_repeats=args.max_repeats,
                    warmup=args.warmup,
                )
                results.append(r)
                print(harness.format_table(r, BASELINE))
                print(
                    "  rounds: "
                    + ", ".join(f"{c['name']} {c['rounds']}" for c in r["contenders"])
                    + f"; cpu/wall {r['cpu_per_wall']:.2f}; load {r['loadavg_before']} -> {r['loadavg_after']}"
                )
                for c in r["contenders"]:
                    worst = max(c["max_rel_diff"], *c["grad_max_rel_diff"].values())
                    if worst > TOL:
                        diffs = ", ".join(
                            f"{k} {v:.1e}" for k, v in {"out": c["max_rel_diff"], **c["grad_max_rel_diff"]}.items()
                        )
                        print(f"  WARNING: {c['name']} differs from dense: {diffs}")
                print(flush=True)
                if on_point is not None:
                    on_point(results)
            del entries, mask
            gc.collect()
    return results


# ---- summary, targets, plot ----------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m benchmarks.{SCRIPT}", description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="a small subset of the grid with small budgets (~1-2 min)")
    p.add_argument("--n", type=int, nargs="+", default=None, help="in = out features (default 1024 4096)")
    p.add_argument("--batch", type=int, nargs="+", default=None, help="batch sizes (default 64 128 256, +4096 on CUDA)")
    p.add_argument("--sparsity", type=float, nargs="+", default=None, help="default 0.5 0.8 0.9 0.95 0.98")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help=f"torch.set_num_threads and OMP_NUM_THREADS (default: {DEFAULT_CPU_THREADS} on CPU)",
    )
    p.add_argument(
        "--ffops-backend",
        default="auto",
        choices=("auto", "reference", "cpu", "cuda", "triton"),
        help="ffops backend of the ffops contender (default auto)",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds of timed rounds per point, shared by the contenders (default CPU 6, CUDA 2, quick 1)",
    )
    p.add_argument("--min-repeats", type=int, default=None, help="rounds per contender at least (default 5, quick 3)")
    p.add_argument(
        "--min-slow",
        type=int,
        default=None,
        help="rounds at least of a contender whose rounds do not fit its share (default 4, quick 2)",
    )
    p.add_argument("--max-repeats", type=int, default=None, help="rounds per contender at most (default 100; CUDA 200)")
    p.add_argument("--warmup", type=int, default=2, help="untimed fwd+bwd calls per contender and point (default 2)")
    p.add_argument("--no-sparseprop", action="store_true", help="leave SparseProp out")
    p.add_argument("--no-json", action="store_true", help="print only, write no results file and no plot")
    p.add_argument("--no-plot", action="store_true", help="write no PNG")
    p.add_argument(
        "--replot",
        default=None,
        metavar="JSON",
        help="print the summary and targets of a results JSON (complete or partial) and redraw its PNG",
    )
    p.add_argument(
        "--out",
        default=None,
        help="JSON path (default benchmarks/results/bench_sparse_<device>[_suffix].json; the PNG beside it)",
    )
    return p.parse_args(argv)


def replot(path: Path) -> int:
    """Summary, targets and PNG of a saved run (also of a partial one: the JSON is rewritten per point)."""
    d = json.loads(path.read_text())
    results, names, meta = d["results"], d["config"]["contenders"], d["metadata"]
    device = torch.device(meta["device"])
    print(
        f"{path}: {len(results)} points{'' if d.get('complete') else ' (partial run)'}\n"
        f"{summary_table(results, names)}\n\ntargets:"
    )
    for t in check_targets(results, device, d["config"]["sparseprop_note"] if SPARSEPROP not in names else None):
        print("  " + t.line())
    png = path.with_suffix(".png")
    title = (
        f"{SCRIPT}: {meta['device_name']}, float32, {d['config']['threads'] or 'default'} threads, "
        f"fwd+bwd median; load {meta['loadavg_at_start']}" + ("" if d.get("complete") else " (partial)")
    )
    if results and plot(results, names, png, title):
        print(f"wrote {png}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.replot:
        return replot(Path(args.replot))
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here")
    threads = args.threads if args.threads is not None else (DEFAULT_CPU_THREADS if device.type == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    cuda = device.type == "cuda"
    quick = QUICK_CUDA if cuda else QUICK
    custom = any(v is not None for v in (args.n, args.batch, args.sparsity))
    grid = {
        "n": args.n or (quick["n"] if args.quick else NS),
        "batch": args.batch or (quick["batch"] if args.quick else BATCHES + (CUDA_EXTRA_BATCHES if cuda else ())),
        "sparsity": args.sparsity or (quick["sparsity"] if args.quick else SPARSITIES),
    }
    args.budget = args.budget if args.budget is not None else (1.0 if args.quick else 2.0 if cuda else 6.0)
    args.min_repeats = args.min_repeats if args.min_repeats is not None else (3 if args.quick else 5)
    args.min_slow = args.min_slow if args.min_slow is not None else (2 if args.quick else 4)
    args.max_repeats = args.max_repeats if args.max_repeats is not None else (200 if cuda else 100)

    sparseprop_modules, sparseprop_note = None, None
    if args.no_sparseprop:
        sparseprop_note = "left out (--no-sparseprop)"
    elif cuda:
        sparseprop_note = "CPU only"
    else:
        sparseprop_modules, sparseprop_note = import_sparseprop()
    names = [BASELINE, DENSE, CSR] + ([SPARSEPROP] if sparseprop_modules is not None else [])

    meta = harness.metadata(device)
    meta["omp_num_threads_env"] = os.environ.get("OMP_NUM_THREADS")
    meta["sparseprop"] = _version("sparseprop") if sparseprop_modules is not None else None
    meta["ffops_available"] = ffops.available()
    meta["ffops_cpu_sparse_kernel"] = torch._C._dispatch_has_kernel_for_dispatch_key("ffops::sparse_linear_fwd", "CPU")
    print(
        f"{SCRIPT}: {meta['device_name']}, float32, torch {meta['torch']}, ffops {meta['ffops']} "
        f"(backend {args.ffops_backend}), {meta['torch_threads']} threads, OMP_NUM_THREADS="
        f"{meta['omp_num_threads_env']}, sparseprop {meta['sparseprop']}" + (", quick" if args.quick else "")
    )
    print(f"ffops.available(): {meta['ffops_available']}; C++ CPU sparse kernel: {meta['ffops_cpu_sparse_kernel']}")
    if not cuda and args.ffops_backend in ("auto", "cpu") and not meta["ffops_cpu_sparse_kernel"]:
        sys.exit(
            "ffops has no C++ CPU kernel for ffops::sparse_linear_fwd in this build (rebuild ffops), or run "
            "the pure-torch reference with --ffops-backend reference (a smoke test: its times mean nothing)"
        )
    if sparseprop_modules is None:
        print(f"NOTE: sparseprop skipped: {sparseprop_note}")
    load = meta["loadavg_at_start"]
    if not cuda and load and load[0] > 0.5:
        print(
            f"WARNING: load average {load} before the run: other processes compete for the CPU "
            "and skew the timings (interleaved rounds keep the comparison fair but noisier)"
        )
    print(
        f"grid: n {list(grid['n'])}, batch {list(grid['batch'])}, sparsity {list(grid['sparsity'])}; "
        f"budget {args.budget:g} s per point, rounds per contender >= {args.min_repeats} "
        f"(slow: {args.min_slow}), <= {args.max_repeats}"
    )
    print(
        "times: median [p20-p80] in ms; 'x ffops' = contender fwd+bwd / ffops fwd+bwd (>1: ffops faster)\n",
        flush=True,
    )

    suffix = (
        ("_quick" if args.quick else "")
        + ("_custom" if custom else "")
        + ("" if args.ffops_backend == "auto" else f"_{args.ffops_backend}")
    )
    path = harness.results_path(SCRIPT, device, suffix) if args.out is None else Path(args.out)
    config = {
        **vars(args),
        "threads": threads,
        "grid": {k: list(v) for k, v in grid.items()},
        "spread": "p20-p80",
        "contenders": names,
        "sparseprop_note": sparseprop_note,
        "tolerance": TOL,
    }

    def payload(results, targets=None, total=None):
        return {
            "script": SCRIPT,
            "metadata": meta,
            "config": {**config, "total_s": total},
            "complete": targets is not None,
            "results": results,
            "summary": [
                {
                    **r["info"],
                    **{f"{n}_fwdbwd_ms": fwdbwd_ms(r, n) for n in names},
                    **{f"speedup_vs_{n}": speedup_over(r, n) for n in names if n != BASELINE},
                    "ffops_max_rel_diff": ffops_worst_diff(r),
                    "cpu_per_wall": r["cpu_per_wall"],
                    "loadavg_after": r["loadavg_after"],
                }
                for r in results
            ],
            "targets": [t.__dict__ for t in targets or []],
        }

    def save_partial(results):  # a crash or an interrupted run keeps the points done so far
        if not args.no_json:
            harness.write_json(path, payload(results))

    start = time.perf_counter()
    results = run_grid(device, grid, args, sparseprop_modules, save_partial)
    total = time.perf_counter() - start

    print(
        f"== summary: fwd+bwd median ms; 'x <name>' = <name> / ffops (>1: ffops faster); "
        f"'ffops diff' = worst max rel diff of ffops' output and grads vs dense\n{summary_table(results, names)}"
    )
    print(f"\ntotal {total:.0f} s; load average at the end {harness.load_average()}")
    targets = check_targets(results, device, sparseprop_note if sparseprop_modules is None else None)
    print("\ntargets" + (" (quick configuration: a subset of the grid)" if args.quick else "") + ":")
    for t in targets:
        print("  " + t.line())

    if not args.no_json:
        harness.write_json(path, payload(results, targets, total))
        print(f"\nwrote {path}")
        if not args.no_plot and results:
            png = path.with_suffix(".png")
            title = (
                f"{SCRIPT}: {meta['device_name']}, float32, {threads or 'default'} threads, "
                f"fwd+bwd median; load {meta['loadavg_at_start']}"
            )
            if plot(results, names, png, title):
                print(f"wrote {png}")
    return 0


def _version(module: str) -> str | None:
    try:
        return importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
