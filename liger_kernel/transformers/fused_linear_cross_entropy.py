"""LigerFusedLinearCrossEntropyLoss: cross entropy of a linear layer's output, without the logits."""

from __future__ import annotations

import torch

from liger_kernel.ops.fused_linear_cross_entropy import (
    fused_linear_cross_entropy_with_stats,
    resolve_chunk_budget,
)
from liger_kernel.transformers.cross_entropy import _CrossEntropyOptions
from liger_kernel.transformers.functional import CrossEntropyOutput, cross_entropy_output


class LigerFusedLinearCrossEntropyLoss(_CrossEntropyOptions):
    """``cross_entropy(_input @ lin_weight.T + bias, target)`` computed in chunks of rows.

    The (tokens x vocab) logits are never held at once: per chunk they are computed, turned into their
    gradient by the cross entropy kernel and multiplied into the input and weight gradients, all in
    the forward pass. Called as ``loss_fn(lin_weight, _input, target, bias=None)``. Options as in
    ``LigerCrossEntropyLoss``, plus ``ce_weight`` (a class weight, as ``weight`` of
    ``torch.nn.CrossEntropyLoss``), ``accum_dtype`` (``torch.float32`` accumulates the weight gradient
    in fp32 across chunks: more accurate, twice its memory), ``chunk_size`` (rows per chunk; the
    default comes from a cost model of the chunk loop, see ``flce_chunk_rows``) and ``chunk_budget_bytes``
    (the memory that default chunk's logits may take; else $LIGER_FLCE_CHUNK_BUDGET_MIB, else the size of
    the weight gradient). Reduction "none" recomputes the chunks in
    the backward (its per-token incoming gradient cannot be applied to a finished weight gradient).
    ``use_token_scaling`` weights each token's loss by its (detached) predicted probability of the
    target. Parameters in Liger Kernel 0.8's order (``ce_weight`` first); the chunk options are keyword-only.
    """

    def __init__(
        self,
        ce_weight: torch.Tensor | None = None,
        ignore_index: int = -100,
        lse_square_scale: float = 0.0,
        label_smoothing: float = 0.0,
        reduction: str = "mean",
        softcap: float | None = None,
        return_z_loss: bool = False,
        accum_dtype: torch.dtype | None = None,
        use_token_scaling: bool = False,
        return_token_accuracy: bool = False,
        return_predicted_tokens: bool = False,
        *,
        chunk_size: int | None = None,
        chunk_budget_bytes: int | None = None,
    ) -> None:
        super().__init__(
            ignore_index, lse_square_scale, label_smoothing, reduction, softcap, return_z_loss,
            return_token_accuracy, return_predicted_tokens,
        )  # fmt: skip
        self.use_token_scaling = use_token_scaling
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        self.register_buffer("ce_weight", ce_weight)
        self.accum_dtype = accum_dtype
        self.chunk_size = chunk_size
        if chunk_budget_bytes is not None:
            resolve_chunk_budget(chunk_budget_bytes)  # raises here, at construction, if not a positive int
        self.chunk_budget_bytes = chunk_budget_bytes

    def forward(
        self,
        lin_weight: torch.Tensor,
        _input: torch.Tensor,
        target: torch.Tensor,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor | CrossEntropyOutput:
        return cross_entropy_output(
            fused_linear_cross_entropy_with_stats(
                _input, lin_weight, target, bias, self.ce_weight, self.ignore_index, self.lse_square_scale,
                self.label_smoothing, self.reduction, self.softcap, self.return_z_loss, self.accum_dtype,
                self.use_token_scaling, self.return_token_accuracy, self.return_predicted_tokens,
                chunk_size=self.chunk_size, chunk_budget_bytes=self.chunk_budget_bytes,
            )
        )  # fmt: skip

    def extra_repr(self) -> str:
        budget = f", chunk_budget_bytes={self.chunk_budget_bytes}" if self.chunk_budget_bytes else ""
        return f"{super().extra_repr()}, accum_dtype={self.accum_dtype}, chunk_size={self.chunk_size}{budget}"
