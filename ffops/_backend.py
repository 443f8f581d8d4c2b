"""Which implementation runs an op: the backend setting and what is built.

Backends:
  ``auto``       (default) CPU tensors -> C++ CPU kernels; CUDA tensors -> CUDA C++ kernels, else
                 Triton (one dispatcher call per op with its autograd in C++: the least host
                 time). Falls back to ``reference`` where nothing is built for the device.
  ``reference``  pure torch (the specification).
  ``cpu``        C++ CPU kernels (``ffops._C``).
  ``cuda``       CUDA C++ kernels (``ffops._C`` built with CUDA).
  ``triton``     Triton kernels; on CPU tensors only when ``TRITON_INTERPRET=1`` was set before
                 ffops was imported (the Triton interpreter, as CI tests them). Needs ffops._C too:
                 the schemas and autograd of both kernel sets are there (ffops/ops/_common.py).

Choose with ``ffops.set_backend(name)``, ``with ffops.use_backend(name):`` or the environment
variable ``FFOPS_BACKEND``. Everything here is decided at import time, so that resolving a backend
inside ``torch.compile`` reads only Python constants and never breaks the graph.
"""

import contextlib
import importlib.util
import os
import warnings

import torch

BACKENDS = ("auto", "reference", "cpu", "cuda", "triton")
BUILD_HINT = "pip install --no-build-isolation -e . (without FFOPS_SKIP_CPP=1)"


class BackendUnavailableError(RuntimeError):
    """The requested backend is not built or cannot run on the given tensors."""


def _load_extension():
    try:
        from ffops import _C  # noqa: F401  (loading it registers the C++ kernels)
    except ImportError as exc:
        return False, str(exc)
    return True, ""


CPP_LOADED, CPP_ERROR = _load_extension()


def _has_kernel(key: str) -> bool:
    return CPP_LOADED and torch._C._dispatch_has_kernel_for_dispatch_key("ffops::goodness_fwd", key)


CPP_CPU = _has_kernel("CPU")
CPP_CUDA = _has_kernel("CUDA")
TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def _triton_status():
    if not CPP_LOADED:
        return False, (
            f"the Triton kernel set needs ffops._C, which holds its schemas and autograd ({CPP_ERROR}); "
            f"build it with: {BUILD_HINT}"
        )
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed (pip install triton)"
    try:
        import triton  # noqa: F401
    except Exception as exc:  # a broken install must not break ffops
        return False, f"import triton failed: {exc}"
    return True, ""


TRITON_OK, TRITON_ERROR = _triton_status()

if not CPP_LOADED:
    warnings.warn(
        f"ffops: the C++ extension ffops._C is not available ({CPP_ERROR}); every op runs its "
        f"pure-torch reference. Build it with: {BUILD_HINT}",
        stacklevel=3,
    )


def _check_name(name) -> str:
    if name not in BACKENDS:
        raise ValueError(f"ffops backend must be one of {', '.join(BACKENDS)}; got {name!r}")
    if name == "cpu" and not CPP_CPU:
        raise BackendUnavailableError(
            f"ffops backend 'cpu' is not built: ffops._C did not load ({CPP_ERROR}). Build it with: {BUILD_HINT}"
        )
    if name == "cuda" and not CPP_CUDA:
        raise BackendUnavailableError(
            "ffops backend 'cuda' is not built: ffops._C has no CUDA kernels. Rebuild on a machine with a CUDA "
            f"build of torch and nvcc (or set FFOPS_FORCE_CUDA=1): {BUILD_HINT}"
        )
    if name == "triton" and not TRITON_OK:
        raise BackendUnavailableError(f"ffops backend 'triton' is unavailable: {TRITON_ERROR}")
    return name


class _State:
    name = _check_name(os.environ.get("FFOPS_BACKEND", "auto").strip().lower() or "auto")


def get_backend() -> str:
    """The current backend setting (one of ``ffops.BACKENDS``)."""
    return _State.name


def set_backend(name: str) -> None:
    """Choose the backend for every ffops op; raises if it is not built."""
    _State.name = _check_name(name)


@contextlib.contextmanager
def use_backend(name: str):
    """Context manager: run the enclosed ops with backend ``name``, then restore the previous one."""
    previous = _State.name
    set_backend(name)
    try:
        yield
    finally:
        _State.name = previous


def resolve(device: torch.device) -> str:
    """The implementation that runs on ``device``: ``"reference"``, ``"cpp"`` or ``"triton"``."""
    name = _State.name
    kind = device.type
    if name == "reference":
        return "reference"
    if name == "auto":
        if kind == "cpu":
            return "cpp" if CPP_CPU else "reference"
        if kind == "cuda":
            if CPP_CUDA:
                return "cpp"
            return "triton" if TRITON_OK else "reference"
        return "reference"
    if name == "triton":
        if kind == "cuda" or (kind == "cpu" and TRITON_INTERPRET):
            return "triton"
        raise BackendUnavailableError(
            f"ffops backend 'triton' needs CUDA tensors, or CPU tensors with TRITON_INTERPRET=1 set before "
            f"importing ffops; got tensors on {device}"
        )
    if name != kind:  # 'cpu' or 'cuda'
        raise BackendUnavailableError(
            f"ffops backend {name!r} runs on {name} tensors, got tensors on {device}; "
            "use ffops.set_backend('auto') to dispatch by device"
        )
    return "cpp"


def available() -> dict[str, bool]:
    """Which backends can run here: built and with a device to run on."""
    has_gpu = torch.cuda.is_available()
    return {
        "reference": True,
        "cpu": CPP_CPU,
        "cuda": CPP_CUDA and has_gpu,
        "triton": TRITON_OK and has_gpu,
        "triton-interpreter": TRITON_OK and TRITON_INTERPRET,
    }
