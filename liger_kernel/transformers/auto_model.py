"""AutoLigerKernelForCausalLM: ``AutoModelForCausalLM`` that builds the model with Liger kernels applied."""

from __future__ import annotations

import inspect
import logging
import os
from typing import Any

from transformers import AutoConfig, AutoModelForCausalLM

from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN, _apply_liger_kernel

logger = logging.getLogger(__name__)

# from_pretrained arguments that say where the config lives (used to read the model type first).
_CONFIG_LOCATION_KWARGS = (
    "cache_dir",
    "revision",
    "subfolder",
    "token",
    "local_files_only",
    "trust_remote_code",
)


def _option_names(apply_fn: Any) -> set[str]:
    return set(inspect.signature(apply_fn).parameters) - {"model"}


def _split_liger_kwargs(model_type: str | None, kwargs: dict[str, Any]) -> tuple[dict, dict]:
    """(the options of ``apply_liger_kernel_to_<model_type>``, everything else for Hugging Face).

    A Liger option that this model type does not take (``geglu`` for Llama) is dropped rather than
    handed to Hugging Face, which would refuse it.
    """
    all_options = set().union(*map(_option_names, MODEL_TYPE_TO_APPLY_LIGER_FN.values()))
    apply_fn = MODEL_TYPE_TO_APPLY_LIGER_FN.get(model_type) if model_type else None
    rest = {k: v for k, v in kwargs.items() if k not in all_options}
    if apply_fn is None:
        logger.warning(
            "liger_kernel: no Liger kernels for model type %r; loading it unpatched (supported: %s)",
            model_type,
            ", ".join(sorted(MODEL_TYPE_TO_APPLY_LIGER_FN)),
        )
        return {}, rest
    accepted = _option_names(apply_fn)
    return {k: v for k, v in kwargs.items() if k in accepted}, {
        k: v for k, v in rest.items() if k not in accepted
    }


def _built_model_type(config: Any) -> str | None:
    """The model type to patch for ``config``: that of the model ``AutoModelForCausalLM`` builds from it.

    Usually ``config.model_type``; but an image-text config whose causal-LM class takes only its text
    config builds a text model of another type (Llama 4: a ``llama4`` config builds Llama4ForCausalLM,
    whose config is ``llama4_text``), whose loss forward is the one to patch.
    """
    model_type = getattr(config, "model_type", None)
    try:
        model_class = AutoModelForCausalLM._model_mapping[type(config)]
    except Exception:  # not in the mapping (remote code...), or a transformers without this attribute
        return model_type
    built = getattr(getattr(model_class, "config_class", None), "model_type", None)
    return built if built in MODEL_TYPE_TO_APPLY_LIGER_FN else model_type


class AutoLigerKernelForCausalLM(AutoModelForCausalLM):
    """Load or build a causal LM with Liger kernels, as Liger Kernel 0.8 does: the model type is read
    from the config, ``apply_liger_kernel_to_<model_type>(**options)`` patches the modeling module's
    classes (so every model of that type built afterwards in this process is patched too, until
    ``revert_liger_kernel_to_<model_type>()`` / ``unpatch(model_type)``), then the model is loaded.

    Liger options (``rope``, ``swiglu``, ``geglu``, ``rms_norm``, ``cross_entropy``,
    ``fused_linear_cross_entropy``) may be passed with the usual ``from_pretrained`` arguments; the ones
    the model type takes are forwarded to its function, the other Liger options are dropped, everything
    else goes to Hugging Face. A model type without Liger kernels loads unpatched, with a warning.
    """

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike[str], *model_args: Any, **kwargs: Any
    ) -> Any:
        config = kwargs.get("config")
        if config is None or isinstance(config, (str, os.PathLike)):
            location = {k: kwargs[k] for k in _CONFIG_LOCATION_KWARGS if k in kwargs}
            config = AutoConfig.from_pretrained(config or pretrained_model_name_or_path, **location)
        model_type = _built_model_type(config)
        liger_options, kwargs = _split_liger_kwargs(model_type, kwargs)
        _apply_liger_kernel(model_type, **liger_options)
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    @classmethod
    def from_config(cls, config: Any, **kwargs: Any) -> Any:
        model_type = _built_model_type(config)
        liger_options, kwargs = _split_liger_kwargs(model_type, kwargs)
        _apply_liger_kernel(model_type, **liger_options)
        return super().from_config(config, **kwargs)


__all__ = ["AutoLigerKernelForCausalLM"]
