"""SwiGLU: ``silu(a) * b`` and the Llama MLP built on it; the kernels live in ``liger_kernel.ops.glu``.

silu(a) = a * sigmoid(a);  da = dc * b * s * (1 + a * (1 - s)) with s = sigmoid(a),  db = dc * silu(a).
Kept for backward: a and b (silu(a) is recomputed).
"""

from __future__ import annotations

import torch

from liger_kernel.ops.dtensor import elementwise_on_shards, is_dtensor
from liger_kernel.ops.glu import glu, glu_mlp


def swiglu(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``silu(a) * b`` fused in one kernel, differentiable in ``a`` and ``b`` (same shape, dtype, device)."""
    return glu(a, b, "silu")


def swiglu_mlp(
    x: torch.Tensor,
    gate_weight: torch.Tensor,
    up_weight: torch.Tensor,
    down_weight: torch.Tensor,
    gate_bias: torch.Tensor | None = None,
    up_bias: torch.Tensor | None = None,
    down_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``down(silu(gate(x)) * up(x))`` with nn.Linear weight layouts; see ``liger_kernel.ops.glu``."""
    return glu_mlp(x, gate_weight, up_weight, down_weight, gate_bias, up_bias, down_bias, "silu")


class LigerSiLUMulFunction:
    """Liger Kernel 0.8's entry point: ``apply(a, b, gate_multiplier=1.0, down_multiplier=1.0)`` returns
    ``silu(a * gate_multiplier) * b * down_multiplier`` (Falcon-H1's MLP scales), through ``swiglu``;
    on DTensors, through ``swiglu`` of the local shards (``liger_kernel.ops.dtensor``)."""

    @staticmethod
    def apply(
        a: torch.Tensor, b: torch.Tensor, gate_multiplier: float = 1.0, down_multiplier: float = 1.0
    ) -> torch.Tensor:
        gate_multiplier, down_multiplier = float(gate_multiplier), float(down_multiplier)

        def silu_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            c = swiglu(a if gate_multiplier == 1.0 else a * gate_multiplier, b)
            return c if down_multiplier == 1.0 else c * down_multiplier

        return elementwise_on_shards(silu_mul, a, b) if is_dtensor(a, b) else silu_mul(a, b)
