"""ffops.memory.saved_bytes / track_memory: storage deduplication, parameters left out."""

import torch
from torch import nn

import ffops
from ffops.memory import saved_bytes, track_memory


def test_counts_each_storage_once():
    x = torch.randn(100, requires_grad=True)
    # mul saves both operands: the same tensor twice is one storage of 400 bytes
    assert saved_bytes(lambda t: t * t, x) == 400
    with track_memory() as stats:
        y = x * x
    assert stats.saved_tensors == 2 and stats.storages == 1 and stats.saved_bytes == 400
    assert stats.by_dtype == {"float32": 400} and stats.peak_bytes is None
    del y


def test_parameters_and_their_casts_are_left_out():
    lin = nn.Linear(64, 32)
    x = torch.randn(8, 64, requires_grad=True)
    assert saved_bytes(lin, x) == 8 * 64 * 4  # the input only, not the weight
    assert saved_bytes(lin, x, include_parameters=True) == 8 * 64 * 4 + 64 * 32 * 4
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert saved_bytes(lin, x) == 8 * 64 * 2  # the bf16 copy of the input; the weight's cast is left out


def test_reference_mlp_block_numbers():
    """The reference table's MLP block, scaled down 64x in tokens (same per-token bytes)."""
    tokens, d, h = 64, 1024, 4096
    x = torch.randn(tokens, d, requires_grad=True)

    def block(norm, act):
        return nn.Sequential(norm, nn.Linear(d, h), act, nn.Linear(h, d))

    plain = block(nn.LayerNorm(d), nn.GELU())
    ours = block(ffops.nn.MSLayerNorm(d), ffops.nn.ReGELU2())
    mib = 2.0**20 / 64  # per the table's 8 * 512 tokens
    assert saved_bytes(plain, x) == round(160 * mib) + 2 * tokens * 4  # + LayerNorm's mean and rstd
    assert saved_bytes(ours, x) == round(84 * mib) + tokens * 4  # + rstd
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert saved_bytes(plain, x) == round(88 * mib) + 2 * tokens * 4
        assert saved_bytes(ours, x) == round(44 * mib) + tokens * 4  # the paper's setup needs 52


def test_saved_tensor_tracker_follows_lifetimes():
    a = torch.randn(64, 32, requires_grad=True)
    b = torch.randn(64, 32, requires_grad=True)
    with ffops.memory.SavedTensorTracker() as tracker:
        (a.exp() * 2).sum().backward()  # exp saves its output (64 * 32 float32), freed by this backward
        (b.exp() * 2).sum().backward()
    one = 64 * 32 * 4
    assert tracker.peak == one and tracker.total == 2 * one and tracker.current == 0
    with ffops.memory.SavedTensorTracker() as tracker:
        loss = a.exp().sum() + b.exp().sum()  # both saved before one backward
        loss.backward()
    assert tracker.peak == 2 * one == tracker.total


def test_autocast_copies_of_frozen_weights_are_left_out():
    lin = nn.Linear(64, 32).requires_grad_(False)  # a frozen base layer (LoRA): its bf16 copy has no grad_fn
    x = torch.randn(8, 64, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert saved_bytes(lin, x) == 0  # only the weight's copy is saved (for x's gradient)
        assert saved_bytes(lin, x, include_parameters=True) == 64 * 32 * 2
        lin.weight.requires_grad_(True)
        assert saved_bytes(lin, x) == 8 * 64 * 2
    x = torch.randn(8, 64).bfloat16().requires_grad_()
    with track_memory() as stats:  # a cast of an activation is counted
        y = x.float().exp()
    assert stats.saved_bytes == 8 * 64 * 4
    del y
