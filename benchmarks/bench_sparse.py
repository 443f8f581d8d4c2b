"""Benchmark of the sparse layers: SparseLinear / SparseConv2d vs dense, torch's CSR path and SparseProp.

Run from the repository root::

    python -m benchmarks.bench_sparse                   # CPU (2 threads): the linear grid (3.5 min on a
                                                        # quiet 2-core machine; 16 min at load average 6),
                                                        # then the conv grid (24 points, several minutes)
    python -m benchmarks.bench_sparse --quick           # a small subset of both (about 1.5 min; its conv
                                                        # part alone, --conv-only, about 15 s)
    python -m benchmarks.bench_sparse --no-conv         # the linear section only
    python -m benchmarks.bench_sparse --conv-only       # the conv section only
    python -m benchmarks.bench_sparse --device cuda     # GPU grids (linear adds batch 4096; no SparseProp)
    python -m benchmarks.bench_sparse --device cuda --dtype bfloat16   # the linear grid in bfloat16
    python -m benchmarks.bench_sparse --quick --no-conv --dtype bfloat16 --ffops-backend reference
                                                        # CPU smoke test of the bfloat16 path

Two sections, each a grid of points; at every point all its contenders run side by side in one
process on the same data (one ``x``, one dense weight, one mask, one bias), and each one
differentiates ``x``, its own weight (values) and its own bias (except 2:4, forward only).

Linear section. Problem: ``y = x @ W^T + b``, ``W [n, n]`` (in = out = n) pruned by magnitude
(``ffops.sparse.magnitude_mask``, on the float32 weight) to the given sparsity, ``x [batch, n]``, in
``--dtype`` (float32, default, or bfloat16: the weights, bias and inputs of every contender, made in
float32 and rounded). Grid: CPU n in {1024, 4096}, batch in {64, 128, 256}; CUDA n in {1024, 4096, 8192},
batch in {64, 512, 4096}; sparsity in {0.5, 0.8, 0.9, 0.95, 0.98} (``--n``, ``--batch``, ``--sparsity``
set it). Contenders:

  ffops          ``ffops.nn.SparseLinear.from_dense(linear, mask=mask)`` (backend ``--ffops-backend``;
                 auto: the C++ kernels, CUDA ones on CUDA). Its CPU C++ kernels take float32 /
                 float64 only: ``--dtype bfloat16`` on CPU exits unless ``--ffops-backend reference``
  ffops[triton]  the same layer on ffops' Triton backend; CUDA only, when ``ffops.available()["triton"]``
                 and the ffops contender does not run Triton already (absent otherwise, silently)
  dense          ``nn.Linear`` holding the masked dense weight (``SparseLinear.to_dense()``): dense
                 GEMMs (cuBLAS on CUDA; float32 with torch's default TF32 setting, not changed and
                 recorded in the metadata as ``cuda_matmul_allow_tf32``), its weight gradient is dense
  torch csr      a sparse CSR leaf weight, ``torch.sparse.mm(W_csr, x.t()).t() + b`` (MKL on CPU,
                 cuSPARSE on CUDA); its gradient is a sparse CSR tensor on the weight's pattern. Left
                 out with a note where a probe of it fails in the dtype (torch 2.14's CPU path has no
                 bfloat16)
  2:4            torch's 2:4 semi-structured sparsity, the hardware-sparsity reference, CUDA only (a
                 note "CUDA only" on CPU): the unpruned dense weight pruned to 2:4 (in each group of 4
                 consecutive input weights the 2 of largest magnitude: 50 %, the same weight at every
                 sparsity), in float16 (a float32 run) or bfloat16, converted by
                 ``torch.sparse.to_sparse_semi_structured`` (cuSPARSELt; CUTLASS if that fails); ``x``
                 copied to that dtype outside the timings. Forward only: torch's
                 ``SparseSemiStructuredTensor`` implements inference ops only (no weight gradient; 2:4
                 training is torchao's), so its table has a fwd time alone (``fwd_only: true``, and the
                 summary's ``2:4_fwd_ms`` / ``speedup_fwd_vs_2:4`` beside ``ffops_fwd_ms``). It runs at
                 the points of sparsity 0.5 only (none in the quick grids), and is checked (output) against
                 its own dense 2:4 weight in float32, not against dense. Any failure to build or time
                 it becomes a note (``config.contender_notes``) and the run goes on without it
  sparseprop     ``sparseprop.modules.SparseLinear`` (benchmarks/baselines/sparseprop_layer.py), CPU
                 and float32 only; skipped with a note when it cannot be imported. OpenMP reads its thread count
                 from ``OMP_NUM_THREADS`` when it loads (with torch, whose libgomp SparseProp
                 shares), so this script sets that variable to ``--threads`` before importing torch.

Conv section (benchmarks/sparse_conv_section.py). Problem: ``nn.Conv2d(in, out, 3, stride,
padding=1, bias=True)`` (torch's init) on ``x [32, in, H, W]``, float32, the weight pruned by
magnitude. Grid: ResNet-18 / VGG-style layers on 32x32 inputs, in -> out at H x W: 64 -> 64 at 32x32,
128 -> 128 at 16x16, 256 -> 256 at 14x14 (the issue's shape), 256 -> 256 at 8x8, 512 -> 512 at 4x4,
and 64 -> 128 at 32x32 with stride 2; sparsity in {0.8, 0.9, 0.95, 0.98}; ``--quick``: 64 -> 64 at
32x32 and 256 -> 256 at 14x14, sparsity 0.9 and 0.95. Contenders:

  ffops         ``ffops.nn.SparseConv2d.from_dense(conv, mask=mask)`` (``algorithm="auto"``): the
                direct sparse convolution (``torch.ops.ffops.sparse_conv2d_fwd``, no im2col) where
                ``ffops.ops.sparse_conv.direct_conv_applies`` (CPU, C++ backend), im2col elsewhere;
                the path it took is the table's "ffops path" (and ``info["ffops_path"]``)
  ffops im2col  the same layer with ``algorithm="im2col"`` (patches + the sparse SpMM kernels); CPU
                only, as on CUDA ``auto`` is im2col already
  dense         ``nn.Conv2d`` holding the masked dense weight (``SparseConv2d.to_dense()``): torch's
                convolution (oneDNN on CPU, cuDNN on CUDA)
  sparseprop    ``sparseprop.modules.SparseConv2d`` built by its ``sparsify_conv2d_auto(conv,
                input_shape)``, which picks the faster of its two vectorizing modes (recorded as
                ``info["sparseprop_vectorizing_over_on"]``); CPU only, skipped as in the linear
                section. Its weight gradient, in its own values order, is compared through a dense
                weight (``from_sparse_format_conv2d``) taken at the mask.

Methodology (benchmarks/sparse_timing.py): benchmarks/harness.py's (phases fwd / bwd / fwd+bwd
with autograd on; the same fixed-seed upstream gradient for every contender; warm-up outside the
timings; interleaved rounds rotated by one each round; gc off; median and p20-p80; CUDA events
after an L2 flush on CUDA), with three differences, because the contenders hold different
parameters and their speeds differ by up to ~100x:
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
of the bias, of every contender against dense (max |a - b| / max |b|; warning above 1e-3). In
bfloat16 the reference is a float32 dense computed once per point on the same (rounded) weight, bias,
input and upstream gradient, and the tolerance 2e-2 (sparse_report.DTYPE_TOL says why); each
contender's entry records its ``tolerance``.

Targets (MET / NOT MET at the end, and in the JSON), on the fwd+bwd medians:
  CPU  ffops >= 1.5x faster than sparseprop at every point with sparsity >= 0.8;
       ffops >= 2.5x faster than dense at sparsity 0.9, n = 4096, every batch;
       ffops not slower than dense at sparsity 0.8, n = 4096, every batch.
  GPU  ffops faster than torch csr (cuSPARSE) at every point with sparsity >= 0.8;
       ffops faster than dense (cuBLAS) at sparsity >= 0.95, n = 4096, batch 4096;
       ffops faster than dense (cuBLAS) at sparsity >= 0.9, batch 64, every n.
  These are float32 targets, judged on a float32 run; a bfloat16 run prints the same lines, labelled
  bf16, as reports ("REPORT, not judged"; ``judged: false`` in the JSON). The correctness target is
  judged in both dtypes.
  conv, CPU  ffops (SparseConv2d) >= 1.0x dense at sparsity 0.9 for 64 -> 64 at 32x32, and
             >= 1.5x dense at sparsity 0.9 for 256 -> 256 at 14x14 (batch 32, 3x3);
  conv       ffops (and ffops im2col, CPU) match dense within 1e-3 (output and grads) at every point.
Results: ``benchmarks/results/bench_sparse_<device>.json`` and ``.png`` (fwd+bwd time vs sparsity
per contender, one panel per n x batch, and the speedup over dense), and ``..._conv.png`` (the same
per conv layer shape); the JSON has ``results`` / ``summary`` / ``targets`` (linear) and
``conv_results`` / ``conv_summary`` / ``conv_targets``; the linear section's dtype is ``config.dtype`` and
each point's ``info.dtype`` (the conv section stays float32). ``--quick``, a custom grid, ``--conv-only``,
``--no-conv`` or ``--dtype bfloat16`` (``_bf16``) adds a suffix, so a smoke run (or a bfloat16 one) never
overwrites a full float32 one. ``--replot JSON`` prints the
summaries and targets of a saved (or partial) run and redraws its PNGs.
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
import importlib.metadata
import json
import time
from pathlib import Path

import torch

import ffops
from benchmarks import harness
from benchmarks import sparse_conv_section as conv_section
from benchmarks.baselines.sparseprop_layer import import_sparseprop
from benchmarks.sparse_linear_section import DTYPES, SEMI_SPARSITY, probe_csr, run_grid, triton_contender_applies
from benchmarks.sparse_report import (
    BASELINE,
    CSR,
    DENSE,
    SEMI,
    SPARSEPROP,
    TOL,
    TRITON,
    check_conv_targets,
    check_targets,
    conv_summary_table,
    plot,
    plot_conv,
    summary_rows,
    summary_table,
    tolerance,
)

SCRIPT = "bench_sparse"
NS = (1024, 4096)
BATCHES = (64, 128, 256)
CUDA_GRID = {"n": (1024, 4096, 8192), "batch": (64, 512, 4096)}  # the GPU grid
SPARSITIES = (0.5, 0.8, 0.9, 0.95, 0.98)
QUICK = {"n": (1024, 4096), "batch": (64,), "sparsity": (0.8, 0.9, 0.98)}
QUICK_CUDA = {"n": (1024, 4096), "batch": (64, 4096), "sparsity": (0.8, 0.95)}

# ---- the run ------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m benchmarks.{SCRIPT}", description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--quick", action="store_true", help="a small subset of both grids with small budgets (~1.5 min on CPU)"
    )
    sections = p.add_mutually_exclusive_group()
    sections.add_argument("--no-conv", action="store_true", help="the linear section only (no conv section)")
    sections.add_argument("--conv-only", action="store_true", help="the conv section only (no linear section)")
    p.add_argument(
        "--n", type=int, nargs="+", default=None, help="linear: in = out features (default 1024 4096; CUDA also 8192)"
    )
    p.add_argument(
        "--batch", type=int, nargs="+", default=None, help="linear: batch sizes (default 64 128 256; CUDA 64 512 4096)"
    )
    p.add_argument("--sparsity", type=float, nargs="+", default=None, help="linear: default 0.5 0.8 0.9 0.95 0.98")
    p.add_argument(
        "--dtype",
        choices=tuple(DTYPES),
        default="float32",
        help="linear: weights and inputs of every contender (default float32; the conv section stays float32). "
        "bfloat16 on CPU needs --ffops-backend reference (ffops' C++ CPU kernels take float32 / float64)",
    )
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
        help="ffops backend of the ffops contenders (default auto)",
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
        help="print the summaries and targets of a results JSON (complete or partial) and redraw its PNGs",
    )
    p.add_argument(
        "--out",
        default=None,
        help="JSON path (default benchmarks/results/bench_sparse_<device>[_suffix].json; the PNGs beside it)",
    )
    return p.parse_args(argv)


def _sections(args) -> list[str]:
    return (["linear"] if not args.conv_only else []) + (["conv"] if not args.no_conv else [])


def _linear_grid(args, cuda: bool) -> dict:
    quick = QUICK_CUDA if cuda else QUICK
    return {
        "n": args.n or (quick["n"] if args.quick else CUDA_GRID["n"] if cuda else NS),
        "batch": args.batch or (quick["batch"] if args.quick else CUDA_GRID["batch"] if cuda else BATCHES),
        "sparsity": args.sparsity or (quick["sparsity"] if args.quick else SPARSITIES),
    }


def _set_timing_defaults(args, cuda: bool) -> None:
    args.budget = args.budget if args.budget is not None else (1.0 if args.quick else 2.0 if cuda else 6.0)
    args.min_repeats = args.min_repeats if args.min_repeats is not None else (3 if args.quick else 5)
    args.min_slow = args.min_slow if args.min_slow is not None else (2 if args.quick else 4)
    args.max_repeats = args.max_repeats if args.max_repeats is not None else (200 if cuda else 100)


def _load_sparseprop(args, cuda: bool):
    """``(sparseprop.modules, None)``, or ``(None, why it is left out)``."""
    if args.no_sparseprop:
        return None, "left out (--no-sparseprop)"
    if cuda:
        return None, "CPU only"
    return import_sparseprop()


def _check_dtype(args, device: torch.device, sections: list[str]) -> None:
    """Exit with a message where the linear section's ``--dtype`` cannot run."""
    if "linear" not in sections or args.dtype == "float32":
        return
    if device.type == "cpu" and args.ffops_backend in ("auto", "cpu"):
        sys.exit(
            f"--dtype {args.dtype} --device cpu: ffops' C++ CPU kernels take float32 or float64 only. Run "
            f"--dtype {args.dtype} on --device cuda, or on CPU with --ffops-backend reference (a smoke test of "
            "the code path: its times mean nothing), or --dtype float32"
        )


def _has_cpu_kernel(op: str) -> bool:
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(op, "CPU")
    except RuntimeError:  # the op is not registered in this build
        return False


def _metadata(device: torch.device, sparseprop_modules) -> dict:
    meta = harness.metadata(device)
    meta["omp_num_threads_env"] = os.environ.get("OMP_NUM_THREADS")
    meta["sparseprop"] = _version("sparseprop") if sparseprop_modules is not None else None
    meta["ffops_available"] = ffops.available()
    meta["ffops_cpu_sparse_kernel"] = torch._C._dispatch_has_kernel_for_dispatch_key("ffops::sparse_linear_fwd", "CPU")
    meta["ffops_cpu_sparse_conv_kernel"] = _has_cpu_kernel("ffops::sparse_conv2d_fwd")
    # the dense float32 contender runs with torch's default TF32 setting; recorded, not changed
    meta["cuda_matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
    meta["float32_matmul_precision"] = torch.get_float32_matmul_precision()
    meta["cuda_matmul_allow_bf16_reduced_precision_reduction"] = (
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction
    )
    return meta


def _dtype_label(dtype: str, conv: bool) -> str:
    """The dtype for titles: e.g. "bfloat16" (with "(linear; conv float32)" when the conv section ran too)."""
    return dtype + (" (linear; conv float32)" if conv and dtype != "float32" else "")


def _print_header(
    args, meta: dict, grid: dict, conv_grid: dict | None, sparseprop_note: str | None, notes: dict
) -> None:
    """The run's settings, and warnings about the build and the machine's load (exits if ffops has no kernel)."""
    cuda = meta["device"].startswith("cuda")
    print(
        f"{SCRIPT}: {harness.machine_line(meta)}, {_dtype_label(args.dtype, conv_grid is not None)}, "
        f"torch {meta['torch']}, ffops {meta['ffops']} "
        f"(backend {args.ffops_backend}), OMP_NUM_THREADS="
        f"{meta['omp_num_threads_env']}, sparseprop {meta['sparseprop']}" + (", quick" if args.quick else "")
    )
    print(
        f"ffops.available(): {meta['ffops_available']}; C++ CPU sparse kernel: {meta['ffops_cpu_sparse_kernel']}; "
        f"C++ CPU sparse conv kernel: {meta['ffops_cpu_sparse_conv_kernel']}"
    )
    if not cuda and args.ffops_backend in ("auto", "cpu") and not meta["ffops_cpu_sparse_kernel"]:
        sys.exit(
            "ffops has no C++ CPU kernel for ffops::sparse_linear_fwd in this build (rebuild ffops), or run "
            "the pure-torch reference with --ffops-backend reference (a smoke test: its times mean nothing)"
        )
    if sparseprop_note is not None:
        print(f"NOTE: sparseprop skipped: {sparseprop_note}")
    if args.linear_sparseprop_note is not None and args.linear_sparseprop_note != sparseprop_note:
        print(f"NOTE: sparseprop skipped in the linear section: {args.linear_sparseprop_note}")
    for name, note in notes.items():
        print(f"NOTE: {name}: {note}")
    if cuda and not args.conv_only:
        print(
            f"dense float32 matmuls: torch.backends.cuda.matmul.allow_tf32={meta['cuda_matmul_allow_tf32']} "
            f"(torch's default, not changed), float32_matmul_precision={meta['float32_matmul_precision']}"
        )
    load = meta["loadavg_at_start"]
    if not cuda and load and load[0] > 0.5:
        print(
            f"WARNING: load average {load} before the run: other processes compete for the CPU "
            "and skew the timings (interleaved rounds keep the comparison fair but noisier)"
        )
    if not args.conv_only:
        print(f"grid: n {list(grid['n'])}, batch {list(grid['batch'])}, sparsity {list(grid['sparsity'])}")
    if conv_grid is not None:
        print(conv_section.describe_grid(conv_grid))
    print(
        f"budget {args.budget:g} s per point, rounds per contender >= {args.min_repeats} "
        f"(slow: {args.min_slow}), <= {args.max_repeats}"
    )
    print(
        "times: median [p20-p80] in ms; 'x ffops' = contender fwd+bwd / ffops fwd+bwd (>1: ffops faster)\n",
        flush=True,
    )


def _results_path(args, device: torch.device) -> Path:
    if args.out is not None:
        return Path(args.out)
    custom = any(v is not None for v in (args.n, args.batch, args.sparsity))
    suffix = (
        ("_quick" if args.quick else "")
        + ("_custom" if custom else "")
        + ("_conv_only" if args.conv_only else "")
        + ("_linear_only" if args.no_conv else "")
        + ("" if args.ffops_backend == "auto" else f"_{args.ffops_backend}")
        + ("" if args.dtype == "float32" else "_bf16" if args.dtype == "bfloat16" else f"_{args.dtype}")
    )
    return harness.results_path(SCRIPT, device, suffix)


def _conv_png(path: Path) -> Path:
    return path.with_name(path.stem + "_conv.png")


def _plot_title(meta: dict, threads, complete: bool, section: str = "", dtype: str = "float32") -> str:
    """The PNG's title; a section's (e.g. " conv ...") goes on a line of its own above the rest."""
    return (
        (f"{SCRIPT}{section}\n" if section else f"{SCRIPT}: ")
        + f"{meta['device_name']}, {dtype}, {threads or 'default'} threads, "
        f"fwd+bwd median; load {meta['loadavg_at_start']}" + ("" if complete else " (partial)")
    )


def _write_plots(path: Path, d: dict) -> None:
    """The PNGs of a payload ``d``: the linear one beside the JSON, the conv one as ``<stem>_conv.png``."""
    meta, cfg, complete = d["metadata"], d["config"], d.get("complete", False)
    if d["results"]:
        png = path.with_suffix(".png")
        title = _plot_title(meta, cfg["threads"], complete, dtype=cfg.get("dtype", "float32"))
        if plot(d["results"], cfg["contenders"], png, title):
            print(f"wrote {png}")
    if d.get("conv_results"):
        png = _conv_png(path)
        title = _plot_title(meta, cfg["threads"], complete, f" conv (batch {conv_section.BATCH}, 3x3)")
        if plot_conv(d["conv_results"], cfg["conv_contenders"], png, title):
            print(f"wrote {png}")


def _print_targets(targets: list, quick: bool = False) -> None:
    print("\ntargets" + (" (quick configuration: a subset of the grid)" if quick else "") + ":")
    for t in targets:
        print("  " + t.line())


def replot(path: Path) -> int:
    """Summaries, targets and PNGs of a saved run (also of a partial one: the JSON is rewritten per point)."""
    d = json.loads(path.read_text())
    cfg, meta = d["config"], d["metadata"]
    results, names = d["results"], cfg["contenders"]
    conv_results, conv_names = d.get("conv_results", []), cfg.get("conv_contenders", [])
    sections = cfg.get("sections", ["linear"])  # a run from before the conv section: linear only
    device = torch.device(meta["device"])
    counts = [f"{len(r)} {s} points" for s, r in (("linear", results), ("conv", conv_results)) if s in sections]
    print(f"{path}: {', '.join(counts)}{'' if d.get('complete') else ' (partial run)'}")
    targets = []
    if "linear" in sections:
        print(f"linear ({cfg.get('dtype', 'float32')}):\n{summary_table(results, names)}")
        note = cfg.get("linear_sparseprop_note", cfg["sparseprop_note"])
        targets += check_targets(results, device, note if SPARSEPROP not in names else None)
    if "conv" in sections:
        print(f"conv:\n{conv_summary_table(conv_results, conv_names)}")
        targets += check_conv_targets(conv_results, device)
    _print_targets(targets)
    _write_plots(path, d)
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
    sections = _sections(args)
    _check_dtype(args, device, sections)
    grid = _linear_grid(args, cuda)
    conv_grid = conv_section.conv_grid(args.quick) if "conv" in sections else None
    _set_timing_defaults(args, cuda)
    sparseprop_modules, sparseprop_note = _load_sparseprop(args, cuda)
    # the linear section's: SparseProp is float32 only (the conv section, float32, keeps it)
    linear_sparseprop = sparseprop_modules if args.dtype == "float32" else None
    args.linear_sparseprop_note = sparseprop_note
    if sparseprop_modules is not None and linear_sparseprop is None:
        args.linear_sparseprop_note = f"float32 only (--dtype {args.dtype})"
    contender_notes = {}  # {name: why it is left out (where)}, also filled as the run goes
    args.csr_note = probe_csr(device, DTYPES[args.dtype]) if "linear" in sections else None
    if args.csr_note is not None:
        contender_notes[CSR] = f"left out: {args.csr_note}"
    triton = triton_contender_applies(device, args.ffops_backend)
    semi = cuda and SEMI_SPARSITY in grid["sparsity"]
    if not cuda:
        contender_notes[SEMI] = "CUDA only"
    elif not semi:
        contender_notes[SEMI] = f"runs at sparsity {SEMI_SPARSITY} only, which this grid lacks"
    names = (
        [BASELINE]
        + ([TRITON] if triton else [])
        + [DENSE]
        + ([CSR] if args.csr_note is None else [])
        + ([SEMI] if semi else [])
        + ([SPARSEPROP] if linear_sparseprop is not None else [])
    )
    conv_names = conv_section.conv_contender_names(device, sparseprop_modules) if conv_grid else []
    meta = _metadata(device, sparseprop_modules)
    _print_header(args, meta, grid, conv_grid, sparseprop_note, contender_notes)

    path = _results_path(args, device)
    config = {
        **vars(args),
        "threads": threads,
        "sections": sections,
        "grid": {k: list(v) for k, v in grid.items()},
        "conv_grid": conv_section.grid_config(conv_grid) if conv_grid else None,
        "spread": "p20-p80",
        "contenders": names,
        "conv_contenders": conv_names,
        "sparseprop_note": sparseprop_note,
        "tolerance": TOL,
        "linear_tolerance": tolerance(args.dtype),
        "contender_notes": contender_notes,  # the same dict: notes added during the run are saved too
    }

    def payload(results, conv_results, targets=None, conv_targets=None, total=None):
        return {
            "script": SCRIPT,
            "metadata": meta,
            "config": {**config, "total_s": total},
            "complete": total is not None,
            "results": results,
            "summary": summary_rows(results, names),
            "targets": [t.__dict__ for t in targets or []],
            "conv_results": conv_results,
            "conv_summary": summary_rows(conv_results, conv_names),
            "conv_targets": [t.__dict__ for t in conv_targets or []],
        }

    def save_partial(results, conv_results=()):  # a crash or an interrupted run keeps the points done so far
        if not args.no_json:
            harness.write_json(path, payload(results, list(conv_results)))

    start = time.perf_counter()
    results, conv_results = [], []
    if "linear" in sections:
        results = run_grid(device, grid, args, linear_sparseprop, save_partial, contender_notes)
        ref = "dense" if args.dtype == "float32" else f"a float32 dense on the same {args.dtype} parameters"
        print(
            f"== summary ({args.dtype}): fwd+bwd median ms; 'x <name>' = <name> / ffops (>1: ffops faster); "
            f"'ffops diff' = worst max rel diff of ffops' output and grads vs {ref}\n"
            f"{summary_table(results, names)}\n"
        )
    if conv_grid is not None:
        on_conv_point = lambda conv_results: save_partial(results, conv_results)
        conv_results = conv_section.run_conv_grid(device, conv_grid, args, sparseprop_modules, on_conv_point)
        print(
            f"== conv summary (batch {conv_section.BATCH}, 3x3, fwd+bwd median ms; 'x <name>' = <name> / ffops; "
            f"'ffops path' = the algorithm SparseConv2d(algorithm='auto') ran)\n"
            f"{conv_summary_table(conv_results, conv_names)}\n"
        )
    total = time.perf_counter() - start

    print(f"total {total:.0f} s; load average at the end {harness.load_average()}")
    targets = (
        check_targets(results, device, args.linear_sparseprop_note if linear_sparseprop is None else None)
        if results
        else []
    )
    conv_targets = check_conv_targets(conv_results, device) if conv_grid is not None else []
    _print_targets(targets + conv_targets, args.quick)

    if not args.no_json:
        d = payload(results, conv_results, targets, conv_targets, total)
        harness.write_json(path, d)
        print(f"\nwrote {path}")
        if not args.no_plot:
            _write_plots(path, d)
    return 0


def _version(module: str) -> str | None:
    try:
        return importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
