"""Tiny models built from config (random weights, nothing downloaded) for ``ffops.memory.patch``: one per
architecture family that ``benchmarks/bench_patch_models.py`` measures and ``tests/memory/test_patch_models.py``
patches. ``build(name)`` returns the model, gradient checkpointing on where the model supports it."""

import importlib

IMAGE_SIZE = 32  # the timm models' input size
# name -> (package, config class or timm model name, config kwargs, model class)
_TEXT = dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
_DECODER = dict(_TEXT, num_key_value_heads=2, max_position_embeddings=64)
ARCHITECTURES = {
    "llama": ("transformers", "LlamaConfig", _DECODER, "LlamaForCausalLM"),
    "mistral": ("transformers", "MistralConfig", _DECODER, "MistralForCausalLM"),
    "qwen2": ("transformers", "Qwen2Config", _DECODER, "Qwen2ForCausalLM"),
    "qwen3": ("transformers", "Qwen3Config", dict(_DECODER, head_dim=16), "Qwen3ForCausalLM"),
    "gemma": ("transformers", "GemmaConfig", dict(_DECODER, head_dim=16), "GemmaForCausalLM"),
    "gemma2": ("transformers", "Gemma2Config", dict(_DECODER, head_dim=16), "Gemma2ForCausalLM"),
    "phi3": ("transformers", "Phi3Config", dict(_DECODER, pad_token_id=0), "Phi3ForCausalLM"),
    "gpt2": (
        "transformers",
        "GPT2Config",
        dict(vocab_size=96, n_embd=64, n_layer=2, n_head=4, n_positions=64),
        "GPT2LMHeadModel",
    ),
    "gpt_neox": ("transformers", "GPTNeoXConfig", dict(_TEXT, max_position_embeddings=64), "GPTNeoXForCausalLM"),
    "opt": (
        "transformers",
        "OPTConfig",
        dict(
            vocab_size=96,
            hidden_size=64,
            ffn_dim=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=64,
            word_embed_proj_dim=64,
        ),
        "OPTForCausalLM",
    ),
    "bert": ("transformers", "BertConfig", dict(_TEXT, max_position_embeddings=64), "BertForMaskedLM"),
    "roberta": ("transformers", "RobertaConfig", dict(_TEXT, max_position_embeddings=66), "RobertaForMaskedLM"),
    "t5": (
        "transformers",
        "T5Config",
        dict(vocab_size=96, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, decoder_start_token_id=0),
        "T5ForConditionalGeneration",
    ),
    "vit": (
        "transformers",
        "ViTConfig",
        dict(
            image_size=28,
            patch_size=7,
            num_channels=3,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_labels=10,
        ),
        "ViTForImageClassification",
    ),
    "clip_vision": (
        "transformers",
        "CLIPVisionConfig",
        dict(
            image_size=28,
            patch_size=7,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
        ),
        "CLIPVisionModel",
    ),
    "whisper": (
        "transformers",
        "WhisperConfig",
        dict(
            vocab_size=96,
            d_model=64,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=128,
            decoder_ffn_dim=128,
            num_mel_bins=16,
            max_source_positions=16,
            max_target_positions=32,
            decoder_start_token_id=1,
            pad_token_id=0,
        ),
        "WhisperForConditionalGeneration",
    ),
    "timm_vit": (
        "timm",
        "vit_tiny_patch16_224",
        dict(img_size=IMAGE_SIZE, patch_size=8, depth=2, num_classes=10),
        None,
    ),
    "timm_convnext": (  # channels-last LayerNorm + Linear in the blocks, channels-first LayerNorm2d around them
        "timm",
        "convnext_tiny",
        dict(depths=(1, 1, 1, 1), dims=(16, 32, 48, 64), num_classes=10),
        None,
    ),
}


def build(name: str, checkpointing: bool = True):
    """The tiny model ``name`` (a key of ARCHITECTURES) in train mode, with gradient checkpointing where the
    model supports it (if ``checkpointing``). Raises ImportError when its package is missing."""
    package, config_cls, kwargs, model_cls = ARCHITECTURES[name]
    lib = importlib.import_module(package)
    if package == "timm":
        model = lib.create_model(config_cls, pretrained=False, **kwargs)
        model.set_grad_checkpointing(checkpointing)
    else:
        model = getattr(lib, model_cls)(getattr(lib, config_cls)(**kwargs))
        if checkpointing and model.supports_gradient_checkpointing:
            getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    return model.train()
