"""Reading the IDX format of the MNIST-family datasets (``train-images-idx3-ubyte[.gz]`` ...).

An IDX file is a 4-byte magic number ``0x00 0x00 <dtype code> <ndim>``, then ``ndim`` big-endian
int32 dimensions, then the data in big-endian C order. Files may be gzip-compressed (detected from
their first bytes, not their name).
"""

from __future__ import annotations

import functools
import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

# IDX dtype code -> big-endian numpy dtype
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: corrupt or truncated gzip data ({exc})") from exc
    return data


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decodes IDX ``data`` (uncompressed) into a writable native-byte-order array.

    Raises ``ValueError`` naming ``name`` for a bad magic number, an unknown dtype code or a data
    size that does not match the header.
    """
    if len(data) < 4:
        raise ValueError(f"{name}: not an IDX file (only {len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise ValueError(f"{name}: not an IDX file (magic number {data[:4].hex()} does not start with 0000)")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise ValueError(
            f"{name}: unknown IDX dtype code 0x{code:02x} (known: "
            + ", ".join(f"0x{c:02x}={d.name}" for c, d in IDX_DTYPES.items())
            + ")"
        )
    if ndim == 0:
        raise ValueError(f"{name}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{name}: truncated IDX header ({len(data)} bytes, need {header} for {ndim} dims)")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize
    found = len(data) - header
    if found < expected:
        raise ValueError(
            f"{name}: truncated IDX data: shape {list(dims)} of {dtype.name} needs {expected} bytes, found {found}"
        )
    if found > expected:
        raise ValueError(f"{name}: {found - expected} unexpected trailing bytes after IDX data of shape {list(dims)}")
    array = np.frombuffer(data, dtype=dtype, count=math.prod(dims), offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (plain or gzip-compressed) into a numpy array (native byte order)."""
    path = Path(path)
    return parse_idx(_read_bytes(path), str(path))


@functools.lru_cache(maxsize=16)
def _read_idx_cached(path: str, mtime_ns: int, size: int) -> np.ndarray:
    # keyed on (mtime, size) too, so a replaced file is read again
    return read_idx(path)


def read_idx_cached(path: Path) -> np.ndarray:
    """``read_idx`` cached per process. The array is shared: callers must not modify it."""
    st = path.stat()
    return _read_idx_cached(str(path.resolve()), st.st_mtime_ns, st.st_size)


def idx_names(prefix: str, kind: str) -> list[str]:
    """Accepted file names for ``prefix`` (``train``/``t10k``) and ``kind`` (``images``/``labels``),
    in order of preference: the standard ``train-images-idx3-ubyte`` and the dotted variant
    ``train-images.idx3-ubyte``, each plain or ``.gz``."""
    rank = "idx3" if kind == "images" else "idx1"
    names = []
    for stem in (f"{prefix}-{kind}-{rank}-ubyte", f"{prefix}-{kind}.{rank}-ubyte"):
        names += [stem, stem + ".gz"]
    return names


def find_idx_file(root: Path, prefix: str, kind: str) -> Path | None:
    """The first accepted IDX file name for (prefix, kind) that exists in ``root``, else None."""
    for name in idx_names(prefix, kind):
        if (root / name).is_file():
            return root / name
    return None
