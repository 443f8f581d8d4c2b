"""Is a sparse layer faster than its dense original on the inputs it will see? The measurement behind
``sparsify(model, ..., example_input=x)``.

The input of every candidate layer is recorded in one forward pass of the model on the example (in
eval mode, so batch-norm statistics and dropout are untouched, under autograd so that each input's
``requires_grad`` is the one training will have: the first layer computes no input gradient). Then
each layer is timed against its sparse replacement on random inputs of that shape: a training step's
forward plus backward (the gradients of the input where it requires one, of the weight and of the
bias), warm-up first, the two interleaved round by round, the median of the rounds. The dense layer is
timed as a copy, so the model's own gradients are not touched.
"""

import copy
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class InputSpec:
    """What a layer received in the example forward pass."""

    shape: tuple
    dtype: torch.dtype
    device: torch.device
    requires_grad: bool


@dataclass(frozen=True)
class LayerTiming:
    """Median forward + backward milliseconds of one layer, dense and sparse, on one input shape."""

    input_shape: tuple
    dense_ms: float
    sparse_ms: float

    @property
    def speedup(self) -> float:
        """dense time / sparse time (> 1: the sparse layer is faster)."""
        return self.dense_ms / self.sparse_ms


def record_inputs(model: nn.Module, names: list[str], example_input) -> dict[str, InputSpec]:
    """The input of each named submodule in one forward pass of ``model(*example_input)`` (a tensor or a
    tuple of positional arguments). Modes and parameters are restored; layers that did not run are
    missing from the result."""
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    specs: dict[str, InputSpec] = {}

    def hook_for(name):
        def hook(module, inputs):
            x = inputs[0]
            specs.setdefault(name, InputSpec(tuple(x.shape), x.dtype, x.device, x.requires_grad))

        return hook

    handles = [model.get_submodule(n).register_forward_pre_hook(hook_for(n)) for n in names]
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.enable_grad():
            model(*args)
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.train(training)
    return specs


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step_seconds(layer: nn.Module, x: torch.Tensor, grad_y: torch.Tensor) -> float:
    """One forward + backward of ``layer`` on ``x``, in seconds; the gradients are dropped after."""
    _sync(x.device)
    start = time.perf_counter()
    layer(x).backward(grad_y)
    _sync(x.device)
    elapsed = time.perf_counter() - start
    x.grad = None
    layer.zero_grad(set_to_none=True)
    return elapsed


def time_layer(dense: nn.Module, sparse: nn.Module, spec: InputSpec, repeats: int = 5, warmup: int = 2) -> LayerTiming:
    """Median fwd+bwd time of ``dense`` (timed as a copy) and ``sparse`` on a random input like ``spec``."""
    if repeats < 1:
        raise ValueError(f"ffops.sparse: repeats must be at least 1, got {repeats}")
    dense = copy.deepcopy(dense).train()
    was_training = sparse.training
    sparse.train()
    gen = torch.Generator(device=spec.device).manual_seed(0)
    x = torch.randn(spec.shape, dtype=spec.dtype, device=spec.device, generator=gen)
    x.requires_grad_(spec.requires_grad)
    with torch.no_grad():
        grad_y = torch.randn_like(dense(x))
    samples = {"dense": [], "sparse": []}
    try:
        with torch.enable_grad():
            for _ in range(warmup):
                _step_seconds(dense, x, grad_y)
                _step_seconds(sparse, x, grad_y)
            for r in range(repeats):  # interleaved, the order alternating, so drift hits both alike
                pair = [("dense", dense), ("sparse", sparse)]
                for key, layer in pair if r % 2 == 0 else pair[::-1]:
                    samples[key].append(_step_seconds(layer, x, grad_y))
    finally:
        sparse.train(was_training)
    return LayerTiming(
        spec.shape,
        statistics.median(samples["dense"]) * 1e3,
        statistics.median(samples["sparse"]) * 1e3,
    )
