"""User-facing modules, functional API and Hugging Face model patching."""

from liger_kernel.transformers.rms_norm import LigerRMSNorm

__all__ = ["LigerRMSNorm"]
