"""Lazy exports (PEP 562 ``__getattr__``) of the packages whose imports are costly."""

from __future__ import annotations

import importlib
from typing import Any


def load_export(package: str, module: str, name: str) -> Any:
    """``package.module.name``, imported on first use.

    An AttributeError raised while importing the module (a transformers release that renamed something
    the module reads at import) must not escape a module ``__getattr__``: Python would report it as "no
    attribute" / "cannot import name", hiding the cause. It is re-raised as an ImportError naming both.
    """
    try:
        return getattr(importlib.import_module(f"{package}.{module}"), name)
    except AttributeError as e:
        raise ImportError(f"{package}.{name}: importing {package}.{module} failed: {e}") from e
