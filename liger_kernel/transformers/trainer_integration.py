"""Liger Kernel 0.8's module path for the Trainer's entry points (kept for code that imports it)."""

from liger_kernel.transformers.monkey_patch import _apply_liger_kernel, _apply_liger_kernel_to_instance

__all__ = ["_apply_liger_kernel", "_apply_liger_kernel_to_instance"]
