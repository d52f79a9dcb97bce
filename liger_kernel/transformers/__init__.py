"""User-facing modules, functional API and Hugging Face model patching.

Names are imported on first use (PEP 562 ``__getattr__``): ``import liger_kernel.transformers`` stays
cheap, and ``transformers`` itself (several seconds to import) is loaded only by what needs it -- the
Auto class, or the first patch applied to a model.
"""

from __future__ import annotations

from typing import Any

from liger_kernel._lazy import load_export

# public name -> the submodule that defines it
_EXPORTS: dict[str, str] = {
    "AutoLigerKernelForCausalLM": "auto_model",
    "LigerCrossEntropyLoss": "cross_entropy",
    "LigerFusedLinearCrossEntropyLoss": "fused_linear_cross_entropy",
    "LigerGEGLUMLP": "geglu",
    "LigerLayerNorm": "layer_norm",
    "LigerRMSNorm": "rms_norm",
    "LigerSwiGLUMLP": "swiglu",
    "liger_rotary_pos_emb": "rope",
    "LigerFusedLinearJSD": "fused_linear_jsd",
    "LigerJSD": "jsd",
    "LigerKLDIVLoss": "kl_div",
    "LigerTVDLoss": "tvd",
    "MODEL_TYPE_TO_APPLY_LIGER_FN": "monkey_patch",
    "_apply_liger_kernel_to_instance": "monkey_patch",
    "apply_liger_kernel": "monkey_patch",
    "describe": "monkey_patch",
    "liger_patched": "monkey_patch",
    "unpatch": "monkey_patch",
    # Liger Kernel 0.8's other module names (docs/compatibility.md)
    "_apply_liger_kernel": "monkey_patch",
    "LigerBlockSparseTop2MLP": "swiglu",
    "LigerExperts": "swiglu",
    "LigerFalconH1SwiGLUMLP": "swiglu",
    "LigerPhi3SwiGLUMLP": "swiglu",
    "LigerQwen3MoeSwiGLUMLP": "swiglu",
    "liger_llama4_text_rotary_pos_emb": "llama4_rope",
    "LigerFusedAddRMSNorm": "fused_add_rms_norm",
}
# apply_liger_kernel_to_<model_type> / revert_liger_kernel_to_<model_type>: one per supported type.
_PATCH_PREFIXES = ("apply_liger_kernel_to_", "revert_liger_kernel_to_")


def _module_of(name: str) -> str | None:
    if name in _EXPORTS:
        return _EXPORTS[name]
    if name.startswith(_PATCH_PREFIXES):
        return "monkey_patch"
    return None


def _patch_function_names() -> list[str]:
    from liger_kernel.transformers.monkey_patch import MODEL_SPECS

    return [f"{prefix}{model_type}" for prefix in _PATCH_PREFIXES for model_type in MODEL_SPECS]


def __getattr__(name: str) -> Any:
    if name == "__all__":  # ``from liger_kernel.transformers import *``
        return [*_EXPORTS, *_patch_function_names()]
    module = _module_of(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = load_export(__name__, module, name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_patch_function_names()))
