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
The kernels are ``rms_norm``'s, one per direction: the forward with ``HAS_RESIDUAL`` (it loads x and
residual, stores the rounded h, then normalizes it), the backward with ``HAS_DH_OUT`` (it adds h's own
gradient to the norm's before rounding); launch settings, the persistent backward grid and the fp32 dw
shares are theirs. The PyTorch fallback (CPU tensors without the interpreter) does the same math.
"""

from __future__ import annotations

import torch

from liger_kernel.ops.rms_norm import (
    _output_dtype,
    _rms_norm_forward_torch,
    check_rms_norm_args,
    launch_forward,
    rms_norm_backward_impl,
)
from liger_kernel.ops.utils import as_rows, check_floating, check_same_device, liger_op, use_triton


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
    y, h, rstd = launch_forward(x2, r2, weight, eps, offset, casting_mode)
    return y.view(x.shape), h.view(x.shape), rstd


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
    dh, dw = rms_norm_backward_impl(dy, h, weight, rstd, offset, casting_mode, compute_dw, dh_out)
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
