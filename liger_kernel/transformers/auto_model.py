"""AutoLigerKernelForCausalLM: ``AutoModelForCausalLM`` that returns the model with Liger kernels applied."""

from __future__ import annotations

import os
from typing import Any

from transformers import AutoConfig, AutoModelForCausalLM

from liger_kernel.transformers.monkey_patch import (
    MODEL_SPECS,
    _apply_liger_kernel_to_instance,
    _spec,
)

# Options of any apply_liger_kernel_to_<model_type>; each model type takes the ones it knows.
_LIGER_OPTIONS = frozenset(option for spec in MODEL_SPECS.values() for option in spec.option_defaults())
# from_pretrained arguments that say where the config lives (used to read the model type first).
_CONFIG_LOCATION_KWARGS = (
    "cache_dir",
    "revision",
    "subfolder",
    "token",
    "local_files_only",
    "trust_remote_code",
)


class AutoLigerKernelForCausalLM(AutoModelForCausalLM):
    """Load or build a causal LM of a supported type and patch it in place with Liger kernels.

    Liger options (``rope``, ``swiglu``, ``geglu``, ``rms_norm``, ``cross_entropy``,
    ``fused_linear_cross_entropy``) may be passed with the usual ``from_pretrained`` arguments; the
    ones the model type does not take are ignored. Unsupported model types raise ``ValueError`` before
    any weight is loaded. The model is patched as an instance (see ``monkey_patch``): no class of the
    modeling module is changed, except the RoPE function when ``rope=True``.
    """

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike[str], *model_args: Any, **kwargs: Any
    ) -> Any:
        liger_options = {k: kwargs.pop(k) for k in list(kwargs) if k in _LIGER_OPTIONS}
        config = kwargs.get("config")
        if config is None:
            location = {k: kwargs[k] for k in _CONFIG_LOCATION_KWARGS if k in kwargs}
            config = AutoConfig.from_pretrained(pretrained_model_name_or_path, **location)
        _spec(config.model_type).modeling()  # unsupported or unavailable: an error now, not after loading
        model = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        _apply_liger_kernel_to_instance(model=model, **liger_options)
        return model

    @classmethod
    def from_config(cls, config: Any, **kwargs: Any) -> Any:
        liger_options = {k: kwargs.pop(k) for k in list(kwargs) if k in _LIGER_OPTIONS}
        _spec(config.model_type).modeling()
        model = super().from_config(config, **kwargs)
        _apply_liger_kernel_to_instance(model=model, **liger_options)
        return model


__all__ = ["AutoLigerKernelForCausalLM"]
