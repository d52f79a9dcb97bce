"""Generalized Jensen-Shannon divergence, loss and gradient in one pass, in Triton.

Per row (token), with x = log Q (the student's log-probs, ``input``) and y = log P (the teacher's,
``target``), all arithmetic in fp32, beta in [0, 1]:
    beta = 0:  forward KL  KL(P || Q) = sum_j p_j (y_j - x_j)
               dL/dx_j = -p_j,                 dL/dy_j = p_j (y_j - x_j + 1)
    beta = 1:  reverse KL  KL(Q || P) = sum_j q_j (x_j - y_j)
               dL/dx_j = q_j (x_j - y_j + 1),  dL/dy_j = -q_j
    otherwise: M = beta P + (1 - beta) Q, log m_j = logaddexp(log beta + y_j, log(1 - beta) + x_j)
               JSD = beta KL(P || M) + (1 - beta) KL(Q || M)
                   = sum_j beta p_j (y_j - log m_j) + (1 - beta) q_j (x_j - log m_j)
               dL/dx_j = (1 - beta) q_j (x_j - log m_j),  dL/dy_j = beta p_j (y_j - log m_j)
(x and y are treated as free variables, as autograd through the formula does; the terms from
d log m / dx cancel.) This is TRL's ``generalized_jsd_loss`` definition, beta = 0 and 1 included.
The loss is the mean over the rows whose label is not ``ignore_index`` (all rows without labels);
every row ignored gives 0 and zero gradients.

Kept for backward: the gradients (input's shape and dtype; the target's only when it requires grad),
made in the forward already divided by the token count; backward multiplies them by the incoming
gradient in place (nothing when it is exactly 1).

``jsd_logits_rows`` is the same loss on raw logits with a temperature, for the fused linear JSD:
x = log_softmax(z_s / T), y = log_softmax(z_t / T). Its gradient with respect to the student's logits,
dL/dz_s = (g - q * sum(g)) / T with g = dL/dx above, is written to a buffer of the caller's
(which may be z_s itself). Three passes over the row:
the two logsumexps (online), then the loss and sum(g), then the gradient (beta = 0: sum(g) = -1, two
passes).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from liger_kernel.ops.distill_utils import (
    check_labels,
    check_probabilities_pair,
    grad_buffers,
    register_saved_grads_autograd,
    row_launch,
    saved_grads_fake,
    token_scale,
)
from liger_kernel.ops.utils import as_rows, liger_op, use_triton

# The empty state of an online logsumexp: max -FLT_MAX rather than -inf (-inf - -inf is NaN).
NEG_FLT_MAX = tl.constexpr(-3.4028234663852886e38)


def beta_mode(beta: float) -> int:
    """0: forward KL (beta == 0), 1: reverse KL (beta == 1), 2: the mixture."""
    return 0 if beta == 0.0 else 1 if beta == 1.0 else 2


@triton.jit
def _jsd_terms(x, y, beta, BETA_MODE: tl.constexpr):
    """Per element: (loss, dL/dx, dL/dy) for log-probs x (student) and y (teacher); see the docstring."""
    if BETA_MODE == 0:
        p = tl.exp(y)
        loss = p * (y - x)
        dx = -p
        dy = loss + p
    elif BETA_MODE == 1:
        q = tl.exp(x)
        loss = q * (x - y)
        dx = loss + q
        dy = -q
    else:
        top = tl.maximum(x, y)
        log_m = top + tl.log(beta * tl.exp(y - top) + (1.0 - beta) * tl.exp(x - top))
        dy = beta * tl.exp(y) * (y - log_m)
        dx = (1.0 - beta) * tl.exp(x) * (x - log_m)
        loss = dx + dy
    return loss, dx, dy


@triton.jit
def store_zeros(ptr, n_cols, BLOCK: tl.constexpr):
    zeros = tl.zeros((BLOCK,), dtype=tl.float32).to(ptr.dtype.element_ty)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        tl.store(ptr + cols, zeros, mask=cols < n_cols)


@triton.jit
def row_ignored(LABELS, stride_l, row, ignore_index, HAS_LABELS: tl.constexpr):
    """Whether row ``row``'s label is ignore_index (never without labels)."""
    ignored = False
    if HAS_LABELS:
        ignored = tl.load(LABELS + row * stride_l) == ignore_index
    return ignored


@triton.jit
def _jsd_kernel(
    X, stride_x, Y, stride_y, DX, stride_dx, DY, stride_dy, LABELS, stride_l, SCALE, LOSS,
    n_cols, ignore_index, beta,
    BETA_MODE: tl.constexpr, HAS_LABELS: tl.constexpr, NEED_DX: tl.constexpr, NEED_DY: tl.constexpr,
    BLOCK: tl.constexpr,
):  # fmt: skip
    # One program per row: its loss (unscaled, fp32) and its gradients times SCALE.
    row = tl.program_id(0).to(tl.int64)
    x_row = X + row * stride_x
    y_row = Y + row * stride_y
    dx_row = DX + row * stride_dx
    dy_row = DY + row * stride_dy
    if row_ignored(LABELS, stride_l, row, ignore_index, HAS_LABELS):
        tl.store(LOSS + row, 0.0)
        if NEED_DX:
            store_zeros(dx_row, n_cols, BLOCK)
        if NEED_DY:
            store_zeros(dy_row, n_cols, BLOCK)
    else:
        scale = tl.load(SCALE)
        acc = tl.zeros((BLOCK,), dtype=tl.float32)
        for start in range(0, n_cols, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            mask = cols < n_cols
            x = tl.load(x_row + cols, mask=mask, other=0.0).to(tl.float32)
            y = tl.load(y_row + cols, mask=mask, other=0.0).to(tl.float32)
            loss, dx, dy = _jsd_terms(x, y, beta, BETA_MODE)
            acc += tl.where(mask, loss, 0.0)
            if NEED_DX:
                tl.store(dx_row + cols, (dx * scale).to(DX.dtype.element_ty), mask=mask)
            if NEED_DY:
                tl.store(dy_row + cols, (dy * scale).to(DY.dtype.element_ty), mask=mask)
        tl.store(LOSS + row, tl.sum(acc, 0))


@triton.jit
def _log_softmax_block(z_row, cols, mask, inv_temp, top, log_d):
    # (z / T - top) - log_d: keeping the max apart from log(sum) leaves z / T - top exact (as torch's
    # log_softmax does), where z / T - lse would round with lse's magnitude.
    z = tl.load(z_row + cols, mask=mask, other=0.0).to(tl.float32)
    return (z * inv_temp - top) - log_d


@triton.jit
def _jsd_logits_kernel(
    ZS, stride_zs, ZT, stride_zt, G, stride_g, LABELS, stride_l, SCALE, LOSS,
    n_cols, ignore_index, beta, inv_temp,
    BETA_MODE: tl.constexpr, HAS_LABELS: tl.constexpr, WRITE_GRAD: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    # One program per row of student logits ZS and teacher logits ZT; writes dL/dZS into G (which may
    # be ZS itself: each element is read before it is written, by the same program).
    row = tl.program_id(0).to(tl.int64)
    zs_row = ZS + row * stride_zs
    zt_row = ZT + row * stride_zt
    g_row = G + row * stride_g
    if row_ignored(LABELS, stride_l, row, ignore_index, HAS_LABELS):
        tl.store(LOSS + row, 0.0)
        if WRITE_GRAD:
            store_zeros(g_row, n_cols, BLOCK)
    else:
        # Pass 1: both logsumexps of z / T, online (running max and sum of exp per lane).
        m_s = tl.full((BLOCK,), NEG_FLT_MAX, tl.float32)
        m_t = tl.full((BLOCK,), NEG_FLT_MAX, tl.float32)
        d_s = tl.zeros((BLOCK,), tl.float32)
        d_t = tl.zeros((BLOCK,), tl.float32)
        for start in range(0, n_cols, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            mask = cols < n_cols
            a = tl.load(zs_row + cols, mask=mask, other=float("-inf")).to(tl.float32) * inv_temp
            b = tl.load(zt_row + cols, mask=mask, other=float("-inf")).to(tl.float32) * inv_temp
            new_s = tl.maximum(m_s, a)
            new_t = tl.maximum(m_t, b)
            d_s = d_s * tl.exp(m_s - new_s) + tl.exp(a - new_s)
            d_t = d_t * tl.exp(m_t - new_t) + tl.exp(b - new_t)
            m_s = new_s
            m_t = new_t
        top_s = tl.max(m_s, 0)
        top_t = tl.max(m_t, 0)
        log_d_s = tl.log(tl.sum(d_s * tl.exp(m_s - top_s), 0))
        log_d_t = tl.log(tl.sum(d_t * tl.exp(m_t - top_t), 0))
        scale = tl.load(SCALE) * inv_temp

        # Pass 2: the loss and sum(g) (beta = 0: sum(g) = -1, and the gradient is written here).
        acc_loss = tl.zeros((BLOCK,), tl.float32)
        acc_g = tl.zeros((BLOCK,), tl.float32)
        for start in range(0, n_cols, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            mask = cols < n_cols
            x = _log_softmax_block(zs_row, cols, mask, inv_temp, top_s, log_d_s)
            y = _log_softmax_block(zt_row, cols, mask, inv_temp, top_t, log_d_t)
            loss, g, _dy = _jsd_terms(x, y, beta, BETA_MODE)
            acc_loss += tl.where(mask, loss, 0.0)
            if BETA_MODE == 0:
                if WRITE_GRAD:
                    grad = (g + tl.exp(x)) * scale
                    tl.store(g_row + cols, grad.to(G.dtype.element_ty), mask=mask)
            else:
                acc_g += tl.where(mask, g, 0.0)
        tl.store(LOSS + row, tl.sum(acc_loss, 0))

        # Pass 3: dL/dz_s = (g - q sum(g)) / T, over the student's logits.
        if BETA_MODE != 0:
            if WRITE_GRAD:
                sum_g = tl.sum(acc_g, 0)
                for start in range(0, n_cols, BLOCK):
                    cols = start + tl.arange(0, BLOCK)
                    mask = cols < n_cols
                    x = _log_softmax_block(zs_row, cols, mask, inv_temp, top_s, log_d_s)
                    y = _log_softmax_block(zt_row, cols, mask, inv_temp, top_t, log_d_t)
                    _loss, g, _dy = _jsd_terms(x, y, beta, BETA_MODE)
                    grad = (g - tl.exp(x) * sum_g) * scale
                    tl.store(g_row + cols, grad.to(G.dtype.element_ty), mask=mask)


# --- host side ---------------------------------------------------------------------------------------


def _jsd_terms_torch(x: torch.Tensor, y: torch.Tensor, beta: float):
    """_jsd_terms in PyTorch (fp32 in, fp32 out)."""
    mode = beta_mode(beta)
    if mode == 0:
        p = y.exp()
        loss = p * (y - x)
        return loss, -p, loss + p
    if mode == 1:
        q = x.exp()
        loss = q * (x - y)
        return loss, loss + q, -q
    log_m = torch.logaddexp(y + math.log(beta), x + math.log(1.0 - beta))
    dy = beta * y.exp() * (y - log_m)
    dx = (1.0 - beta) * x.exp() * (x - log_m)
    return dx + dy, dx, dy


def kept_rows(labels: torch.Tensor | None, ignore_index: int, like: torch.Tensor) -> torch.Tensor:
    if labels is None:
        return torch.ones(like.shape[0], 1, dtype=torch.bool, device=like.device)
    return (labels.reshape(-1) != ignore_index)[:, None]


def jsd_rows(
    log_q: torch.Tensor,
    log_p: torch.Tensor,
    labels: torch.Tensor | None,
    beta: float,
    ignore_index: int,
    scale: torch.Tensor,
    grad_q: torch.Tensor | None,
    grad_p: torch.Tensor | None,
) -> torch.Tensor:
    """Per-row JSD (fp32, unscaled) of 2-D log-probs with unit stride along V; writes the gradients
    times ``scale`` (a one-element fp32 tensor) into ``grad_q`` / ``grad_p`` when given."""
    n_rows, n_cols = log_q.shape
    loss = torch.empty(n_rows, dtype=torch.float32, device=log_q.device)
    if n_rows == 0:
        return loss
    if not use_triton("jsd", log_q):
        keep = kept_rows(labels, ignore_index, log_q)
        rows, dx, dy = _jsd_terms_torch(log_q.float(), log_p.float(), beta)
        loss.copy_(torch.where(keep, rows, 0.0).sum(1))
        for grad, d in ((grad_q, dx), (grad_p, dy)):
            if grad is not None:
                grad.copy_(torch.where(keep, d * scale, 0.0))
        return loss
    block, warps = row_launch(n_cols)
    dummy = loss
    _jsd_kernel[(n_rows,)](
        log_q, log_q.stride(0), log_p, log_p.stride(0),
        grad_q if grad_q is not None else dummy, grad_q.stride(0) if grad_q is not None else 0,
        grad_p if grad_p is not None else dummy, grad_p.stride(0) if grad_p is not None else 0,
        labels if labels is not None else dummy, labels.stride(0) if labels is not None else 0,
        scale, loss, n_cols, ignore_index, beta,
        BETA_MODE=beta_mode(beta), HAS_LABELS=labels is not None, NEED_DX=grad_q is not None,
        NEED_DY=grad_p is not None, BLOCK=block, num_warps=warps,
    )  # fmt: skip
    return loss


def jsd_logits_rows(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    grad: torch.Tensor | None,
    labels: torch.Tensor | None,
    beta: float,
    ignore_index: int,
    temperature: float,
    scale: torch.Tensor,
    loss: torch.Tensor,
) -> None:
    """JSD of log_softmax(logits / temperature), per row (fp32, unscaled, into ``loss``); writes
    dL/d(student logits) times ``scale`` into ``grad`` when given (2-D, unit stride along V; it may be
    ``student_logits`` itself). Used by the fused linear JSD, one chunk of rows at a time."""
    n_rows, n_cols = student_logits.shape
    if n_rows == 0:
        return
    if not use_triton("jsd", student_logits):
        keep = kept_rows(labels, ignore_index, student_logits)
        x = torch.log_softmax(student_logits.float() / temperature, dim=1)
        y = torch.log_softmax(teacher_logits.float() / temperature, dim=1)
        rows, g, _dy = _jsd_terms_torch(x, y, beta)
        loss.copy_(torch.where(keep, rows, 0.0).sum(1))
        if grad is not None:
            dz = (g - x.exp() * g.sum(1, keepdim=True)) * (scale / temperature)
            grad.copy_(torch.where(keep, dz, 0.0))
        return
    block, warps = row_launch(n_cols)
    g = grad if grad is not None else student_logits
    _jsd_logits_kernel[(n_rows,)](
        student_logits, student_logits.stride(0), teacher_logits, teacher_logits.stride(0), g, g.stride(0),
        labels if labels is not None else loss, labels.stride(0) if labels is not None else 0,
        scale, loss, n_cols, ignore_index, beta, 1.0 / temperature,
        BETA_MODE=beta_mode(beta), HAS_LABELS=labels is not None, WRITE_GRAD=grad is not None, BLOCK=block,
        num_warps=warps,
    )  # fmt: skip


# --- torch.library registration: opaque to torch.compile, so no graph break --------------------------


@liger_op("liger::jsd_forward", mutates_args=())
def jsd_forward(
    log_q: torch.Tensor,
    log_p: torch.Tensor,
    labels: torch.Tensor | None,
    beta: float,
    ignore_index: int,
    need_grad_q: bool,
    need_grad_p: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss in log_q's dtype, dL/dlog_q, dL/dlog_p) -- a gradient empty when not asked for."""
    grad_q, grad_p = grad_buffers(log_q, log_p, need_grad_q, need_grad_p)
    scale = token_scale(labels, ignore_index, log_q.shape[0], log_q.device)
    rows = jsd_rows(log_q, log_p, labels, beta, ignore_index, scale, grad_q, grad_p)
    loss = (rows.sum() * scale[0]).to(log_q.dtype)
    return (
        loss,
        grad_q if grad_q is not None else log_q.new_empty(0),
        grad_p if grad_p is not None else log_p.new_empty(0),
    )


@jsd_forward.register_fake
def _(log_q, log_p, labels, beta, ignore_index, need_grad_q, need_grad_p):
    return (log_q.new_empty(()), *saved_grads_fake(log_q, log_p, need_grad_q, need_grad_p))


register_saved_grads_autograd(jsd_forward, slice(5, 7), 7)


def check_beta(name: str, beta: float) -> None:
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {beta}")


def jsd(
    input: torch.Tensor,
    target: torch.Tensor,
    shift_labels: torch.Tensor | None = None,
    beta: float = 0.5,
    ignore_index: int = -100,
) -> torch.Tensor:
    """Generalized JSD of the student's log-probs ``input`` and the teacher's ``target`` (see the module
    docstring), both (..., V); ``shift_labels`` (one per row, or None) marks rows to ignore. Returns the
    mean over the rows kept, a scalar in ``input``'s dtype; gradients for both when they require grad."""
    check_probabilities_pair("input", input, "target", target)
    check_beta("beta", beta)
    log_q, log_p = as_rows(input), as_rows(target)
    check_labels(shift_labels, log_q.shape[0], input.device, "shift_labels")
    labels = None if shift_labels is None else shift_labels.reshape(-1)
    grad_on = torch.is_grad_enabled()
    loss, _gq, _gp = jsd_forward(
        log_q, log_p, labels, float(beta), int(ignore_index),
        grad_on and input.requires_grad, grad_on and target.requires_grad,
    )  # fmt: skip
    return loss
