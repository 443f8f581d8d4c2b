"""The forward of every packed_act activation on the whole float range, on every backend.

Inputs: every float16 and bfloat16 value, and for float32 a log-spaced sweep of both signs from the
smallest subnormal to FLT_MAX plus the specials (+-0, +-inf, NaN, +-FLT_MAX, +-tiny).

The oracle is torch's own function evaluated in float64 and rounded once to the dtype:
  * NaN, +-inf and the sign of a zero result are exactly the oracle's (NaN propagates; -inf gives NaN
    where x * 0 does, as in torch; huge negative inputs give -0, never a tiny negative number); a zero
    may also have the sign torch's own function gives in the dtype (logsigmoid: +0 where e^-x
    underflows, though the float64 value, -e^-x, rounds to -0);
  * elsewhere each element is within ``ULPS[dtype]`` units in the last place of the oracle, or
    within twice torch's own error for that element in the dtype, whichever is larger (torch's float32
    functions lose accuracy where results pass through subnormals, and 1 + erf cancels in the GELU tail).

torch's float32 CPU GELU gives NaN at +inf and +inf at 3.4e38 (its 0.5 * x * (1 + erf) overflows); the
float64 oracle gives +inf and 3.4e38, and so does ffops.
"""

import math

import pytest
import torch

import ffops
from ffops.ops._act_tables import FUNCTIONS
from ffops.reference import packed_act as ref

# float32: the C++ GELU's erfc (relative error 1.2e-7) gives up to 4.6 ulps near 0, the other functions
# at most 2.5 (measured on this sweep); 16-bit results are rounded once from float32 (at most 0.51).
ULPS = {torch.float32: 5, torch.float16: 1, torch.bfloat16: 1}
MANTISSA_BITS = {torch.float32: 23, torch.float16: 10, torch.bfloat16: 7}


def _float32_sweep() -> torch.Tensor:
    info = torch.finfo(torch.float32)
    smallest = 1.401298464324817e-45
    magnitudes = torch.logspace(math.log10(smallest), math.log10(info.max), 6000, dtype=torch.float64)
    magnitudes = magnitudes.clamp(max=info.max).float()
    specials = torch.tensor([0.0, smallest, info.tiny, 1.0, info.max, math.inf])
    values = torch.cat([magnitudes, specials])
    return torch.cat([values, -values, torch.tensor([math.nan])])


def _every_16_bit_value(dtype) -> torch.Tensor:
    return torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)


def _ulp(v: torch.Tensor, dtype) -> torch.Tensor:
    """The spacing of ``dtype`` at the float64 values ``v`` (that of the subnormals below the normals)."""
    p = MANTISSA_BITS[dtype]
    min_exp = math.frexp(torch.finfo(dtype).tiny)[1]  # v = m 2^e with m in [0.5, 1)
    _, e = torch.frexp(v.abs())
    return torch.ldexp(torch.ones_like(v), (e.clamp(min=min_exp) - 1 - p).to(v.dtype))


def assert_matches_torch_semantics(out: torch.Tensor, x: torch.Tensor, fn: str):
    f = ref.ACTIVATIONS[fn]
    exact = f(x.double())
    oracle = exact.to(x.dtype).double()
    got = out.double()
    torch_err = (f(x).double() - exact).abs()
    nan = torch.isnan(oracle)
    bad = torch.isnan(got) != nan
    assert not bad.any(), f"{fn}: NaN differs at x = {x[bad][:5].tolist()}: {got[bad][:5].tolist()}"
    inf = torch.isinf(oracle)
    bad = (torch.isinf(got) != inf) | (inf & (got != oracle))
    assert not bad.any(), f"{fn}: inf differs at x = {x[bad][:5].tolist()}: {got[bad][:5].tolist()}"
    zero = (oracle == 0) & (got == 0)
    own = f(x).double()  # torch's function in the dtype: its sign of zero is accepted too
    bad = (
        zero
        & (torch.signbit(oracle) != torch.signbit(got))
        & ~((own == 0) & (torch.signbit(own) == torch.signbit(got)))
    )
    assert not bad.any(), f"{fn}: sign of zero differs at x = {x[bad][:5].tolist()}"
    finite = ~nan & ~inf
    err = (got - exact).abs()
    tol = torch.maximum(ULPS[x.dtype] * _ulp(oracle, x.dtype), 2 * torch_err)
    bad = finite & (err > tol)
    assert not bad.any(), (
        f"{fn} in {x.dtype}: {int(bad.sum())} values off by more than {ULPS[x.dtype]} ulps and 2x torch's error, e.g. "
        f"x = {x[bad][:4].tolist()}: got {got[bad][:4].tolist()}, float64 {exact[bad][:4].tolist()}"
    )


@pytest.mark.parametrize("fn", FUNCTIONS)
def test_float32_whole_range(backend_device, fn):
    _, device = backend_device
    x = _float32_sweep()
    out = ffops.fewbit(x.to(device), fn, 2).cpu()
    assert_matches_torch_semantics(out, x, fn)


@pytest.mark.parametrize("fn", FUNCTIONS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_every_16_bit_value(backend_device, fn, dtype):
    backend, device = backend_device
    if backend == "triton" and device == "cpu" and dtype == torch.bfloat16:
        pytest.skip("the Triton interpreter flushes bfloat16 subnormals to zero")
    x = _every_16_bit_value(dtype)
    out = ffops.fewbit(x.to(device), fn, 2).cpu()
    assert_matches_torch_semantics(out, x, fn)
