"""Rotary position embedding (RoPE, rotate-half layout), forward and backward, in Triton.

For one head vector x of even length D = 2H, split into halves x1 = x[:H], x2 = x[H:], and the
position's cos, sin rows (length D, halves c1, c2 and s1, s2; all arithmetic in fp32):
    forward  (x' = x * cos + rotate_half(x) * sin, rotate_half(x) = cat(-x2, x1)):
        x'1 = x1 * c1 - x2 * s1
        x'2 = x2 * c2 + x1 * s2
    backward (the transpose of that linear map, applied to the incoming gradient g):
        dx1 = g1 * c1 + g2 * s2
        dx2 = g2 * c2 - g1 * s1
The backward is the forward with (s1, s2) replaced by (-s2, -s1), so one kernel does both. Both
halves of cos and sin are used as given (Hugging Face's tables repeat one half, nothing relies on it).
cos and sin are not differentiated. Nothing is kept for backward but cos and sin themselves.

One program handles one (batch, seq) position: it loads that position's cos and sin once and applies
them to all query heads, then all key heads (fewer for grouped-query attention), in tiles of
(heads x half head_dim). Inputs may have any strides with a unit stride along head_dim (Hugging Face
makes q by transposing (batch, seq, heads, head_dim)); outputs are new tensors laid out like the inputs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from liger_kernel.ops.utils import (
    check_floating,
    check_same_device,
    liger_op,
    next_power_of_2,
    use_triton,
)


@triton.jit
def _rotate_heads(
    X,
    OUT,
    x_base,
    o_base,
    stride_xh,
    stride_oh,
    n_heads,
    half,
    c1,
    c2,
    sa,
    sb,
    BLOCK_H: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    d = tl.arange(0, BLOCK_D)
    d_mask = d < half
    for h0 in range(0, n_heads, BLOCK_H):
        heads = h0 + tl.arange(0, BLOCK_H)
        mask = (heads < n_heads)[:, None] & d_mask[None, :]
        heads64 = heads.to(tl.int64)
        x_ptr = X + x_base + heads64[:, None] * stride_xh + d[None, :]
        x1 = tl.load(x_ptr, mask=mask, other=0.0).to(tl.float32)
        x2 = tl.load(x_ptr + half, mask=mask, other=0.0).to(tl.float32)
        o1 = x1 * c1[None, :] - x2 * sa[None, :]
        o2 = x2 * c2[None, :] + x1 * sb[None, :]
        o_ptr = OUT + o_base + heads64[:, None] * stride_oh + d[None, :]
        tl.store(o_ptr, o1.to(OUT.dtype.element_ty), mask=mask)
        tl.store(o_ptr + half, o2.to(OUT.dtype.element_ty), mask=mask)


@triton.jit
def _rope_kernel(
    Q,
    K,
    QO,
    KO,
    COS,
    SIN,
    stride_qb,
    stride_qh,
    stride_qs,
    stride_kb,
    stride_kh,
    stride_ks,
    stride_qob,
    stride_qoh,
    stride_qos,
    stride_kob,
    stride_koh,
    stride_kos,
    stride_cb,
    stride_cs,
    stride_sb,
    stride_ss,
    seq_len,
    n_q_heads,
    n_k_heads,
    half,
    BACKWARD: tl.constexpr,
    BLOCK_HQ: tl.constexpr,
    BLOCK_HK: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    b = (pid // seq_len).to(tl.int64)
    s = (pid % seq_len).to(tl.int64)

    # A batch-1 cos/sin table comes with stride_cb = stride_sb = 0.
    d = tl.arange(0, BLOCK_D)
    d_mask = d < half
    cos_ptr = COS + b * stride_cb + s * stride_cs + d
    sin_ptr = SIN + b * stride_sb + s * stride_ss + d
    c1 = tl.load(cos_ptr, mask=d_mask, other=0.0).to(tl.float32)
    c2 = tl.load(cos_ptr + half, mask=d_mask, other=0.0).to(tl.float32)
    s1 = tl.load(sin_ptr, mask=d_mask, other=0.0).to(tl.float32)
    s2 = tl.load(sin_ptr + half, mask=d_mask, other=0.0).to(tl.float32)
    if BACKWARD:
        sa = -s2
        sb = -s1
    else:
        sa = s1
        sb = s2

    _rotate_heads(
        Q, QO, b * stride_qb + s * stride_qs, b * stride_qob + s * stride_qos, stride_qh, stride_qoh,
        n_q_heads, half, c1, c2, sa, sb, BLOCK_H=BLOCK_HQ, BLOCK_D=BLOCK_D,
    )  # fmt: skip
    _rotate_heads(
        K, KO, b * stride_kb + s * stride_ks, b * stride_kob + s * stride_kos, stride_kh, stride_koh,
        n_k_heads, half, c1, c2, sa, sb, BLOCK_H=BLOCK_HK, BLOCK_D=BLOCK_D,
    )  # fmt: skip


def _rope_config(
    n_q_heads: int, n_k_heads: int, head_dim: int, max_tile: int = 512, num_warps: int | None = None
) -> tuple[int, int, int, int]:
    """(query heads per tile, key heads per tile, half-dim block, warps).

    A tile is (heads x half head_dim) elements, loaded twice (both halves); ``max_tile`` bounds it so
    registers stay small for many heads or wide heads.
    """
    block_d = next_power_of_2(head_dim // 2)
    heads_cap = max(1, max_tile // block_d)
    block_hq = min(next_power_of_2(n_q_heads), heads_cap)
    block_hk = min(next_power_of_2(n_k_heads), heads_cap)
    if num_warps is None:
        # H200 sweep (benchmark/sweep_kernels.py), bsz 4, seq 2048, 32/8 heads, head_dim 128, full pass
        # as CUDA-graph replay: tiles of 512 elements with 4 warps were best (0.096 ms).
        num_warps = 4
    return block_hq, block_hk, block_d, num_warps


def _new_like(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialized tensor shaped like ``x``, laid out like it when that keeps head_dim unit-strided.

    Only metadata decides the layout, so the fake (torch.compile) and real ops agree.
    """
    out = torch.empty_like(x, dtype=dtype)
    if out.dim() and out.stride(-1) != 1:
        out = torch.empty(x.shape, dtype=dtype, device=x.device)
    return out


def _unit_last_stride(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 or x.shape[-1] == 1 else x.contiguous()


def _rope_torch(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, backward: bool, out: torch.Tensor):
    half = x.shape[-1] // 2
    xf = x.float()
    x1, x2 = xf[..., :half], xf[..., half:]
    c = cos.float().unsqueeze(1)
    s = sin.float().unsqueeze(1)
    c1, c2, s1, s2 = c[..., :half], c[..., half:], s[..., :half], s[..., half:]
    sa, sb = (-s2, -s1) if backward else (s1, s2)
    out[..., :half] = x1 * c1 - x2 * sa
    out[..., half:] = x2 * c2 + x1 * sb
    return out


def _rope_apply(
    q: torch.Tensor,
    k: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    backward: bool,
    q_dtype: torch.dtype,
    k_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q (b, hq, s, d) and k (b, hk, s, d) by cos/sin (1 or b, s, d) into new tensors."""
    q_out, k_out = _new_like(q, q_dtype), _new_like(k, k_dtype)
    bsz, n_q_heads, seq_len, head_dim = q.shape
    n_k_heads = k.shape[1]
    if q.numel() == 0 and k.numel() == 0:
        return q_out, k_out
    if not use_triton("rope", q):
        _rope_torch(q, cos, sin, backward, q_out)
        _rope_torch(k, cos, sin, backward, k_out)
        return q_out, k_out
    q, k, cos, sin = (_unit_last_stride(t) for t in (q, k, cos, sin))
    block_hq, block_hk, block_d, num_warps = _rope_config(n_q_heads, n_k_heads, head_dim)
    cos_b = cos.stride(0) if cos.shape[0] > 1 else 0
    sin_b = sin.stride(0) if sin.shape[0] > 1 else 0
    _rope_kernel[(bsz * seq_len,)](
        q, k, q_out, k_out, cos, sin,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        q_out.stride(0), q_out.stride(1), q_out.stride(2), k_out.stride(0), k_out.stride(1), k_out.stride(2),
        cos_b, cos.stride(1), sin_b, sin.stride(1),
        seq_len, n_q_heads, n_k_heads, head_dim // 2,
        BACKWARD=backward, BLOCK_HQ=block_hq, BLOCK_HK=block_hk, BLOCK_D=block_d, num_warps=num_warps,
    )  # fmt: skip
    return q_out, k_out


def _out_dtype(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.dtype:
    # x * cos + rotate_half(x) * sin in PyTorch has the promoted dtype of the three.
    return torch.promote_types(torch.promote_types(x.dtype, cos.dtype), sin.dtype)


# --- torch.library registration: opaque to torch.compile, so no graph break --------------------------


@liger_op("liger::rope_forward", mutates_args=())
def rope_forward(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    return _rope_apply(q, k, cos, sin, False, _out_dtype(q, cos, sin), _out_dtype(k, cos, sin))


@rope_forward.register_fake
def _(q, k, cos, sin):
    return _new_like(q, _out_dtype(q, cos, sin)), _new_like(k, _out_dtype(k, cos, sin))


@liger_op("liger::rope_backward", mutates_args=())
def rope_backward(
    dq: torch.Tensor, dk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    return _rope_apply(dq, dk, cos, sin, True, dq.dtype, dk.dtype)


@rope_backward.register_fake
def _(dq, dk, cos, sin):
    return _new_like(dq, dq.dtype), _new_like(dk, dk.dtype)


def _setup_context(ctx, inputs, output):
    q, k, cos, sin = inputs
    ctx.save_for_backward(cos, sin)
    ctx.q_dtype, ctx.k_dtype = q.dtype, k.dtype


def _backward(ctx, dq_out, dk_out):
    cos, sin = ctx.saved_tensors
    dq, dk = rope_backward(dq_out, dk_out, cos, sin)
    # cos and sin get no gradient (Hugging Face computes them without one).
    return dq.to(ctx.q_dtype), dk.to(ctx.k_dtype), None, None


rope_forward.register_autograd(_backward, setup_context=_setup_context)


def _select_positions(table: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    """Rows of a (max_positions, head_dim) table at position_ids ((bsz, seq) or (seq,)) -> 3-D."""
    picked = table[position_ids]
    return picked if picked.dim() == 3 else picked.unsqueeze(0)


def rope(
    q: torch.Tensor,
    k: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    position_ids: torch.Tensor | None = None,
    unsqueeze_dim: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply rotary position embedding to q and k; a drop-in for Hugging Face's ``apply_rotary_pos_emb``.

    q is (bsz, n_q_heads, seq, head_dim) and k (bsz, n_kv_heads, seq, head_dim) for ``unsqueeze_dim=1``,
    or (bsz, seq, heads, head_dim) for ``unsqueeze_dim=2``; cos and sin are (1 or bsz, seq, head_dim)
    (each may have its own leading 1 or bsz).
    ``position_ids`` only matters for the older calling convention where cos and sin are 2-D tables
    (max_positions, head_dim): then their rows at ``position_ids`` ((bsz, seq) or (seq,)) are used.
    With 3-D cos and sin (already per position) it is ignored, as in Hugging Face.
    Returns (q_embed, k_embed), new tensors, differentiable in q and k (not in cos and sin).
    """
    for name, t in (("q", q), ("k", k), ("cos", cos), ("sin", sin)):
        check_floating(name, t)
    check_same_device(q=q, k=k, cos=cos, sin=sin)
    if q.dtype != k.dtype:
        raise TypeError(f"q and k must have the same dtype, got q {q.dtype} and k {k.dtype}")
    if unsqueeze_dim not in (1, 2, -3, -2):
        raise ValueError(
            "unsqueeze_dim must be 1 (q, k laid out (bsz, heads, seq, head_dim)) or 2 "
            f"((bsz, seq, heads, head_dim)), got {unsqueeze_dim}"
        )
    seq_dim = 2 if unsqueeze_dim in (1, -3) else 1
    if q.dim() != 4 or k.dim() != 4:
        raise ValueError(f"q and k must be 4-D, got q {tuple(q.shape)} and k {tuple(k.shape)}")
    if position_ids is not None and cos.dim() == 2:
        if position_ids.dtype.is_floating_point or position_ids.dtype == torch.bool:
            raise TypeError(f"position_ids must be an integer tensor, got dtype {position_ids.dtype}")
        if sin.dim() != 2:
            raise ValueError(
                f"cos and sin must both be 2-D tables, got {tuple(cos.shape)} and {tuple(sin.shape)}"
            )
        cos = _select_positions(cos, position_ids)
        sin = _select_positions(sin, position_ids)
    if seq_dim == 1:  # (bsz, seq, heads, head_dim) -> a (bsz, heads, seq, head_dim) view
        q, k = q.transpose(1, 2), k.transpose(1, 2)

    bsz, _, seq_len, head_dim = q.shape
    if head_dim % 2 != 0:
        raise ValueError(f"head_dim (last dim of q) must be even to rotate halves, got {head_dim}")
    if k.shape[0] != bsz or k.shape[2] != seq_len or k.shape[3] != head_dim:
        raise ValueError(
            f"k {tuple(k.shape)} must match q {tuple(q.shape)} in batch, seq and head_dim "
            f"(layout (bsz, heads, seq, head_dim) after unsqueeze_dim={unsqueeze_dim})"
        )
    for name, table in (("cos", cos), ("sin", sin)):
        if table.dim() != 3 or table.shape[0] not in (1, bsz) or table.shape[1:] != (seq_len, head_dim):
            raise ValueError(
                f"{name} must have shape (1 or {bsz}, {seq_len}, {head_dim}) = (1 or bsz, seq, head_dim) "
                f"to match q {tuple(q.shape)}, got {tuple(table.shape)}"
            )
    q_embed, k_embed = rope_forward(q, k, cos, sin)
    if seq_dim == 1:
        q_embed, k_embed = q_embed.transpose(1, 2), k_embed.transpose(1, 2)
    return q_embed, k_embed


def rope_partial(
    q: torch.Tensor,
    k: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    position_ids: torch.Tensor | None = None,
    unsqueeze_dim: int = 1,
    rotary_dim: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``rope`` with the table layouts Liger Kernel 0.8's ``liger_rotary_pos_emb`` accepts as well.

    cos and sin may also be 2-D ``(seq, head_dim)`` (one table for the whole batch, as vision RoPE
    passes it) or 4-D with a size-1 head dim. Only the first ``rotary_dim`` entries of each head are
    rotated (partial RoPE), the rest pass through; by default ``rotary_dim`` is the width of cos
    (capped at head_dim). A table of width ``rotary_dim / 2`` holds one half (GPT-OSS) and is
    repeated, since rotate-half applies the same half to both halves of the head.
    """
    if cos.dim() == 4 and sin.dim() == 4:
        head_axis = unsqueeze_dim if cos.shape[unsqueeze_dim] == 1 else 1
        cos, sin = cos.squeeze(head_axis), sin.squeeze(head_axis)
    if cos.dim() == 2 and sin.dim() == 2 and position_ids is None:
        cos, sin = cos.unsqueeze(0), sin.unsqueeze(0)
    head_dim = q.shape[-1]
    if rotary_dim is None:
        rotary_dim = min(cos.shape[-1], head_dim)
    if rotary_dim == head_dim and cos.shape[-1] == head_dim:  # the whole head: rope checks the rest
        return rope(q, k, cos, sin, position_ids, unsqueeze_dim)
    if rotary_dim % 2 or not 0 < rotary_dim <= head_dim:
        raise ValueError(f"rotary_dim must be even and in (0, head_dim={head_dim}], got {rotary_dim}")
    if cos.shape[-1] == rotary_dim // 2 and sin.shape[-1] == rotary_dim // 2:
        cos, sin = torch.cat([cos, cos], -1), torch.cat([sin, sin], -1)
    elif cos.shape[-1] > rotary_dim:
        cos, sin = cos[..., :rotary_dim], sin[..., :rotary_dim]
    if rotary_dim == head_dim:
        return rope(q, k, cos, sin, position_ids, unsqueeze_dim)
    q_rot, k_rot = rope(q[..., :rotary_dim], k[..., :rotary_dim], cos, sin, position_ids, unsqueeze_dim)
    return (
        torch.cat([q_rot, q[..., rotary_dim:]], -1),
        torch.cat([k_rot, k[..., rotary_dim:]], -1),
    )


class LigerRopeFunction:
    """Liger Kernel 0.8's entry point: ``apply(q, k, cos, sin, position_ids=None, unsqueeze_dim=1,
    rotary_dim=None)`` returns (q_embed, k_embed); it is ``rope_partial``."""

    apply = staticmethod(rope_partial)
