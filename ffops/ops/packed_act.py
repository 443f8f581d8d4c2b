"""The ``packed_act`` ops: activations that save a few bits per element for their backward.

ReGELU2 / ReSiLU2 (2 bits, the Approx-BP constants) and Few-Bit (1..4 bits, borders and levels from
our dynamic program, ffops.ops._act_tables) compute the exact forward and save ``bits`` bits per
element (instead of the input) for a backward with a piecewise-constant derivative.

Each public function validates its arguments, picks the implementation for the tensor's device and
the backend setting (ffops._backend) and calls the kernels: two operators, ``packed_act_fwd`` (saves
only its packed ``codes`` output) and ``packed_act_bwd`` (gradient times the level of each element's
code); schemas and math: csrc/ops.cpp; autograd: csrc/packed_act.cpp; kernels: csrc/cpu/packed_act.cpp,
csrc/cuda/packed_act.cu, kernels/packed_act.py. The pure-torch specification is
ffops.reference.packed_act.
"""

import torch

from ffops import _backend
from ffops._validation import check_choice, check_float_tensor
from ffops.ops._act_tables import FUNCTIONS, REGELU2, RESILU2, table
from ffops.ops._common import wire
from ffops.reference import packed_act as reference


def _fake_packed_act_fwd(x, fn, borders, levels, bits):
    return x.new_empty(x.shape), x.new_empty((reference.packed_nbytes(x.numel(), bits),), dtype=torch.uint8)


def _fake_packed_act_bwd(grad_y, codes, levels, bits):
    return grad_y.new_empty(grad_y.shape)


KERNELS = wire({"packed_act_fwd": _fake_packed_act_fwd, "packed_act_bwd": _fake_packed_act_bwd}, "packed_act")

GELU_APPROXIMATIONS = ("none", "tanh")


def _packed(x: torch.Tensor, fn: str, borders, levels, bits: int) -> torch.Tensor:
    impl = _backend.resolve(x.device)
    if impl == "reference":
        return reference.packed_activation(x, fn, borders, levels, bits)
    y, _ = KERNELS[impl].packed_act_fwd(x.contiguous(), FUNCTIONS.index(fn), list(borders), list(levels), bits)
    return y


def regelu2(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """GELU with a 2-bit backward (ReGELU2, Approx-BP).

    Forward: the exact GELU (``approximate="tanh"``: the tanh approximation, as ``F.gelu``),
    computed in float32 (float64 for float64 x) and returned in x's dtype. Saved for backward: 2 bits
    per element. Backward: ``grad * level[code(x)]``, the derivative of the fit
    ``sum_i a_i relu(x - c_i)`` of GELU (relative L2 error of the derivative on N(0,1) inputs ~0.36).
    """
    op = "ffops.regelu2"
    check_float_tensor(op, "x", x, min_ndim=0)
    check_choice(op, "approximate", approximate, GELU_APPROXIMATIONS)
    return _packed(x, "gelu" if approximate == "none" else "gelu_tanh", *REGELU2, 2)


def resilu2(x: torch.Tensor) -> torch.Tensor:
    """SiLU with a 2-bit backward (ReSiLU2, Approx-BP): exact forward, 2 bits saved per element."""
    check_float_tensor("ffops.resilu2", "x", x, min_ndim=0)
    return _packed(x, "silu", *RESILU2, 2)


def check_bits(op: str, bits) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise TypeError(f"{op}: bits must be an int in 1..4, got {type(bits).__name__}")
    if not 1 <= bits <= 4:
        raise ValueError(f"{op}: bits must be in 1..4, got {bits}")
    return bits


def fewbit(x: torch.Tensor, fn: str = "gelu", bits: int = 2) -> torch.Tensor:
    """Activation ``fn`` with a ``bits``-bit backward (Few-Bit).

    ``fn``: one of ``gelu``, ``gelu_tanh``, ``silu``, ``tanh``, ``sigmoid``, ``softplus``, ``elu``,
    ``mish``. Forward exact (as torch's function, computed in float32); saved for backward:
    ``bits`` bits per element (the interval of x among 2^bits); backward: ``grad * level`` of
    that interval, borders and levels minimising the N(0,1)-weighted L2 error of the derivative.
    """
    op = "ffops.fewbit"
    check_float_tensor(op, "x", x, min_ndim=0)
    check_choice(op, "fn", fn, FUNCTIONS)
    bits = check_bits(op, bits)
    borders, levels = table(fn, bits)
    return _packed(x, fn, borders, levels, bits)
