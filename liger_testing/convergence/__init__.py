"""Convergence runner: train patched and unpatched tiny Hugging Face models side by side and compare.

``run_convergence(model="llama", steps=30)`` trains three arms from identical weights on identical
batches of the shipped dataset: the unpatched model, the patched model (same dtype) and the unpatched
model in float64, whose distance from the unpatched arm measures the dtype's own rounding noise. It
returns a :class:`ConvergenceResult` (``.passed``, ``.first_divergence()``, ``.worst()``,
``.assert_converged()``); :mod:`~liger_testing.convergence.report` prints, writes JSON and plots it.
``python -m liger_testing.converge --model llama`` is the command line.

Nothing here imports ``liger_kernel``: the built-in specs name their patch and undo functions as
``"liger_kernel.transformers:apply_liger_kernel_to_<model>"`` strings, imported only when a run uses
them; :func:`register_spec` adds a model with any other patch and undo callables.
"""

from __future__ import annotations

import importlib
from typing import Any

# Names load on first use (PEP 562): ``python -m liger_testing.converge --help`` answers before
# torch and transformers are imported.
_SUBMODULE_OF: dict[str, str] = {
    **dict.fromkeys(("Dataset", "load_dataset"), "data"),
    **dict.fromkeys(("format_report", "plot_result", "result_to_dict", "write_json"), "report"),
    **dict.fromkeys(
        (
            "DEFAULT_FLOOR_ULPS",
            "DEFAULT_NOISE_FACTOR",
            "ConvergenceResult",
            "ConvergenceSetupError",
            "RunConfig",
            "Series",
            "StepRecord",
            "run_convergence",
        ),
        "runner",
    ),
    **dict.fromkeys(
        ("ModelSpec", "available_specs", "get_spec", "register_spec", "resolve_callable", "tiny_config"),
        "specs",
    ),
}

__all__ = list(_SUBMODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _SUBMODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_SUBMODULE_OF[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULE_OF))
