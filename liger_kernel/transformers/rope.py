"""liger_rotary_pos_emb: a drop-in for Hugging Face's ``apply_rotary_pos_emb`` (rotate-half RoPE).

It is ``liger_kernel.ops.rope.rope_partial``: ``rope`` (its docstring gives the layouts: q and k as
Hugging Face makes them, any strides; cos and sin per position, ``position_ids`` only for 2-D tables
with it) plus Liger Kernel 0.8's table layouts (2-D ``(seq, head_dim)`` without ``position_ids``, 4-D)
and ``rotary_dim`` (partial RoPE). Gradients flow to q and k, not to cos and sin.
"""

from __future__ import annotations

import torch

from liger_kernel.ops.rope import rope_partial

liger_rotary_pos_emb = rope_partial


def liger_rotary_pos_emb_gpt_oss(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """GPT-OSS's ``apply_rotary_pos_emb``: the whole head is rotated by cos/sin tables holding one half
    (width head_dim / 2), q and k laid out (bsz, heads, seq, head_dim)."""
    return rope_partial(q, k, cos, sin, rotary_dim=q.shape[-1])


__all__ = ["liger_rotary_pos_emb", "liger_rotary_pos_emb_gpt_oss"]
