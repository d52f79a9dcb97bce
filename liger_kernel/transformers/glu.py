"""Shared body of the gated MLPs (LigerSwiGLUMLP, LigerGEGLUMLP): ``down(f(gate(x)) * up(x))``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from liger_kernel.ops.glu import glu, glu_mlp


def config_size(owner: str, config: Any, name: str) -> int:
    """A positive integer field of a Hugging Face config, or a ValueError naming it."""
    value = getattr(config, name, None)
    if value is None:
        raise ValueError(f"{owner} needs config.{name}, which is missing from {type(config).__name__}")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner} needs config.{name} to be a positive int, got {value!r}")
    return value


class LigerGLUMLP(nn.Module):
    """``down_proj(f(gate_proj(x)) * up_proj(x))`` with Hugging Face's parameter names.

    When the three projections are plain ``nn.Linear`` modules without hooks, autocast is off and all
    parameters have x's dtype, the whole MLP runs as one custom op that keeps only x, gate(x) and up(x)
    for the backward (see ``liger_kernel.ops.glu``). Otherwise (PEFT/LoRA wrappers, ZeRO-3 or other
    hooks, quantized layers, autocast) each projection is called as a module and only ``f(a) * b`` is
    fused, so whatever wraps the projections keeps working.
    """

    def __init__(
        self, config: Any, activation: str, bias: bool, intermediate_size: int | None = None
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.config = config
        self.hidden_size = config_size(owner, config, "hidden_size")
        if intermediate_size is None:
            intermediate_size = config_size(owner, config, "intermediate_size")
        elif (
            isinstance(intermediate_size, bool)
            or not isinstance(intermediate_size, int)
            or intermediate_size < 1
        ):
            raise ValueError(f"intermediate_size must be a positive int, got {intermediate_size!r}")
        self.intermediate_size = intermediate_size
        self.activation = activation
        self.gate_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=bias)
        self.up_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=bias)
        self.down_proj = nn.Linear(self.intermediate_size, self.hidden_size, bias=bias)

    def _fusable(self, x: torch.Tensor) -> bool:
        if type(x) is not torch.Tensor or torch.is_autocast_enabled(x.device.type):
            return False
        for proj in (self.gate_proj, self.up_proj, self.down_proj):
            if type(proj) is not nn.Linear:
                return False
            if (
                proj._forward_hooks
                or proj._forward_pre_hooks
                or proj._backward_hooks
                or proj._backward_pre_hooks
            ):
                return False
            for p in (proj.weight, proj.bias):
                if p is not None and (type(p) not in (nn.Parameter, torch.Tensor) or p.dtype != x.dtype):
                    return False
        return True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fusable(x):
            return glu_mlp(
                x, self.gate_proj.weight, self.up_proj.weight, self.down_proj.weight,
                self.gate_proj.bias, self.up_proj.bias, self.down_proj.bias, self.activation,
            )  # fmt: skip
        return self.down_proj(glu(self.gate_proj(x), self.up_proj(x), self.activation))

    def extra_repr(self) -> str:
        return f"activation={self.activation!r}"
