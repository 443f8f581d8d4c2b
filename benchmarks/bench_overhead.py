"""Per-call host overhead of ffops' ops, layer by layer, on tiny tensors (no kernel is busy).

On the H100 of 2026-11-27 every ffops op cost ~0.3 ms forward and ~0.5 ms backward whatever its
size (benchmarks/results/gpu_session_h100_bench.log). This splits one call into the layers it
passes through, for each backend built for the device, next to torch's own op:

  native     torch's own counterpart (F.gelu, F.silu, F.layer_norm, F.rms_norm; for goodness and
             ff_linear, the same math in torch ops)
  public     the ffops function: argument checks, backend choice, the dispatcher op, C++ autograd
  op         the kernel operator alone (under no_grad: no autograd, no public checks)
  launcher   Triton backend only: the Python launcher function alone (config + kernel launch)

Microseconds per forward (no_grad) and per forward + backward (from fixed upstream gradients, the
same for every contender), each the median over rounds of ``--calls`` calls with one synchronize per
round; the contenders of an op run interleaved, round by round (benchmarks.harness.time_callables),
so the drift of a noisy machine hits them alike. The tensors are tiny, so this is host time.

Target (issue 14, CPU): the public fwd+bwd of every memory op (regelu2, resilu2, fewbit, ms_layernorm,
ms_rmsnorm) at most 1.2x its native counterpart; the last lines say which meet it. JSON:
``benchmarks/results/bench_overhead_<device>.json``.

    python -m benchmarks.bench_overhead [--device cuda] [--calls 200] [--budget 3]
"""

import argparse
import sys

import torch
import torch.nn.functional as F

import ffops
from benchmarks import harness
from ffops import _backend
from ffops.ops import ff_linear, goodness, ms_norm, packed_act

ROWS, FEATURES = 16, 64
EPS = 1e-5
MEMORY_OPS = ("regelu2", "resilu2", "fewbit", "ms_layernorm", "ms_rmsnorm")
TARGET = 1.2  # public fwd+bwd over native, memory ops, CPU


def _repeated(fn, calls: int):
    def run():
        for _ in range(calls):
            fn()

    return run


def _fwd_bwd(fn, leaves):
    """Forward, then backward from fixed upstream gradients (contiguous, drawn once, as
    benchmarks.harness does): no extra op such as a sum and its expanded gradient is timed."""
    grads = [torch.randn_like(o) for o in _as_tuple(fn()) if o.requires_grad]

    def run():
        torch.autograd.backward([o for o in _as_tuple(fn()) if o.requires_grad], grads)
        for t in leaves:
            t.grad = None

    return run


def _as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def _no_grad(fn):
    def run():
        with torch.no_grad():
            return fn()

    return run


def _cases(device):
    """(name, leaves, native fn, public fn, {kernel set: op fn}, triton launcher fn)."""
    x = torch.randn(ROWS, FEATURES, device=device).requires_grad_()
    w = (torch.randn(FEATURES, FEATURES, device=device) / FEATURES**0.5).requires_grad_()
    b = torch.zeros(FEATURES, device=device, requires_grad=True)
    scale = torch.rand(ROWS, device=device) + 0.5
    n_pos = ROWS // 2

    def native_ff_linear():
        h = torch.relu(F.linear(x * scale[:, None], w, b))
        return h.detach(), h.square().sum(1)  # like ff_linear: the gradient flows through sumsq

    def packed_case(name, native, public, fn, table, bits):
        """A packed activation's case: its kernel ops and launcher on ``fn``'s index and ``table``."""
        args = (packed_act.FUNCTIONS.index(fn), list(table[0]), list(table[1]), bits)
        ops = {k: (lambda v=v: v.packed_act_fwd(x, *args)) for k, v in packed_act.KERNELS.items()}
        return (name, [x], native, public, ops, lambda tk: tk.packed_act.packed_act_fwd(x, *args))

    return [
        packed_case("regelu2", lambda: F.gelu(x), lambda: ffops.regelu2(x), "gelu", packed_act.REGELU2, 2),
        packed_case("resilu2", lambda: F.silu(x), lambda: ffops.resilu2(x), "silu", packed_act.RESILU2, 2),
        packed_case(
            "fewbit",
            lambda: F.gelu(x),
            lambda: ffops.fewbit(x, "gelu", 3),
            "gelu",
            packed_act.shipped_table("gelu", 3),
            3,
        ),
        (
            "ms_layernorm",
            [x],
            lambda: F.layer_norm(x, (FEATURES,), eps=EPS),
            lambda: ffops.ms_layernorm(x, EPS),
            {k: (lambda v=v: v.ms_norm_fwd(x, EPS, True, None)) for k, v in ms_norm.KERNELS.items()},
            lambda tk: tk.ms_norm.ms_norm_fwd(x, EPS, True, None),
        ),
        (
            "ms_rmsnorm",
            [x],
            lambda: F.rms_norm(x, (FEATURES,), eps=EPS),
            lambda: ffops.ms_rmsnorm(x, EPS),
            {k: (lambda v=v: v.ms_norm_fwd(x, EPS, False, None)) for k, v in ms_norm.KERNELS.items()},
            lambda tk: tk.ms_norm.ms_norm_fwd(x, EPS, False, None),
        ),
        (
            "goodness",
            [x],
            lambda: x.square().sum(1),
            lambda: ffops.goodness(x),
            {k: (lambda v=v: v.goodness_fwd(x, 1.0)) for k, v in goodness.KERNELS.items()},
            lambda tk: tk.goodness.goodness_fwd(x, 1.0),
        ),
        (
            "ff_linear",
            [x, w, b],
            native_ff_linear,
            lambda: ffops.ff_linear(x, w, b, x_scale=scale, n_pos=n_pos),
            {k: (lambda v=v: v.ff_linear_fwd(x, scale, w, b, n_pos)) for k, v in ff_linear.KERNELS.items()},
            lambda tk: tk.ff_linear.ff_linear_fwd(x, scale, w, b, n_pos),
        ),
    ]


def _backends(device) -> list[str]:
    avail = ffops.available()
    names = ["cpu"] if device.type == "cpu" else ["cuda", "triton"]
    if device.type == "cpu" and _backend.TRITON_INTERPRET:
        names.append("triton")
    return [n for n in names if avail.get(n)]


def _in_backend(backend: str, fn):
    def run():
        with ffops.use_backend(backend):
            fn()

    return run


def run(device, calls: int, budget_s: float, ops: list[str]) -> list[dict]:
    """One row per (op, layer): ``fwd_us`` and ``fwdbwd_us`` (None where not measured)."""
    rows = []
    for name, leaves, native, public, kernel_ops, launcher in _cases(device):
        if name not in ops:
            continue
        fwd = {"native": native}
        both = {"native": _fwd_bwd(native, leaves)}
        for backend in _backends(device):
            # use_backend wraps a whole round of calls: its enter / exit is not in the per-call time
            fwd[f"public [{backend}]"] = (backend, public)
            both[f"public [{backend}]"] = (backend, _fwd_bwd(public, leaves))
            key = "triton" if backend == "triton" else "cpp"
            if key in kernel_ops:
                fwd[f"op [{backend}]"] = (backend, kernel_ops[key])
            if backend == "triton":
                from ffops import kernels as tk

                fwd["launcher [triton]"] = (backend, lambda launcher=launcher: launcher(tk))

        def timed(fns, grad):
            blocks = {}
            for layer, fn in fns.items():
                backend, fn = fn if isinstance(fn, tuple) else (None, fn)
                block = _repeated(fn if grad else _no_grad(fn), calls)
                blocks[layer] = block if backend is None else _in_backend(backend, block)
            result = harness.time_callables(name, blocks, device, budget_s=budget_s, min_repeats=5, warmup=2)
            return {layer: harness.median(result, layer, "call") / calls * 1e6 for layer in fns}

        fwd_us, both_us = timed(fwd, False), timed(both, True)
        for layer in fwd:
            rows.append({"op": name, "layer": layer, "fwd_us": fwd_us[layer], "fwdbwd_us": both_us.get(layer)})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--calls", type=int, default=200, help="calls per timed round (default 200)")
    p.add_argument("--budget", type=float, default=3.0, help="seconds of rounds per op and phase (default 3)")
    p.add_argument("--ops", default=",".join((*MEMORY_OPS, "goodness", "ff_linear")), help="comma-separated")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    meta = harness.metadata(device)
    print(
        f"bench_overhead: {harness.machine_line(meta)}, torch {torch.__version__}, inputs [{ROWS}, {FEATURES}] "
        "float32; us per call (median of interleaved rounds)"
    )
    rows = run(device, args.calls, args.budget, args.ops.split(","))
    header = f"{'op':13s} {'layer':18s} {'fwd us':>8s} {'fwd+bwd us':>11s}"
    print(f"{header} {'fwd x native':>12s} {'fwd+bwd x native':>16s}")
    native = {r["op"]: r for r in rows if r["layer"] == "native"}
    for r in rows:
        n = native[r["op"]]
        r["fwd_x_native"] = r["fwd_us"] / n["fwd_us"]
        r["fwdbwd_x_native"] = None if r["fwdbwd_us"] is None else r["fwdbwd_us"] / n["fwdbwd_us"]
        both = "-" if r["fwdbwd_us"] is None else f"{r['fwdbwd_us']:.1f}"
        both_x = "-" if r["fwdbwd_x_native"] is None else f"{r['fwdbwd_x_native']:.2f}"
        print(f"{r['op']:13s} {r['layer']:18s} {r['fwd_us']:8.1f} {both:>11s} {r['fwd_x_native']:12.2f} {both_x:>16s}")
    verdicts = []
    if device.type == "cpu":
        for r in rows:
            if r["op"] in MEMORY_OPS and r["layer"] == "public [cpu]":
                met = r["fwdbwd_x_native"] <= TARGET
                verdicts.append({"op": r["op"], "fwdbwd_x_native": r["fwdbwd_x_native"], "met": met})
        if verdicts:
            verdict = "MET" if all(v["met"] for v in verdicts) else "MISSED"
            if len(verdicts) < len(MEMORY_OPS):
                verdict = "not judged: not every memory op was run"
            print(
                f"target: public fwd+bwd <= {TARGET}x native for every memory op: "
                + ", ".join(f"{v['op']} {v['fwdbwd_x_native']:.2f}x" for v in verdicts)
                + f" -> {verdict}"
            )
    ops = args.ops.split(",")
    payload = {"meta": meta, "calls": args.calls, "ops": ops, "rows": rows, "target": verdicts}
    # a run of some ops only does not overwrite the whole table
    suffix = "" if set(ops) >= {*MEMORY_OPS, "goodness", "ff_linear"} else "_partial"
    print(f"wrote {harness.write_json(harness.results_path('bench_overhead', device, suffix), payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
