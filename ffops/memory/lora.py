"""LoRA's input dropout without a saved copy: ``DropoutLinear`` computes ``linear(dropout(x))`` and keeps
only ``x`` (the norm's output, saved anyway by the frozen base layer and the MS norm) and a seed for
backward, regenerating the mask there. peft's ``lora_A(lora_dropout(x))`` saves the dropped input (one
copy per adapted projection: q, k and v each drop the same input) and the dropout's mask.

``ffops.memory.patch`` makes the ``lora_A`` of every vanilla LoRA adapter with dropout that
``lora_dropouts(model)`` finds a ``DropoutLinear`` (the same Parameters: state dict, optimizer and adapter
files unchanged) and its ``lora_dropout`` an ``nn.Identity``. The masks have the distribution of peft's,
drawn from another random stream (a seed taken from torch's default generator per call, so
``torch.manual_seed`` and checkpointing's recomputation reproduce them).
"""

import torch
import torch.nn.functional as F
from torch import nn


def _mask(x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    gen = torch.Generator(device=x.device).manual_seed(seed)
    return torch.rand(x.shape, generator=gen, device=x.device) >= p


class _DropoutLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, p, seed, dtype):
        scale = 1.0 / (1.0 - p)
        with torch.autocast(x.device.type, enabled=False):
            xd = x.to(dtype) * _mask(x, p, seed) * scale
            out = F.linear(xd, weight.to(dtype), None if bias is None else bias.to(dtype))
        ctx.save_for_backward(x, weight)
        ctx.p, ctx.seed, ctx.dtype, ctx.has_bias = p, seed, dtype, bias is not None
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        scale = 1.0 / (1.0 - ctx.p)
        grad = grad.to(ctx.dtype)
        mask = _mask(x, ctx.p, ctx.seed)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad @ weight.to(ctx.dtype) * mask * scale).to(x.dtype)
        if ctx.needs_input_grad[1]:
            xd = x.to(ctx.dtype) * mask * scale
            grad_w = (grad.reshape(-1, grad.shape[-1]).T @ xd.reshape(-1, x.shape[-1])).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.reshape(-1, grad.shape[-1]).sum(0)
        return grad_x, grad_w, grad_b, None, None, None


class DropoutLinear(nn.Linear):
    """``linear(dropout(x, p))`` that saves ``x`` and a seed, not the dropped input and its mask. In eval
    mode (or ``p == 0``) it is plain ``F.linear``. Under autocast it computes in the autocast dtype.

    ``DropoutLinear.from_linear(linear, p)`` wraps an existing layer's Parameters (shared)."""

    @classmethod
    def from_linear(cls, linear: nn.Linear, p: float) -> "DropoutLinear":
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"DropoutLinear.from_linear: linear must be an nn.Linear, got {type(linear).__name__}")
        if not 0 <= p < 1:
            raise ValueError(f"DropoutLinear.from_linear: p must be in [0, 1), got {p!r}")
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = linear.in_features, linear.out_features
        new.weight, new.bias = linear.weight, linear.bias  # the same Parameters
        new.p = float(p)
        new.train(linear.training)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return F.linear(x, self.weight, self.bias)
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
        return _DropoutLinearFn.apply(x, self.weight, self.bias, self.p, seed, dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p:g}"


def lora_dropouts(model: nn.Module):
    """``(module name, adapter, lora_dropout, lora_A)`` of each vanilla LoRA adapter with dropout in ``model``
    (peft's layout: ModuleDicts ``lora_dropout`` and ``lora_A`` keyed by adapter, no ``lora_variant``)."""
    for name, m in model.named_modules():
        drops, lora_a = getattr(m, "lora_dropout", None), getattr(m, "lora_A", None)
        if not isinstance(drops, nn.ModuleDict) or not isinstance(lora_a, nn.ModuleDict):
            continue
        for adapter, drop in drops.items():
            a = lora_a[adapter] if adapter in lora_a else None  # noqa: SIM401 (ModuleDict has no get)
            variant = adapter in getattr(m, "lora_variant", {}) or getattr(m, "use_dora", {}).get(adapter, False)
            if not variant and type(drop) is nn.Dropout and drop.p > 0 and type(a) is nn.Linear:
                yield name, adapter, drop, a
