"""Training-step time of real vision models made sparse by ``ffops.sparse.sparsify(model, s, example_input=x)``.

Run from the repository root::

    python -m benchmarks.bench_sparsify_models                 # CPU, 2 threads, batch 32, 64 x 64, sparsity 0.9
    python -m benchmarks.bench_sparsify_models --quick         # fewer rounds
    python -m benchmarks.bench_sparsify_models --models resnet18 convnext_atto

    # the AVX2 kernels (and torch's AVX2 kernels) on an AVX-512 machine:
    FFOPS_CPU_ISA=avx2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 DNNL_MAX_CPU_ISA=AVX2 \\
        python -m benchmarks.bench_sparsify_models --out benchmarks/results/bench_sparsify_models_cpu-avx2.json

Models, built from their constructors without pretrained weights (random init, 10 classes): torchvision
resnet18, resnet50, mobilenet_v3_large, efficientnet_b0, vgg11_bn, densenet121; timm vit_tiny_patch16_224
(at the input size), convnext_atto, regnetx_002. Inputs are 64 x 64 (224 x 224 would take minutes per
step on 2 cores; the layers' shapes, not the speedups' direction, change with the size). Per model:
one dense copy with every conv and linear weight magnitude-masked to the sparsity, and a copy given to
``sparsify(copy, sparsity=None, example_input=x)``, which keeps each layer's nonzeros and times each
layer dense vs sparse on its own input, swapping only those at least ``min_speedup`` faster (its report
is printed). One training step: forward, cross-entropy, backward, SGD with momentum; rounds alternate
the contenders; median and p20-p80 per contender. The logits of both copies are compared (max
difference relative to the largest logit, both forwards from the same RNG seed: the models' dropout
and stochastic depth draw alike). Nothing else may run beside it: the sparse kernels split each layer
evenly over the threads, so a core taken by another process slows them more than dense. Target
(issue 31): the sparsified model at least 1.0x dense on every model, on an AVX2 and an AVX-512
machine. Results:
``benchmarks/results/bench_sparsify_models_<device>.json``.
"""

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

import ffops
from benchmarks import harness
from benchmarks.bench_sparse_resnet import (
    add_step_args,
    check_step_args,
    make_step,
    mask_model,
    step_device,
    time_steps,
)

SCRIPT = "bench_sparsify_models"
TORCHVISION = ("resnet18", "resnet50", "mobilenet_v3_large", "efficientnet_b0", "vgg11_bn", "densenet121")
TIMM = ("vit_tiny_patch16_224", "convnext_atto", "regnetx_002")
MODELS = TORCHVISION + TIMM


def build_model(name: str, size: int) -> torch.nn.Module:
    """``name`` from its library's constructor, random weights, 10 classes, for ``size`` x ``size`` input."""
    if name in TORCHVISION:
        import torchvision

        return getattr(torchvision.models, name)(weights=None, num_classes=10)
    import timm

    kwargs = {"img_size": size} if name.startswith("vit_") else {}
    return timm.create_model(name, pretrained=False, num_classes=10, **kwargs)


def bench_model(name: str, args, device: torch.device) -> dict:
    torch.manual_seed(0)
    dense = build_model(name, args.size).to(device).train()
    mask_model(dense, args.sparsity)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    sparse = copy.deepcopy(dense)
    start = time.perf_counter()
    report = ffops.sparse.sparsify(sparse, sparsity=None, example_input=x, repeats=args.measure_repeats)
    setup_s = time.perf_counter() - start
    swapped = [c for c in report.changes if c.action == "sparse"]
    print(f"\n== {name}: {len(swapped)} of {len(report.changes)} layers sparse ({setup_s:.1f} s to measure)")
    if args.verbose:
        print(report)
    with torch.no_grad():  # the same dropout / stochastic-depth draws for both (training mode)
        torch.manual_seed(1)
        ref = dense(x)
        torch.manual_seed(1)
        got = sparse(x)
    diff = (got - ref).abs().max().item() / ref.abs().max().item()
    samples = time_steps(
        {"dense": make_step(dense, x, y), "ffops": make_step(sparse, x, y)}, device, args.warmup, args.rounds
    )
    stats = {k: harness.summarize(v) for k, v in samples.items()}
    speedup = stats["dense"]["median_s"] / stats["ffops"]["median_s"]
    for k, s in stats.items():
        print(f"  {k:<6} {s['median_s'] * 1e3:8.1f} ms  (p20-p80 {s['p20_s'] * 1e3:.0f}-{s['p80_s'] * 1e3:.0f})")
    print(f"  x dense {speedup:.2f}, logits diff {diff:.1e}", flush=True)
    return {
        "model": name,
        "layers": len(report.changes),
        "sparse_layers": len(swapped),
        "setup_s": setup_s,
        "logits_max_rel_diff": diff,
        "step": stats,
        "speedup_vs_dense": speedup,
        "report": [
            {
                "name": c.name,
                "kind": c.kind,
                "action": c.action,
                "dense_ms": c.timing.dense_ms if c.timing else None,
                "sparse_ms": c.timing.sparse_ms if c.timing else None,
                "reason": c.reason,
            }
            for c in report.changes
        ],
    }


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog=f"python -m benchmarks.{SCRIPT}", description=__doc__.split("\n")[0])
    add_step_args(p, rounds=8, quick_rounds=3, measure_repeats=3)
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--size", type=int, default=64, help="input height and width (default 64)")
    p.add_argument("--verbose", action="store_true", help="print each model's sparsify report")
    args = p.parse_args(argv)
    check_step_args(p, args, rounds=8, quick_rounds=3)
    if args.size < 32:
        p.error(f"--size must be at least 32 (the models downsample 32x), got {args.size}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = step_device(args)
    meta = harness.metadata(device)
    print(
        f"{SCRIPT}: {harness.machine_line(meta)}, torch {meta['torch']}, batch {args.batch}, "
        f"{args.size} x {args.size}, sparsity {args.sparsity}, {args.rounds} rounds",
        flush=True,
    )
    results = [bench_model(name, args, device) for name in args.models]
    print(f"\n{'model':<22} {'sparse layers':>13} {'dense ms':>9} {'ffops ms':>9} {'x dense':>8}")
    for r in results:
        dense_ms, ffops_ms = r["step"]["dense"]["median_s"] * 1e3, r["step"]["ffops"]["median_s"] * 1e3
        layers = f"{r['sparse_layers']}/{r['layers']}"
        print(f"{r['model']:<22} {layers:>13} {dense_ms:>9.1f} {ffops_ms:>9.1f} {r['speedup_vs_dense']:>7.2f}x")
    worst = min(results, key=lambda r: r["speedup_vs_dense"])
    met = worst["speedup_vs_dense"] >= 1.0
    print(
        f"\ntarget: sparsify(model, {args.sparsity}, example_input=x) >= 1.0x dense on every model: "
        f"{'MET' if met else 'MISSED'} (worst {worst['speedup_vs_dense']:.2f}x, {worst['model']})"
    )
    print(f"load average at the end {harness.load_average()}")
    if not args.no_json:
        path = harness.results_path(SCRIPT, device) if args.out is None else Path(args.out)
        payload = {"script": SCRIPT, "metadata": meta, "config": vars(args), "models": results}
        payload["loadavg_at_end"] = harness.load_average()
        harness.write_json(path, payload)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
