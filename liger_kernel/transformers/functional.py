"""Functional API: plain functions over tensors, differentiable, usable under torch.compile."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields

import torch

from liger_kernel.ops.cross_entropy import cross_entropy_with_stats
from liger_kernel.ops.fused_linear_cross_entropy import fused_linear_cross_entropy_with_stats
from liger_kernel.ops.geglu import geglu
from liger_kernel.ops.layer_norm import layer_norm
from liger_kernel.ops.llama4_rope import llama4_rope
from liger_kernel.ops.rms_norm import rms_norm_optional_weight
from liger_kernel.ops.rope import rope_partial
from liger_kernel.ops.swiglu import swiglu


def liger_rms_norm(
    X: torch.Tensor,
    W: torch.Tensor | None,
    eps: float = 1e-6,
    offset: float = 0.0,
    casting_mode: str = "llama",
    in_place: bool = True,
) -> torch.Tensor:
    """RMSNorm of ``X`` over its last dim with weight ``W``; see ``LigerRMSNorm`` for the options.

    ``W=None`` means no weight (``y = X * rstd``). ``in_place`` is accepted for API compatibility and
    ignored (see ``LigerRMSNorm``).
    """
    return rms_norm_optional_weight(X, W, eps, offset, casting_mode)


def liger_layer_norm(
    X: torch.Tensor, W: torch.Tensor, B: torch.Tensor | None, eps: float = 1e-6
) -> torch.Tensor:
    """LayerNorm of ``X`` over its last dim with weight ``W`` and bias ``B`` (or None); see ``LigerLayerNorm``."""
    return layer_norm(X, W, B, eps)


@dataclass
class CrossEntropyOutput:
    """What the cross-entropy losses return when any of ``return_z_loss``, ``return_token_accuracy``,
    ``return_predicted_tokens`` is set (Liger Kernel 0.8's type); the fields not asked for are None.

    Iterating yields ``loss`` and then the fields that are not None, so ``loss, z_loss = ...`` (the
    tuple this package returned for ``return_z_loss=True`` before) keeps working.
    """

    loss: torch.Tensor
    z_loss: torch.Tensor | None = None
    token_accuracy: torch.Tensor | None = None
    predicted_tokens: torch.Tensor | None = None

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter([v for f in fields(self) if (v := getattr(self, f.name)) is not None])


def cross_entropy_output(
    outputs: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None],
) -> torch.Tensor | CrossEntropyOutput:
    """The loss alone when nothing else was asked for (all None), else a ``CrossEntropyOutput``."""
    loss, *extra = outputs
    return loss if all(e is None for e in extra) else CrossEntropyOutput(loss, *extra)


def liger_cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    lse_square_scale: float = 0.0,
    softcap: float | None = None,
    return_z_loss: bool = False,
    return_token_accuracy: bool = False,
    return_predicted_tokens: bool = False,
    *,
    inplace: bool | None = None,
) -> torch.Tensor | CrossEntropyOutput:
    """``torch.nn.functional.cross_entropy`` for class-index targets, plus z-loss and softcap.

    See ``LigerCrossEntropyLoss`` for the options, and for the gradient written over ``input``.
    ``size_average`` and ``reduce`` are torch's deprecated options, mapped to ``reduction`` as torch does.
    Returns the loss, or a ``CrossEntropyOutput`` when any ``return_*`` option is set.
    """
    if size_average is not None or reduce is not None:
        reduction = torch.nn._reduction.legacy_get_string(size_average, reduce)
    return cross_entropy_output(
        cross_entropy_with_stats(
            input, target, weight, ignore_index, lse_square_scale, label_smoothing, reduction, softcap,
            return_z_loss, return_token_accuracy, return_predicted_tokens, inplace,
        )
    )  # fmt: skip


def liger_fused_linear_cross_entropy(
    input: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    bias: torch.Tensor | None = None,
    ce_weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    lse_square_scale: float = 0.0,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    softcap: float | None = None,
    return_z_loss: bool = False,
    accum_dtype: torch.dtype | None = None,
    use_token_scaling: bool = False,
    return_token_accuracy: bool = False,
    return_predicted_tokens: bool = False,
    chunk_mem_const: int = 1,
    *,
    chunk_size: int | None = None,
    chunk_budget_bytes: int | None = None,
) -> torch.Tensor | CrossEntropyOutput:
    """Cross entropy of ``input @ weight.T + bias`` against ``target`` without materializing the logits.

    See ``LigerFusedLinearCrossEntropyLoss`` and
    ``liger_kernel.ops.fused_linear_cross_entropy.fused_linear_cross_entropy_with_stats`` for the options;
    ``chunk_mem_const`` (a chunking knob of Liger Kernel 0.8) is accepted and ignored, ``chunk_size``
    sets the rows per chunk (``chunk_budget_bytes``: the memory budget of the default chunk). Returns the loss, or a ``CrossEntropyOutput`` when any ``return_*`` is set.
    """
    return cross_entropy_output(
        fused_linear_cross_entropy_with_stats(
            input, weight, target, bias, ce_weight, ignore_index, lse_square_scale, label_smoothing, reduction,
            softcap, return_z_loss, accum_dtype, use_token_scaling, return_token_accuracy, return_predicted_tokens,
            chunk_size=chunk_size, chunk_budget_bytes=chunk_budget_bytes,
        )
    )  # fmt: skip


# Where an op already has the public signature (Liger Kernel's functional API), the name is the op.
liger_rope = rope_partial
liger_swiglu = swiglu
liger_geglu = geglu
liger_llama4_rope = llama4_rope  # Hugging Face's apply_rotary_emb(xq, xk, freqs_cis) of Llama 4


__all__ = ["liger_geglu", "liger_swiglu", "liger_layer_norm", "liger_rope", "liger_rms_norm"]
__all__ += ["liger_cross_entropy", "liger_fused_linear_cross_entropy", "CrossEntropyOutput"]
__all__ += ["liger_llama4_rope"]


# --- distillation losses (logits or hidden states in) -------------------------------------------------

from liger_kernel.ops.fused_linear_jsd import fused_linear_jsd  # noqa: E402
from liger_kernel.ops.jsd import jsd  # noqa: E402
from liger_kernel.ops.kl_div import kl_div  # noqa: E402
from liger_kernel.ops.tvd import tvd  # noqa: E402


def liger_kl_div(
    input: torch.Tensor,
    target: torch.Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    log_target: bool = False,
    eps: float = 1e-10,
) -> torch.Tensor:
    """``torch.nn.functional.kl_div`` (see ``LigerKLDIVLoss``); ``size_average`` and ``reduce`` are
    torch's deprecated options, mapped to ``reduction`` as torch does."""
    if size_average is not None or reduce is not None:
        reduction = torch.nn._reduction.legacy_get_string(size_average, reduce)
    return kl_div(input, target, reduction, log_target, eps)


def liger_jsd(
    input: torch.Tensor,
    target: torch.Tensor,
    shift_labels: torch.Tensor | None = None,
    beta: float = 0.5,
    ignore_index: int = -100,
) -> torch.Tensor:
    """Generalized JSD of the student's log-probs ``input`` and the teacher's ``target``; see ``LigerJSD``."""
    return jsd(input, target, shift_labels, beta, ignore_index)


def liger_tvd(
    input: torch.Tensor,
    target: torch.Tensor,
    shift_labels: torch.Tensor | None = None,
    reduction: str = "mean",
    ignore_index: int = -100,
) -> torch.Tensor:
    """Total variation distance of probabilities ``input`` and ``target``; see ``LigerTVDLoss``."""
    return tvd(input, target, shift_labels, reduction, ignore_index)


liger_fused_linear_jsd = fused_linear_jsd

__all__ += ["liger_kl_div", "liger_jsd", "liger_tvd", "liger_fused_linear_jsd"]


from liger_kernel.ops.fused_add_rms_norm import fused_add_rms_norm  # noqa: E402


def liger_fused_add_rms_norm(
    X: torch.Tensor,
    R: torch.Tensor,
    W: torch.Tensor,
    eps: float,
    offset: float = 0.0,
    casting_mode: str = "llama",
    in_place: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(RMSNorm(X + R), X + R)``; see ``LigerFusedAddRMSNorm`` for the options (``in_place`` is accepted
    for API compatibility and ignored)."""
    return fused_add_rms_norm(X, R, W, eps, offset, casting_mode)
