"""Memory-saving activations and norms: ReGELU2, ReSiLU2, Few-Bit, MS-LayerNorm, MS-RMSNorm.

* Activations compute the exact forward and save ``bits`` bits per element (instead of the
  input) for a backward with a piecewise-constant derivative: ReGELU2 / ReSiLU2 (2 bits, the
  Approx-BP constants) and Few-Bit (1..4 bits, borders and levels from our dynamic program,
  ffops.ops._act_tables).
* MS norms normalize without affine and save only their output and ``rstd``; under autocast they
  return the autocast dtype, so the next ``nn.Linear`` saves the *same* tensor (its cast is a
  no-op) and the two share one copy.

Each public function validates its arguments, picks the implementation for the tensor's device and
the backend setting (ffops._backend) and calls the kernels (ffops.ops._memory_library). The
pure-torch specification is ffops.reference.memory.
"""

import math

import torch

from ffops import _backend
from ffops._validation import check_choice, check_finite_real, check_float_tensor
from ffops.ops._act_tables import FUNCTIONS, REGELU2, RESILU2, table
from ffops.ops._ff_library import rows_last_contiguous
from ffops.ops._memory_library import KERNELS
from ffops.reference import memory as reference

GELU_APPROXIMATIONS = ("none", "tanh")


def _kernels(impl: str):
    if impl not in KERNELS:
        raise _backend.BackendUnavailableError(
            "ffops: the memory-saving kernels are missing from this build of ffops._C (it predates them); "
            f"rebuild with: {_backend.BUILD_HINT}"
        )
    return KERNELS[impl]


def _packed(x: torch.Tensor, fn: str, borders, levels, bits: int) -> torch.Tensor:
    impl = _backend.resolve(x.device)
    if impl == "reference":
        return reference.packed_activation(x, fn, borders, levels, bits)
    y, _ = _kernels(impl).packed_act_fwd(x.contiguous(), FUNCTIONS.index(fn), list(borders), list(levels), bits)
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


def norm_out_dtype(x: torch.Tensor, out_dtype: torch.dtype | None) -> torch.dtype:
    """The dtype an MS norm returns: ``out_dtype`` if given; else the autocast dtype when autocast
    is on for x's device (what the next linear would cast to; float64 is never cast); else x's."""
    if out_dtype is not None:
        return out_dtype
    device_type = x.device.type
    if x.dtype != torch.float64 and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return x.dtype


def _ms_norm(op: str, x: torch.Tensor, eps: float, center: bool, out_dtype) -> torch.Tensor:
    check_float_tensor(op, "x", x, min_ndim=1)
    eps = check_finite_real(op, "eps", eps)
    if eps < 0:
        raise ValueError(f"{op}: eps must be >= 0, got {eps}")
    if out_dtype is not None and (
        not isinstance(out_dtype, torch.dtype)
        or out_dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64)
        or (out_dtype == torch.float64) != (x.dtype == torch.float64)
    ):
        raise TypeError(
            f"{op}: out_dtype must be None, torch.float32, torch.float16 or torch.bfloat16 "
            f"(torch.float64 only for float64 x), got {out_dtype!r} for x of {x.dtype}"
        )
    dtype = norm_out_dtype(x, out_dtype)
    impl = _backend.resolve(x.device)
    if impl == "reference":
        return reference.ms_norm(x, eps, center, dtype)
    if x.dim() == 2:  # no reshape and view around the op: each would be one more autograd node
        y, _ = _kernels(impl).ms_norm_fwd(rows_last_contiguous(x), eps, center, None if dtype == x.dtype else dtype)
        return y
    rows = rows_last_contiguous(x.reshape(math.prod(x.shape[:-1]), x.shape[-1]))
    y, _ = _kernels(impl).ms_norm_fwd(rows, eps, center, None if dtype == x.dtype else dtype)
    return y.view(x.shape)


def ms_layernorm(x: torch.Tensor, eps: float = 1e-5, *, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """LayerNorm over the last dimension without affine, saving only its output and ``rstd``.

    ``y = (x - mean) / sqrt(var + eps)`` (biased variance), computed in float32 (float64 for float64
    x). Returned in ``out_dtype``; by default the autocast dtype when autocast is on for x's device
    (so the next linear shares the saved tensor), else x's dtype. Backward from the output:
    ``dx = rstd * (g - mean(g) - y * mean(g * y))``, in x's dtype.
    """
    return _ms_norm("ffops.ms_layernorm", x, eps, True, out_dtype)


def ms_rmsnorm(x: torch.Tensor, eps: float | None = None, *, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """RMSNorm over the last dimension without affine, saving only its output and ``rstd``.

    ``y = x / sqrt(mean(x^2) + eps)``; ``eps=None`` is ``torch.finfo(x.dtype).eps`` (as
    ``torch.nn.RMSNorm``). Output dtype as :func:`ms_layernorm`. Backward from the output:
    ``dx = rstd * (g - y * mean(g * y))``.
    """
    op = "ffops.ms_rmsnorm"
    if eps is None and isinstance(x, torch.Tensor) and x.is_floating_point():
        eps = torch.finfo(x.dtype).eps
    return _ms_norm(op, x, eps, False, out_dtype)
