"""Triton kernels for LLM training (forward and backward), patched into Hugging Face models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("liger-kernel")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"
