"""Memory-saving layers: ReGELU2, ReSiLU2, FewBitAct (activations that save 1-4 bits per element
for backward) and MSLayerNorm, MSRMSNorm (norms without affine that save only their output, which
the next linear layer saves too). ``ffops.memory.patch`` puts them into a model."""

import math

import torch
from torch import nn

from ffops._validation import check_choice, check_finite_real
from ffops.ops import ms_norm, packed_act
from ffops.ops._act_tables import FUNCTIONS


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
    """Activation ``fn`` (``gelu``, ``gelu_tanh``, ``silu``, ``tanh``, ``sigmoid``, ``softplus``,
    ``elu``, ``mish``) with a ``bits``-bit backward (Few-Bit, 1..4 bits per element saved)."""

    def __init__(self, fn: str = "gelu", bits: int = 2):
        super().__init__()
        check_choice("FewBitAct", "fn", fn, FUNCTIONS)
        self.fn, self.bits = fn, packed_act.check_bits("FewBitAct", bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return packed_act.fewbit(x, self.fn, self.bits)

    def extra_repr(self) -> str:
        return f"fn={self.fn!r}, bits={self.bits}"


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
