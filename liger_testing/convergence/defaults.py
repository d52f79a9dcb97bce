"""Defaults and names of the convergence runner that its command line needs before torch is imported
(``--help`` and argument checks answer at once)."""

from __future__ import annotations

# From measurements (liger_testing/README.md, "Convergence runner"): over the seven built-in models,
# two seeds, 30 float32 and 15 bfloat16 steps, the Liger patch needed a factor of at most 12.3 (float32,
# AdamW's first update amplifying rounding near zero gradients) and 15.6 (bfloat16); planted bugs (eps
# 10x, gradient x 1.01, a bfloat16 intermediate) exceed the band by orders of magnitude at step 0.
DEFAULT_NOISE_FACTOR = 32.0
DEFAULT_FLOOR_ULPS = 16.0

# Accepted dtype spellings -> torch's name for the dtype.
DTYPE_NAMES: dict[str, str] = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "float64": "float64",
    "fp64": "float64",
    "double": "float64",
}


def canonical_dtype_name(text: str) -> str:
    """``"bf16"`` -> ``"bfloat16"`` (any spelling in :data:`DTYPE_NAMES`, ``torch.`` prefix allowed)."""
    try:
        return DTYPE_NAMES[str(text).strip().lower().removeprefix("torch.")]
    except KeyError:
        raise ValueError(f"unsupported dtype {text!r}; use one of {', '.join(sorted(DTYPE_NAMES))}") from None
