"""One causal-LM forward for every patched model: Hugging Face's, with the loss fused into the lm_head.

``liger_causal_lm_forward(original)`` wraps a model class's own ``XForCausalLM.forward``:

* when logits are needed it calls the original forward unchanged (generation, eval, no labels), so
  outputs, caches and ``logits_to_keep`` behave exactly as in the unpatched model;
* when logits are skipped it runs the base model, then computes the loss with
  ``liger_fused_linear_causal_lm_loss`` from the last hidden states and the lm_head weight, never
  materializing the (tokens x vocab) logits, and returns ``logits=None``.

Logits are skipped when ``skip_logits`` (an extra keyword the Trainer passes in loss-only evaluation)
is True; by default (``skip_logits=None``) they are skipped exactly when the model is training and has
labels (``labels`` or ``shift_labels``). In eval mode a forward with labels therefore returns logits
and Hugging Face's loss; pass ``skip_logits=True`` to get the fused loss without logits there too.

Model-specific parts are parameters, read from the patch table: the config attribute holding the
final-logit soft-cap (Gemma 2's ``final_logit_softcapping``), the one the logits are divided by
(Granite's ``logits_scaling``: the hidden states are divided instead, the same logits before rounding),
whether the base model takes the labels too (Gemma 3's multimodal model), where the text decoder
sits when it is not the base model (Llama 4), the image arguments that send a batch to the original
forward (Llama 4's image-text model, whose image merge is inside its forward) and, for
mixture-of-experts models, the modeling module's load-balancing loss (added as
``router_aux_loss_coef * aux_loss`` like the original).
The wrapper has the original's name, docstring and signature (``__signature__``) but not its source:
``inspect.getsource`` reads the wrapper's; ``__liger_original__`` is the wrapped forward.
The argument names of the original forward (``cache`` in newer 5.x, ``past_key_values`` in older)
are read from its signature, so the wrapper follows whichever version is installed.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING

from liger_kernel.transformers.model.loss_utils import liger_fused_linear_causal_lm_loss

if TYPE_CHECKING:  # transformers is imported when a forward is first built, not with this module
    from transformers.utils import ModelOutput

# Fields of the base model's output that the causal-LM output does not copy over.
_NOT_COPIED = frozenset({"loss", "logits", "aux_loss", "last_hidden_state"})


def _output_class(signature: inspect.Signature) -> type[ModelOutput]:
    from transformers.modeling_outputs import CausalLMOutputWithPast
    from transformers.utils import ModelOutput

    annotation = signature.return_annotation
    if isinstance(annotation, type) and issubclass(annotation, ModelOutput):
        return annotation
    return CausalLMOutputWithPast


def liger_causal_lm_forward(
    original: Callable,
    *,
    logit_softcap_attr: str | None = None,
    load_balancing_loss: Callable | None = None,
    logits_divisor_attr: str | None = None,
    base_takes_labels: bool = False,
    decoder: str | None = None,
    multimodal_args: tuple[str, ...] = (),
) -> Callable:
    """Wrap ``original`` (an ``XForCausalLM.forward``) so that training with labels uses the fused loss.

    logit_softcap_attr: config attribute with the final-logit soft-cap (None: the model has none).
    load_balancing_loss: the modeling module's ``load_balancing_loss_func`` for MoE models (None: dense).
    logits_divisor_attr: config attribute the original divides the logits by (None: no division).
    base_takes_labels: pass ``labels`` to the base model as well, as the original does.
    decoder: dotted attribute path of the model giving the last hidden states (None: the base model).
    multimodal_args: arguments with which the original runs instead (logits materialized, its loss);
        given as None they are dropped, since the decoder does not take them.
    """
    signature = inspect.signature(original)
    params = list(signature.parameters.values())[1:]  # drop self
    positional = [
        p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]  # order of the original's positional arguments (input_ids, attention_mask, ...)
    output_cls = _output_class(signature)
    output_fields = {f.name for f in dataclasses.fields(output_cls)}

    def fused_forward(self, arguments: dict) -> ModelOutput | tuple:
        labels = arguments.pop("labels", None)
        logits_to_keep = arguments.pop("logits_to_keep", 0)
        return_dict = arguments.pop("return_dict", None)
        if return_dict is None:
            return_dict = getattr(self.config, "return_dict", True)
        if load_balancing_loss is not None and arguments.get("output_router_logits") is None:
            arguments["output_router_logits"] = self.config.output_router_logits

        # The base model gets every other argument, the loss kwargs included, as the original passes them.
        base_arguments = {**arguments, "labels": labels} if base_takes_labels else arguments
        if decoder is None:
            outputs = getattr(self, self.base_model_prefix)(**base_arguments)
        else:
            outputs = functools.reduce(getattr, decoder.split("."), self)(**base_arguments)
        head = self.get_output_embeddings()
        softcap = getattr(self.config, logit_softcap_attr, None) if logit_softcap_attr else None
        hidden_states = outputs.last_hidden_state
        if logits_divisor_attr is not None:
            hidden_states = hidden_states / getattr(self.config, logits_divisor_attr)
        loss = liger_fused_linear_causal_lm_loss(
            hidden_states,
            head.weight,
            labels,
            lm_head_bias=head.bias,
            logits_to_keep=logits_to_keep,
            final_logit_softcapping=softcap,
            **arguments,
        )

        extra = {}
        if load_balancing_loss is not None and arguments["output_router_logits"]:
            aux_loss = load_balancing_loss(
                outputs.router_logits,
                self.num_experts,
                self.num_experts_per_tok,
                arguments.get("attention_mask"),
            )
            loss = loss + self.router_aux_loss_coef * aux_loss.to(loss.device)
            extra["aux_loss"] = aux_loss
        for name, value in outputs.items():
            if name in output_fields and name not in _NOT_COPIED:
                extra[name] = value
        output = output_cls(loss=loss, logits=None, **extra)
        return output if return_dict else output.to_tuple()

    @functools.wraps(original)
    def forward(self, *args, skip_logits: bool | None = None, **kwargs):
        if len(args) > len(positional):
            raise TypeError(
                f"forward() takes {len(positional)} positional arguments but {len(args)} were given"
            )
        arguments = dict(zip(positional, args))
        for name in arguments.keys() & kwargs.keys():
            raise TypeError(f"forward() got multiple values for argument {name!r}")
        arguments.update(kwargs)
        has_targets = arguments.get("labels") is not None or arguments.get("shift_labels") is not None
        if skip_logits is None:
            skip_logits = self.training and has_targets
        if not skip_logits or any(arguments.get(name) is not None for name in multimodal_args):
            return original(self, *args, **kwargs)
        for name in multimodal_args:
            arguments.pop(name, None)
        if not has_targets:
            raise ValueError(
                "skip_logits=True needs labels (or shift_labels): without logits the forward returns only "
                "the loss, and there is no loss without labels"
            )
        return fused_forward(self, arguments)

    # functools.wraps links the original as __wrapped__, through which inspect.getsource would read
    # Hugging Face's code: the patched forward shows its own source (what Liger Kernel 0.8's tests and
    # users compare against ``liger_kernel.transformers.model.<type>.lce_forward``) and keeps the
    # original's signature (which the Trainer and generate read to pick the inputs they pass).
    del forward.__wrapped__
    forward.__signature__ = signature
    forward.__liger_original__ = original
    return forward


def is_liger_forward(fn: Callable) -> bool:
    return getattr(getattr(fn, "__func__", fn), "__liger_original__", None) is not None


__all__ = ["liger_causal_lm_forward", "is_liger_forward"]
