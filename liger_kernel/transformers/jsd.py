"""LigerJSD: the generalized Jensen-Shannon divergence of student and teacher log-probs."""

from __future__ import annotations

import torch
from torch import nn

from liger_kernel.ops.jsd import check_beta, jsd


class LigerJSD(nn.Module):
    """Generalized JSD: beta KL(P || M) + (1 - beta) KL(Q || M), M = beta P + (1 - beta) Q, with Q the
    student (``log_q``, the prediction) and P the teacher (``log_p``), both log-probs (BT, V); beta = 0
    is the forward KL(P || Q), beta = 1 the reverse KL(Q || P) (TRL's ``generalized_jsd_loss``).

    Called as ``loss_fn(log_q, log_p, shift_labels=None)``: the mean over the tokens whose label is not
    ``ignore_index`` (all tokens without labels; 0 when every token is ignored). Both inputs get a
    gradient when they require one.
    """

    def __init__(self, beta: float = 0.5, ignore_index: int = -100) -> None:
        super().__init__()
        check_beta("beta", beta)
        self.beta = beta
        self.ignore_index = ignore_index

    def forward(
        self, log_q: torch.Tensor, log_p: torch.Tensor, shift_labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        return jsd(log_q, log_p, shift_labels, self.beta, self.ignore_index)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, ignore_index={self.ignore_index}"
