"""Distillation with the generalized Jensen-Shannon divergence on the chunked mechanism: student and teacher
hidden states (N, H_s) and (N, H_t) through their own lm_heads (same vocabulary), a chunk of ``chunk_size``
tokens at a time; neither model's (N, V) logits exist at once. With S = softmax(z_s / T), Q = softmax(z_t / T):

    JSD_beta = beta KL(Q || M) + (1 - beta) KL(S || M),   M = beta Q + (1 - beta) S    (0 < beta < 1)
    beta = 0: KL(Q || S) (forward KL);  beta = 1: KL(S || Q) (reverse KL)            (GKD, Agarwal et al. 2024)
    hard = cross entropy of the student's untempered logits against true_labels
    L = weight_hard_loss * hard + weight_soft_loss * soft,  both summed over tokens whose label is not
        ignore_index and divided by their count (a batch with no such token gives 0, not NaN)

The teacher is evaluated under no_grad. ``return_soft_hard_loss=True`` returns (loss, soft, hard).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from liger_kernel.chunked_loss.fused_linear_chunked import (
    FusedLinearChunkedFunction,
    check_linear,
    check_shape,
    check_targets,
    chunk_logits,
    chunked_value_and_grads,
    finish_forward,
    needs_grads,
    row_chunks,
)


def generalized_jsd(student_logp: torch.Tensor, teacher_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-row JSD_beta of two log-distributions (rows x V) -> (rows,)."""
    if beta == 0:
        return (teacher_logp.exp() * (teacher_logp - student_logp)).sum(-1)
    if beta == 1:
        return (student_logp.exp() * (student_logp - teacher_logp)).sum(-1)
    mix_logp = torch.logaddexp(student_logp + math.log(1 - beta), teacher_logp + math.log(beta))
    teacher_kl = (teacher_logp.exp() * (teacher_logp - mix_logp)).sum(-1)
    student_kl = (student_logp.exp() * (student_logp - mix_logp)).sum(-1)
    return beta * teacher_kl + (1 - beta) * student_kl


def check_jsd_options(beta: float, temperature: float) -> None:
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


_SLOTS = (0, 1, 5)


def distillation_forward(
    ctx: Any,
    soft_rows: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    student_input: torch.Tensor,
    student_weight: torch.Tensor,
    teacher_input: torch.Tensor,
    teacher_weight: torch.Tensor,
    true_labels: torch.Tensor,
    student_bias: torch.Tensor | None,
    teacher_bias: torch.Tensor | None,
    weight_hard_loss: float,
    weight_soft_loss: float,
    ignore_index: int,
    temperature: float,
    chunk_size: int,
    return_soft_hard_loss: bool,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The forward of a distillation Function: ``soft_rows(student logits / T, teacher logits / T)`` is the
    per-token soft loss (rows,); the rest (checks, hard loss, weights, chunks) is shared."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if student_input.dim() != 2:
        raise ValueError(f"student_input must have shape (tokens, hidden), got {tuple(student_input.shape)}")
    n_tokens = student_input.shape[0]
    check_linear(
        student_input, student_weight, student_bias, ("student_input", "student_weight", "student_bias")
    )
    check_shape(
        teacher_input, (n_tokens, teacher_input.shape[-1]), "teacher_input", "(tokens, teacher hidden)"
    )
    check_linear(
        teacher_input, teacher_weight, teacher_bias, ("teacher_input", "teacher_weight", "teacher_bias")
    )
    if teacher_weight.shape[0] != student_weight.shape[0]:
        raise ValueError(
            f"teacher_weight has vocabulary {teacher_weight.shape[0]} but student_weight has "
            f"{student_weight.shape[0]}: the two models must share a vocabulary"
        )
    check_shape(true_labels, (n_tokens,), "true_labels", "one label per token")
    check_targets(true_labels, student_weight.shape[0], ignore_index, "true_labels")
    n_valid = (true_labels != ignore_index).sum().clamp(min=1)
    need_hard = weight_hard_loss != 0 or return_soft_hard_loss

    def chunk_loss(logits: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, Any]:
        labels = true_labels.index_select(0, rows)
        valid = labels != ignore_index
        teacher_logits = chunk_logits(teacher_input.index_select(0, rows), teacher_weight, teacher_bias)
        per_row = soft_rows(logits / temperature, teacher_logits.to(logits.dtype) / temperature)
        soft = per_row.masked_fill(~valid, 0.0).sum() / n_valid
        hard = torch.zeros_like(soft)
        if need_hard:
            hard = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum") / n_valid
        loss = weight_hard_loss * hard + weight_soft_loss * soft
        return loss, torch.stack([soft.detach(), hard.detach()])

    loss, auxes, *grads = chunked_value_and_grads(
        student_input, student_weight, student_bias, row_chunks(n_tokens, chunk_size, student_input.device),
        chunk_loss, needs_grads(ctx, _SLOTS),
    )  # fmt: skip
    outputs = tuple(torch.stack(auxes).sum(0).unbind(0)) if return_soft_hard_loss else ()
    finish_forward(ctx, _SLOTS, 15, (student_input, student_weight, student_bias), grads, outputs)
    return (loss, *outputs) if return_soft_hard_loss else loss


class LigerFusedLinearJSDFunction(FusedLinearChunkedFunction):
    """A subclass with another ``soft_rows`` and ``check_options`` is another distillation loss."""

    check_options = staticmethod(check_jsd_options)

    @staticmethod
    def soft_rows(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float) -> torch.Tensor:
        """Per-token soft loss of the tempered logits."""
        return generalized_jsd(F.log_softmax(student_logits, -1), F.log_softmax(teacher_logits, -1), beta)

    @classmethod
    def forward(
        cls,
        ctx: Any,
        student_input: torch.Tensor,
        student_weight: torch.Tensor,
        teacher_input: torch.Tensor,
        teacher_weight: torch.Tensor,
        true_labels: torch.Tensor,
        student_bias: torch.Tensor | None = None,
        teacher_bias: torch.Tensor | None = None,
        weight_hard_loss: float = 0.5,
        weight_soft_loss: float = 0.5,
        beta: float = 0.5,
        ignore_index: int = -100,
        temperature: float = 1.0,
        compiled: bool = True,
        chunk_size: int = 1024,
        return_soft_hard_loss: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Arguments as liger-kernel 0.8.5's (``compiled`` accepted for compatibility; chunks run eagerly)."""
        cls.check_options(beta, temperature)
        return distillation_forward(
            ctx, lambda s, t: cls.soft_rows(s, t, beta), student_input, student_weight, teacher_input, teacher_weight, true_labels,
            student_bias, teacher_bias, weight_hard_loss, weight_soft_loss, ignore_index, temperature, chunk_size,
            return_soft_hard_loss,
        )  # fmt: skip


class LigerFusedLinearJSDLoss(torch.nn.Module):
    """Student lm_head + teacher lm_head + generalized JSD distillation (with a hard-label cross entropy), without
    either model's logits. forward(student_input, student_weight, teacher_input, teacher_weight, true_labels,
    student_bias=None, teacher_bias=None) returns the loss, or (loss, soft_loss, hard_loss)."""

    _function = LigerFusedLinearJSDFunction

    def __init__(
        self,
        weight_hard_loss: float = 0.5,
        weight_soft_loss: float = 0.5,
        beta: float = 0.5,
        ignore_index: int = -100,
        temperature: float = 1.0,
        compiled: bool = True,
        chunk_size: int = 1024,
        return_soft_hard_loss: bool = False,
    ) -> None:
        super().__init__()
        self._function.check_options(beta, temperature)
        self.weight_hard_loss, self.weight_soft_loss, self.beta = weight_hard_loss, weight_soft_loss, beta
        self.ignore_index, self.temperature, self.compiled = ignore_index, temperature, compiled
        self.chunk_size, self.return_soft_hard_loss = chunk_size, return_soft_hard_loss

    def forward(
        self,
        student_input: torch.Tensor,
        student_weight: torch.Tensor,
        teacher_input: torch.Tensor,
        teacher_weight: torch.Tensor,
        true_labels: torch.Tensor,
        student_bias: torch.Tensor | None = None,
        teacher_bias: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self._function.apply(
            student_input, student_weight, teacher_input, teacher_weight, true_labels, student_bias, teacher_bias,
            self.weight_hard_loss, self.weight_soft_loss, self.beta, self.ignore_index, self.temperature,
            self.compiled, self.chunk_size, self.return_soft_hard_loss,
        )  # fmt: skip
