"""liger_testing: a toolkit to test Triton (and other) kernels against PyTorch references.

Independent of ``liger_kernel``: downstream projects use it to validate their own kernels.

Names load on first use (PEP 562), so ``import liger_testing`` is cheap and needs neither torch
loaded up front nor Hypothesis at all: only ``strategies`` and ``profiles`` need Hypothesis (the
``test`` extra), and they say so by name when it is missing.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

# public name -> (submodule, attribute); attribute None: the submodule itself
_EXPORTS: dict[str, tuple[str, str | None]] = {
    "assert_close": ("assertions", "assert_close"),
    "assert_close_to_reference": ("assertions", "assert_close_to_reference"),
    "default_floor": ("assertions", "default_floor"),
    "assert_modules_equivalent": ("modules", "assert_modules_equivalent"),
    "bounds_checked": ("bounds", "bounds_checked"),
    "tolerances": ("tolerances", "tolerances"),
    "Tolerance": ("tolerances", "Tolerance"),
    "set_interpreter_if_no_gpu": ("device", "set_interpreter_if_no_gpu"),
    "strategies": ("strategies", None),
    "profiles": ("profiles", None),
}

__all__ = list(_EXPORTS)

# ``tolerances`` names both a submodule and the function exported from it. Importing a submodule binds
# it on its package, which would hide the function; the function wins, as it did when this file
# imported it eagerly (``import liger_testing.tolerances`` still reaches the module).
_FUNCTION_OVER_SUBMODULE = frozenset(
    name for name, (module, attribute) in _EXPORTS.items() if name == module and attribute is not None
)


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        if name in _FUNCTION_OVER_SUBMODULE and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module_name, attribute = _EXPORTS[name]
    module = importlib.import_module(f"{__name__}.{module_name}")
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
