"""LigerFusedLinearJSD: distillation loss from the two models' hidden states, without their logits."""

from __future__ import annotations

import torch
from torch import nn

from liger_kernel.ops.fused_linear_jsd import fused_linear_jsd
from liger_kernel.ops.jsd import check_beta


class LigerFusedLinearJSD(nn.Module):
    """Generalized JSD (see ``LigerJSD``) of log_softmax(student_input @ student_weight.T / temperature)
    and the teacher's, computed in chunks of tokens so that neither (tokens x vocab) logits tensor is
    ever held; the student's gradients are made in the forward pass.

    Called as ``loss_fn(student_input, student_weight, teacher_input, teacher_weight, shift_labels=None)``
    (hidden sizes may differ, the vocabulary may not). The teacher is a constant (no gradient).
    ``accum_dtype=torch.float32`` accumulates the weight gradient in fp32; ``chunk_size`` is the number
    of tokens per chunk (default: two chunks of logits within about 256 MiB).
    """

    def __init__(
        self,
        jsd_beta: float = 0.5,
        ignore_index: int = -100,
        temperature: float = 1.0,
        accum_dtype: torch.dtype | None = None,
        *,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        check_beta("jsd_beta", jsd_beta)
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        self.jsd_beta = jsd_beta
        self.ignore_index = ignore_index
        self.temperature = temperature
        self.accum_dtype = accum_dtype
        self.chunk_size = chunk_size

    def forward(
        self,
        student_input: torch.Tensor,
        student_weight: torch.Tensor,
        teacher_input: torch.Tensor,
        teacher_weight: torch.Tensor,
        shift_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return fused_linear_jsd(
            student_input, student_weight, teacher_input, teacher_weight, shift_labels, self.jsd_beta,
            self.ignore_index, self.temperature, self.accum_dtype, chunk_size=self.chunk_size,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return (
            f"jsd_beta={self.jsd_beta}, ignore_index={self.ignore_index}, temperature={self.temperature}, "
            f"accum_dtype={self.accum_dtype}, chunk_size={self.chunk_size}"
        )
