"""A Forward-Forward training step captured in a CUDA graph and replayed: ``FFTrainer(cuda_graph=True)``.

An FF step on a GPU is hundreds of small kernel launches (per layer: the overlay GEMM, goodness, loss,
normalization, backward, the optimizer), and at MNIST sizes the host spends longer launching them than
the GPU running them. A CUDA graph records the launches of one step once and replays them with one
call. What makes the trainer's step capturable, and how it is provided:

* no host reads inside the step: the label values are checked once per ``fit`` (the whole dataset;
  ``ffops.ff.labels.labels_range_checked``), the wrong labels drawn are in range by construction;
* static memory: every step reads the batch from the same two buffers (the batch is copied in), and
  the gradients are allocated inside the capture (they are None before it and set to None after each
  step), so every replay writes them to the same addresses;
* the optimizers: Adam / AdamW with ``capturable=True``, SGD fused (its kernel reads a learning-rate
  tensor on the device; the others read it back to the host), and the learning rate as a float32
  tensor on the model's device (the cooldown writes it in place);
* random numbers: the trainer's noise generator is registered with the graph, so each replay draws
  fresh numbers (input dropout, negatives) as an eager step would.

One graph per (batch shape, learning layers): greedy phases get one each; all share one memory pool.
The first ``WARMUP_STEPS`` steps of a shape run eagerly on a side stream, as torch's whole-network
capture recipe does (they fill the optimizer state, the allocator and the kernel caches). They are
real steps on real batches, and a capture records without running, so the captured step of the
batch that triggered it is replayed at once: a captured run takes the same steps as an eager one.

``StepGraphs`` is device-independent bookkeeping around a ``GraphBackend`` (``CudaGraphBackend`` on a
GPU; the tests give it a stand-in on the CPU).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import torch

WARMUP_STEPS = 3


class CudaGraphBackend:
    """The CUDA side: graphs, one shared memory pool, a side stream for the warm-up steps and the
    captures. Everything runs with ``device`` current: CUDA graphs capture and replay on the current
    device's streams, and the Triton launchers launch there."""

    def __init__(self, device: torch.device):
        self.device = device
        self.pool = None
        self.stream = None

    def new_graph(self, generators) -> Any:
        with torch.cuda.device(self.device):  # the first registration allocates the RNG state's seed there
            graph = torch.cuda.CUDAGraph()
            for gen in generators:  # each replay then advances the generator as an eager step would
                graph.register_generator_state(gen)
        return graph

    def _side_stream(self) -> torch.cuda.Stream:
        if self.stream is None:
            self.stream = torch.cuda.Stream(self.device)
        return self.stream

    def capture(self, graph, fn: Callable[[], Any]) -> Any:
        with torch.cuda.device(self.device):
            if self.pool is None:
                self.pool = torch.cuda.graph_pool_handle()
            # our own stream: torch's default capture stream is made once, on whichever device is current then
            with torch.cuda.graph(graph, pool=self.pool, stream=self._side_stream()):
                return fn()

    def replay(self, graph) -> None:
        with torch.cuda.device(self.device):
            graph.replay()

    def eager(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` on a side stream (a warm-up step), ordered after and before the current stream's work."""
        with torch.cuda.device(self.device):
            stream, current = self._side_stream(), torch.cuda.current_stream(self.device)
            stream.wait_stream(current)
            with torch.cuda.stream(stream):
                out = fn()
            current.wait_stream(stream)
        return out


class _Captured(NamedTuple):
    graph: Any
    x: torch.Tensor  # the static batch the graph reads
    y: torch.Tensor
    out: dict  # the static outputs it writes


def _clone_outputs(out: dict) -> dict:
    """A step's ``{"losses": {layer: tensor}, "head_loss": tensor or None}`` with every tensor copied
    (the graph's outputs are overwritten by the next replay)."""
    head = out["head_loss"]
    return {
        "losses": {i: v.clone() for i, v in out["losses"].items()},
        "head_loss": None if head is None else head.clone(),
    }


class StepGraphs:
    """Runs ``step(x, y, train_layers)`` eagerly for the first ``WARMUP_STEPS`` calls of each
    (shape, layers) key, then captures it once per key and replays it.

    ``step`` returns ``{"losses": {layer: tensor}, "head_loss": tensor or None}`` and must be
    capturable (see the module docstring). ``generators``: device generators the step draws from.
    Counters ``eager_steps``, ``captures`` and ``replays`` say what ran.
    """

    def __init__(self, step: Callable[..., dict], generators=(), backend=None, warmup_steps: int = WARMUP_STEPS):
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 1:
            raise ValueError(f"StepGraphs: warmup_steps must be an int >= 1, got {warmup_steps!r}")
        self.step, self.generators, self.backend = step, tuple(generators), backend
        self.warmup_steps = warmup_steps
        self._graphs: dict[tuple, _Captured] = {}
        self._warm: dict[tuple, int] = {}
        self.eager_steps = self.captures = self.replays = 0

    @staticmethod
    def key(x: torch.Tensor, y: torch.Tensor, train_layers) -> tuple:
        return (tuple(x.shape), x.dtype, tuple(y.shape), y.dtype, tuple(train_layers))

    def __call__(self, x: torch.Tensor, y: torch.Tensor, train_layers: list[int]) -> dict:
        key = self.key(x, y, train_layers)
        captured = self._graphs.get(key)
        if captured is None:
            if self._warm.get(key, 0) < self.warmup_steps:
                self._warm[key] = self._warm.get(key, 0) + 1
                self.eager_steps += 1
                return self.backend.eager(lambda: self.step(x, y, list(train_layers)))
            captured = self._capture(key, x, y, train_layers)
        captured.x.copy_(x)
        captured.y.copy_(y)
        self.backend.replay(captured.graph)
        self.replays += 1
        return _clone_outputs(captured.out)

    def _capture(self, key, x, y, train_layers) -> _Captured:
        static_x, static_y = torch.empty_like(x), torch.empty_like(y)
        graph = self.backend.new_graph(self.generators)
        out = self.backend.capture(graph, lambda: self.step(static_x, static_y, list(train_layers)))
        self.captures += 1
        self._graphs[key] = _Captured(graph, static_x, static_y, out)
        return self._graphs[key]

    def reset(self) -> None:
        """Forget every graph (they hold the optimizer state's addresses: after loading a checkpoint
        the next steps warm up and capture again)."""
        self._graphs.clear()
        self._warm.clear()


def capturable_optimizer_groups(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Make ``optimizer`` safe to capture: Adam / AdamW get ``capturable=True``, SGD its fused kernel
    (its other paths read a tensor learning rate back with ``.item()``), and every group's learning
    rate becomes a float32 tensor on ``device`` (a float would be baked into the graph; the tensor is
    updated in place), converted when it is a tensor of another dtype or device (a checkpoint loaded
    without ``map_location``). Idempotent: after ``load_state_dict`` call it again."""
    for group in optimizer.param_groups:
        if "capturable" in group:
            group["capturable"] = True
        if isinstance(optimizer, torch.optim.SGD):
            group["fused"], group["foreach"] = True, False  # foreach would win over fused
        lr = group["lr"]
        if isinstance(lr, torch.Tensor):
            group["lr"] = lr.to(device, torch.float32)  # the same tensor when it is one already
        else:
            group["lr"] = torch.tensor(float(lr), dtype=torch.float32, device=device)


def set_learning_rate(group: dict, lr: float) -> None:
    """``group["lr"] = lr``, in place when it is a tensor (a captured graph reads that tensor)."""
    if isinstance(group["lr"], torch.Tensor):
        group["lr"].fill_(lr)
    else:
        group["lr"] = lr
