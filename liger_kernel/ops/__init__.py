"""Triton kernels (one per file) and, under Liger Kernel 0.8's names, their autograd entry points.

``from liger_kernel.ops import LigerRMSNormFunction`` (and the other names in ``__all__``) works as it
does there; each name is loaded from its op module on first use, so importing one op module (or
``liger_kernel.ops.utils``) does not import every kernel.
"""

from __future__ import annotations

from typing import Any

from liger_kernel._lazy import load_export

_FUNCTION_MODULES = {
    "LigerRMSNormFunction": "rms_norm",
    "LigerLayerNormFunction": "layer_norm",
    "LigerRopeFunction": "rope",
    "LigerSiLUMulFunction": "swiglu",
    "LigerGELUMulFunction": "geglu",
    "LigerCrossEntropyFunction": "cross_entropy",
    "LigerFusedLinearCrossEntropyFunction": "fused_linear_cross_entropy",
    "LigerLlama4RopeFunction": "llama4_rope",
    "LigerFusedAddRMSNormFunction": "fused_add_rms_norm",
}


def __getattr__(name: str) -> Any:
    if name in _FUNCTION_MODULES:
        return load_export(__name__, _FUNCTION_MODULES[name], name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_FUNCTION_MODULES])


__all__ = list(_FUNCTION_MODULES)
