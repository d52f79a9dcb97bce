"""gpt-oss's gated activation on the experts' interleaved gate_up output, forward and backward, in Triton.

For one row of x (length 2N, gate and up interleaved: g = x[0::2], u = x[1::2]), with alpha and limit
from the config (swiglu_alpha, swiglu_limit), all arithmetic in fp32:
    forward:   gc = min(g, limit)            uc = clamp(u, -limit, limit)
               s  = sigmoid(alpha * gc)
               y  = gc * s * (uc + 1)                                  (length N)
    backward:  dg = dy * (uc + 1) * s * (1 + alpha * gc * (1 - s))    where g <= limit, else 0
               du = dy * gc * s                                        where -limit <= u <= limit, else 0
The clamps pass the gradient where the bound is met with equality, as ``torch.clamp`` does; (1 - s)
is computed as exp(-z) s for z = alpha * gc >= 0, accurate where s rounds to 1.
Kept for backward: x only (y, s and the clamps are recomputed). dx is a fresh (rows, 2N) buffer laid
out like x's rows, gate and up gradients interleaved again.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from liger_kernel.ops.glu import _block_indices, _grid, _launch_config
from liger_kernel.ops.utils import as_rows, check_floating, liger_op, use_triton


@triton.jit
def _clamped_gate(g, u, alpha, limit):
    """(gc, uc, s, 1 - s) for gate and up values in fp32."""
    gc = tl.minimum(g, limit)
    uc = tl.minimum(tl.maximum(u, -limit), limit)
    z = alpha * gc
    e = tl.exp(-tl.abs(z))  # in (0, 1]: no overflow
    s_pos = 1.0 / (1.0 + e)  # sigmoid(|z|)
    s = tl.where(z >= 0, s_pos, e * s_pos)
    one_minus_s = tl.where(z >= 0, e * s_pos, s_pos)
    return gc, uc, s, one_minus_s


@triton.jit
def _pair_tile(n_cols, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """This program's rows, its BLOCK_N columns of y (gate/up pairs) and the 2 * BLOCK_N contiguous
    columns of x that hold them, so x is loaded and stored as one contiguous tile (vectorized) and
    split into gate and up in registers, rather than as two stride-2 streams."""
    rows, cols = _block_indices(n_cols, BLOCK_M, BLOCK_N)
    first_col = (tl.program_id(0) % tl.cdiv(n_cols, BLOCK_N)) * BLOCK_N  # cols' first, as _block_indices
    x_cols = 2 * first_col + tl.arange(0, 2 * BLOCK_N)
    return rows, cols, x_cols


@triton.jit
def _gpt_oss_glu_forward_kernel(
    X,
    Y,
    stride_x,
    stride_y,
    n_rows,
    n_cols,
    alpha,
    limit,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    rows, cols, x_cols = _pair_tile(n_cols, BLOCK_M, BLOCK_N)
    row_ok = (rows < n_rows)[:, None]
    x_mask = row_ok & (x_cols < 2 * n_cols)[None, :]
    x = tl.load(X + rows.to(tl.int64)[:, None] * stride_x + x_cols[None, :], mask=x_mask, other=0.0)
    g, u = tl.split(tl.reshape(x.to(tl.float32), (BLOCK_M, BLOCK_N, 2)))
    gc, uc, s, _ = _clamped_gate(g, u, alpha, limit)
    y = gc * s * (uc + 1.0)
    y_mask = row_ok & (cols < n_cols)[None, :]
    tl.store(Y + rows.to(tl.int64)[:, None] * stride_y + cols[None, :], y.to(Y.dtype.element_ty), mask=y_mask)


@triton.jit
def _gpt_oss_glu_backward_kernel(
    DY,
    X,
    DX,
    stride_dy,
    stride_x,
    stride_dx,
    n_rows,
    n_cols,
    alpha,
    limit,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    rows, cols, x_cols = _pair_tile(n_cols, BLOCK_M, BLOCK_N)
    rows64 = rows.to(tl.int64)[:, None]
    row_ok = (rows < n_rows)[:, None]
    y_mask = row_ok & (cols < n_cols)[None, :]
    x_mask = row_ok & (x_cols < 2 * n_cols)[None, :]
    dy = tl.load(DY + rows64 * stride_dy + cols[None, :], mask=y_mask, other=0.0).to(tl.float32)
    x = tl.load(X + rows64 * stride_x + x_cols[None, :], mask=x_mask, other=0.0)
    g, u = tl.split(tl.reshape(x.to(tl.float32), (BLOCK_M, BLOCK_N, 2)))
    gc, uc, s, one_minus_s = _clamped_gate(g, u, alpha, limit)
    dg = dy * (uc + 1.0) * s * (1.0 + alpha * gc * one_minus_s)
    dg = tl.where(g <= limit, dg, 0.0)
    du = tl.where((u >= -limit) & (u <= limit), dy * gc * s, 0.0)
    dx = tl.reshape(tl.join(dg, du), (BLOCK_M, 2 * BLOCK_N))  # gate and up interleaved again
    tl.store(DX + rows64 * stride_dx + x_cols[None, :], dx.to(DX.dtype.element_ty), mask=x_mask)


def _launch(n_rows: int, n_cols: int) -> tuple[tuple[int], int, int, int]:
    """Grid and tile over y's (rows, pairs), as the GLU kernels tile their (rows, columns)."""
    block_m, block_n, num_warps = _launch_config(n_rows, n_cols)
    return _grid(n_rows, n_cols, block_m, block_n), block_m, block_n, num_warps


def _use_kernel(x: torch.Tensor) -> bool:
    # The kernel computes in fp32; float64 keeps its precision on the PyTorch path.
    return x.numel() > 0 and x.dtype != torch.float64 and use_triton("gpt_oss_glu", x)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _parts_torch(x: torch.Tensor, alpha: float, limit: float):
    xf = x.to(_compute_dtype(x))
    g, u = xf[..., 0::2], xf[..., 1::2]
    gc, uc = g.clamp(max=limit), u.clamp(-limit, limit)
    s = torch.sigmoid(alpha * gc)
    return g, u, gc, uc, s


# --- host launchers ----------------------------------------------------------------------------------


def gpt_oss_glu_forward_impl(x: torch.Tensor, alpha: float, limit: float) -> torch.Tensor:
    """y (x's leading shape, last dim halved, x's dtype) in a fresh contiguous buffer."""
    out_shape = (*x.shape[:-1], x.shape[-1] // 2)
    if not _use_kernel(x):
        _, _, gc, uc, s = _parts_torch(x, alpha, limit)
        return (gc * s * (uc + 1.0)).to(x.dtype).reshape(out_shape)
    x2 = as_rows(x)
    n_rows, n_cols = x2.shape[0], x2.shape[1] // 2
    y = torch.empty((n_rows, n_cols), dtype=x.dtype, device=x.device)
    grid, block_m, block_n, num_warps = _launch(n_rows, n_cols)
    _gpt_oss_glu_forward_kernel[grid](
        x2, y, x2.stride(0), y.stride(0), n_rows, n_cols, float(alpha), float(limit),
        BLOCK_M=block_m, BLOCK_N=block_n, num_warps=num_warps,
    )  # fmt: skip
    return y.view(out_shape)


def gpt_oss_glu_backward_impl(dy: torch.Tensor, x: torch.Tensor, alpha: float, limit: float) -> torch.Tensor:
    """dx (x's shape and dtype) in a fresh contiguous buffer."""
    if not _use_kernel(x):
        g, u, gc, uc, s = _parts_torch(x, alpha, limit)
        dyf = dy.to(gc.dtype)
        dg = torch.where(g <= limit, dyf * (uc + 1.0) * s * (1.0 + alpha * gc * (1.0 - s)), 0.0)
        du = torch.where((u >= -limit) & (u <= limit), dyf * gc * s, 0.0)
        return torch.stack((dg, du), dim=-1).reshape(x.shape).to(x.dtype)
    x2, dy2 = as_rows(x), as_rows(dy)
    n_rows, n_cols = dy2.shape
    dx = torch.empty(x2.shape, dtype=x.dtype, device=x.device)
    grid, block_m, block_n, num_warps = _launch(n_rows, n_cols)
    _gpt_oss_glu_backward_kernel[grid](
        dy2, x2, dx, dy2.stride(0), x2.stride(0), dx.stride(0), n_rows, n_cols, float(alpha), float(limit),
        BLOCK_M=block_m, BLOCK_N=block_n, num_warps=num_warps,
    )  # fmt: skip
    return dx.view(x.shape)


# --- torch.library registration: opaque to torch.compile, so no graph break --------------------------


@liger_op("liger::gpt_oss_glu_forward", mutates_args=())
def gpt_oss_glu_forward(x: torch.Tensor, alpha: float, limit: float) -> torch.Tensor:
    return gpt_oss_glu_forward_impl(x, alpha, limit)


@gpt_oss_glu_forward.register_fake
def _(x, alpha, limit):
    return x.new_empty((*x.shape[:-1], x.shape[-1] // 2))


@liger_op("liger::gpt_oss_glu_backward", mutates_args=())
def gpt_oss_glu_backward(dy: torch.Tensor, x: torch.Tensor, alpha: float, limit: float) -> torch.Tensor:
    return gpt_oss_glu_backward_impl(dy, x, alpha, limit)


@gpt_oss_glu_backward.register_fake
def _(dy, x, alpha, limit):
    return x.new_empty(x.shape)


def _setup_context(ctx, inputs, output):
    x, alpha, limit = inputs
    ctx.save_for_backward(x)
    ctx.alpha, ctx.limit = alpha, limit


def _backward(ctx, dy):
    (x,) = ctx.saved_tensors
    return gpt_oss_glu_backward(dy, x, ctx.alpha, ctx.limit), None, None


gpt_oss_glu_forward.register_autograd(_backward, setup_context=_setup_context)


def gpt_oss_glu(gate_up: torch.Tensor, alpha: float = 1.702, limit: float = 7.0) -> torch.Tensor:
    """``min(g, limit) * sigmoid(alpha * min(g, limit)) * (clamp(u, -limit, limit) + 1)`` for the
    interleaved ``gate_up`` (g = gate_up[..., ::2], u = gate_up[..., 1::2]); differentiable in gate_up.
    """
    check_floating("gate_up", gate_up)
    if gate_up.dim() == 0 or gate_up.shape[-1] % 2:
        raise ValueError(
            f"gate_up's last dim must be even (gate and up interleaved), got {tuple(gate_up.shape)}"
        )
    if not limit > 0:
        raise ValueError(f"limit must be positive, got {limit!r}")
    return gpt_oss_glu_forward(gate_up, float(alpha), float(limit))


__all__ = ["gpt_oss_glu"]
