"""A downstream project's own patch for Hugging Face's Qwen3: its RMSNorm computed by ``F.rms_norm``.

The convergence runner calls ``patch_model(model=model, **patch_kwargs)`` before every step of the
patched arm, so the patch works in place, keeps the model's parameter objects (it swaps classes, it
does not build new modules) and does nothing to what it has already patched. It changes nothing
outside the model, so the spec needs no undo.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm


class FunctionalQwen3RMSNorm(Qwen3RMSNorm):
    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # in float32 like Qwen3RMSNorm, the weight applied after rounding back to the input's dtype
        normed = F.rms_norm(hidden_states.float(), hidden_states.shape[-1:], eps=self.variance_epsilon)
        return self.weight * normed.to(hidden_states.dtype)


def patch_model(model: nn.Module, norms: bool = True) -> None:
    if not norms:
        return
    for module in model.modules():
        if type(module) is Qwen3RMSNorm:
            module.__class__ = FunctionalQwen3RMSNorm
