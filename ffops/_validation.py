"""Argument checks shared by every public op: each error names the op, the argument, what was
expected and what was given. Checks run once, at the public boundary; kernels trust their input."""

import contextlib
import contextvars
import math
import numbers

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def check_float_tensor(op: str, name: str, value, *, min_ndim: int = 1) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: {name} must be float32, float16, bfloat16 or float64, got {value.dtype}")
    if value.dim() < min_ndim:
        raise ValueError(
            f"{op}: {name} must have at least {min_ndim} dimensions (batch first), got shape {tuple(value.shape)}"
        )


def check_same_device(op: str, ref_name: str, ref: torch.Tensor, tensors: dict) -> None:
    """Every tensor of ``tensors`` (name -> tensor or None) is on ``ref``'s device."""
    for name, t in tensors.items():
        if t is not None and t.device != ref.device:
            raise ValueError(f"{op}: {name} must be on the device of {ref_name} ({ref.device}), got {t.device}")


def check_bias(op: str, bias, size: int, dtype: torch.dtype) -> None:
    """``bias`` is None or a float ``[size]`` tensor of ``dtype``."""
    if bias is None:
        return
    check_float_tensor(op, "bias", bias)
    if bias.shape != (size,) or bias.dtype != dtype:
        raise ValueError(f"{op}: bias must be a [{size}] tensor of {dtype}, got {tuple(bias.shape)} {bias.dtype}")


def check_index_range(op: str, name: str, index: torch.Tensor, upper: int, upper_name: str | None = None) -> None:
    """Every value of the integer tensor ``index`` is in ``[0, upper)``; one device sync on a GPU."""
    if index.numel() == 0:
        return
    lo, hi = torch.stack(torch.aminmax(index)).tolist()
    if lo < 0 or hi >= upper:
        bound = upper if upper_name is None else f"{upper_name} = {upper}"
        raise ValueError(f"{op}: {name} must be in [0, {bound}), got values in [{lo}, {hi}]")


# Set inside labels_range_checked(): label values were validated already.
_LABELS_RANGE_CHECKED = contextvars.ContextVar("ffops_labels_range_checked", default=False)


@contextlib.contextmanager
def labels_range_checked():
    """Within this context ``check_label_range`` does nothing: it reads the labels back to the host (a
    device sync, impossible inside a CUDA graph capture). For callers that validated their labels
    already: ``FFTrainer.fit`` checks the whole dataset once, and the wrong labels the trainer draws are
    in range by construction."""
    token = _LABELS_RANGE_CHECKED.set(True)
    try:
        yield
    finally:
        _LABELS_RANGE_CHECKED.reset(token)


def check_label_range(op: str, labels: torch.Tensor, num_classes: int) -> None:
    """Every label is in ``[0, num_classes)`` (check_index_range), unless inside ``labels_range_checked()``."""
    if not _LABELS_RANGE_CHECKED.get():
        check_index_range(op, "labels", labels, num_classes)


def check_choice(op: str, name: str, value, choices) -> None:
    if not isinstance(value, str) or value not in choices:
        expected = " | ".join(repr(c) for c in choices)
        raise ValueError(f"{op}: {name} must be one of {expected}, got {value!r}")


def check_finite_real(op: str, name: str, value, *, positive: bool = False) -> float:
    if type(value) is float and math.isfinite(value) and (value > 0 or not positive):
        return value  # the common case, without the numbers.Real ABC check (on every op call)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{op}: {name} must be a real number (float), got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{op}: {name} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{op}: {name} must be > 0, got {value}")
    return value


def check_pair(op: str, names: tuple[str, str], a: torch.Tensor, b: torch.Tensor) -> None:
    """Two activations fed to one op: same device, same dtype, same per-sample shape."""
    na, nb = names
    if a.device != b.device:
        raise ValueError(f"{op}: {na} and {nb} must be on the same device, got {a.device} and {b.device}")
    if a.dtype != b.dtype:
        raise TypeError(f"{op}: {na} and {nb} must have the same dtype, got {a.dtype} and {b.dtype}")
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(
            f"{op}: {na} and {nb} must have the same feature shape (all but the batch dimension), "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def normalize_dims(op: str, name: str, dims, ndim: int) -> tuple[int, ...]:
    """Validate a tuple of dimensions to reduce; ``None`` means all but the batch dimension."""
    if dims is None:
        return tuple(range(1, ndim))
    if isinstance(dims, int):
        dims = (dims,)
    if not isinstance(dims, (tuple, list)) or not all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
        raise TypeError(f"{op}: {name} must be an int or a tuple of ints, got {dims!r}")
    out = []
    for d in dims:
        if not -ndim <= d < ndim:
            raise ValueError(f"{op}: {name} entry {d} is out of range for a {ndim}-D input")
        out.append(d % ndim)
    if not out or len(set(out)) != len(out):
        raise ValueError(f"{op}: {name} must be non-empty without repeats, got {tuple(dims)}")
    return tuple(sorted(out))
