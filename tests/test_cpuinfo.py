"""ffops._cpuinfo: the CPU fields of ``python -m ffops info`` and of every benchmark's metadata."""

import os

import torch

from benchmarks import harness
from ffops import _cpuinfo
from ffops._info import report

# /proc/cpuinfo flags of an AVX-512 AMD EPYC (Zen 4) and of an AVX2-only one (Zen 3), trimmed
ZEN4_FLAGS = (
    "fpu sse sse2 pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt xsave avx f16c lahf_lm abm "
    "bmi1 avx2 bmi2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_bf16"
)
ZEN4 = ZEN4_FLAGS.split()
ZEN3 = [f for f in ZEN4 if not f.startswith("avx512")]


def test_fields_present_and_sane():
    info = _cpuinfo.cpu_info()
    keys = {"cpu_model", "cpu_family_model", "cpu_isa", "cpu_isa_target", "cpu_l2_bytes", "cpu_l3_bytes"}
    assert set(info) == keys | {"sparse_kernel_isa", "aten_cpu_capability"}
    assert isinstance(info["cpu_model"], str) and info["cpu_model"]
    assert info["cpu_isa"] in _cpuinfo.ISAS
    # the extension's own choice agrees with the flags (lower only when FFOPS_CPU_ISA says so)
    if info["sparse_kernel_isa"] is not None and not os.environ.get("FFOPS_CPU_ISA"):
        assert info["sparse_kernel_isa"] == info["cpu_isa"]
    if info["cpu_isa"] != "baseline":
        assert info["cpu_isa_target"] == _cpuinfo.ISA_TARGETS[info["cpu_isa"]]
    for key in ("cpu_l2_bytes", "cpu_l3_bytes"):
        size = info[key]
        assert size is None or (type(size) is int and size > 0), (key, size)
    if info["cpu_l2_bytes"] and info["cpu_l3_bytes"]:
        assert info["cpu_l2_bytes"] <= info["cpu_l3_bytes"]


def test_isa_from_flags_follows_the_x86_64_levels():
    assert _cpuinfo.isa_from_flags(ZEN4) == "AVX-512"
    assert _cpuinfo.isa_from_flags(ZEN3) == "AVX2"
    # x86-64-v4 needs all five AVX-512 subsets, v3 needs BMI2 (and LZCNT, MOVBE, F16C...) besides AVX2 + FMA
    assert _cpuinfo.isa_from_flags([f for f in ZEN4 if f != "avx512vl"]) == "AVX2"
    assert _cpuinfo.isa_from_flags([f for f in ZEN3 if f != "bmi2"]) == "baseline"
    assert _cpuinfo.isa_from_flags([]) == "baseline"


def test_sizes_and_summary():
    assert _cpuinfo._parse_size("1024K\n") == 2**20
    assert _cpuinfo._parse_size("32M") == 32 * 2**20
    assert _cpuinfo._parse_size("1048576") == 2**20
    assert _cpuinfo._parse_size("0") is None and _cpuinfo._parse_size("") is None
    info = {
        "cpu_model": "AMD EPYC",
        "cpu_isa": "AVX2",
        "cpu_isa_target": "x86-64-v3",
        "cpu_l2_bytes": 512 * 2**10,
        "cpu_l3_bytes": None,
    }
    assert _cpuinfo.summary(info, 2) == "AMD EPYC, vector ISA AVX2 (x86-64-v3), L2 512 KiB, L3 ?, 2 threads"
    # an AVX-512 machine running the AVX2 kernels (FFOPS_CPU_ISA, ATEN_CPU_CAPABILITY) says so
    lowered = {**info, "cpu_isa": "AVX-512", "cpu_isa_target": "x86-64-v4"}
    lowered.update(sparse_kernel_isa="AVX2", aten_cpu_capability="AVX2")
    assert "vector ISA AVX-512 (x86-64-v4; sparse kernels AVX2; ATen AVX2)" in _cpuinfo.summary(lowered)
    lowered.update(sparse_kernel_isa="AVX-512", aten_cpu_capability="AVX512")
    assert "(x86-64-v4)" in _cpuinfo.summary(lowered)


def test_info_and_benchmark_metadata_agree():
    info = _cpuinfo.cpu_info()
    meta = harness.metadata(torch.device("cpu"))
    assert {k: meta[k] for k in info} == info
    line = harness.machine_line(meta)
    assert line == f"cpu {_cpuinfo.summary(info, torch.get_num_threads())}"
    assert f"vector ISA {info['cpu_isa']}" in line and f"{torch.get_num_threads()} thread" in line
    assert line[len("cpu ") :] in report()
    # results keep their names: the machine tag is still the model's slug
    assert harness.results_path("x", torch.device("cpu")).name == f"x_cpu-{harness.slug(info['cpu_model'])}.json"


def test_degrades_without_proc_and_sys(monkeypatch):
    """Another OS: no /proc/cpuinfo, no sysfs caches, no getconf / sysctl: torch's ISA, sizes None."""
    monkeypatch.setattr(_cpuinfo, "_cpuinfo_fields", dict)
    monkeypatch.setattr(_cpuinfo, "_sysfs_caches", dict)
    monkeypatch.setattr(_cpuinfo.platform, "system", lambda: "Windows")
    monkeypatch.setattr(_cpuinfo.platform, "machine", lambda: "AMD64")
    _cpuinfo.cache_sizes.cache_clear()
    try:
        info = _cpuinfo.cpu_info()
    finally:
        _cpuinfo.cache_sizes.cache_clear()
    assert info["cpu_l2_bytes"] is None and info["cpu_l3_bytes"] is None
    assert info["cpu_family_model"] is None
    assert info["cpu_model"]
    aten = {"AVX512": "AVX-512", "AVX2": "AVX2"}.get(torch.backends.cpu.get_cpu_capability(), "baseline")
    assert info["cpu_isa"] == aten
    assert "L2 ?, L3 ?" in _cpuinfo.summary(info)
