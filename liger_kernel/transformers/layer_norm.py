"""LigerLayerNorm: a drop-in for ``torch.nn.LayerNorm`` over the last dim (weight, optional bias)."""

from __future__ import annotations

import torch
from torch import nn

from liger_kernel.ops.layer_norm import layer_norm

_INIT_FNS = ("ones", "zeros")


class LigerLayerNorm(nn.Module):
    """LayerNorm over the last dim: ``y = (x - mean) / sqrt(var + eps) * weight + bias``.

    Numerics follow ``torch.nn.LayerNorm`` (biased variance, fp32 statistics, result in ``x``'s dtype),
    including the gradients of ``weight`` and ``bias``.

    Parameters are named as in ``nn.LayerNorm``: ``weight`` (initialized by ``init_fn``, "ones" or
    "zeros") and ``bias``, a trainable Parameter initialized to zeros whether ``bias`` is True or False
    (as Liger Kernel 0.8's LigerLayerNorm, whose ``bias=False`` also holds a zero bias Parameter; its
    ``bias=True`` draws it from randn, ours starts at zero as ``nn.LayerNorm``'s does). ``bias=None``
    builds it without a bias: the attribute is None, as in ``nn.LayerNorm(..., bias=False)``.

    State dicts: with a bias it loads an ``nn.LayerNorm``'s state dict (default ``bias=True``)
    unchanged, and the reverse. Built with ``bias=None`` it also accepts a state dict holding a
    ``bias`` entry of zeros and drops it, since it changes nothing; a non-zero ``bias`` entry is
    refused with an error rather than silently ignored.

    ``impl``, ``mode`` and ``backend`` (Liger Kernel 0.8's choice among its kernel implementations) are
    accepted and ignored: there is one implementation here.

    The default ``eps`` is 1e-6 (Liger Kernel's); ``nn.LayerNorm``'s is 1e-5, so pass the replaced
    module's ``eps`` when swapping one in.
    ``eps`` is stored as ``variance_epsilon`` (the name Liger Kernel's modules use); ``eps`` reads and
    writes the same value, as in ``nn.LayerNorm``.
    """

    def __init__(
        self,
        hidden_size: int,
        eps: float = 1e-6,
        bias: bool | None = False,
        init_fn: str = "ones",
        impl: str | None = None,
        mode: str | None = None,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        if init_fn not in _INIT_FNS:
            raise ValueError(f"init_fn must be one of {_INIT_FNS}, got {init_fn!r}")
        if hidden_size < 1:
            raise ValueError(f"hidden_size must be positive, got {hidden_size}")
        if eps < 0:
            raise ValueError(f"eps must be non-negative, got {eps}")
        init = torch.ones if init_fn == "ones" else torch.zeros
        self.hidden_size = hidden_size
        self.normalized_shape = (hidden_size,)
        self.weight = nn.Parameter(init(hidden_size))
        if bias is not None:
            self.bias = nn.Parameter(torch.zeros(hidden_size))
        else:
            self.register_parameter("bias", None)
        self.variance_epsilon = eps

    @property
    def eps(self) -> float:
        return self.variance_epsilon

    @eps.setter
    def eps(self, value: float) -> None:
        self.variance_epsilon = value

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return layer_norm(hidden_states, self.weight, self.bias, self.variance_epsilon)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        key = prefix + "bias"
        if self.bias is None and key in state_dict:
            value = state_dict[key]
            if isinstance(value, torch.Tensor) and not value.is_meta and bool((value == 0).all()):
                state_dict.pop(key)  # a zero bias is the same as none
            else:
                error_msgs.append(
                    f"LigerLayerNorm at {prefix or '<root>'!r} was built with bias=None but the state dict "
                    f"has a non-zero {key!r}; build it with bias=True to load this state dict"
                )
                state_dict.pop(key)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return f"{self.hidden_size}, eps={self.variance_epsilon}, bias={self.bias is not None}"
