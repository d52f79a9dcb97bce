"""Fused linear + generalized JSD: distillation from hidden states without ever holding (N, V) logits.

Forward, over chunks of rows (tokens) of the student's x_s (N, H_s) and the teacher's x_t (N, H_t), with
reused chunk buffers (chunk x V): fp32 logits of each model and the student's logits gradient in x_s's
dtype:
    z_s = x_s,c @ W_s^T,   z_t = x_t,c @ W_t^T     fp32 outputs of the low-precision matmuls (on a GPU
                                                    with torch >= 2.8 no fp32 copy of any operand)
    per row: JSD_beta of log_softmax(z_s / T) and log_softmax(z_t / T), and dz_s = dL/dz_s
             (ops/jsd.py ``jsd_logits_rows``: three passes over the row, fp32 arithmetic)
    dx_s,c = dz_s @ W_s                             written into its rows of dx_s
    dW_s  += dz_s^T @ x_s,c                         fp32 accumulator with accum_dtype=torch.float32
Logits in fp32 rather than in the models' dtype: a divergence is a small difference of nearly equal
distributions, and bf16 logits (2^-9 relative, 0.01 at a logit of 5) would put that rounding straight
into the loss and dz_s -- the eager computation's largest error. The loss is the mean over the rows
whose label is not ``ignore_index`` (all rows without labels), the count taken before the first chunk,
so the gradients come out already divided by it; every row ignored gives 0. The teacher is a
constant: its hidden states and weight get no gradient.

Kept for backward: dx_s (N x H_s) and dW_s (V x H_s); backward multiplies them by the incoming scalar in
place (a no-op launch when it is exactly 1), or out of place when the graph is kept for another backward
(retain_graph=True, traced) or under a torch.func transform (``distill_utils.scale_grad``). Memory beyond the inputs: those two, the chunk buffers
(``default_jsd_chunk_rows``: the fused linear cross entropy's cost rule under a memory budget) and one fp32
per row; ``_addmm_into`` makes the fp32 logits and accumulates the weight gradient.
"""

from __future__ import annotations

import torch

from liger_kernel.ops.distill_utils import check_labels, scale_grad, token_scale
from liger_kernel.ops.fused_linear_cross_entropy import (
    _addmm_into,
    cost_rule_rows,
    default_chunk_size,
    device_rates,
    eager_fraction_budget,
)
from liger_kernel.ops.jsd import check_beta, jsd_logits_rows
from liger_kernel.ops.utils import check_floating, check_same_device, liger_op

# Tuning knob (read at each call): the least bytes one chunk's buffers (two fp32 logits and one
# gradient in the student's dtype, 10 bytes per logit in bf16) may take when chunk_size is not given.
CHUNK_BYTES = 2**30


def default_jsd_chunk_rows(
    n_rows: int, hidden: int, vocab: int, element_size: int, bytes_per_logit: int, accum_size: int, device
) -> int:
    """Rows per chunk: the fused cross entropy's cost rule on the student's matmuls and its fp32 (or
    ``accum_size``) dW (fewer chunks, less dW re-read and re-written; ``cost_rule_rows``), capped by a
    memory budget for the chunk buffers (``bytes_per_logit`` per logit): what keeps the peak (dW, dx and
    the buffers) at a quarter of the plain computation's (both models' logits at ``element_size`` +
    8 bytes each; ``eager_fraction_budget``), never less than CHUNK_BYTES. At 16384 tokens, a 2048-wide
    student, vocab 128256, bf16: 4096 rows with an fp32 dW, 2048 with a bf16 one (it was 832 under a fixed
    1 GiB: 20 chunks, each re-reading and re-writing dW; H200: 90.7 -> 80.5 ms, benchmark/NOTES.md)."""
    budget = max(
        CHUNK_BYTES, eager_fraction_budget(n_rows, hidden, vocab, element_size, accum_size, models=2)
    )
    return min(
        cost_rule_rows(n_rows, hidden, vocab, element_size, accum_size, device_rates(device)),
        default_chunk_size(n_rows, vocab, bytes_per_logit, budget),
    )


def _chunked(
    xs: torch.Tensor,
    ws: torch.Tensor,
    xt: torch.Tensor,
    wt: torch.Tensor,
    labels: torch.Tensor | None,
    beta: float,
    ignore_index: int,
    temperature: float,
    accum_fp32: bool,
    need_x: bool,
    need_w: bool,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(loss (fp32 scalar), dx_s, dW_s) over chunks of ``chunk_size`` rows (0: the default)."""
    n_rows, vocab = xs.shape[0], ws.shape[0]
    device = xs.device
    scale = token_scale(labels, ignore_index, n_rows, device)
    loss_rows = torch.zeros(n_rows, dtype=torch.float32, device=device)
    grad_x = xs.new_empty(xs.shape) if need_x else None
    grad_w = None
    if need_w:
        grad_w = torch.empty(ws.shape, dtype=torch.float32 if accum_fp32 else ws.dtype, device=device)
        if n_rows == 0:
            grad_w.zero_()
    write_grad = need_x or need_w
    bytes_per_logit = 8 + (xs.element_size() if write_grad and xs.dtype != torch.float32 else 0)
    if chunk_size <= 0:  # auto; resolved here, where n_rows is concrete even under torch.compile
        accum_size = 4 if accum_fp32 else ws.element_size()
        chunk_size = default_jsd_chunk_rows(
            n_rows, xs.shape[1], vocab, xs.element_size(), bytes_per_logit, accum_size, device
        )
    rows = max(1, min(chunk_size, n_rows))
    buf_s = torch.empty((rows, vocab), dtype=torch.float32, device=device)
    buf_t = torch.empty((rows, vocab), dtype=torch.float32, device=device)
    # The gradient goes over the student's fp32 logits when the matmuls below can take it as it is.
    buf_g = buf_s if xs.dtype == torch.float32 else torch.empty((rows, vocab), dtype=xs.dtype, device=device)
    with torch.autocast(device.type, enabled=False):  # the dtypes are chosen here, not by autocast
        for start in range(0, n_rows, rows):
            end = min(start + rows, n_rows)
            xs_c = xs[start:end]
            z_s, z_t, dz_s = buf_s[: end - start], buf_t[: end - start], buf_g[: end - start]
            _addmm_into(z_s, xs_c, ws.t(), first=True)
            _addmm_into(z_t, xt[start:end], wt.t(), first=True)
            jsd_logits_rows(
                z_s, z_t, dz_s if write_grad else None, None if labels is None else labels[start:end], beta,
                ignore_index, temperature, scale, loss_rows[start:end],
            )  # fmt: skip
            if need_x:
                torch.mm(dz_s, ws, out=grad_x[start:end])
            if need_w:
                _addmm_into(grad_w, dz_s.t(), xs_c, first=start == 0)
    if grad_w is not None:
        grad_w = grad_w.to(ws.dtype)
    return loss_rows.sum() * scale[0], grad_x, grad_w


# --- torch.library registration: opaque to torch.compile, so no graph break --------------------------


@liger_op("liger::fused_linear_jsd_forward", mutates_args=())
def fused_linear_jsd_forward(
    student_input: torch.Tensor,
    student_weight: torch.Tensor,
    teacher_input: torch.Tensor,
    teacher_weight: torch.Tensor,
    labels: torch.Tensor | None,
    beta: float,
    ignore_index: int,
    temperature: float,
    accum_fp32: bool,
    need_x: bool,
    need_w: bool,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss (fp32), dx_s, dW_s) -- each gradient empty when not asked for."""
    loss, gx, gw = _chunked(
        student_input, student_weight, teacher_input, teacher_weight, labels, beta, ignore_index,
        temperature, accum_fp32, need_x, need_w, chunk_size,
    )  # fmt: skip
    return (
        loss,
        gx if gx is not None else student_input.new_empty(0),
        gw if gw is not None else student_weight.new_empty(0),
    )


@fused_linear_jsd_forward.register_fake
def _(student_input, student_weight, teacher_input, teacher_weight, labels, beta, ignore_index,
      temperature, accum_fp32, need_x, need_w, chunk_size):  # fmt: skip
    return (
        student_input.new_empty((), dtype=torch.float32),
        student_input.new_empty(student_input.shape) if need_x else student_input.new_empty(0),
        student_weight.new_empty(student_weight.shape) if need_w else student_weight.new_empty(0),
    )


def _setup_context(ctx, inputs, output):
    _loss, gx, gw = output
    ctx.mark_non_differentiable(gx, gw)
    # Autograd would otherwise hand backward zero-filled gradients for these outputs (a V x H buffer).
    ctx.set_materialize_grads(False)
    ctx.needs = inputs[9:11]
    ctx.save_for_backward(gx, gw)


def _backward(ctx, grad_loss, _gx, _gw):
    gx, gw = ctx.saved_tensors
    need_x, need_w = ctx.needs
    return (
        scale_grad(gx, grad_loss) if need_x else None,
        scale_grad(gw, grad_loss) if need_w else None,
        *([None] * 10),
    )


fused_linear_jsd_forward.register_autograd(_backward, setup_context=_setup_context)


def fused_linear_jsd(
    student_input: torch.Tensor,
    student_weight: torch.Tensor,
    teacher_input: torch.Tensor,
    teacher_weight: torch.Tensor,
    shift_labels: torch.Tensor | None = None,
    jsd_beta: float = 0.5,
    ignore_index: int = -100,
    temperature: float = 1.0,
    accum_dtype: torch.dtype | None = None,
    *,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Generalized JSD (``liger_kernel.ops.jsd``) of log_softmax(student_input @ student_weight.T / T)
    and log_softmax(teacher_input @ teacher_weight.T / T), never materializing either logits tensor.

    ``student_input`` (..., H_s), ``student_weight`` (V, H_s), ``teacher_input`` (..., H_t) with the same
    leading dims, ``teacher_weight`` (V, H_t); ``shift_labels`` (one per token, or None) marks tokens to
    ignore. Returns the mean over the tokens kept (fp32 scalar). Gradients reach ``student_input`` and
    ``student_weight`` only: the teacher is a constant. ``accum_dtype=torch.float32`` accumulates the
    weight gradient in fp32; ``chunk_size`` is the number of tokens per chunk.
    """
    for name, t in (
        ("student_input", student_input),
        ("student_weight", student_weight),
        ("teacher_input", teacher_input),
        ("teacher_weight", teacher_weight),
    ):
        check_floating(name, t)
    check_same_device(
        student_input=student_input, student_weight=student_weight, teacher_input=teacher_input,
        teacher_weight=teacher_weight, shift_labels=shift_labels,
    )  # fmt: skip
    for side, x, w in (
        ("student", student_input, student_weight),
        ("teacher", teacher_input, teacher_weight),
    ):
        if x.dim() < 1 or w.dim() != 2 or x.shape[-1] != w.shape[1]:
            raise ValueError(
                f"{side}_input (..., H) and {side}_weight (V, H) must share H, got {side}_input "
                f"{tuple(x.shape)} and {side}_weight {tuple(w.shape)}"
            )
        if w.shape[0] == 0 or w.shape[1] == 0:
            raise ValueError(f"{side}_weight must be non-empty, got shape {tuple(w.shape)}")
    if student_weight.shape[0] != teacher_weight.shape[0]:
        raise ValueError(
            "student_weight and teacher_weight must have the same vocabulary size (dim 0), got "
            f"{student_weight.shape[0]} and {teacher_weight.shape[0]}"
        )
    if student_input.shape[:-1] != teacher_input.shape[:-1]:
        raise ValueError(
            "student_input and teacher_input must have the same leading (token) dims, got "
            f"{tuple(student_input.shape)} and {tuple(teacher_input.shape)}"
        )
    check_beta("jsd_beta", jsd_beta)
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if accum_dtype is not None and accum_dtype not in (torch.float32, student_weight.dtype):
        raise ValueError(
            f"accum_dtype must be None, torch.float32 or student_weight's dtype, got {accum_dtype}"
        )
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    device_type = student_input.device.type
    # The matmuls run in autocast's dtype, as F.linear would (meta tensors have no autocast).
    if device_type != "meta" and torch.is_autocast_enabled(device_type):
        amp_dtype = torch.get_autocast_dtype(device_type)
        student_input, student_weight = student_input.to(amp_dtype), student_weight.to(amp_dtype)
        teacher_input, teacher_weight = teacher_input.to(amp_dtype), teacher_weight.to(amp_dtype)
    if student_input.dtype != student_weight.dtype:
        raise TypeError(
            f"student_input and student_weight must have one dtype, got {student_input.dtype} and "
            f"{student_weight.dtype}"
        )
    if teacher_input.dtype != teacher_weight.dtype:
        raise TypeError(
            f"teacher_input and teacher_weight must have one dtype, got {teacher_input.dtype} and "
            f"{teacher_weight.dtype}"
        )
    xs = student_input.reshape(-1, student_input.shape[-1])
    xt = teacher_input.detach().reshape(-1, teacher_input.shape[-1])
    check_labels(shift_labels, xs.shape[0], xs.device, "shift_labels")
    labels = None if shift_labels is None else shift_labels.reshape(-1)
    grad_on = torch.is_grad_enabled()
    loss, _gx, _gw = fused_linear_jsd_forward(
        xs, student_weight, xt, teacher_weight.detach(), labels, float(jsd_beta), int(ignore_index),
        float(temperature), accum_dtype == torch.float32 or student_weight.dtype == torch.float32,
        grad_on and student_input.requires_grad, grad_on and student_weight.requires_grad, int(chunk_size or 0),
    )  # fmt: skip
    return loss
