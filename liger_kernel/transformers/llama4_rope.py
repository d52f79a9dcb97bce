"""Llama 4's text rotary embedding under Liger Kernel 0.8's name (``liger_llama4_text_rotary_pos_emb``)."""

from __future__ import annotations

import torch

from liger_kernel.ops.llama4_rope import llama4_rope


def liger_llama4_text_rotary_pos_emb(
    xq: torch.Tensor, xk: torch.Tensor, freqs_cis: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hugging Face's ``apply_rotary_emb`` of Llama 4's text attention, by the Liger kernel.

    xq (bsz, seq, n_q_heads, head_dim), xk (bsz, seq, n_kv_heads, head_dim), freqs_cis the complex table
    (1 or bsz, seq, head_dim / 2) of ``Llama4TextRotaryEmbedding``; returns the rotated (xq, xk) in
    their own dtypes (see ``liger_kernel.ops.llama4_rope``).
    """
    return llama4_rope(xq, xk, freqs_cis)


__all__ = ["liger_llama4_text_rotary_pos_emb"]
