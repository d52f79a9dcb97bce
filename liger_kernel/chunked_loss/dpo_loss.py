"""DPO (Rafailov et al. 2023, arXiv:2305.18290) and the per-pair variants TRL's DPOTrainer offers.

With log-ratios c = logp(chosen) - logp_ref(chosen), r = logp(rejected) - logp_ref(rejected) and d = c - r,
the loss is the mean over pairs of (the variant's definition follows TRL's DPOTrainer where noted):
    sigmoid       -log sigma(beta d)                                                   (DPO, Eq. 7)
    hinge         relu(1 - beta d)                                                     (SLiC)
    ipo           (c/n_c - r/n_r - 1/(2 beta))^2, n = completion tokens                (IPO Eq. 17; the per-token
                                                                                        normalization is TRL's)
    exo_pair      KL([q, 1-q] || [1-eps, eps]), q = sigma(beta d)                      (EXO Eq. 16)
    nca_pair      -log sigma(beta c) - (log sigma(-beta c) + log sigma(-beta r)) / 2     (NCA)
    robust        (-(1-eps) log sigma(beta d) + eps log sigma(-beta d)) / (1 - 2 eps)  (cDPO/rDPO)
    bco_pair      -log sigma(beta c) - log sigma(-beta r)                              (TRL)
    sppo_hard     (c - 1/(2 beta))^2 + (r + 1/(2 beta))^2                              (SPPO, hard labels)
    apo_zero      1 - sigma(beta c) + sigma(beta r)                                    (APO Eq. 7)
    apo_down      sigma(beta c) + 1 - sigma(beta d)                                    (APO Eq. 8)
    discopop      (1 - m) (-log sigma(beta d)) + m exp(-beta d), m = sigma(beta d / tau)  (DiscoPOP Eq. 5)
    sigmoid_norm  -log sigma(beta (c/n_c - r/n_r))                                     (TRL)
eps = label_smoothing. Without a reference (use_ref_model=False and no precomputed log-probs) logp_ref = 0.
TRL's ``aot``/``aot_unpaired`` sort log-ratios across the batch (not a per-pair function) and are not offered.
The reference comes from ref_input/ref_weight/ref_bias (chunked with the policy, under no_grad) or from
precomputed ``ref_chosen_logps``/``ref_rejected_logps``. aux outputs: chosen_rewards = beta c,
rejected_rewards = beta r.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from liger_kernel.chunked_loss.fused_linear_chunked import (
    FusedLinearChunkedFunction,
    check_beta,
    check_choice,
    finish_forward,
    needs_grads,
)
from liger_kernel.chunked_loss.fused_linear_preference import PairLoss, paired_preference_forward

DPO_LOSS_TYPES = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "apo_zero", "apo_down",
    "discopop", "sigmoid_norm",
)  # fmt: skip


def check_dpo_options(beta: float, loss_type: str, label_smoothing: float, discopop_tau: float) -> None:
    check_beta(beta)
    check_choice(loss_type, DPO_LOSS_TYPES, "loss_type")
    if loss_type in ("ipo", "sppo_hard") and beta == 0:
        raise ValueError(f"beta must be > 0 for loss_type={loss_type!r} (it divides by beta)")
    if loss_type == "exo_pair" and not 0.0 < label_smoothing < 1.0:
        raise ValueError(
            f"label_smoothing must lie in (0, 1) for loss_type='exo_pair', got {label_smoothing}"
        )
    if loss_type == "robust" and not 0.0 <= label_smoothing < 0.5:
        raise ValueError(
            f"label_smoothing must lie in [0, 0.5) for loss_type='robust', got {label_smoothing}"
        )
    if loss_type == "discopop" and not discopop_tau > 0:
        raise ValueError(f"discopop_tau must be > 0, got {discopop_tau}")


def dpo_pair_loss(beta: float, loss_type: str, label_smoothing: float, discopop_tau: float) -> PairLoss:
    eps = label_smoothing

    def pair_loss(chosen, rejected, ref_chosen, ref_rejected, chosen_len, rejected_len):
        c = chosen - ref_chosen if ref_chosen is not None else chosen
        r = rejected - ref_rejected if ref_rejected is not None else rejected
        d = beta * (c - r)
        if loss_type == "sigmoid":
            losses = -F.logsigmoid(d)
        elif loss_type == "hinge":
            losses = torch.relu(1 - d)
        elif loss_type == "ipo":
            per_token = c / chosen_len.clamp(min=1) - r / rejected_len.clamp(min=1)
            losses = (per_token - 1 / (2 * beta)) ** 2
        elif loss_type == "exo_pair":
            q_log, q_log_not = F.logsigmoid(d), F.logsigmoid(-d)
            losses = q_log.exp() * (q_log - math.log1p(-eps)) + q_log_not.exp() * (q_log_not - math.log(eps))
        elif loss_type == "nca_pair":
            losses = -F.logsigmoid(beta * c) - 0.5 * (F.logsigmoid(-beta * c) + F.logsigmoid(-beta * r))
        elif loss_type == "robust":
            losses = (-(1 - eps) * F.logsigmoid(d) + eps * F.logsigmoid(-d)) / (1 - 2 * eps)
        elif loss_type == "bco_pair":
            losses = -F.logsigmoid(beta * c) - F.logsigmoid(-beta * r)
        elif loss_type == "sppo_hard":
            losses = (c - 0.5 / beta) ** 2 + (r + 0.5 / beta) ** 2
        elif loss_type == "apo_zero":
            losses = 1 - torch.sigmoid(beta * c) + torch.sigmoid(beta * r)
        elif loss_type == "apo_down":
            losses = torch.sigmoid(beta * c) + 1 - torch.sigmoid(d)
        elif loss_type == "discopop":
            modulation = torch.sigmoid(d / discopop_tau)
            losses = -F.logsigmoid(d) * (1 - modulation) + torch.exp(-d) * modulation
        else:  # sigmoid_norm
            losses = -F.logsigmoid(beta * (c / chosen_len.clamp(min=1) - r / rejected_len.clamp(min=1)))
        return losses, (beta * c, beta * r), ()

    return pair_loss


_DPO_SLOTS = (0, 1, 3)


class LigerFusedLinearDPOFunction(FusedLinearChunkedFunction):
    @staticmethod
    def forward(
        ctx: Any,
        _input: torch.Tensor,
        weight: torch.Tensor,
        target: torch.Tensor,
        bias: torch.Tensor | None = None,
        ref_input: torch.Tensor | None = None,
        ref_weight: torch.Tensor | None = None,
        ref_bias: torch.Tensor | None = None,
        ignore_index: int = -100,
        beta: float = 0.1,
        compute_nll_loss: bool = False,
        compiled: bool = True,
        use_ref_model: bool = True,
        average_log_prob: bool = False,
        chunk_size: int | None = None,
        loss_type: str = "sigmoid",
        label_smoothing: float = 0.0,
        discopop_tau: float = 0.05,
        alpha: float = 1.0,
        ref_chosen_logps: torch.Tensor | None = None,
        ref_rejected_logps: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Arguments as liger-kernel 0.8.5's, plus precomputed ``ref_chosen_logps``/``ref_rejected_logps``
        (B,) that replace ref_input.
        ``compiled`` is accepted for compatibility (the per-chunk gradient step is a Triton kernel)."""
        check_dpo_options(beta, loss_type, label_smoothing, discopop_tau)
        loss, outputs, grads = paired_preference_forward(
            needs_grads(ctx, _DPO_SLOTS), _input, weight, target, bias,
            dpo_pair_loss(beta, loss_type, label_smoothing, discopop_tau),
            ignore_index=ignore_index, alpha=alpha, compute_nll_loss=compute_nll_loss, chunk_size=chunk_size,
            average_log_prob=average_log_prob, use_ref_model=use_ref_model, ref_input=ref_input,
            ref_weight=ref_weight, ref_bias=ref_bias, ref_chosen_logps=ref_chosen_logps,
            ref_rejected_logps=ref_rejected_logps,
        )  # fmt: skip
        finish_forward(ctx, _DPO_SLOTS, 20, (_input, weight, bias), grads, outputs)
        return loss, outputs


class LigerFusedLinearDPOLoss(torch.nn.Module):
    """lm_head + DPO loss without the logits of either model. forward(lin_weight, _input, target, bias=None,
    ref_input=None, ref_weight=None, ref_bias=None, ref_chosen_logps=None, ref_rejected_logps=None) returns
    (loss, (chosen_logps, rejected_logps, chosen_logits_mean, rejected_logits_mean, nll_loss, chosen_rewards,
    rejected_rewards))."""

    def __init__(
        self,
        ignore_index: int = -100,
        beta: float = 0.1,
        alpha: float = 1.0,
        compute_nll_loss: bool = False,
        compiled: bool = True,
        use_ref_model: bool = True,
        average_log_prob: bool = False,
        chunk_size: int | None = None,
        loss_type: str = "sigmoid",
        label_smoothing: float = 0.0,
        discopop_tau: float = 0.05,
    ) -> None:
        super().__init__()
        check_dpo_options(beta, loss_type, label_smoothing, discopop_tau)
        self.ignore_index, self.beta, self.alpha = ignore_index, beta, alpha
        self.compute_nll_loss, self.compiled, self.use_ref_model = compute_nll_loss, compiled, use_ref_model
        self.average_log_prob, self.chunk_size, self.loss_type = average_log_prob, chunk_size, loss_type
        self.label_smoothing, self.discopop_tau = label_smoothing, discopop_tau

    def forward(
        self,
        lin_weight: torch.Tensor,
        _input: torch.Tensor,
        target: torch.Tensor,
        bias: torch.Tensor | None = None,
        ref_input: torch.Tensor | None = None,
        ref_weight: torch.Tensor | None = None,
        ref_bias: torch.Tensor | None = None,
        ref_chosen_logps: torch.Tensor | None = None,
        ref_rejected_logps: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        return LigerFusedLinearDPOFunction.apply(
            _input, lin_weight, target, bias, ref_input, ref_weight, ref_bias, self.ignore_index, self.beta,
            self.compute_nll_loss, self.compiled, self.use_ref_model, self.average_log_prob, self.chunk_size,
            self.loss_type, self.label_smoothing, self.discopop_tau, self.alpha, ref_chosen_logps,
            ref_rejected_logps,
        )  # fmt: skip
