"""ffops.memory.patch on every architecture family of benchmarks/patch_model_zoo.py (tiny configs, random
weights, gradient checkpointing on where supported): it never raises, folds what it can prove, and says why
it skips the rest; plus the rules behind those folds on small torch models (channels-first norms, fx
metadata reads, dropout between a norm and its linears, linear_filter)."""

import copy
import os
import types
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.patch_model_zoo import ARCHITECTURES, build
from ffops.memory import patch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# norms folded per model (with gradient checkpointing; tied heads, post-LN residuals and outputs stay)
FOLDED = {
    "llama": 5,
    "mistral": 5,
    "qwen2": 5,
    "qwen3": 5,  # q_norm / k_norm feed the rotary embedding
    "gemma": 4,  # model.norm: tied lm_head
    "gemma2": 4,  # post-norms feed residuals
    "phi3": 5,
    "gpt2": 4,  # Conv1D consumers; ln_f: tied lm_head
    "gpt_neox": 5,
    "opt": 4,
    "bert": 1,
    "roberta": 1,
    "t5": 10,  # T5LayerNorm recognised as an RMS norm; encoder / decoder inputs built from the config
    "vit": 5,
    "clip_vision": 4,
    "whisper": 10,  # log-mel and decoder inputs built from the config
    "timm_vit": 4,  # torch.fx: x.shape is no use
    "timm_convnext": 7,  # the blocks' norms, the downsampling LayerNorm2d into their convolutions; not stem, head
}


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_patch_never_raises_and_folds(name):
    pytest.importorskip(ARCHITECTURES[name][0])
    torch.manual_seed(0)
    model = build(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the libraries' own (checkpointing, config) warnings
        report = patch(model)
    assert len(report.folded) == FOLDED[name], str(report)
    assert all(why for _, _, why in report.skipped)
    if name == "timm_convnext":
        assert {n for n, kind, _ in report.skipped if kind == "LayerNorm2d"} == {"stem.1", "head.norm"}
    if name in ("t5", "whisper"):
        assert "decoder_input_ids" in report.example_inputs


def test_gpt2_conv1d_folds_exactly():
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = build("gpt2", checkpointing=False).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5), m.bias.normal_()
    original = copy.deepcopy(model)
    report = patch(model)
    assert report.folded["transformer.h.0.ln_1"] == ["transformer.h.0.attn.c_attn"]
    ids = torch.randint(0, 96, (2, 12))
    torch.testing.assert_close(model(input_ids=ids).logits, original(input_ids=ids).logits, rtol=1e-5, atol=1e-5)


class ChannelsFirstLayerNorm(nn.LayerNorm):
    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


@pytest.mark.parametrize("inputs", [True, False], ids=["traced", "fx"])
def test_channels_first_layernorm_folds_into_unpadded_convolutions(inputs):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 1), ChannelsFirstLayerNorm(8), nn.Conv2d(8, 4, 2, stride=2), ChannelsFirstLayerNorm(4)
    )
    model.append(nn.Conv2d(4, 4, 3, padding=1))  # padding would shift the zeros too: no fold
    with torch.no_grad():
        for norm in (model[1], model[3]):
            norm.weight.uniform_(0.5, 1.5), norm.bias.normal_()
    original = copy.deepcopy(model)
    x = torch.randn(2, 3, 6, 6)
    report = patch(model, example_inputs=x if inputs else None)
    assert report.folded == {"1": ["2"]} and "3" not in report.folded
    assert type(model[1]).__name__ == "ChannelsFirstNorm"
    torch.testing.assert_close(model(x), original(x), rtol=1e-5, atol=1e-5)


def test_channels_first_norm_before_a_linear_is_not_folded():
    model = nn.Sequential(ChannelsFirstLayerNorm(8), nn.Flatten(), nn.Linear(8, 4))
    report = patch(model, example_inputs=torch.randn(2, 8, 1, 1))
    assert not report.folded and "0" in dict((n, w) for n, _, w in report.skipped)


class ShapeReader(nn.Module):
    def __init__(self, d=16):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.lin = nn.Linear(d, d)

    def forward(self, x):
        h = self.norm(x)
        return self.lin(h).reshape(h.shape[0], -1, h.size(-1))


def test_fx_ignores_metadata_reads():
    report = patch(ShapeReader())
    assert "fx" in report.consumer_analysis and report.folded == {"norm": ["lin"]}


class DropoutBetween(nn.Module):
    def __init__(self, norm, d=16):
        super().__init__()
        self.norm, self.drop, self.lin = norm, nn.Dropout(0.1), nn.Linear(d, d)

    def forward(self, x):
        return self.lin(self.drop(self.norm(x)))


@pytest.mark.parametrize("inputs", [True, False], ids=["traced", "fx"])
def test_rms_norm_folds_through_dropout_layernorm_does_not(inputs):
    torch.manual_seed(0)
    rms = DropoutBetween(nn.RMSNorm(16, eps=1e-6))
    with torch.no_grad():
        rms.norm.weight.uniform_(0.5, 1.5)
    original = copy.deepcopy(rms)
    x = torch.randn(4, 16)
    report = patch(rms, example_inputs=x if inputs else None)
    assert report.folded == {"norm": ["lin"]}
    torch.manual_seed(1)
    out = rms(x)
    torch.manual_seed(1)
    torch.testing.assert_close(out, original(x), rtol=1e-5, atol=1e-5)  # same dropout mask: same output
    report = patch(DropoutBetween(nn.LayerNorm(16)), example_inputs=x if inputs else None)
    assert "through dropout" in dict((n, w) for n, _, w in report.skipped)["norm"]


def test_linear_filter_matching_nothing_warns():
    model = nn.Sequential(nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 8))
    with pytest.warns(UserWarning, match="linear_filter='attn' matches no nn.Linear"):
        report = patch(model, linears="rmm:0.5", linear_filter="attn", example_inputs=torch.randn(4, 8))
    assert "matches no nn.Linear" in str(report)


def test_example_inputs_the_model_rejects_name_the_argument():
    with pytest.raises(ValueError, match="the model failed on example_inputs"):
        patch(nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 8)), example_inputs=torch.randn(4, 5))


class T5LayerNorm(nn.Module):
    """Named LayerNorm, computes an RMS norm (T5's): recognised by its math."""

    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.weight, self.variance_epsilon = nn.Parameter(torch.rand(d) + 0.5), eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))


class GELUActivation(nn.Module):
    """Named like Hugging Face's GELU, fails on the 2-D probe: skipped, not raised."""

    def forward(self, x):
        return F.gelu(x.view(x.shape[0], x.shape[1], -1)).flatten(1) if x.dim() == 3 else x.unflatten(-1, (3, -1))


def test_norm_recognised_by_math_and_failing_activation_probe():
    torch.manual_seed(0)
    model = nn.Sequential(T5LayerNorm(24), nn.Linear(24, 8), GELUActivation())
    original = copy.deepcopy(model)
    x = torch.randn(3, 5, 24)
    report = patch(model, example_inputs=x)
    assert report.folded == {"0": ["1"]} and type(model[0]).__name__ == "MSRMSNorm"
    assert "does not compute gelu on a probe" in dict((n, w) for n, _, w in report.skipped)["2"]
    torch.testing.assert_close(model(x), original(x), rtol=1e-5, atol=1e-5)


class AudioLike(nn.Module):
    """A Hugging Face-style model (a config, main_input_name) whose inputs patch cannot build."""

    main_input_name = "input_values"

    def __init__(self):
        super().__init__()
        self.config = types.SimpleNamespace(vocab_size=32)
        self.norm, self.lin = nn.LayerNorm(8), nn.Linear(8, 8)

    def forward(self, input_values):
        return self.lin(self.norm(input_values))


def test_inputs_it_cannot_build_ask_for_example_inputs():
    with pytest.warns(
        UserWarning, match=r"cannot build example inputs for AudioLike \('input_values'\).*example_inputs="
    ):
        report = patch(AudioLike())
    assert "pass example_inputs=" in str(report) and "fx" in report.consumer_analysis
    assert report.folded == {"norm": ["lin"]}


# T5 is left out: with transformers 5.25 its own gradients differ with and without checkpointing, unpatched
@pytest.mark.parametrize("name", ["bert", "roberta", "llama", "gpt2", "vit"])
def test_patched_model_trains_with_gradient_checkpointing(name):
    """A training step after ``patch`` with gradient checkpointing on (HF BERT / RoBERTa raised
    CheckpointError where an ffops op ended a checkpointed block): the gradients equal those of the same
    patched model with checkpointing off (dropout off, so both steps compute the same function)."""
    pytest.importorskip(ARCHITECTURES[name][0])
    from ffops.memory.patch import _hf_example_inputs

    torch.manual_seed(0)
    model = build(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        patch(model)
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    inputs, _ = _hf_example_inputs(model)

    def grads():
        model.zero_grad()
        out = model(**inputs)
        hidden = out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state
        (hidden.float() ** 2).mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        checkpointed = grads()
        model.gradient_checkpointing_disable()
        plain = grads()
    assert checkpointed.keys() == plain.keys() and checkpointed
    for n in plain:
        torch.testing.assert_close(checkpointed[n], plain[n], rtol=1e-5, atol=1e-6, msg=n)
