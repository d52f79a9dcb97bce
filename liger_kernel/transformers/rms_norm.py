"""LigerRMSNorm: a drop-in for Hugging Face's LlamaRMSNorm (and GemmaRMSNorm with offset=1.0)."""

from __future__ import annotations

import torch
from torch import nn

from liger_kernel.ops.rms_norm import CASTING_MODES, rms_norm_optional_weight

_INIT_FNS = ("ones", "zeros")


def initial_weight(hidden_size: int, casting_mode: str, init_fn: str) -> nn.Parameter:
    """A norm's weight of ``hidden_size`` ones or zeros (``init_fn``), after checking the arguments."""
    if init_fn not in _INIT_FNS:
        raise ValueError(f"init_fn must be one of {_INIT_FNS}, got {init_fn!r}")
    if casting_mode not in CASTING_MODES:
        raise ValueError(f"casting_mode must be one of {sorted(CASTING_MODES)}, got {casting_mode!r}")
    if hidden_size < 1:
        raise ValueError(f"hidden_size must be positive, got {hidden_size}")
    return nn.Parameter((torch.ones if init_fn == "ones" else torch.zeros)(hidden_size))


class LigerRMSNorm(nn.Module):
    """RMSNorm over the last dim: ``y = x / sqrt(mean(x^2) + eps) * (offset + weight)``.

    ``casting_mode`` picks the rounding of the module it replaces: "llama" (LlamaRMSNorm, Mistral,
    Qwen2, Phi-3...), "gemma" (GemmaRMSNorm: use with ``offset=1.0, init_fn="zeros"``) or "none".
    ``in_place`` is accepted for compatibility with Liger Kernel's API; the gradient is always written
    to a fresh buffer, because overwriting the incoming gradient is wrong whenever another op shares it
    (``norm(x) + z`` hands the same gradient tensor to both branches). ``elementwise_affine=False``
    builds it without a weight (``y = x * rstd``; ``weight`` is None), and ``row_mode`` (a kernel choice
    of Liger Kernel 0.8) is accepted and ignored.
    """

    def __init__(
        self,
        hidden_size: int,
        eps: float = 1e-6,
        offset: float = 0.0,
        casting_mode: str = "llama",
        init_fn: str = "ones",
        in_place: bool = True,
        row_mode: bool | None = None,
        elementwise_affine: bool = True,
    ) -> None:
        super().__init__()
        weight = initial_weight(hidden_size, casting_mode, init_fn)  # (checks the arguments either way)
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = weight
        else:
            self.register_parameter("weight", None)
        self.hidden_size = hidden_size
        self.variance_epsilon = eps
        self.offset = offset
        self.casting_mode = casting_mode
        self.in_place = in_place
        self.row_mode = row_mode

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return rms_norm_optional_weight(
            hidden_states, self.weight, self.variance_epsilon, self.offset, self.casting_mode
        )

    def extra_repr(self) -> str:
        return (
            f"{(self.hidden_size,)}, eps={self.variance_epsilon}, offset={self.offset}, "
            f"casting_mode={self.casting_mode!r}"
        )
