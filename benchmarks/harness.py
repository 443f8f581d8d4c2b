"""Shared benchmark harness: side-by-side timing of several implementations ("contenders") of an op.

Methodology (see :func:`compare`):

* Phases, all with autograd enabled (as in training):
  ``fwd``    the forward call alone;
  ``bwd``    the backward alone: the forward runs untimed, then ``torch.autograd.grad`` of the
             outputs w.r.t. the differentiable inputs and the contender's ``params`` is timed
             (a fresh graph every repeat);
  ``fwdbwd`` forward and backward together.
  The backward gets the same precomputed upstream gradients for every contender (``ones`` for a
  0-dim output such as a loss, fixed-seed ``randn`` otherwise), so no extra op is timed.
* Warm-up calls first (this is where ``torch.compile`` compiles; excluded from the timings, but
  the first call's duration is recorded as ``first_call_s``).
* Repeats are interleaved: each round runs every contender once per phase, in an order rotated
  by one each round, so slow drift of a noisy machine hits all contenders alike. Rounds continue
  until ``max_repeats``, or until ``budget_s`` seconds have passed and ``min_repeats`` rounds ran.
* Statistics: the median, and the spread as the 20th-80th percentile range (p20-p80); min, max
  and every sample are in the JSON.
* Clock: ``time.perf_counter`` on CPU; on CUDA, CUDA events around the region, with the L2 cache
  flushed (a 256 MiB buffer zeroed) before every timed region.
* Bytes saved for backward: ``torch.autograd.graph.saved_tensors_hooks`` records the tensors
  saved by one forward; they are deduplicated by storage and the storages' ``nbytes`` summed
  (``saved``), also without the storages of the inputs themselves (``saved_extra``).
* CUDA only: peak memory of one forward+backward above what was allocated before it, and the
  achieved GB/s for a caller-supplied count of bytes moved, against the device's copy bandwidth
  (:func:`copy_bandwidth`: a large ``dst.copy_(src)``, read + write bytes).
"""

import contextlib
import dataclasses
import datetime
import gc
import json
import math
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch

from ffops import _cpuinfo

PHASES = ("fwd", "bwd", "fwdbwd")
PHASE_TITLES = {"fwd": "fwd", "bwd": "bwd", "fwdbwd": "fwd+bwd"}
# the results files; FFOPS_BENCH_RESULTS redirects them (gpu_session.sh DRY_RUN=1 leaves the tracked ones alone)
RESULTS_DIR = Path(os.environ.get("FFOPS_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")
MIB = 2.0**20


@dataclasses.dataclass
class Contender:
    """One implementation under test.

    ``fn(*inputs)`` returns the op's output(s) (a tensor or a tuple of tensors); ``context``, if
    given, is a zero-argument factory of a context manager entered around every forward and
    backward call (e.g. ``lambda: ffops.use_backend("cuda")``). ``params``: tensors besides the
    inputs that the backward differentiates too, e.g. a module's parameters (training computes
    their gradients; without them a layer's timed backward would skip its weight gradient).
    """

    name: str
    fn: Callable[..., Any]
    context: Callable[[], AbstractContextManager] | None = None
    compiled: bool = False
    params: tuple = ()


def compiled_contender(name: str, fn: Callable[..., Any], **compile_kwargs) -> Contender:
    """``torch.compile(fn)`` with the default inductor backend and static shapes (``dynamic=False``).

    Compilation happens lazily in the warm-up calls of :func:`compare`, outside the timings.
    """
    compile_kwargs.setdefault("dynamic", False)
    return Contender(name, torch.compile(fn, **compile_kwargs), compiled=True)


@dataclasses.dataclass
class Case:
    """One benchmark problem: inputs and, optionally, the bytes a minimal fused kernel moves.

    ``make_inputs()`` returns the input tuple; tensors with ``requires_grad`` are differentiated.
    ``bytes_moved`` maps a phase (``fwd``/``bwd``/``fwdbwd``) to bytes read + written (CUDA GB/s).
    """

    name: str
    make_inputs: Callable[[], tuple]
    bytes_moved: dict[str, int] = dataclasses.field(default_factory=dict)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Target:
    """A performance goal and whether a run met it."""

    description: str
    met: bool
    detail: str = ""

    def line(self) -> str:
        return f"[{'MET' if self.met else 'NOT MET'}] {self.description}" + (f": {self.detail}" if self.detail else "")


# ---- environment -------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or ``platform.processor()``)."""
    return _cpuinfo.cpu_model()


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (other processes on the machine skew CPU timings)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def device_name(device: torch.device) -> str:
    """A readable device name: the GPU name on CUDA, ``cpu <model>`` on CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu {cpu_model()}"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def metadata(device: torch.device) -> dict[str, Any]:
    """Versions, hardware and date, for the JSON results."""

    def version(module):
        try:
            return __import__(module).__version__
        except Exception:  # not installed, or a broken install: no version
            return None

    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "triton": version("triton"),
        "ffops": version("ffops"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "device_name": device_name(device),
        # model, vector ISA of the C++ kernels' clones (and its x86-64 level), L2 / L3 bytes (CPU 0)
        **_cpuinfo.cpu_info(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "loadavg_at_start": load_average(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    if device.type == "cuda":
        meta["cuda"] = torch.version.cuda
        meta["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
    return meta


def machine_line(meta: dict[str, Any]) -> str:
    """The machine for a log's header, from :func:`metadata`'s fields: ``cpu <model>, vector ISA <ISA>
    (<x86-64 level>[; the lower ISAs run]), L2 <size>, L3 <size>, <n> threads``; on CUDA the GPU first,
    then ``host cpu ...``.
    Metadata written before these fields existed gives ``?`` for the missing ones."""
    cpu = {
        "cpu_model": meta.get("cpu_model", "?"),
        "cpu_isa": meta.get("cpu_isa", "?"),
        "cpu_isa_target": meta.get("cpu_isa_target", "?"),
        "cpu_l2_bytes": meta.get("cpu_l2_bytes"),
        "cpu_l3_bytes": meta.get("cpu_l3_bytes"),
        "sparse_kernel_isa": meta.get("sparse_kernel_isa"),
        "aten_cpu_capability": meta.get("aten_cpu_capability"),
    }
    line = _cpuinfo.summary(cpu, meta.get("torch_threads"))
    if str(meta.get("device", "cpu")).startswith("cuda"):
        return f"{meta['device_name']}, host cpu {line}"
    return f"cpu {line}"


def results_path(script: str, device: torch.device, suffix: str = "") -> Path:
    """``benchmarks/results/<script>_<device-name-slug><suffix>.json``."""
    return RESULTS_DIR / f"{script}_{slug(device_name(device))}{suffix}.json"


def write_json(path: Path, payload: dict) -> Path:
    """Write ``payload`` as indented JSON (via a temporary file, so a crash leaves no half file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)
    return path


# ---- measurement primitives --------------------------------------------------------------------


def _as_tuple(out) -> tuple:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Clock:
    """Times one region: CUDA events (after an L2 flush) on CUDA, ``perf_counter`` on CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.flush = None
        if device.type == "cuda":
            self.flush = torch.empty(256 * 2**20, dtype=torch.int8, device=device)

    def time(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        """Seconds taken by ``fn()``, and its result (released by the caller, outside the timing)."""
        if self.device.type == "cuda":
            self.flush.zero_()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            result = fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3, result
        start = time.perf_counter()
        result = fn()
        return time.perf_counter() - start, result


def copy_bandwidth(device: torch.device, nbytes: int = 2**30, repeats: int = 20) -> float:
    """Bytes/s of a large ``dst.copy_(src)`` on ``device``, counting read + write (2 * nbytes)."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    clock = _Clock(device)
    for _ in range(3):
        dst.copy_(src)
    _sync(device)
    times = [clock.time(lambda: dst.copy_(src))[0] for _ in range(repeats)]
    return 2 * nbytes / statistics.median(times)


def dense_storages(t: torch.Tensor) -> list[tuple[tuple, int]]:
    """``[(key, nbytes)]`` of the storage behind ``t`` (key: device and data pointer); a tensor without
    a storage (e.g. a subclass) counts its elements under its id."""
    try:
        s = t.untyped_storage()
        return [((str(t.device), s.data_ptr()), s.nbytes())]
    except (RuntimeError, NotImplementedError):
        return [(("id", id(t)), t.numel() * t.element_size())]


def saved_bytes(fn: Callable[[], Any], exclude: tuple = (), storages=dense_storages) -> tuple[int, int]:
    """Bytes saved for backward by one call of ``fn``: ``(all, excluding the storages of exclude)``.

    Saved tensors are deduplicated by storage (``storages(t)``: ``[(key, nbytes)]``, default
    :func:`dense_storages`); each storage counts its full ``nbytes`` (a saved view keeps its whole
    base alive).
    """
    seen: dict[tuple, int] = {}

    def pack(t):
        seen.update(storages(t))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    excluded = {key for t in exclude if torch.is_tensor(t) for key, _ in storages(t)}
    total = sum(seen.values())
    return total, total - sum(n for key, n in seen.items() if key in excluded)


def summarize(samples: list[float]) -> dict[str, Any]:
    """Median, p20, p80, min and max of ``samples`` (seconds), and the samples themselves."""
    q = statistics.quantiles(samples, n=5, method="inclusive") if len(samples) >= 2 else [samples[0]] * 4
    p20, p80 = q[0], q[3]
    return {
        "median_s": statistics.median(samples),
        "p20_s": p20,
        "p80_s": p80,
        "min_s": min(samples),
        "max_s": max(samples),
        "n": len(samples),
        "samples_s": samples,
    }


class _Runner:
    """Forward / backward closures of one contender on shared inputs and upstream gradients."""

    def __init__(self, contender: Contender, inputs: tuple, grad_outputs: list | None):
        self.contender, self.inputs, self.grad_outputs = contender, inputs, grad_outputs
        self.diff_inputs = [t for t in inputs if torch.is_tensor(t) and t.requires_grad]
        self.diff_inputs += [p for p in contender.params if p.requires_grad]

    def _ctx(self):
        return self.contender.context() if self.contender.context else contextlib.nullcontext()

    def forward(self) -> tuple:
        with self._ctx():
            return _as_tuple(self.contender.fn(*self.inputs))

    def backward(self, outputs: tuple):
        pairs = [(o, g) for o, g in zip(outputs, self.grad_outputs) if g is not None]
        with self._ctx():
            return torch.autograd.grad([o for o, _ in pairs], self.diff_inputs, [g for _, g in pairs])

    def fwdbwd(self):
        return self.backward(self.forward())


def _upstream_grads(outputs: tuple, seed: int = 1234) -> list:
    """``ones`` for 0-dim outputs, fixed-seed ``randn`` otherwise, ``None`` where no grad flows."""
    gen = torch.Generator(device=outputs[0].device).manual_seed(seed)
    grads = []
    for o in outputs:
        if not (torch.is_tensor(o) and o.requires_grad):
            grads.append(None)
        elif o.dim() == 0:
            grads.append(torch.ones_like(o))
        else:
            grads.append(torch.randn(o.shape, generator=gen, device=o.device, dtype=o.dtype))
    return grads


def _max_diff(outputs: tuple, expected: tuple) -> float:
    """Largest ``max|a - b| / max(max|b|, 1e-12)`` over the outputs (a sanity check of the contenders)."""
    worst = 0.0
    for a, b in zip(outputs, expected):
        a, b = a.detach().double(), b.detach().double()
        worst = max(worst, ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item() if b.numel() else 0.0)
    return worst


def compare(
    case: Case,
    contenders: list[Contender],
    device: torch.device,
    *,
    budget_s: float = 10.0,
    min_repeats: int = 5,
    max_repeats: int = 200,
    warmup: int = 2,
    bandwidth: float | None = None,
) -> dict[str, Any]:
    """Time ``contenders`` side by side on ``case``'s inputs; returns a JSON-ready dict.

    The first contender is the reference for the output check (``max_rel_diff``) and for the
    upstream gradients; ``bandwidth`` (bytes/s, CUDA) turns ``case.bytes_moved`` into percentages.
    """
    load_before = load_average()
    inputs = case.make_inputs()
    diff_inputs = [t for t in inputs if torch.is_tensor(t) and t.requires_grad]
    runners, expected, results = [], None, {}
    for c in contenders:
        runner = _Runner(c, inputs, None)
        start = time.perf_counter()
        outputs = runner.forward()
        if expected is None:
            expected = tuple(o.detach().clone() for o in outputs)
            grad_outputs = _upstream_grads(outputs)
        runner.grad_outputs = grad_outputs
        runner.backward(outputs)
        _sync(device)
        first = time.perf_counter() - start
        del outputs
        for _ in range(warmup - 1):
            runner.fwdbwd()
        _sync(device)
        res = {"name": c.name, "compiled": c.compiled, "first_call_s": first}
        res["max_rel_diff"] = _max_diff(runner.forward(), expected)
        res["saved_bytes"], res["saved_extra_bytes"] = saved_bytes(runner.forward, exclude=tuple(diff_inputs))
        if device.type == "cuda":  # peak memory of one fwd+bwd, above what is allocated already
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            runner.fwdbwd()
            _sync(device)
            res["peak_extra_bytes"] = torch.cuda.max_memory_allocated(device) - base
        runners.append(runner)
        results[c.name] = res

    clock = _Clock(device)
    samples = {c.name: {p: [] for p in PHASES} for c in contenders}
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start, rounds = time.perf_counter(), 0
        while rounds < max_repeats and (rounds < min_repeats or time.perf_counter() - start < budget_s):
            shift = rounds % len(runners)
            for runner in runners[shift:] + runners[:shift]:
                name = runner.contender.name
                samples[name]["fwd"].append(clock.time(runner.forward)[0])
                outputs = runner.forward()
                _sync(device)
                samples[name]["bwd"].append(clock.time(lambda: runner.backward(outputs))[0])
                del outputs
                samples[name]["fwdbwd"].append(clock.time(runner.fwdbwd)[0])
            rounds += 1
    finally:
        if gc_was_enabled:
            gc.enable()

    for name, res in results.items():
        res["phases"] = {p: summarize(s) for p, s in samples[name].items()}
        for p, nbytes in case.bytes_moved.items():
            res["phases"][p]["gbps"] = nbytes / res["phases"][p]["median_s"] / 1e9
            if bandwidth:
                res["phases"][p]["pct_copy_bw"] = 100.0 * nbytes / res["phases"][p]["median_s"] / bandwidth
    return {
        "case": case.name,
        "info": case.info,
        "bytes_moved": case.bytes_moved,
        "rounds": rounds,
        "timed_s": time.perf_counter() - start,
        "loadavg_before": load_before,
        "loadavg_after": load_average(),
        "contenders": list(results.values()),
    }


def time_callables(
    name: str,
    fns: dict[str, Callable[[], Any]],
    device: torch.device,
    *,
    metric: str = "call",
    info: dict | None = None,
    budget_s: float = 10.0,
    min_repeats: int = 5,
    max_repeats: int = 200,
    warmup: int = 1,
) -> dict[str, Any]:
    """Time zero-argument callables side by side, for what does not fit :func:`compare`'s
    fwd / bwd mold (e.g. a whole training step with its optimizer update).

    Same methodology as :func:`compare`: ``warmup`` untimed calls each (the first one's duration is
    ``first_call_s``), then interleaved rounds rotated by one each round, gc disabled, the same
    clock. The result has :func:`compare`'s layout with the single phase ``metric``, so
    ``median(result, name, metric)`` works; ``cpu_per_wall`` is this process' CPU time over the
    wall time of the timed rounds (near the thread count on an idle CPU machine; less when other
    processes take the cores).
    """
    load_before, results = load_average(), {}
    for c, fn in fns.items():
        start = time.perf_counter()
        for _ in range(max(warmup, 1)):
            fn()
            _sync(device)
            results.setdefault(c, {"name": c, "first_call_s": time.perf_counter() - start})
    clock, samples, items = _Clock(device), {c: [] for c in fns}, list(fns.items())
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start, cpu_start, rounds = time.perf_counter(), time.process_time(), 0
        while rounds < max_repeats and (rounds < min_repeats or time.perf_counter() - start < budget_s):
            shift = rounds % len(items)
            for c, fn in items[shift:] + items[:shift]:
                samples[c].append(clock.time(fn)[0])
            rounds += 1
    finally:
        if gc_was_enabled:
            gc.enable()
    timed_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    for c, res in results.items():
        res["phases"] = {metric: summarize(samples[c])}
    return {
        "case": name,
        "info": info or {},
        "metric": metric,
        "rounds": rounds,
        "timed_s": timed_s,
        "cpu_per_wall": cpu_s / timed_s,
        "loadavg_before": load_before,
        "loadavg_after": load_average(),
        "contenders": list(results.values()),
    }


# ---- reporting ---------------------------------------------------------------------------------


def contender(result: dict, name: str) -> dict | None:
    """The entry of contender ``name`` in a :func:`compare` result (``None`` if absent)."""
    return next((c for c in result["contenders"] if c["name"] == name), None)


def median(result: dict, name: str, phase: str = "fwdbwd") -> float:
    """Median seconds of ``phase`` for contender ``name``."""
    return contender(result, name)["phases"][phase]["median_s"]


def _fmt_time(stats: dict) -> str:
    ms = lambda s: f"{s * 1e3:.3g}" if s * 1e3 < 100 else f"{s * 1e3:.0f}"
    return f"{ms(stats['median_s'])} [{ms(stats['p20_s'])}-{ms(stats['p80_s'])}]"


def format_table(result: dict, baseline: str) -> str:
    """A text table of one :func:`compare` result; times in ms as ``median [p20-p80]``.

    ``xbase`` is the contender's fwd+bwd median over ``baseline``'s (above 1: ``baseline`` is faster).
    """
    cuda = any("peak_extra_bytes" in c for c in result["contenders"])
    header = ["contender", "fwd ms", "bwd ms", "fwd+bwd ms", "saved MiB", "saved extra MiB", f"x {baseline}"]
    if cuda:
        header += ["peak extra MiB", "fwd+bwd GB/s", "% copy bw"]
    base = contender(result, baseline)
    rows = []
    for c in result["contenders"]:
        fb = c["phases"]["fwdbwd"]
        ratio = fb["median_s"] / base["phases"]["fwdbwd"]["median_s"] if base else math.nan
        row = [
            c["name"],
            *(_fmt_time(c["phases"][p]) for p in PHASES),
            f"{c['saved_bytes'] / MIB:.1f}",
            f"{c['saved_extra_bytes'] / MIB:.1f}",
            f"{ratio:.2f}",
        ]
        if cuda:
            row += [
                f"{c['peak_extra_bytes'] / MIB:.1f}",
                f"{fb['gbps']:.0f}" if "gbps" in fb else "-",
                f"{fb['pct_copy_bw']:.0f}%" if "pct_copy_bw" in fb else "-",
            ]
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
    info = ", ".join(f"{k}={v}" for k, v in result["info"].items())
    title = f"== {result['case']}" + (f" ({info})" if info else "") + f", {result['rounds']} rounds"
    return "\n".join([title, line(header), line(["-" * w for w in widths]), *map(line, rows)])
