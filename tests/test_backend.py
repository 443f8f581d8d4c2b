"""Backend choice: set_backend / use_backend / FFOPS_BACKEND, errors that say how to build,
and the pure-Python fallback when ffops._C is missing."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import ffops
from ffops import _backend


def test_default_is_auto_and_cpu_tensors_use_cpp():
    assert ffops.get_backend() == "auto"
    expected = "cpp" if _backend.CPP_CPU else "reference"
    assert _backend.resolve(torch.device("cpu")) == expected


@pytest.mark.parametrize(
    "cpp_cuda,triton_ok,expected",
    [(True, True, "cpp"), (False, True, "triton"), (True, False, "cpp"), (False, False, "reference")],
)
def test_auto_sends_cuda_tensors_to_cuda_cpp_first(monkeypatch, cpp_cuda, triton_ok, expected):
    """CUDA C++ has one dispatcher call per op; Triton only where CUDA C++ is not built."""
    monkeypatch.setattr(_backend, "CPP_CUDA", cpp_cuda)
    monkeypatch.setattr(_backend, "TRITON_OK", triton_ok)
    assert _backend.resolve(torch.device("cuda", 0)) == expected


def test_use_backend_restores_previous():
    with ffops.use_backend("reference"):
        assert ffops.get_backend() == "reference"
        assert _backend.resolve(torch.device("cpu")) == "reference"
    assert ffops.get_backend() == "auto"
    with pytest.raises(KeyError), ffops.use_backend("reference"):
        raise KeyError
    assert ffops.get_backend() == "auto"


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match=r"must be one of auto, reference, cpu, cuda, triton; got 'gpu'"):
        ffops.set_backend("gpu")
    assert ffops.get_backend() == "auto"


@pytest.mark.skipif(not _backend.CPP_CPU, reason="needs ffops._C")
def test_cpu_backend_on_wrong_device_says_so():
    with ffops.use_backend("cpu"), pytest.raises(ffops.BackendUnavailableError, match="runs on cpu tensors"):
        _backend.resolve(torch.device("cuda", 0))


def test_cuda_backend_when_not_built_or_on_cpu_tensors():
    if _backend.CPP_CUDA:
        with (
            ffops.use_backend("cuda"),
            pytest.raises(ffops.BackendUnavailableError, match="runs on cuda tensors"),
        ):
            ffops.goodness(torch.randn(2, 3))
    else:
        with pytest.raises(ffops.BackendUnavailableError, match="not built.*pip install --no-build-isolation -e ."):
            ffops.set_backend("cuda")


@pytest.mark.skipif(not _backend.TRITON_OK, reason="triton not installed")
def test_triton_on_cpu_without_interpreter_says_how():
    if _backend.TRITON_INTERPRET:
        pytest.skip("this process runs the Triton interpreter")
    with (
        ffops.use_backend("triton"),
        pytest.raises(ffops.BackendUnavailableError, match="TRITON_INTERPRET=1"),
    ):
        ffops.goodness(torch.randn(2, 3))


def _python(code: str, **env) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=full_env)


def test_ffops_backend_environment_variable():
    out = _python("import ffops; print(ffops.get_backend())", FFOPS_BACKEND="reference")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "reference"
    bad = _python("import ffops", FFOPS_BACKEND="fast")
    assert bad.returncode != 0 and "must be one of auto, reference, cpu, cuda, triton; got 'fast'" in bad.stderr


def test_missing_extension_falls_back_to_reference_with_one_warning():
    code = """
        import sys, warnings
        class HideC:  # make ffops._C unimportable, as after FFOPS_SKIP_CPP=1
            def find_spec(self, name, path=None, target=None):
                if name == "ffops._C":
                    raise ImportError("hidden for the test")
        sys.meta_path.insert(0, HideC())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import torch, ffops
            from ffops.reference import goodness as reference
            h = torch.randn(5, 7)
            out = ffops.ff_loss(h, h.flip(0), 1.0)
            ffops.goodness(h); ffops.ff_normalize(h)
        msgs = [str(w.message) for w in caught if "ffops" in str(w.message)]
        assert len(msgs) == 1, msgs
        assert "pure-torch reference" in msgs[0] and "pip install --no-build-isolation -e ." in msgs[0]
        assert torch.equal(out, reference.ff_loss(h, h.flip(0), 1.0))
        try:
            ffops.set_backend("cpu")
        except ffops.BackendUnavailableError as e:
            assert "not built" in str(e)
        else:
            raise AssertionError("set_backend('cpu') should fail without ffops._C")
        print("ok")
    """
    out = _python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
