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
}

MODEL_TYPES = tuple(_EXTRA)

_CLASS_NAMES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "mistral": ("MistralConfig", "MistralForCausalLM"),
    "mixtral": ("MixtralConfig", "MixtralForCausalLM"),
    "gemma": ("GemmaConfig", "GemmaForCausalLM"),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "phi3": ("Phi3Config", "Phi3ForCausalLM"),
}


# Where models and batches live; the conftest sets it from liger_testing's `device` fixture, so a GPU
# run exercises the compiled kernels and a CPU run the interpreter.
DEVICE = "cpu"


def modeling(model_type: str):
    return importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")


def tiny_config(model_type: str, **overrides):
    config_cls = getattr(transformers, _CLASS_NAMES[model_type][0])
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
