"""Liger Kernel 0.8's import path for Falcon-H1's fused-loss forward. Falcon-H1 is not a supported model
type yet (issue 20): ``lce_forward`` dispatches on ``config.model_type`` and raises for it (see ``per_type``)."""

from liger_kernel.transformers.model.per_type import dispatching_lce_forward as lce_forward

__all__ = ["lce_forward"]
