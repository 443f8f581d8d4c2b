"""ffops.memory.patch on small models built from config (no weights downloaded): a Llama-style
decoder, a BERT-style (post-LN) encoder, a ViT-style classifier, plus torch models that exercise
each rule (fx without inputs, residual and attention consumers, tied weights, shared linears,
Gemma-style norms, the verification safety net)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ffops
from ffops.memory import patch, saved_bytes


def _tf():
    return pytest.importorskip("transformers")  # the Hugging Face models; the torch ones run without it


def _llama(tie=False):
    transformers = _tf()
    cfg = transformers.LlamaConfig(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=tie,
    )
    return transformers.LlamaForCausalLM(cfg)


def _bert():
    transformers = _tf()
    cfg = transformers.BertConfig(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
    )
    return transformers.BertModel(cfg)


def _vit():
    transformers = _tf()
    cfg = transformers.ViTConfig(
        image_size=28,
        patch_size=7,
        num_channels=1,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_labels=10,
    )
    return transformers.ViTForImageClassification(cfg)


def _compare_outputs_and_grads(before, after, inputs, key, rtol=1e-4):
    before.eval(), after.eval()
    out_b, out_a = before(**inputs)[key], after(**inputs)[key]
    torch.testing.assert_close(out_a, out_b, rtol=rtol, atol=rtol)
    out_a.square().mean().backward()  # gradients flow through the replaced modules into the first layer
    first = [p for n, p in after.named_parameters() if ".0." in n and p.dim() == 2]
    assert first and all(p.grad is not None and p.grad.abs().sum() > 0 for p in first)


def test_llama_style_decoder():
    torch.manual_seed(0)
    model = _llama()
    original = copy.deepcopy(model)
    report = patch(model)
    names = {n for n, _, _ in report.replaced}
    assert {"model.layers.0.mlp.act_fn", "model.layers.1.mlp.act_fn", "model.norm"} <= names
    assert report.folded["model.layers.0.input_layernorm"] == [f"model.layers.0.self_attn.{p}_proj" for p in "kqv"]
    assert report.folded["model.layers.1.post_attention_layernorm"] == [
        "model.layers.1.mlp.gate_proj",
        "model.layers.1.mlp.up_proj",
    ]
    assert report.folded["model.norm"] == ["lm_head"]
    assert not report.skipped
    assert isinstance(model.model.layers[0].mlp.act_fn, ffops.nn.ReSiLU2)
    assert isinstance(model.model.layers[0].input_layernorm, ffops.nn.MSRMSNorm)
    assert report.saved_bytes_after < report.saved_bytes_before
    ids = torch.randint(0, 96, (3, 11))
    _compare_outputs_and_grads(original, model, {"input_ids": ids}, "logits")
    assert "folded   model.norm into lm_head" in str(report)


def test_llama_under_autocast_shares_norm_outputs_with_projections():
    torch.manual_seed(0)
    model = _llama()
    original = copy.deepcopy(model)
    patch(model, activations=None)
    ids = torch.randint(0, 96, (2, 32))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        before = saved_bytes(lambda: original(input_ids=ids).logits)
        after = saved_bytes(lambda: model(input_ids=ids).logits)
    tokens, hidden, norms = 2 * 32, 64, 5
    # each LlamaRMSNorm saved its fp32 input, its fp32 normalized value and the projections a bf16 copy;
    # an MS norm saves one bf16 tensor that the projections share
    assert before - after >= norms * tokens * hidden * (4 + 4)


def test_tied_lm_head_is_not_folded():
    model = _llama(tie=True)
    report = patch(model, activations=None)
    skipped = {n: why for n, _, why in report.skipped}
    assert "tied" in skipped["model.norm"] and "model.norm" not in report.folded
    assert "model.layers.0.input_layernorm" in report.folded


def test_bert_style_post_ln_norms_are_skipped_with_reasons():
    torch.manual_seed(0)
    model = _bert()
    original = copy.deepcopy(model)
    report = patch(model, activations="fewbit:3")
    skipped = {n: why for n, _, why in report.skipped}
    assert "dropout" in skipped["embeddings.LayerNorm"]
    assert "add" in skipped["encoder.layer.0.attention.output.LayerNorm"]
    assert "model's output" in skipped["encoder.layer.1.output.LayerNorm"]
    assert not report.folded
    assert isinstance(model.encoder.layer[0].intermediate.intermediate_act_fn, ffops.nn.FewBitAct)
    ids = torch.randint(0, 96, (2, 9))
    _compare_outputs_and_grads(original, model, {"input_ids": ids}, "last_hidden_state")


def test_vit_style_classifier():
    torch.manual_seed(0)
    model = _vit()
    original = copy.deepcopy(model)
    report = patch(model)
    assert len(report.folded) == 5 and not report.skipped
    assert any(name.endswith("layernorm_after") for name in report.folded)
    assert any(lins == ["classifier"] for lins in report.folded.values())
    x = torch.randn(4, 1, 28, 28)
    _compare_outputs_and_grads(original, model, {"pixel_values": x}, "logits")


class Block(nn.Module):
    """Pre-LN MLP block with a residual: the norm feeds only fc1."""

    def __init__(self, d=32):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 4 * d)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(4 * d, d)

    def forward(self, x):
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


def _randomize_affine(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.LayerNorm, nn.RMSNorm)) and m.weight is not None:
                m.weight.uniform_(0.5, 1.5)
                if getattr(m, "bias", None) is not None:
                    m.bias.normal_()


def test_plain_model_without_inputs_uses_fx():
    torch.manual_seed(0)
    model = nn.Sequential(Block(), Block())
    _randomize_affine(model)
    original = copy.deepcopy(model)
    report = patch(model)
    assert "fx" in report.consumer_analysis
    assert report.folded == {"0.norm": ["0.fc1"], "1.norm": ["1.fc1"]}
    x = torch.randn(5, 7, 32)
    torch.testing.assert_close(model(x), original(x), rtol=1e-5, atol=1e-5)


class FusedQKV(nn.Module):
    def __init__(self, d=32):
        super().__init__()
        self.norm = nn.RMSNorm(d, eps=1e-6)
        self.q, self.k = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.skip = nn.LayerNorm(d)
        self.out = nn.Linear(d, d)

    def forward(self, x):
        h = self.norm(x).view(-1, x.shape[-1]).unsqueeze(0).transpose(0, 1)  # rearrangements keep the rows
        s = self.skip(x)
        return self.out(F.silu(self.q(h) * self.k(h)).reshape(x.shape)) + s  # skip feeds a residual


def test_rearranged_consumers_and_residual_with_example_inputs():
    torch.manual_seed(0)
    model = FusedQKV()
    _randomize_affine(model)
    original = copy.deepcopy(model)
    x = torch.randn(3, 5, 32)
    report = patch(model, example_inputs=x)
    assert report.folded == {"norm": ["k", "q"]}
    assert "add" in dict((n, w) for n, _, w in report.skipped)["skip"]
    torch.testing.assert_close(model(x), original(x), rtol=1e-5, atol=1e-5)


class SharedLinear(nn.Module):
    """The same linear layer takes the norm's output and another tensor: no fold."""

    def __init__(self, d=16):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.lin = nn.Linear(d, d)

    def forward(self, x):
        return self.lin(self.norm(x)) + self.lin(x)


def test_linear_applied_to_other_inputs_blocks_the_fold():
    model = SharedLinear()
    report = patch(model, example_inputs=torch.randn(4, 16))
    assert "also applied to other inputs" in dict((n, w) for n, _, w in report.skipped)["norm"]
    report_fx = patch(SharedLinear())
    assert "also applied to other inputs" in dict((n, w) for n, _, w in report_fx.skipped)["norm"]


class PreLNLayer(nn.Module):
    """A pre-LN transformer layer on nn.MultiheadAttention (which owns its projections)."""

    def __init__(self, d=32):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, 4, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


def test_attention_module_blocks_and_mlp_folds():
    torch.manual_seed(0)
    layer = PreLNLayer()
    _randomize_affine(layer)
    original = copy.deepcopy(layer)
    x = torch.randn(2, 6, 32)
    report = patch(layer, example_inputs=x)
    assert report.folded == {"norm2": ["mlp.0"]}
    assert "multi_head_attention_forward" in dict((n, w) for n, _, w in report.skipped)["norm1"]
    layer.eval(), original.eval()
    torch.testing.assert_close(layer(x), original(x), rtol=1e-5, atol=1e-5)


def test_torch_transformer_layer_norms_are_left_alone():
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, activation="gelu", norm_first=True, batch_first=True)
    report = patch(layer, example_inputs=torch.randn(2, 6, 32))
    skipped = dict((n, w) for n, _, w in report.skipped)
    assert "reads its norms' weights" in skipped["norm1"] and "reads its norms' weights" in skipped["norm2"]
    assert isinstance(layer.norm2, nn.LayerNorm)


class GemmaLikeRMSNorm(nn.Module):
    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.randn(d) * 0.1)

    def forward(self, x):
        y = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * (1.0 + self.weight.float())).type_as(x)


def test_gemma_style_norm_folds_one_plus_weight():
    torch.manual_seed(0)
    model = nn.Sequential(GemmaLikeRMSNorm(24), nn.Linear(24, 8))
    original = copy.deepcopy(model)
    report = patch(model)
    assert report.folded == {"0": ["1"]}
    x = torch.randn(3, 24)
    torch.testing.assert_close(model(x), original(x), rtol=1e-5, atol=1e-5)


class ModeDependent(nn.Module):
    """Uses the norm's output differently in eval mode: the one-forward trace cannot see it."""

    def __init__(self, d=16):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.lin = nn.Linear(d, d)

    def forward(self, x):
        h = self.norm(x)
        return self.lin(h) if self.training else self.lin(h) + 0 * x + h.detach().sum() * 0 + h


def test_verification_catches_an_unseen_use_and_restores_the_model():
    torch.manual_seed(0)
    model = ModeDependent()
    _randomize_affine(model)
    original = copy.deepcopy(model)
    with pytest.raises(RuntimeError, match="the model was restored"):
        patch(model, example_inputs=torch.randn(4, 16))
    assert isinstance(model.norm, nn.LayerNorm)
    for a, b in zip(model.state_dict().values(), original.state_dict().values()):
        assert torch.equal(a, b)


def test_patching_twice_changes_nothing_more():
    model = nn.Sequential(Block(), Block())
    patch(model)
    again = patch(model)
    assert not again.replaced and not again.folded and not again.skipped


def test_bad_arguments():
    with pytest.raises(ValueError, match="activations must be None, 'regelu2' or 'fewbit:<1..4>', got 'fewbit:5'"):
        patch(nn.Linear(2, 2), activations="fewbit:5")


def test_activations_only_and_tanh_gelu():
    model = nn.Sequential(nn.Linear(8, 8), nn.GELU(approximate="tanh"), nn.Linear(8, 8), nn.SiLU(), nn.LayerNorm(8))
    report = patch(model, activations="regelu2", norms=False)
    assert isinstance(model[1], ffops.nn.ReGELU2) and model[1].approximate == "tanh"
    assert isinstance(model[3], ffops.nn.ReSiLU2) and isinstance(model[4], nn.LayerNorm)
    assert len(report.replaced) == 2


def test_patched_model_compiles_fullgraph():
    torch.manual_seed(0)
    model = nn.Sequential(Block(), Block())
    _randomize_affine(model)
    patch(model)
    x = torch.randn(3, 5, 32, requires_grad=True)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    out_c, out_e = compiled(x), model(x)
    torch.testing.assert_close(out_c, out_e)
    (gc,) = torch.autograd.grad(out_c.sum(), x)
    (ge,) = torch.autograd.grad(out_e.sum(), x)
    torch.testing.assert_close(gc, ge)
