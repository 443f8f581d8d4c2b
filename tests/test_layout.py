"""The layout of the code: every op's files import only their own op and the common base.

An op ``<name>`` lives in ``ffops/ops/<name>*.py``, ``ffops/reference/<name>.py``,
``kernels/<name>*.py``, ``csrc/<name>.{h,cpp}``, ``csrc/cpu/<name>*`` and ``csrc/cuda/<name>*``.
What more than one op needs is in the common base (``ffops/ops/_common.py``, ``ffops/_validation.py``,
``ffops/_backend.py``, ``kernels/_common.py``, ``csrc/common.h``, ``csrc/cuda/device_common.cuh``...),
never borrowed sideways from another op's file.
"""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OPS = ("goodness", "ff_linear", "ff_label_rows", "packed_act", "ms_norm", "sparse_linear")
# ff_linear's sub-ops keep their own kernel files, as parts of one op: they may import each other.
PARTS = {
    "ff_label_rows": "ff_linear",
    "ff_linear_overlay": "ff_linear",
    "sparse_linear_pattern": "sparse_linear",
    "sparse_kernels": "sparse_linear",  # the sparse family's CPU kernels, shared by the linear layer and
    "sparse_conv": "sparse_linear",  # the direct sparse convolution (CPU only)
    "sparse_autograd": "sparse_linear",  # what both layers' backward nodes save
}


def _op_of(stem: str) -> str | None:
    """The op a file belongs to, by its name (``ff_linear_overlay`` -> ``ff_linear``)."""
    stem = stem.removesuffix("_cuda").removesuffix("_math")
    stem = PARTS.get(stem, stem)
    return stem if stem in OPS else None


def _python_files():
    for folder in ("ffops/ops", "ffops/reference", "kernels"):
        for path in sorted((ROOT / folder).glob("*.py")):
            if _op_of(path.stem):
                yield path


def _cpp_files():
    for folder in ("csrc", "csrc/cpu", "csrc/cuda"):
        for path in sorted((ROOT / folder).glob("*")):
            if path.suffix in (".h", ".cpp", ".cu", ".cuh") and _op_of(path.stem):
                yield path


def _imported_modules(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            for alias in node.names:  # "from ffops.ops import goodness"
                yield f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


@pytest.mark.parametrize("path", list(_python_files()), ids=lambda p: str(p.relative_to(ROOT)))
def test_python_op_files_import_only_their_op(path):
    own = _op_of(path.stem)
    for module in _imported_modules(path):
        parts = module.split(".")
        if parts[:2] in (["ffops", "ops"], ["ffops", "reference"], ["ffops", "kernels"]) and len(parts) > 2:
            other = _op_of(parts[2])
            assert other in (None, own), f"{path.relative_to(ROOT)} imports {module}: another op's file"
            assert not parts[2].startswith("_") or parts[2] in ("_common", "_act_tables"), (
                f"{path.relative_to(ROOT)} imports {module}: a private module that is not the common base"
            )


@pytest.mark.parametrize("path", list(_cpp_files()), ids=lambda p: str(p.relative_to(ROOT)))
def test_cpp_op_files_include_only_their_op(path):
    own = _op_of(path.stem)
    for header in re.findall(r'#include\s+"([^"]+)"', path.read_text()):
        other = _op_of(Path(header).stem)
        assert other in (None, own), f"{path.relative_to(ROOT)} includes {header}: another op's header"


def test_every_op_has_its_files():
    """The walk of an op: public function, reference, Triton kernels, C++ CPU and CUDA kernels, tests."""
    for op in ("goodness", "ff_linear", "packed_act", "ms_norm", "sparse_linear"):
        for rel in (
            f"ffops/ops/{op}.py",
            f"ffops/reference/{op}.py",
            f"kernels/{op}.py",
            f"csrc/cpu/{op}.cpp",
            f"csrc/cuda/{op}.cu",
            f"csrc/cuda/{op}_cuda.cpp",
            f"tests/ops/test_{op}.py",
        ):
            assert (ROOT / rel).exists(), rel


def _import_kernels_from_root(without_site_packages: bool) -> str:
    """In a fresh interpreter with the repository root first on sys.path: ``import kernels`` -> its
    file, or "absent"."""
    code = (
        "import sys\n"
        "if sys.argv[2] == '1':\n"
        "    sys.path[:] = [p for p in sys.path if 'site-packages' not in p and 'dist-packages' not in p]\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "try:\n"
        "    import kernels\n"
        "except ModuleNotFoundError:\n"
        "    print('absent')\n"
        "else:\n"
        "    print(kernels.__file__)\n"
    )
    args = [sys.executable, "-c", code, str(ROOT), "1" if without_site_packages else "0"]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip()


def test_top_level_name_kernels_is_left_to_an_installed_package():
    """Our Triton kernels are ``ffops.kernels``; run from the repository root, ``import kernels`` gives an
    installed package of that name (transformers imports Hugging Face's ``kernels``) or fails, never
    this folder."""
    assert _import_kernels_from_root(without_site_packages=True) == "absent"
    found = _import_kernels_from_root(without_site_packages=False)
    assert found == "absent" or not Path(found).resolve().is_relative_to(ROOT)
