"""LigerGEGLUMLP: a drop-in for Hugging Face's GemmaMLP (and Gemma 2 / Gemma 3's)."""

from __future__ import annotations

from typing import Any

from liger_kernel.transformers.glu import LigerGLUMLP, config_size

# Hugging Face activation names (transformers.activations.ACT2FN) that this kernel computes exactly.
# Every tanh name is 0.5 a (1 + tanh(sqrt(2/pi) (a + 0.044715 a^3))) (gelu_fast writes sqrt(2/pi) as
# 0.7978845608, equal in fp32); gelu_10 (clipped) and quick_gelu (sigmoid) are other functions.
_GELU_ACTIVATIONS = {
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_python_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "gelu_accurate": "gelu_tanh",
    "gelu": "gelu",
    "gelu_python": "gelu",
}


def _gelu_field(config: Any) -> str:
    # Gemma 2/3 name the field hidden_activation; Gemma (transformers 5) names it hidden_act.
    if getattr(config, "hidden_activation", None) is not None:
        return "hidden_activation"
    return "hidden_act"


class LigerGEGLUMLP(LigerGLUMLP):
    """``down_proj(gelu(gate_proj(x)) * up_proj(x))`` without biases; loads GemmaMLP's state dict.

    The activation is read from ``config.hidden_activation`` when set (Gemma 2/3), else from
    ``config.hidden_act`` (Gemma), and computes what Hugging Face's ``ACT2FN[name]`` computes:
    the tanh approximation for "gelu_pytorch_tanh" (Gemma's default), "gelu_new", "gelu_fast", ...,
    exact (erf) GELU for "gelu" and "gelu_python".
    """

    def __init__(self, config: Any, intermediate_size: int | None = None) -> None:
        field = _gelu_field(config)
        name = getattr(config, field, None)
        if name not in _GELU_ACTIVATIONS:
            raise ValueError(
                f"LigerGEGLUMLP supports config.{field} in {sorted(_GELU_ACTIVATIONS)}, got {name!r}"
            )
        super().__init__(config, _GELU_ACTIVATIONS[name], False, intermediate_size)


class LigerGEGLUMLPForGemma4(LigerGEGLUMLP):
    """Gemma 4's text MLP, built as ``Gemma4TextMLP(config, layer_idx)``: twice the intermediate size on
    the KV-shared layers (the last ``config.num_kv_shared_layers``) when ``config.use_double_wide_mlp``."""

    def __init__(self, config: Any, layer_idx: int | None = None) -> None:
        intermediate_size = config_size(type(self).__name__, config, "intermediate_size")
        n_shared = getattr(config, "num_kv_shared_layers", 0) or 0
        first_shared = getattr(config, "num_hidden_layers", 0) - n_shared
        if (
            layer_idx is not None
            and getattr(config, "use_double_wide_mlp", False)
            and n_shared > 0
            and layer_idx >= first_shared
        ):
            intermediate_size *= 2
        super().__init__(config, intermediate_size)
        self.layer_idx = layer_idx
