"""Liger Kernel 0.8's import path for Qwen3.5's fused-loss forwards (``lce_forward``, text, and
``lce_forward_for_multimodal``). Qwen3.5 is not a supported model type yet (issue 20): both dispatch on
``config.model_type`` and raise for it (see ``per_type``)."""

from liger_kernel.transformers.model.per_type import dispatching_lce_forward as lce_forward

lce_forward_for_multimodal = lce_forward

__all__ = ["lce_forward", "lce_forward_for_multimodal"]
