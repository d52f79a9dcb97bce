"""Functional API: plain functions over tensors, differentiable, usable under torch.compile."""

from __future__ import annotations

import torch

from liger_kernel.ops.cross_entropy import cross_entropy
from liger_kernel.ops.fused_linear_cross_entropy import fused_linear_cross_entropy
from liger_kernel.ops.geglu import geglu
from liger_kernel.ops.layer_norm import layer_norm
from liger_kernel.ops.rms_norm import rms_norm
from liger_kernel.ops.rope import rope
from liger_kernel.ops.swiglu import swiglu


def liger_rms_norm(
    X: torch.Tensor,
    W: torch.Tensor,
    eps: float = 1e-6,
    offset: float = 0.0,
    casting_mode: str = "llama",
    in_place: bool = True,
) -> torch.Tensor:
    """RMSNorm of ``X`` over its last dim with weight ``W``; see ``LigerRMSNorm`` for the options.

    ``in_place`` is accepted for API compatibility and ignored (see ``LigerRMSNorm``).
    """
    return rms_norm(X, W, eps, offset, casting_mode)


def liger_layer_norm(
    X: torch.Tensor, W: torch.Tensor, B: torch.Tensor | None, eps: float = 1e-6
) -> torch.Tensor:
    """LayerNorm of ``X`` over its last dim with weight ``W`` and bias ``B`` (or None); see ``LigerLayerNorm``."""
    return layer_norm(X, W, B, eps)


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
    *,
    inplace: bool | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``torch.nn.functional.cross_entropy`` for class-index targets, plus z-loss and softcap.

    See ``LigerCrossEntropyLoss`` for the options, and for the gradient written over ``input``.
    ``size_average`` and ``reduce`` are torch's deprecated options, mapped to ``reduction`` as torch does.
    """
    if size_average is not None or reduce is not None:
        reduction = torch.nn._reduction.legacy_get_string(size_average, reduce)
    return cross_entropy(
        input, target, weight, ignore_index=ignore_index, reduction=reduction,
        label_smoothing=label_smoothing, lse_square_scale=lse_square_scale, softcap=softcap,
        return_z_loss=return_z_loss, inplace=inplace,
    )  # fmt: skip


# Where an op already has the public signature (Liger Kernel's functional API), the name is the op.
liger_rope = rope
liger_swiglu = swiglu
liger_geglu = geglu
liger_fused_linear_cross_entropy = fused_linear_cross_entropy


__all__ = ["liger_geglu", "liger_swiglu", "liger_layer_norm", "liger_rope", "liger_rms_norm"]
__all__ += ["liger_cross_entropy", "liger_fused_linear_cross_entropy", "CrossEntropyOutput"]


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
