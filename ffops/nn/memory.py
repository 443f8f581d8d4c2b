"""Memory-saving layers: ReGELU2, ReSiLU2, FewBitAct (activations that save 1-4 bits per element
for backward), MSLayerNorm, MSRMSNorm (norms without affine that save only their output, which
the next linear layer saves too) and RandomizedLinear (a linear layer that saves a random sketch of
its input). ``ffops.memory.patch`` puts them into a model."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from ffops._validation import check_choice, check_finite_real
from ffops.ops import ms_norm, packed_act
from ffops.ops import randomized_linear as randomized_linear_op
from ffops.ops._act_tables import FUNCTIONS, FewBitTable, default_table


class ReGELU2(nn.Module):
    """GELU, exact forward, 2 bits per element saved for a piecewise-constant backward.

    ``approximate``: ``"none"`` (erf GELU, ``nn.GELU()``) or ``"tanh"`` (``nn.GELU("tanh")``).
    """

    def __init__(self, approximate: str = "none"):
        super().__init__()
        check_choice("ReGELU2", "approximate", approximate, packed_act.GELU_APPROXIMATIONS)
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return packed_act.regelu2(x, self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class ReSiLU2(nn.Module):
    """SiLU, exact forward, 2 bits per element saved for a piecewise-constant backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return packed_act.resilu2(x)


class FewBitAct(nn.Module):
    """Activation ``fn`` (any of ``ffops.fewbit``'s: ``gelu``, ``silu``, ``tanh``, ``hardswish``, ...)
    with a ``bits``-bit backward (Few-Bit, 1..4 bits per element saved).

    ``table``: a ``FewBitTable`` of the same fn and bits (e.g. ``ffops.memory.fewbit_table`` fitted to
    this layer's inputs); default: the N(0, 1) table. The table is part of the state_dict (as the
    module's extra state), so a calibrated model saves and loads its tables with its weights.
    """

    def __init__(self, fn: str = "gelu", bits: int = 2, table: FewBitTable | None = None):
        super().__init__()
        check_choice("FewBitAct", "fn", fn, FUNCTIONS)
        self.fn, self.bits = fn, packed_act.check_bits("FewBitAct", bits)
        self.table = default_table(fn, bits) if table is None else self._checked(table)

    def _checked(self, table) -> FewBitTable:
        if not isinstance(table, FewBitTable):
            raise TypeError(f"FewBitAct: table must be a FewBitTable, got {type(table).__name__}")
        if (table.fn, table.bits) != (self.fn, self.bits):
            raise ValueError(
                f"FewBitAct: the table is for fn={table.fn!r}, bits={table.bits}; this layer is fn={self.fn!r}, "
                f"bits={self.bits}"
            )
        return table

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return packed_act.fewbit(x, table=self.table)

    def get_extra_state(self) -> dict:
        t = self.table
        return {
            "fn": t.fn,
            "bits": t.bits,
            "borders": list(t.borders),
            "levels": list(t.levels),
            "fitted_to": t.fitted_to,
        }

    def set_extra_state(self, state) -> None:
        if not isinstance(state, dict) or not {"fn", "bits", "borders", "levels"} <= set(state):
            raise ValueError(f"FewBitAct: a saved table must be a dict with fn, bits, borders, levels; got {state!r}")
        table = FewBitTable(state["fn"], state["bits"], state["borders"], state["levels"], state.get("fitted_to", ""))
        self.table = self._checked(table)

    def extra_repr(self) -> str:
        fitted = self.table.fitted_to
        table = "" if fitted == "N(0, 1)" else f", table fitted to {fitted}" if fitted else ", custom table"
        return f"fn={self.fn!r}, bits={self.bits}{table}"


def _normalized_shape(name, shape) -> tuple[int, ...]:
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise ValueError(f"{name}: normalized_shape must be an int or a non-empty tuple of ints >= 0, got {shape!r}")
    return shape


class _MSNorm(nn.Module):
    _center = True

    def __init__(self, normalized_shape, eps, out_dtype):
        super().__init__()
        name = type(self).__name__
        self.normalized_shape = _normalized_shape(name, normalized_shape)
        self.eps = None if eps is None else check_finite_real(name, "eps", eps)
        self.out_dtype = out_dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(self.normalized_shape)
        if tuple(x.shape[x.dim() - n :]) != self.normalized_shape:
            raise ValueError(
                f"{type(self).__name__}: expected an input ending in {self.normalized_shape}, got {tuple(x.shape)}"
            )
        flat = x if n == 1 else x.reshape(*x.shape[: x.dim() - n], math.prod(self.normalized_shape))
        if self._center:
            y = ms_norm.ms_layernorm(flat, self.eps, out_dtype=self.out_dtype)
        else:
            y = ms_norm.ms_rmsnorm(flat, self.eps, out_dtype=self.out_dtype)
        return y if n == 1 else y.view(x.shape)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}"


class MSLayerNorm(_MSNorm):
    """LayerNorm without affine over ``normalized_shape`` (the trailing dims) that saves only its
    output and ``rstd``. Under autocast it returns the autocast dtype (``out_dtype`` overrides), so
    the following ``nn.Linear`` saves the same tensor. Fold an affine into the next linear layer
    (``ffops.memory.patch`` does)."""

    def __init__(self, normalized_shape, eps: float = 1e-5, out_dtype: torch.dtype | None = None):
        super().__init__(normalized_shape, eps, out_dtype)


class MSRMSNorm(_MSNorm):
    """RMSNorm without affine that saves only its output and ``rstd`` (``eps=None``: the machine
    epsilon of the input dtype, as ``nn.RMSNorm``). Output dtype as :class:`MSLayerNorm`."""

    _center = False

    def __init__(self, normalized_shape, eps: float | None = None, out_dtype: torch.dtype | None = None):
        super().__init__(normalized_shape, eps, out_dtype)


class RandomizedLinear(nn.Linear):
    """``nn.Linear`` whose backward keeps a random sketch of its input's rows (``ratio`` of them)
    instead of the input: ``ffops.randomized_linear``. Forward exact; gradients of the input and bias
    exact, of the weight unbiased. A fresh sketch (seed) every call; ``kind``: ``"gaussian"`` or
    ``"rademacher"``. Without grad it is plain ``F.linear``.

    ``RandomizedLinear.from_linear(linear, ratio)`` wraps an existing layer's Parameters (shared, so
    an optimizer and tied weights keep working).
    """

    def __init__(self, in_features, out_features, bias=True, *, ratio: float, kind: str = "gaussian", **kw):
        super().__init__(in_features, out_features, bias, **kw)
        self.ratio = randomized_linear_op.check_ratio("RandomizedLinear", ratio)
        check_choice("RandomizedLinear", "kind", kind, randomized_linear_op.KINDS)
        self.kind = kind

    @classmethod
    def from_linear(cls, linear: nn.Linear, ratio: float, kind: str = "gaussian") -> "RandomizedLinear":
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"RandomizedLinear.from_linear: linear must be an nn.Linear, got {type(linear).__name__}")
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = linear.in_features, linear.out_features
        new.weight, new.bias = linear.weight, linear.bias  # the same Parameters
        new.ratio = randomized_linear_op.check_ratio("RandomizedLinear", ratio)
        check_choice("RandomizedLinear", "kind", kind, randomized_linear_op.KINDS)
        new.kind = kind
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return F.linear(x, self.weight, self.bias)
        return randomized_linear_op.randomized_linear(x, self.weight, self.bias, ratio=self.ratio, kind=self.kind)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ratio={self.ratio:g}, kind={self.kind!r}"
