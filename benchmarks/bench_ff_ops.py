"""Benchmark of the Forward-Forward ops: ffops vs the eager and ``torch.compile``'d reference.

Run from the repository root::

    python -m benchmarks.bench_ff_ops                      # CPU (2 threads) or CUDA if available
    python -m benchmarks.bench_ff_ops --device cpu --quick # tiny smoke configuration

Contenders per op: ``ffops`` (backend ``auto``), ``eager-ref`` (``ffops.reference`` called
directly), ``compile-ref`` (``torch.compile(reference fn, dynamic=False)``) and, on CUDA,
``ffops[cuda]`` / ``ffops[triton]`` where ``ffops.available()`` says they run. Methodology: see
benchmarks/harness.py. Results: ``benchmarks/results/bench_ff_ops_<device>.json`` (``_quick`` and
a non-float32 dtype add a suffix, so a smoke run never overwrites a full one).

Bytes moved (for GB/s on CUDA) count the minimal traffic of the fused algorithm, per input tensor
of B bytes; per-row statistics (a few floats per row) are ignored:
  ff_loss (per direction, two directions)   fwd: read h (B)      bwd: read h, write dh (2B)
  goodness_and_normalize / ff_normalize      fwd: read h, write y (2B)
                                             bwd: read h and grad_y, write dh (3B)
  goodness                                   fwd: read h (B)      bwd: read h, write dh (2B)
and ``fwdbwd`` is the sum of the two (e.g. ff_loss fwd+bwd reads each h twice, writes dh once).
"""

import argparse
import functools
import sys
from pathlib import Path

import torch

import ffops
from benchmarks import harness
from benchmarks.harness import Case, Contender, Target
from ffops.reference import goodness as reference

SCRIPT = "bench_ff_ops"
THRESHOLD = 2.0
BASELINE = "ffops"

# ---- the ops under test (named functions: one torch.compile cache entry each) ------------------


def ffops_ff_loss(h_pos, h_neg):
    return ffops.ff_loss(h_pos, h_neg, THRESHOLD, goodness="mean", loss="softplus", reduction="mean")


def ref_ff_loss(h_pos, h_neg):
    return reference.ff_loss(h_pos, h_neg, THRESHOLD, goodness="mean", loss="softplus", reduction="mean")


def ffops_goodness_and_normalize(h):
    return ffops.goodness_and_normalize(h, mode="l2")


def ref_goodness_and_normalize(h):
    return reference.goodness_and_normalize(h, mode="l2")


def ffops_goodness_per_sample(h):
    return ffops.goodness(h)


def ref_goodness_per_sample(h):
    return reference.goodness(h)


def ffops_goodness_per_channel(h):
    return ffops.goodness(h, dims=(2, 3))


def ref_goodness_per_channel(h):
    return reference.goodness(h, dims=(2, 3))


def ffops_normalize_rms(h):
    return ffops.ff_normalize(h, mode="rms")


def ref_normalize_rms(h):
    return reference.ff_normalize(h, mode="rms")


# ---- cases -------------------------------------------------------------------------------------


def _randn(shape, device, dtype, seed):
    gen = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(shape, generator=gen, device=device, dtype=dtype).requires_grad_()


def build_cases(device: torch.device, dtype: torch.dtype, quick: bool) -> list[tuple[Case, object, object, bool]]:
    """``(case, ffops fn, reference fn, large)`` per benchmark; ``large`` marks bandwidth-bound sizes."""
    rows = (64, 200) if quick else (8192, 2000)
    conv = (4, 8, 8, 8) if quick else (64, 64, 32, 32)
    esize = torch.empty((), dtype=dtype).element_size()
    b_rows = rows[0] * rows[1] * esize  # bytes of one [N, D] tensor
    b_conv = esize
    for n in conv:
        b_conv *= n
    make_rows = functools.partial(_randn, rows, device, dtype)
    info_rows = {"shape": list(rows), "dtype": str(dtype).replace("torch.", "")}
    info_conv = {"shape": list(conv), "dtype": info_rows["dtype"]}
    return [
        (
            Case(
                "ff_loss",
                lambda: (make_rows(0), make_rows(1)),
                {"fwd": 2 * b_rows, "bwd": 4 * b_rows, "fwdbwd": 6 * b_rows},
                {
                    **info_rows,
                    "inputs": 2,
                    "threshold": THRESHOLD,
                    "goodness": "mean",
                    "loss": "softplus",
                    "reduction": "mean",
                },
            ),
            ffops_ff_loss,
            ref_ff_loss,
            True,
        ),
        (
            Case(
                "goodness_and_normalize",
                lambda: (make_rows(2),),
                {"fwd": 2 * b_rows, "bwd": 3 * b_rows, "fwdbwd": 5 * b_rows},
                {**info_rows, "mode": "l2"},
            ),
            ffops_goodness_and_normalize,
            ref_goodness_and_normalize,
            True,
        ),
        (
            Case(
                "goodness per-sample",
                lambda: (make_rows(3),),
                {"fwd": b_rows, "bwd": 2 * b_rows, "fwdbwd": 3 * b_rows},
                {**info_rows, "reduction": "sum"},
            ),
            ffops_goodness_per_sample,
            ref_goodness_per_sample,
            True,
        ),
        (
            Case(
                "goodness per-channel",
                lambda: (_randn(conv, device, dtype, 4),),
                {"fwd": b_conv, "bwd": 2 * b_conv, "fwdbwd": 3 * b_conv},
                {**info_conv, "dims": [2, 3], "reduction": "sum"},
            ),
            ffops_goodness_per_channel,
            ref_goodness_per_channel,
            False,
        ),
        (
            Case(
                "ff_normalize rms",
                lambda: (make_rows(5),),
                {"fwd": 2 * b_rows, "bwd": 3 * b_rows, "fwdbwd": 5 * b_rows},
                {**info_rows, "mode": "rms"},
            ),
            ffops_normalize_rms,
            ref_normalize_rms,
            True,
        ),
    ]


def build_contenders(ffops_fn, ref_fn, device: torch.device, compile_ref: bool) -> list[Contender]:
    """ffops (auto) first, then the references, then (CUDA) the explicit ffops backends."""
    out = [
        Contender(BASELINE, ffops_fn, context=lambda: ffops.use_backend("auto")),
        Contender("eager-ref", ref_fn),
    ]
    if compile_ref:
        out.append(harness.compiled_contender("compile-ref", ref_fn))
    if device.type == "cuda":
        avail = ffops.available()
        for backend in ("cuda", "triton"):
            if avail.get(backend):
                out.append(
                    Contender(f"ffops[{backend}]", ffops_fn, context=functools.partial(ffops.use_backend, backend))
                )
    return out


# ---- targets -----------------------------------------------------------------------------------


def _speedup(result, other: str, name: str = BASELINE) -> float:
    """How many times faster ``name`` is than ``other`` in fwd+bwd (median)."""
    return harness.median(result, other) / harness.median(result, name)


def check_targets(results: dict, device: torch.device, large: dict) -> list[Target]:
    """The project's performance targets, evaluated on the fwd+bwd medians."""
    targets = []
    if device.type == "cpu":
        if "ff_loss" in results:
            r = results["ff_loss"]
            s = _speedup(r, "eager-ref")
            targets.append(Target("CPU ff_loss fwd+bwd >= 2x faster than eager", s >= 2.0, f"{s:.2f}x"))
            if harness.contender(r, "compile-ref"):
                s = _speedup(r, "compile-ref")
                targets.append(Target("CPU ff_loss fwd+bwd not slower than torch.compile", s >= 1.0, f"{s:.2f}x"))
        if "goodness_and_normalize" in results:
            s = _speedup(results["goodness_and_normalize"], "eager-ref")
            targets.append(
                Target("CPU goodness_and_normalize fwd+bwd >= 1.5x faster than eager", s >= 1.5, f"{s:.2f}x")
            )
        return targets
    for case, r in results.items():
        for c in r["contenders"]:
            if not c["name"].startswith(BASELINE):
                continue
            pct = c["phases"]["fwdbwd"].get("pct_copy_bw")
            if large[case] and pct is not None:
                targets.append(
                    Target(f"GPU {case} {c['name']} fwd+bwd >= 85% of copy bandwidth", pct >= 85.0, f"{pct:.0f}%")
                )
            if harness.contender(r, "compile-ref"):
                s = _speedup(r, "compile-ref", c["name"])
                targets.append(
                    Target(f"GPU {case} {c['name']} fwd+bwd faster than torch.compile", s > 1.0, f"{s:.2f}x")
                )
    return targets


def slower_than_compile(results: dict) -> list[str]:
    """Every case / phase / ffops contender whose median is above torch.compile's."""
    lines = []
    for case, r in results.items():
        ref = harness.contender(r, "compile-ref")
        if ref is None:
            continue
        for c in r["contenders"]:
            if not c["name"].startswith(BASELINE):
                continue
            for phase in harness.PHASES:
                mine, theirs = c["phases"][phase]["median_s"], ref["phases"][phase]["median_s"]
                if mine > theirs:
                    lines.append(
                        f"{case}: {c['name']} {harness.PHASE_TITLES[phase]} {mine * 1e3:.3g} ms vs "
                        f"torch.compile {theirs * 1e3:.3g} ms ({mine / theirs:.2f}x, "
                        f"+{100 * (mine / theirs - 1):.0f}%)"
                    )
    return lines


# ---- main --------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m benchmarks.{SCRIPT}", description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16", "float64"), default="float32")
    p.add_argument("--quick", action="store_true", help="tiny shapes and budgets: a smoke test in seconds")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: 2 on CPU)")
    p.add_argument(
        "--budget", type=float, default=None, help="seconds of timed rounds per case (default 15, quick 0.2)"
    )
    p.add_argument("--min-repeats", type=int, default=None, help="rounds per case at least (default 5, quick 3)")
    p.add_argument("--only", default=None, help="run only the cases whose name contains this text")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile contender")
    p.add_argument("--no-json", action="store_true", help="print only, write no results file")
    p.add_argument(
        "--out", default=None, help="the results file (default: benchmarks/results/bench_ff_ops_<device>.json)"
    )
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here")
    dtype = getattr(torch, args.dtype)
    threads = args.threads if args.threads is not None else (2 if device.type == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    budget = args.budget if args.budget is not None else (0.2 if args.quick else 15.0)
    min_repeats = args.min_repeats if args.min_repeats is not None else (3 if args.quick else 5)

    meta = harness.metadata(device)
    bandwidth = harness.copy_bandwidth(device) if device.type == "cuda" else None
    print(
        f"{SCRIPT}: {harness.machine_line(meta)}, {args.dtype}, torch {meta['torch']}, triton {meta['triton']}, "
        f"ffops {meta['ffops']}" + (", quick" if args.quick else "")
    )
    print(f"ffops.available(): {ffops.available()}")
    if bandwidth:
        print(f"measured copy bandwidth: {bandwidth / 1e9:.0f} GB/s (read + write of a 1 GiB copy_)")
    load = meta["loadavg_at_start"]
    if device.type == "cpu" and load and load[0] > 0.5:
        print(
            f"WARNING: load average {load} before the run: other processes compete for the CPU "
            "and skew the timings (interleaved rounds keep the comparison fair but noisier)"
        )
    print("times: median [p20-p80] in ms; 'x ffops' = contender fwd+bwd / ffops fwd+bwd (>1: ffops faster)\n")

    results, large = {}, {}
    for case, ffops_fn, ref_fn, is_large in build_cases(device, dtype, args.quick):
        if args.only and args.only not in case.name:
            continue
        contenders = build_contenders(ffops_fn, ref_fn, device, not args.no_compile)
        r = harness.compare(
            case,
            contenders,
            device,
            budget_s=budget,
            min_repeats=min_repeats,
            warmup=1 if args.quick else 2,
            bandwidth=bandwidth,
        )
        results[case.name], large[case.name] = r, is_large
        print(harness.format_table(r, BASELINE))
        tol = 1e-3 if dtype in (torch.float32, torch.float64) else 3e-2
        bad = [f"{c['name']} ({c['max_rel_diff']:.1e})" for c in r["contenders"] if c["max_rel_diff"] > tol]
        if bad:
            print("  WARNING: outputs differ from ffops: " + ", ".join(bad))
        print(flush=True)

    targets = check_targets(results, device, large)
    print("targets" + (" (quick configuration: not meaningful)" if args.quick else "") + ":")
    for t in targets:
        print("  " + t.line())
    if args.dtype != "float32":
        print("  (the targets are stated for float32)")
    slower = slower_than_compile(results)
    print(
        "ffops slower than torch.compile:" + ("" if slower else " nowhere" if not args.no_compile else " not measured")
    )
    for line in slower:
        print("  " + line)

    if not args.no_json:
        suffix = ("" if args.dtype == "float32" else f"_{args.dtype}") + ("_quick" if args.quick else "")
        payload = {
            "script": SCRIPT,
            "metadata": meta,
            "config": {
                **vars(args),
                "threads": threads,
                "budget_s": budget,
                "min_repeats": min_repeats,
                "spread": "p20-p80",
                "copy_bandwidth_bytes_per_s": bandwidth,
            },
            "results": list(results.values()),
            "targets": [t.__dict__ for t in targets],
            "slower_than_compile": slower,
        }
        path = harness.results_path(SCRIPT, device, suffix) if args.out is None else Path(args.out)
        print(f"\nwrote {harness.write_json(path, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
