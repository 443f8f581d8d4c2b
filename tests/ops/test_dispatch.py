"""The hot path of an op call (issue 14): one dispatcher call per op, its autograd in C++.

On every backend that runs kernels, a public call on a tensor that needs a gradient puts exactly one
autograd node between its output and its input, and that node is the op's C++ node (no Python
``BackwardCFunction``, no view / reshape / permute glue), for 2-D inputs and, for the norms and
activations, for N-D ones. On a GPU, a forward + backward runs with synchronizing calls turned into
errors (``torch.cuda.set_sync_debug_mode``): no host sync, no host-to-device copy.
"""

import contextlib
from types import SimpleNamespace

import pytest
import torch

import ffops
from ffops import _backend
from ffops.ops._common import _tensor_arg, on_device_of
from tests.conftest import HAS_GPU

TWO_GPUS = HAS_GPU and torch.cuda.device_count() >= 2


class _SparseLinearCall:
    """``ffops.sparse_linear`` of x [..., in] with a fixed 24 x in pattern at 80 % sparsity (W [out, in]:
    one pattern per input width; its tensors made once per device, so that a call copies nothing to
    the device)."""

    def __init__(self):
        self.made = {}

    def __call__(self, x):
        key = (x.device, x.shape[-1])
        if key not in self.made:
            gen = torch.Generator().manual_seed(0)
            crow, col = ffops.sparse.pattern_from_mask(torch.rand(24, x.shape[-1], generator=gen) < 0.2)
            values, crow, col = (t.to(x.device) for t in (torch.randn(col.numel(), generator=gen), crow, col))
            self.made[key] = (values, crow, col, ffops.sparse.transpose_pattern(crow, col, x.shape[-1]))
        values, crow, col, transposed = self.made[key]
        return ffops.sparse_linear(x, values, crow, col, transposed=transposed)


def _public_calls():
    """(name, fn of x) for the ops whose call is one kernel operator."""
    return [
        ("sparse_linear", _SparseLinearCall()),
        ("regelu2", ffops.regelu2),
        ("resilu2", ffops.resilu2),
        ("fewbit", lambda x: ffops.fewbit(x, "silu", 3)),
        ("ms_layernorm", lambda x: ffops.ms_layernorm(x, 1e-5)),
        ("ms_rmsnorm", ffops.ms_rmsnorm),
        ("goodness", ffops.goodness),
        ("ff_normalize", ffops.ff_normalize),
    ]


def _graph_nodes(t: torch.Tensor) -> list[str]:
    """The names of the autograd nodes reachable from t, the leaves' AccumulateGrad excluded."""
    seen, stack, names = set(), [t.grad_fn], []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node.name() != "torch::autograd::AccumulateGrad":
            names.append(node.name())
        stack.extend(n for n, _ in node.next_functions)
    return names


N_D_OPS = ("regelu2", "resilu2", "fewbit", "ms_layernorm", "ms_rmsnorm")
GPU_SHAPE = (64, 256)  # the input of the GPU tests
# every op on 2-D rows (also at the GPU tests' shape); the activations and norms also on N-D input (the
# per-sample ops flatten N-D samples into rows, a view node, by design)
NODE_CASES = (
    [pytest.param(name, fn, (6, 40), id=f"{name}-2d") for name, fn in _public_calls()]
    + [pytest.param(name, fn, GPU_SHAPE, id=f"{name}-gpu-shape") for name, fn in _public_calls()]
    + [pytest.param(name, fn, (2, 3, 40), id=f"{name}-3d") for name, fn in _public_calls() if name in N_D_OPS]
)


@pytest.mark.parametrize("name,fn,shape", NODE_CASES)
def test_one_cpp_autograd_node_per_call(backend_device, name, fn, shape):
    _, device = backend_device
    x = torch.randn(shape, device=device, requires_grad=True)
    nodes = _graph_nodes(fn(x))
    assert len(nodes) == 1 and nodes[0].startswith(("torch::autograd::CppNode<ffops::", "ffops::")), nodes


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a GPU")
@pytest.mark.parametrize("name,fn", _public_calls(), ids=[n for n, _ in _public_calls()])
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_no_host_sync_on_the_gpu(name, fn, backend):
    if not ffops.available().get(backend):
        pytest.skip(f"backend {backend} not available")
    x = torch.randn(GPU_SHAPE, device="cuda", requires_grad=True)
    with ffops.use_backend(backend):
        fn(x).sum().backward()  # first call: kernel compilation, caches
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            fn(x).sum().backward()
        finally:
            torch.cuda.set_sync_debug_mode("default")


def test_triton_launchers_run_with_their_tensors_device_current(monkeypatch):
    """The CUDA kernel of a ``triton_`` operator is its launcher under ``torch.cuda.device`` of its first
    argument that is always a tensor (Triton launches on the current device). On the CPU the tensor
    and ``torch.cuda.device`` are stand-ins."""
    current = [0]

    @contextlib.contextmanager
    def device(index):
        previous, current[0] = current[0], index
        try:
            yield
        finally:
            current[0] = previous

    monkeypatch.setattr(torch.cuda, "device", device)
    run = on_device_of(lambda *args, **kwargs: (current[0], args, kwargs), 1)
    on_cuda1 = SimpleNamespace(get_device=lambda: 1)
    assert run(None, on_cuda1, 2.0, flag=True) == (1, (None, on_cuda1, 2.0), {"flag": True})
    assert current[0] == 0
    if _backend.CPP_LOADED:  # cwc_block_bwd's first two tensors are optional: the guard reads p's device
        assert _tensor_arg(torch.ops.ffops.triton_cwc_block_bwd.default) == 2


@pytest.mark.gpu
@pytest.mark.skipif(not TWO_GPUS, reason="needs 2 GPUs")
@pytest.mark.parametrize("name,fn", _public_calls(), ids=[n for n, _ in _public_calls()])
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_tensors_on_another_gpu_than_the_current_one(name, fn, backend):
    """Device 0 current, tensors on cuda:1: the same results (forward and gradient) as on device 0."""
    if not ffops.available().get(backend):
        pytest.skip(f"backend {backend} not available")
    x0 = torch.randn(GPU_SHAPE, device="cuda:0")
    results = []
    with ffops.use_backend(backend), torch.cuda.device(0):
        for x in (x0.clone().requires_grad_(), x0.to("cuda:1").requires_grad_()):
            y = fn(x)
            y.sum().backward()
            results.append((y.detach().to("cuda:0"), x.grad.to("cuda:0")))
        assert torch.cuda.current_device() == 0
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
