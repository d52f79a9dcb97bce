"""LigerCrossEntropyLoss: a drop-in for torch.nn.CrossEntropyLoss (hard labels) with z-loss and softcap."""

from __future__ import annotations

import torch
from torch import nn

from liger_kernel.ops.cross_entropy import check_loss_options, cross_entropy_with_stats
from liger_kernel.transformers.functional import CrossEntropyOutput, cross_entropy_output


class _CrossEntropyOptions(nn.Module):
    """The options both cross-entropy losses share: checked once, kept as attributes, shown in repr."""

    def __init__(
        self,
        ignore_index: int,
        lse_square_scale: float,
        label_smoothing: float,
        reduction: str,
        softcap: float | None,
        return_z_loss: bool,
        return_token_accuracy: bool = False,
        return_predicted_tokens: bool = False,
    ) -> None:
        super().__init__()
        check_loss_options(reduction, label_smoothing, softcap, lse_square_scale)
        self.return_token_accuracy = return_token_accuracy
        self.return_predicted_tokens = return_predicted_tokens
        self.ignore_index = ignore_index
        self.lse_square_scale = lse_square_scale
        self.label_smoothing = label_smoothing
        self.reduction = reduction
        self.softcap = softcap
        self.return_z_loss = return_z_loss

    def extra_repr(self) -> str:
        return (
            f"ignore_index={self.ignore_index}, reduction={self.reduction!r}, "
            f"label_smoothing={self.label_smoothing}, lse_square_scale={self.lse_square_scale}, "
            f"softcap={self.softcap}, return_z_loss={self.return_z_loss}"
        )


class LigerCrossEntropyLoss(_CrossEntropyOptions):
    """Cross entropy over class indices, its gradient computed in the forward pass.

    Options as in ``torch.nn.CrossEntropyLoss`` (``weight``, ``ignore_index``, ``label_smoothing``,
    ``reduction``), plus ``lse_square_scale`` (z-loss ``s * logsumexp(logits)^2`` per token, added to the
    loss, averaged over the tokens that are not ignored with reduction="mean"), ``softcap`` (logits go
    through ``softcap * tanh(logits / softcap)`` first), ``return_z_loss`` (also return the z-loss,
    detached, for logging), ``return_token_accuracy`` and ``return_predicted_tokens`` (also return the
    argmax metrics of ``liger_kernel.ops.token_stats``). Called as ``loss_fn(logits, target)``; returns
    the loss, or a ``CrossEntropyOutput`` when any ``return_*`` option is set.

    Differences from torch: with reduction="mean" and every target ignored the loss is 0 (torch: NaN);
    a target outside [0, C) that is not ``ignore_index`` raises IndexError. The gradient is written over
    ``logits`` when they are an intermediate of autograd (``inplace=None``; see
    ``liger_kernel.ops.cross_entropy.cross_entropy`` for ``inplace=True/False``): read them before the
    loss if you need them afterwards. Backward through one forward twice (``retain_graph=True``) is exact:
    each backward then scales a copy of the kept gradient (as every compiled backward does).
    """

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        ignore_index: int = -100,
        lse_square_scale: float = 0.0,
        label_smoothing: float = 0.0,
        reduction: str = "mean",
        softcap: float | None = None,
        return_z_loss: bool = False,
        return_token_accuracy: bool = False,
        return_predicted_tokens: bool = False,
        *,
        inplace: bool | None = None,
    ) -> None:
        super().__init__(
            ignore_index, lse_square_scale, label_smoothing, reduction, softcap, return_z_loss,
            return_token_accuracy, return_predicted_tokens,
        )  # fmt: skip
        self.register_buffer("weight", weight)
        self.inplace = inplace

    def forward(self, _input: torch.Tensor, target: torch.Tensor) -> torch.Tensor | CrossEntropyOutput:
        return cross_entropy_output(
            cross_entropy_with_stats(
                _input, target, self.weight, self.ignore_index, self.lse_square_scale, self.label_smoothing,
                self.reduction, self.softcap, self.return_z_loss, self.return_token_accuracy,
                self.return_predicted_tokens, self.inplace,
            )
        )  # fmt: skip
