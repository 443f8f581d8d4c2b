"""Every C++ autograd node under the autograd features of training stacks (issue 30, items 1 and 2).

* Gradient checkpointing (``torch.utils.checkpoint``, non-reentrant, as Hugging Face's
  ``gradient_checkpointing_enable()`` uses it) with the ffops op as the *last* op of the block: the
  node's saved tensors are unpacked by checkpoint's hook, which recomputes the block; that recomputation
  must record its saved tensors as the first forward did.
* Compiled autograd (``torch._dynamo.compiled_autograd``) over an eager forward: each node declares its
  saved state (``compiled_args``) and puts its formula into the captured graph (``apply_with_saved``).

Both are checked against plain eager autograd on the same inputs, for every node type, on the C++ CPU
kernels and on the Triton kernels under the interpreter (their nodes are separate instantiations, bound
to compiled autograd under their own names). The GPU runs the same node code.
"""

import pytest
import torch
from torch.utils.checkpoint import checkpoint

import ffops
from ffops import sparse

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _sparse_weight(out_features: int, in_features: int):
    gen = torch.Generator().manual_seed(3)
    crow, col = sparse.pattern_from_mask(torch.rand(out_features, in_features, generator=gen) < 0.3)
    return torch.randn(col.numel(), generator=gen), crow, col


def _cases():
    """(name, make inputs, block): block(*inputs) ends with the ffops op and returns its outputs."""
    crow_col = _sparse_weight(12, 16)[1:]
    conv = ffops.nn.SparseConv2d.from_dense(torch.nn.Conv2d(3, 4, 3, padding=1), sparsity=0.5)
    rows = lambda *shape: lambda: [torch.randn(*shape, dtype=torch.float64).requires_grad_()]
    return [
        ("regelu2", rows(4, 16), lambda x: ffops.regelu2(x * 1.5)),
        ("resilu2", rows(4, 16), lambda x: ffops.resilu2(x * 1.5)),
        ("fewbit", rows(4, 16), lambda x: ffops.fewbit(x * 1.5, "gelu", 2)),
        ("ms_layernorm", rows(2, 3, 16), lambda x: ffops.ms_layernorm(x * 1.5)),
        ("ms_rmsnorm", rows(4, 16), lambda x: ffops.ms_rmsnorm(x * 1.5)),
        ("goodness", rows(4, 16), lambda h: ffops.goodness(h * 1.5)),
        ("ff_normalize", rows(4, 16), lambda h: ffops.ff_normalize(h * 1.5)),
        ("goodness_and_normalize", rows(4, 16), lambda h: ffops.goodness_and_normalize(h * 1.5)),
        (
            "ff_loss",
            lambda: [torch.randn(4, 16, dtype=torch.float64, requires_grad=True) for _ in range(2)],
            lambda pos, neg: ffops.ff_loss(pos * 1.5, neg, 2.0, loss="symba"),
        ),
        (
            "ff_linear",
            lambda: [
                torch.randn(6, 16, dtype=torch.float64),
                torch.randn(8, 16, dtype=torch.float64, requires_grad=True),
                torch.randn(8, dtype=torch.float64, requires_grad=True),
            ],
            lambda x, w, b: ffops.ff_linear(x, w * 1.5, b, n_pos=3)[1:],
        ),
        (
            "ff_linear_overlay",
            lambda: [
                torch.randn(3, 16, dtype=torch.float64),
                torch.randn(8, 16, dtype=torch.float64, requires_grad=True),
                torch.randn(8, dtype=torch.float64, requires_grad=True),
            ],
            lambda base, w, b: ffops.ff_linear_overlay(
                base, torch.tensor([0, 1, 2, 3, 4, 5]), 1.0, w * 1.5, b, num_classes=10, n_pos=3
            )[1:],
        ),
        (
            "cwc_block",
            lambda: [
                torch.randn(2, 4, 6, 6, dtype=torch.float64, requires_grad=True),
                torch.rand(4, dtype=torch.float64).add(0.5).requires_grad_(),
                torch.randn(4, dtype=torch.float64, requires_grad=True),
            ],
            lambda z, w, b: ffops.cwc_block(z * 1.5, w, b, num_classes=2),
        ),
        (
            "sparse_linear",
            lambda: [
                torch.randn(5, 16, dtype=torch.float64, requires_grad=True),
                torch.randn(crow_col[1].numel(), dtype=torch.float64, requires_grad=True),
            ],
            lambda x, values: ffops.sparse_linear(x * 1.5, values, *crow_col),
        ),
        (
            "sparse_conv2d",
            lambda: [torch.randn(2, 3, 5, 5, requires_grad=True)],
            lambda x: conv(x * 1.5),
        ),
    ]


CASES = [pytest.param(*case, id=case[0]) for case in _cases()]


def _loss(outputs) -> torch.Tensor:
    outputs = outputs if isinstance(outputs, tuple | list) else (outputs,)
    return sum(
        (o.double() * torch.linspace(0.5, 1.5, o.numel(), dtype=torch.float64).view_as(o)).sum() for o in outputs
    )


def _grads(make_inputs, block, run_backward=lambda loss: loss.backward(), wrap=lambda block: block):
    torch.manual_seed(0)
    inputs = make_inputs()
    loss = _loss(wrap(block)(*inputs))
    run_backward(loss)
    params = [t for t in inputs if t.requires_grad] + [p for p in _module_params(block)]
    grads = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    return grads


def _module_params(block):
    """The parameters of a module the block closes over (sparse_conv2d's layer)."""
    cells = getattr(block, "__closure__", None) or ()
    return [p for c in cells if isinstance(c.cell_contents, torch.nn.Module) for p in c.cell_contents.parameters()]


def _checkpointed(block):
    return lambda *inputs: checkpoint(block, *inputs, use_reentrant=False)


def _compiled_autograd_backward(loss: torch.Tensor) -> None:
    from torch._dynamo import compiled_autograd

    with compiled_autograd._enable(lambda gm: gm):
        loss.backward()


def _assert_same(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=1e-6, atol=1e-7)


@pytest.fixture
def cpu_backend(backend_device):
    if backend_device[1] != "cpu":
        pytest.skip("CPU tensors only: the C++ and Triton-interpreter runs cover the node code")
    return backend_device[0]


@pytest.mark.parametrize("name, make_inputs, block", CASES)
def test_checkpointed_block_ending_in_the_op_gives_eager_gradients(cpu_backend, name, make_inputs, block):
    _assert_same(_grads(make_inputs, block, wrap=_checkpointed), _grads(make_inputs, block))


@pytest.mark.parametrize("name, make_inputs, block", CASES)
def test_compiled_autograd_gives_eager_gradients(cpu_backend, name, make_inputs, block):
    _assert_same(_grads(make_inputs, block, run_backward=_compiled_autograd_backward), _grads(make_inputs, block))


def test_issue_reproducers():
    """The two reproducers of the issue, as written there."""
    lin = torch.nn.Linear(8, 8)
    x = torch.randn(4, 8, requires_grad=True)
    checkpoint(lambda t: ffops.ms_layernorm(lin(t)), x, use_reentrant=False).sum().backward()
    assert x.grad is not None and lin.weight.grad is not None

    from torch._dynamo import compiled_autograd

    x = torch.randn(8, 16, requires_grad=True)
    with compiled_autograd._enable(lambda gm: gm):
        ffops.regelu2(x).sum().backward()
    (expected,) = torch.autograd.grad(ffops.regelu2(x).sum(), x)
    torch.testing.assert_close(x.grad, expected)


def test_compiled_autograd_under_torch_compile():
    """The formula traced by dynamo (fake tensors) and compiled: the same gradients as eager."""
    from torch._dynamo import compiled_autograd

    make_inputs, block = (lambda: [torch.randn(4, 16, requires_grad=True)]), ffops.ms_rmsnorm
    torch._dynamo.reset()

    def run(loss):
        with compiled_autograd._enable(torch.compile(backend="aot_eager", fullgraph=True)):
            loss.backward()

    _assert_same(_grads(make_inputs, block, run_backward=run), _grads(make_inputs, block))
