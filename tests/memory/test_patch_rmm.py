"""``ffops.memory.patch(model, linears="rmm:<ratio>")``: linear layers keep a random sketch of their
input, composed with the activation and norm patches without undoing the MS norms' sharing."""

import pytest
import torch
from torch import nn

import ffops
from ffops.memory import patch


class _Block(nn.Module):
    """The MLP block of bench_memory: LN -> Linear -> GELU -> Linear."""

    def __init__(self, d=32, hidden=128):
        super().__init__()
        self.norm, self.fc1, self.act, self.fc2 = nn.LayerNorm(d), nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(self.norm(x))))


def test_rmm_on_the_mlp_block_keeps_the_norms_sharing():
    torch.manual_seed(0)
    model, x = _Block(), torch.randn(4, 64, 32)
    out = model(x)
    report = patch(model, "regelu2", linears="rmm:0.2", example_inputs=x)
    assert isinstance(model.fc2, ffops.nn.RandomizedLinear) and model.fc2.ratio == 0.2
    assert type(model.fc1) is nn.Linear  # its input is the MS norm's saved output
    assert any(name == "fc1" and "MS norm norm's saved output (shared)" in why for name, _, why in report.skipped)
    torch.testing.assert_close(model(x), out, rtol=1e-5, atol=1e-5)
    # before: LN input + fc1 input (LN out) + GELU input + fc2 input; after: MS-LN out (shared with fc1),
    # 2-bit codes, and fc2's sketch of 52 of 256 rows
    rows, hidden = 256, 128
    expected = rows * 32 * 4 + rows * hidden * 2 // 8 + 52 * hidden * 4 + 8
    assert expected <= report.saved_bytes_after <= expected + rows * 4  # (+ the norm's rstd where counted)
    without_rmm = patch(_Block(), "regelu2", example_inputs=x).saved_bytes_after
    assert report.saved_bytes_after < 0.5 * without_rmm


def test_linear_filter_by_name_or_callable():
    model = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
    x = torch.randn(16, 8)
    patch(model, None, norms=False, linears="rmm:0.5", linear_filter=r"^[24]$", example_inputs=x)
    kinds = [type(m).__name__ for m in model if isinstance(m, nn.Linear)]
    assert kinds == ["Linear", "RandomizedLinear", "RandomizedLinear"]
    model = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 2))
    patch(model, None, norms=False, linears="rmm:0.5", linear_filter=lambda name, m: m.out_features >= 64)
    assert isinstance(model[0], ffops.nn.RandomizedLinear) and type(model[2]) is nn.Linear


def test_patched_linears_train_and_share_the_parameters():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    weights = [model[0].weight, model[2].weight]
    patch(model, None, norms=False, linears="rmm:0.5")
    assert [model[0].weight, model[2].weight] == weights
    model(torch.randn(32, 8)).sum().backward()
    assert all(w.grad is not None for w in weights)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"linears": "rmm:0"}, ValueError, r"linears must be None or 'rmm:<ratio in \(0, 1\]>'"),
        ({"linears": "lowrank:0.2"}, ValueError, r"linears must be None or 'rmm:"),
        ({"linears": "rmm:0.2", "linear_filter": 3}, TypeError, r"linear_filter must be a regular expression"),
        ({"linear_filter": "attn"}, ValueError, r"linear_filter selects the linears of linears='rmm:<ratio>'"),
    ],
)
def test_bad_linear_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        patch(nn.Sequential(nn.Linear(2, 2)), None, norms=False, **kwargs)
