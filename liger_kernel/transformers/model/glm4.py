"""GLM-4's fused-loss causal-LM forward under Liger Kernel 0.8's import path (see ``per_type``)."""

from liger_kernel.transformers.model.per_type import supported_type_getattr

__getattr__ = supported_type_getattr(__name__, {"lce_forward": "glm4"})
