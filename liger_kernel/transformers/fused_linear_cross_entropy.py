"""LigerFusedLinearCrossEntropyLoss: cross entropy of a linear layer's output, without the logits."""

from __future__ import annotations

import torch

from liger_kernel.ops.fused_linear_cross_entropy import fused_linear_cross_entropy
from liger_kernel.transformers.cross_entropy import _CrossEntropyOptions


class LigerFusedLinearCrossEntropyLoss(_CrossEntropyOptions):
    """``cross_entropy(_input @ lin_weight.T + bias, target)`` computed in chunks of rows.

    The (tokens x vocab) logits are never held at once: per chunk they are computed, turned into their
    gradient by the cross entropy kernel and multiplied into the input and weight gradients, all in
    the forward pass. Called as ``loss_fn(lin_weight, _input, target, bias=None)``. Options as in
    ``LigerCrossEntropyLoss``, plus ``ce_weight`` (a class weight, as ``weight`` of
    ``torch.nn.CrossEntropyLoss``), ``accum_dtype`` (``torch.float32`` accumulates the weight gradient
    in fp32 across chunks: more accurate, twice its memory) and ``chunk_size`` (rows per chunk; the
    default keeps one chunk of logits near 256 MiB). Reduction "none" recomputes the chunks in
    the backward (its per-token incoming gradient cannot be applied to a finished weight gradient).
    """

    def __init__(
        self,
        ignore_index: int = -100,
        lse_square_scale: float = 0.0,
        label_smoothing: float = 0.0,
        reduction: str = "mean",
        softcap: float | None = None,
        return_z_loss: bool = False,
        accum_dtype: torch.dtype | None = None,
        *,
        ce_weight: torch.Tensor | None = None,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(ignore_index, lse_square_scale, label_smoothing, reduction, softcap, return_z_loss)
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        self.register_buffer("ce_weight", ce_weight)
        self.accum_dtype = accum_dtype
        self.chunk_size = chunk_size

    def forward(
        self,
        lin_weight: torch.Tensor,
        _input: torch.Tensor,
        target: torch.Tensor,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return fused_linear_cross_entropy(
            _input,
            lin_weight,
            target,
            bias,
            ignore_index=self.ignore_index,
            lse_square_scale=self.lse_square_scale,
            label_smoothing=self.label_smoothing,
            reduction=self.reduction,
            softcap=self.softcap,
            return_z_loss=self.return_z_loss,
            accum_dtype=self.accum_dtype,
            ce_weight=self.ce_weight,
            chunk_size=self.chunk_size,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, accum_dtype={self.accum_dtype}, chunk_size={self.chunk_size}"
