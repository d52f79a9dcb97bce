"""Llama 4 rotary position embedding (interleaved pairs, complex multiplication), forward and backward.

Hugging Face's ``apply_rotary_emb`` (Llama 4's text attention) reads each head vector x of length D = 2P
as P complex numbers z_i = x[2i] + i x[2i+1] and multiplies them by the position's table
f_i = c_i + i s_i (``freqs_cis``: cos and sin of the angles, times the rope scaling); all arithmetic in
fp32, the result cast to x's dtype:
    forward  (z' = z * f):
        x'[2i]   = x[2i] * c_i - x[2i+1] * s_i
        x'[2i+1] = x[2i] * s_i + x[2i+1] * c_i
    backward (the transpose of that real 2x2 map, i.e. multiplication by the conjugate of f):
        dx[2i]   =  g[2i] * c_i + g[2i+1] * s_i
        dx[2i+1] = -g[2i] * s_i + g[2i+1] * c_i
The backward is the forward with s replaced by -s, so one kernel does both. The table is not
differentiated (Hugging Face computes it from a buffer); nothing but the table is kept for backward.

Triton has no complex dtype: the kernel reads the table's real view (1 or bsz, seq, P, 2), whose pairs
(c_i, s_i) sit next to each other like the pairs (x[2i], x[2i+1]) of a head. One program handles one
(batch, seq) position: it loads that position's table row once and applies it to all query heads, then
all key heads, in tiles of (heads x head_dim) that are loaded contiguously and split into even and odd
elements in registers. q and k are laid out (bsz, seq, heads, head_dim) as Hugging Face makes them
(views of the projections); any strides with a unit stride along head_dim are read as they are, and
the outputs are new tensors laid out like the inputs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from liger_kernel.ops.rope import _new_like, _unit_last_stride
from liger_kernel.ops.utils import (
    check_floating,
    check_same_device,
    liger_op,
    next_power_of_2,
    use_triton,
)


@triton.jit
def _rotate_pairs(
    X,
    OUT,
    x_base,
    o_base,
    stride_xh,
    stride_oh,
    n_heads,
    head_dim,
    c,
    s,
    BLOCK_H: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    cols = tl.arange(0, 2 * BLOCK_P)
    col_mask = cols < head_dim
    for h0 in range(0, n_heads, BLOCK_H):
        heads = h0 + tl.arange(0, BLOCK_H)
        mask = (heads < n_heads)[:, None] & col_mask[None, :]
        heads64 = heads.to(tl.int64)
        x = tl.load(X + x_base + heads64[:, None] * stride_xh + cols[None, :], mask=mask, other=0.0)
        x_even, x_odd = tl.split(tl.reshape(x.to(tl.float32), (BLOCK_H, BLOCK_P, 2)))
        o_even = x_even * c[None, :] - x_odd * s[None, :]
        o_odd = x_even * s[None, :] + x_odd * c[None, :]
        out = tl.reshape(tl.join(o_even, o_odd), (BLOCK_H, 2 * BLOCK_P))
        o_ptr = OUT + o_base + heads64[:, None] * stride_oh + cols[None, :]
        tl.store(o_ptr, out.to(OUT.dtype.element_ty), mask=mask)


@triton.jit
def _llama4_rope_kernel(
    Q,
    K,
    QO,
    KO,
    FREQS,
    stride_qb,
    stride_qs,
    stride_qh,
    stride_kb,
    stride_ks,
    stride_kh,
    stride_qob,
    stride_qos,
    stride_qoh,
    stride_kob,
    stride_kos,
    stride_koh,
    stride_fb,
    stride_fs,
    seq_len,
    n_q_heads,
    n_k_heads,
    head_dim,
    BACKWARD: tl.constexpr,
    BLOCK_HQ: tl.constexpr,
    BLOCK_HK: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    pid = tl.program_id(0)
    b = (pid // seq_len).to(tl.int64)
    s = (pid % seq_len).to(tl.int64)

    # The table row (c_0, s_0, c_1, s_1, ...): head_dim contiguous values. A batch-1 table has stride_fb 0.
    cols = tl.arange(0, 2 * BLOCK_P)
    f = tl.load(FREQS + b * stride_fb + s * stride_fs + cols, mask=cols < head_dim, other=0.0)
    cos, sin = tl.split(tl.reshape(f.to(tl.float32), (BLOCK_P, 2)))
    if BACKWARD:
        sin = -sin

    _rotate_pairs(
        Q, QO, b * stride_qb + s * stride_qs, b * stride_qob + s * stride_qos, stride_qh, stride_qoh,
        n_q_heads, head_dim, cos, sin, BLOCK_H=BLOCK_HQ, BLOCK_P=BLOCK_P,
    )  # fmt: skip
    _rotate_pairs(
        K, KO, b * stride_kb + s * stride_ks, b * stride_kob + s * stride_kos, stride_kh, stride_koh,
        n_k_heads, head_dim, cos, sin, BLOCK_H=BLOCK_HK, BLOCK_P=BLOCK_P,
    )  # fmt: skip


def _llama4_rope_config(
    n_q_heads: int, n_k_heads: int, head_dim: int, max_tile: int = 1024, num_warps: int = 4
) -> tuple[int, int, int, int]:
    """(query heads per tile, key heads per tile, pair block, warps).

    A tile is (heads x head_dim) elements; ``max_tile`` bounds it so registers stay small for many or
    wide heads (the same element count per tile as the rotate-half kernel, which loads two halves, and
    its 4 warps; not swept on a GPU yet: ``python -m benchmark.sweep_kernels llama4_rope``).
    """
    block_p = next_power_of_2(head_dim // 2)
    heads_cap = max(1, max_tile // (2 * block_p))
    block_hq = min(next_power_of_2(n_q_heads), heads_cap)
    block_hk = min(next_power_of_2(n_k_heads), heads_cap)
    return block_hq, block_hk, block_p, num_warps


def _llama4_rope_torch(
    x: torch.Tensor, freqs: torch.Tensor, backward: bool, out: torch.Tensor
) -> torch.Tensor:
    pairs = x.float().unflatten(-1, (-1, 2))
    x_even, x_odd = pairs[..., 0], pairs[..., 1]
    table = freqs.float().unsqueeze(2)  # (b, s, 1, P, 2): the same row for every head
    c, s = table[..., 0], table[..., 1]
    if backward:
        s = -s
    out.copy_(torch.stack((x_even * c - x_odd * s, x_even * s + x_odd * c), dim=-1).flatten(-2))
    return out


def _llama4_rope_apply(
    q: torch.Tensor, k: torch.Tensor, freqs: torch.Tensor, backward: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q (b, s, hq, d) and k (b, s, hk, d) by the real table (1 or b, s, d/2, 2) into new tensors."""
    q_out, k_out = _new_like(q, q.dtype), _new_like(k, k.dtype)
    bsz, seq_len, n_q_heads, head_dim = q.shape
    n_k_heads = k.shape[2]
    if q.numel() == 0 and k.numel() == 0:
        return q_out, k_out
    if not use_triton("llama4_rope", q):
        _llama4_rope_torch(q, freqs, backward, q_out)
        _llama4_rope_torch(k, freqs, backward, k_out)
        return q_out, k_out
    q, k = _unit_last_stride(q), _unit_last_stride(k)
    if freqs.stride(-1) != 1 or freqs.stride(-2) != 2:  # the kernel reads a row's pairs as one vector
        freqs = freqs.contiguous()
    block_hq, block_hk, block_p, num_warps = _llama4_rope_config(n_q_heads, n_k_heads, head_dim)
    stride_fb = freqs.stride(0) if freqs.shape[0] > 1 else 0
    _llama4_rope_kernel[(bsz * seq_len,)](
        q, k, q_out, k_out, freqs,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        q_out.stride(0), q_out.stride(1), q_out.stride(2), k_out.stride(0), k_out.stride(1), k_out.stride(2),
        stride_fb, freqs.stride(1),
        seq_len, n_q_heads, n_k_heads, head_dim,
        BACKWARD=backward, BLOCK_HQ=block_hq, BLOCK_HK=block_hk, BLOCK_P=block_p, num_warps=num_warps,
    )  # fmt: skip
    return q_out, k_out


# --- torch.library registration: opaque to torch.compile, so no graph break --------------------------


@liger_op("liger::llama4_rope_forward", mutates_args=())
def llama4_rope_forward(
    q: torch.Tensor, k: torch.Tensor, freqs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    return _llama4_rope_apply(q, k, freqs, False)


@llama4_rope_forward.register_fake
def _(q, k, freqs):
    return _new_like(q, q.dtype), _new_like(k, k.dtype)


@liger_op("liger::llama4_rope_backward", mutates_args=())
def llama4_rope_backward(
    dq: torch.Tensor, dk: torch.Tensor, freqs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    return _llama4_rope_apply(dq, dk, freqs, True)


@llama4_rope_backward.register_fake
def _(dq, dk, freqs):
    return _new_like(dq, dq.dtype), _new_like(dk, dk.dtype)


def _setup_context(ctx, inputs, output):
    q, k, freqs = inputs
    ctx.save_for_backward(freqs)
    ctx.q_dtype, ctx.k_dtype = q.dtype, k.dtype


def _backward(ctx, dq_out, dk_out):
    (freqs,) = ctx.saved_tensors
    dq, dk = llama4_rope_backward(dq_out, dk_out, freqs)
    # The table gets no gradient (Hugging Face computes it from the inv_freq buffer).
    return dq.to(ctx.q_dtype), dk.to(ctx.k_dtype), None


llama4_rope_forward.register_autograd(_backward, setup_context=_setup_context)


def llama4_rope(
    xq: torch.Tensor, xk: torch.Tensor, freqs_cis: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Llama 4's text RoPE; a drop-in for Hugging Face's ``apply_rotary_emb(xq, xk, freqs_cis)``.

    xq is (bsz, seq, n_q_heads, head_dim) and xk (bsz, seq, n_kv_heads, head_dim), with an even head_dim
    whose interleaved pairs (x[2i], x[2i+1]) are rotated; freqs_cis is the complex table of
    ``Llama4TextRotaryEmbedding``, (1 or bsz, seq, head_dim / 2), or (seq, head_dim / 2) for the whole
    batch. Returns (xq_out, xk_out), new tensors in the dtypes of xq and xk, differentiable in xq and
    xk (not in freqs_cis).
    """
    check_floating("xq", xq)
    check_floating("xk", xk)
    if not isinstance(freqs_cis, torch.Tensor) or not freqs_cis.is_complex():
        got = freqs_cis.dtype if isinstance(freqs_cis, torch.Tensor) else type(freqs_cis).__name__
        raise TypeError(f"freqs_cis must be a complex tensor (cos + i sin), got {got}")
    check_same_device(xq=xq, xk=xk, freqs_cis=freqs_cis)
    if xq.dim() != 4 or xk.dim() != 4:
        raise ValueError(
            f"xq and xk must be 4-D (bsz, seq, heads, head_dim), got {tuple(xq.shape)} and {tuple(xk.shape)}"
        )
    bsz, seq_len, _, head_dim = xq.shape
    if head_dim % 2:
        raise ValueError(f"head_dim (last dim of xq) must be even to rotate pairs, got {head_dim}")
    if xk.shape[0] != bsz or xk.shape[1] != seq_len or xk.shape[3] != head_dim:
        raise ValueError(
            f"xk {tuple(xk.shape)} must match xq {tuple(xq.shape)} in batch, seq and head_dim "
            "(layout (bsz, seq, heads, head_dim))"
        )
    if freqs_cis.dim() == 2:
        freqs_cis = freqs_cis.unsqueeze(0)
    if (
        freqs_cis.dim() != 3
        or freqs_cis.shape[0] not in (1, bsz)
        or freqs_cis.shape[1:] != (seq_len, head_dim // 2)
    ):
        raise ValueError(
            f"freqs_cis must have shape (1 or {bsz}, {seq_len}, {head_dim // 2}) = (1 or bsz, seq, "
            f"head_dim / 2) to match xq {tuple(xq.shape)}, got {tuple(freqs_cis.shape)}"
        )
    return llama4_rope_forward(xq, xk, torch.view_as_real(freqs_cis))


class LigerLlama4RopeFunction:
    """Liger Kernel 0.8's entry point: ``apply(q, k, freqs_cis, BLOCK_SIZE=None)`` returns (q_out, k_out);
    it is ``llama4_rope`` (``BLOCK_SIZE``, a launch setting there, is ignored)."""

    @staticmethod
    def apply(
        q: torch.Tensor, k: torch.Tensor, freqs_cis: torch.Tensor, BLOCK_SIZE: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return llama4_rope(q, k, freqs_cis)
