"""Optional dependencies: what needs them says so, by name, when they are missing."""

from __future__ import annotations

import importlib
from types import ModuleType

HYPOTHESIS_HINT = "pip install 'liger-kernel[test]' (or pip install hypothesis)"


def require_hypothesis(feature: str) -> ModuleType:
    """``import hypothesis``, or an ImportError naming ``feature`` and how to install Hypothesis."""
    try:
        return importlib.import_module("hypothesis")
    except ModuleNotFoundError as exc:
        if exc.name != "hypothesis":
            raise
        raise ModuleNotFoundError(
            f"{feature} needs Hypothesis, which is not installed: {HYPOTHESIS_HINT}", name="hypothesis"
        ) from exc
