"""LigerSwiGLUMLP, a drop-in for Hugging Face's LlamaMLP (Mistral, Qwen2, ... share it), and the
other SwiGLU modules under Liger Kernel 0.8's names (Phi-3's fused gate_up MLP, MoE experts...)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from liger_kernel.ops.swiglu import LigerSiLUMulFunction, swiglu
from liger_kernel.transformers.glu import LigerGLUMLP, config_size

_SILU_NAMES = ("silu", "swish")


class LigerSwiGLUMLP(LigerGLUMLP):
    """``down_proj(silu(gate_proj(x)) * up_proj(x))``; loads LlamaMLP's state dict.

    Reads ``config.hidden_size``, ``config.intermediate_size`` (or the ``intermediate_size`` argument),
    ``config.hidden_act`` (must be "silu" or "swish") and ``config.mlp_bias`` (default False).
    """

    def __init__(self, config: Any, intermediate_size: int | None = None) -> None:
        hidden_act = getattr(config, "hidden_act", None)
        if hidden_act not in _SILU_NAMES:
            raise ValueError(
                f"LigerSwiGLUMLP supports config.hidden_act in {_SILU_NAMES}, got {hidden_act!r}"
            )
        bias = bool(getattr(config, "mlp_bias", False))
        super().__init__(config, "silu", bias, intermediate_size)


def _check_silu(owner: str, config: Any) -> None:
    hidden_act = getattr(config, "hidden_act", None)
    if hidden_act not in _SILU_NAMES:
        raise ValueError(f"{owner} supports config.hidden_act in {_SILU_NAMES}, got {hidden_act!r}")


class LigerQwen3MoeSwiGLUMLP(LigerSwiGLUMLP):
    """Qwen3-MoE's dense/shared-expert MLP (``Qwen3MoeMLP(config, intermediate_size=None)``); the
    same module as ``LigerSwiGLUMLP`` under Liger Kernel 0.8's name for it."""


class LigerPhi3SwiGLUMLP(nn.Module):
    """Phi-3's MLP: ``down_proj(silu(gate) * up)`` with ``gate, up = gate_up_proj(x).chunk(2, -1)``;
    loads Phi3MLP's state dict (``gate_up_proj``, ``down_proj``, no biases)."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        owner = type(self).__name__
        _check_silu(owner, config)
        self.config = config
        self.hidden_size = config_size(owner, config, "hidden_size")
        self.intermediate_size = config_size(owner, config, "intermediate_size")
        self.gate_up_proj = nn.Linear(self.hidden_size, 2 * self.intermediate_size, bias=False)
        self.down_proj = nn.Linear(self.intermediate_size, self.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(swiglu(gate, up))


class LigerBlockSparseTop2MLP(nn.Module):
    """One Mixtral expert as transformers 4.x built it (``MixtralBlockSparseTop2MLP``):
    ``w2(silu(w1(x)) * w3(x))``, no biases."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        owner = type(self).__name__
        _check_silu(owner, config)
        self.hidden_dim = config_size(owner, config, "hidden_size")
        self.ffn_dim = config_size(owner, config, "intermediate_size")
        self.w1 = nn.Linear(self.hidden_dim, self.ffn_dim, bias=False)
        self.w2 = nn.Linear(self.ffn_dim, self.hidden_dim, bias=False)
        self.w3 = nn.Linear(self.hidden_dim, self.ffn_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(swiglu(self.w1(x), self.w3(x)))


def _first_field(owner: str, config: Any, names: tuple[str, ...]) -> int:
    for name in names:
        if getattr(config, name, None) is not None:
            return config_size(owner, config, name)
    raise ValueError(
        f"{owner} needs one of config.{', config.'.join(names)}; {type(config).__name__} has none"
    )


class LigerExperts(nn.Module):
    """The experts of a transformers 5.x MoE block (``MixtralExperts``, Qwen3-MoE's...) as fused 3-D
    parameters: ``gate_up_proj`` (experts, 2 * intermediate, hidden), ``down_proj`` (experts, hidden,
    intermediate). Called as ``experts(hidden_states, top_k_index, top_k_weights)``: each token goes
    through its top-k experts (``down(silu(gate) * up)``, SwiGLU fused) and the results are summed
    with the routing weights. An index of ``num_experts`` or more (a dropped slot) contributes nothing.
    """

    def __init__(self, config: Any) -> None:
        super().__init__()
        owner = type(self).__name__
        _check_silu(owner, config)
        self.num_experts = _first_field(
            owner, config, ("num_experts", "num_local_experts", "n_routed_experts")
        )
        self.intermediate_dim = _first_field(owner, config, ("moe_intermediate_size", "intermediate_size"))
        self.hidden_dim = config_size(owner, config, "hidden_size")
        self.gate_up_proj = nn.Parameter(
            torch.empty(self.num_experts, 2 * self.intermediate_dim, self.hidden_dim)
        )
        self.down_proj = nn.Parameter(torch.empty(self.num_experts, self.hidden_dim, self.intermediate_dim))

    def forward(
        self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
    ) -> torch.Tensor:
        x = hidden_states.reshape(-1, self.hidden_dim)
        index = top_k_index.reshape(x.shape[0], -1)
        weights = top_k_weights.reshape(x.shape[0], -1)
        out = torch.zeros_like(x)
        for expert in index.unique().tolist():
            if not 0 <= expert < self.num_experts:
                continue
            token, slot = torch.where(index == expert)
            gate, up = nn.functional.linear(x[token], self.gate_up_proj[expert]).chunk(2, dim=-1)
            h = nn.functional.linear(swiglu(gate, up), self.down_proj[expert]) * weights[token, slot, None]
            out.index_add_(0, token, h.to(out.dtype))
        return out.view(hidden_states.shape)


class LigerFalconH1SwiGLUMLP(nn.Module):
    """Falcon-H1's MLP: ``down_proj(up_proj(x) * silu(gate_proj(x) * g)) * d`` with
    ``(g, d) = config.mlp_multipliers`` and biases when ``config.mlp_bias``; loads FalconH1MLP's state dict.
    (Liger Kernel 0.8 applies ``d`` before ``down_proj``, which differs from Hugging Face when there is a
    bias; this follows Hugging Face.)"""

    def __init__(self, config: Any) -> None:
        super().__init__()
        owner = type(self).__name__
        _check_silu(owner, config)
        self.config = config
        self.hidden_size = config_size(owner, config, "hidden_size")
        self.intermediate_size = config_size(owner, config, "intermediate_size")
        bias = bool(getattr(config, "mlp_bias", False))
        self.gate_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=bias)
        self.up_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=bias)
        self.down_proj = nn.Linear(self.intermediate_size, self.hidden_size, bias=bias)
        gate_multiplier, down_multiplier = getattr(config, "mlp_multipliers", (1.0, 1.0))
        self.gate_multiplier, self.down_multiplier = float(gate_multiplier), float(down_multiplier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gated = LigerSiLUMulFunction.apply(self.gate_proj(x), self.up_proj(x), self.gate_multiplier)
        return self.down_proj(gated) * self.down_multiplier
