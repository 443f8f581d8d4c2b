"""Test configuration: backend parametrization and the GPU / Triton markers.

* ``gpu`` tests need a CUDA device and skip cleanly without one.
* ``triton`` tests run Triton kernels: on a GPU, or on CPU tensors when this pytest process was
  started with ``TRITON_INTERPRET=1`` (the variable must be set before Triton kernels are
  defined, hence a separate process: ``TRITON_INTERPRET=1 pytest -m triton tests``).
"""

import os

import pytest
import torch

from ffops import _backend

HAS_GPU = torch.cuda.is_available()
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

# (backend, device) pairs that run kernels; the reference is the oracle, not a contender.
BACKEND_DEVICES = [
    pytest.param(
        ("cpu", "cpu"),
        id="cpu",
        marks=pytest.mark.skipif(not _backend.CPP_CPU, reason="ffops._C CPU kernels not built"),
    ),
    pytest.param(
        ("triton", "cpu"),
        id="triton-interpreter",
        marks=[
            pytest.mark.triton,
            pytest.mark.skipif(not INTERPRET, reason="needs TRITON_INTERPRET=1 (own pytest process)"),
        ],
    ),
    pytest.param(
        ("triton", "cuda"),
        id="triton-cuda",
        marks=[pytest.mark.triton, pytest.mark.gpu, pytest.mark.skipif(not HAS_GPU, reason="needs a GPU")],
    ),
    pytest.param(
        ("cuda", "cuda"),
        id="cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not (HAS_GPU and _backend.CPP_CUDA), reason="needs a GPU and CUDA kernels"),
        ],
    ),
]


@pytest.fixture(params=BACKEND_DEVICES)
def backend_device(request):
    """Yields ``(backend, device)`` with that backend selected for the duration of the test."""
    backend, device = request.param
    with _backend.use_backend(backend):
        yield backend, device


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
