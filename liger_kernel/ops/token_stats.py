"""Per-token predictions and accuracy, as Liger Kernel 0.8's cross-entropy losses return them.

    predicted_tokens[i] = argmax_c logits[i, c]      (-1 where target[i] == ignore_index)
    token_accuracy[i]   = 1 if predicted == target   (0 where ignored)
reduced ("mean" and "sum" alike, as there) to the fraction of non-ignored tokens predicted right
(0 when every token is ignored). They are metrics: nothing here is differentiable. softcap is a
monotonic map, so the argmax of the raw logits is the argmax of the capped ones.
"""

from __future__ import annotations

import torch


def predicted_tokens(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """argmax over the last dim of ``logits`` (rows, classes), -1 on ignored rows; int64 (rows,)."""
    with torch.no_grad():
        return torch.where(target != ignore_index, logits.argmax(-1), -1)


def linear_predicted_tokens(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    ignore_index: int,
    chunk_rows: int,
) -> torch.Tensor:
    """``predicted_tokens`` of ``x @ weight.T + bias`` (x (rows, H)), ``chunk_rows`` rows of logits at a time."""
    out = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    with torch.no_grad():
        for start in range(0, x.shape[0], chunk_rows):
            rows = slice(start, start + chunk_rows)
            logits = torch.nn.functional.linear(x[rows], weight, bias)
            out[rows] = logits.argmax(-1)
    return torch.where(target != ignore_index, out, -1)


def token_accuracy(
    predicted: torch.Tensor, target: torch.Tensor, ignore_index: int, reduction: str
) -> torch.Tensor:
    """fp32 per-token hits for reduction "none", else their mean over the non-ignored tokens."""
    valid = target != ignore_index
    hits = ((predicted == target) & valid).float()
    if reduction == "none":
        return hits
    return hits.sum() / valid.sum().clamp(min=1)
