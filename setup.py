"""Build ffops and its one extension, ``ffops._C``.

* The C++ CPU kernels (``csrc/*.cpp``, ``csrc/cpu/*.cpp``) are always built.
* The CUDA kernels (``csrc/cuda/*``) are built as well where they can run: torch has CUDA, nvcc is
  found and a GPU is visible. ``FFOPS_FORCE_CUDA=1`` builds them anyway (a machine that builds for
  others; CI, so a compile error fails there), ``FFOPS_FORCE_CUDA=0`` leaves them out.
* ``FFOPS_SKIP_CPP=1`` installs pure Python: every op then runs its reference implementation.

Install with ``pip install --no-build-isolation -e .`` (build isolation would fetch a second torch).
"""

import glob
import os
import re
import shutil
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _resolve_cuda_home():
    """Point CUDA_HOME at the real toolkit when ``nvcc`` on PATH is a wrapper script.

    torch.utils.cpp_extension guesses CUDA_HOME as ``dirname(dirname(which nvcc))`` at import
    time, which is wrong for a wrapper like ``exec /usr/local/cuda-13.0/bin/nvcc "$@"``.
    """
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return
    nvcc = os.path.realpath(nvcc)
    try:
        with open(nvcc, "rb") as f:
            head = f.read(4096)
    except OSError:
        return
    if head.startswith(b"#!"):
        match = re.search(rb"exec\s+(\S+/bin/nvcc)\b", head)
        if match:
            nvcc = match.group(1).decode()
    home = os.path.dirname(os.path.dirname(nvcc))
    if os.path.exists(os.path.join(home, "include", "cuda_runtime.h")):
        os.environ["CUDA_HOME"] = home


def _flag(name):
    value = os.environ.get(name)
    if value is None:
        return None
    return value.strip().lower() not in ("", "0", "false", "no", "off")


PACKAGES = find_packages(include=["ffops", "ffops.*"]) + ["ffops.kernels"]
PACKAGE_DIR = {"ffops.kernels": "kernels"}


def _extensions():
    if _flag("FFOPS_SKIP_CPP"):
        print("ffops: FFOPS_SKIP_CPP=1, installing pure Python (reference ops only)")
        return [], {}
    _resolve_cuda_home()
    import torch
    from torch.utils import cpp_extension

    force_cuda = _flag("FFOPS_FORCE_CUDA")
    has_nvcc = cpp_extension.CUDA_HOME is not None and os.path.exists(
        os.path.join(cpp_extension.CUDA_HOME, "bin", "nvcc")
    )
    if force_cuda is not None:
        with_cuda = force_cuda
    else:  # nvcc's part is most of a build: only where a GPU can run the kernels
        with_cuda = torch.version.cuda is not None and has_nvcc and torch.cuda.is_available()
    if with_cuda and not has_nvcc:
        sys.exit("ffops: FFOPS_FORCE_CUDA=1 but nvcc was not found; set CUDA_HOME to the CUDA toolkit")

    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    cxx = ["-O3", "-fopenmp", "-fno-math-errno"]  # torch adds the C++ standard it needs
    extra = {"cxx": cxx}
    define_macros = []
    if with_cuda:
        sources += sorted(glob.glob("csrc/cuda/*.cpp") + glob.glob("csrc/cuda/*.cu"))
        define_macros.append(("FFOPS_WITH_CUDA", "1"))
        extra["nvcc"] = ["-O3", "-lineinfo"] + _cuda_arch_flags()
        ext_cls = cpp_extension.CUDAExtension
    else:
        ext_cls = cpp_extension.CppExtension
    print(f"ffops: building ffops._C with {'CPU + CUDA' if with_cuda else 'CPU'} kernels")
    ext = ext_cls(
        "ffops._C",
        sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        extra_compile_args=extra,
        extra_link_args=["-fopenmp"],
        define_macros=define_macros,
    )
    build_ext = cpp_extension.BuildExtension.with_options(use_ninja=True)
    return [ext], {"build_ext": build_ext}


def _cuda_arch_flags():
    """Compile for the lent GPUs (sm_90) and common training GPUs unless TORCH_CUDA_ARCH_LIST says otherwise."""
    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return []  # torch's own flag logic reads the variable
    archs = os.environ.get("FFOPS_CUDA_ARCHS", "80;90").split(";")
    flags = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    last = archs[-1]
    return flags + [f"-gencode=arch=compute_{last},code=compute_{last}"]


ext_modules, cmdclass = _extensions()

setup(
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
