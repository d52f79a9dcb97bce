"""LigerKLDIVLoss: a drop-in for torch.nn.KLDivLoss, loss and gradient in one Triton pass."""

from __future__ import annotations

import torch
from torch import nn

from liger_kernel.ops.distill_utils import check_reduction
from liger_kernel.ops.kl_div import kl_div


class LigerKLDIVLoss(nn.KLDivLoss):
    """``torch.nn.KLDivLoss`` (``input`` log-probs, ``target`` probs or, with ``log_target``, log-probs;
    reductions "batchmean", "sum", "mean", "none"), its gradient made in the forward pass.

    ``eps`` guards log(target) (target clamped to at least eps inside the log; 0 log 0 stays 0). Unlike
    torch, "mean" does not warn, and ``input`` and ``target`` must have one shape (no broadcasting).
    ``target`` gets a gradient too when it requires one.
    """

    def __init__(
        self,
        size_average: bool | None = None,
        reduce: bool | None = None,
        reduction: str = "mean",
        log_target: bool = False,
        eps: float = 1e-10,
    ) -> None:
        super().__init__(size_average, reduce, reduction, log_target)
        check_reduction(self.reduction)
        self.eps = eps

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return kl_div(input, target, self.reduction, self.log_target, self.eps)
