"""RMSNorm, forward and backward, in Triton.

Forward, for each row x of length N (all arithmetic in fp32):
    rstd = 1 / sqrt(mean(x^2) + eps)
    n    = x * rstd
    y    = n * (offset + w)
casting_mode says where results are rounded, to match the module a kernel replaces:
    "llama": n is rounded to x's dtype before the product with w (Hugging Face LlamaRMSNorm);
             y has the dtype of x promoted with w's.
    "gemma": everything in fp32, y rounded once to x's dtype (GemmaRMSNorm, offset 1).
    "none":  y rounded once to x's dtype promoted with w's.

Backward, with w' = offset + w and dn = dy * w':
    dx = rstd * (dn - n * mean(dn * n))
    dw = sum over rows of dy * n      (n as rounded in the forward for "llama")

Kept for backward: x, w and rstd (one fp32 per row); y is not kept.
The kernels also serve ``fused_add_rms_norm`` (constexpr switches, off here): the forward can normalize
h = x + residual (rounded to the promoted dtype, and stored), the backward add a gradient of h by
another path to dx before rounding it.
The backward runs a persistent grid: each program walks a contiguous range of rows, writes dx for
them and keeps its share of dw in registers; the shares (programs x N, fp32) are summed at the end.
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

CASTING_MODES = {"llama": 0, "gemma": 1, "none": 2}
_LLAMA = tl.constexpr(0)


@triton.jit
def _rms_norm_forward_kernel(
    X,
    Y,
    W,
    RSTD,
    stride_x,
    stride_y,
    n_rows,
    n_cols,
    eps,
    offset,
    R,
    H,
    stride_r,
    stride_h,
    CASTING: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr = False,
):
    # HAS_RESIDUAL (fused_add_rms_norm): the row normalized is h = x + r, rounded to H's dtype and
    # stored to H first. Without it, R and H are X (unused but for H's dtype: the norm's input dtype).
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    row_mask = rows < n_rows
    col_mask = cols < n_cols
    mask = row_mask[:, None] & col_mask[None, :]
    rows64 = rows.to(tl.int64)

    x = tl.load(X + rows64[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        r = tl.load(R + rows64[:, None] * stride_r + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        h = (x + r).to(H.dtype.element_ty)
        tl.store(H + rows64[:, None] * stride_h + cols[None, :], h, mask=mask)
        x = h.to(tl.float32)
    w = tl.load(W + cols, mask=col_mask, other=0.0).to(tl.float32) + offset

    rstd = tl.rsqrt(tl.sum(x * x, axis=1) / n_cols + eps)
    n = x * rstd[:, None]
    if CASTING == _LLAMA:
        n = n.to(H.dtype.element_ty).to(tl.float32)
    y = n * w[None, :]

    tl.store(Y + rows64[:, None] * stride_y + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)
    tl.store(RSTD + rows, rstd, mask=row_mask)


@triton.jit
def _rms_norm_backward_kernel(
    DY,
    X,
    W,
    RSTD,
    DX,
    DW_PARTIAL,
    stride_dy,
    stride_x,
    stride_dx,
    n_rows,
    n_cols,
    offset,
    rows_per_program,
    DH_OUT,
    stride_dh_out,
    CASTING: tl.constexpr,
    COMPUTE_DW: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HAS_DH_OUT: tl.constexpr = False,
):
    # HAS_DH_OUT (fused_add_rms_norm): DH_OUT, the gradient reaching x by another path (h's own), is
    # added to dx in fp32 before dx is rounded.
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
        x = tl.load(X + rows64[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + rows64[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + rows, mask=row_mask, other=0.0)

        n = x * rstd[:, None]
        dn = dy * w[None, :]
        dot = tl.sum(dn * n, axis=1) / n_cols
        dx = (dn - n * dot[:, None]) * rstd[:, None]
        if HAS_DH_OUT:
            dh_out = tl.load(DH_OUT + rows64[:, None] * stride_dh_out + cols[None, :], mask=mask, other=0.0)
            dx += dh_out.to(tl.float32)
        tl.store(DX + rows64[:, None] * stride_dx + cols[None, :], dx.to(DX.dtype.element_ty), mask=mask)

        if COMPUTE_DW:
            if CASTING == _LLAMA:
                n = n.to(X.dtype.element_ty).to(tl.float32)
            dw += tl.sum(dy * n, axis=0)

    if COMPUTE_DW:
        tl.store(DW_PARTIAL + pid * n_cols + cols, dw, mask=col_mask)


def _output_dtype(x: torch.Tensor, weight: torch.Tensor, casting_mode: str) -> torch.dtype:
    if casting_mode == "gemma":
        return x.dtype
    return torch.promote_types(x.dtype, weight.dtype)


def _rms_norm_forward_torch(x2, weight, eps, offset, casting_mode):
    xf = x2.float()
    rstd = torch.rsqrt(xf.pow(2).mean(-1) + eps)
    n = xf * rstd[:, None]
    if casting_mode == "llama":
        n = n.to(x2.dtype).float()
    y = n * (weight.float() + offset)
    return y.to(_output_dtype(x2, weight, casting_mode)), rstd


def _rms_norm_backward_torch(dy2, x2, weight, rstd, offset, casting_mode, compute_dw, dh_out2=None):
    xf, dyf = x2.float(), dy2.float()
    n = xf * rstd[:, None]
    dn = dyf * (weight.float() + offset)
    dx = (dn - n * (dn * n).mean(-1, keepdim=True)) * rstd[:, None]
    if dh_out2 is not None:
        dx = dx + dh_out2.float()
    dw = None
    if compute_dw:
        if casting_mode == "llama":
            n = n.to(x2.dtype).float()
        dw = (dyf * n).sum(0)
    return dx.to(x2.dtype), dw


def rms_norm_forward_impl(
    x: torch.Tensor, weight: torch.Tensor, eps: float, offset: float, casting_mode: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward; returns y (shape of x) and rstd (one fp32 per row)."""
    x2 = as_rows(x)
    weight = weight.contiguous()  # the kernels read it with unit stride (an expanded one is copied)
    n_rows, n_cols = x2.shape
    if n_rows == 0 or not use_triton("rms_norm", x2):
        y, rstd = _rms_norm_forward_torch(x2, weight, eps, offset, casting_mode)
        return y.view(x.shape), rstd
    y, _h, rstd = launch_forward(x2, None, weight, eps, offset, casting_mode)
    return y.view(x.shape), rstd


def launch_forward(
    x2: torch.Tensor,
    r2: torch.Tensor | None,
    weight: torch.Tensor,
    eps: float,
    offset: float,
    casting_mode: str,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """The forward kernel on rows ``x2`` (unit stride along the last dim, a contiguous weight): (y, h,
    rstd). With ``r2`` (fused_add_rms_norm) it normalizes h = x2 + r2, rounded to the promoted dtype,
    and returns h too (None without)."""
    n_rows, n_cols = x2.shape
    h = (
        None
        if r2 is None
        else torch.empty(x2.shape, dtype=torch.promote_types(x2.dtype, r2.dtype), device=x2.device)
    )
    norm_input = x2 if h is None else h
    y = torch.empty((n_rows, n_cols), dtype=_output_dtype(norm_input, weight, casting_mode), device=x2.device)
    rstd = torch.empty(n_rows, dtype=torch.float32, device=x2.device)
    block_n = row_block_size(n_cols)
    block_m, num_warps = norm_forward_config(block_n)
    r2 = x2 if r2 is None else r2
    _rms_norm_forward_kernel[(cdiv(n_rows, block_m),)](
        x2, y, weight, rstd, x2.stride(0), y.stride(0), n_rows, n_cols, eps, offset,
        r2, norm_input, r2.stride(0), norm_input.stride(0),
        CASTING=CASTING_MODES[casting_mode], BLOCK_M=block_m, BLOCK_N=block_n,
        HAS_RESIDUAL=h is not None, num_warps=num_warps,
    )  # fmt: skip
    return y, h, rstd


def rms_norm_backward_impl(
    dy: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    rstd: torch.Tensor,
    offset: float,
    casting_mode: str,
    compute_dw: bool,
    dh_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Launch the backward; returns dx (shape and dtype of x) and dw (weight's dtype) or None.
    ``dh_out`` (shape of x, fused_add_rms_norm): a gradient of x by another path, added to dx in fp32."""
    x2, dy2 = as_rows(x), as_rows(dy)
    dh_out2 = None if dh_out is None else as_rows(dh_out)
    weight, rstd = (
        weight.contiguous(),
        rstd.contiguous(),
    )  # (the forward's rstd is; a direct call's may not be)
    n_rows, n_cols = x2.shape
    if n_rows == 0 or not use_triton("rms_norm", x2):
        dx, dw = _rms_norm_backward_torch(dy2, x2, weight, rstd, offset, casting_mode, compute_dw, dh_out2)
        return dx.view(x.shape), None if dw is None else dw.to(weight.dtype)
    dx = torch.empty((n_rows, n_cols), dtype=x.dtype, device=x.device)
    block_n = row_block_size(n_cols)
    block_m, num_warps = norm_backward_config(block_n)
    n_programs = norm_backward_programs(cdiv(n_rows, block_m), x.device)
    rows_per_program = cdiv(n_rows, n_programs)
    n_programs = cdiv(n_rows, rows_per_program)
    dw_partial = torch.empty((n_programs if compute_dw else 1, n_cols), dtype=torch.float32, device=x.device)
    _rms_norm_backward_kernel[(n_programs,)](
        dy2, x2, weight, rstd, dx, dw_partial, dy2.stride(0), x2.stride(0), dx.stride(0),
        n_rows, n_cols, offset, rows_per_program,
        dy2 if dh_out2 is None else dh_out2, 0 if dh_out2 is None else dh_out2.stride(0),
        CASTING=CASTING_MODES[casting_mode], COMPUTE_DW=compute_dw,
        BLOCK_M=block_m, BLOCK_N=block_n, HAS_DH_OUT=dh_out2 is not None, num_warps=num_warps,
    )  # fmt: skip
    dw = dw_partial.sum(0).to(weight.dtype) if compute_dw else None
    return dx.view(x.shape), dw


# --- torch.library registration: opaque to torch.compile, so no graph break --------------------------


@liger_op("liger::rms_norm_forward", mutates_args=())
def rms_norm_forward(
    x: torch.Tensor, weight: torch.Tensor, eps: float, offset: float, casting_mode: str
) -> tuple[torch.Tensor, torch.Tensor]:
    return rms_norm_forward_impl(x, weight, eps, offset, casting_mode)


@rms_norm_forward.register_fake
def _(x, weight, eps, offset, casting_mode):
    n_rows = x.numel() // x.shape[-1]
    y = x.new_empty(x.shape, dtype=_output_dtype(x, weight, casting_mode))
    return y, x.new_empty((n_rows,), dtype=torch.float32)


@liger_op("liger::rms_norm_backward", mutates_args=())
def rms_norm_backward(
    dy: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    rstd: torch.Tensor,
    offset: float,
    casting_mode: str,
    compute_dw: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    dx, dw = rms_norm_backward_impl(dy, x, weight, rstd, offset, casting_mode, compute_dw)
    # custom ops cannot return None; an empty tensor stands for "no dw".
    return dx, dw if dw is not None else weight.new_empty(0)


@rms_norm_backward.register_fake
def _(dy, x, weight, rstd, offset, casting_mode, compute_dw):
    # dx is always contiguous (the kernel writes rows); empty_like would keep a transposed x's strides,
    # and a compiled graph that views dx by those strides then fails (Gemma 3's q/k norms).
    return x.new_empty(x.shape), weight.new_empty(weight.shape if compute_dw else (0,))


def _setup_context(ctx, inputs, output):
    ctx.set_materialize_grads(False)  # no zero-filled gradients for the per-row statistics
    x, weight, _eps, offset, casting_mode = inputs
    _y, rstd = output
    ctx.save_for_backward(x, weight, rstd)
    ctx.offset = offset
    ctx.casting_mode = casting_mode


def _backward(ctx, dy, _drstd):
    x, weight, rstd = ctx.saved_tensors
    compute_dw = ctx.needs_input_grad[1]
    dx, dw = rms_norm_backward(dy, x, weight, rstd, ctx.offset, ctx.casting_mode, compute_dw)
    return dx, (dw if compute_dw else None), None, None, None


rms_norm_forward.register_autograd(_backward, setup_context=_setup_context)


def rms_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    eps: float = 1e-6,
    offset: float = 0.0,
    casting_mode: str = "llama",
) -> torch.Tensor:
    """RMSNorm over the last dim of ``x`` (any leading shape), differentiable in ``x`` and ``weight``."""
    check_rms_norm_args(x, weight, eps, casting_mode)
    y, _rstd = rms_norm_forward(x, weight, float(eps), float(offset), casting_mode)
    return y


def check_rms_norm_args(x: torch.Tensor, weight: torch.Tensor, eps: float, casting_mode: str) -> None:
    """Raise a clear error for arguments ``rms_norm`` cannot take (and the ops built on it)."""
    check_floating("x", x)
    check_floating("weight", weight)
    check_same_device(x=x, weight=weight)
    if casting_mode not in CASTING_MODES:
        raise ValueError(f"casting_mode must be one of {sorted(CASTING_MODES)}, got {casting_mode!r}")
    if x.dim() == 0 or x.shape[-1] == 0:
        raise ValueError(f"x must have a non-empty last dim to normalize over, got shape {tuple(x.shape)}")
    if weight.dim() != 1 or weight.shape[0] != x.shape[-1]:
        raise ValueError(
            f"weight must have shape ({x.shape[-1]},) to match the last dim of x {tuple(x.shape)}, "
            f"got {tuple(weight.shape)}"
        )
    if eps < 0:
        raise ValueError(f"eps must be non-negative, got {eps}")


def rms_norm_optional_weight(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    eps: float = 1e-6,
    offset: float = 0.0,
    casting_mode: str = "llama",
) -> torch.Tensor:
    """``rms_norm``, where ``weight=None`` means no affine step at all: ``y = x * rstd`` (offset unused).

    A weight of ones in x's dtype with offset 0 is exact in every casting mode and gets no gradient.
    """
    if weight is None:
        check_floating("x", x)
        weight, offset = x.new_ones(x.shape[-1] if x.dim() else 0), 0.0
    return rms_norm(x, weight, eps, offset, casting_mode)


class LigerRMSNormFunction:
    """Liger Kernel 0.8's entry point: ``apply(X, W, eps, offset=0.0, casting_mode="llama",
    in_place=True, row_mode=None)`` returns Y. A thin adapter over ``rms_norm`` (``W`` may be None);
    ``in_place`` and ``row_mode`` (kernel choices there) are accepted and ignored."""

    @staticmethod
    def apply(
        X: torch.Tensor,
        W: torch.Tensor | None,
        eps: float,
        offset: float = 0.0,
        casting_mode: str = "llama",
        in_place: bool = True,
        row_mode: bool | None = None,
    ) -> torch.Tensor:
        return rms_norm_optional_weight(X, W, eps, offset, casting_mode)
