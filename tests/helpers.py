"""Comparison helpers: low-precision error is judged against torch's own error in that dtype."""

import datetime
import os

import torch
import torch.distributed as dist


def kernel_op(backend: str, name: str):
    """The operator ``name`` of the kernel set a test backend runs: ``ffops::<name>`` (C++ kernels, for the
    "cpu" and "cuda" backends) or ``ffops::triton_<name>`` (the Triton launchers)."""
    return getattr(torch.ops.ffops, ("triton_" if backend == "triton" else "") + name).default


def assert_compile_matches_eager(fn, x: torch.Tensor, grad: torch.Tensor):
    """``fn`` compiled with ``fullgraph=True`` (no graph break) gives its eager output, and the same
    gradient with respect to ``x`` for the output gradient ``grad``."""
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True)
    out_c, out_e = compiled(x), fn(x)
    torch.testing.assert_close(out_c, out_e)
    (gc,) = torch.autograd.grad(out_c, x, grad)
    (ge,) = torch.autograd.grad(out_e, x, grad)
    torch.testing.assert_close(gc, ge)


def assert_matches_reference(out: torch.Tensor, ref64: torch.Tensor, ref_in_dtype: torch.Tensor, name: str = "output"):
    """``out`` (an ffops result in dtype d) is at most 2x as far from the float64 reference
    ``ref64`` as torch's own computation in dtype d (``ref_in_dtype``), plus a few ulps of d."""
    assert out.shape == ref64.shape, f"{name}: shape {tuple(out.shape)} != {tuple(ref64.shape)}"
    assert out.dtype == ref_in_dtype.dtype, f"{name}: dtype {out.dtype} != {ref_in_dtype.dtype}"
    if out.numel() == 0:
        return
    ref64 = ref64.double()
    finite = torch.isfinite(ref64)
    assert torch.equal(torch.isfinite(out), finite), f"{name}: non-finite entries differ"
    assert torch.equal(torch.isnan(out), torch.isnan(ref64)), f"{name}: NaN entries differ"
    if not finite.any():
        return
    o, r, t = out.double()[finite], ref64[finite], ref_in_dtype.double()[finite]
    torch_err = (t - r).abs().max().item()
    # a few ulps of the result's magnitude (at least 1: inputs are O(1), and results that cancel
    # down to ~0 keep the rounding error of their O(1) terms)
    ulps = 8 * torch.finfo(out.dtype).eps * max(r.abs().max().item(), 1.0)
    err = (o - r).abs().max().item()
    assert err <= 2 * torch_err + ulps + 1e-30, (
        f"{name}: max error {err:.3g} exceeds 2x torch's own error in {out.dtype} ({torch_err:.3g}) + {ulps:.3g}"
    )


def make(shape, dtype, device, *, layout="contiguous", scale=1.0):
    """A random activation of ``shape``; ``layout`` makes a non-contiguous view of the same shape."""
    shape = tuple(shape)

    def randn(s):
        return (torch.randn(s, dtype=torch.float64) * scale).to(device=device, dtype=dtype)

    if layout == "contiguous":
        t = randn(shape)
    elif layout == "transposed":  # the transpose of a contiguous tensor: unit stride in dim -2
        t = randn(shape[:-2] + (shape[-1], shape[-2])).transpose(-1, -2)
    elif layout == "row-strided":  # a slice of a wider tensor: unit last stride, larger row stride
        t = randn(shape[:-1] + (shape[-1] + 5,))[..., 2 : 2 + shape[-1]]
    elif layout == "every-other-row":
        t = randn((2 * shape[0],) + shape[1:])[::2]
    else:
        raise ValueError(layout)
    assert t.shape == shape
    return t


def grads_of(fn, inputs, weights):
    """Run ``fn(*inputs)`` and backpropagate ``sum(out_i * weights_i)``; returns (outputs, grads)."""
    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
    outs = fn(*leaves)
    outs = outs if isinstance(outs, tuple) else (outs,)
    total = sum((o.float() * w.to(o.device)).sum() for o, w in zip(outs, weights))
    total.backward()
    return [o.detach() for o in outs], [x.grad for x in leaves]


def init_gloo(rank: int, world: int, store_dir: str) -> None:
    """A gloo process group of ``world`` CPU processes for the DDP tests. They meet through a file in
    ``store_dir`` (a test's own tmp_path), not a TCP port that another process may take between choosing
    it and binding it; a collective that waits more than two minutes raises instead of hanging the suite."""
    dist.init_process_group(
        "gloo",
        init_method=f"file://{os.path.join(store_dir, 'gloo_store')}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=120),
    )


def write_prototype_idx(root, n_train=600, n_test=200, classes=10, seed=0):
    """Learnable 28 x 28 IDX data (MNIST file names) under ``root``: one random prototype per class
    plus noise."""
    import numpy as np

    from tests.test_data import write_idx

    rng = np.random.default_rng(seed)
    protos = rng.integers(0, 256, size=(classes, 28, 28))
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, classes, size=n)
        images = np.clip(protos[labels] + rng.normal(0, 60, size=(n, 28, 28)), 0, 255).astype(np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", labels.astype(np.uint8))
