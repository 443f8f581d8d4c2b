"""Negative data for Forward-Forward.

* Supervised FF: the same image with a wrong label. ``random_wrong_labels`` draws uniformly among the
  ``num_classes - 1`` wrong labels (never the true one); ``hard_wrong_labels`` samples wrong labels
  in proportion to the model's own predicted probabilities (a softmax of per-label scores, the true
  label excluded), as Hinton's code does.
* Unsupervised FF: hybrid images. A mask made by blurring random bits with ``[1/4, 1/2, 1/4]``
  horizontally and vertically several times and thresholding at 0.5 mixes two different images.

All sampling takes an optional ``torch.Generator`` (on the tensors' device) for determinism.
"""

import math

import torch
import torch.nn.functional as F

from ffops.ff.labels import check_labels


def _device(generator, fallback):
    return generator.device if generator is not None else fallback


def random_wrong_labels(labels: torch.Tensor, num_classes: int, *, generator=None) -> torch.Tensor:
    """A uniformly random wrong label per sample: ``(labels + k) % num_classes`` with ``k`` uniform in
    ``[1, num_classes - 1]``, so the true label is never drawn."""
    op = "ffops.ff.random_wrong_labels"
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"{op}: num_classes must be an int >= 2, got {num_classes!r}")
    labels = check_labels(op, labels, labels.shape[0] if isinstance(labels, torch.Tensor) else -1, num_classes)
    k = torch.randint(1, num_classes, labels.shape, generator=generator, device=_device(generator, labels.device))
    return (labels + k.to(labels.device)) % num_classes


def gumbel_noise(shape, *, generator=None, device=None, dtype=torch.float32) -> torch.Tensor:
    """Standard Gumbel noise: ``argmax(logits + noise)`` samples from ``softmax(logits)``. Drawing it
    for a whole global batch and slicing keeps sampling independent of how the batch is split."""
    u = torch.rand(shape, generator=generator, device=_device(generator, device), dtype=dtype)
    tiny = torch.finfo(dtype).tiny
    exponential = -torch.log(u.clamp_min(tiny))
    return (-torch.log(exponential.clamp_min(tiny))).to(device)


def hard_wrong_labels(
    scores: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float = 1.0,
    generator=None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Wrong labels sampled from ``softmax(scores / temperature)`` with the true label excluded.

    ``scores``: ``[B, C]`` per-label scores (e.g. ffops.ff.goodness_per_label: the summed layer
    log-odds). ``noise``: optional pre-drawn ``gumbel_noise`` of shape ``[B, C]``; else drawn here.
    """
    op = "ffops.ff.hard_wrong_labels"
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2 or scores.shape[1] < 2:
        raise ValueError(
            f"{op}: scores must be a [batch, num_classes >= 2] tensor, got "
            f"{tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__}"
        )
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"{op}: temperature must be a finite number > 0, got {temperature!r}")
    b, c = scores.shape
    labels = check_labels(op, labels, b, c, scores.device)
    if noise is None:
        noise = gumbel_noise((b, c), generator=generator, device=scores.device)
    elif noise.shape != (b, c):
        raise ValueError(f"{op}: noise must have shape {(b, c)}, got {tuple(noise.shape)}")
    z = scores.float() / temperature + noise.to(scores.device, torch.float32)
    z = z.scatter(1, labels[:, None], float("-inf"))  # the true label is never drawn
    return z.argmax(1)


def _blur(m: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` times a [1/4, 1/2, 1/4] blur along width then height (edges replicated)."""
    k = torch.tensor([0.25, 0.5, 0.25], dtype=m.dtype, device=m.device)
    kh, kv = k.view(1, 1, 1, 3), k.view(1, 1, 3, 1)
    m = m[:, None]
    for _ in range(steps):
        m = F.conv2d(F.pad(m, (1, 1, 0, 0), mode="replicate"), kh)
        m = F.conv2d(F.pad(m, (0, 0, 1, 1), mode="replicate"), kv)
    return m[:, 0]


def hybrid_mask(n: int, image_shape, *, blur_steps: int = 6, generator=None, device=None) -> torch.Tensor:
    """``n`` boolean masks ``[n, H, W]``: random bits blurred ``blur_steps`` times, then ``> 0.5``:
    large irregular regions, the shapes of Hinton's hybrid-image negatives."""
    op = "ffops.ff.hybrid_mask"
    if len(image_shape) != 2 or min(image_shape) < 1:
        raise ValueError(f"{op}: image_shape must be (height, width), got {image_shape!r}")
    if isinstance(blur_steps, bool) or not isinstance(blur_steps, int) or blur_steps < 0:
        raise ValueError(f"{op}: blur_steps must be an int >= 0, got {blur_steps!r}")
    bits = torch.randint(0, 2, (n, *image_shape), generator=generator, device=_device(generator, device)).float()
    mask = _blur(bits, blur_steps) > 0.5
    return mask if device is None else mask.to(device)


def hybrid_images(
    images: torch.Tensor,
    image_shape=None,
    *,
    blur_steps: int = 6,
    generator=None,
    partner: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Hybrid negatives ``mask * a + (1 - mask) * b`` of two *different* images of the batch.

    ``images``: ``[B, D]`` (``D = H * W``; square images are inferred) or ``[B, H, W]``. Each image
    is mixed with ``images[partner[i]]``, where ``partner`` (default: a random cyclic derangement,
    ``partner[i] != i``) and ``mask`` (default ``hybrid_mask``) may be given. Returns ``images``' shape.
    """
    op = "ffops.ff.hybrid_images"
    if not isinstance(images, torch.Tensor) or images.dim() not in (2, 3) or images.shape[0] < 2:
        raise ValueError(
            f"{op}: images must be [batch >= 2, features] or [batch, H, W], got "
            f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}"
        )
    b = images.shape[0]
    if image_shape is None:
        if images.dim() == 3:
            image_shape = tuple(images.shape[1:])
        else:
            side = math.isqrt(images.shape[1])
            if side * side != images.shape[1]:
                raise ValueError(
                    f"{op}: cannot infer a square image from {images.shape[1]} features; pass image_shape=(H, W)"
                )
            image_shape = (side, side)
    image_shape = tuple(image_shape)
    if math.prod(image_shape) != math.prod(images.shape[1:]):
        raise ValueError(f"{op}: image_shape {image_shape} does not match images of shape {tuple(images.shape)}")
    if partner is None:
        order = torch.randperm(b, generator=generator, device=_device(generator, images.device)).to(images.device)
        partner = torch.empty_like(order)
        partner[order] = order.roll(-1)  # a single cycle through the batch: partner[i] != i
    elif partner.shape != (b,) or bool((partner == torch.arange(b, device=partner.device)).any()):
        raise ValueError(f"{op}: partner must be [batch] indices with partner[i] != i")
    if mask is None:
        mask = hybrid_mask(b, image_shape, blur_steps=blur_steps, generator=generator, device=images.device)
    m = mask.reshape(images.shape).to(images.dtype)
    return m * images + (1 - m) * images[partner.to(images.device)]
