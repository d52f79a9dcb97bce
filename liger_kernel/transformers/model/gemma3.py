"""Gemma 3's fused-loss forwards under Liger Kernel 0.8's import path (see ``per_type``):
``causal_forward`` (text-only ``Gemma3ForCausalLM``, model type gemma3_text) and ``multimodal_forward``
(``Gemma3ForConditionalGeneration``, model type gemma3)."""

from liger_kernel.transformers.model.per_type import supported_type_getattr

__getattr__ = supported_type_getattr(
    __name__, {"causal_forward": "gemma3_text", "multimodal_forward": "gemma3"}
)
