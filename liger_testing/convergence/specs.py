"""Registry of tiny model specs for the convergence runner.

A :class:`ModelSpec` says how to build a tiny causal LM (a config factory taking the dataset's
vocabulary size, and a model factory) and how to patch it (a patch callable applied to the patched
arm as ``patch(model=model, **patch_kwargs)``, and an undo callable, called with no arguments, that
restores every process-wide change the patch made). Patch and undo are given as callables or as
``"package.module:function"`` strings that are imported only when a run uses them, so this module
never imports ``liger_kernel``.

The built-in specs (llama, mistral, mixtral, gemma, gemma2, qwen2, phi3, and since issue 20 qwen3,
qwen3_moe, gemma3_text, gemma3, olmo2, olmo3, glm4, granite, smollm3, ministral, deepseek_v3, gpt_oss,
llama4_text, llama4, ministral3, mistral3) are 2-layer models with
hidden size 64, 4 attention heads over 2 key/value heads, an intermediate size of 120 (not a power of
two, so kernels take their masked paths) and eager attention in every arm; their patch is
``liger_kernel.transformers:apply_liger_kernel_to_<name>``. Downstream projects add their own with
:func:`register_spec`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from torch import nn

__all__ = [
    "ModelSpec",
    "register_spec",
    "get_spec",
    "available_specs",
    "resolve_callable",
    "tiny_config",
]

ConfigFactory = Callable[[int], Any]
ModelFactory = Callable[[Any], nn.Module]
CallableRef = str | Callable[..., Any]

# Shared by every built-in spec: small enough for Triton's interpreter (about 1 ms per program
# instance on CPU), large enough to have several heads, GQA and masked (non power-of-two) blocks.
TINY_COMMON: Mapping[str, Any] = MappingProxyType(
    {
        "hidden_size": 64,
        "intermediate_size": 120,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "attention_dropout": 0.0,
        "use_cache": False,
    }
)

# Per model type, on top of TINY_COMMON (HF defaults otherwise, e.g. tied embeddings for Gemma).
TINY_EXTRA: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "llama": {"tie_word_embeddings": False},
        "mistral": {"tie_word_embeddings": False, "sliding_window": None},
        # batched_mm experts: they call ExpertsClass._apply_gate (what Liger patches) and, unlike
        # grouped_mm, run in float64 for the reference arm.
        "mixtral": {
            "tie_word_embeddings": False,
            "num_local_experts": 4,
            "num_experts_per_tok": 2,
            "sliding_window": None,
            "output_router_logits": True,  # the load-balancing loss is part of the compared loss
            "experts_implementation": "batched_mm",
        },
        "gemma": {"head_dim": 16},
        "gemma2": {
            "head_dim": 16,
            "query_pre_attn_scalar": 16,
            "sliding_window": 8,  # shorter than the default sequence lengths: both masks are used
            "final_logit_softcapping": 4.0,  # small enough to bend the tiny model's logits
            "attn_logit_softcapping": 50.0,
        },
        "qwen2": {"tie_word_embeddings": False},
        "phi3": {"tie_word_embeddings": False},
        "qwen3": {"tie_word_embeddings": False, "head_dim": 16},
        # layer 0 sparse (4 experts, top 2, batched_mm as for Mixtral), layer 1 a dense MLP
        "qwen3_moe": {
            "tie_word_embeddings": False,
            "head_dim": 16,
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 56,
            "mlp_only_layers": [1],
            "output_router_logits": True,
            "experts_implementation": "batched_mm",
        },
        "gemma3_text": {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 8},
        "olmo2": {"tie_word_embeddings": False},
        "olmo3": {"tie_word_embeddings": False, "sliding_window": 8},
        "glm4": {"tie_word_embeddings": False, "head_dim": 16},
        "granite": {
            "tie_word_embeddings": False,
            "embedding_multiplier": 2.0,
            "residual_multiplier": 0.5,
            "attention_multiplier": 0.25,
            "logits_scaling": 4.0,
        },
        "smollm3": {"tie_word_embeddings": False, "no_rope_layer_interval": 2},
        "ministral": {"tie_word_embeddings": False, "head_dim": 16, "sliding_window": 8},
        # YaRN over original_max_position_embeddings 8: positions 8.. get Llama 4's query scaling
        "ministral3": {
            "tie_word_embeddings": False,
            "head_dim": 16,
            "rope_parameters": {
                "rope_type": "yarn",
                "rope_theta": 1e6,
                "factor": 64.0,
                "original_max_position_embeddings": 8,
                "beta_fast": 32.0,
                "beta_slow": 1.0,
                "mscale": 1.0,
                "mscale_all_dim": 1.0,
                "llama_4_scaling_beta": 0.1,
            },
        },
        # 4 experts top 2 (batched_mm), a sliding and a full layer (attention sinks), load-balancing loss
        # on; swiglu_limit 0.2 so that the clamps bind in the tiny model (about one value in six at init:
        # gate_up has std 0.02 * sqrt(64))
        "gpt_oss": {
            "tie_word_embeddings": False,
            "head_dim": 16,
            "num_local_experts": 4,
            "num_experts_per_tok": 2,
            "sliding_window": 8,
            "swiglu_limit": 0.2,
            "output_router_logits": True,
            "experts_implementation": "batched_mm",
        },
        # layer 0 dense, layer 1 MoE (4 routed experts top 2, 1 shared, batched_mm); rotate-half RoPE
        "deepseek_v3": {
            "tie_word_embeddings": False,
            "num_key_value_heads": 4,
            "q_lora_rank": 32,
            "kv_lora_rank": 32,
            "qk_rope_head_dim": 8,
            "qk_nope_head_dim": 8,
            "v_head_dim": 16,
            "n_routed_experts": 4,
            "num_experts_per_tok": 2,
            "n_group": 1,
            "topk_group": 1,
            "n_shared_experts": 1,
            "moe_intermediate_size": 56,
            "first_k_dense_replace": 1,
            "rope_interleave": False,
            "experts_implementation": "batched_mm",
        },
        # layer 0 dense (intermediate_size_mlp), layer 1 MoE (4 experts top 1 and a shared expert, its
        # own batched matmuls); layer 0 rotates (interleaved pairs) and QK-normalizes, layer 1 is NoPE
        # (attention temperature tuning instead)
        "llama4_text": {
            "tie_word_embeddings": False,
            "head_dim": 16,
            "intermediate_size_mlp": 136,
            "num_local_experts": 4,
            "num_experts_per_tok": 1,
            "interleave_moe_layer_step": 2,
            "no_rope_layer_interval": 2,
        },
    }
)

# Image-text models: the tiny text model of another entry as ``text_config``, plus these (a one-layer
# vision tower that the text-only runs never call).
_TINY_VISION: Mapping[str, Any] = MappingProxyType(
    {
        "hidden_size": 16,
        "intermediate_size": 24,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 28,
        "patch_size": 14,
    }
)
TINY_MULTIMODAL: Mapping[str, tuple[str, Mapping[str, Any]]] = MappingProxyType(
    {
        "gemma3": ("gemma3_text", {"vision_config": dict(_TINY_VISION), "mm_tokens_per_image": 4}),
        "llama4": (
            "llama4_text",
            {
                "vision_config": {
                    **_TINY_VISION,
                    "vision_output_dim": 16,
                    "projector_input_dim": 16,
                    "projector_output_dim": 16,
                },
            },
        ),
        # Mistral Small 3.1's layout: a Mistral text decoder (tied embeddings, the default) and Pixtral
        "mistral3": (
            "mistral",
            {
                "vision_config": {"model_type": "pixtral", **_TINY_VISION, "head_dim": 8},
            },
        ),
    }
)


def tiny_config(model_type: str, vocab_size: int, **overrides: Any) -> Any:
    """The Hugging Face config of a built-in tiny model (``AutoConfig.for_model``), ids 0/1/2 for pad/bos/eos."""
    from transformers import AutoConfig

    if model_type in TINY_MULTIMODAL:
        text_type, extra = TINY_MULTIMODAL[model_type]
        text_config = tiny_config(text_type, vocab_size, **overrides).to_dict()
        return AutoConfig.for_model(model_type, text_config=text_config, **extra)
    if model_type not in TINY_EXTRA:
        raise ValueError(
            f"no built-in tiny config for model type {model_type!r}; known: {sorted(TINY_EXTRA)}"
        )
    kwargs = {
        **TINY_COMMON,
        **TINY_EXTRA[model_type],
        "vocab_size": vocab_size,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        **overrides,
    }
    return AutoConfig.for_model(model_type, **kwargs)


def auto_causal_lm(config: Any) -> nn.Module:
    """``AutoModelForCausalLM.from_config(config)`` with eager attention (the same in every arm)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_config(config, attn_implementation="eager")


def auto_image_text_to_text(config: Any) -> nn.Module:
    """``AutoModelForImageTextToText.from_config(config)`` with eager attention: image-text models that
    ``AutoModelForCausalLM`` does not map (Mistral 3) or maps to a text-only model of another type (Llama 4);
    trained on text, they are causal LMs all the same."""
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_config(config, attn_implementation="eager")


# Built-in types whose image-text model AutoModelForCausalLM does not build.
_MAKE_MODEL: Mapping[str, ModelFactory] = MappingProxyType(
    {"mistral3": auto_image_text_to_text, "llama4": auto_image_text_to_text}
)


@dataclass(frozen=True)
class ModelSpec:
    """How to build and patch one tiny model for the convergence runner.

    Attributes:
        name: registry key (``--model``).
        make_config: ``make_config(vocab_size) -> config``; the runner passes the shipped dataset's
            vocabulary size.
        make_model: ``make_model(config) -> nn.Module``, a causal LM taking ``input_ids``,
            ``attention_mask`` and ``labels`` and returning ``.loss`` and ``.logits``; default
            ``AutoModelForCausalLM.from_config`` with eager attention.
        patch: the patch, ``patch(model=model, **patch_kwargs)``; a callable or ``"module:function"``.
            It must patch the model in place (keeping its parameter objects and names) and be a no-op
            for what is already patched: the runner applies it before every patched-arm step.
        undo: called with no arguments after every patched-arm step; must restore everything the
            patch changed outside the model instance (module functions, classes). ``None`` when the
            patch changes nothing outside the instance. A callable or ``"module:function"``.
        patch_kwargs: keyword arguments for ``patch`` (e.g. ``{"swiglu": False}``).
        description: one line for ``--list``.
    """

    name: str
    make_config: ConfigFactory
    patch: CallableRef | None
    undo: CallableRef | None = None
    make_model: ModelFactory = auto_causal_lm
    patch_kwargs: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""


_REGISTRY: dict[str, ModelSpec] = {}


def register_spec(
    name: str,
    make_config: ConfigFactory,
    *,
    patch: CallableRef | None,
    undo: CallableRef | None = None,
    make_model: ModelFactory | None = None,
    patch_kwargs: Mapping[str, Any] | None = None,
    description: str = "",
    replace: bool = False,
) -> ModelSpec:
    """Add a spec to the registry (``replace=True`` to overwrite an existing name) and return it."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_spec: name must be a non-empty string, got {name!r}")
    if not callable(make_config):
        raise TypeError(f"register_spec({name!r}): make_config must be callable, got {make_config!r}")
    for label, ref in (("patch", patch), ("undo", undo)):
        if ref is not None and not (callable(ref) or isinstance(ref, str)):
            raise TypeError(
                f"register_spec({name!r}): {label} must be a callable, a 'module:function' string or None, "
                f"got {ref!r}"
            )
    if name in _REGISTRY and not replace:
        raise ValueError(f"register_spec: {name!r} is already registered (pass replace=True to overwrite it)")
    spec = ModelSpec(
        name=name,
        make_config=make_config,
        patch=patch,
        undo=undo,
        make_model=make_model or auto_causal_lm,
        patch_kwargs=dict(patch_kwargs or {}),
        description=description,
    )
    _REGISTRY[name] = spec
    return spec


def get_spec(name: str) -> ModelSpec:
    """The registered spec called ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model spec {name!r}; registered: {', '.join(available_specs())}") from None


def available_specs() -> list[str]:
    return sorted(_REGISTRY)


def resolve_callable(ref: CallableRef | None, what: str = "callable") -> Callable[..., Any] | None:
    """A callable from itself or from ``"package.module:attr"`` (also ``"package.module.attr"``)."""
    if ref is None or callable(ref):
        return ref
    if isinstance(ref, str) and ref.strip().lower() == "none":  # --undo none
        return None
    if not isinstance(ref, str) or not ref.strip():
        raise TypeError(f"{what} must be a callable or a 'module:function' string, got {ref!r}")
    text = ref.strip()
    if ":" in text:
        module_name, _, attr_path = text.partition(":")
    else:
        module_name, _, attr_path = text.rpartition(".")
    if not module_name or not attr_path:
        raise ValueError(f"{what} {ref!r} is not of the form 'package.module:function'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"cannot import {module_name!r} for the {what} {ref!r}: {exc}") from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AttributeError(
                f"{module_name!r} has no attribute {attr_path!r} (the {what} {ref!r})"
            ) from None
    if not callable(obj):
        raise TypeError(f"the {what} {ref!r} is not callable: {obj!r}")
    return obj


def _builtin(model_type: str, description: str) -> None:
    def make_config(vocab_size: int) -> Any:
        return tiny_config(model_type, vocab_size)

    make_config.__name__ = f"tiny_{model_type}_config"
    register_spec(
        model_type,
        make_config,
        patch=f"liger_kernel.transformers:apply_liger_kernel_to_{model_type}",
        undo=f"liger_kernel.transformers:revert_liger_kernel_to_{model_type}",
        make_model=_MAKE_MODEL.get(model_type),
        description=description,
    )


for _model_type, _description in (
    ("llama", "Llama: RMSNorm, RoPE, SwiGLU MLP, fused linear cross entropy"),
    ("mistral", "Mistral: as Llama"),
    ("mixtral", "Mixtral: 4 experts (top 2, batched_mm), load-balancing loss on"),
    ("gemma", "Gemma: offset RMSNorm, GEGLU MLP, tied embeddings"),
    ("gemma2", "Gemma 2: four norms per layer, sliding window 8, logit soft-capping, tied embeddings"),
    ("qwen2", "Qwen2: q/k/v biases"),
    ("phi3", "Phi-3: fused gate_up projection"),
    ("qwen3", "Qwen3: QK-norm (RMSNorm over head_dim)"),
    ("qwen3_moe", "Qwen3-MoE: 4 experts (top 2, batched_mm) and a dense layer, load-balancing loss on"),
    ("gemma3_text", "Gemma 3 text: offset RMSNorm incl. QK-norm, GEGLU, sliding window 8, tied embeddings"),
    ("gemma3", "Gemma 3 image-text: its text decoder (no images in the data), tied embeddings"),
    ("olmo2", "OLMo 2: norms after attention and MLP, QK-norm over all heads"),
    ("olmo3", "OLMo 3: as OLMo 2, sliding window 8"),
    ("glm4", "GLM-4: fused gate_up, its own partial interleaved RoPE"),
    ("granite", "Granite: embedding/residual/attention multipliers, logits divided by 4"),
    ("smollm3", "SmolLM3: RoPE on layer 0, none on layer 1"),
    ("ministral", "Ministral: sliding window 8"),
    ("ministral3", "Ministral 3: YaRN RoPE, Llama 4 query scaling from position 8"),
    ("mistral3", "Mistral 3 image-text: its Mistral text decoder (no images in the data), tied embeddings"),
    (
        "deepseek_v3",
        "DeepSeek-V3: latent attention, a dense and an MoE layer (shared expert), rotate-half RoPE",
    ),
    ("gpt_oss", "gpt-oss: 4 experts (top 2, batched_mm), clamped GLU (limit 0.2), attention sinks"),
    (
        "llama4_text",
        "Llama 4 text: interleaved RoPE and weightless QK-norm on layer 0 (NoPE layer 1), a dense and an "
        "MoE layer (top 1, shared expert)",
    ),
    (
        "llama4",
        "Llama 4 image-text: its text decoder (no images in the data); the model AutoModelForCausalLM "
        "builds from this config is llama4_text's",
    ),
):
    _builtin(_model_type, _description)
