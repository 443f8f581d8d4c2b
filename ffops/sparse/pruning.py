"""Gradual magnitude pruning (Zhu & Gupta 2017, "To prune, or not to prune").

The sparsity of the pruned layers follows the cubic schedule

    s_t = s_f + (s_i - s_f) * (1 - (t - t_0) / T)^3        for t_0 <= t <= t_0 + T

(``cubic_sparsity``): fast pruning early, when there are many redundant weights, slowing down
towards the final sparsity ``s_f``, which is reached exactly at step ``t_0 + T``. Every
``update_every`` steps (and at the last step) each layer's mask is recomputed: the
``1 - s_t`` largest ``|w|`` among the weights still alive (so masks only ever shrink), and the
weights off the mask are set to zero. Between updates, training is dense with the mask applied
after each optimizer step (``GradualMagnitudePruner.step``). Masking the gradients too
(``mask_gradients``) changes nothing for the kept weights under an elementwise optimizer (SGD,
Adam without coupling between entries); it only keeps the optimizer state of pruned entries at 0.

At the end the pruned weights are exactly zero, so ``ffops.sparse.sparsify(model)`` (which keeps
each weight's nonzeros) or ``SparseLinear.from_dense(layer, mask=pruner.masks[name])`` turns them
into sparse layers with the pruning mask as their pattern.

    pruner = GradualMagnitudePruner(model, final_sparsity=0.9, total_steps=1000, update_every=50)
    for x, y in batches:
        loss_fn(model(x), y).backward()
        pruner.mask_gradients()   # optional: the optimizer state of pruned weights stays 0
        opt.step(); opt.zero_grad()
        pruner.step()             # keeps pruned weights at 0; every k steps prunes further
"""

import torch
from torch import nn


def cubic_sparsity(
    step: int, total_steps: int, final_sparsity: float, initial_sparsity: float = 0.0, begin_step: int = 0
) -> float:
    """The sparsity of Zhu & Gupta's cubic schedule at ``step``.

    ``initial_sparsity`` before ``begin_step``, ``final_sparsity`` from ``begin_step + total_steps``
    on (exactly), and ``s_f + (s_i - s_f) (1 - (step - begin_step) / total_steps)^3`` between:
    monotone non-decreasing in ``step`` when ``final_sparsity >= initial_sparsity``.
    """
    if not 0.0 <= initial_sparsity <= 1.0 or not 0.0 <= final_sparsity <= 1.0:
        raise ValueError(
            f"cubic_sparsity: sparsities must be in [0, 1], got initial {initial_sparsity}, final {final_sparsity}"
        )
    if total_steps < 0:
        raise ValueError(f"cubic_sparsity: total_steps must be >= 0, got {total_steps}")
    t = step - begin_step
    if t <= 0 and total_steps > 0:
        return float(initial_sparsity)
    if t >= total_steps:
        return float(final_sparsity)
    frac = 1.0 - t / total_steps
    return float(final_sparsity + (initial_sparsity - final_sparsity) * frac**3)


def nested_magnitude_mask(weight: torch.Tensor, sparsity: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Keep the ``numel - round(sparsity * numel)`` largest ``|weight|``, chosen among ``mask``'s
    True entries first (a pruned weight comes back only if more weights are to be kept than
    ``mask`` holds). Without ``mask`` it is ``ffops.sparse.magnitude_mask``."""
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"nested_magnitude_mask: sparsity must be in [0, 1], got {sparsity}")
    n = weight.numel()
    keep = n - round(sparsity * n)
    score = weight.detach().abs().float().flatten()
    if mask is not None:
        # alive weights rank above every pruned one (|w| >= 0 > -1), pruned ones keep their order
        score = torch.where(mask.flatten(), score, -1.0 - 1.0 / (1.0 + score))
    out = torch.zeros(n, dtype=torch.bool, device=weight.device)
    if keep > 0:
        out[score.topk(keep, sorted=False).indices] = True
    return out.view_as(weight)


def prunable_layers(model: nn.Module, layers=(nn.Linear,), exclude=()) -> list[str]:
    """Qualified names of ``model``'s modules of the ``layers`` classes, minus ``exclude``."""
    return [n for n, m in model.named_modules() if isinstance(m, tuple(layers)) and n not in set(exclude)]


class GradualMagnitudePruner:
    """Masks and cubic schedule for gradual magnitude pruning of ``model``'s layers ``names``.

    Args:
        model: the dense model (its layers keep being ``nn.Linear`` / ``nn.Conv2d``).
        final_sparsity: the sparsity every pruned layer reaches (per layer, not global).
        total_steps: pruning steps ``T``; ``final_sparsity`` is reached at ``step == total_steps``.
        update_every: recompute the masks every this many steps (Zhu & Gupta's ``Δt``); the last
            update always happens at ``total_steps``.
        names: the layers to prune (default: every ``nn.Linear`` and ``nn.Conv2d``).
        initial_sparsity: ``s_i`` of the schedule.

    ``masks`` maps a layer name to its boolean mask (the weight's shape); ``sparsity`` is the
    target of the last mask update; ``history`` lists ``(step, sparsity)`` of every update.
    """

    def __init__(
        self,
        model: nn.Module,
        final_sparsity: float,
        total_steps: int,
        update_every: int = 1,
        names=None,
        initial_sparsity: float = 0.0,
    ):
        if not 0.0 <= final_sparsity <= 1.0:
            raise ValueError(f"GradualMagnitudePruner: final_sparsity must be in [0, 1], got {final_sparsity}")
        if total_steps < 1 or update_every < 1:
            raise ValueError(
                f"GradualMagnitudePruner: total_steps and update_every must be >= 1, got "
                f"{total_steps} and {update_every}"
            )
        self.model = model
        self.final_sparsity, self.initial_sparsity = float(final_sparsity), float(initial_sparsity)
        self.total_steps, self.update_every = int(total_steps), int(update_every)
        if names is None:
            names = prunable_layers(model, (nn.Linear, nn.Conv2d))
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules or not hasattr(modules[n], "weight")]
        if missing:
            raise ValueError(f"GradualMagnitudePruner: no layer with a weight named {missing}")
        self.names = list(names)
        self.masks = {n: torch.ones_like(modules[n].weight, dtype=torch.bool) for n in self.names}
        self._off = {n: ~m for n, m in self.masks.items()}  # cached complements for masked_fill_
        self.step_count = 0
        self.sparsity = 0.0
        self.history: list[tuple[int, float]] = []
        if self.initial_sparsity > 0:
            self.update_masks(self.initial_sparsity)

    def _weights(self):
        modules = dict(self.model.named_modules())
        return [(n, modules[n].weight) for n in self.names]

    def target(self, step: int | None = None) -> float:
        """The schedule's sparsity at ``step`` (default: the current step)."""
        return cubic_sparsity(
            self.step_count if step is None else step,
            self.total_steps,
            self.final_sparsity,
            self.initial_sparsity,
        )

    @torch.no_grad()
    def update_masks(self, sparsity: float) -> None:
        """Prune every layer to ``sparsity`` by magnitude (nested in the current masks) and zero the
        weights off the new masks."""
        for name, weight in self._weights():
            self.masks[name] = nested_magnitude_mask(weight, sparsity, self.masks[name])
            self._off[name] = ~self.masks[name]
        self.sparsity = float(sparsity)
        self.history.append((self.step_count, self.sparsity))
        self.apply_masks()

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Zero the weights off the masks (after an optimizer step moved them)."""
        for name, weight in self._weights():
            weight.masked_fill_(self._off[name], 0)

    @torch.no_grad()
    def mask_gradients(self) -> None:
        """Zero the gradients off the masks (call between ``backward`` and ``optimizer.step``)."""
        for name, weight in self._weights():
            if weight.grad is not None:
                weight.grad.masked_fill_(self._off[name], 0)

    def step(self) -> bool:
        """Advance one training step: update the masks when the schedule says so (every
        ``update_every`` steps and at ``total_steps``), else re-apply them. Returns whether the
        masks were updated."""
        self.step_count += 1
        t = self.step_count
        if t <= self.total_steps and (t % self.update_every == 0 or t == self.total_steps):
            self.update_masks(self.target(t))
            return True
        if self.history:  # nothing is pruned before the first update
            self.apply_masks()
        return False

    @property
    def done(self) -> bool:
        """Whether the final sparsity has been reached."""
        return self.step_count >= self.total_steps

    def layer_sparsity(self) -> dict[str, float]:
        """The fraction of pruned entries of every layer's mask."""
        return {n: 1.0 - m.float().mean().item() for n, m in self.masks.items()}

    def state_dict(self) -> dict:
        return {
            "step_count": self.step_count,
            "sparsity": self.sparsity,
            "masks": dict(self.masks),
            "history": list(self.history),
        }


def schedule_points(
    total_steps: int, update_every: int, final_sparsity: float, initial_sparsity: float = 0.0
) -> list[tuple[int, float]]:
    """The ``(step, sparsity)`` of every mask update ``GradualMagnitudePruner`` makes."""
    steps = list(range(update_every, total_steps + 1, update_every))
    if not steps or steps[-1] != total_steps:
        steps.append(total_steps)
    return [(t, cubic_sparsity(t, total_steps, final_sparsity, initial_sparsity)) for t in steps]


__all__ = [
    "GradualMagnitudePruner",
    "cubic_sparsity",
    "nested_magnitude_mask",
    "prunable_layers",
    "schedule_points",
]
