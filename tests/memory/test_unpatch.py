"""ffops.memory.unpatch: after patch and a few optimizer steps, the model has its original module types and
its trained weights load into the stock model (save_pretrained, a LoRA adapter, a state dict) with the same
outputs: Llama full fine-tune, Llama + LoRA (every order), ViT, GPT-2 (Conv1D), a Gemma-style norm; and the
folds it cannot undo."""

import copy
import os

import pytest
import torch
from torch import nn

from benchmarks.patch_model_zoo import build
from ffops.memory import patch, unpatch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _randomize_norms(model):
    with torch.no_grad():
        for m in model.modules():
            if "Norm" in type(m).__name__ and isinstance(getattr(m, "weight", None), torch.Tensor):
                m.weight.uniform_(0.5, 1.5)
                if isinstance(getattr(m, "bias", None), torch.Tensor):
                    m.bias.normal_()


def _train(model, inputs, labels, steps=3):
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        model(**inputs, labels=labels).loss.backward()
        opt.step()
    model.eval()


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def _llama():
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = build("llama", checkpointing=False)
    _randomize_norms(model)
    return model


def test_llama_full_fine_tune_round_trip(tmp_path):
    transformers = pytest.importorskip("transformers")
    model = _llama()
    stock_types = {n: type(m) for n, m in model.named_modules()}
    patch(model)
    ids = {"input_ids": torch.randint(0, 96, (2, 16))}
    _train(model, ids, ids["input_ids"])
    patched = _logits(model, ids)
    assert unpatch(model) is model
    assert {n: type(m) for n, m in model.named_modules()} == stock_types
    torch.testing.assert_close(_logits(model, ids), patched, rtol=1e-5, atol=1e-5)
    model.save_pretrained(tmp_path)
    loaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(_logits(loaded, ids), patched, rtol=1e-5, atol=1e-5)
    stock = build("llama", checkpointing=False).eval()
    stock.load_state_dict(model.state_dict())
    torch.testing.assert_close(_logits(stock, ids), patched, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="holds no record of ffops.memory.patch"):
        unpatch(model)


@pytest.mark.parametrize("order", ["peft then patch", "patch then peft", "patch, peft, patch"])
def test_llama_lora_adapter_round_trip(tmp_path, order):
    peft = pytest.importorskip("peft")
    base = _llama()
    stock = copy.deepcopy(base).eval()
    cfg = peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=TARGETS)
    if order == "peft then patch":
        model = peft.get_peft_model(base, cfg)
        patch(model)
    else:
        patch(base)
        model = peft.get_peft_model(base, cfg)
        if order == "patch, peft, patch":
            patch(model)  # fuses the adapters' dropout: records on the base model and on the peft model
    ids = {"input_ids": torch.randint(0, 96, (2, 16))}
    _train(model, ids, ids["input_ids"])
    patched = _logits(model, ids)
    unpatch(model)  # patch's record is on the peft model or on the base model inside it
    torch.testing.assert_close(_logits(model, ids), patched, rtol=1e-5, atol=1e-5)
    model.save_pretrained(tmp_path)
    loaded = peft.PeftModel.from_pretrained(stock, tmp_path).eval()
    torch.testing.assert_close(_logits(loaded, ids), patched, rtol=1e-5, atol=1e-5)


def test_vit_round_trip():
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = build("vit", checkpointing=False)
    _randomize_norms(model)
    report = patch(model)
    assert len(report.folded) == 5
    x = {"pixel_values": torch.randn(4, 3, 28, 28)}
    _train(model, x, torch.tensor([0, 1, 2, 3]))
    patched = _logits(model, x)
    unpatch(model)
    torch.testing.assert_close(_logits(model, x), patched, rtol=1e-5, atol=1e-5)
    stock = build("vit", checkpointing=False).eval()
    stock.load_state_dict(model.state_dict())
    torch.testing.assert_close(_logits(stock, x), patched, rtol=1e-5, atol=1e-5)


def test_zero_norm_weight_cannot_be_unfolded():
    model = nn.Sequential(nn.RMSNorm(8), nn.Linear(8, 4))
    with torch.no_grad():
        model[0].weight[3] = 0
    patch(model)
    with pytest.raises(ValueError, match=r"cannot unfold 0: its weight is zero at feature\(s\) \[3\]"):
        unpatch(model)
    assert type(model[0]).__name__ == "MSRMSNorm"  # nothing changed


def test_trained_bias_added_by_patch_cannot_be_unfolded():
    torch.manual_seed(0)
    model = nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 4, bias=False))
    _randomize_norms(model)
    patch(model)
    with torch.no_grad():
        model[1].bias.add_(0.1)
    with pytest.raises(ValueError, match="has none in the stock model"):
        unpatch(model)
    with torch.no_grad():
        model[1].bias.sub_(0.1)
    unpatch(model)
    assert model[1].bias is None and isinstance(model[0], nn.LayerNorm)


def test_unpatch_bad_argument():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        unpatch("model")


def test_gemma_style_norm_round_trip():
    from tests.memory.test_patch import GemmaLikeRMSNorm

    torch.manual_seed(0)
    model = nn.Sequential(GemmaLikeRMSNorm(24), nn.Linear(24, 8))
    original = copy.deepcopy(model)
    patch(model)
    with torch.no_grad():
        model[1].weight.add_(0.01)  # a training step's change
    x = torch.randn(3, 24)
    patched = model(x)
    unpatch(model)
    assert isinstance(model[0], GemmaLikeRMSNorm) and torch.equal(model[0].weight, original[0].weight)
    torch.testing.assert_close(model(x), patched, rtol=1e-5, atol=1e-5)


def test_gpt2_conv1d_round_trip():
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = build("gpt2", checkpointing=False)
    _randomize_norms(model)
    report = patch(model)
    assert len(report.folded) == 4
    ids = {"input_ids": torch.randint(0, 96, (2, 16))}
    _train(model, ids, ids["input_ids"])
    patched = _logits(model, ids)
    unpatch(model)
    torch.testing.assert_close(_logits(model, ids), patched, rtol=1e-5, atol=1e-5)
    stock = build("gpt2", checkpointing=False).eval()
    stock.load_state_dict(model.state_dict())
    torch.testing.assert_close(_logits(stock, ids), patched, rtol=1e-5, atol=1e-5)


def test_channels_first_norm_round_trip():
    from tests.memory.test_patch_models import ChannelsFirstLayerNorm

    torch.manual_seed(0)
    model = nn.Sequential(ChannelsFirstLayerNorm(8), nn.Conv2d(8, 4, 2, stride=2))
    _randomize_norms(model)
    original = copy.deepcopy(model)
    patch(model)
    with torch.no_grad():
        model[1].weight.mul_(1.1), model[1].bias.add_(0.1)  # a training step's change
    x = torch.randn(2, 8, 4, 4)
    patched = model(x)
    unpatch(model)
    assert isinstance(model[0], ChannelsFirstLayerNorm)
    assert torch.equal(model[0].weight, original[0].weight)
    torch.testing.assert_close(model(x), patched, rtol=1e-5, atol=1e-5)
