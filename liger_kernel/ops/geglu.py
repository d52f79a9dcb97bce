"""GeGLU: ``gelu(a) * b`` and the Gemma MLP built on it; the kernels live in ``liger_kernel.ops.glu``.

approximate="tanh": gelu(a) = 0.5 a (1 + tanh(sqrt(2/pi) (a + 0.044715 a^3)))   (Gemma's gelu_pytorch_tanh)
approximate="none": gelu(a) = 0.5 a (1 + erf(a / sqrt(2)))                       (exact GELU)
da = dc * b * gelu'(a),  db = dc * gelu(a).  Kept for backward: a and b (gelu(a) is recomputed).
"""

from __future__ import annotations

import torch

from liger_kernel.ops.glu import glu, glu_mlp

_APPROXIMATIONS = {"tanh": "gelu_tanh", "none": "gelu"}


def gelu_activation(approximate: str) -> str:
    """The ``liger_kernel.ops.glu`` activation name for ``approximate`` ("tanh" or "none", as in F.gelu)."""
    if approximate not in _APPROXIMATIONS:
        raise ValueError(f"approximate must be one of {sorted(_APPROXIMATIONS)}, got {approximate!r}")
    return _APPROXIMATIONS[approximate]


def geglu(a: torch.Tensor, b: torch.Tensor, approximate: str = "tanh") -> torch.Tensor:
    """``gelu(a) * b`` fused in one kernel, differentiable in ``a`` and ``b`` (same shape, dtype, device)."""
    return glu(a, b, gelu_activation(approximate))


def geglu_mlp(
    x: torch.Tensor,
    gate_weight: torch.Tensor,
    up_weight: torch.Tensor,
    down_weight: torch.Tensor,
    gate_bias: torch.Tensor | None = None,
    up_bias: torch.Tensor | None = None,
    down_bias: torch.Tensor | None = None,
    approximate: str = "tanh",
) -> torch.Tensor:
    """``down(gelu(gate(x)) * up(x))`` with nn.Linear weight layouts; see ``liger_kernel.ops.glu``."""
    activation = gelu_activation(approximate)
    return glu_mlp(x, gate_weight, up_weight, down_weight, gate_bias, up_bias, down_bias, activation)


class LigerGELUMulFunction:
    """Liger Kernel 0.8's entry point: ``apply(a, b)`` is ``geglu(a, b)`` (tanh approximation)."""

    @staticmethod
    def apply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return geglu(a, b)
