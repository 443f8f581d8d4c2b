"""Per-call host overhead of ffops' ops, layer by layer, on tiny tensors (no kernel is busy).

On the H100 of 2026-11-27 every ffops op cost ~0.3 ms forward and ~0.5 ms backward whatever its
size (benchmarks/results/gpu_session_h100_bench.log). This splits one call into the layers it
passes through, for each backend built for the device, next to the same math in plain torch:

  eager      the same math in torch ops (what a Python-level op competes with)
  public     the ffops function: argument checks, backend choice, torch.library op, autograd
  op         the torch.library kernel op alone (under no_grad: no autograd, no public checks)
  launcher   Triton backend only: the Python launcher function alone (config + kernel launch)

Microseconds per forward (no_grad) and per forward + backward, each the median of rounds of many
calls with one synchronize per round: the tensors are tiny, so this is host time.

    python -m benchmarks.bench_overhead [--device cuda] [--rounds 7] [--calls 200]
"""

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import ffops
from ffops import _backend
from ffops.ops import ff_linear, goodness, ms_norm

ROWS, FEATURES = 16, 64
EPS = 1e-5


def _per_call_us(fn, device, rounds: int, calls: int) -> float:
    for _ in range(5):
        fn()
    samples = []
    for _ in range(rounds):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(samples)


def _fwd_bwd(fn, leaves):
    def run():
        out = fn()
        sum(o.sum() for o in (out if isinstance(out, tuple) else (out,)) if o.requires_grad).backward()
        for t in leaves:
            t.grad = None

    return run


def _cases(device):
    """(name, leaves, eager fn, public fn, {kernels key: op fn under no_grad}, triton launcher fn)."""
    x = torch.randn(ROWS, FEATURES, device=device).relu_().requires_grad_()
    w = (torch.randn(FEATURES, FEATURES, device=device) / FEATURES**0.5).requires_grad_()
    b = torch.zeros(FEATURES, device=device, requires_grad=True)
    scale = torch.rand(ROWS, device=device) + 0.5
    n_pos = ROWS // 2

    def eager_linear():
        h = torch.relu(F.linear(x * scale[:, None], w, b))
        return h.detach(), h.square().sum(1)  # like ff_linear: the gradient flows through sumsq

    cases = [
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
            eager_linear,
            lambda: ffops.ff_linear(x, w, b, x_scale=scale, n_pos=n_pos),
            {k: (lambda v=v: v.ff_linear_fwd(x, scale, w, b, n_pos)) for k, v in ff_linear.KERNELS.items()},
            lambda tk: tk.ff_linear.ff_linear_fwd(x, scale, w, b, n_pos),
        ),
        (
            "ms_layernorm",
            [x],
            lambda: F.layer_norm(x, (FEATURES,), eps=EPS),
            lambda: ffops.ms_layernorm(x, EPS),
            {k: (lambda v=v: v.ms_norm_fwd(x, EPS, True, None)) for k, v in ms_norm.KERNELS.items()},
            lambda tk: tk.ms_norm.ms_norm_fwd(x, EPS, True),
        ),
    ]
    return cases


def _backends(device) -> list[str]:
    avail = ffops.available()
    names = ["cpu"] if device.type == "cpu" else ["cuda", "triton"]
    if device.type == "cpu" and _backend.TRITON_INTERPRET:
        names.append("triton")
    return [n for n in names if avail.get(n)]


def run(device, rounds: int, calls: int) -> list[tuple]:
    rows = []
    backends = _backends(device)
    for name, leaves, eager, public, ops, launcher in _cases(device):

        def measure(fn, grad):
            if grad:
                return _per_call_us(_fwd_bwd(fn, leaves), device, rounds, calls)
            with torch.no_grad():
                return _per_call_us(fn, device, rounds, calls)

        rows.append((name, "eager", measure(eager, False), measure(eager, True)))
        for backend in backends:
            with ffops.use_backend(backend):
                rows.append((name, f"public [{backend}]", measure(public, False), measure(public, True)))
                key = "triton" if backend == "triton" else "cpp"
                if key in ops:
                    rows.append((name, f"op [{backend}]", measure(ops[key], False), None))
                if backend == "triton":
                    from ffops import kernels as tk

                    rows.append((name, "launcher [triton]", measure(lambda: launcher(tk), False), None))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=200)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"bench_overhead: {name}, torch {torch.__version__}, inputs [{ROWS}, {FEATURES}] float32; "
        "us per call (median of rounds)"
    )
    rows = run(device, args.rounds, args.calls)
    print(f"{'op':13s} {'layer':18s} {'fwd us':>8s} {'fwd+bwd us':>11s} {'x eager fwd':>11s}")
    eager_fwd = {}
    for op, layer, fwd, fwdbwd in rows:
        eager_fwd.setdefault(op, fwd)
        both = "-" if fwdbwd is None else f"{fwdbwd:.1f}"
        print(f"{op:13s} {layer:18s} {fwd:8.1f} {both:>11s} {fwd / eager_fwd[op]:11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
