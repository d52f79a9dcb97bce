"""KL divergence as torch.nn.KLDivLoss defines it, loss and gradient in one pass, in Triton.

Per element, with x = ``input`` (log-probs) and t = ``target`` (all arithmetic in fp32):
    log_target=False:  l = t (log max(t, eps) - x)      dl/dx = -t    dl/dt = log max(t, eps) - x + [t > eps]
    log_target=True:   l = e^t (t - x)                  dl/dx = -e^t  dl/dt = e^t (t - x + 1)
(eps keeps 0 log 0 at 0, as torch's xlogy does; it changes nothing for t > eps.) Reductions, as torch:
    "sum": sum of l;  "batchmean": sum / input.shape[0];  "mean": sum / numel;  "none": l itself.
An empty input gives 0 for "batchmean" and "mean" (torch: NaN, from 0 / 0), as our cross entropy's mean
over no targets does.

Kept for backward: the gradient of ``input`` (and of ``target`` when it requires grad), made in the
forward already times the reduction's 1 / denominator, in the inputs' dtype; backward multiplies it by
the incoming gradient (in place for a scalar, nothing when it is exactly 1).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from liger_kernel.ops.distill_utils import (
    check_probabilities_pair,
    check_reduction,
    grad_buffers,
    loss_buffer,
    register_saved_grads_autograd,
    row_launch,
    saved_grads_fake,
)
from liger_kernel.ops.utils import as_rows, liger_op, use_triton


@triton.jit
def _kl_div_kernel(
    X, stride_x, T, stride_t, LOSS, stride_loss, DX, stride_dx, DT, stride_dt,
    n_cols, eps, scale,
    LOG_TARGET: tl.constexpr, ELEMENTWISE: tl.constexpr, NEED_DX: tl.constexpr, NEED_DT: tl.constexpr,
    BLOCK: tl.constexpr,
):  # fmt: skip
    # One program per row: the row's loss (each element with ELEMENTWISE, else their fp32 sum) and the
    # gradients times ``scale``.
    row = tl.program_id(0).to(tl.int64)
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < n_cols
        x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
        t = tl.load(T + row * stride_t + cols, mask=mask, other=0.0).to(tl.float32)
        if LOG_TARGET:
            p = tl.exp(t)
            loss = p * (t - x)
            dx = -p
            dt = loss + p
        else:
            log_t = tl.log(tl.maximum(t, eps))
            loss = t * (log_t - x)
            dx = -t
            dt = log_t - x + tl.where(t > eps, 1.0, 0.0)
        if ELEMENTWISE:
            tl.store(LOSS + row * stride_loss + cols, loss.to(LOSS.dtype.element_ty), mask=mask)
        else:
            acc += tl.where(mask, loss, 0.0)
        if NEED_DX:
            tl.store(DX + row * stride_dx + cols, (dx * scale).to(DX.dtype.element_ty), mask=mask)
        if NEED_DT:
            tl.store(DT + row * stride_dt + cols, (dt * scale).to(DT.dtype.element_ty), mask=mask)
    if not ELEMENTWISE:
        tl.store(LOSS + row, tl.sum(acc, 0))


# --- host side ---------------------------------------------------------------------------------------


def _kl_div_torch(x, t, log_target, eps):
    """(loss, dl/dx, dl/dt) per element in fp32: the kernel's math in PyTorch."""
    x, t = x.float(), t.float()
    if log_target:
        p = t.exp()
        loss = p * (t - x)
        return loss, -p, loss + p
    log_t = t.clamp(min=eps).log()
    return t * (log_t - x), -t, log_t - x + (t > eps).float()


def reduction_scale(reduction: str, shape: torch.Size) -> float:
    """1 / the denominator of a KLDivLoss reduction (torch's: batchmean divides by dim 0)."""
    if reduction == "batchmean":
        return 1.0 / max(shape[0], 1)
    if reduction == "mean":
        return 1.0 / max(shape.numel(), 1)
    return 1.0


def kl_div_rows(
    x: torch.Tensor,
    t: torch.Tensor,
    log_target: bool,
    eps: float,
    scale: float,
    elementwise: bool,
    grad_x: torch.Tensor | None,
    grad_t: torch.Tensor | None,
) -> torch.Tensor:
    """Loss of 2-D rows (elementwise in x's dtype, or per row in fp32) and gradients times ``scale``."""
    n_rows, n_cols = x.shape
    loss = loss_buffer(x, elementwise)
    if n_rows == 0:
        return loss
    if not use_triton("kl_div", x):
        values, dx, dt = _kl_div_torch(x, t, log_target, eps)
        loss.copy_(values if elementwise else values.sum(1))
        for grad, d in ((grad_x, dx), (grad_t, dt)):
            if grad is not None:
                grad.copy_(d * scale)
        return loss
    block, warps = row_launch(n_cols)
    _kl_div_kernel[(n_rows,)](
        x, x.stride(0), t, t.stride(0), loss, loss.stride(0),
        grad_x if grad_x is not None else loss, grad_x.stride(0) if grad_x is not None else 0,
        grad_t if grad_t is not None else loss, grad_t.stride(0) if grad_t is not None else 0,
        n_cols, eps, scale,
        LOG_TARGET=log_target, ELEMENTWISE=elementwise, NEED_DX=grad_x is not None,
        NEED_DT=grad_t is not None, BLOCK=block, num_warps=warps,
    )  # fmt: skip
    return loss


# --- torch.library registration: opaque to torch.compile, so no graph break --------------------------


@liger_op("liger::kl_div_forward", mutates_args=())
def kl_div_forward(
    x: torch.Tensor,
    t: torch.Tensor,
    reduction: str,
    log_target: bool,
    eps: float,
    scale: float,
    need_grad_x: bool,
    need_grad_t: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss in x's dtype: (rows, V) for "none", else a scalar; dl/dx; dl/dt) of 2-D rows."""
    grad_x, grad_t = grad_buffers(x, t, need_grad_x, need_grad_t)
    elementwise = reduction == "none"
    loss = kl_div_rows(x, t, log_target, eps, scale, elementwise, grad_x, grad_t)
    if not elementwise:
        loss = (loss.sum() * scale).to(x.dtype)
    return (
        loss,
        grad_x if grad_x is not None else x.new_empty(0),
        grad_t if grad_t is not None else t.new_empty(0),
    )


@kl_div_forward.register_fake
def _(x, t, reduction, log_target, eps, scale, need_grad_x, need_grad_t):
    loss = (
        torch.empty_like(x, memory_format=torch.contiguous_format) if reduction == "none" else x.new_empty(())
    )
    return (loss, *saved_grads_fake(x, t, need_grad_x, need_grad_t))


register_saved_grads_autograd(kl_div_forward, slice(6, 8), 8)


def kl_div(
    input: torch.Tensor,
    target: torch.Tensor,
    reduction: str = "batchmean",
    log_target: bool = False,
    eps: float = 1e-10,
) -> torch.Tensor:
    """``torch.nn.functional.kl_div(input, target, reduction=..., log_target=...)`` for same-shape
    ``input`` (log-probs) and ``target``; see the module docstring (``eps`` guards log(target))."""
    check_probabilities_pair("input", input, "target", target)
    check_reduction(reduction)
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    x, t = as_rows(input), as_rows(target)
    grad_on = torch.is_grad_enabled()
    loss, _gx, _gt = kl_div_forward(
        x, t, reduction, bool(log_target), float(eps), reduction_scale(reduction, input.shape),
        grad_on and input.requires_grad, grad_on and target.requires_grad,
    )  # fmt: skip
    return loss.view(input.shape) if reduction == "none" else loss
