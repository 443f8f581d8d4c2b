"""Side-by-side timing of sparse-layer contenders that each hold their own parameters (bench_sparse's
linear and conv sections).

:func:`time_point` times every contender on one shared input with benchmarks/harness.py's runner
and clock (interleaved rounds, gc off, median and p20-p80), each with its own quota of rounds, and
checks each one's output and gradients against the dense contender; bench_sparse.py's docstring
describes the methodology. A contender is an :class:`Entry`: the contender, its own parameters
``(weight, bias)`` and, when its weight gradient is in neither of the layouts that
:func:`_weight_grad_values` knows, its own conversion of that gradient to values in CSR order; a
forward-only one (``fwd_only``, e.g. torch's 2:4 semi-structured weight, which torch cannot
differentiate) is timed in the fwd phase only and checked against its own reference.
"""

import functools
import gc
import time
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from benchmarks import harness
from benchmarks.harness import Contender
from benchmarks.sparse_report import BASELINE, DENSE, TOL, fwd_speedup_over

SLOW_FIRST_CALL_S = 0.5  # no further warm-up for a contender whose first fwd+bwd takes longer
VERY_SLOW_S = 40.0  # a contender's minimum rounds are cut (down to 2) to stay near this many seconds


class Entry(NamedTuple):
    """A contender of :func:`time_point` (a plain ``(contender, params)`` tuple works too).

    ``params``: its own ``(weight, bias)``, differentiated with ``x``. ``weight_values(grad)``, if
    given: its weight gradient as the values at the mask's nonzeros in CSR (row-major) order, for a
    layout :func:`_weight_grad_values` does not know (e.g. SparseProp's conv values order).
    ``fwd_only``: time the forward only (no bwd / fwd+bwd phases, its entry gets ``fwd_only: true``).
    ``reference(x)``: its own reference ``{"out": ...}`` (and gradients, if any) for the correctness
    check, in place of the point's (dense); ``tolerance``: its own, in place of the point's.
    """

    contender: Contender
    params: tuple
    weight_values: Callable[[torch.Tensor], torch.Tensor] | None = None
    fwd_only: bool = False
    reference: Callable[[torch.Tensor], dict] | None = None
    tolerance: float | None = None


def _module_fn(module: nn.Module):
    """``fn(x, weight, bias) = module(x)``: the parameters are inputs only so that they are differentiated."""

    def fn(x, *params):
        return module(x)

    return fn


def _weight_grad_values(g: torch.Tensor, mask: torch.Tensor, weight_values=None) -> torch.Tensor:
    """A weight gradient as the values at the nonzeros in CSR (row-major) order.

    ``weight_values(g)`` if given; else a dense (or sparse, densified) gradient of the weight's
    shape, a linear ``[out, in]`` or a conv ``[out, in, kh, kw]`` one, is masked; a gradient of the
    values themselves is returned as it is.
    """
    if weight_values is not None:
        return weight_values(g)
    if g.layout != torch.strided:
        g = g.to_dense()
    return g[mask] if g.shape == mask.shape else g


def _storages(t: torch.Tensor) -> list[tuple[tuple, int]]:
    """``[(key, nbytes)]`` of the storages behind ``t``: a sparse tensor's values and index tensors (a 2:4
    semi-structured tensor's packed values and metadata)."""
    if isinstance(t, torch.sparse.SparseSemiStructuredTensor):
        parts = [
            p
            for p in (t.packed, t.meta, t.packed_t, t.meta_t, t.compressed_swizzled_bitmask)
            if isinstance(p, torch.Tensor)
        ]
    elif t.layout in (torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr, torch.sparse_bsc):
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
    entries: list[Entry],
    x: torch.Tensor,
    mask: torch.Tensor,
    device: torch.device,
    *,
    budget_s: float,
    min_repeats: int,
    min_slow: int,
    max_repeats: int,
    warmup: int,
    reference: Callable[[torch.Tensor, list], dict] | None = None,
    tolerance: float = TOL,
) -> dict:
    """Time the contenders side by side on ``x``; a result in ``harness.compare``'s layout.

    Each contender's entry also has ``rounds`` (its own count), ``max_rel_diff`` (output vs
    the reference) and ``grad_max_rel_diff`` (``x`` / ``weight`` / ``bias`` vs the reference), and
    ``tolerance``. The reference is the dense contender, or ``reference(x, grad_outputs)`` if given
    (``{"out", "x", "weight", "bias"}``, the weight gradient at the mask: e.g. a float32 dense one for a
    bfloat16 run, computed once here), or an entry's own ``reference``. A forward-only entry is timed
    in the fwd phase only (its ``phases`` have ``fwd`` alone) and gets ``fwd_only: true``.
    """
    load_before = harness.load_average()
    share = budget_s / len(entries)
    grad_outputs, checks, runs = None, {}, []
    for c, params, weight_values, fwd_only, own_reference, own_tolerance in (Entry(*e) for e in entries):
        runner = harness._Runner(c, (x, *params), None)
        start = time.perf_counter()
        outputs = runner.forward()
        if fwd_only:
            harness._sync(device)
            checks[c.name] = {"out": outputs[0].detach()}
        else:
            if grad_outputs is None:
                grad_outputs = harness._upstream_grads(outputs)
            runner.grad_outputs = grad_outputs
            gx, gw, gb = runner.backward(outputs)
            harness._sync(device)
            checks[c.name] = {
                "out": outputs[0].detach(),
                "x": gx,
                "weight": _weight_grad_values(gw, mask, weight_values),
                "bias": gb,
            }
            del gx, gw, gb
        first = time.perf_counter() - start
        del outputs
        once = runner.forward if fwd_only else runner.fwdbwd
        est = first
        if first <= SLOW_FIRST_CALL_S:
            for _ in range(warmup - 1):
                t0 = time.perf_counter()
                once()
                harness._sync(device)
                est = time.perf_counter() - t0
        res = {"name": c.name, "compiled": False, "first_call_s": first, "warm_fwdbwd_s": est}
        if fwd_only:
            res["fwd_only"] = True  # warm_fwdbwd_s is then a warm forward
        # a saved sparse tensor counts by its values and indices (not as a dense [n, n])
        res["saved_bytes"], res["saved_extra_bytes"] = harness.saved_bytes(
            runner.forward, tuple(runner.diff_inputs), storages=_storages
        )
        if device.type == "cuda":  # peak memory of one fwd+bwd (fwd), above what is allocated already
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            once()
            harness._sync(device)
            res["peak_extra_bytes"] = torch.cuda.max_memory_allocated(device) - base
        # a round times fwd, bwd and fwd+bwd: about two fwd+bwd (a forward-only round: one forward)
        cost = est if fwd_only else 2 * est
        quota = min_repeats if cost * min_repeats <= share else min_slow
        if cost * quota > VERY_SLOW_S:  # e.g. SparseProp's backward on a loaded machine: seconds per call
            quota = max(2, min(quota, int(VERY_SLOW_S / cost)))
        runs.append(
            {
                "runner": runner,
                "res": res,
                "min": quota,
                "n": 0,
                "spent": 0.0,
                "fwd_only": fwd_only,
                "samples": {p: [] for p in (("fwd",) if fwd_only else harness.PHASES)},
                "reference": own_reference,
                "tolerance": own_tolerance if own_tolerance is not None else tolerance,
            }
        )
    ref = checks[DENSE] if reference is None else reference(x, grad_outputs)
    for run in runs:
        own = run["reference"]
        d = _diffs(checks[run["res"]["name"]], ref if own is None else own(x))
        run["res"]["max_rel_diff"] = d.pop("out")
        run["res"]["grad_max_rel_diff"] = d
        run["res"]["tolerance"] = run["tolerance"]
        del run["reference"]
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
                if run["fwd_only"]:
                    t_fwd, _ = clock.time(runner.forward)
                    del _
                    s["fwd"].append(t_fwd)
                    run["spent"] += t_fwd
                    run["n"] += 1
                    continue
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


def print_point(r: dict) -> None:
    """One timed point: its table (a line per forward-only contender below it), the rounds per contender,
    and a warning per contender that differs from its reference by more than its tolerance."""
    full = [c for c in r["contenders"] if not c.get("fwd_only")]
    print(harness.format_table({**r, "contenders": full}, BASELINE))
    for c in r["contenders"]:
        if c.get("fwd_only"):
            x = fwd_speedup_over(r, c["name"])
            print(
                f"  {c['name']} (forward only): fwd {harness._fmt_time(c['phases']['fwd'])} ms"
                + ("" if x is None else f"; its fwd / ffops' fwd {x:.2f}")
                + f"; max rel diff vs its own dense weight {c['max_rel_diff']:.1e}"
            )
    print(
        "  rounds: "
        + ", ".join(f"{c['name']} {c['rounds']}" for c in r["contenders"])
        + f"; cpu/wall {r['cpu_per_wall']:.2f}; load {r['loadavg_before']} -> {r['loadavg_after']}"
    )
    for c in r["contenders"]:
        worst = max([c["max_rel_diff"], *c["grad_max_rel_diff"].values()])
        if worst > c.get("tolerance", TOL):
            diffs = ", ".join(f"{k} {v:.1e}" for k, v in {"out": c["max_rel_diff"], **c["grad_max_rel_diff"]}.items())
            print(
                f"  WARNING: {c['name']} differs from its reference by more than {c.get('tolerance', TOL):g}: {diffs}"
            )
    print(flush=True)
