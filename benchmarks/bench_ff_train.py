"""Benchmark of a whole Forward-Forward training step: ffops' FFLinear vs eager and torch.compile.

Run from the repository root::

    python -m benchmarks.bench_ff_train                       # CPU (2 threads) or CUDA if available
    python -m benchmarks.bench_ff_train --device cpu --quick  # tiny smoke configuration

Network 784-2000-2000 (two FF layers), batch 1000 positive + 1000 negative rows, float32, one
Adam (lr 0.03) per layer. The data is supervised FF's: 1000 random images in [0, 1) shaped like
MNIST (fixed seeds; values do not matter for speed), each overlaid once with a random label
(positive rows) and once with a different random label (negative rows), the port's
``overlay_y_on_x`` (on value: the images' maximum). Contenders, all from identical initial
weights, in one process:

  eager-port     benchmarks.baselines.ff_eager.eager_ff_step (mohammadpz/pytorch_forward_forward's
                 step: the next layer's input recomputed after the optimizer step);
  eager-fair     eager_ff_step_fair (pre-step activities handed on: one forward per layer);
  compile-fair   eager_ff_step_fair with torch.compile'd per-layer loss (optimizer step eager);
  ffops          FFLinear, as FFTrainer runs it: the first layer on ffops.nn.OverlayRows (the 1000
                 images once plus the 2000 row labels: its GEMMs run on 1000 rows, the labels enter
                 as one weight column per row), the next layers on the activity; per-layer
                 loss.backward(), Adam step, x_sumsq handed to the next layer;
  ffops-rows     the same FFLinear layers on the materialized rows cat([x_pos, x_neg]) (context:
                 the fused layer alone, without sharing the images);
  ffops[triton]  on a GPU with Triton: ffops' step on the Triton kernels instead of auto's CUDA C++
                 ones (cuBLAS GEMMs + CUDA epilogues);
  ffops+graph    on a GPU: ffops' step (forward, backward, capturable Adam) replayed from one CUDA
                 graph after three eager warm-up steps (ffops.ff.cuda_graph; FFTrainer(cuda_graph=True));
  compile-ro     on a GPU: compile-fair with mode="reduce-overhead" (torch.compile's CUDA graphs).

Metric: seconds per training step (harness.time_callables: warm-up, interleaved rounds, median
and p20-p80). Also measured: (a) all-label prediction, goodness for C=10 labels: ffops' library
path (ffops.ff.goodness_per_label on an FFNet with the same weights: the first layer as one GEMM on
B rows plus the fused label-row expansion, the upper layers on B*C rows) vs a Python loop of C
passes (ffops layers; for context, all B*C overlaid rows through every layer and the eager port's loop);
(b) bytes saved for backward, live at the peak of a training step with per-layer backward
(saved_tensors_hooks, deduplicated by storage), for depths 2, 4, 8. If ffops misses its target
over torch.compile, a torch.profiler breakdown of ffops' step is printed (and of compile's), with
the bound it implies and ffops' GEMMs timed as bare torch.mm calls on the same shapes.
Results: ``benchmarks/results/bench_ff_train_<device>[_t<threads>][_quick].json`` (``_t``: a
``--threads`` other than the default 2).
"""

import argparse
import copy
import itertools
import sys
import time

import torch

import ffops
from benchmarks import harness
from benchmarks.baselines import ff_eager
from benchmarks.harness import MIB, Target
from ffops import _backend, ff
from ffops.ff.cuda_graph import CudaGraphBackend, capturable_optimizer_groups
from ffops.memory import SavedTensorTracker
from ffops.nn import FFLinear

SCRIPT = "bench_ff_train"
BASELINE = "ffops"
C = 10  # labels


# ---- networks and steps ------------------------------------------------------------------------


def make_data(rows: int, features: int, device, seed: int) -> torch.Tensor:
    """Fixed-seed uniform [0, 1) data ``[rows, features]`` (MNIST-like pixel range)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.rand(rows, features, generator=gen).to(device)


def make_networks(sizes, device, seed: int = 0):
    """``(eager layers, ffops layers)`` with identical weights (the eager ones' fixed-seed init)."""
    torch.manual_seed(seed)
    eager = ff_eager.make_layers(sizes, device=device)
    ffops_layers = [
        FFLinear(e.in_features, e.out_features, threshold=e.threshold, eps=e.eps, device=device) for e in eager
    ]
    with torch.no_grad():
        for src, dst in zip(eager, ffops_layers):
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
    return eager, ffops_layers


def ffops_step(layers, optimizers, x: torch.Tensor | ff.OverlayRows, n_pos: int) -> list[torch.Tensor]:
    """One ffops training step: per layer one fused call on the whole batch (rows or OverlayRows),
    backward, Adam step."""
    losses, sumsq = [], None
    for layer, opt in zip(layers, optimizers):
        out = layer(x, n_pos, x_sumsq=sumsq)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.detach())
        x, sumsq = out.h, out.sumsq
    return losses


def make_batch(images: torch.Tensor, seed: int) -> ff.OverlayRows:
    """Supervised FF's batch of ``images`` ``[B, D]``: each with a random label, then with a different
    random label (the port's overlay: on value = the images' maximum outside the label features)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    y = torch.randint(0, C, (images.shape[0],), generator=gen)
    wrong = (y + torch.randint(1, C, y.shape, generator=gen)) % C
    return ff.overlay_rows(images, torch.cat([y, wrong]).to(images.device), C, overlay_on_value(images))


def build_steps(sizes, batch: ff.OverlayRows, device, compile_: bool) -> dict:
    """Zero-argument training-step callables, each on its own copy of the same initial weights."""
    eager, ffops_layers = make_networks(sizes, device)
    rows_layers = copy.deepcopy(ffops_layers)
    n_pos = batch.base.shape[0]
    x = batch.materialize()
    x_pos, x_neg = x[:n_pos], x[n_pos:]
    nets = {"eager-port": eager, "eager-fair": copy.deepcopy(eager)}
    if compile_:
        nets["compile-fair"] = copy.deepcopy(eager)
    opts = {name: ff_eager.make_optimizers(layers) for name, layers in nets.items()}
    ffops_opts, rows_opts = ff_eager.make_optimizers(ffops_layers), ff_eager.make_optimizers(rows_layers)
    steps = {
        BASELINE: lambda: ffops_step(ffops_layers, ffops_opts, batch, n_pos),
        "ffops-rows": lambda: ffops_step(rows_layers, rows_opts, x, n_pos),
        "eager-fair": lambda: ff_eager.eager_ff_step_fair(nets["eager-fair"], opts["eager-fair"], x_pos, x_neg),
        "eager-port": lambda: ff_eager.eager_ff_step(nets["eager-port"], opts["eager-port"], x_pos, x_neg),
    }
    if device.type == "cuda" and _backend.CPP_CUDA and _backend.TRITON_OK:
        triton_layers = copy.deepcopy(ffops_layers)
        triton_opts = ff_eager.make_optimizers(triton_layers)

        def triton_step():
            with ffops.use_backend("triton"):
                return ffops_step(triton_layers, triton_opts, batch, n_pos)

        steps["ffops[triton]"] = triton_step
    if device.type == "cuda":  # the whole step (forward, backward, Adam) replayed from one CUDA graph
        graph_layers = copy.deepcopy(ffops_layers)
        graph_opts = ff_eager.make_optimizers(graph_layers)
        for opt in graph_opts:
            capturable_optimizer_groups(opt, device)
        steps["ffops+graph"] = graphed(lambda: ffops_step(graph_layers, graph_opts, batch, n_pos), device)
    if compile_:
        layer_loss = ff_eager.compiled_layer_loss()
        steps["compile-fair"] = lambda: ff_eager.eager_ff_step_fair(
            nets["compile-fair"], opts["compile-fair"], x_pos, x_neg, layer_loss=layer_loss
        )
        if device.type == "cuda":  # torch.compile's own CUDA graphs of the layer math
            nets["compile-ro"] = copy.deepcopy(eager)
            opts["compile-ro"] = ff_eager.make_optimizers(nets["compile-ro"])
            ro_loss = ff_eager.compiled_layer_loss(mode="reduce-overhead")
            steps["compile-ro"] = lambda: ff_eager.eager_ff_step_fair(
                nets["compile-ro"], opts["compile-ro"], x_pos, x_neg, layer_loss=ro_loss
            )
    return steps


def graphed(step, device, warmup: int = 3):
    """``step`` (capturable: fixed inputs, optimizers from capturable_optimizer_groups) as a callable
    whose first ``warmup`` calls run it eagerly on a side stream and whose next call captures it in a
    CUDA graph and replays it, as every later call does: every call is one training step."""
    backend, state = CudaGraphBackend(device), {"calls": 0, "graph": None, "out": None}

    def call():
        if state["calls"] < warmup:
            state["calls"] += 1
            return backend.eager(step)
        if state["graph"] is None:
            state["graph"] = backend.new_graph(())
            state["out"] = backend.capture(state["graph"], step)
        backend.replay(state["graph"])
        return state["out"]

    return call


def first_step_check(steps: dict, device) -> tuple[dict, dict, list[str]]:
    """Run every contender's first step (from identical weights); per-layer losses, the duration of
    that first call (compilation included) and the mismatches against ffops' losses."""
    losses, first_s = {}, {}
    for name, step in steps.items():
        start = time.perf_counter()
        losses[name] = [float(v) for v in step()]
        harness._sync(device)
        first_s[name] = time.perf_counter() - start
    ref, bad = losses[BASELINE], []
    for name, ls in losses.items():
        # the port's later layers see inputs recomputed after the step: only layer 1 must agree
        check = ls[:1] if name == "eager-port" else ls
        for i, (a, b) in enumerate(zip(check, ref)):
            if abs(a - b) > 1e-4 * max(1.0, abs(b)):
                bad.append(f"{name} layer {i + 1}: {a:.7f} vs ffops {b:.7f}")
    return losses, first_s, bad


# ---- (a) all-label prediction ------------------------------------------------------------------


def overlay(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The port's ``overlay_y_on_x``: zero the first C features, put ``x.max()`` at the label's."""
    x = x.clone()
    x[:, :C] = 0.0
    x[torch.arange(x.shape[0], device=x.device), labels] = x.max()
    return x


def ffops_goodness(layers, x: torch.Tensor) -> torch.Tensor:
    """Goodness summed over layers, one inference chain (``layer(x, None)``) over the rows of x."""
    total, sumsq = 0, None
    for layer in layers:
        out = layer(x, None, x_sumsq=sumsq)
        total, x, sumsq = total + out.goodness, out.h, out.sumsq
    return total


def make_ffnet(layers) -> ff.FFNet:
    """An ffops.ff.FFNet holding copies of ``layers``' weights (FFLinear's defaults: l2 input norm,
    mean goodness; same eps). Its thresholds are 0, so that its label scores, the sum over layers of
    ``G - threshold``, are the summed goodness itself (the same numbers as the other contenders',
    without the float32 cancellation of subtracting and adding back the thresholds)."""
    sizes = [layers[0].in_features] + [layer.out_features for layer in layers]
    net = ff.FFNet(
        sizes,
        num_classes=C,
        threshold=0.0,
        norm="l2",
        eps=layers[0].eps,
        init="torch",
        device=layers[0].weight.device,
    )
    with torch.no_grad():
        for src, dst in zip(layers, net.layers):
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
    return net


def overlay_on_value(x: torch.Tensor) -> float:
    """The on value :func:`overlay` writes: the maximum of x once its label features are zeroed."""
    return max(float(x[:, C:].max()), 0.0)


def predict_library(net: ff.FFNet, x, on: float):
    """ffops' all-label prediction, ``ffops.ff.goodness_per_label`` (``net`` from :func:`make_ffnet`);
    ``[B, C]`` goodness."""
    return ff.goodness_per_label(net, x, on_value=on)


def predict_rows(layers, x):
    """All C labels in one pass of B*C overlaid rows through every layer; ``[B, C]`` goodness."""
    b = x.shape[0]
    labels = torch.arange(C, device=x.device).repeat(b)
    return ffops_goodness(layers, overlay(x.repeat_interleave(C, 0), labels)).view(b, C)


def predict_loop(layers, x):
    """C separate passes, a Python loop over labels; ``[B, C]`` goodness."""
    return torch.stack(
        [ffops_goodness(layers, overlay(x, torch.full((x.shape[0],), c, device=x.device))) for c in range(C)],
        1,
    )


def predict_eager_port(layers, x):
    """The port's ``predict`` loop (eager layers), returning the ``[B, C]`` goodness."""
    per_label = []
    for c in range(C):
        h, g = overlay(x, torch.full((x.shape[0],), c, device=x.device)), 0
        for layer in layers:
            h = layer(h)
            g = g + h.pow(2).mean(1)
        per_label.append(g)
    return torch.stack(per_label, 1)


def bench_prediction(sizes, batch, device, budget, min_repeats) -> tuple[dict, float]:
    """Time the all-label goodness (no_grad): ``batched`` (the library path), ``batched-rows``, the
    loop over labels and the eager port's loop; the max relative diff to the loop's goodness too."""
    eager, ffops_layers = make_networks(sizes, device, seed=1)
    net = make_ffnet(ffops_layers)
    x = make_data(batch, sizes[0], device, seed=7)
    on = overlay_on_value(x)
    fns = {
        "batched": lambda: predict_library(net, x, on),
        "batched-rows": lambda: predict_rows(ffops_layers, x),
        "loop": lambda: predict_loop(ffops_layers, x),
        "eager-port-loop": lambda: predict_eager_port(eager, x),
    }
    with torch.no_grad():
        ref = fns["loop"]()
        diff = max(float((fns[k]() - ref).abs().max() / ref.abs().max()) for k in fns if k != "loop")
        r = harness.time_callables(
            "all-label prediction",
            fns,
            device,
            metric="predict",
            info={"B": batch, "C": C, "sizes": list(sizes)},
            budget_s=budget,
            min_repeats=min_repeats,
        )
    return r, diff


# ---- (b) saved-for-backward bytes --------------------------------------------------------------


def bench_saved(width, in_features, batch, depths, device) -> list[dict]:
    """Saved-for-backward bytes of one training step (per-layer backward), ffops vs eager-fair,
    per depth: ``<name>_peak`` and ``<name>_total`` (see ffops.memory.SavedTensorTracker)."""
    rows = []
    for depth in depths:
        sizes = [in_features] + [width] * depth
        eager, ffops_layers = make_networks(sizes, device, seed=2)
        x = make_data(2 * batch, in_features, device, seed=3)
        row = {"depth": depth, "sizes": sizes}
        with SavedTensorTracker() as ours:
            ffops_step(ffops_layers, ff_eager.make_optimizers(ffops_layers), x, batch)
        with SavedTensorTracker() as theirs:
            ff_eager.eager_ff_step_fair(eager, ff_eager.make_optimizers(eager), x[:batch], x[batch:])
        for name, tr in ((BASELINE, ours), ("eager-fair", theirs)):
            row[name + "_peak"], row[name + "_total"] = tr.peak, tr.total
        rows.append(row)
    return rows


# ---- profile -----------------------------------------------------------------------------------


def profile_breakdown(step, steps: int = 2, repeats: int = 3) -> dict:
    """torch.profiler over ``steps`` calls of ``step``, in ms per step: GEMMs (aten::mm / addmm self
    time, also inside ffops' ops), the fused elementwise work (self time of ffops::* ops and of the
    non-GEMM aten ops they call; of inductor's compiled graphs, whose C++ kernels are not profiled
    events), other aten ops (loss math, ...), the optimizer (Adam step and zero_grad, all under
    them), and the rest of the wall time (Python, dispatcher, autograd engine, profiler). Of
    ``repeats`` profiles, the one with the least wall time (the least disturbed) is kept."""
    from torch.profiler import ProfilerActivity, profile

    step()
    best = None
    for _ in range(repeats):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            for _ in range(steps):
                step()
            wall = time.perf_counter() - start
        if best is None or wall < best[1]:
            best = (prof, wall)
    prof, wall = best
    # ffops' custom ops (their autograd wrapper's event holds the forward epilogue), inductor graphs
    fused = ("ffops::", "GeneratedBackwardFor_ffops", "## Call CompiledFxGraph")
    cats = dict.fromkeys(("GEMM", "fused (ffops / inductor)", "other ops", "optimizer"), 0.0)
    for e in prof.events():
        chain, p = [], e.cpu_parent
        while p is not None:
            chain.append(p.name)
            p = p.cpu_parent
        if any(n.startswith("Optimizer.") for n in chain):
            continue
        if e.name.startswith("Optimizer."):
            cats["optimizer"] += e.cpu_time_total
        elif e.name in ("aten::mm", "aten::addmm", "aten::bmm"):
            cats["GEMM"] += e.self_cpu_time_total
        elif e.name.startswith(fused) or any(n.startswith(fused) for n in chain):
            cats["fused (ffops / inductor)"] += e.self_cpu_time_total
        elif e.name.startswith("aten::"):
            cats["other ops"] += e.self_cpu_time_total
    out = {k: v / 1e3 / steps for k, v in cats.items()}  # us -> ms per step
    out["python/dispatch/autograd (rest)"] = wall * 1e3 / steps - sum(out.values())
    out["wall (profiled)"] = wall * 1e3 / steps
    return out


# ---- reporting ---------------------------------------------------------------------------------


def format_times(result: dict, baseline: str) -> str:
    """Table of a :func:`harness.time_callables` result; ``x base`` = contender / baseline median
    (the min is shown too: on a shared machine it is the least disturbed sample)."""
    metric = result["metric"]
    base = harness.median(result, baseline, metric)
    header = ["contender", f"{metric} ms median [p20-p80]", "min ms", "first call s", f"x {baseline}"]
    rows = [
        [
            c["name"],
            harness._fmt_time(c["phases"][metric]),
            f"{c['phases'][metric]['min_s'] * 1e3:.3g}",
            f"{c.get('first_step_s', c['first_call_s']):.2f}",
            f"{c['phases'][metric]['median_s'] / base:.2f}",
        ]
        for c in result["contenders"]
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
    info = ", ".join(f"{k}={v}" for k, v in result["info"].items())
    title = f"== {result['case']} ({info}), {result['rounds']} rounds, process CPU/wall {result['cpu_per_wall']:.2f}"
    return "\n".join([title, line(header), line(["-" * w for w in widths]), *map(line, rows)])


def speedup(result: dict, other: str, name: str, stat: str = "median_s") -> float:
    """How many times faster ``name`` is than ``other`` (``stat``: ``median_s`` or ``min_s``)."""
    phase = result["metric"]
    return (
        harness.contender(result, other)["phases"][phase][stat] / harness.contender(result, name)["phases"][phase][stat]
    )


def check_targets(step_r, pred_r, saved, compiled: bool) -> list[Target]:
    """The targets, on medians; the ratio of the minima (least disturbed samples) alongside."""

    def target(text, r, other, name, goal):
        s = speedup(r, other, name)
        return Target(text, s >= goal, f"{s:.2f}x (ratio of the minima {speedup(r, other, name, 'min_s'):.2f}x)")

    targets = [
        target("ffops training step >= 2x faster than the eager (fair) step", step_r, "eager-fair", BASELINE, 2),
        target("(context) ffops vs the port-faithful eager step", step_r, "eager-port", BASELINE, 2),
    ]
    if compiled:
        targets.append(
            target(
                "ffops training step >= 1.3x faster than torch.compile (fair step)",
                step_r,
                "compile-fair",
                BASELINE,
                1.3,
            )
        )
    targets += [
        target(
            "all-label prediction: batched pass >= 2x faster than the ffops loop over labels",
            pred_r,
            "loop",
            "batched",
            2,
        ),
        target("(context) batched pass vs the eager port's loop", pred_r, "eager-port-loop", "batched", 2),
    ]
    peaks = [r["ffops_peak"] for r in saved]
    targets.append(
        Target(
            "ffops peak saved-for-backward bytes do not grow with depth (2, 4, 8)",
            max(peaks) <= min(peaks),
            " / ".join(f"{p / MIB:.1f}" for p in peaks) + " MiB",
        )
    )
    return targets


def gemm_shapes(sizes, batch: int) -> list[tuple[int, int, int]]:
    """``(m, k, n)`` of the GEMMs in ffops' training step: the first layer on the ``batch`` shared images
    (forward without the C label features, weight gradient over all features), every later layer on
    the ``2 * batch`` rows (forward and weight gradient; no layer needs its input's gradient)."""
    shapes = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        rows = batch if i == 0 else 2 * batch
        shapes += [(rows, fan_in - C if i == 0 else fan_in, fan_out), (fan_out, rows, fan_in)]
    return shapes


def time_gemms_alone(sizes, batch: int, device, repeats: int = 5) -> float:
    """Seconds (median) of ffops' step's GEMMs as bare ``torch.mm`` calls on random operands: what this
    machine's BLAS needs for the step's FLOPs, nothing else."""
    ops = [(torch.rand(m, k, device=device), torch.rand(k, n, device=device)) for m, k, n in gemm_shapes(sizes, batch)]

    def run():
        for a, b in ops:
            torch.mm(a, b)

    run()
    samples = []
    for _ in range(repeats):
        harness._sync(device)
        start = time.perf_counter()
        run()
        harness._sync(device)
        samples.append(time.perf_counter() - start)
    return sorted(samples)[len(samples) // 2]


def report_profiles(steps: dict, n: int, step_r: dict, gemm_alone_s: float) -> dict:
    """Profile ffops, compile-fair and eager-fair steps; print the breakdowns and the Amdahl bound:
    the contender's unprofiled median step over ffops' GEMM + optimizer time (ffops' speedup if all
    its other work were free, the optimizer being the same work in every contender). Next to it, the
    same GEMMs as bare torch.mm calls: if they take as long, the GEMMs run at this machine's BLAS
    rate and only fewer FLOPs would lower the bound."""
    profiles = {name: profile_breakdown(steps[name], n) for name in (BASELINE, "compile-fair", "eager-fair")}
    floor = profiles[BASELINE]["GEMM"] + profiles[BASELINE]["optimizer"]
    for name, prof in profiles.items():
        bound = ""
        if name != BASELINE:
            prof["bound_x"] = harness.median(step_r, name, "step") * 1e3 / floor
            bound = f"  => ffops at most {prof['bound_x']:.2f}x faster (unprofiled median / ffops GEMM + optimizer)"
        print(f"  {name:13s} " + ", ".join(f"{k} {v:.1f}" for k, v in prof.items() if k != "bound_x") + bound)
    profiles[BASELINE]["GEMM alone"] = gemm_alone_s * 1e3
    print(
        f"  ffops' GEMMs as bare torch.mm calls on the same shapes: {gemm_alone_s * 1e3:.1f} ms "
        f"(in its step: {profiles[BASELINE]['GEMM']:.1f} ms)"
    )
    return profiles


# ---- main --------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m benchmarks.{SCRIPT}", description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="tiny network and budgets: a smoke test in seconds")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: 2 on CPU)")
    p.add_argument("--budget", type=float, default=None, help="seconds of timed rounds (default 60, quick 0.5)")
    p.add_argument("--min-repeats", type=int, default=None, help="rounds at least (default 7, quick 3)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile contender")
    p.add_argument("--no-json", action="store_true", help="print only, write no results file")
    return p.parse_args(argv)


def main(argv=None) -> int:
    t_start = time.perf_counter()
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here")
    threads = args.threads if args.threads is not None else (2 if device.type == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    budget = args.budget if args.budget is not None else (0.5 if args.quick else 60.0)
    min_repeats = args.min_repeats if args.min_repeats is not None else (3 if args.quick else 7)
    in_f, width, batch = (784, 64, 32) if args.quick else (784, 2000, 1000)
    sizes = [in_f, width, width]

    meta = harness.metadata(device)
    print(
        f"{SCRIPT}: {harness.machine_line(meta)}, float32, torch {meta['torch']}, ffops {meta['ffops']}"
        + (", quick" if args.quick else "")
    )
    load = meta["loadavg_at_start"]
    if device.type == "cpu" and load and load[0] > 0.5:
        print(f"WARNING: load average {load} before the run: other processes compete for the CPU")
    print(
        f"network {'-'.join(map(str, sizes))}, batch {batch}+{batch}, Adam lr {ff_eager.LR}; "
        "times: median [p20-p80] ms; 'x ffops' = contender / ffops (>1: ffops faster)\n"
    )

    steps = build_steps(sizes, make_batch(make_data(batch, in_f, device, seed=0), seed=4), device, not args.no_compile)
    losses, first_s, bad = first_step_check(steps, device)
    print("first-step loss per layer (identical initial weights):")
    for name, ls in losses.items():
        note = "  (layers > 1 differ by design: inputs recomputed after the step)" if name == "eager-port" else ""
        print(f"  {name:13s} " + "  ".join(f"{v:.7f}" for v in ls) + note)
    print("  sanity: " + ("all agree with ffops (rel 1e-4)" if not bad else "MISMATCH: " + "; ".join(bad)) + "\n")

    step_r = harness.time_callables(
        "training step",
        steps,
        device,
        metric="step",
        budget_s=budget,
        min_repeats=min_repeats,
        info={"sizes": sizes, "batch": f"{batch}+{batch}"},
    )
    for c in step_r["contenders"]:
        c["first_step_s"], c["first_step_losses"] = first_s[c["name"]], losses[c["name"]]
    print(format_times(step_r, BASELINE) + "\n", flush=True)

    pred_r, pred_diff = bench_prediction(sizes, batch, device, budget / 3, min_repeats)
    print(format_times(pred_r, "batched"))
    print(f"  max rel diff of the [B, C] goodness vs the ffops loop: {pred_diff:.1e}\n", flush=True)

    saved = bench_saved(width, in_f, batch, (2, 4, 8), device)
    print(
        f"== saved for backward per training step (MiB; width {width}, batch {batch}+{batch}): peak alive "
        "with per-layer backward; total = all layers' (what one whole-network backward would hold)"
    )
    print("  depth  ffops peak  ffops total  eager-fair peak  eager-fair total")
    for r in saved:
        print(
            f"  {r['depth']:5d} {r['ffops_peak'] / MIB:11.1f} {r['ffops_total'] / MIB:12.1f} "
            f"{r['eager-fair_peak'] / MIB:16.1f} {r['eager-fair_total'] / MIB:17.1f}"
        )
    print(flush=True)

    targets = check_targets(step_r, pred_r, saved, not args.no_compile)
    print("targets (medians)" + (" (quick configuration: not meaningful)" if args.quick else "") + ":")
    for t in targets:
        print("  " + t.line())
    if threads and step_r["cpu_per_wall"] < 0.75 * threads:
        print(
            f"  WARNING: this process got {step_r['cpu_per_wall']:.2f} CPUs of {threads} while timing the steps: "
            "other processes took the cores; medians are inflated and their ratios distorted (the minima are "
            "the least disturbed samples)"
        )

    profiles = {}
    if not args.no_compile and speedup(step_r, "compile-fair", BASELINE) < 1.3:
        print(
            "\nffops < 1.3x torch.compile: where the time goes (torch.profiler, ms per step; the wall time "
            "includes the profiler's overhead):"
        )
        profiles = report_profiles(steps, 1 if args.quick else 2, step_r, time_gemms_alone(sizes, batch, device))

    elapsed = time.perf_counter() - t_start
    print(f"\ntotal run time: {elapsed:.0f} s")
    if not args.no_json:
        payload = {
            "script": SCRIPT,
            "metadata": meta,
            "config": {
                **vars(args),
                "threads": threads,
                "budget_s": budget,
                "min_repeats": min_repeats,
                "sizes": sizes,
                "batch": batch,
                "labels": C,
                "lr": ff_eager.LR,
                "eps": ff_eager.EPS,
                "threshold": ff_eager.THRESHOLD,
                "spread": "p20-p80",
            },
            "first_step_check": {"losses": losses, "mismatches": bad},
            "results": [step_r, pred_r],
            "prediction_max_rel_diff": pred_diff,
            "saved_bytes": saved,
            "profile_ms_per_step": profiles,
            "targets": [t.__dict__ for t in targets],
            "run_time_s": elapsed,
        }
        suffix = ("" if args.threads in (None, 2) else f"_t{threads}") + ("_quick" if args.quick else "")
        path = harness.write_json(harness.results_path(SCRIPT, device, suffix), payload)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
