"""LoRA and ffops.memory.patch: norms folded through LoRA's dropout (RMS norms; not a LayerNorm's bias),
lora_A(dropout(x)) as one DropoutLinear that saves no copy of the dropped input, and both orders
(get_peft_model then patch, patch then get_peft_model) with what each saves."""

import copy
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from benchmarks.patch_model_zoo import build
from ffops.memory import patch, saved_bytes
from ffops.memory.lora import DropoutLinear, _mask

os.environ.setdefault("HF_HUB_OFFLINE", "1")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _seeded_reference(lin, x, p, seed):
    torch.manual_seed(seed)
    mask_seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
    return F.linear(x * _mask(x, p, mask_seed) / (1 - p), lin.weight, lin.bias)


def test_dropout_linear_matches_dropout_then_linear_with_its_mask():
    torch.manual_seed(0)
    lin = nn.Linear(16, 8)
    fused = DropoutLinear.from_linear(lin, 0.3)
    assert fused.weight is lin.weight and "p=0.3" in repr(fused)
    x = torch.randn(5, 7, 16, requires_grad=True)
    torch.manual_seed(3)
    out = fused(x)
    grads = torch.autograd.grad(out.square().sum(), (x, lin.weight, lin.bias))
    ref = _seeded_reference(lin, x, 0.3, 3)
    ref_grads = torch.autograd.grad(ref.square().sum(), (x, lin.weight, lin.bias))
    torch.testing.assert_close(out, ref)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r)
    assert saved_bytes(fused, x) == x.numel() * 4  # only x (an MS norm's saved output in a model): no mask, no copy
    fused.eval()
    torch.testing.assert_close(fused(x), lin(x))


def test_dropout_linear_under_autocast_and_checkpointing():
    torch.manual_seed(0)
    fused = DropoutLinear.from_linear(nn.Linear(16, 8), 0.5)
    x = torch.randn(6, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fused(x)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert x.grad.dtype == torch.float32 and fused.weight.grad.dtype == torch.float32
    grads = []
    for wrap in (False, True):  # recomputation draws the same seed: same gradient
        torch.manual_seed(1)
        out = checkpoint(fused, x, use_reentrant=False) if wrap else fused(x)
        grads.append(torch.autograd.grad(out.square().sum(), x)[0])
    torch.testing.assert_close(grads[0], grads[1])


def test_dropout_linear_bad_arguments():
    with pytest.raises(ValueError, match="p must be in"):
        DropoutLinear.from_linear(nn.Linear(2, 2), 1.0)
    with pytest.raises(TypeError, match="linear must be an nn.Linear"):
        DropoutLinear.from_linear(nn.Conv1d(2, 2, 1), 0.1)


def _lora_llama(dropout, patch_first=False):
    peft = pytest.importorskip("peft")
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = build("llama", checkpointing=False)
    if patch_first:
        patch(model)
    cfg = peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=dropout, target_modules=TARGETS)
    return peft.get_peft_model(model, cfg)


def test_lora_with_dropout_folds_every_norm_and_saves_as_much_as_without():
    ids = torch.randint(0, 96, (2, 32))

    def saved(m):
        return saved_bytes(lambda: m(input_ids=ids).logits)

    plain, plain_dropout = _lora_llama(0.0), _lora_llama(0.05)
    before, before_dropout = saved(plain), saved(plain_dropout)
    model = copy.deepcopy(plain_dropout)
    report = patch(model, example_inputs={"input_ids": ids})
    assert len(report.folded) == 5 and not report.skipped
    assert report.folded["base_model.model.model.layers.0.input_layernorm"][0].endswith("k_proj.base_layer")
    assert sum("lora_A" in lin for lin in report.folded["base_model.model.model.layers.0.input_layernorm"]) == 3
    assert isinstance(model.base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"], DropoutLinear)
    patch(plain, example_inputs={"input_ids": ids})
    assert saved(model) <= saved(plain) <= 0.8 * before  # the target: no-dropout LoRA's saving (0.79x here)
    assert saved(model) / before_dropout < 0.5
    # patch first: the norms fold before peft adds its dropout; patching again fuses the dropout
    first = _lora_llama(0.05, patch_first=True)
    assert saved(first) > 0.9 * before_dropout
    again = patch(first, example_inputs={"input_ids": ids})
    assert not again.folded and sum("lora_A" in name for name, _, _ in again.replaced) == 14
    assert saved(first) == saved(model)
    model.train()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    lora_a = model.base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"].weight
    assert torch.isfinite(loss) and not lora_a.grad.any()  # lora_B starts at zero: A's gradient is zero
    lora_b = model.base_model.model.model.layers[0].self_attn.q_proj.lora_B["default"].weight
    assert lora_b.grad is not None and lora_b.grad.abs().sum() > 0


def test_layernorm_with_bias_is_not_folded_through_lora_dropout():
    peft = pytest.importorskip("peft")
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = build("opt", checkpointing=False)
    cfg = peft.LoraConfig(r=4, lora_dropout=0.1, target_modules=["q_proj", "k_proj", "v_proj", "fc1"])
    model = peft.get_peft_model(model, cfg)
    report = patch(model)
    skipped = {n: why for n, _, why in report.skipped}
    assert "dropout(y + b) != dropout(y) + b" in skipped["base_model.model.model.decoder.layers.0.self_attn_layer_norm"]
