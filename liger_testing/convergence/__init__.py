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

from liger_testing.convergence.data import Dataset, load_dataset
from liger_testing.convergence.report import format_report, plot_result, result_to_dict, write_json
from liger_testing.convergence.runner import (
    DEFAULT_FLOOR_ULPS,
    DEFAULT_NOISE_FACTOR,
    ConvergenceResult,
    ConvergenceSetupError,
    RunConfig,
    Series,
    StepRecord,
    run_convergence,
)
from liger_testing.convergence.specs import (
    ModelSpec,
    available_specs,
    get_spec,
    register_spec,
    resolve_callable,
    tiny_config,
)

__all__ = [
    "run_convergence",
    "RunConfig",
    "ConvergenceResult",
    "ConvergenceSetupError",
    "Series",
    "StepRecord",
    "DEFAULT_NOISE_FACTOR",
    "DEFAULT_FLOOR_ULPS",
    "ModelSpec",
    "register_spec",
    "get_spec",
    "available_specs",
    "resolve_callable",
    "tiny_config",
    "Dataset",
    "load_dataset",
    "format_report",
    "write_json",
    "plot_result",
    "result_to_dict",
]
