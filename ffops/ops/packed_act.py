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
from ffops.ops._act_tables import FUNCTIONS, REGELU2, RESILU2, FewBitTable
from ffops.ops._act_tables import table as shipped_table
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
    y, _ = KERNELS[impl].packed_act_fwd(x.contiguous(), FUNCTIONS.index(fn), borders, levels, bits)
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


def fewbit(x: torch.Tensor, fn: str | None = None, bits: int | None = None, *, table=None) -> torch.Tensor:
    """Activation ``fn`` with a ``bits``-bit backward (Few-Bit).

    ``fn``: one of ``gelu`` (the default), ``gelu_tanh``, ``silu``, ``tanh``, ``sigmoid``, ``softplus``,
    ``elu``, ``mish``, ``hardswish``, ``leaky_relu`` (slope 0.01), ``selu``, ``celu`` (alpha 1),
    ``logsigmoid``, ``softsign``, ``relu6``. Forward exact (as torch's function, computed in float32;
    float64 for float64 x); saved for backward: ``bits`` (default 2) bits per element, the interval of
    x among 2^bits; backward: ``grad * level`` of that interval.

    ``table``: the borders and levels, a ``FewBitTable`` (``ffops.memory.fewbit_table`` fits one to
    the inputs a layer really sees; its fn / bits are used when ``fn`` / ``bits`` are not given and
    must agree when they are) or a pair ``(borders, levels)`` of ``2^bits - 1`` ascending and
    ``2^bits`` finite numbers. Default: the table minimising the N(0, 1)-weighted L2 error of the
    derivative. For leaky_relu (1 bit) and relu6 (2 bits) that table is exact.
    """
    op = "ffops.fewbit"
    check_float_tensor(op, "x", x, min_ndim=0)
    if table is None:
        fn = "gelu" if fn is None else fn
        check_choice(op, "fn", fn, FUNCTIONS)
        bits = 2 if bits is None else check_bits(op, bits)
        borders, levels = shipped_table(fn, bits)
    else:
        fn, bits, borders, levels = _custom_table(op, table, fn, bits)
    return _packed(x, fn, borders, levels, bits)


def _custom_table(op: str, tab, fn, bits):
    """``(fn, bits, borders, levels)`` of a user's table, validated against the fn / bits given."""
    if fn is not None:
        check_choice(op, "fn", fn, FUNCTIONS)
    if bits is not None:
        bits = check_bits(op, bits)
    if isinstance(tab, FewBitTable):
        for name, given, own in (("fn", fn, tab.fn), ("bits", bits, tab.bits)):
            if given is not None and given != own:
                raise ValueError(f"{op}: {name}={given!r} disagrees with the table's {name}={own!r}")
        return tab.fn, tab.bits, tab.borders, tab.levels
    if not (isinstance(tab, (tuple, list)) and len(tab) == 2):
        raise TypeError(f"{op}: table must be a FewBitTable or a pair (borders, levels), got {type(tab).__name__}")
    levels = tab[1]
    if bits is None:
        n = len(levels) if hasattr(levels, "__len__") else -1
        if n not in (2, 4, 8, 16):
            raise ValueError(f"{op}: table's levels must hold 2, 4, 8 or 16 numbers (2^bits), got {n}")
        bits = n.bit_length() - 1
    try:
        t = FewBitTable("gelu" if fn is None else fn, bits, tab[0], levels)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{op}: table: {str(exc).split(': ', 1)[1]}") from None
    return t.fn, t.bits, t.borders, t.levels
