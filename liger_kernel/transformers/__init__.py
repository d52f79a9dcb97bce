"""User-facing modules, functional API and Hugging Face model patching."""

from liger_kernel.transformers.auto_model import AutoLigerKernelForCausalLM
from liger_kernel.transformers.cross_entropy import LigerCrossEntropyLoss
from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss
from liger_kernel.transformers.geglu import LigerGEGLUMLP
from liger_kernel.transformers.layer_norm import LigerLayerNorm
from liger_kernel.transformers.monkey_patch import (
    MODEL_TYPE_TO_APPLY_LIGER_FN,
    _apply_liger_kernel_to_instance,
    apply_liger_kernel_to_gemma,
    apply_liger_kernel_to_gemma2,
    apply_liger_kernel_to_gemma3,
    apply_liger_kernel_to_gemma3_text,
    apply_liger_kernel_to_glm4,
    apply_liger_kernel_to_granite,
    apply_liger_kernel_to_llama,
    apply_liger_kernel_to_ministral,
    apply_liger_kernel_to_mistral,
    apply_liger_kernel_to_mixtral,
    apply_liger_kernel_to_olmo2,
    apply_liger_kernel_to_olmo3,
    apply_liger_kernel_to_phi3,
    apply_liger_kernel_to_qwen2,
    apply_liger_kernel_to_qwen3,
    apply_liger_kernel_to_qwen3_moe,
    apply_liger_kernel_to_smollm3,
    liger_patched,
    revert_liger_kernel_to_gemma,
    revert_liger_kernel_to_gemma2,
    revert_liger_kernel_to_gemma3,
    revert_liger_kernel_to_gemma3_text,
    revert_liger_kernel_to_glm4,
    revert_liger_kernel_to_granite,
    revert_liger_kernel_to_llama,
    revert_liger_kernel_to_ministral,
    revert_liger_kernel_to_mistral,
    revert_liger_kernel_to_mixtral,
    revert_liger_kernel_to_olmo2,
    revert_liger_kernel_to_olmo3,
    revert_liger_kernel_to_phi3,
    revert_liger_kernel_to_qwen2,
    revert_liger_kernel_to_qwen3,
    revert_liger_kernel_to_qwen3_moe,
    revert_liger_kernel_to_smollm3,
    unpatch,
)
from liger_kernel.transformers.rms_norm import LigerRMSNorm
from liger_kernel.transformers.rope import liger_rotary_pos_emb
from liger_kernel.transformers.swiglu import LigerSwiGLUMLP

__all__ = ["LigerGEGLUMLP", "LigerSwiGLUMLP", "LigerLayerNorm", "liger_rotary_pos_emb", "LigerRMSNorm"]
__all__ += [
    "AutoLigerKernelForCausalLM",
    "MODEL_TYPE_TO_APPLY_LIGER_FN",
    "_apply_liger_kernel_to_instance",
    "apply_liger_kernel_to_gemma",
    "apply_liger_kernel_to_gemma2",
    "apply_liger_kernel_to_llama",
    "apply_liger_kernel_to_mistral",
    "apply_liger_kernel_to_mixtral",
    "apply_liger_kernel_to_phi3",
    "apply_liger_kernel_to_qwen2",
    "liger_patched",
    "revert_liger_kernel_to_gemma",
    "revert_liger_kernel_to_gemma2",
    "revert_liger_kernel_to_llama",
    "revert_liger_kernel_to_mistral",
    "revert_liger_kernel_to_mixtral",
    "revert_liger_kernel_to_phi3",
    "revert_liger_kernel_to_qwen2",
    "unpatch",
]
__all__ += ["LigerCrossEntropyLoss", "LigerFusedLinearCrossEntropyLoss"]
__all__ += [  # model types added with issue 20
    "apply_liger_kernel_to_qwen3",
    "apply_liger_kernel_to_qwen3_moe",
    "apply_liger_kernel_to_gemma3_text",
    "apply_liger_kernel_to_gemma3",
    "apply_liger_kernel_to_olmo2",
    "apply_liger_kernel_to_olmo3",
    "apply_liger_kernel_to_glm4",
    "apply_liger_kernel_to_granite",
    "apply_liger_kernel_to_smollm3",
    "apply_liger_kernel_to_ministral",
    "revert_liger_kernel_to_qwen3",
    "revert_liger_kernel_to_qwen3_moe",
    "revert_liger_kernel_to_gemma3_text",
    "revert_liger_kernel_to_gemma3",
    "revert_liger_kernel_to_olmo2",
    "revert_liger_kernel_to_olmo3",
    "revert_liger_kernel_to_glm4",
    "revert_liger_kernel_to_granite",
    "revert_liger_kernel_to_smollm3",
    "revert_liger_kernel_to_ministral",
]
