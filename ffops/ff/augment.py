"""On-the-fly image augmentation for FF training: random crop (after zero padding) and horizontal flip.

Batched tensor ops on the training device, drawn from a ``torch.Generator`` so that a seeded run
sees the same augmented batches again (and a resumed run goes on with the generator's saved state).
"""

import torch

AUGMENTATIONS = ("none", "crop", "crop-flip")


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image of ``images`` ``[N, C, H, W]`` shifted by a random offset in ``[-padding, padding]``
    in both directions, with zeros shifted in: a random ``H x W`` crop of the zero-padded image."""
    if images.dim() != 4:
        raise ValueError(f"random_crop: images must be [N, C, H, W], got shape {tuple(images.shape)}")
    if padding < 0:
        raise ValueError(f"random_crop: padding must be >= 0, got {padding}")
    n, _, h, w = images.shape
    if padding == 0 or n == 0:
        return images
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator, device="cpu").to(images.device)
    rows = offsets[0, :, None] + torch.arange(h, device=images.device)  # [N, H]
    cols = offsets[1, :, None] + torch.arange(w, device=images.device)  # [N, W]
    batch = torch.arange(n, device=images.device)[:, None, None]
    # advanced indexing over (N, H, W) with the channel slice kept: result [N, H, W, C]
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def random_hflip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image of ``images`` ``[N, C, H, W]`` mirrored left-right with probability 1/2."""
    flip = torch.rand(len(images), generator=generator, device="cpu").lt(0.5).to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def augment(
    images: torch.Tensor, kind: str, *, padding: int = 2, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``images`` augmented by ``kind``: ``"none"``, ``"crop"`` (``random_crop`` by ``padding``) or
    ``"crop-flip"`` (and ``random_hflip``)."""
    if kind not in AUGMENTATIONS:
        raise ValueError(f"augment: kind must be one of {AUGMENTATIONS}, got {kind!r}")
    if kind == "none":
        return images
    images = random_crop(images, padding, generator)
    return random_hflip(images, generator) if kind == "crop-flip" else images
