"""Swap a model's dense layers for sparse ones and back: ``sparsify`` and ``densify``.

Build the optimizer after ``sparsify``: the sparse layers' parameters (``values``) are new tensors.
"""

from dataclasses import dataclass, field

from torch import nn

from ffops.nn.sparse import SparseConv2d, SparseLinear, _conv_padding

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


@dataclass
class SparsifyReport:
    """The layers that were swapped, and those left dense with the reason."""

    changes: list[LayerChange] = field(default_factory=list)

    @property
    def swapped(self) -> list[LayerChange]:
        return [c for c in self.changes if c.action in ("sparse", "densified")]

    @property
    def skipped(self) -> list[LayerChange]:
        return [c for c in self.changes if c.action == "dense"]

    def __str__(self) -> str:
        rows = [f"{'layer':<28} {'type':<13} {'shape':<20} {'action':<10} {'sparsity':>8} {'nnz':>10}  reason"]
        for c in self.changes:
            rows.append(
                f"{c.name:<28} {c.kind:<13} {c.shape!s:<20} {c.action:<10} {c.sparsity:>8.3f} {c.nnz:>10}  {c.reason}"
            )
        n = len(self.swapped)
        rows.append(f"{n} layer(s) changed, {len(self.skipped)} left dense")
        return "\n".join(rows)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def _target_sparsity(sparsity, name: str):
    if isinstance(sparsity, dict):
        return sparsity.get(name)
    return sparsity


def sparsify(
    model: nn.Module,
    sparsity=None,
    method: str = "magnitude",
    layers=(nn.Linear, nn.Conv2d),
    min_sparsity: float = 0.8,
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
    report = SparsifyReport()
    candidates = [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, layers) and not isinstance(m, (SparseLinear, SparseConv2d))
    ]
    for name, module in candidates:
        kind = type(module).__name__
        shape = tuple(module.weight.shape)
        target = None if method == "existing" else _target_sparsity(sparsity, name)
        if isinstance(sparsity, dict) and name not in sparsity:
            report.changes.append(
                LayerChange(name, kind, shape, "dense", 0.0, module.weight.numel(), "not in the sparsity dict")
            )
            continue
        if isinstance(module, nn.Conv2d):
            try:
                _conv_padding(module)
            except ValueError as exc:
                report.changes.append(LayerChange(name, kind, shape, "dense", 0.0, module.weight.numel(), str(exc)))
                continue
        keep = module.weight.detach() != 0 if target is None else None
        reached = (1.0 - keep.float().mean().item()) if keep is not None else float(target)
        if reached < min_sparsity:
            report.changes.append(
                LayerChange(
                    name,
                    kind,
                    shape,
                    "dense",
                    reached,
                    module.weight.numel(),
                    f"sparsity {reached:.3f} < min_sparsity {min_sparsity}: dense is faster",
                )
            )
            continue
        cls = SparseLinear if isinstance(module, nn.Linear) else SparseConv2d
        new = cls.from_dense(module, sparsity=target)
        new.train(module.training)
        _replace(model, name, new)
        report.changes.append(LayerChange(name, kind, shape, "sparse", new.sparsity, new.nnz))
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
