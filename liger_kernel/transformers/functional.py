"""Functional API: plain functions over tensors, differentiable, usable under torch.compile."""

from __future__ import annotations

import torch

from liger_kernel.ops.rms_norm import rms_norm


def liger_rms_norm(
    X: torch.Tensor,
    W: torch.Tensor,
    eps: float = 1e-6,
    offset: float = 0.0,
    casting_mode: str = "llama",
    in_place: bool = True,
) -> torch.Tensor:
    """RMSNorm of ``X`` over its last dim with weight ``W``; see ``LigerRMSNorm`` for the options.

    ``in_place`` is accepted for API compatibility and ignored (see ``LigerRMSNorm``).
    """
    return rms_norm(X, W, eps, offset, casting_mode)


__all__ = ["liger_rms_norm"]
