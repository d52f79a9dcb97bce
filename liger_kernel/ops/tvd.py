"""Total variation distance between two distributions, loss and gradient in one pass, in Triton.

Per row (token) with probabilities p (``input``) and q (``target``), all arithmetic in fp32:
    TVD(P, Q) = 1/2 sum_j |p_j - q_j|,    dL/dp_j = 1/2 sign(p_j - q_j) = -dL/dq_j    (sign(0) = 0)
Rows whose label is ``ignore_index`` give 0. Reductions, with n the rows kept (all rows without labels;
a count of 0 counts as 1, so every row ignored gives 0, not NaN) and V the vocabulary:
    "batchmean": sum / n;  "mean": sum / (n V);  "sum": sum;  "none": 1/2 |p_j - q_j| per element.

Kept for backward: the gradients (of ``input``, and of ``target`` when it requires grad), made in the
forward already divided by the denominator; backward multiplies them by the incoming gradient.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from liger_kernel.ops.distill_utils import (
    check_labels,
    check_probabilities_pair,
    check_reduction,
    grad_buffers,
    loss_buffer,
    register_saved_grads_autograd,
    row_launch,
    saved_grads_fake,
    token_scale,
)
from liger_kernel.ops.jsd import kept_rows, row_ignored, store_zeros
from liger_kernel.ops.utils import as_rows, liger_op, use_triton


@triton.jit
def _tvd_kernel(
    P, stride_p, Q, stride_q, LOSS, stride_loss, DP, stride_dp, DQ, stride_dq, LABELS, stride_l, SCALE,
    n_cols, ignore_index,
    HAS_LABELS: tl.constexpr, ELEMENTWISE: tl.constexpr, NEED_DP: tl.constexpr, NEED_DQ: tl.constexpr,
    BLOCK: tl.constexpr,
):  # fmt: skip
    # One program per row: its loss (each element with ELEMENTWISE, else their fp32 sum) and the
    # gradients times SCALE.
    row = tl.program_id(0).to(tl.int64)
    loss_row = LOSS + row * stride_loss
    if row_ignored(LABELS, stride_l, row, ignore_index, HAS_LABELS):
        if ELEMENTWISE:
            store_zeros(loss_row, n_cols, BLOCK)
        else:
            tl.store(loss_row, 0.0)
        if NEED_DP:
            store_zeros(DP + row * stride_dp, n_cols, BLOCK)
        if NEED_DQ:
            store_zeros(DQ + row * stride_dq, n_cols, BLOCK)
    else:
        half_scale = 0.5 * tl.load(SCALE)
        acc = tl.zeros((BLOCK,), dtype=tl.float32)
        for start in range(0, n_cols, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            mask = cols < n_cols
            p = tl.load(P + row * stride_p + cols, mask=mask, other=0.0).to(tl.float32)
            q = tl.load(Q + row * stride_q + cols, mask=mask, other=0.0).to(tl.float32)
            loss = 0.5 * tl.abs(p - q)
            if ELEMENTWISE:
                tl.store(loss_row + cols, loss.to(LOSS.dtype.element_ty), mask=mask)
            else:
                acc += loss  # masked lanes load 0 for both: |0 - 0| = 0
            grad = tl.where(p > q, half_scale, tl.where(p < q, -half_scale, 0.0))
            if NEED_DP:
                tl.store(DP + row * stride_dp + cols, grad.to(DP.dtype.element_ty), mask=mask)
            if NEED_DQ:
                tl.store(DQ + row * stride_dq + cols, (-grad).to(DQ.dtype.element_ty), mask=mask)
        if not ELEMENTWISE:
            tl.store(loss_row, tl.sum(acc, 0))


# --- host side ---------------------------------------------------------------------------------------


def tvd_rows(
    p: torch.Tensor,
    q: torch.Tensor,
    labels: torch.Tensor | None,
    ignore_index: int,
    scale: torch.Tensor,
    elementwise: bool,
    grad_p: torch.Tensor | None,
    grad_q: torch.Tensor | None,
) -> torch.Tensor:
    """Loss of 2-D rows (elementwise in p's dtype, or per row in fp32) and gradients times ``scale``."""
    n_rows, n_cols = p.shape
    loss = loss_buffer(p, elementwise)
    if n_rows == 0:
        return loss
    if not use_triton("tvd", p):
        keep = kept_rows(labels, ignore_index, p)
        diff = p.float() - q.float()
        values = torch.where(keep, 0.5 * diff.abs(), 0.0)
        loss.copy_(values if elementwise else values.sum(1))
        grad = torch.where(keep, 0.5 * diff.sign() * scale, 0.0)
        for g, sign in ((grad_p, 1.0), (grad_q, -1.0)):
            if g is not None:
                g.copy_(grad * sign)
        return loss
    block, warps = row_launch(n_cols)
    _tvd_kernel[(n_rows,)](
        p, p.stride(0), q, q.stride(0), loss, loss.stride(0),
        grad_p if grad_p is not None else loss, grad_p.stride(0) if grad_p is not None else 0,
        grad_q if grad_q is not None else loss, grad_q.stride(0) if grad_q is not None else 0,
        labels if labels is not None else loss, labels.stride(0) if labels is not None else 0,
        scale, n_cols, ignore_index,
        HAS_LABELS=labels is not None, ELEMENTWISE=elementwise, NEED_DP=grad_p is not None,
        NEED_DQ=grad_q is not None, BLOCK=block, num_warps=warps,
    )  # fmt: skip
    return loss


# --- torch.library registration: opaque to torch.compile, so no graph break --------------------------


@liger_op("liger::tvd_forward", mutates_args=())
def tvd_forward(
    p: torch.Tensor,
    q: torch.Tensor,
    labels: torch.Tensor | None,
    reduction: str,
    ignore_index: int,
    need_grad_p: bool,
    need_grad_q: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss in p's dtype: (rows, V) for "none", else a scalar; dL/dp; dL/dq) of 2-D rows."""
    n_rows, n_cols = p.shape
    grad_p, grad_q = grad_buffers(p, q, need_grad_p, need_grad_q)
    scale = token_scale(labels, ignore_index, n_rows, p.device)
    if reduction in ("sum", "none"):
        scale = torch.ones_like(scale)
    elif reduction == "mean":
        scale = scale / n_cols
    elementwise = reduction == "none"
    loss = tvd_rows(p, q, labels, ignore_index, scale, elementwise, grad_p, grad_q)
    if not elementwise:
        loss = (loss.sum() * scale[0]).to(p.dtype)
    return (
        loss,
        grad_p if grad_p is not None else p.new_empty(0),
        grad_q if grad_q is not None else q.new_empty(0),
    )


@tvd_forward.register_fake
def _(p, q, labels, reduction, ignore_index, need_grad_p, need_grad_q):
    loss = (
        torch.empty_like(p, memory_format=torch.contiguous_format) if reduction == "none" else p.new_empty(())
    )
    return (loss, *saved_grads_fake(p, q, need_grad_p, need_grad_q))


register_saved_grads_autograd(tvd_forward, slice(5, 7), 7)


def tvd(
    input: torch.Tensor,
    target: torch.Tensor,
    shift_labels: torch.Tensor | None = None,
    reduction: str = "batchmean",
    ignore_index: int = -100,
) -> torch.Tensor:
    """Total variation distance of same-shape probabilities ``input`` and ``target`` (..., V), rows
    with ``shift_labels == ignore_index`` left out; see the module docstring for the reductions."""
    check_probabilities_pair("input", input, "target", target)
    check_reduction(reduction)
    p, q = as_rows(input), as_rows(target)
    check_labels(shift_labels, p.shape[0], input.device, "shift_labels")
    labels = None if shift_labels is None else shift_labels.reshape(-1)
    grad_on = torch.is_grad_enabled()
    loss, _gp, _gq = tvd_forward(
        p, q, labels, reduction, int(ignore_index), grad_on and input.requires_grad,
        grad_on and target.requires_grad,
    )  # fmt: skip
    return loss.view(input.shape) if reduction == "none" else loss
