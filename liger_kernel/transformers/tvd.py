"""LigerTVDLoss: total variation distance between two distributions, with labels to ignore tokens."""

from __future__ import annotations

import torch
from torch import nn

from liger_kernel.ops.distill_utils import check_reduction
from liger_kernel.ops.tvd import tvd


class LigerTVDLoss(nn.Module):
    """1/2 sum_j |p_j - q_j| per token, for probabilities ``p`` and ``q`` (BT, V).

    Called as ``loss_fn(p, q, shift_labels=None)``; tokens whose label is ``ignore_index`` count for
    nothing. ``reduction``: "batchmean" (over the tokens kept), "mean" (over their elements), "sum" or
    "none" (per element). Both inputs get a gradient when they require one (sign(0) = 0 at ties).
    """

    def __init__(self, reduction: str = "batchmean", ignore_index: int = -100) -> None:
        super().__init__()
        check_reduction(reduction)
        self.reduction = reduction
        self.ignore_index = ignore_index

    def forward(
        self, p: torch.Tensor, q: torch.Tensor, shift_labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        return tvd(p, q, shift_labels, self.reduction, self.ignore_index)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, ignore_index={self.ignore_index}"
