"""What every op module shares: the accumulation dtype, the row layout the kernels take, and the one
wiring mechanism that turns the schemas of csrc/ops.cpp into callable kernel sets.

Every schema of csrc/ops.cpp defines two operators (csrc/ops.cpp does it in one line):
  ``ffops::<name>``         the C++ kernels, registered per device (CPU, CUDA) by ffops._C;
  ``ffops::triton_<name>``  the same schema, whose CPU / CUDA kernel is the Triton launcher
                            ``ffops.kernels.<module>.<name>``, registered here.
Both share one autograd formula, in C++ (csrc/<op>.cpp, the Autograd key of both names), and one fake
(meta) implementation, registered here for both. So a signature is written once (csrc/ops.cpp), a
backward once (C++), a shape rule once (the op module's fake).
"""

import functools
import importlib
from types import SimpleNamespace

import torch

from ffops import _backend


def stat_dtype(dtype: torch.dtype) -> torch.dtype:
    """Per-row statistics and accumulations are kept in float32, or float64 for float64 data."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def rows_last_contiguous(t: torch.Tensor) -> torch.Tensor:
    """A 2-D tensor with unit stride in its last dimension (any row stride), copying only if needed."""
    return t if t.size(1) <= 1 or t.stride(1) == 1 else t.contiguous()


# Holds the Python (Triton) kernels registered on the C++-defined triton_<name> operators.
_TRITON_LIB = torch.library.Library("ffops", "IMPL") if _backend.TRITON_OK else None


def on_device_of(launcher, arg: int):
    """``launcher`` run with the CUDA device of its argument number ``arg`` current: Triton launches on
    the current device's stream, whatever device the tensors are on (the C++ kernels have a device
    guard). ``torch.cuda.device`` sets nothing when that device is current already."""

    @functools.wraps(launcher)
    def run(*args, **kwargs):
        with torch.cuda.device(args[arg].get_device()):
            return launcher(*args, **kwargs)

    return run


def _tensor_arg(op: torch._ops.OpOverload) -> int:
    """The position of ``op``'s first argument that is always a tensor (not ``Tensor?``)."""
    return next(i for i, a in enumerate(op._schema.arguments) if isinstance(a.type, torch._C.TensorType))


def wire(fakes: dict, triton_module: str | dict[str, str]) -> dict[str, SimpleNamespace]:
    """Wire the operators named by ``fakes`` (name -> fake implementation): register each fake for
    ``ffops::<name>`` and ``ffops::triton_<name>``, and the Triton launcher of the same name in
    ``ffops.kernels.<triton_module>`` (a module name, or one per operator name) as the CPU / CUDA
    kernel of ``ffops::triton_<name>``.

    Returns the kernel sets that can run here, ``{"cpp": ns, "triton": ns}`` (either may be
    missing), each a namespace of ``OpOverload``s by operator name, e.g. ``sets["cpp"].goodness_fwd``.
    """
    if not _backend.CPP_LOADED:  # no schemas: only the reference runs (see ffops._backend)
        return {}
    for name, fake in fakes.items():
        torch.library.register_fake(f"ffops::{name}")(fake)
    sets = {"cpp": SimpleNamespace(**{name: getattr(torch.ops.ffops, name).default for name in fakes})}
    if not _backend.TRITON_OK:
        return sets
    sets["triton"] = SimpleNamespace(**{name: getattr(torch.ops.ffops, f"triton_{name}").default for name in fakes})
    for name, fake in fakes.items():
        module = triton_module if isinstance(triton_module, str) else triton_module[name]
        launcher = getattr(importlib.import_module(f"ffops.kernels.{module}"), name)
        torch.library.register_fake(f"ffops::triton_{name}")(fake)
        op = getattr(sets["triton"], name)
        _TRITON_LIB.impl(f"triton_{name}", on_device_of(launcher, _tensor_arg(op)), "CUDA")
        if _backend.TRITON_INTERPRET:  # CPU tensors, run by the Triton interpreter
            _TRITON_LIB.impl(f"triton_{name}", launcher, "CPU")
    return sets
