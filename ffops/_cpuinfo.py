"""This machine's CPU as far as ffops' kernels care: model, the vector ISA its C++ kernels run, L2 / L3.

One implementation for ``python -m ffops info`` and the benchmarks' metadata (``benchmarks/harness.py``).

The sparse kernels and transposes are compiled once per ISA with their own register blocking and
picked at run time (``csrc/cpu/vector_isa.h``): the best the CPU has, or a lower one named by the
environment variable ``FFOPS_CPU_ISA`` (``avx512`` / ``avx2`` / ``baseline``), so that one machine can
measure the kernels of another. :func:`sparse_kernel_isa` asks the extension which one runs. To
measure a whole AVX2 machine on an AVX-512 one, lower torch's libraries too:
``FFOPS_CPU_ISA=avx2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 DNNL_MAX_CPU_ISA=AVX2``
(caches and clocks stay this machine's).

The C++ CPU kernels' vectorized bodies are compiled three times (``FFOPS_MULTIVERSION`` in
``csrc/cpu/row_math.h``: GCC ``target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")``) and the
loader picks one from the CPU's features. :func:`vector_isa` makes the same choice from the flags in
``/proc/cpuinfo``: ``"AVX-512"`` (x86-64-v4), ``"AVX2"`` (x86-64-v3) or ``"baseline"`` (the default clone;
also on any other architecture, where ffops builds no clones). Without ``/proc/cpuinfo`` (another OS)
it falls back to torch's own choice for ATen (``torch.backends.cpu.get_cpu_capability()``), which
checks nearly the same features. A build without the clones (a compiler other than GCC) runs the
baseline code whatever this says.

Cache sizes are those of CPU 0 (``/sys/devices/system/cpu/cpu0/cache``, else ``getconf`` / ``sysctl``):
the L2 of one core, the L3 that core shares with others; ``None`` where the OS does not tell.
"""

import functools
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

ISAS = ("AVX-512", "AVX2", "baseline")
ISA_TARGETS = {"AVX-512": "x86-64-v4", "AVX2": "x86-64-v3", "baseline": "x86-64"}  # the baseline on x86-64

# the features GCC's resolver requires for each x86-64 level, under their /proc/cpuinfo names
# (LAHF-SAHF is "lahf_lm", SSE3 "pni", CMPXCHG16B "cx16", LZCNT "abm"; OSXSAVE is implied: the kernel
# lists AVX / AVX-512 flags only when it enabled their register state)
_X86_64_V2 = frozenset({"cx16", "lahf_lm", "popcnt", "pni", "ssse3", "sse4_1", "sse4_2"})
_X86_64_V3 = _X86_64_V2 | {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}
_X86_64_V4 = _X86_64_V3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}


def _cpuinfo_fields() -> dict[str, str]:
    """The first processor's ``key: value`` lines of /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    return fields


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or ``platform.processor()``, or ``"unknown-cpu"``).

    The benchmarks' results files are named after it (``cpu-amd-epyc``): keep the fallbacks as they are."""
    return _cpuinfo_fields().get("model name") or platform.processor() or "unknown-cpu"


def _is_x86_64() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def isa_from_flags(flags) -> str:
    """``"AVX-512"`` / ``"AVX2"`` / ``"baseline"``: the clone GCC's resolver picks for these CPU flags."""
    flags = set(flags)
    if flags.issuperset(_X86_64_V4):
        return "AVX-512"
    if flags.issuperset(_X86_64_V3):
        return "AVX2"
    return "baseline"


def vector_isa() -> str:
    """The vector ISA of the clones ffops' C++ kernels select on this CPU (one of :data:`ISAS`)."""
    if not _is_x86_64():
        return "baseline"
    flags = _cpuinfo_fields().get("flags")
    if flags is not None:
        return isa_from_flags(flags.split())
    # no /proc/cpuinfo: ATen's choice (AVX512 needs avx512f/bw/dq/vl, AVX2 needs avx2 + fma); an old torch
    # without it: nothing known beyond the baseline
    return {"AVX512": "AVX-512", "AVX2": "AVX2"}.get(_aten_capability(), "baseline")


def sparse_kernel_isa() -> str | None:
    """The ISA of the sparse kernels and transposes the extension runs (``FFOPS_CPU_ISA`` respected), or
    ``None`` without the extension."""
    try:
        import torch

        import ffops  # noqa: F401  (loads the extension where it is built)

        return str(torch.ops.ffops.cpu_vector_isa())
    except (ImportError, AttributeError, RuntimeError):
        return None


def _aten_capability() -> str | None:
    """ATen's CPU capability (``"AVX512"``, ``"AVX2"``, ``"DEFAULT"``, ...; ``ATEN_CPU_CAPABILITY`` lowers
    it), or ``None`` with a torch that does not tell."""
    try:
        import torch

        return torch.backends.cpu.get_cpu_capability()
    except Exception:  # an old torch without it
        return None


def _parse_size(text: str) -> int | None:
    """``"1024K"`` / ``"32M"`` / ``"1048576"`` -> bytes (``None`` if unreadable or 0)."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)i?B?\s*", text, re.IGNORECASE)
    if not m:
        return None
    size = int(m.group(1)) * 1024 ** " KMG".index(m.group(2).upper() or " ")
    return size or None


def _sysfs_caches() -> dict[int, int]:
    caches: dict[int, int] = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            size = _parse_size((index / "size").read_text())
        except (OSError, ValueError):
            continue
        if kind in ("Unified", "Data") and size:
            caches.setdefault(level, size)
    return caches


def _command_size(argv: list[str]) -> int | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return _parse_size(out.strip()) if out.strip() else None


@functools.cache
def cache_sizes() -> dict[str, int | None]:
    """``{"l2": bytes, "l3": bytes}`` of CPU 0 (``None`` for a level the OS does not report)."""
    caches = _sysfs_caches()
    sizes: dict[str, int | None] = {}
    for level in (2, 3):
        size = caches.get(level)
        if size is None and platform.system() == "Linux":
            size = _command_size(["getconf", f"LEVEL{level}_CACHE_SIZE"])
        elif size is None and platform.system() == "Darwin":
            size = _command_size(["sysctl", "-n", f"hw.l{level}cachesize"])
        sizes[f"l{level}"] = size
    return sizes


def cpu_info() -> dict[str, Any]:
    """The CPU fields recorded with every benchmark: model (and family / model numbers), vector ISA (and
    its x86-64 level), L2, L3."""
    isa = vector_isa()
    caches = cache_sizes()
    fields = _cpuinfo_fields()
    family, model = fields.get("cpu family"), fields.get("model")
    return {
        "cpu_model": cpu_model(),
        # a virtual machine may show only "AMD EPYC": family / model tell the generations apart (Zen 3 is
        # family 25 model 1, Zen 4 family 25 model 17)
        "cpu_family_model": f"family {family} model {model}" if family and model else None,
        "cpu_isa": isa,
        "cpu_isa_target": ISA_TARGETS[isa] if _is_x86_64() else platform.machine() or "unknown",
        # what ran: ffops' sparse kernels (FFOPS_CPU_ISA may lower it) and ATen's kernels (ATEN_CPU_CAPABILITY)
        "sparse_kernel_isa": sparse_kernel_isa(),
        "aten_cpu_capability": _aten_capability(),
        "cpu_l2_bytes": caches["l2"],
        "cpu_l3_bytes": caches["l3"],
    }


def format_bytes(size: int | None) -> str:
    """``1048576`` -> ``"1 MiB"``; ``None`` -> ``"?"``."""
    if size is None:
        return "?"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            value = size / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} B"


def summary(info: dict[str, Any], threads: int | None = None) -> str:
    """One line of :func:`cpu_info`'s fields (and the thread count), e.g.
    ``AMD EPYC, vector ISA AVX-512 (x86-64-v4), L2 1 MiB, L3 32 MiB, 2 threads``; where the sparse
    kernels or ATen run a lower ISA than the CPU's (``FFOPS_CPU_ISA``, ``ATEN_CPU_CAPABILITY``) it says so:
    ``..., vector ISA AVX-512 (x86-64-v4; sparse kernels AVX2; ATen AVX2), ...``."""
    lowered = []
    sparse = info.get("sparse_kernel_isa")
    if sparse is not None and sparse != info["cpu_isa"]:
        lowered.append(f"sparse kernels {sparse}")
    aten = {"AVX512": "AVX-512", "DEFAULT": "baseline"}.get(
        info.get("aten_cpu_capability"), info.get("aten_cpu_capability")
    )
    if aten is not None and aten not in (info["cpu_isa"], "ZVECTOR", "SVE256") and info["cpu_isa"] != "baseline":
        lowered.append(f"ATen {aten}")
    target = "; ".join([info["cpu_isa_target"], *lowered])
    line = (
        f"{info['cpu_model']}, vector ISA {info['cpu_isa']} ({target}), "
        f"L2 {format_bytes(info['cpu_l2_bytes'])}, L3 {format_bytes(info['cpu_l3_bytes'])}"
    )
    return line + ("" if threads is None else f", {threads} thread" + ("" if threads == 1 else "s"))
