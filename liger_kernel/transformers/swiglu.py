"""LigerSwiGLUMLP: a drop-in for Hugging Face's LlamaMLP (Mistral, Qwen2, ... share it)."""

from __future__ import annotations

from typing import Any

from liger_kernel.transformers.glu import LigerGLUMLP

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
