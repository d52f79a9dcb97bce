"""Causal-LM losses computed with Liger kernels, matching Hugging Face's ``ForCausalLMLoss``.

``transformers.loss.loss_utils.ForCausalLMLoss`` (the loss every patched model uses):
    * labels are shifted left by one and padded with ``ignore_index`` at the end, so position t is
      scored against token t + 1 (unless the caller passes ``shift_labels`` already shifted);
    * positions whose target is ``ignore_index`` do not count;
    * reduction is the mean over counted positions, or -- when ``num_items_in_batch`` is given (the
      Trainer passes the number of counted tokens of the whole gradient-accumulation step) -- the sum
      divided by ``num_items_in_batch``.

``liger_for_causal_lm_loss`` is that function with Liger's cross entropy over given logits (the
``cross_entropy=True`` option). ``liger_fused_linear_causal_lm_loss`` computes the same loss from the
last hidden states and the lm_head weight, never materializing the (tokens x vocab) logits (the
``fused_linear_cross_entropy=True`` option); it also applies Gemma 2's final-logit soft-capping
``cap * tanh(logits / cap)`` inside the kernel.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from liger_kernel.transformers.functional import CrossEntropyOutput


@functools.cache
def _hf_slice_logits_to_keep() -> Callable | None:
    """transformers >= 5.2x: the helper the models themselves use to honour ``logits_to_keep``; older
    5.x slices inline (``hidden_states[:, slice(-k, None) or tensor, :]``). Looked up on first use:
    ``transformers.modeling_utils`` takes seconds to import."""
    try:
        from transformers.modeling_utils import slice_logits_to_keep
    except ImportError:
        return None
    return slice_logits_to_keep


def _shifted_targets(
    labels: torch.Tensor | None, shift_labels: torch.Tensor | None, ignore_index: int
) -> torch.Tensor:
    if shift_labels is not None:
        return shift_labels
    if labels is None:
        raise ValueError("the causal-LM loss needs `labels` (or `shift_labels`), got neither")
    return F.pad(labels, (0, 1), value=ignore_index)[..., 1:]


def keep_positions(x: torch.Tensor, logits_to_keep: int | torch.Tensor) -> torch.Tensor:
    """The positions of ``x`` (batch, seq, ...) that the model keeps for ``logits_to_keep``.

    Uses the installed transformers' own rule, so hidden states and targets are selected exactly as the
    unpatched model selects the hidden states it projects to logits.
    """
    if isinstance(logits_to_keep, int) and logits_to_keep == 0:
        return x
    hf_slice = _hf_slice_logits_to_keep()
    if hf_slice is not None:
        return hf_slice(x, logits_to_keep)
    index = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
    return x[:, index]


def _normalize(loss: torch.Tensor, num_items_in_batch: torch.Tensor | int | None) -> torch.Tensor:
    if num_items_in_batch is None:
        return loss
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(loss.device)
    return loss / num_items_in_batch


def liger_for_causal_lm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor | None,
    vocab_size: int,
    num_items_in_batch: torch.Tensor | int | None = None,
    ignore_index: int = -100,
    shift_labels: torch.Tensor | None = None,
    **kwargs,
) -> torch.Tensor:
    """Drop-in for ``ForCausalLMLoss`` (same signature) using ``liger_cross_entropy``.

    The logits are not upcast to fp32 first (Hugging Face does): the kernel computes in fp32 anyway,
    so the fp32 copy of the logits would only cost memory. The gradient goes to a fresh buffer
    (``inplace=False``), not over the logits: the model returns them to the caller.
    """
    from liger_kernel.transformers.functional import liger_cross_entropy

    targets = _shifted_targets(labels, shift_labels, ignore_index)
    logits = logits.reshape(-1, vocab_size)
    targets = targets.reshape(-1).to(logits.device)
    reduction = "sum" if num_items_in_batch is not None else "mean"
    loss = liger_cross_entropy(logits, targets, ignore_index=ignore_index, reduction=reduction, inplace=False)
    return _normalize(loss, num_items_in_batch)


def liger_fused_linear_causal_lm_loss(
    hidden_states: torch.Tensor,
    lm_head_weight: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    lm_head_bias: torch.Tensor | None = None,
    shift_labels: torch.Tensor | None = None,
    logits_to_keep: int | torch.Tensor = 0,
    num_items_in_batch: torch.Tensor | int | None = None,
    ignore_index: int = -100,
    final_logit_softcapping: float | None = None,
    return_token_accuracy: bool = False,
    return_predicted_tokens: bool = False,
    **kwargs,
) -> torch.Tensor | CrossEntropyOutput:
    """``ForCausalLMLoss(lm_head(keep(hidden_states)), labels)`` without materializing the logits.

    hidden_states: (batch, seq, hidden) last hidden states (after the final norm).
    lm_head_weight: (vocab, hidden); lm_head_bias: (vocab,) or None.
    labels: (batch, seq) token ids, shifted here; or ``shift_labels`` already shifted.
    logits_to_keep: as in the models' forward. The same positions are taken from the hidden states and
        from the shifted targets, so each kept position is scored against its next token; targets that
        already have the kept length (labels sliced by the caller) are used as they are, which is what
        Hugging Face does with logits of that length.
    return_token_accuracy / return_predicted_tokens: return a ``CrossEntropyOutput`` (the loss, and the
        fraction of counted targets that are the argmax / the argmax per position, -1 where ignored).
    Extra keyword arguments (the model's other loss kwargs) are ignored, as ``ForCausalLMLoss`` does.
    """
    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

    targets = _shifted_targets(labels, shift_labels, ignore_index)
    if not (isinstance(logits_to_keep, int) and logits_to_keep == 0):
        if targets.shape[-1] == hidden_states.shape[1]:
            targets = keep_positions(targets.unsqueeze(-1), logits_to_keep).squeeze(-1)
        hidden_states = keep_positions(hidden_states, logits_to_keep)
    hidden = hidden_states.reshape(-1, hidden_states.shape[-1])
    targets = targets.reshape(-1).to(hidden.device)
    if targets.shape[0] != hidden.shape[0]:
        raise ValueError(
            f"labels select {targets.shape[0]} target tokens but the model kept {hidden.shape[0]} positions "
            f"(logits_to_keep={logits_to_keep!r}); pass labels of the input's sequence length"
        )
    reduction = "sum" if num_items_in_batch is not None else "mean"
    result = liger_fused_linear_cross_entropy(
        hidden,
        lm_head_weight,
        targets,
        bias=lm_head_bias,
        ignore_index=ignore_index,
        reduction=reduction,
        softcap=final_logit_softcapping,
        return_token_accuracy=return_token_accuracy,
        return_predicted_tokens=return_predicted_tokens,
    )
    if isinstance(result, torch.Tensor):
        return _normalize(result, num_items_in_batch)
    return dataclasses.replace(result, loss=_normalize(result.loss, num_items_in_batch))


def LigerForCausalLMLoss(  # noqa: N802 (Liger Kernel 0.8's name)
    hidden_states: torch.Tensor,
    lm_head_weight: torch.Tensor,
    labels: torch.Tensor | None,
    hidden_size: int,
    num_items_in_batch: torch.Tensor | int | None = None,
    ignore_index: int = -100,
    shift_labels: torch.Tensor | None = None,
    final_logit_softcapping: float | None = None,
    return_token_accuracy: bool = False,
    return_predicted_tokens: bool = False,
    **kwargs,
) -> torch.Tensor | CrossEntropyOutput:
    """Liger Kernel 0.8's fused causal-LM loss, imported by custom model forwards:
    ``liger_fused_linear_causal_lm_loss`` of ``hidden_states`` viewed as (tokens, ``hidden_size``). The loss,
    or a ``CrossEntropyOutput`` when ``return_token_accuracy`` / ``return_predicted_tokens`` is set (read
    either with ``unpack_cross_entropy_result``). Other keyword arguments are ignored."""
    if hidden_states.shape[-1] != hidden_size:
        raise ValueError(
            f"hidden_size is {hidden_size} but hidden_states has shape {tuple(hidden_states.shape)}"
        )
    return liger_fused_linear_causal_lm_loss(
        hidden_states.reshape(-1, hidden_size),
        lm_head_weight,
        labels,
        shift_labels=shift_labels,
        num_items_in_batch=num_items_in_batch,
        ignore_index=ignore_index,
        final_logit_softcapping=final_logit_softcapping,
        return_token_accuracy=return_token_accuracy,
        return_predicted_tokens=return_predicted_tokens,
    )


def unpack_cross_entropy_result(
    result: torch.Tensor | CrossEntropyOutput | tuple,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """(loss, z_loss, token_accuracy, predicted_tokens) of a loss result: a tensor (the loss alone), a
    ``CrossEntropyOutput``, or a tuple starting with the loss (missing fields are None)."""
    from liger_kernel.transformers.functional import CrossEntropyOutput

    if isinstance(result, CrossEntropyOutput):
        return result.loss, result.z_loss, result.token_accuracy, result.predicted_tokens
    if isinstance(result, torch.Tensor):
        return result, None, None, None
    if isinstance(result, tuple) and 1 <= len(result) <= 4:
        return (*result, *(None,) * (4 - len(result)))
    raise TypeError(f"expected a loss tensor, a CrossEntropyOutput or a tuple of 1 to 4; got {type(result)}")


__all__ = [
    "LigerForCausalLMLoss",
    "keep_positions",
    "liger_for_causal_lm_loss",
    "liger_fused_linear_causal_lm_loss",
    "unpack_cross_entropy_result",
]
