"""Tiny Hugging Face causal LMs of every supported model type, and helpers to run them.

Sizes are kept small because on a machine without a GPU every Triton program instance runs in the
interpreter (about 1 ms each): 2 layers, hidden 32, 4 heads with 2 KV heads, vocab 96, batch 2 x 8.
"""

from __future__ import annotations

import copy
import importlib

import torch
import transformers

VOCAB = 96
BATCH = 2
SEQ = 8

_COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    tie_word_embeddings=False,
)

_EXTRA = {
    "llama": {},
    "mistral": {"sliding_window": None},
    "mixtral": {"num_local_experts": 4, "num_experts_per_tok": 2, "sliding_window": None},
    "gemma": {"head_dim": 8},
    # final_logit_softcapping small enough that the soft-cap visibly bends the tiny model's logits
    "gemma2": {
        "head_dim": 8,
        "query_pre_attn_scalar": 8,
        "final_logit_softcapping": 0.5,
        "sliding_window": 4,
    },
    "qwen2": {},
    "phi3": {},
    # The types added with issue 20 have one layer (less interpreter time), but Qwen3-MoE (a sparse and a
    # dense layer).
    "qwen3": {"head_dim": 8, "num_hidden_layers": 1},
    # layer 1 dense (Qwen3MoeMLP), layer 0 sparse (Qwen3MoeExperts): both swiglu targets run
    "qwen3_moe": {
        "head_dim": 8,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 24,
        "mlp_only_layers": [1],
    },
    "gemma3_text": {"head_dim": 8, "query_pre_attn_scalar": 8, "sliding_window": 4, "num_hidden_layers": 1},
    "olmo2": {"num_hidden_layers": 1},
    "olmo3": {"sliding_window": 4, "num_hidden_layers": 1},
    "glm4": {"head_dim": 8, "num_hidden_layers": 1},
    # multipliers far from 1, so a loss that forgot one of them would be visibly off
    "granite": {
        "embedding_multiplier": 2.0,
        "residual_multiplier": 0.5,
        "attention_multiplier": 0.3,
        "logits_scaling": 4.0,
        "num_hidden_layers": 1,
    },
    "smollm3": {"num_hidden_layers": 1},
    "ministral": {"sliding_window": 4, "head_dim": 8, "num_hidden_layers": 1},
    # YaRN with original_max_position_embeddings 4, so that positions 4..7 get Llama 4's query scaling
    "ministral3": {
        "head_dim": 8,
        "num_hidden_layers": 1,
        "rope_parameters": {
            "rope_type": "yarn",
            "rope_theta": 1e6,
            "factor": 16.0,
            "original_max_position_embeddings": 4,
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "mscale": 1.0,
            "mscale_all_dim": 1.0,
            "llama_4_scaling_beta": 0.1,
        },
    },
    # 4 experts top 2 (grouped_mm, which calls the patched _apply_gate; batched_mm's backward is not
    # bitwise reproducible on CPU); one sliding-window layer; swiglu_limit small enough that about a
    # quarter of the tiny model's gate/up values are clamped
    "gpt_oss": {
        "num_hidden_layers": 1,
        "head_dim": 8,
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "sliding_window": 4,
        "swiglu_limit": 0.1,
    },
    # one MoE layer (4 routed experts, top 2, a shared expert: a DeepseekV3MLP); rotate-half RoPE
    "deepseek_v3": {
        "num_hidden_layers": 1,
        "num_key_value_heads": 4,
        "q_lora_rank": 16,
        "kv_lora_rank": 16,
        "qk_rope_head_dim": 4,
        "qk_nope_head_dim": 4,
        "v_head_dim": 8,
        "n_routed_experts": 4,
        "num_experts_per_tok": 2,
        "n_group": 1,
        "topk_group": 1,
        "n_shared_experts": 1,
        "moe_intermediate_size": 24,
        "first_k_dense_replace": 0,
        "rope_interleave": False,
    },
    # one MoE layer (4 experts, top 1, a shared expert: a Llama4TextMLP) that rotates (interleaved RoPE)
    # and QK-normalizes; the dense layers' wider Llama4TextMLP is test_llama4_dense_mlp_keeps_its_width's
    "llama4_text": {
        "head_dim": 8,
        "num_hidden_layers": 1,
        "intermediate_size_mlp": 40,
        "num_local_experts": 4,
        "num_experts_per_tok": 1,
        "interleave_moe_layer_step": 1,
    },
}
# Gemma3ForConditionalGeneration: the text decoder above plus a one-layer SigLIP tower (never run: the
# batches have no images) whose 2 x 2 patches pool to 4 image tokens.
_GEMMA3_VISION = dict(
    hidden_size=16,
    intermediate_size=24,
    num_hidden_layers=1,
    num_attention_heads=2,
    image_size=28,
    patch_size=14,
)
# Llama4ForConditionalGeneration: the same, with a one-layer vision tower (never run either).
_LLAMA4_VISION = dict(_GEMMA3_VISION, vision_output_dim=16, projector_input_dim=16, projector_output_dim=16)
# Mistral3ForConditionalGeneration with the Ministral 3 text decoder (the convergence spec has Mistral's);
# a one-layer Pixtral tower, never run either.
_PIXTRAL_VISION = {**_GEMMA3_VISION, "head_dim": 8}
_MULTIMODAL = {
    "gemma3": ("gemma3_text", {"vision_config": _GEMMA3_VISION, "mm_tokens_per_image": 4}),
    "llama4": ("llama4_text", {"vision_config": _LLAMA4_VISION}),
    "mistral3": ("ministral3", {"vision_config": {"model_type": "pixtral", **_PIXTRAL_VISION}}),
}

_CLASS_NAMES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "mistral": ("MistralConfig", "MistralForCausalLM"),
    "mixtral": ("MixtralConfig", "MixtralForCausalLM"),
    "gemma": ("GemmaConfig", "GemmaForCausalLM"),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "phi3": ("Phi3Config", "Phi3ForCausalLM"),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"),
    "qwen3_moe": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM"),
    "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM"),
    "gemma3": ("Gemma3Config", "Gemma3ForConditionalGeneration"),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM"),
    "olmo3": ("Olmo3Config", "Olmo3ForCausalLM"),
    "glm4": ("Glm4Config", "Glm4ForCausalLM"),
    "granite": ("GraniteConfig", "GraniteForCausalLM"),
    "smollm3": ("SmolLM3Config", "SmolLM3ForCausalLM"),
    "ministral": ("MinistralConfig", "MinistralForCausalLM"),
    "ministral3": ("Ministral3Config", "Ministral3ForCausalLM"),
    "mistral3": ("Mistral3Config", "Mistral3ForConditionalGeneration"),
    "deepseek_v3": ("DeepseekV3Config", "DeepseekV3ForCausalLM"),
    "gpt_oss": ("GptOssConfig", "GptOssForCausalLM"),
    "llama4_text": ("Llama4TextConfig", "Llama4ForCausalLM"),
    "llama4": ("Llama4Config", "Llama4ForConditionalGeneration"),
}
# The types the installed transformers has (the GPU machine's may be older than this one's).
MODEL_TYPES = tuple(t for t, (config_name, _) in _CLASS_NAMES.items() if hasattr(transformers, config_name))
# The seven types patched before the issue-20 ones (the tests that cover the machinery, not a model,
# keep to these to save interpreter time).
FIRST_TYPES = ("llama", "mistral", "mixtral", "gemma", "gemma2", "qwen2", "phi3")


# Where models and batches live; the conftest sets it from liger_testing's `device` fixture, so a GPU
# run exercises the compiled kernels and a CPU run the interpreter.
DEVICE = "cpu"


def modeling(model_type: str):
    module = {"gemma3_text": "gemma3", "llama4_text": "llama4"}.get(model_type, model_type)
    return importlib.import_module(f"transformers.models.{module}.modeling_{module}")


def tiny_config(model_type: str, **overrides):
    config_cls = getattr(transformers, _CLASS_NAMES[model_type][0])
    if model_type in _MULTIMODAL:
        text_type, extra = _MULTIMODAL[model_type]
        text_config = {**_COMMON, **_EXTRA[text_type], **overrides, "model_type": text_type}
        config = config_cls(text_config=text_config, **extra)
        config._attn_implementation = "eager"
        config.get_text_config()._attn_implementation = "eager"
        return config
    config = config_cls(**{**_COMMON, **_EXTRA[model_type], **overrides})
    config._attn_implementation = "eager"  # the same attention in both arms, and Gemma 2's soft-capping
    return config


def causal_lm_class(model_type: str):
    # Looked up at call time: class patching may not replace the class itself, but keeps this honest.
    return getattr(modeling(model_type), _CLASS_NAMES[model_type][1])


def build(model_type: str, state_dict=None, config=None, dtype=torch.float32):
    """A tiny model of ``model_type``; with ``state_dict``, holding exactly those weights."""
    config = config if config is not None else tiny_config(model_type)
    torch.manual_seed(1234)
    model = causal_lm_class(model_type)(copy.deepcopy(config))
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return model.to(device=DEVICE, dtype=dtype)


def batch(seed: int = 0, ignore_some: bool = True):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, VOCAB, (BATCH, SEQ), generator=g)
    labels = input_ids.clone()
    if ignore_some:
        labels[0, :2] = -100  # a masked prompt
        labels[1, -1] = -100
    attention_mask = torch.ones_like(input_ids)
    return input_ids.to(DEVICE), attention_mask.to(DEVICE), labels.to(DEVICE)


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def train_step(model, input_ids, attention_mask, labels, **kwargs):
    """One training forward/backward; returns (output, grads by parameter name)."""
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)
    out.loss.backward()
    return out, grads(model)


@torch.no_grad()
def eval_logits(model, input_ids, attention_mask, **kwargs):
    model.eval()
    return model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits
