"""Liger Kernel 0.8's per-model-type import paths: ``liger_kernel.transformers.model.<type>.lce_forward``.

There, each model type has a module with its own copy of the causal-LM forward. Here one forward serves
every type (``liger_causal_lm_forward``, the type's options read from ``MODEL_SPECS``), and the modules
under those paths only name it:

* a type we support: ``lce_forward`` is exactly the function that ``apply_liger_kernel_to_<type>()``
  sets as ``XForCausalLM.forward`` (bound, on an instance patched in place), made when first looked up
  (it imports the modeling module). Call it as the reference's: ``lce_forward(model, input_ids=...,
  labels=...)``.
* a type we do not support yet (issue 20 adds model types): ``lce_forward`` is
  ``dispatching_lce_forward``, which runs the forward of the model's own ``config.model_type`` when
  that type is supported and otherwise raises. It does not guess: a fused loss needs to know how the
  type's head makes its logits (FalconH1 multiplies them by ``lm_head_multiplier``, Qwen3-Next adds a
  router loss), and a forward that skipped such a step would train on a silently different loss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def supported_type_getattr(module: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) for ``module`` that makes each of ``names`` (attribute ->
    model type) the fused forward of that model type on first lookup."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        from liger_kernel.transformers.monkey_patch import causal_lm_forward

        return causal_lm_forward(names[name])

    return __getattr__


def dispatching_lce_forward(self: Any, *args: Any, **kwargs: Any) -> Any:
    """The fused-loss forward of ``self``'s model type (``self.config.model_type``), called with the
    arguments of that type's ``XForCausalLM.forward``; NotImplementedError for a type not supported."""
    from liger_kernel.transformers.monkey_patch import MODEL_SPECS, causal_lm_forward

    model_type = getattr(getattr(self, "config", None), "model_type", None)
    spec = MODEL_SPECS.get(model_type)
    if spec is None or not spec.available():
        raise NotImplementedError(
            f"liger_kernel has no fused linear cross entropy forward for model type {model_type!r} "
            f"({type(self).__name__}) yet; supported model types: {', '.join(sorted(MODEL_SPECS))}"
        )
    causal_lm = getattr(spec.modeling(), spec.causal_lm)
    if not isinstance(self, causal_lm):
        raise TypeError(
            f"the fused forward of model type {model_type!r} is {spec.causal_lm}.forward; got a "
            f"{type(self).__name__}"
        )
    return causal_lm_forward(model_type)(self, *args, **kwargs)
