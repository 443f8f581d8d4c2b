"""Benchmark of the memory-saving family: bytes saved for backward and forward+backward time, side by
side, for the reference MLP block and a whole small transformer layer; and each op against torch's own.

Run from the repository root::

    python -m benchmarks.bench_memory                 # everything (CPU: 2 threads, or CUDA if available)
    python -m benchmarks.bench_memory --only mlp      # one section: ops | mlp | layer | rmm
    python -m benchmarks.bench_memory --quick         # tiny smoke configuration

Sections:
  ops    fwd+bwd of ffops.regelu2 / fewbit (1-4 bits) vs torch's GELU, resilu2 vs SiLU, ms_layernorm vs
         F.layer_norm (and nn.LayerNorm with its affine), ms_rmsnorm vs F.rms_norm; float32 and bfloat16;
         4096 x 4096 (memory-bound) and 1024 x 1024 elements (cache-resident on CPU: compute-bound).
         Target: at most 1.15x torch's time on CPU; on a GPU, at least 85 % of copy bandwidth.
  mlp    ``x [8, 512, 1024] -> LN -> Linear(1024, 4096) -> GELU -> Linear(4096, 1024)`` (the table of
         shared/reference/memory_sharing.md): plain torch, activation checkpointing of the block, and
         the block patched by ``ffops.memory.patch`` (ReGELU2 + MS-LN; Few-Bit 3 + MS-LN), in float32,
         autocast bfloat16 (plain nn.Linear) and pure bfloat16. Saved bytes are counted at the table's
         shape; times at ``--tokens`` tokens (default: the table's 4096 on GPU, 1024 on CPU).
  layer  a ViT-style encoder layer (Hugging Face ViTLayer from config, hidden 384, 6 heads, MLP 1536,
         197 tokens, batch 8), the same four configurations, float32 and autocast bfloat16.

Saved bytes: ffops.memory.saved_bytes (storages deduplicated, parameters and their casts excluded).
Times: benchmarks/harness.py (interleaved rounds, median [p20-p80]). Results:
``benchmarks/results/bench_memory_<device>.json``.
"""

import argparse
import copy
import functools
import itertools
import sys

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

import ffops
from benchmarks import harness
from benchmarks.harness import Case, Contender, Target
from ffops.memory import saved_bytes

SCRIPT = "bench_memory"
MIB = 2.0**20
EPS = 1e-5


# ---- ops -----------------------------------------------------------------------------------------


def _ops_shapes(quick):
    """16M elements (memory-bound: what the saved bytes buy) and 1M (cache-resident: compute-bound)."""
    return [(64, 512)] if quick else [(4096, 4096), (1024, 1024)]


def _ops_cases(device, dtype, rows, cols):
    esize = torch.empty((), dtype=dtype).element_size()
    b = rows * cols * esize

    def make():
        gen = torch.Generator(device=device).manual_seed(0)
        return (torch.randn(rows, cols, generator=gen, device=device, dtype=dtype).requires_grad_(),)

    def act_bytes(bits):  # fwd: read x, write y + codes; bwd: read g + codes, write dx
        codes = rows * cols * bits // 8
        return {"fwd": 2 * b + codes, "bwd": 2 * b + codes, "fwdbwd": 4 * b + 2 * codes}

    norm_bytes = {"fwd": 2 * b, "bwd": 3 * b, "fwdbwd": 5 * b}
    info = {"shape": [rows, cols], "dtype": str(dtype).replace("torch.", "")}
    ln = nn.LayerNorm(cols).to(device=device, dtype=dtype)
    gelu_contenders = [Contender("torch gelu", F.gelu), Contender("ffops regelu2", ffops.regelu2)] + [
        Contender(f"ffops fewbit-{k}", functools.partial(ffops.fewbit, fn="gelu", bits=k)) for k in (1, 2, 3, 4)
    ]
    cases = [
        (Case("gelu", make, act_bytes(2), info), gelu_contenders, "torch gelu"),
        (
            Case("silu", make, act_bytes(2), info),
            [Contender("torch silu", F.silu), Contender("ffops resilu2", ffops.resilu2)],
            "torch silu",
        ),
        (
            Case("layernorm", make, norm_bytes, info),
            [
                Contender("torch layer_norm", lambda x: F.layer_norm(x, (cols,), eps=EPS)),
                Contender("ffops ms_layernorm", lambda x: ffops.ms_layernorm(x, EPS)),
                Contender("torch nn.LayerNorm (affine)", ln),
            ],
            "torch layer_norm",
        ),
        (
            Case("rmsnorm", make, norm_bytes, info),
            [
                Contender("torch rms_norm", lambda x: F.rms_norm(x, (cols,), eps=EPS)),
                Contender("ffops ms_rmsnorm", lambda x: ffops.ms_rmsnorm(x, EPS)),
            ],
            "torch rms_norm",
        ),
    ]
    return [(case, _with_cuda_backend(contenders, device), base) for case, contenders, base in cases]


def _with_cuda_backend(contenders, device):
    """On a GPU where both kernel sets run, each ffops contender once more on the Triton backend
    (auto runs the CUDA C++ kernels there)."""
    available = ffops.available()
    if device.type != "cuda" or not (available.get("cuda") and available.get("triton")):
        return contenders
    return contenders + [
        Contender(f"{c.name} [triton]", c.fn, context=functools.partial(ffops.use_backend, "triton"))
        for c in contenders
        if c.name.startswith("ffops")
    ]


def run_ops(device, args, bandwidth, results, targets):
    for (rows, cols), dtype in itertools.product(_ops_shapes(args.quick), (torch.float32, torch.bfloat16)):
        for case, contenders, base in _ops_cases(device, dtype, rows, cols):
            r = harness.compare(
                case,
                contenders,
                device,
                budget_s=args.budget,
                min_repeats=args.min_repeats,
                warmup=1 if args.quick else 2,
                bandwidth=bandwidth,
            )
            results.append({"section": "ops", **r})
            print(harness.format_table(r, base), flush=True)
            for c in r["contenders"]:
                if not c["name"].startswith("ffops"):
                    continue
                ratio = c["phases"]["fwdbwd"]["median_s"] / harness.median(r, base)
                tag = f"{case.name} {info_dtype(case)} {rows}x{cols} {c['name']}"
                if device.type == "cpu":
                    targets.append(Target(f"CPU {tag} fwd+bwd <= 1.15x {base}", ratio <= 1.15, f"{ratio:.2f}x"))
                pct = c["phases"]["fwdbwd"].get("pct_copy_bw")
                if pct is not None:
                    targets.append(Target(f"GPU {tag} fwd+bwd >= 85% of copy bandwidth", pct >= 85.0, f"{pct:.0f}%"))
            print()


def info_dtype(case):
    return case.info["dtype"]


# ---- blocks --------------------------------------------------------------------------------------


class Checkpointed(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return checkpoint(self.inner, x, use_reentrant=False)


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


RMM = "ffops ReGELU2 + MS norms + RMM 0.2"


def _variants(plain: nn.Module, example) -> dict:
    """plain, checkpointed, and three ffops-patched copies of ``plain`` (same weights)."""
    regelu, fewbit, rmm = copy.deepcopy(plain), copy.deepcopy(plain), copy.deepcopy(plain)
    rep1 = ffops.memory.patch(regelu, "regelu2", example_inputs=example)
    rep2 = ffops.memory.patch(fewbit, "fewbit:3", example_inputs=example)
    rep3 = ffops.memory.patch(rmm, "regelu2", linears="rmm:0.2", example_inputs=example)
    return {
        "plain torch": plain,
        "checkpointing": Checkpointed(plain),
        "ffops ReGELU2 + MS norms": regelu,
        "ffops Few-Bit 3 + MS norms": fewbit,
        RMM: rmm,
    }, (rep1, rep2, rep3)


PRECISIONS = {
    "float32": (torch.float32, None),
    "autocast bf16": (torch.float32, torch.bfloat16),
    "pure bf16": (torch.bfloat16, None),
}


def _contexts(device, amp):
    if amp is None:
        return None
    return lambda: torch.autocast(device.type, dtype=amp)


def _measure_saved(model, x, device, amp):
    ctx = _contexts(device, amp)
    with ctx() if ctx else torch.autocast(device.type, enabled=False):
        return saved_bytes(lambda t: _first(model(t)), x)


def run_block(
    section,
    plain,
    make_input,
    saved_shape,
    time_shape,
    precisions,
    device,
    args,
    results,
    targets,
    paper=None,
):
    example = make_input((2,) + tuple(saved_shape[1:]), torch.float32)
    variants, reports = _variants(plain, example)
    print(f"== {section}: patch report (ReGELU2 variant)\n{reports[0]}\n")
    print(f"== {section}: patch report (ReGELU2 + RMM 0.2 variant)\n{reports[2]}\n")
    rows = []
    for prec in precisions:
        dtype, amp = PRECISIONS[prec]
        models = {k: copy.deepcopy(v).to(dtype) for k, v in variants.items()}
        x_saved = make_input(saved_shape, dtype).requires_grad_()
        saved = {k: _measure_saved(m, x_saved, device, amp) for k, m in models.items()}
        del x_saved
        case = Case(
            f"{section} {prec}",
            lambda: (make_input(time_shape, dtype).requires_grad_(),),
            info={"time_shape": list(time_shape), "saved_shape": list(saved_shape), "precision": prec},
        )
        contenders = [
            Contender(
                k, (lambda m: lambda t: _first(m(t)))(m), context=_contexts(device, amp), params=tuple(m.parameters())
            )
            for k, m in models.items()
        ]
        r = harness.compare(case, contenders, device, budget_s=args.budget, min_repeats=args.min_repeats, warmup=1)
        for c in r["contenders"]:
            c["saved_bytes_params_excluded"] = saved[c["name"]]
        results.append({"section": section, **r})
        base = harness.median(r, "plain torch")
        for c in r["contenders"]:
            t = c["phases"]["fwdbwd"]
            rows.append(
                [
                    prec,
                    c["name"],
                    f"{saved[c['name']] / MIB:.1f}",
                    f"{t['median_s'] * 1e3:.0f} [{t['p20_s'] * 1e3:.0f}-{t['p80_s'] * 1e3:.0f}]",
                    f"{t['median_s'] / base:.2f}",
                ]
                + ([f"{c['peak_extra_bytes'] / MIB:.0f}"] if "peak_extra_bytes" in c else [])
            )
        if section == "mlp" and prec in ("float32", "autocast bf16"):
            alone, both = saved["ffops ReGELU2 + MS norms"], saved[RMM]
            targets.append(
                Target(
                    f"{section} {prec}: + RMM 0.2 saved <= 0.5x the patch alone",
                    both <= 0.5 * alone,
                    f"{both / MIB:.2f} MiB vs {alone / MIB:.2f} MiB ({both / alone:.2f}x)",
                )
            )
        if paper and prec in paper:
            mine = saved["ffops ReGELU2 + MS norms"] / MIB
            limit = paper[prec]
            targets.append(
                Target(
                    f"{section} {prec}: ffops ReGELU2 + MS-LN saved <= {limit} MiB",
                    mine <= limit + 0.05,
                    f"{mine:.2f} MiB (plain {saved['plain torch'] / MIB:.1f}, "
                    f"checkpointing {saved['checkpointing'] / MIB:.1f})",
                )
            )
    header = [
        "precision",
        "configuration",
        f"saved MiB @ {list(saved_shape)}",
        f"fwd+bwd ms @ {list(time_shape)}",
        "x plain",
    ] + (["peak extra MiB"] if device.type == "cuda" else [])
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"== {section} (fwd+bwd: the input's and the parameters' gradients, as in training)")
    for r in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(v).ljust(w) if i < 2 else str(v).rjust(w) for i, (v, w) in enumerate(zip(r, widths))))
    print(flush=True)


def run_mlp(device, args, results, targets):
    d, h = (64, 256) if args.quick else (1024, 4096)
    torch.manual_seed(0)
    plain = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, h), nn.GELU(), nn.Linear(h, d)).to(device)
    with torch.no_grad():  # a trained-looking affine, so the fold is not trivially the identity
        plain[0].weight.uniform_(0.5, 1.5)
        plain[0].bias.normal_(0, 0.1)

    def make_input(shape, dtype):
        gen = torch.Generator(device=device).manual_seed(1)
        return torch.randn(shape, generator=gen, device=device, dtype=dtype)

    saved_shape = (2, 16, d) if args.quick else (8, 512, d)
    tokens = args.tokens or (64 if args.quick else (4096 if device.type == "cuda" else 1024))
    time_shape = (tokens // saved_shape[1] or 1, saved_shape[1], d) if tokens >= saved_shape[1] else (1, tokens, d)
    paper = None if args.quick else {"float32": 84.0, "autocast bf16": 52.0}
    run_block(
        "mlp",
        plain,
        make_input,
        saved_shape,
        time_shape,
        list(PRECISIONS),
        device,
        args,
        results,
        targets,
        paper,
    )
    if not args.quick:
        print(
            "reference (shared/reference/memory_sharing.md, MiB fp32 / autocast bf16 / pure bf16): plain 160 / 88 / 80,"
            " checkpointing 16 / 16 / 8, ReGELU2 + MS-LN with plain nn.Linear 84 / 60 / 44, the paper's setup "
            "(lomem's custom linear) 84 / 52 / 44\n"
        )


def run_rmm(device, args, results, targets):
    """fwd+bwd of one large linear layer, nn.Linear vs RandomizedLinear (ratio 0.2) side by side."""
    n, rows = (256, 512) if args.quick else (4096, 8192)
    torch.manual_seed(0)
    lin = nn.Linear(n, n, device=device)
    rmm = {kind: ffops.nn.RandomizedLinear.from_linear(lin, 0.2, kind) for kind in ("gaussian", "rademacher")}
    case = Case(
        f"rmm linear {n}x{n}, {rows} rows",
        lambda: (torch.randn(rows, n, device=device, requires_grad=True),),
        info={"rows": rows, "features": n, "ratio": 0.2},
    )
    contenders = [Contender("nn.Linear", lin, params=tuple(lin.parameters()))] + [
        Contender(f"RMM 0.2 {k}", m, params=tuple(m.parameters())) for k, m in rmm.items()
    ]
    r = harness.compare(case, contenders, device, budget_s=args.budget, min_repeats=args.min_repeats, warmup=1)
    results.append({"section": "rmm", **r})
    base = harness.median(r, "nn.Linear")
    print(f"== rmm: {case.name}, fwd+bwd, float32")
    for c in r["contenders"]:
        t = c["phases"]["fwdbwd"]
        print(
            f"  {c['name']:22s} {t['median_s'] * 1e3:8.0f} ms [{t['p20_s'] * 1e3:.0f}-{t['p80_s'] * 1e3:.0f}]  "
            f"{t['median_s'] / base:.2f}x nn.Linear"
        )
        if c["name"] != "nn.Linear" and not args.quick:
            targets.append(
                Target(
                    f"rmm: {c['name']} fwd+bwd <= 1.15x nn.Linear",
                    t["median_s"] <= 1.15 * base,
                    f"{t['median_s'] / base:.2f}x",
                )
            )
    print(flush=True)


def run_layer(device, args, results, targets):
    from transformers import ViTConfig
    from transformers.models.vit.modeling_vit import ViTLayer

    hidden, heads, mlp, tokens, batch = (64, 4, 256, 17, 2) if args.quick else (384, 6, 1536, 197, 8)
    cfg = ViTConfig(
        hidden_size=hidden,
        num_attention_heads=heads,
        intermediate_size=mlp,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    layer = ViTLayer(cfg).to(device)
    with torch.no_grad():
        for m in layer.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)

    def make_input(shape, dtype):
        gen = torch.Generator(device=device).manual_seed(2)
        return torch.randn(shape, generator=gen, device=device, dtype=dtype)

    shape = (batch, tokens, hidden)
    run_block("layer", layer, make_input, shape, shape, ["float32", "autocast bf16"], device, args, results, targets)


# ---- main ----------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog=f"python -m benchmarks.{SCRIPT}", description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--only", choices=("ops", "mlp", "layer", "rmm"), default=None)
    p.add_argument("--quick", action="store_true", help="tiny shapes and budgets: a smoke test in seconds")
    p.add_argument("--tokens", type=int, default=None, help="tokens of the timed MLP input")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: 2 on CPU)")
    p.add_argument("--budget", type=float, default=None, help="seconds of timed rounds per case (default 4)")
    p.add_argument("--min-repeats", type=int, default=None, help="rounds per case at least (default 5)")
    p.add_argument("--no-json", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here")
    threads = args.threads if args.threads is not None else (2 if device.type == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    args.budget = args.budget if args.budget is not None else (0.2 if args.quick else 4.0)
    args.min_repeats = args.min_repeats if args.min_repeats is not None else (3 if args.quick else 5)
    meta = harness.metadata(device)
    bandwidth = harness.copy_bandwidth(device) if device.type == "cuda" else None
    print(
        f"{SCRIPT}: {harness.machine_line(meta)}, torch {meta['torch']}, ffops {meta['ffops']}, "
        f"load {meta['loadavg_at_start']}" + (", quick" if args.quick else "")
    )
    if bandwidth:
        print(f"measured copy bandwidth: {bandwidth / 1e9:.0f} GB/s")
    print("times: median [p20-p80] in ms\n")
    results, targets = [], []
    if args.only in (None, "mlp"):
        run_mlp(device, args, results, targets)
    if args.only in (None, "layer"):
        run_layer(device, args, results, targets)
    if args.only in (None, "ops"):
        run_ops(device, args, bandwidth, results, targets)
    if args.only in (None, "rmm"):
        run_rmm(device, args, results, targets)
    print("targets" + (" (quick configuration: not meaningful)" if args.quick else "") + ":")
    for t in targets:
        print("  " + t.line())
    if not args.no_json:
        suffix = ("_quick" if args.quick else "") + (f"_{args.only}" if args.only else "")
        payload = {
            "script": SCRIPT,
            "metadata": meta,
            "config": {**vars(args), "threads": threads},
            "results": results,
            "targets": [t.__dict__ for t in targets],
        }
        print(f"\nwrote {harness.write_json(harness.results_path(SCRIPT, device, suffix), payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
