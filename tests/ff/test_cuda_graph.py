"""FFTrainer(cuda_graph=...) and ffops.ff.cuda_graph: the capture bookkeeping with a stand-in backend
on the CPU (warm-up, one capture per key, replays from static buffers, copied outputs, reset), the
trainer's switch and its errors, the optimizer settings it needs, and that the step it captures reads
nothing back from the device. On a GPU: captured training equals eager training."""

import contextlib

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ffops import ff
from ffops._validation import labels_range_checked
from ffops.ff.cuda_graph import (
    WARMUP_STEPS,
    CudaGraphBackend,
    StepGraphs,
    capturable_optimizer_groups,
    set_learning_rate,
)
from ffops.nn import FFLinear
from tests.conftest import HAS_GPU

TWO_GPUS = HAS_GPU and torch.cuda.device_count() >= 2


class _StandInGraph:
    def __init__(self, generators):
        self.generators, self.fn, self.out = generators, None, None


class _StandInBackend:
    """CUDA graph semantics on the CPU, as far as the bookkeeping sees them: capture records the step
    (the stand-in runs it once to have its output tensors), replay runs it again on the static
    buffers and writes into those outputs."""

    def __init__(self):
        self.eager_calls = 0

    def new_graph(self, generators):
        return _StandInGraph(generators)

    def capture(self, graph, fn):
        graph.fn, graph.out = fn, fn()
        return graph.out

    def replay(self, graph):
        out = graph.fn()
        for i, v in out["losses"].items():
            graph.out["losses"][i].copy_(v)
        graph.out["head_loss"].copy_(out["head_loss"])

    def eager(self, fn):
        self.eager_calls += 1
        return fn()


def _recording_step():
    seen = []

    def step(x, y, train_layers):
        seen.append((x, tuple(train_layers)))
        return {"losses": {i: x.sum() * (i + 1) for i in train_layers}, "head_loss": y.float().sum()}

    return step, seen


def test_warm_up_then_one_capture_per_key_then_replays():
    step, seen = _recording_step()
    backend, gen = _StandInBackend(), torch.Generator()
    graphs = StepGraphs(step, (gen,), backend)
    batches = [(torch.randn(4, 3), torch.randint(0, 5, (4,))) for _ in range(WARMUP_STEPS + 3)]
    outs = [graphs(x, y, [0, 1]) for x, y in batches]
    assert graphs.eager_steps == backend.eager_calls == WARMUP_STEPS and graphs.captures == 1
    assert graphs.replays == 3
    # the warm-up steps see the caller's batch; the captured step reads its static buffer
    assert all(seen[i][0] is batches[i][0] for i in range(WARMUP_STEPS))
    static_x = seen[WARMUP_STEPS][0]
    assert all(x is static_x for x, _ in seen[WARMUP_STEPS:])
    for (x, y), out in zip(batches, outs):  # every step computed on its own batch
        torch.testing.assert_close(out["losses"][1], 2 * x.sum())
        torch.testing.assert_close(out["head_loss"], y.float().sum())
    graph = next(iter(graphs._graphs.values())).graph
    assert graph.generators == (gen,)
    assert outs[-1]["losses"][0] is not graph.out["losses"][0]  # a copy: the next replay overwrites

    # another batch shape or other learning layers: a warm-up and a graph of their own
    graphs(torch.randn(2, 3), torch.randint(0, 5, (2,)), [0, 1])
    graphs(batches[0][0], batches[0][1], [1])
    assert graphs.captures == 1 and graphs.eager_steps == WARMUP_STEPS + 2
    graphs.reset()
    graphs(*batches[0], [0, 1])
    assert graphs.eager_steps == WARMUP_STEPS + 3 and not graphs._graphs
    with pytest.raises(ValueError, match="warmup_steps must be an int >= 1"):
        StepGraphs(step, (), backend, warmup_steps=0)


def _trainer(**kw):
    torch.manual_seed(0)
    model = ff.FFNet([20, 16, 16], num_classes=5)
    return ff.FFTrainer(model, **kw)


def test_the_switch_and_where_it_cannot_apply():
    assert not _trainer(cuda_graph="auto").uses_cuda_graph  # a CPU model: eager
    assert not _trainer().uses_cuda_graph
    with pytest.raises(ValueError, match="cuda_graph=True needs a capturable step, but the model is not on a CUDA"):
        _trainer(cuda_graph=True)
    with pytest.raises(ValueError, match="cuda_graph must be True, False or 'auto'"):
        _trainer(cuda_graph="yes")
    cuda = torch.device("cuda")
    resolve = ff.FFTrainer._resolve_cuda_graph
    assert resolve("op", True, cuda, False, "hard") and resolve("op", "auto", cuda, False, "random")
    assert not resolve("op", "auto", cuda, True, "hard") and not resolve("op", "auto", cuda, False, "hybrid")
    with pytest.raises(ValueError, match="ddp=True"):
        resolve("op", True, cuda, True, "hard")
    with pytest.raises(ValueError, match="negatives='hybrid'"):
        resolve("op", True, cuda, False, "hybrid")


def test_optimizer_groups_become_capturable_with_tensor_learning_rates():
    params = [torch.nn.Parameter(torch.randn(3))]
    adam, sgd = torch.optim.Adam(params, lr=0.01), torch.optim.SGD(params, lr=0.1, momentum=0.9)
    for opt in (adam, sgd):
        capturable_optimizer_groups(opt, torch.device("cpu"))
        capturable_optimizer_groups(opt, torch.device("cpu"))  # idempotent
    assert adam.param_groups[0]["capturable"] is True and "capturable" not in sgd.param_groups[0]
    # SGD's fused kernel reads a learning-rate tensor on the device; its other paths call .item()
    assert sgd.param_groups[0]["fused"] is True and sgd.param_groups[0]["foreach"] is False
    lr = adam.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and lr.dtype == torch.float32 and float(lr) == pytest.approx(0.01)
    set_learning_rate(adam.param_groups[0], 0.005)
    assert adam.param_groups[0]["lr"] is lr and float(lr) == pytest.approx(0.005)  # in place: graphs read it
    group = {"lr": 0.1}
    set_learning_rate(group, 0.2)
    assert group["lr"] == 0.2


def test_tensor_learning_rates_become_float32_on_the_device():
    """A checkpoint loaded without map_location gives tensor learning rates of any dtype and device: they
    are converted in the group (a graph must read the tensor the cooldown fills), keeping their value."""
    params = [torch.nn.Parameter(torch.randn(3))]
    adam, sgd = torch.optim.Adam(params, lr=0.01), torch.optim.SGD(params, lr=0.1)
    adam.param_groups[0]["lr"] = torch.tensor(0.01, dtype=torch.float64)
    sgd.param_groups[0]["lr"] = torch.tensor(0.1)  # on the CPU; the model is on a stand-in device (meta)
    capturable_optimizer_groups(adam, torch.device("cpu"))
    capturable_optimizer_groups(sgd, torch.device("meta"))
    lr = adam.param_groups[0]["lr"]
    assert lr.dtype == torch.float32 and lr.device.type == "cpu" and float(lr) == pytest.approx(0.01)
    assert sgd.param_groups[0]["lr"].device.type == "meta" and sgd.param_groups[0]["lr"].dtype == torch.float32
    capturable_optimizer_groups(adam, torch.device("cpu"))
    assert adam.param_groups[0]["lr"] is lr  # already right: kept


def test_one_targets_buffer_per_batch_shape():
    """A captured graph reads the softplus loss's targets buffer at every replay: steps on another batch
    shape (another graph) must not free or replace it."""
    layer = FFLinear(8, 4, threshold=1.0, loss="softplus")
    g_small, g_large = torch.rand(4), torch.rand(6)
    small, large = layer._targets(g_small, 2), layer._targets(g_large, 3)
    for _ in range(2):  # alternating shapes
        assert layer._targets(g_small, 2) is small and layer._targets(g_large, 3) is large
    assert small.tolist() == [1, 1, 0, 0] and large.tolist() == [1, 1, 1, 0, 0, 0]
    assert layer._targets(g_small.double(), 2).dtype == torch.float64


def test_the_cuda_backend_runs_with_the_models_device_current(monkeypatch):
    """A model on cuda:1 while device 0 is current: the warm-up step, the generator's registration (it
    allocates on the current device), the capture (on a stream of that device) and the replay run with
    cuda:1 current. torch.cuda's device, stream and graph calls are stand-ins that record the current
    device."""
    current, seen = [0], []

    @contextlib.contextmanager
    def device(d):
        previous, current[0] = current[0], torch.device(d).index
        try:
            yield
        finally:
            current[0] = previous

    class Stream:
        def __init__(self, d=None):
            self.index = current[0] if d is None else torch.device(d).index

        def wait_stream(self, other):
            pass

    @contextlib.contextmanager
    def graph(cuda_graph, pool=None, stream=None):
        seen.append(("capture", current[0], stream and stream.index))
        yield

    class Graph:
        def register_generator_state(self, gen):
            seen.append(("register", current[0]))

        def replay(self):
            seen.append(("replay", current[0]))

    for name, value in (
        ("device", device),
        ("Stream", Stream),
        ("current_stream", Stream),
        ("stream", lambda s: contextlib.nullcontext()),
        ("graph", graph),
        ("graph_pool_handle", object),
        ("CUDAGraph", Graph),
    ):
        monkeypatch.setattr(torch.cuda, name, value)
    backend = CudaGraphBackend(torch.device("cuda", 1))
    backend.eager(lambda: seen.append(("eager", current[0])))
    captured = backend.new_graph([torch.Generator()])
    backend.capture(captured, lambda: seen.append(("step", current[0])))
    backend.replay(captured)
    assert seen == [("eager", 1), ("register", 1), ("capture", 1, 1), ("step", 1), ("replay", 1)]
    assert current[0] == 0


class _NoScalarReads(TorchDispatchMode):
    """Fails on an op that reads a tensor's value back to the host (a sync on a GPU)."""

    READS = frozenset({torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default})

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in self.READS:
            raise AssertionError(f"host read of a device value in the step: {func}")
        return func(*args, **(kwargs or {}))


@pytest.fixture
def no_host_reads(monkeypatch):
    """Host reads made from Python (item, tolist, bool, int, float) raise too."""

    def refuse(name):
        def read(self, *args, **kwargs):
            raise AssertionError(f"host read of a device value in the step: Tensor.{name}")

        return read

    def enter():
        for name in ("item", "tolist", "__bool__", "__int__", "__float__"):
            monkeypatch.setattr(torch.Tensor, name, refuse(name))
        return _NoScalarReads()

    return enter


@pytest.mark.parametrize(
    "kw",
    [
        {},  # the defaults: all layers, hard negatives, head, input dropout
        {"chunk_size": 4},  # hard negatives from chunked inference
        {"negatives": "random"},
        {"negatives": "head"},
        {"mode": "collaborative", "negatives": "random"},
        {"mode": "greedy"},
        {"backward": "joint", "optimizer": "sgd"},
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "defaults",
)
def test_the_captured_step_reads_nothing_back(no_host_reads, kw):
    trainer = _trainer(**kw)
    x, y = torch.rand(8, 20), torch.randint(0, 5, (8,))
    trainer._step(x, y, [0, 1])  # a first step: optimizer state made
    mode = no_host_reads()
    with labels_range_checked(), mode:
        out = trainer._step(x, y, [0] if kw.get("mode") == "greedy" else [0, 1])
    assert set(out) == {"losses", "head_loss"}


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_the_captured_configuration_steps_its_optimizers_without_host_reads(no_host_reads, optimizer):
    """With the learning rates as tensors (capturable_optimizer_groups, as FFTrainer(cuda_graph=True)
    sets them on a GPU), the optimizers' steps read nothing back either."""
    trainer = _trainer(optimizer=optimizer)
    assert trainer.optimizers[0].param_groups[0]["fused"]  # eager steps as captured ones
    x, y = torch.rand(8, 20), torch.randint(0, 5, (8,))
    trainer._step(x, y, [0, 1])
    for opt in trainer._all_optimizers():
        capturable_optimizer_groups(opt, trainer.model.device)
    mode = no_host_reads()
    with labels_range_checked(), mode:
        trainer._step(x, y, [0, 1])


def test_public_train_step_still_checks_labels():
    trainer = _trainer()
    with pytest.raises(ValueError, match="labels"):
        trainer.train_step(torch.rand(4, 20), torch.tensor([0, 1, 2, 7]))


CAPTURE_CASES = [
    pytest.param("cuda", kw, id=",".join(f"{k}={v}" for k, v in kw.items()) or "defaults")
    for kw in ({}, {"negatives": "random", "optimizer": "sgd"}, {"mode": "greedy"})
] + [
    # device 0 stays current: the capture, the replays and the Triton launches must go to the model's device
    pytest.param(
        "cuda:1", kw, id="cuda:1-" + kw["optimizer"], marks=pytest.mark.skipif(not TWO_GPUS, reason="needs 2 GPUs")
    )
    for kw in ({"optimizer": "adam"}, {"optimizer": "sgd"})
]


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a GPU")
@pytest.mark.parametrize("device,kw", CAPTURE_CASES)
def test_captured_training_equals_eager_training(device, kw):
    torch.manual_seed(0)
    x, y = torch.rand(400, 20, device=device), torch.randint(0, 5, (400,), device=device)
    current = torch.cuda.current_device()
    runs = []
    for graph in (False, True):
        torch.manual_seed(1)
        model = ff.FFNet([20, 32, 32], num_classes=5).to(device)
        trainer = ff.FFTrainer(model, cuda_graph=graph, **kw)
        trainer.fit(x, y, epochs=2, batch_size=40)
        runs.append((trainer, [p.detach().clone() for p in model.parameters()]))
    (eager, p_eager), (captured, p_captured) = runs
    assert captured.uses_cuda_graph and captured._graphs.replays > 0
    assert torch.cuda.current_device() == current
    for a, b in zip(p_eager, p_captured):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert len(eager.history) == len(captured.history)
    for a, b in zip(eager.history, captured.history):  # per epoch: a loss per layer (None: not learning)
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["head_loss"] == pytest.approx(a["head_loss"], rel=1e-5)
