"""LigerFusedAddRMSNorm: a residual add and the RMSNorm after it (a pre-norm decoder layer's
``h = x + residual; y = norm(h)``) in one kernel, returning both y and h."""

from __future__ import annotations

import torch
from torch import nn

from liger_kernel.ops.fused_add_rms_norm import fused_add_rms_norm
from liger_kernel.transformers.rms_norm import initial_weight


class LigerFusedAddRMSNorm(nn.Module):
    """``forward(hidden_states, residual)`` returns ``(norm(h), h)`` with ``h = hidden_states + residual``.

    The norm is ``LigerRMSNorm``'s (``offset``, ``casting_mode``, ``init_fn`` mean the same; Gemma-style
    norms take ``offset=1.0, casting_mode="gemma", init_fn="zeros"``); h is rounded to the inputs' dtype
    before it is normalized, where an unfused ``hidden_states + residual`` rounds it. ``in_place`` is
    accepted for compatibility with Liger Kernel's API and ignored: outputs and gradients go to fresh
    buffers.
    """

    def __init__(
        self,
        hidden_size: int,
        eps: float = 1e-6,
        offset: float = 0.0,
        casting_mode: str = "llama",
        init_fn: str = "ones",
        in_place: bool = False,
    ) -> None:
        super().__init__()
        self.weight = initial_weight(hidden_size, casting_mode, init_fn)
        self.hidden_size = hidden_size
        self.variance_epsilon = eps
        self.offset = offset
        self.casting_mode = casting_mode
        self.in_place = in_place

    def forward(
        self, hidden_states: torch.Tensor, residual: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return fused_add_rms_norm(
            hidden_states, residual, self.weight, self.variance_epsilon, self.offset, self.casting_mode
        )

    def extra_repr(self) -> str:
        return (
            f"{(self.hidden_size,)}, eps={self.variance_epsilon}, offset={self.offset}, "
            f"casting_mode={self.casting_mode!r}"
        )
