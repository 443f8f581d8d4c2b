"""``python -m ffops info``: versions, devices and which backends are built and usable."""

import platform

import torch

import ffops
from ffops import _backend, _cpuinfo


def _triton_version() -> str:
    if not _backend.TRITON_OK:
        return f"not available ({_backend.TRITON_ERROR})"
    import triton

    return triton.__version__


def report() -> str:
    cpu = _cpuinfo.cpu_info()
    lines = [
        f"ffops   {ffops.__version__}",
        f"torch   {torch.__version__} (CUDA {torch.version.cuda or 'none'})",
        f"triton  {_triton_version()}",
        f"python  {platform.python_version()}",
        "",
        "devices:",
        f"  cpu    {_cpuinfo.summary(cpu, torch.get_num_threads())}",
        f"         vector ISA: ffops' C++ kernels {cpu['cpu_isa']} ({cpu['cpu_isa_target']} clones"
        + ("" if _backend.CPP_CPU else "; not built here")
        + f"), sparse kernels {cpu['sparse_kernel_isa'] or 'not built'} (FFOPS_CPU_ISA lowers them), "
        + f"torch's ATen {cpu['aten_cpu_capability']}",
    ]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            lines.append(f"  cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB, sm_{p.major}{p.minor}")
    else:
        lines.append("  cuda   none visible")

    usable = _backend.available()
    c_state = "loaded" if _backend.CPP_LOADED else f"NOT built ({_backend.CPP_ERROR})"
    rows = [
        ("reference", True, True, "pure torch, any device"),
        ("cpu", _backend.CPP_CPU, usable["cpu"], f"C++ kernels in ffops._C ({c_state})"),
        (
            "cuda",
            _backend.CPP_CUDA,
            usable["cuda"],
            "CUDA C++ kernels in ffops._C" + ("" if _backend.CPP_CUDA else " (not compiled into this build)"),
        ),
        ("triton", _backend.TRITON_OK, usable["triton"], "Triton kernels on CUDA tensors"),
        (
            "triton-interpreter",
            _backend.TRITON_OK,
            usable["triton-interpreter"],
            "Triton kernels on CPU tensors" + ("" if _backend.TRITON_INTERPRET else " (set TRITON_INTERPRET=1)"),
        ),
    ]
    lines += [
        "",
        f"backends (current setting: {_backend.get_backend()}):",
        "  name                built  usable  what",
    ]
    for name, built, ok, what in rows:
        lines.append(f"  {name:<19} {'yes' if built else 'no':<6} {'yes' if ok else 'no':<7} {what}")
    dispatch = {dev: _backend.resolve(torch.device(dev)) for dev in ("cpu", "cuda")}
    lines += ["", f"auto dispatch: cpu tensors -> {dispatch['cpu']}, cuda tensors -> {dispatch['cuda']}"]
    return "\n".join(lines)
