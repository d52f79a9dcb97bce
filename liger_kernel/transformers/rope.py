"""liger_rotary_pos_emb: a drop-in for Hugging Face's ``apply_rotary_pos_emb`` (rotate-half RoPE).

It is ``liger_kernel.ops.rope.rope`` itself (same signature; its docstring gives the layouts): q and k
as Hugging Face makes them (any strides), cos and sin per position, ``position_ids`` only for 2-D
cos/sin tables; gradients flow to q and k, not to cos and sin.
"""

from __future__ import annotations

from liger_kernel.ops.rope import rope

liger_rotary_pos_emb = rope

__all__ = ["liger_rotary_pos_emb"]
