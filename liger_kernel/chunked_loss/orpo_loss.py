"""ORPO (Hong et al. 2024, arXiv:2403.07691) on the chunked mechanism: reference-free, length-averaged log-probs.

    log odds(y) = logp(y) - log(1 - exp(logp(y)))          logp = mean token log-prob (Eq. 4)
    L = alpha * NLL(chosen) - (beta / B) sum_pairs log sigma(log odds(chosen) - log odds(rejected))   (Eq. 6-7)

(0.8.5 scales the odds-ratio term by beta, as TRL's ORPOTrainer; the NLL weight alpha is 1 there.)
A pair with a sequence that has no token (logp = 0, odds infinite) adds 0 to the odds-ratio term instead of NaN.
aux outputs: chosen_rewards = beta logp(chosen), rejected_rewards = beta logp(rejected), then the means over
pairs of log sigma(log odds ratio) and of the log odds ratio (TRL's log_odds_ratio and log_odds_chosen).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from liger_kernel.chunked_loss.fused_linear_chunked import (
    FusedLinearChunkedFunction,
    check_beta,
    finish_forward,
    needs_grads,
)
from liger_kernel.chunked_loss.fused_linear_preference import PairLoss, paired_preference_forward


def orpo_pair_loss(beta: float) -> PairLoss:
    def pair_loss(chosen, rejected, ref_chosen, ref_rejected, chosen_len, rejected_len):
        valid = (chosen_len > 0) & (rejected_len > 0)
        safe_c = torch.where(valid, chosen, torch.full_like(chosen, -1.0))
        safe_r = torch.where(valid, rejected, torch.full_like(rejected, -1.0))
        log_odds = (safe_c - safe_r) - (torch.log(-torch.expm1(safe_c)) - torch.log(-torch.expm1(safe_r)))
        log_odds = torch.where(valid, log_odds, torch.zeros_like(log_odds))
        ratio = torch.where(valid, F.logsigmoid(log_odds), torch.zeros_like(log_odds))
        return -beta * ratio, (beta * chosen, beta * rejected), (ratio.detach(), log_odds.detach())

    return pair_loss


_SLOTS = (0, 1, 3)


class LigerFusedLinearORPOFunction(FusedLinearChunkedFunction):
    @staticmethod
    def forward(
        ctx: Any,
        _input: torch.Tensor,
        weight: torch.Tensor,
        target: torch.Tensor,
        bias: torch.Tensor | None = None,
        ignore_index: int = -100,
        beta: float = 0.1,
        compute_nll_loss: bool = True,
        nll_target: torch.Tensor | None = None,
        compiled: bool = True,
        chunk_size: int | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Arguments as liger-kernel 0.8.5's; ``compiled`` is accepted for compatibility (the per-chunk
        gradient step is a Triton kernel either way)."""
        check_beta(beta)
        loss, outputs, grads = paired_preference_forward(
            needs_grads(ctx, _SLOTS), _input, weight, target, bias, orpo_pair_loss(beta), ignore_index=ignore_index,
            compute_nll_loss=compute_nll_loss, nll_target=nll_target, chunk_size=chunk_size, average_log_prob=True,
        )  # fmt: skip
        finish_forward(ctx, _SLOTS, 10, (_input, weight, bias), grads, outputs)
        return loss, outputs


class LigerFusedLinearORPOLoss(torch.nn.Module):
    """lm_head + ORPO loss. forward(lin_weight, _input, target, bias=None, nll_target=None) returns
    (loss, (chosen_logps, rejected_logps, chosen_logits_mean, rejected_logits_mean, nll_loss, chosen_rewards,
    rejected_rewards, log_odds_ratio, log_odds_chosen))."""

    def __init__(
        self,
        ignore_index: int = -100,
        beta: float = 0.1,
        compute_nll_loss: bool = True,
        compiled: bool = True,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        check_beta(beta)
        self.ignore_index, self.beta, self.compute_nll_loss = ignore_index, beta, compute_nll_loss
        self.compiled, self.chunk_size = compiled, chunk_size

    def forward(
        self,
        lin_weight: torch.Tensor,
        _input: torch.Tensor,
        target: torch.Tensor,
        bias: torch.Tensor | None = None,
        nll_target: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        return LigerFusedLinearORPOFunction.apply(
            _input, lin_weight, target, bias, self.ignore_index, self.beta, self.compute_nll_loss, nll_target,
            self.compiled, self.chunk_size,
        )  # fmt: skip
