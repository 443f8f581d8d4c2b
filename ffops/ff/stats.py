"""Per-layer statistics for the training history: histograms of positive / negative goodness.

The bins of a layer trained with the logistic (softplus) loss are fixed, ``[0, 3 * threshold]``
(values outside are clamped into the end bins), so that epochs can be compared and plotted. Under
SymBa's loss the threshold means nothing and the goodness grows during training, so the range is
``[0, m]`` with ``m`` the sample's largest goodness rounded up to 1, 2 or 5 times a power of ten.
The sample (a fixed training subset) and its negatives (a generator reseeded every time) are the
same at every epoch.
"""

import math

import torch

from ffops.ff.labels import overlay_labels
from ffops.ff.negatives import hybrid_images, random_wrong_labels


def histogram(values: torch.Tensor, low: float, high: float, bins: int) -> list[int]:
    """Counts of ``values`` in ``bins`` equal bins over ``[low, high]`` (outside values clamped in)."""
    if not high > low:
        raise ValueError(f"histogram: need high > low, got [{low}, {high}]")
    v = values.detach().float().clamp(low, high)
    return [int(c) for c in torch.histc(v, bins=bins, min=low, max=high).tolist()]


def nice_ceil(value: float) -> float:
    """The smallest of 1, 2, 5 times a power of ten that is >= ``value`` (> 0)."""
    power = 10.0 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= value)


def bin_range(layer, goodness: torch.Tensor) -> tuple[float, float]:
    """The histogram range of a layer's ``goodness``: ``[0, 3 * threshold]`` for the softplus loss,
    ``[0, nice_ceil(max)]`` for SymBa's (``[0, 1]`` when either bound is not positive or not finite)."""
    high = 3.0 * float(layer.threshold) if layer.loss_kind == "softplus" else float(goodness.max())
    if not (math.isfinite(high) and high > 0):
        return 0.0, 1.0
    return 0.0, (high if layer.loss_kind == "softplus" else nice_ceil(high))


@torch.no_grad()
def goodness_histograms(trainer, x: torch.Tensor, y: torch.Tensor, *, bins: int = 30, num_layers=None) -> list:
    """For each layer (the first ``num_layers``): ``{"layer", "edges", "pos", "neg", "pos_mean",
    "neg_mean"}`` on ``x`` with true labels (positive) and random wrong labels or hybrid images
    (negative; a fixed-seed generator, so the negatives are the same every epoch)."""
    model, cfg = trainer.model, trainer.config
    gen = torch.Generator(device=model.device).manual_seed(cfg["seed"] + 3)
    if trainer.supervised:
        c = model.num_classes
        pos = overlay_labels(x, y, c, cfg["on_value"])
        neg = overlay_labels(x, random_wrong_labels(y, c, generator=gen), c, cfg["on_value"])
    else:
        pos, neg = x, hybrid_images(x, cfg["image_shape"], blur_steps=cfg["blur_steps"], generator=gen)
    outs = model(torch.cat([pos, neg]))
    n = x.shape[0]
    result = []
    for i, out in enumerate(outs[:num_layers]):
        g = model.layer_goodness(i, out)
        low, high = bin_range(model.layers[i], g)
        edges = [low + (high - low) * k / bins for k in range(bins + 1)]
        result.append(
            {
                "layer": i,
                "edges": edges,
                "pos": histogram(g[:n], low, high, bins),
                "neg": histogram(g[n:], low, high, bins),
                "pos_mean": float(g[:n].mean()),
                "neg_mean": float(g[n:].mean()),
            }
        )
    return result
