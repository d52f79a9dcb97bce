"""CPO (Xu et al. 2024, arXiv:2401.08417) and SimPO (Meng et al. 2024, arXiv:2405.14734) on the chunked
mechanism: reference-free, with label smoothing eps as TRL's CPOTrainer:

    CPO    d = beta (logp(chosen) - logp(rejected))                    summed log-probs (average_log_prob option)
    SimPO  d = beta (logp(chosen) - logp(rejected)) - gamma            length-averaged log-probs
    L = (1/B) sum_pairs [-(1 - eps) log sigma(d) - eps log sigma(-d)]  + alpha * NLL(chosen) if compute_nll_loss

aux outputs: chosen_rewards = beta logp(chosen), rejected_rewards = beta logp(rejected).
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


def margin_pair_loss(beta: float, label_smoothing: float, gamma: float = 0.0) -> PairLoss:
    def pair_loss(chosen, rejected, ref_chosen, ref_rejected, chosen_len, rejected_len):
        d = beta * (chosen - rejected) - gamma
        losses = -(1 - label_smoothing) * F.logsigmoid(d) - label_smoothing * F.logsigmoid(-d)
        return losses, (beta * chosen, beta * rejected), ()

    return pair_loss


def check_smoothing(label_smoothing: float) -> None:
    if not 0.0 <= label_smoothing <= 0.5:
        raise ValueError(f"label_smoothing must lie in [0, 0.5], got {label_smoothing}")


_SLOTS = (0, 1, 3)


class LigerFusedLinearCPOFunction(FusedLinearChunkedFunction):
    @staticmethod
    def forward(
        ctx: Any,
        _input: torch.Tensor,
        weight: torch.Tensor,
        target: torch.Tensor,
        bias: torch.Tensor | None = None,
        ignore_index: int = -100,
        beta: float = 0.1,
        alpha: float = 1.0,
        label_smoothing: float = 0.0,
        compute_nll_loss: bool = True,
        compiled: bool = True,
        average_log_prob: bool = False,
        chunk_size: int | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Arguments as liger-kernel 0.8.5's; ``compiled`` is accepted for compatibility (the per-chunk
        gradient step is a Triton kernel either way)."""
        check_beta(beta)
        check_smoothing(label_smoothing)
        loss, outputs, grads = paired_preference_forward(
            needs_grads(ctx, _SLOTS), _input, weight, target, bias, margin_pair_loss(beta, label_smoothing),
            ignore_index=ignore_index, alpha=alpha, compute_nll_loss=compute_nll_loss, chunk_size=chunk_size,
            average_log_prob=average_log_prob,
        )  # fmt: skip
        finish_forward(ctx, _SLOTS, 12, (_input, weight, bias), grads, outputs)
        return loss, outputs


class LigerFusedLinearSimPOFunction(FusedLinearChunkedFunction):
    @staticmethod
    def forward(
        ctx: Any,
        _input: torch.Tensor,
        weight: torch.Tensor,
        target: torch.Tensor,
        bias: torch.Tensor | None = None,
        ignore_index: int = -100,
        beta: float = 0.1,
        alpha: float = 1.0,
        label_smoothing: float = 0.0,
        compute_nll_loss: bool = False,
        compiled: bool = True,
        gamma: float = 0.5,
        chunk_size: int | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Arguments as liger-kernel 0.8.5's; ``compiled`` is accepted for compatibility (the per-chunk
        gradient step is a Triton kernel either way)."""
        check_beta(beta)
        check_smoothing(label_smoothing)
        loss, outputs, grads = paired_preference_forward(
            needs_grads(ctx, _SLOTS), _input, weight, target, bias, margin_pair_loss(beta, label_smoothing, gamma),
            ignore_index=ignore_index, alpha=alpha, compute_nll_loss=compute_nll_loss, chunk_size=chunk_size,
            average_log_prob=True,
        )  # fmt: skip
        finish_forward(ctx, _SLOTS, 12, (_input, weight, bias), grads, outputs)
        return loss, outputs


class LigerFusedLinearCPOLoss(torch.nn.Module):
    """lm_head + CPO loss. forward(lin_weight, _input, target, bias=None) returns (loss, (chosen_logps,
    rejected_logps, chosen_logits_mean, rejected_logits_mean, nll_loss, chosen_rewards, rejected_rewards))."""

    def __init__(
        self,
        ignore_index: int = -100,
        beta: float = 0.1,
        alpha: float = 1.0,
        label_smoothing: float = 0.0,
        compute_nll_loss: bool = True,
        compiled: bool = True,
        average_log_prob: bool = False,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        check_beta(beta)
        check_smoothing(label_smoothing)
        self.ignore_index, self.beta, self.alpha, self.label_smoothing = (
            ignore_index,
            beta,
            alpha,
            label_smoothing,
        )
        self.compute_nll_loss, self.compiled = compute_nll_loss, compiled
        self.average_log_prob, self.chunk_size = average_log_prob, chunk_size

    def forward(
        self,
        lin_weight: torch.Tensor,
        _input: torch.Tensor,
        target: torch.Tensor,
        bias: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        return LigerFusedLinearCPOFunction.apply(
            _input, lin_weight, target, bias, self.ignore_index, self.beta, self.alpha, self.label_smoothing,
            self.compute_nll_loss, self.compiled, self.average_log_prob, self.chunk_size,
        )  # fmt: skip


class LigerFusedLinearSimPOLoss(torch.nn.Module):
    """lm_head + SimPO loss. forward(lin_weight, _input, target, bias=None) returns (loss, (chosen_logps,
    rejected_logps, chosen_logits_mean, rejected_logits_mean, nll_loss, chosen_rewards, rejected_rewards))."""

    def __init__(
        self,
        ignore_index: int = -100,
        beta: float = 0.1,
        alpha: float = 1.0,
        label_smoothing: float = 0.0,
        compute_nll_loss: bool = True,
        compiled: bool = True,
        gamma: float = 0.5,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        check_beta(beta)
        check_smoothing(label_smoothing)
        self.ignore_index, self.beta, self.alpha, self.label_smoothing = (
            ignore_index,
            beta,
            alpha,
            label_smoothing,
        )
        self.compute_nll_loss, self.compiled, self.gamma, self.chunk_size = (
            compute_nll_loss,
            compiled,
            gamma,
            chunk_size,
        )

    def forward(
        self,
        lin_weight: torch.Tensor,
        _input: torch.Tensor,
        target: torch.Tensor,
        bias: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        return LigerFusedLinearSimPOFunction.apply(
            _input, lin_weight, target, bias, self.ignore_index, self.beta, self.alpha, self.label_smoothing,
            self.compute_nll_loss, self.compiled, self.gamma, self.chunk_size,
        )  # fmt: skip
