"""The linear section of benchmarks/bench_sparse.py: its contenders (ffops, ffops[triton], dense,
torch CSR, SparseProp, 2:4 semi-structured) and its grid of ``n x n`` layers (the module docstring of
bench_sparse.py describes both); the timing is benchmarks/sparse_timing.py's, the tables, targets and
plots are in benchmarks/sparse_report.py.
"""

import gc
import time
import warnings

import torch
from torch import nn

import ffops
from benchmarks import harness
from benchmarks.baselines.sparseprop_layer import sparseprop_linear
from benchmarks.harness import Contender
from benchmarks.sparse_report import (
    BASELINE,
    CSR,
    DENSE,
    SEMI,
    SPARSEPROP,
    TRITON,
    dtype_name,
    tolerance,
)
from benchmarks.sparse_timing import Entry, _module_fn, print_point, time_point
from ffops.nn import SparseLinear
from ffops.sparse import magnitude_mask

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
SEMI_SPARSITY = 0.5  # the 2:4 contender runs at the grid's points of this sparsity (2:4 is 50 % sparse)

# torch's sparse CSR support warns that it is in beta on every CSR tensor made
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
# and its semi-structured (2:4) tensors, once, that they are a prototype
warnings.filterwarnings("ignore", message="The PyTorch API of SparseSemiStructuredTensor", category=UserWarning)


# ---- contenders ----------------------------------------------------------------------------------


def csr_linear(x, w_csr, bias):
    """``x @ W^T + b`` through torch's sparse CSR matmul (the weight is the sparse operand)."""
    return torch.sparse.mm(w_csr, x.t()).t() + bias


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]


def probe_csr(device: torch.device, dtype: torch.dtype) -> str | None:
    """None if torch's CSR matmul runs forward and backward in ``dtype`` on ``device``, else why not (e.g.
    torch 2.14's CPU (MKL) path has no bfloat16: "addmm_out_sparse_csr_impl_mkl" not implemented)."""
    try:
        gen = torch.Generator(device=device).manual_seed(0)
        w = torch.randn(16, 16, generator=gen, device=device).mul_(
            torch.rand(16, 16, generator=gen, device=device) < 0.3
        )
        w_csr = w.to(dtype).to_sparse_csr().requires_grad_()
        x = torch.randn(4, 16, generator=gen, device=device, dtype=dtype).requires_grad_()
        b = torch.zeros(16, device=device, dtype=dtype, requires_grad=True)
        y = csr_linear(x, w_csr, b)
        torch.autograd.grad(y, (x, w_csr, b), torch.ones_like(y))
        harness._sync(device)
    except Exception as e:  # any failure means: not this contender in this dtype
        return f"torch's CSR matmul fails in {dtype_name(dtype)} on {device.type}: {_error(e)}"
    return None


def triton_contender_applies(device: torch.device, ffops_backend: str) -> bool:
    """The ffops[triton] contender: on CUDA with ffops' Triton backend, unless the ffops contender runs
    Triton already (``--ffops-backend triton``, or auto without the CUDA C++ kernels)."""
    avail = ffops.available()
    if device.type != "cuda" or not avail["triton"] or ffops_backend == "triton":
        return False
    return not (ffops_backend == "auto" and not avail["cuda"])


def prune_2_4(weight: torch.Tensor) -> torch.Tensor:
    """The 2:4 mask of ``weight [out, in]``: in every group of 4 consecutive input weights of a row, the 2
    of largest magnitude (``in`` a multiple of 4)."""
    out_f, in_f = weight.shape
    groups = weight.detach().abs().reshape(out_f, in_f // 4, 4)
    keep = torch.zeros(groups.shape, dtype=torch.bool, device=weight.device)
    keep.scatter_(-1, groups.topk(2, dim=-1).indices, True)
    return keep.reshape(out_f, in_f)


def semi_linear(x, x_half, w_semi, bias):
    """The 2:4 contender: ``x_half @ W^T + b`` with ``W`` a ``SparseSemiStructuredTensor`` (cuSPARSELt, else
    CUTLASS). ``x`` (the shared input, in the run's dtype) is unused: ``x_half`` is its copy in the 2:4 dtype,
    made outside the timings. Inference only: nothing here requires grad."""
    return torch.nn.functional.linear(x_half, w_semi, bias)


class SemiStructured:
    """torch's 2:4 semi-structured weight of one dense ``nn.Linear`` (CUDA): the weight pruned to 2:4 by
    :func:`prune_2_4` (from the unpruned dense weight, so the same at every sparsity), in float16 (a
    float32 run) or bfloat16, converted with ``torch.sparse.to_sparse_semi_structured`` (cuSPARSELt; the
    CUTLASS kernels if that fails). Forward only: torch's ``SparseSemiStructuredTensor`` implements only
    the inference ops (mm / addmm / linear, t, detach, ...; torch/sparse/semi_structured.py), no weight
    gradient (2:4 training is torchao's, with its own autograd functions), and torch's tutorial uses it to
    accelerate ``nn.Linear`` for inference. Build raises on any failure (unsupported GPU, dtype, shape).
    """

    def __init__(self, linear: nn.Linear, dtype: torch.dtype):
        from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

        self.dtype = torch.bfloat16 if dtype == torch.bfloat16 else torch.float16
        weight = linear.weight.detach()
        keep = prune_2_4(weight)
        self.dense_weight = weight.to(self.dtype).masked_fill(~keep, 0)  # the 2:4 weight, densely
        self.bias = linear.bias.detach().to(self.dtype)
        errors = []
        previous = SparseSemiStructuredTensor._FORCE_CUTLASS
        for force_cutlass in (False, True):
            SparseSemiStructuredTensor._FORCE_CUTLASS = force_cutlass
            try:
                w = to_sparse_semi_structured(self.dense_weight)
                x = torch.randn(64, weight.shape[1], device=weight.device, dtype=self.dtype)
                y = semi_linear(None, x, w, self.bias)  # a first forward: a backend may convert, then fail here
                ref = torch.nn.functional.linear(x.float(), self.dense_weight.float(), self.bias.float())
                diff = harness._max_diff((y,), (ref,))
                if diff > tolerance(dtype_name(self.dtype)):
                    raise RuntimeError(f"its output differs from its dense 2:4 weight's by {diff:.1e}")
                self.weight, self.backend = w, w.BACKEND
                break
            except Exception as e:  # reported, the run goes on without it
                errors.append(f"{'CUTLASS' if force_cutlass else 'default (cuSPARSELt)'}: {_error(e)}")
            finally:
                SparseSemiStructuredTensor._FORCE_CUTLASS = previous
        else:
            raise RuntimeError("; ".join(errors))

    def entry(self, x: torch.Tensor) -> Entry:
        """The contender on input ``x``: forward only, checked against its own dense 2:4 weight in float32."""
        x_half = x.detach().to(self.dtype)

        def reference(_x):
            y = torch.nn.functional.linear(x_half.float(), self.dense_weight.float(), self.bias.float())
            return {"out": y}

        return Entry(
            Contender(SEMI, semi_linear),
            (x_half, self.weight, self.bias),
            fwd_only=True,
            reference=reference,
            tolerance=tolerance(dtype_name(self.dtype)),
        )


def build_contenders(
    linear: nn.Linear,
    mask: torch.Tensor,
    device: torch.device,
    ffops_backend: str,
    sparseprop_modules,
    *,
    csr: bool = True,
    triton: bool = False,
) -> tuple[list[tuple[Contender, tuple]], dict]:
    """``[(contender, (weight, bias)), ...]`` (ffops first) on one weight and mask, and info.

    ``linear`` in the run's dtype; ``csr``: with torch csr; ``triton``: with ffops[triton] (the same layer).
    """
    layer = SparseLinear.from_dense(linear, mask=mask)
    ctx = None if ffops_backend == "auto" else (lambda: ffops.use_backend(ffops_backend))
    entries = [(Contender(BASELINE, _module_fn(layer), context=ctx), (layer.values, layer.bias))]
    if triton:
        triton_ctx = lambda: ffops.use_backend("triton")
        entries.append((Contender(TRITON, _module_fn(layer), context=triton_ctx), (layer.values, layer.bias)))
    dense = layer.to_dense()  # nn.Linear with the masked weight, the same bias
    entries.append((Contender(DENSE, _module_fn(dense)), (dense.weight, dense.bias)))
    values = layer.values.detach()
    if csr:
        w_csr = torch.sparse_csr_tensor(
            layer.crow_indices.long(),
            layer.col_indices.long(),
            values.clone(),
            size=(linear.out_features, linear.in_features),
            device=device,
        )
        w_csr.requires_grad_()
        entries.append((Contender(CSR, csr_linear), (w_csr, layer.bias.detach().clone().requires_grad_())))
    if sparseprop_modules is not None and device.type == "cpu":
        sp = sparseprop_linear(
            sparseprop_modules,
            dense.weight.detach(),
            layer.bias,
            layer.crow_indices,
            layer.col_indices,
            values,
        )
        entries.append((Contender(SPARSEPROP, _module_fn(sp)), (sp.W_val, sp.bias)))
    info = {"nnz": layer.nnz, "sparsity_exact": layer.sparsity}
    return entries, info


def float32_reference(linear: nn.Linear, mask: torch.Tensor):
    """``reference(x, grad_outputs)`` of :func:`time_point` for a run in a low-precision dtype: the masked
    dense layer's output and gradients (x, weight at the mask, bias) computed in float32 on the run's own
    (rounded) weight, bias and input, so that the diffs measure the low-precision computation only."""
    weight = linear.weight.detach().masked_fill(~mask, 0).float()
    bias = linear.bias.detach().float()

    def reference(x, grad_outputs):
        xr, wr, br = (t.detach().clone().requires_grad_() for t in (x.float(), weight, bias))
        y = torch.nn.functional.linear(xr, wr, br)
        gx, gw, gb = torch.autograd.grad(y, (xr, wr, br), grad_outputs[0].float())
        return {"out": y.detach(), "x": gx, "weight": gw[mask], "bias": gb}

    return reference


# ---- the grid ------------------------------------------------------------------------------------


def run_grid(device, grid, args, sparseprop_modules, on_point=None, contender_notes=None) -> list[dict]:
    """Every point of ``grid``; ``on_point(results)`` after each (the JSON is rewritten as the run goes).

    ``contender_notes``: ``{name: note}`` of contenders left out (``args.csr_note``, 2:4's failures); a
    new note is printed when it first comes up.
    """
    notes = contender_notes if contender_notes is not None else {}
    dtype = DTYPES[args.dtype]
    low_precision = dtype != torch.float32
    triton = triton_contender_applies(device, args.ffops_backend)
    results = []
    for n in grid["n"]:
        torch.manual_seed(n)
        linear = nn.Linear(n, n, device=device)  # nn.Linear's init: U(-1/sqrt(n), 1/sqrt(n)), float32
        linear_dt = linear if not low_precision else nn.Linear(n, n, device=device, dtype=dtype)
        if low_precision:
            with torch.no_grad():
                linear_dt.weight.copy_(linear.weight)
                linear_dt.bias.copy_(linear.bias)
        gen = torch.Generator(device=device).manual_seed(n + 1)
        xs = {b: torch.randn(b, n, generator=gen, device=device).to(dtype).requires_grad_() for b in grid["batch"]}
        for sparsity in grid["sparsity"]:
            setup = time.perf_counter()
            mask = magnitude_mask(linear.weight, sparsity)  # on the float32 weight: the same mask in every dtype
            entries, winfo = build_contenders(
                linear_dt,
                mask,
                device,
                args.ffops_backend,
                sparseprop_modules,
                csr=args.csr_note is None,
                triton=triton,
            )
            reference = float32_reference(linear_dt, mask) if low_precision else None
            semi = None
            if device.type == "cuda" and sparsity == SEMI_SPARSITY:
                try:
                    semi = SemiStructured(linear, dtype)
                    winfo = {**winfo, "semi_structured_backend": semi.backend}
                except Exception as e:  # the unattended GPU run goes on without 2:4
                    _note(notes, SEMI, f"n={n}: left out: {_error(e)}")
            setup = time.perf_counter() - setup
            for batch in grid["batch"]:
                info = {
                    "n": n,
                    "batch": batch,
                    "sparsity": sparsity,
                    **winfo,
                    "dtype": args.dtype,
                    "setup_s": round(setup, 3),
                }
                timing = dict(
                    budget_s=args.budget,
                    min_repeats=args.min_repeats,
                    min_slow=args.min_slow,
                    max_repeats=args.max_repeats,
                    warmup=args.warmup,
                    reference=reference,
                    tolerance=tolerance(args.dtype),
                )
                name = f"n={n} batch={batch} sparsity={sparsity}"
                extra = []
                if semi is not None:
                    try:
                        extra = [semi.entry(xs[batch])]
                    except Exception as e:
                        _note(notes, SEMI, f"n={n} batch={batch}: left out: {_error(e)}")
                try:
                    r = time_point(name, info, entries + extra, xs[batch], mask, device, **timing)
                except Exception as e:  # 2:4 failed while timed: the point again without it
                    if not extra:
                        raise
                    _note(notes, SEMI, f"n={n} batch={batch}: failed while timed, left out: {_error(e)}")
                    del extra
                    gc.collect()
                    r = time_point(name, info, entries, xs[batch], mask, device, **timing)
                results.append(r)
                print_point(r)
                if on_point is not None:
                    on_point(results)
            del entries, mask, semi, reference
            gc.collect()
    return results


def _note(notes: dict, name: str, note: str) -> None:
    """Record (and print) a note about contender ``name`` (several notes are joined)."""
    print(f"NOTE: {name}: {note}", flush=True)
    notes[name] = f"{notes[name]}; {note}" if notes.get(name) else note
