"""The dataset object the loaders return, and the uint8 -> float conversion they share."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ffops.ops._common import stat_dtype

SPLITS = ("train", "valid", "test", "train+valid")


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class ImageDataset:
    """An image-classification dataset held as two tensors.

    Attributes:
        images: float tensor ``[N, D]`` (``D = 784`` for MNIST-style 28x28 images), values ``k / 255``
            for the 8-bit pixel intensities ``k``, so in ``[0, 1]``.
        labels: int64 tensor ``[N]`` with values in ``[0, num_classes)``.
        num_classes: number of classes.
        name: dataset name (``"mnist"``, ``"fashion-mnist"``).
        split: the split that was loaded (``"train"``, ``"valid"``, ``"test"``, ``"train+valid"``).
        classes: human-readable class names, index = label.
        source: where the data was read from (a file or directory path).

    It works where a ``torch.utils.data.TensorDataset`` does: ``len(ds)``, ``ds[i] -> (image, label)``
    (so a ``DataLoader`` can wrap it) and ``ds.tensors == (images, labels)``. Every load returns fresh
    tensors, so modifying them in place does not affect later loads.
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    name: str
    split: str
    classes: tuple[str, ...] = ()
    source: str = ""

    def __post_init__(self):
        if self.images.ndim != 2 or self.labels.ndim != 1 or len(self.images) != len(self.labels):
            raise ValueError(
                f"images must be [N, D] and labels [N]; got {tuple(self.images.shape)} and {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        return self.images[index], self.labels[index]

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, labels)``, as in ``torch.utils.data.TensorDataset``."""
        return self.images, self.labels

    def to(self, device) -> ImageDataset:
        """The same dataset with both tensors moved to ``device``."""
        return dataclasses.replace(self, images=self.images.to(device), labels=self.labels.to(device))

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"images={list(self.images.shape)} {self.images.dtype}, num_classes={self.num_classes}, "
            f"source={self.source!r})"
        )


def check_split(split: str, allowed: tuple[str, ...], where: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    if split not in allowed:
        raise ValueError(f"split {split!r} is not available for {where}: choose one of {', '.join(allowed)}")


def make_dataset(
    images: list[np.ndarray],
    labels: list[np.ndarray],
    *,
    dtype: torch.dtype,
    num_classes: int,
    name: str,
    split: str,
    classes: tuple[str, ...],
    source: str,
) -> ImageDataset:
    """Builds an ``ImageDataset`` from (cached, never exposed) uint8 arrays, always copying.

    ``images``/``labels`` are lists of parts that are concatenated (``"train+valid"``).
    """
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    # Convert each uint8 part straight into one new tensor (computing in float32, or float64 if
    # asked, and casting after the division), so nothing returned aliases the cached arrays.
    compute = stat_dtype(dtype)
    n = sum(len(part) for part in images)
    x = torch.empty((n, *images[0].shape[1:]), dtype=compute)
    y = torch.empty(n, dtype=torch.int64)
    start = 0
    for xs, ys in zip(images, labels, strict=True):
        x[start : start + len(xs)].copy_(torch.from_numpy(xs))
        y[start : start + len(ys)].copy_(torch.from_numpy(ys))
        start += len(xs)
    x = x.div_(255).to(dtype)
    return ImageDataset(
        images=x, labels=y, num_classes=num_classes, name=name, split=split, classes=classes, source=source
    )
