"""Swap a model's dense layers for sparse ones and back: ``sparsify`` and ``densify``.

Build the optimizer after ``sparsify``: the sparse layers' parameters (``values``) are new tensors.
"""

import functools
import inspect
import re
from dataclasses import dataclass, field

from torch import nn
from torch.nn.utils import parametrize

from ffops.nn.sparse import SparseConv2d, SparseLinear, _conv_padding
from ffops.sparse.speed import LayerTiming, record_inputs, time_layer

METHODS = ("magnitude", "existing")


@dataclass
class LayerChange:
    """What happened to one layer."""

    name: str
    kind: str  # the original class name
    shape: tuple
    action: str  # "sparse", "dense" (left as it was) or "densified"
    sparsity: float
    nnz: int
    reason: str = ""
    timing: LayerTiming | None = None  # dense vs sparse fwd+bwd, when measured


@dataclass
class SparsifyReport:
    """The layers that were swapped, and those left dense with the reason."""

    changes: list[LayerChange] = field(default_factory=list)
    measured: bool = False  # whether sparsify timed the layers on an example input

    @property
    def swapped(self) -> list[LayerChange]:
        return [c for c in self.changes if c.action in ("sparse", "densified")]

    @property
    def skipped(self) -> list[LayerChange]:
        return [c for c in self.changes if c.action == "dense"]

    def __str__(self) -> str:
        head = f"{'layer':<28} {'type':<13} {'shape':<20} {'action':<10} {'sparsity':>8} {'nnz':>10}"
        rows = [head + f" {'dense ms':>9} {'sparse ms':>9} {'speedup':>7}  reason"]
        for c in self.changes:
            t = c.timing
            times = f"{t.dense_ms:>9.3g} {t.sparse_ms:>9.3g} {t.speedup:>6.2f}x" if t else f"{'-':>9} {'-':>9} {'-':>7}"
            rows.append(
                f"{c.name:<28} {c.kind:<13} {c.shape!s:<20} {c.action:<10} {c.sparsity:>8.3f} {c.nnz:>10} "
                f"{times}  {c.reason}"
            )
        rows.append(f"{len(self.swapped)} layer(s) changed, {len(self.skipped)} left dense")
        if not self.measured and any(c.action == "sparse" for c in self.changes):
            rows.append(
                "speed not measured: pass example_input=... to sparsify to time each layer and keep it dense "
                "where the sparse kernels would be slower"
            )
        return "\n".join(rows)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def _dense_change(name: str, module: nn.Module, reason: str, reached: float = 0.0, timing=None) -> LayerChange:
    """A layer left as it was."""
    shape = tuple(module.weight.shape)
    return LayerChange(name, type(module).__name__, shape, "dense", reached, module.weight.numel(), reason, timing)


# ``self.<submodule path>.weight`` in a forward's source: the submodule's weight read directly (a sparse
# layer has no ``weight``; its ``bias`` is one)
_READS_WEIGHT = re.compile(r"\bself((?:\.\w+)+)\.weight\b")


@functools.cache
def _weights_read_by_forward(cls: type) -> frozenset:
    """The submodule paths whose ``.weight`` ``cls.forward`` reads itself (e.g.
    nn.MultiheadAttention's ``out_proj``, which it hands to F.multi_head_attention_forward)."""
    try:
        source = inspect.getsource(cls.forward)
    except (OSError, TypeError):  # no Python source: nothing known
        return frozenset()
    return frozenset(path[1:] for path in _READS_WEIGHT.findall(source))


def _kept_dense_reasons(model: nn.Module, candidates: list) -> dict[str, str]:
    """Why each candidate whose computation a sparse layer would not reproduce stays dense."""
    read_by = {}  # qualified name -> the class whose forward reads its weight
    for prefix, m in model.named_modules():
        for path in _weights_read_by_forward(type(m)):
            read_by.setdefault(f"{prefix}.{path}" if prefix else path, type(m).__name__)
    names_of = {}  # parameter -> every name it has in the model (several: shared, e.g. tied weights)
    for pname, p in model.named_parameters(remove_duplicate=False):
        names_of.setdefault(id(p), []).append(pname)
    return {name: why for name, m in candidates if (why := _why_dense(name, m, read_by, names_of))}


def _why_dense(name: str, m: nn.Module, read_by: dict, names_of: dict) -> str:
    """Why a sparse layer would not reproduce ``m``'s computation in the model ("" if it would)."""
    base = nn.Linear if isinstance(m, nn.Linear) else nn.Conv2d
    if parametrize.is_parametrized(m):
        return (
            f"parametrized ({', '.join(m.parametrizations)}; torch.nn.utils.parametrize): "
            "a sparse layer would drop the parametrization"
        )
    if type(m).forward is not base.forward or (
        base is nn.Conv2d and type(m)._conv_forward is not nn.Conv2d._conv_forward
    ):
        return f"{type(m).__name__} has its own forward: a sparse layer computes nn.{base.__name__}'s"
    if m._forward_pre_hooks or m._forward_hooks:
        return "has forward hooks (e.g. torch.nn.utils.weight_norm's): a sparse layer would drop them"
    if name in read_by:
        return f"{read_by[name]}.forward reads its .weight directly: a sparse layer has none"
    others = [n for n in names_of.get(id(m.weight), []) if n != f"{name}.weight"]
    if others:
        return f"weight shared with {', '.join(others)}: a sparse layer would untie it"
    return ""


def _target_sparsity(sparsity, name: str):
    if isinstance(sparsity, dict):
        return sparsity.get(name)
    return sparsity


def _consider(name, module, sparsity, method, min_sparsity, measuring, inputs, repeats, min_speedup):
    """``(LayerChange, the sparse layer or None)`` for one candidate layer of sparsify."""
    target = None if method == "existing" else _target_sparsity(sparsity, name)
    if isinstance(sparsity, dict) and name not in sparsity:
        return _dense_change(name, module, "not in the sparsity dict"), None
    if isinstance(module, nn.Conv2d):
        try:
            _conv_padding(module)
        except ValueError as exc:
            return _dense_change(name, module, str(exc)), None
    keep = module.weight.detach() != 0 if target is None else None
    reached = (1.0 - keep.float().mean().item()) if keep is not None else float(target)
    if reached < min_sparsity:
        reason = f"sparsity {reached:.3f} < min_sparsity {min_sparsity}: dense is faster"
        return _dense_change(name, module, reason, reached), None
    cls = SparseLinear if isinstance(module, nn.Linear) else SparseConv2d
    new = cls.from_dense(module, sparsity=target)
    new.train(module.training)
    timing, reason = None, ""
    if measuring and name not in inputs:
        reason = "not run by example_input: speed not measured"
    elif measuring:
        timing = time_layer(module, new, inputs[name], repeats=repeats)
        if timing.speedup < min_speedup:
            reason = f"measured: sparse runs at {timing.speedup:.2f}x of dense speed (< min_speedup {min_speedup:g})"
            return _dense_change(name, module, reason, reached, timing), None
        reason = f"measured: {timing.speedup:.2f}x faster than dense"
    shape = tuple(module.weight.shape)
    return LayerChange(name, type(module).__name__, shape, "sparse", new.sparsity, new.nnz, reason, timing), new


def sparsify(
    model: nn.Module,
    sparsity=None,
    method: str = "magnitude",
    layers=(nn.Linear, nn.Conv2d),
    min_sparsity: float = 0.8,
    example_input=None,
    repeats: int = 5,
    min_speedup: float = 1.05,
    verbose: bool = False,
) -> SparsifyReport:
    """Prune the model's ``layers`` and swap them, in place, for ``ffops.nn.SparseLinear`` / ``SparseConv2d``.

    Args:
        model: the module to change (in place).
        sparsity: fraction of each weight to remove: a float for all layers, a dict
            ``{qualified name: sparsity}`` (layers not in it stay dense), or None to keep each
            weight's current nonzeros (a model pruned already, e.g. by gradual magnitude pruning).
        method: ``"magnitude"`` keeps the largest ``|w|`` per layer; ``"existing"`` keeps the
            current nonzeros (what ``sparsity=None`` does).
        layers: the layer classes to consider (``nn.Linear``, ``nn.Conv2d`` or both).
        min_sparsity: layers whose resulting sparsity is below it stay dense: there the dense GEMM
            is faster than the sparse kernels (see benchmarks/bench_sparse.py).
        example_input: a batch like the ones training will use (a tensor, or a tuple of ``model``'s
            positional arguments). When given, every candidate layer is timed, dense against sparse,
            on the input it receives (forward + backward, ``repeats`` interleaved rounds after
            warm-up; ``ffops.sparse.speed``) and kept dense unless the sparse layer is at least
            ``min_speedup`` times faster; the report lists the times. Costs a few seconds per
            large layer.
        repeats: timed rounds per layer when measuring (the median is compared).
        min_speedup: the measured speedup (dense time / sparse time) a layer needs to be swapped;
            the default 1.05 leaves a layer dense where the two are within timing noise (0: swap
            every layer, e.g. for the memory, and still see the times).
        verbose: print each layer's measurement as it is taken.

    Only layers whose computation the sparse layer reproduces are swapped: exactly nn.Linear's /
    nn.Conv2d's own forward, the weight used only there. Left dense, with the reason in the report:
    subclasses with their own forward (e.g. timm's weight-standardized ``StdConv2d``, ``Conv2dSame``),
    parametrized layers (``torch.nn.utils.parametrizations.weight_norm``), layers with forward hooks,
    layers whose weight their parent's forward reads directly (``self.<name>.weight`` in its source:
    nn.MultiheadAttention's ``out_proj``, nn.TransformerEncoderLayer's ``linear1`` / ``linear2`` on its
    inference fast path), and weights shared with another module (tied).

    Returns:
        a :class:`SparsifyReport` listing every considered layer: swapped, or left dense and why.
    """
    if method not in METHODS:
        raise ValueError(f"ffops.sparse.sparsify: method must be one of {METHODS}, got {method!r}")
    allowed = (nn.Linear, nn.Conv2d)
    layers = tuple(layers) if isinstance(layers, (tuple, list)) else (layers,)
    if not layers or not all(isinstance(c, type) and issubclass(c, allowed) for c in layers):
        raise ValueError(f"ffops.sparse.sparsify: layers must be nn.Linear and/or nn.Conv2d classes, got {layers!r}")
    if not 0.0 <= min_sparsity <= 1.0:
        raise ValueError(f"ffops.sparse.sparsify: min_sparsity must be in [0, 1], got {min_sparsity}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"ffops.sparse.sparsify: repeats must be a positive int, got {repeats!r}")
    if isinstance(min_speedup, bool) or not isinstance(min_speedup, (int, float)) or not min_speedup >= 0:
        raise ValueError(f"ffops.sparse.sparsify: min_speedup must be a number >= 0, got {min_speedup!r}")
    report = SparsifyReport(measured=example_input is not None)
    candidates = [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, layers) and not isinstance(m, (SparseLinear, SparseConv2d))
    ]
    kept_dense = _kept_dense_reasons(model, candidates)
    swappable = [n for n, _ in candidates if n not in kept_dense]
    inputs = record_inputs(model, swappable, example_input) if example_input is not None else {}
    for name, module in candidates:
        if name in kept_dense:
            change, new = _dense_change(name, module, kept_dense[name]), None
        else:
            change, new = _consider(
                name, module, sparsity, method, min_sparsity, example_input is not None, inputs, repeats, min_speedup
            )
        if verbose and change.timing is not None:
            t = change.timing
            print(
                f"sparsify: {name} on {list(t.input_shape)}: dense {t.dense_ms:.3g} ms, sparse {t.sparse_ms:.3g} ms "
                f"fwd+bwd ({t.speedup:.2f}x): {change.action}",
                flush=True,
            )
        if new is not None:
            _replace(model, name, new)
        report.changes.append(change)
    return report


def densify(model: nn.Module) -> SparsifyReport:
    """Replace every ``SparseLinear`` / ``SparseConv2d`` by the equivalent dense layer, in place."""
    report = SparsifyReport()
    for name, module in [(n, m) for n, m in model.named_modules() if isinstance(m, (SparseLinear, SparseConv2d))]:
        dense = module.to_dense()
        dense.train(module.training)
        _replace(model, name, dense)
        report.changes.append(
            LayerChange(
                name,
                type(module).__name__,
                tuple(dense.weight.shape),
                "densified",
                module.sparsity,
                module.nnz,
            )
        )
    return report
