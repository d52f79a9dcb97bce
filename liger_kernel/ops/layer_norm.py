"""LayerNorm, forward and backward, in Triton.

Forward, for each row x of length N (all arithmetic in fp32, y rounded once to x's dtype):
    mean = sum(x) / N
    rstd = 1 / sqrt(sum((x - mean)^2) / N + eps)      (biased variance, as torch.nn.LayerNorm)
    xhat = (x - mean) * rstd
    y    = xhat * w + b                                (b = 0 when there is no bias)

Backward, with dxhat = dy * w:
    dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
    dw = sum over rows of dy * xhat
    db = sum over rows of dy

Kept for backward: x, w and two fp32 per row (mean, rstd); y is not kept, xhat is recomputed.
The backward runs a persistent grid: each program walks a contiguous range of rows, writes dx for
them and keeps its shares of dw and db in registers; the shares (2 x programs x N, fp32) are summed
at the end.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from liger_kernel.ops.utils import (
    as_rows,
    cdiv,
    check_floating,
    check_same_device,
    liger_op,
    norm_backward_config,
    norm_backward_programs,
    norm_forward_config,
    row_block_size,
    use_triton,
)


@triton.jit
def _layer_norm_forward_kernel(
    X,
    Y,
    W,
    B,
    MEAN,
    RSTD,
    stride_x,
    stride_y,
    n_rows,
    n_cols,
    eps,
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    row_mask = rows < n_rows
    col_mask = cols < n_cols
    mask = row_mask[:, None] & col_mask[None, :]
    rows64 = rows.to(tl.int64)

    x = tl.load(X + rows64[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    w = tl.load(W + cols, mask=col_mask, other=0.0).to(tl.float32)

    mean = tl.sum(x, axis=1) / n_cols
    # Padding columns must not add (0 - mean)^2 to the variance.
    xc = tl.where(mask, x - mean[:, None], 0.0)
    rstd = tl.rsqrt(tl.sum(xc * xc, axis=1) / n_cols + eps)
    y = xc * rstd[:, None] * w[None, :]
    if HAS_BIAS:
        y += tl.load(B + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]

    tl.store(Y + rows64[:, None] * stride_y + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)
    tl.store(MEAN + rows, mean, mask=row_mask)
    tl.store(RSTD + rows, rstd, mask=row_mask)


@triton.jit
def _layer_norm_backward_kernel(
    DY,
    X,
    W,
    MEAN,
    RSTD,
    DX,
    DWDB_PARTIAL,
    stride_dy,
    stride_x,
    stride_dx,
    n_rows,
    n_cols,
    n_programs,
    rows_per_program,
    COMPUTE_DW: tl.constexpr,
    COMPUTE_DB: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    row_start = pid * rows_per_program
    row_end = tl.minimum(row_start + rows_per_program, n_rows)
    cols = tl.arange(0, BLOCK_N)
    col_mask = cols < n_cols
    w = tl.load(W + cols, mask=col_mask, other=0.0).to(tl.float32)
    dw = tl.zeros((BLOCK_N,), dtype=tl.float32)
    db = tl.zeros((BLOCK_N,), dtype=tl.float32)

    for start in range(row_start, row_end, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        row_mask = rows < row_end
        mask = row_mask[:, None] & col_mask[None, :]
        rows64 = rows.to(tl.int64)
        x = tl.load(X + rows64[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + rows64[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(MEAN + rows, mask=row_mask, other=0.0)
        rstd = tl.load(RSTD + rows, mask=row_mask, other=0.0)

        # Masked entries have x = dy = 0; xhat is zeroed there so they add nothing to the row means.
        xhat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
        dxhat = dy * w[None, :]
        mean_dxhat = tl.sum(dxhat, axis=1) / n_cols
        mean_dot = tl.sum(dxhat * xhat, axis=1) / n_cols
        dx = (dxhat - mean_dxhat[:, None] - xhat * mean_dot[:, None]) * rstd[:, None]
        tl.store(DX + rows64[:, None] * stride_dx + cols[None, :], dx.to(DX.dtype.element_ty), mask=mask)

        if COMPUTE_DW:
            dw += tl.sum(dy * xhat, axis=0)
        if COMPUTE_DB:
            db += tl.sum(dy, axis=0)

    # DWDB_PARTIAL is (2, n_programs, n_cols): plane 0 holds dw shares, plane 1 db shares.
    if COMPUTE_DW:
        tl.store(DWDB_PARTIAL + pid * n_cols + cols, dw, mask=col_mask)
    if COMPUTE_DB:
        tl.store(DWDB_PARTIAL + (n_programs + pid) * n_cols + cols, db, mask=col_mask)


def _layer_norm_forward_torch(x2, weight, bias, eps):
    xf = x2.float()
    mean = xf.mean(-1)
    xc = xf - mean[:, None]
    rstd = torch.rsqrt((xc * xc).mean(-1) + eps)
    y = xc * rstd[:, None] * weight.float()
    if bias is not None:
        y = y + bias.float()
    return y.to(x2.dtype), mean, rstd


def _layer_norm_backward_torch(dy2, x2, weight, mean, rstd, compute_dw, compute_db):
    xf, dyf = x2.float(), dy2.float()
    xhat = (xf - mean[:, None]) * rstd[:, None]
    dxhat = dyf * weight.float()
    dx = (dxhat - dxhat.mean(-1, keepdim=True) - xhat * (dxhat * xhat).mean(-1, keepdim=True)) * rstd[:, None]
    dw = (dyf * xhat).sum(0) if compute_dw else None
    db = dyf.sum(0) if compute_db else None
    return dx.to(x2.dtype), dw, db


def layer_norm_forward_impl(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launch the forward; returns y (shape and dtype of x), mean and rstd (one fp32 per row each)."""
    x2 = as_rows(x)
    # The kernels read the parameters with unit stride (``layer_norm`` passes them so; the op may be
    # called directly).
    weight = weight.contiguous()
    bias = bias.contiguous() if bias is not None else None
    n_rows, n_cols = x2.shape
    if n_rows == 0 or not use_triton("layer_norm", x2):
        y, mean, rstd = _layer_norm_forward_torch(x2, weight, bias, eps)
        return y.view(x.shape), mean, rstd
    y = torch.empty((n_rows, n_cols), dtype=x.dtype, device=x.device)
    mean = torch.empty(n_rows, dtype=torch.float32, device=x.device)
    rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)
    block_n = row_block_size(n_cols)
    block_m, num_warps = norm_forward_config(block_n)
    _layer_norm_forward_kernel[(cdiv(n_rows, block_m),)](
        x2, y, weight, bias if bias is not None else weight, mean, rstd,
        x2.stride(0), y.stride(0), n_rows, n_cols, eps,
        HAS_BIAS=bias is not None, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=num_warps,
    )  # fmt: skip
    return y.view(x.shape), mean, rstd


def layer_norm_backward_impl(
    dy: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    compute_dw: bool,
    compute_db: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the backward; returns dx (shape and dtype of x) and dwdb, fp32 of shape (2, N) holding dw
    (row 0) and db (row 1) when either is asked for, else (0, N); a row not asked for is left unset.
    """
    x2, dy2 = as_rows(x), as_rows(dy)
    weight, mean, rstd = weight.contiguous(), mean.contiguous(), rstd.contiguous()
    n_rows, n_cols = x2.shape
    if n_rows == 0 or not use_triton("layer_norm", x2):
        dx, dw, db = _layer_norm_backward_torch(dy2, x2, weight, mean, rstd, compute_dw, compute_db)
        dwdb = x2.new_zeros((2 if (compute_dw or compute_db) else 0, n_cols), dtype=torch.float32)
        if dw is not None:
            dwdb[0] = dw
        if db is not None:
            dwdb[1] = db
        return dx.view(x.shape), dwdb
    dx = torch.empty((n_rows, n_cols), dtype=x.dtype, device=x.device)
    block_n = row_block_size(n_cols)
    block_m, num_warps = norm_backward_config(block_n)
    n_programs = norm_backward_programs(cdiv(n_rows, block_m), x.device)
    rows_per_program = cdiv(n_rows, n_programs)
    n_programs = cdiv(n_rows, rows_per_program)
    planes = n_programs if (compute_dw or compute_db) else 1
    dwdb_partial = torch.empty((2, planes, n_cols), dtype=torch.float32, device=x.device)
    _layer_norm_backward_kernel[(n_programs,)](
        dy2, x2, weight, mean, rstd, dx, dwdb_partial,
        dy2.stride(0), x2.stride(0), dx.stride(0), n_rows, n_cols, planes, rows_per_program,
        COMPUTE_DW=compute_dw, COMPUTE_DB=compute_db,
        BLOCK_M=block_m, BLOCK_N=block_n, num_warps=num_warps,
    )  # fmt: skip
    if compute_dw or compute_db:
        dwdb = dwdb_partial.sum(1)  # one reduction launch for both
    else:
        dwdb = dwdb_partial.new_empty((0, n_cols))
    return dx.view(x.shape), dwdb


# --- torch.library registration: opaque to torch.compile, so no graph break --------------------------


@liger_op("liger::layer_norm_forward", mutates_args=())
def layer_norm_forward(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return layer_norm_forward_impl(x, weight, bias, eps)


@layer_norm_forward.register_fake
def _(x, weight, bias, eps):
    n_rows = x.numel() // x.shape[-1]
    stats = x.new_empty((n_rows,), dtype=torch.float32)
    return x.new_empty(x.shape), stats, torch.empty_like(stats)


@liger_op("liger::layer_norm_backward", mutates_args=())
def layer_norm_backward(
    dy: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    compute_dw: bool,
    compute_db: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    # dw and db travel in one (2, N) tensor: outputs of a custom op may not alias one another.
    return layer_norm_backward_impl(dy, x, weight, mean, rstd, compute_dw, compute_db)


@layer_norm_backward.register_fake
def _(dy, x, weight, mean, rstd, compute_dw, compute_db):
    n = x.shape[-1]
    return x.new_empty(x.shape), x.new_empty((2 if (compute_dw or compute_db) else 0, n), dtype=torch.float32)


def _setup_context(ctx, inputs, output):
    ctx.set_materialize_grads(False)  # no zero-filled gradients for the per-row statistics
    x, weight, bias, _eps = inputs
    _y, mean, rstd = output
    ctx.save_for_backward(x, weight, mean, rstd)
    ctx.has_bias = bias is not None
    ctx.bias_dtype = bias.dtype if bias is not None else None


def _backward(ctx, dy, _dmean, _drstd):
    x, weight, mean, rstd = ctx.saved_tensors
    compute_dw = ctx.needs_input_grad[1]
    compute_db = ctx.has_bias and ctx.needs_input_grad[2]
    dx, dwdb = layer_norm_backward(dy, x, weight, mean, rstd, compute_dw, compute_db)
    return (
        dx,
        dwdb[0].to(weight.dtype) if compute_dw else None,
        dwdb[1].to(ctx.bias_dtype) if compute_db else None,
        None,
    )


layer_norm_forward.register_autograd(_backward, setup_context=_setup_context)


def layer_norm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, eps: float = 1e-6
) -> torch.Tensor:
    """LayerNorm over the last dim of ``x`` (any leading shape), differentiable in ``x``, ``weight``, ``bias``.

    The result has ``x``'s dtype (statistics and the affine step are computed in fp32), as
    ``torch.nn.functional.layer_norm`` gives for a low-precision input with fp32 parameters.
    """
    check_floating("x", x)
    check_floating("weight", weight)
    if bias is not None:
        check_floating("bias", bias)
    check_same_device(x=x, weight=weight, bias=bias)
    if x.dim() == 0 or x.shape[-1] == 0:
        raise ValueError(f"x must have a non-empty last dim to normalize over, got shape {tuple(x.shape)}")
    if weight.dim() != 1 or weight.shape[0] != x.shape[-1]:
        raise ValueError(
            f"weight must have shape ({x.shape[-1]},) to match the last dim of x {tuple(x.shape)}, "
            f"got {tuple(weight.shape)}"
        )
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != x.shape[-1]):
        raise ValueError(
            f"bias must have shape ({x.shape[-1]},) to match the last dim of x {tuple(x.shape)}, "
            f"got {tuple(bias.shape)}"
        )
    if eps < 0:
        raise ValueError(f"eps must be non-negative, got {eps}")
    # The kernels index parameters with unit stride; contiguous() is free (and differentiable) otherwise.
    weight = weight.contiguous()
    bias = bias.contiguous() if bias is not None else None
    y, _mean, _rstd = layer_norm_forward(x, weight, bias, float(eps))
    return y


class LigerLayerNormFunction:
    """Liger Kernel 0.8's entry point: ``apply(X, W, B, eps)`` returns Y; a thin adapter over ``layer_norm``."""

    @staticmethod
    def apply(X: torch.Tensor, W: torch.Tensor, B: torch.Tensor | None, eps: float) -> torch.Tensor:
        return layer_norm(X, W, B, eps)
