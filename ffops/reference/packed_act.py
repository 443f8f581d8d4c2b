"""The ``packed_act`` ops in plain torch (the specification): activations with a packed-code
backward (ReGELU2, ReSiLU2, Few-Bit).

  forward  ``y = f(x)`` exactly, computed in float32 (float64 for float64 x) and rounded once to
           x's dtype;
  saved    ``code = sum_j [x > borders[j]]`` (0 .. 2^bits - 1; NaN compares false: code 0) with x
           in the compute type and the borders rounded to it, packed ``bits`` bits per element
           into uint8: element i occupies bits ``bits*i .. bits*i + bits - 1`` of the
           little-endian bit stream (byte b holds stream bits 8b .. 8b+7), so 8 elements fill
           exactly ``bits`` bytes and the packed size is ``ceil(numel * bits / 8)`` bytes; the
           unused high bits of the last byte are zero. For bits = 2 this is lomem's layout (element
           i at bits ``2 * (i % 4)`` of byte ``i // 4``).
  backward ``dx = grad_y * levels[code]`` in the compute type, rounded to grad_y's dtype.
"""

import math

import torch
import torch.nn.functional as F

from ffops.ops._common import stat_dtype

# The forward functions of the packed-code activations, by name (the kernels number them in this order).
ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "softplus": F.softplus,
    "elu": F.elu,
    "mish": F.mish,
    "hardswish": F.hardswish,
    "leaky_relu": F.leaky_relu,  # negative slope 0.01 (torch's default)
    "selu": F.selu,
    "celu": F.celu,  # alpha 1 (torch's default; the same function as elu)
    "logsigmoid": F.logsigmoid,
    "softsign": F.softsign,
    "relu6": F.relu6,
}


def packed_nbytes(numel: int, bits: int) -> int:
    """Bytes of ``numel`` codes of ``bits`` bits each: ``ceil(numel * bits / 8)`` (works on SymInts too)."""
    return (numel * bits + 7) // 8


def activation(x: torch.Tensor, fn: str) -> torch.Tensor:
    """``f(x)`` computed in the compute type, returned in x's dtype."""
    return ACTIVATIONS[fn](x.to(stat_dtype(x.dtype))).to(x.dtype)


def codes(x: torch.Tensor, borders) -> torch.Tensor:
    """int64 codes ``sum_j [x > borders[j]]`` (flattened x, compared in the compute type)."""
    acc = x.detach().reshape(-1).to(stat_dtype(x.dtype))
    out = torch.zeros(acc.shape, dtype=torch.int64, device=x.device)
    for b in torch.tensor(list(borders), dtype=acc.dtype).tolist():
        out += acc > b
    return out


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack int codes (each < 2^bits) into uint8, ``bits`` bits per element (layout: module doc)."""
    n = codes.numel()
    groups = -(-n // 8)
    padded = torch.zeros(groups * 8, dtype=torch.int64, device=codes.device)
    padded[:n] = codes.reshape(-1)
    shifts = torch.arange(8, device=codes.device) * bits
    words = (padded.view(groups, 8) << shifts).sum(1)  # disjoint bit fields: sum == or
    byte_shifts = torch.arange(bits, device=codes.device) * 8
    packed = ((words[:, None] >> byte_shifts) & 0xFF).to(torch.uint8).reshape(-1)
    return packed[: packed_nbytes(n, bits)].clone()


def unpack(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """The int64 codes of ``numel`` elements from ``pack``'s bytes."""
    groups = -(-numel // 8)
    full = torch.zeros(groups * bits, dtype=torch.int64, device=packed.device)
    full[: packed.numel()] = packed.to(torch.int64)
    byte_shifts = torch.arange(bits, device=packed.device) * 8
    words = (full.view(groups, bits) << byte_shifts).sum(1)
    shifts = torch.arange(8, device=packed.device) * bits
    out = (words[:, None] >> shifts) & ((1 << bits) - 1)
    return out.reshape(-1)[:numel]


def packed_act_fwd(x: torch.Tensor, fn: str, borders, bits: int):
    """``(f(x), packed codes)``: the forward of every packed-code activation."""
    return activation(x, fn), pack(codes(x, borders), bits)


def packed_act_bwd(grad_y: torch.Tensor, packed: torch.Tensor, levels, bits: int) -> torch.Tensor:
    """``grad_y * levels[code]`` in the compute type, in grad_y's dtype and shape."""
    acc = stat_dtype(grad_y.dtype)
    table = torch.tensor(list(levels), dtype=acc, device=grad_y.device)
    lv = table[unpack(packed, bits, grad_y.numel())].view(grad_y.shape)
    return (grad_y.to(acc) * lv).to(grad_y.dtype)


class _PackedActivation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, fn, borders, levels, bits):
        y, packed = packed_act_fwd(x, fn, borders, bits)
        ctx.save_for_backward(packed)
        ctx.levels, ctx.bits = levels, bits
        return y

    @staticmethod
    def backward(ctx, grad_y):
        (packed,) = ctx.saved_tensors
        return packed_act_bwd(grad_y.contiguous(), packed, ctx.levels, ctx.bits), None, None, None, None


def packed_activation(x: torch.Tensor, fn: str, borders, levels, bits: int) -> torch.Tensor:
    """``f(x)`` whose backward is ``grad * levels[code(x)]``, saving only the packed codes."""
    return _PackedActivation.apply(x, fn, tuple(borders), tuple(levels), bits)


def relative_derivative_error(fn: str, borders, levels, mean: float = 0.0, std: float = 1.0, n: int = 200001) -> float:
    """``sqrt(int (f' - q)^2 w / int f'^2 w)`` with w the N(mean, std^2) density (trapezoid rule on
    [mean - 10 std, mean + 10 std], float64): the quality of a piecewise-constant derivative ``q``
    (``levels[code(x)]``)."""
    x = torch.linspace(mean - 10 * std, mean + 10 * std, n, dtype=torch.float64, requires_grad=True)
    (df,) = torch.autograd.grad(ACTIVATIONS[fn](x).sum(), x)
    x = x.detach()
    code = torch.zeros_like(x, dtype=torch.int64)
    for b in borders:
        code += x > b
    q = torch.tensor(list(levels), dtype=torch.float64)[code]
    z = (x - mean) / std
    w = torch.exp(-0.5 * z * z)
    return math.sqrt(torch.trapezoid((df - q) ** 2 * w, x).item() / torch.trapezoid(df**2 * w, x).item())
