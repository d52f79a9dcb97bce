"""liger_rotary_pos_emb: a drop-in for Hugging Face's ``apply_rotary_pos_emb`` (rotate-half RoPE)."""

from __future__ import annotations

import torch

from liger_kernel.ops.rope import rope


def liger_rotary_pos_emb(
    q: torch.Tensor,
    k: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    position_ids: torch.Tensor | None = None,
    unsqueeze_dim: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q and k by cos/sin as ``transformers.models.llama.modeling_llama.apply_rotary_pos_emb``.

    q: (bsz, n_q_heads, seq, head_dim), k: (bsz, n_kv_heads, seq, head_dim) (fewer heads for
    grouped-query attention); with ``unsqueeze_dim=2`` both are (bsz, seq, heads, head_dim) instead.
    cos, sin: (1 or bsz, seq, head_dim). Any strides are accepted (Hugging Face makes q and k by
    transposing (bsz, seq, heads, head_dim)); the results are new tensors laid out like q and k.
    ``position_ids`` is accepted for the older signature: it selects rows when cos and sin are 2-D
    (max_positions, head_dim) tables and is ignored for 3-D cos and sin, as in Hugging Face.
    Gradients flow to q and k; cos and sin are treated as constants (no gradient).
    Returns (q_embed, k_embed) in the dtype of q promoted with cos and sin's, as PyTorch would give.
    """
    return rope(q, k, cos, sin, position_ids, unsqueeze_dim)


__all__ = ["liger_rotary_pos_emb"]
