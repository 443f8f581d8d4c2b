"""The hot path of an op call (issue 14): one dispatcher call per op, its autograd in C++.

On every backend that runs kernels, a public call on a tensor that needs a gradient puts exactly one
autograd node between its output and its input, and that node is the op's C++ node (no Python
``BackwardCFunction``, no view / reshape / permute glue), for 2-D inputs and, for the norms and
activations, for N-D ones. On a GPU, a forward + backward runs with synchronizing calls turned into
errors (``torch.cuda.set_sync_debug_mode``): no host sync, no host-to-device copy.
"""

import pytest
import torch

import ffops
from tests.conftest import HAS_GPU


class _SparseLinearCall:
    """``ffops.sparse_linear`` of x [..., 40] with a fixed 24 x 40 pattern at 80 % sparsity (its tensors
    made once per device, so that a call copies nothing to the device)."""

    def __init__(self):
        gen = torch.Generator().manual_seed(0)
        crow, col = ffops.sparse.pattern_from_mask(torch.rand(24, 40, generator=gen) < 0.2)
        self.cpu = (torch.randn(col.numel(), generator=gen), crow, col)
        self.per_device = {}

    def __call__(self, x):
        if x.device not in self.per_device:
            values, crow, col = (t.to(x.device) for t in self.cpu)
            self.per_device[x.device] = (values, crow, col, ffops.sparse.transpose_pattern(crow, col, 40))
        values, crow, col, transposed = self.per_device[x.device]
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
# every op on 2-D rows; the activations and norms also on N-D input (the per-sample ops flatten N-D
# samples into rows, a view node, by design)
NODE_CASES = [pytest.param(name, fn, (6, 40), id=f"{name}-2d") for name, fn in _public_calls()] + [
    pytest.param(name, fn, (2, 3, 40), id=f"{name}-3d") for name, fn in _public_calls() if name in N_D_OPS
]


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
    x = torch.randn(64, 256, device="cuda", requires_grad=True)
    with ffops.use_backend(backend):
        fn(x).sum().backward()  # first call: kernel compilation, caches
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            fn(x).sum().backward()
        finally:
            torch.cuda.set_sync_debug_mode("default")
