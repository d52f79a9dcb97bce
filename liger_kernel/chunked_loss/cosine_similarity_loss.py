"""Distillation by cosine similarity of the student's and teacher's logits, on the chunked mechanism (as
liger-kernel 0.8.5's ``LigerFusedLinearCosineSimilarityLoss``): per token,

    soft = beta * (1 - cos(z_s / T, z_t / T))
    L = weight_hard_loss * CE(student, labels) + weight_soft_loss * soft,  both averaged over the tokens
        whose label is not ignore_index

The checks, hard loss, chunks and outputs are those of ``jsd_loss.distillation_forward``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from liger_kernel.chunked_loss.fused_linear_chunked import FusedLinearChunkedFunction, check_beta
from liger_kernel.chunked_loss.jsd_loss import LigerFusedLinearJSDLoss, distillation_forward


def check_cosine_options(beta: float, temperature: float) -> None:
    check_beta(beta)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


class LigerFusedLinearCosineSimilarityFunction(FusedLinearChunkedFunction):
    @staticmethod
    def forward(
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
        check_cosine_options(beta, temperature)

        def soft_rows(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
            return beta * (1 - F.cosine_similarity(student_logits, teacher_logits, dim=-1))

        return distillation_forward(
            ctx, soft_rows, student_input, student_weight, teacher_input, teacher_weight, true_labels,
            student_bias, teacher_bias, weight_hard_loss, weight_soft_loss, ignore_index, temperature, chunk_size,
            return_soft_hard_loss,
        )  # fmt: skip


class LigerFusedLinearCosineSimilarityLoss(LigerFusedLinearJSDLoss):
    """Student lm_head + teacher lm_head + cosine-similarity distillation (with a hard-label cross entropy);
    the arguments and outputs of ``LigerFusedLinearJSDLoss``."""

    _function = LigerFusedLinearCosineSimilarityFunction
    _check_options = staticmethod(check_cosine_options)
