"""Llama 4's fused-loss causal-LM forward (``Llama4ForCausalLM``, the text decoder) under Liger Kernel
0.8's import path (see ``per_type``)."""

from liger_kernel.transformers.model.per_type import supported_type_getattr

__getattr__ = supported_type_getattr(__name__, {"lce_forward": "llama4_text"})
