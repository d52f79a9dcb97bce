"""Distillation by cosine similarity of the student's and teacher's logits, on the chunked mechanism (as
liger-kernel 0.8.5's ``LigerFusedLinearCosineSimilarityLoss``): per token,

    soft = beta * (1 - cos(z_s / T, z_t / T))
    L = weight_hard_loss * CE(student, labels) + weight_soft_loss * soft,  both averaged over the tokens
        whose label is not ignore_index

The checks, hard loss, chunks and outputs are those of ``jsd_loss.distillation_forward``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from liger_kernel.chunked_loss.fused_linear_chunked import check_beta
from liger_kernel.chunked_loss.jsd_loss import LigerFusedLinearJSDFunction, LigerFusedLinearJSDLoss


def check_cosine_options(beta: float, temperature: float) -> None:
    check_beta(beta)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


class LigerFusedLinearCosineSimilarityFunction(LigerFusedLinearJSDFunction):
    """Arguments and outputs of ``LigerFusedLinearJSDFunction`` (0.8.5's order); the soft loss is the cosine
    distance."""

    check_options = staticmethod(check_cosine_options)

    @staticmethod
    def soft_rows(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float) -> torch.Tensor:
        return beta * (1 - F.cosine_similarity(student_logits, teacher_logits, dim=-1))


class LigerFusedLinearCosineSimilarityLoss(LigerFusedLinearJSDLoss):
    """Student lm_head + teacher lm_head + cosine-similarity distillation (with a hard-label cross entropy);
    the arguments and outputs of ``LigerFusedLinearJSDLoss``."""

    _function = LigerFusedLinearCosineSimilarityFunction
