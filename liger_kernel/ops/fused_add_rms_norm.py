"""Residual add followed by RMSNorm (a pre-norm decoder layer's ``h = x + residual; norm(h)``), in Triton.

Forward, for each row of x and residual (length N):
    h    = x + residual, computed in fp32 and rounded to h's dtype (x's promoted with residual's),
           exactly where an unfused ``x + residual`` in that dtype rounds it
    rstd = 1 / sqrt(mean(h^2) + eps)              (of the rounded h, as the unfused norm reads it)
    n    = h * rstd
    y    = n * (offset + w)
Returns (y, h). ``casting_mode`` and ``offset`` mean what they mean for ``rms_norm`` (the norm's input
dtype is h's): "llama" rounds n to h's dtype before the product with w, "gemma" and "none" round y once.

Backward, with dy and dh_out the incoming gradients of y and h, w' = offset + w and dn = dy * w':
    dh = rstd * (dn - n * mean(dn * n)) + dh_out   (the norm's gradient plus h's own, summed in fp32
                                                    and rounded once to h's dtype)
    dx = dresidual = dh                            (in x's and residual's dtypes)
    dw = sum over rows of dy * n                   (n as rounded in the forward for "llama")

Kept for backward: h, w and rstd (one fp32 per row); x, residual and y are not kept.
The backward runs a persistent grid, as ``rms_norm``'s does: each program walks a contiguous range of
rows and keeps its share of dw in fp32 registers; the shares (programs x N) are summed at the end.
The PyTorch fallback (CPU tensors without the interpreter) rounds the norm's gradient to h's dtype
before adding dh_out, as the unfused layer does.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from liger_kernel.ops.rms_norm import (
    CASTING_MODES,
    _output_dtype,
    _rms_norm_backward_torch,
    _rms_norm_forward_torch,
    check_rms_norm_args,
)
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

_LLAMA = tl.constexpr(CASTING_MODES["llama"])


@triton.jit
def _fused_add_rms_norm_forward_kernel(
    X,
    R,
    W,
    H,
    Y,
    RSTD,
    stride_x,
    stride_r,
    stride_h,
    stride_y,
    n_rows,
    n_cols,
    eps,
    offset,
    CASTING: tl.constexpr,
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
    r = tl.load(R + rows64[:, None] * stride_r + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    h = (x + r).to(H.dtype.element_ty)
    tl.store(H + rows64[:, None] * stride_h + cols[None, :], h, mask=mask)
    h = h.to(tl.float32)
    w = tl.load(W + cols, mask=col_mask, other=0.0).to(tl.float32) + offset

    rstd = tl.rsqrt(tl.sum(h * h, axis=1) / n_cols + eps)
    n = h * rstd[:, None]
    if CASTING == _LLAMA:
        n = n.to(H.dtype.element_ty).to(tl.float32)
    y = n * w[None, :]

    tl.store(Y + rows64[:, None] * stride_y + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)
    tl.store(RSTD + rows, rstd, mask=row_mask)


@triton.jit
def _fused_add_rms_norm_backward_kernel(
    DY,
    DH_OUT,
    H,
    W,
    RSTD,
    DH,
    DW_PARTIAL,
    stride_dy,
    stride_dh_out,
    stride_h,
    stride_dh,
    n_rows,
    n_cols,
    offset,
    rows_per_program,
    CASTING: tl.constexpr,
    HAS_DH_OUT: tl.constexpr,
    COMPUTE_DW: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    row_start = pid * rows_per_program
    row_end = tl.minimum(row_start + rows_per_program, n_rows)
    cols = tl.arange(0, BLOCK_N)
    col_mask = cols < n_cols
    w = tl.load(W + cols, mask=col_mask, other=0.0).to(tl.float32) + offset
    dw = tl.zeros((BLOCK_N,), dtype=tl.float32)

    for start in range(row_start, row_end, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        row_mask = rows < row_end
        mask = row_mask[:, None] & col_mask[None, :]
        rows64 = rows.to(tl.int64)
        h = tl.load(H + rows64[:, None] * stride_h + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + rows64[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + rows, mask=row_mask, other=0.0)

        n = h * rstd[:, None]
        dn = dy * w[None, :]
        dot = tl.sum(dn * n, axis=1) / n_cols
        dh = (dn - n * dot[:, None]) * rstd[:, None]
        if HAS_DH_OUT:
            dh_out = tl.load(DH_OUT + rows64[:, None] * stride_dh_out + cols[None, :], mask=mask, other=0.0)
            dh += dh_out.to(tl.float32)
        tl.store(DH + rows64[:, None] * stride_dh + cols[None, :], dh.to(DH.dtype.element_ty), mask=mask)

        if COMPUTE_DW:
            if CASTING == _LLAMA:
                n = n.to(H.dtype.element_ty).to(tl.float32)
            dw += tl.sum(dy * n, axis=0)

    if COMPUTE_DW:
        tl.store(DW_PARTIAL + pid * n_cols + cols, dw, mask=col_mask)


def _sum_dtype(x: torch.Tensor, residual: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, residual.dtype)


def fused_add_rms_norm_forward_impl(
    x: torch.Tensor,
    residual: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    offset: float,
    casting_mode: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launch the forward; returns y and h (shape of x) and rstd (one fp32 per row)."""
    x2, r2 = as_rows(x), as_rows(residual)
    weight = weight.contiguous()  # the kernel reads it with unit stride (an expanded one is copied)
    n_rows, n_cols = x2.shape
    h_dtype = _sum_dtype(x, residual)
    if n_rows == 0 or not use_triton("fused_add_rms_norm", x2):
        h = (x2.float() + r2.float()).to(h_dtype)
        y, rstd = _rms_norm_forward_torch(h, weight, eps, offset, casting_mode)
        return y.view(x.shape), h.view(x.shape), rstd
    h = torch.empty((n_rows, n_cols), dtype=h_dtype, device=x.device)
    y = torch.empty((n_rows, n_cols), dtype=_output_dtype(h, weight, casting_mode), device=x.device)
    rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)
    block_n = row_block_size(n_cols)
    block_m, num_warps = norm_forward_config(block_n)
    _fused_add_rms_norm_forward_kernel[(cdiv(n_rows, block_m),)](
        x2, r2, weight, h, y, rstd, x2.stride(0), r2.stride(0), h.stride(0), y.stride(0),
        n_rows, n_cols, eps, offset,
        CASTING=CASTING_MODES[casting_mode], BLOCK_M=block_m, BLOCK_N=block_n, num_warps=num_warps,
    )  # fmt: skip
    return y.view(x.shape), h.view(x.shape), rstd


def fused_add_rms_norm_backward_impl(
    dy: torch.Tensor,
    dh_out: torch.Tensor | None,
    h: torch.Tensor,
    weight: torch.Tensor,
    rstd: torch.Tensor,
    offset: float,
    casting_mode: str,
    compute_dw: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Launch the backward; returns dh (shape and dtype of h: the gradient of x and of residual) and dw
    (weight's dtype) or None. ``dh_out`` (the gradient reaching h by its other uses) may be None."""
    h2, dy2 = as_rows(h), as_rows(dy)
    dh_out2 = None if dh_out is None else as_rows(dh_out)
    weight, rstd = (
        weight.contiguous(),
        rstd.contiguous(),
    )  # (the forward's rstd is; a direct call's may not be)
    n_rows, n_cols = h2.shape
    if n_rows == 0 or not use_triton("fused_add_rms_norm", h2):
        dh, dw = _rms_norm_backward_torch(dy2, h2, weight, rstd, offset, casting_mode, compute_dw)
        if dh_out2 is not None:
            dh = dh + dh_out2.to(dh.dtype)
        return dh.view(h.shape), None if dw is None else dw.to(weight.dtype)
    dh = torch.empty((n_rows, n_cols), dtype=h.dtype, device=h.device)
    block_n = row_block_size(n_cols)
    block_m, num_warps = norm_backward_config(block_n)
    n_programs = norm_backward_programs(cdiv(n_rows, block_m), h.device)
    rows_per_program = cdiv(n_rows, n_programs)
    n_programs = cdiv(n_rows, rows_per_program)
    dw_partial = torch.empty((n_programs if compute_dw else 1, n_cols), dtype=torch.float32, device=h.device)
    has_dh_out = dh_out2 is not None
    _fused_add_rms_norm_backward_kernel[(n_programs,)](
        dy2, dh_out2 if has_dh_out else dy2, h2, weight, rstd, dh, dw_partial,
        dy2.stride(0), dh_out2.stride(0) if has_dh_out else 0, h2.stride(0), dh.stride(0),
        n_rows, n_cols, offset, rows_per_program,
        CASTING=CASTING_MODES[casting_mode], HAS_DH_OUT=has_dh_out, COMPUTE_DW=compute_dw,
        BLOCK_M=block_m, BLOCK_N=block_n, num_warps=num_warps,
    )  # fmt: skip
    dw = dw_partial.sum(0).to(weight.dtype) if compute_dw else None
    return dh.view(h.shape), dw


# --- torch.library registration: opaque to torch.compile, so no graph break --------------------------


@liger_op("liger::fused_add_rms_norm_forward", mutates_args=())
def fused_add_rms_norm_forward(
    x: torch.Tensor,
    residual: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    offset: float,
    casting_mode: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return fused_add_rms_norm_forward_impl(x, residual, weight, eps, offset, casting_mode)


@fused_add_rms_norm_forward.register_fake
def _(x, residual, weight, eps, offset, casting_mode):
    n_rows = x.numel() // x.shape[-1]
    h = x.new_empty(x.shape, dtype=_sum_dtype(x, residual))
    y = x.new_empty(x.shape, dtype=_output_dtype(h, weight, casting_mode))
    return y, h, x.new_empty((n_rows,), dtype=torch.float32)


@liger_op("liger::fused_add_rms_norm_backward", mutates_args=())
def fused_add_rms_norm_backward(
    dy: torch.Tensor,
    dh_out: torch.Tensor | None,
    h: torch.Tensor,
    weight: torch.Tensor,
    rstd: torch.Tensor,
    offset: float,
    casting_mode: str,
    compute_dw: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    dh, dw = fused_add_rms_norm_backward_impl(dy, dh_out, h, weight, rstd, offset, casting_mode, compute_dw)
    # custom ops cannot return None; an empty tensor stands for "no dw".
    return dh, dw if dw is not None else weight.new_empty(0)


@fused_add_rms_norm_backward.register_fake
def _(dy, dh_out, h, weight, rstd, offset, casting_mode, compute_dw):
    return h.new_empty(h.shape), weight.new_empty(weight.shape if compute_dw else (0,))


def _setup_context(ctx, inputs, output):
    ctx.set_materialize_grads(False)  # an unused h (or y) gets no zero-filled gradient
    x, residual, weight, _eps, offset, casting_mode = inputs
    _y, h, rstd = output
    ctx.save_for_backward(h, weight, rstd)
    ctx.offset = offset
    ctx.casting_mode = casting_mode
    ctx.input_dtypes = (x.dtype, residual.dtype)


def _backward(ctx, dy, dh_out, _drstd):
    h, weight, rstd = ctx.saved_tensors
    needs_x, needs_residual, compute_dw = ctx.needs_input_grad[:3]
    if dy is None:  # y unused: h's gradient passes straight through the add
        dh, dw = dh_out, None
        compute_dw = False
    else:
        dh, dw = fused_add_rms_norm_backward(
            dy, dh_out, h, weight, rstd, ctx.offset, ctx.casting_mode, compute_dw
        )
    x_dtype, residual_dtype = ctx.input_dtypes
    dx = dh.to(x_dtype) if needs_x and dh is not None else None
    dresidual = dh.to(residual_dtype) if needs_residual and dh is not None else None
    return dx, dresidual, (dw if compute_dw else None), None, None, None


fused_add_rms_norm_forward.register_autograd(_backward, setup_context=_setup_context)


def fused_add_rms_norm(
    x: torch.Tensor,
    residual: torch.Tensor,
    weight: torch.Tensor,
    eps: float = 1e-6,
    offset: float = 0.0,
    casting_mode: str = "llama",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``h = x + residual`` and RMSNorm of h over the last dim; returns (y, h), differentiable in
    ``x``, ``residual`` and ``weight``. See the module docstring for the roundings."""
    check_floating("residual", residual)
    check_same_device(x=x, residual=residual, weight=weight)
    check_rms_norm_args(x, weight, eps, casting_mode)
    if residual.shape != x.shape:
        raise ValueError(f"residual must have the shape of x {tuple(x.shape)}, got {tuple(residual.shape)}")
    y, h, _rstd = fused_add_rms_norm_forward(x, residual, weight, float(eps), float(offset), casting_mode)
    return y, h


class LigerFusedAddRMSNormFunction:
    """Liger Kernel 0.8's entry point: ``apply(X, R, W, eps, offset=0.0, casting_mode="llama",
    in_place=False)`` returns (Y, S) with S = X + R and Y = RMSNorm(S). A thin adapter over
    ``fused_add_rms_norm``; ``in_place`` (a buffer-reuse choice there) is accepted and ignored."""

    @staticmethod
    def apply(
        X: torch.Tensor,
        R: torch.Tensor,
        W: torch.Tensor,
        eps: float,
        offset: float = 0.0,
        casting_mode: str = "llama",
        in_place: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return fused_add_rms_norm(X, R, W, eps, offset, casting_mode)
