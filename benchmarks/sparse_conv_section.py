"""The conv section of benchmarks/bench_sparse.py: ``ffops.nn.SparseConv2d`` against the dense conv and
SparseProp's conv, fwd+bwd, on ResNet-18 / VGG-style 3x3 layers.

The grid (:data:`LAYERS` x :data:`SPARSITIES`, or :data:`QUICK`) and its contenders; the timing is
benchmarks/sparse_timing.py's, the tables, targets and plot are in benchmarks/sparse_report.py.
Every layer is ``nn.Conv2d(in, out, 3, stride, padding=1, bias=True)`` (torch's init) on ``x [32,
in, H, W]``, float32, its weight pruned by magnitude (``ffops.sparse.magnitude_mask``) per sparsity.
"""

import contextlib
import gc
import time
from typing import NamedTuple

import torch
from torch import nn

import ffops
from benchmarks.baselines.sparseprop_layer import sparseprop_conv2d, sparseprop_conv2d_values
from benchmarks.harness import Contender
from benchmarks.sparse_report import BASELINE, DENSE, IM2COL, SPARSEPROP
from benchmarks.sparse_timing import Entry, _module_fn, print_point, time_point
from ffops.nn import SparseConv2d
from ffops.ops.sparse_conv import direct_conv_applies
from ffops.sparse import magnitude_mask

BATCH, KERNEL, PADDING = 32, 3, 1


class ConvShape(NamedTuple):
    """One conv layer of the grid: ``in -> out`` channels at ``size x size`` inputs, ``stride``."""

    in_channels: int
    out_channels: int
    size: int
    stride: int = 1

    @property
    def label(self) -> str:
        return f"{self.in_channels}->{self.out_channels}"


# ResNet-18 / VGG-style layers on 32x32 inputs, the 256 -> 256 at 14x14, and a stride-2 layer
LAYERS = (
    ConvShape(64, 64, 32),
    ConvShape(128, 128, 16),
    ConvShape(256, 256, 14),
    ConvShape(256, 256, 8),
    ConvShape(512, 512, 4),
    ConvShape(64, 128, 32, 2),
)
SPARSITIES = (0.8, 0.9, 0.95, 0.98)
QUICK = {"layers": (ConvShape(64, 64, 32), ConvShape(256, 256, 14)), "sparsity": (0.9, 0.95)}


def conv_grid(quick: bool) -> dict:
    return dict(QUICK) if quick else {"layers": LAYERS, "sparsity": SPARSITIES}


def grid_config(grid: dict) -> dict:
    """The grid as JSON: layers as ``[in, out, size, stride]``, and the fixed batch, kernel and padding."""
    return {
        "layers": [list(s) for s in grid["layers"]],
        "sparsity": list(grid["sparsity"]),
        "batch": BATCH,
        "kernel": KERNEL,
        "padding": PADDING,
    }


def describe_grid(grid: dict) -> str:
    """One line: the fixed geometry, the layers as ``in->out@HxW[/stride]``, the sparsities."""
    layers = ", ".join(
        f"{s.label}@{s.size}x{s.size}" + (f"/stride {s.stride}" if s.stride != 1 else "") for s in grid["layers"]
    )
    return (
        f"conv grid: batch {BATCH}, {KERNEL}x{KERNEL}, padding {PADDING}, bias; layers {layers}; "
        f"sparsity {list(grid['sparsity'])}"
    )


def conv_contender_names(device: torch.device, sparseprop_modules) -> list[str]:
    """ffops (auto), ffops im2col, dense, sparseprop on the CPU; ffops (im2col there) and dense on CUDA."""
    if device.type == "cuda":
        return [BASELINE, DENSE]
    return [BASELINE, IM2COL, DENSE] + ([SPARSEPROP] if sparseprop_modules is not None else [])


def _ffops_context(ffops_backend: str):
    return None if ffops_backend == "auto" else (lambda: ffops.use_backend(ffops_backend))


def _ffops_path(layer: SparseConv2d, x: torch.Tensor, context) -> str:
    """The algorithm ``layer`` runs on ``x``: "direct" or "im2col" (under the contender's backend)."""
    if layer.algorithm != "auto":
        return layer.algorithm
    with context() if context is not None else contextlib.nullcontext():
        return "direct" if direct_conv_applies(x, layer.kernel_size, layer.stride) else "im2col"


def build_conv_contenders(
    conv: nn.Conv2d, mask: torch.Tensor, x: torch.Tensor, ffops_backend: str, sparseprop_modules
) -> tuple[list[Entry], dict]:
    """``[entry, ...]`` in :func:`conv_contender_names`' order on one weight and mask, and info (nnz,
    ffops' path on ``x``, SparseProp's chosen mode)."""
    context, cpu = _ffops_context(ffops_backend), x.device.type == "cpu"
    layers = {BASELINE: SparseConv2d.from_dense(conv, mask=mask, algorithm="auto")}
    if cpu:
        layers[IM2COL] = SparseConv2d.from_dense(conv, mask=mask, algorithm="im2col")
    entries = [Entry(Contender(n, _module_fn(m), context=context), (m.values, m.bias)) for n, m in layers.items()]
    layer = layers[BASELINE]
    dense = layer.to_dense()  # nn.Conv2d with the masked weight, the same bias
    entries.append(Entry(Contender(DENSE, _module_fn(dense)), (dense.weight, dense.bias)))
    info = {"nnz": layer.nnz, "sparsity_exact": layer.sparsity, "ffops_path": _ffops_path(layer, x, context)}
    if sparseprop_modules is not None and cpu:
        sp = sparseprop_conv2d(sparseprop_modules, dense, tuple(x.shape), mask)
        to_values = lambda g: sparseprop_conv2d_values(sp, g, mask)
        entries.append(Entry(Contender(SPARSEPROP, _module_fn(sp)), (sp.W_val, sp.bias), to_values))
        info["sparseprop_vectorizing_over_on"] = sp.vectorizing_over_on
    return entries, info


def _make_layer(shape: ConvShape, device: torch.device) -> tuple[nn.Conv2d, torch.Tensor]:
    """The dense layer of ``shape`` (torch's init, a fixed seed per shape) and its input ``x``."""
    seed = 1000 * shape.in_channels + 10 * shape.size + shape.stride
    torch.manual_seed(seed)
    conv = nn.Conv2d(shape.in_channels, shape.out_channels, KERNEL, shape.stride, PADDING, bias=True, device=device)
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    x = torch.randn(BATCH, shape.in_channels, shape.size, shape.size, generator=gen, device=device)
    return conv, x.requires_grad_()


def time_conv_point(conv, x, shape: ConvShape, sparsity: float, args, sparseprop_modules) -> dict:
    """One point: the contenders of ``conv`` pruned to ``sparsity``, timed on ``x`` (``args``: bench_sparse's)."""
    setup = time.perf_counter()
    mask = magnitude_mask(conv.weight, sparsity)
    entries, winfo = build_conv_contenders(conv, mask, x, args.ffops_backend, sparseprop_modules)
    info = {
        "layer": shape.label,
        "in_channels": shape.in_channels,
        "out_channels": shape.out_channels,
        "size": shape.size,
        "stride": shape.stride,
        "kernel": KERNEL,
        "padding": PADDING,
        "batch": BATCH,
        "sparsity": sparsity,
        **winfo,
        "dtype": "float32",
        "setup_s": round(time.perf_counter() - setup, 3),
    }
    return time_point(
        f"conv {shape.label} {shape.size}x{shape.size} stride={shape.stride} sparsity={sparsity}",
        info,
        entries,
        x,
        mask,
        x.device,
        budget_s=args.budget,
        min_repeats=args.min_repeats,
        min_slow=args.min_slow,
        max_repeats=args.max_repeats,
        warmup=args.warmup,
    )


def run_conv_grid(device, grid, args, sparseprop_modules, on_point=None) -> list[dict]:
    """Every point of the conv ``grid``; ``on_point(results)`` after each (the JSON is rewritten as the run goes)."""
    results = []
    for shape in grid["layers"]:
        conv, x = _make_layer(shape, device)
        for sparsity in grid["sparsity"]:
            results.append(time_conv_point(conv, x, shape, sparsity, args, sparseprop_modules))
            print_point(results[-1])
            if on_point is not None:
                on_point(results)
            gc.collect()
    return results
