"""The one chunked mechanism behind every loss in ``liger_kernel.chunked_loss``.

A loss of hidden states x (R rows, each (..., H)) through an lm_head W (V x H) and bias b whose value is a sum
over chunks of rows, given batch-level constants (token counts, pair counts) computed before the loop:

    L = sum_k L_k(z_k),    z_k = x_k W^T + b    (fp32, one chunk of rows at a time, never all R rows)

For each chunk the forward computes z_k, L_k with plain torch and G_k = dL_k/dz_k, then the gradients by hand.
G_k comes one of two ways. A loss of per-token log-probs lp = log softmax(z/T)[y] (preference, KTO, GRPO) is
handed lp (r x T values) only; autograd gives c = dL_k/dlp, and G_k = (c onehot(y) - c softmax(z/T)) / T is
written over the chunk's logits in place. Those logits stay in x's dtype (as the lm_head rounds them): their
logsumexp and G_k are Triton kernels that compute in fp32 (``liger_kernel.ops.token_logprobs``), one read for
the logsumexp and one read and write for G_k, never an fp32 copy of the chunk. Any other loss (distillation)
is handed the fp32 logits and autograd gives G_k on the chunk's small graph (from z_k on, never through the
matmul). Then

    dx_k  = G_k W            written into the chunk's rows of dx
    dW   += G_k^T x_k        fp32 accumulator when W is in a lower precision
    db   += sum_rows G_k     fp32

So the forward makes all gradients; backward only multiplies them by the incoming scalar. A frozen second model
(reference or teacher) is evaluated by the loss, chunk by chunk under ``no_grad``, with the helpers below.
Kept for backward: dx, dW, db. Memory beyond the inputs: those, plus one chunk's logits (in x's dtype for the
log-prob losses, whose gradient overwrites them; fp32 and a gradient for distillation).

A chunk is a set of rows of x along dim 0: sequences for the preference and RL losses (a loss that is
non-linear in a sequence's log-prob sum needs the whole sequence in one chunk), tokens for distillation.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch

from liger_kernel.ops.fused_linear_cross_entropy import (
    _addmm_into,
    aligned_rows_buffer,
    cost_rule_rows,
    default_chunk_budget,
    default_chunk_size,
    device_rates,
    eager_fraction_budget,
    resolve_chunk_budget,
)
from liger_kernel.ops.token_logprobs import (
    gather_logprobs,
    logprob_grad_,
    row_logsumexp,
    row_logsumexp_and_sums,
)

# A chunk's loss: (fp32 logits of the chunk's rows (r, ..., V), the rows' indices) -> (scalar loss, aux).
# aux is anything detached (per-row values, partial sums); the caller assembles it from the list of chunks.
ChunkLoss = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, Any]]


def lm_head_logits(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ W^T + b (..., V) in x's dtype, rounded once as an lm_head computes it. Outside autocast the
    rows are stored 64 elements apart (``aligned_rows_buffer``: an odd vocabulary's rows would otherwise
    start off 16-byte alignment, and the log-prob kernels and GEMMs that read them would not load 16
    bytes at a time); under autocast, ``F.linear`` as the model would run it."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.nn.functional.linear(x, weight, bias)
    rows = x.reshape(-1, x.shape[-1])
    logits = aligned_rows_buffer(rows.shape[0], weight.shape[0], x.dtype, x.device)
    if bias is None:
        torch.mm(rows, weight.t(), out=logits)
    else:
        torch.addmm(bias, rows, weight.t(), out=logits)
    return logits.view(*x.shape[:-1], weight.shape[0])


def chunk_logits(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ W^T + b in x's dtype, rounded once (as an lm_head computes it), returned in fp32 (float64 stays)."""
    logits = lm_head_logits(x, weight, bias)
    return logits if logits.dtype == torch.float64 else logits.float()


def token_logprobs(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int | None = -100,
    lse: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(log softmax(logits / temperature)[target], mask, target with ignored tokens set to 0) per token, in
    fp32 (float64 for float64 logits) whatever the logits' dtype; the log-prob is 0 where target ==
    ignore_index (no mask when ignore_index is None). ``lse``: the rows' logsumexp (flattened) if known."""
    flat = logits.reshape(-1, logits.shape[-1])
    lse = row_logsumexp(flat, temperature) if lse is None else lse
    mask = None if ignore_index is None else target != ignore_index
    safe_target = target if mask is None else target.masked_fill(~mask, 0)
    logprobs = gather_logprobs(flat, lse, safe_target.reshape(-1), temperature).view(target.shape)
    return (logprobs if mask is None else logprobs.masked_fill(~mask, 0.0)), mask, safe_target


@torch.no_grad()
def frozen_token_logprobs(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    ignore_index: int | None = -100,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Per-token log-probs of a frozen model (reference policy) for one chunk; 0 at ignored tokens."""
    logits = lm_head_logits(x, weight, bias)  # x's dtype: no fp32 copy of the chunk
    return token_logprobs(logits, target, ignore_index, temperature=temperature)[0]


def float_sum(t: torch.Tensor, dim: int | tuple[int, ...] | None = None) -> torch.Tensor:
    """Sum accumulated and returned in fp32 (float64 stays), without an fp32 copy of a bf16 ``t``."""
    return t.sum(dim=dim, dtype=torch.promote_types(t.dtype, torch.float32))


def row_chunks(num_rows: int, rows_per_chunk: int, device: torch.device) -> list[torch.Tensor]:
    """Consecutive row index chunks of at most ``rows_per_chunk`` rows."""
    rows_per_chunk = max(1, int(rows_per_chunk))
    return [
        torch.arange(start, min(start + rows_per_chunk, num_rows), device=device)
        for start in range(0, num_rows, rows_per_chunk)
    ]


def logprob_chunk_budget(tokens: int, hidden: int, vocab: int, element_size: int, accum_size: int) -> int:
    """Bytes the chunks of logits may take by default in the log-prob losses: what keeps the loss's peak
    (the fp32 dW, dx and the chunks) at a quarter of the plain computation's (``eager_fraction_budget``: 10
    bytes for each bf16 logit), and never less than the fused cross entropy's default
    budget. At 16384 tokens x 4096 -> 128256 in bf16: 2.8 GiB (the cross entropy's rule, half of an
    unchunked cross entropy's peak, gives 437 MiB: one 1024-token sequence per chunk)."""
    return max(
        default_chunk_budget(tokens, hidden, vocab, element_size, accum_size),
        eager_fraction_budget(tokens, hidden, vocab, element_size, accum_size),
    )


def units_per_chunk(
    chunk_size: int | None,
    n_units: int,
    tokens_per_unit: int,
    x: torch.Tensor,
    weight: torch.Tensor,
    logits_buffers: int = 1,
) -> int:
    """Units (sequences, or pairs of them) per chunk: ``chunk_size`` when given, else the fused cross
    entropy's chunk rule in tokens (``liger_kernel.ops.fused_linear_cross_entropy``: as many chunks as keep
    the predicted dW traffic within 5 % of the matmuls, on the device's rates) with these losses' fp32 dW,
    capped by a memory budget (LIGER_FLCE_CHUNK_BUDGET_MIB, or ``logprob_chunk_budget``) shared by the
    ``logits_buffers`` chunks of logits a chunk holds (the policy's, and a frozen model's); whole units, at
    least one. Every chunk after the first re-reads and re-writes the fp32 dW (2 V H 4 bytes), so fewer,
    larger chunks are faster until the memory budget binds."""
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
            raise ValueError(
                f"chunk_size must be a positive int (units per chunk) or None (chosen by the chunk rule), "
                f"got {chunk_size!r}"
            )
        return int(chunk_size)
    n_units = max(1, n_units)
    tokens = n_units * max(1, tokens_per_unit)
    hidden, vocab = weight.shape[1], weight.shape[0]
    element_size = x.element_size()
    accum_size = max(4, element_size)
    budget = resolve_chunk_budget()
    if budget is None:
        budget = logprob_chunk_budget(tokens, hidden, vocab, element_size, accum_size)
    rows = min(
        cost_rule_rows(tokens, hidden, vocab, element_size, accum_size, device_rates(x.device)),
        default_chunk_size(tokens, vocab, element_size * max(1, logits_buffers), budget),
    )
    return max(1, min(n_units, rows // max(1, tokens_per_unit)))


# A log-prob chunk loss: (per-token log-probs of each target set (r, ...), the rows' indices, each token's sum
# of its logits (r, ...) for metrics: fp32 (float64 for float64), not divided by the temperature, not
# differentiable) -> (scalar loss, aux).
LogprobChunkLoss = Callable[[list[torch.Tensor], torch.Tensor, torch.Tensor], tuple[torch.Tensor, Any]]
# The target sets of a chunk's rows: [(token ids (r, ...), ignore_index or None)].
ChunkTargets = Callable[[torch.Tensor], list[tuple[torch.Tensor, int | None]]]


def chunked_value_and_grads(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    chunks: Sequence[torch.Tensor],
    chunk_loss: ChunkLoss | LogprobChunkLoss,
    needs_grad: tuple[bool, bool, bool],
    *,
    chunk_targets: ChunkTargets | None = None,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, list[Any], torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Loop over ``chunks`` (row indices of x along dim 0): returns (loss, [aux of each chunk], dx, dW, db).

    ``needs_grad`` = (x, weight, bias); gradients not needed are None and cost nothing.

    Without ``chunk_targets``, ``chunk_loss`` takes the chunk's fp32 logits and G = dL/dz comes from autograd.
    With it, the loss depends on the logits only through per-token log-probs lp_k = log softmax(z/T)[y_k] of
    the target sets (ignored tokens give 0), ``chunk_loss`` takes those, autograd gives only c_k = dL/dlp_k
    (r x T values), and G is written over the logits buffer in place:
        G = (sum_k c_k onehot(y_k) - (sum_k c_k) softmax(z/T)) / T
    so a chunk holds one (r, V) buffer in x's dtype instead of autograd's several in fp32.
    """
    need_x, need_w, need_b = needs_grad
    need_b = need_b and bias is not None
    any_grad = need_x or need_w or need_b
    accum_dtype = torch.float32 if weight.dtype in (torch.float16, torch.bfloat16) else weight.dtype
    grad_x = torch.zeros_like(x) if need_x else None
    # dW is written by the first chunk's matmul and accumulated by the others': no zero fill, and no read
    # of zeros by the first (2 x 2 GB less at Llama 3's lm_head in fp32).
    grad_w = torch.empty(weight.shape, dtype=accum_dtype, device=weight.device) if need_w else None
    first_w = True
    grad_b = torch.zeros(bias.shape, dtype=accum_dtype, device=bias.device) if need_b else None
    loss = torch.zeros(
        (), dtype=torch.float64 if x.dtype == torch.float64 else torch.float32, device=x.device
    )
    auxes = []
    hidden = x.shape[-1]
    for rows in chunks:
        x_chunk = x.index_select(0, rows)
        if chunk_targets is None:
            chunk_value, aux, grad_logits = _autograd_chunk(x_chunk, weight, bias, rows, chunk_loss, any_grad)
        else:
            chunk_value, aux, grad_logits = _logprob_chunk(
                x_chunk, weight, bias, rows, chunk_loss, chunk_targets(rows), temperature, any_grad
            )
        loss += chunk_value.detach()
        auxes.append(aux)
        if not any_grad:
            continue
        grad_logits = grad_logits.reshape(-1, grad_logits.shape[-1])
        if need_b:
            grad_b += float_sum(grad_logits, 0)
        grad_logits = grad_logits.to(x.dtype)
        if need_x:
            grad_x.index_copy_(0, rows, (grad_logits @ weight).reshape(x_chunk.shape))
        if need_w:
            _addmm_into(grad_w, grad_logits.t(), x_chunk.reshape(-1, hidden), first=first_w)
            first_w = False
    if need_w and first_w:  # no chunk: no rows
        grad_w.zero_()
    return loss, auxes, grad_x, grad_w, grad_b


def _autograd_chunk(x_chunk, weight, bias, rows, chunk_loss, any_grad):
    with torch.no_grad():
        logits = chunk_logits(x_chunk, weight, bias)
    with torch.enable_grad():
        logits.requires_grad_(any_grad)
        value, aux = chunk_loss(logits, rows)
        grad_logits = None
        if any_grad:
            if value.requires_grad:
                (grad_logits,) = torch.autograd.grad(value, logits)
            else:
                grad_logits = torch.zeros_like(logits)
    return value, aux, grad_logits


def _logprob_chunk(x_chunk, weight, bias, rows, chunk_loss, targets, temperature, any_grad):
    with torch.no_grad():
        logits = lm_head_logits(x_chunk, weight, bias)  # x's dtype, rounded once as the lm_head does
        flat = logits.view(-1, logits.shape[-1])
        lse, logit_sums = row_logsumexp_and_sums(flat, temperature)  # one read of the chunk for both
        logprobs, masks, safe_targets = zip(
            *(token_logprobs(logits, t, ignore, lse, temperature) for t, ignore in targets)
        )
    with torch.enable_grad():
        logprobs = [lp.requires_grad_(any_grad) for lp in logprobs]
        value, aux = chunk_loss(logprobs, rows, logit_sums.view(logits.shape[:-1]))
        if not any_grad:
            return value, aux, None
        coeffs = [None] * len(logprobs)
        if value.requires_grad:
            coeffs = list(torch.autograd.grad(value, logprobs, allow_unused=True))
    with torch.no_grad():
        coeffs = [
            torch.zeros_like(lp) if c is None else (c if m is None else c.masked_fill(~m, 0.0))
            for c, lp, m in zip(coeffs, logprobs, masks)
        ]
        grad_logits = logprob_grad_(
            flat, lse, [t.reshape(-1) for t in safe_targets], [c.reshape(-1) for c in coeffs], temperature
        )
    return value, aux, grad_logits


class FusedLinearChunkedFunction(torch.autograd.Function):
    """Base of the loss Functions: a subclass's ``forward`` runs ``chunked_value_and_grads`` and keeps its
    gradients with ``finish_forward``; this ``backward`` scales them by the incoming gradient of the loss (the
    other outputs are metrics, not differentiable)."""

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor, *grad_metrics: Any) -> tuple[torch.Tensor | None, ...]:
        grads_out: list[torch.Tensor | None] = [None] * ctx.num_args
        for slot, grad, dtype in zip(ctx.slots, ctx.saved_tensors, ctx.dtypes):
            if slot is None or grad is None:
                continue
            if grad.dtype == dtype:  # in place: no second full-size copy (backward runs once per forward)
                grads_out[slot] = grad.mul_(grad_loss)
            else:  # an fp32 accumulator: scaled and cast as it is written, one pass over it
                grads_out[slot] = torch.mul(grad, grad_loss, out=torch.empty_like(grad, dtype=dtype))
        return tuple(grads_out)


# Argument checks shared by the losses: each error names the argument and says what was wrong.


def check_beta(beta: float, name: str = "beta") -> None:
    if not beta >= 0:
        raise ValueError(f"{name} must be >= 0, got {beta}")


def check_choice(value: str, choices: Sequence[str], name: str) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; supported: {', '.join(choices)}")


def check_shape(tensor: torch.Tensor | None, shape: Sequence[int], name: str, what: str) -> None:
    if tensor is not None and tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} ({what}), got {tuple(tensor.shape)}")


def check_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, names: tuple[str, str, str]
) -> None:
    """x (..., H) through weight (V, H) and bias (V,)."""
    x_name, w_name, b_name = names
    if weight.dim() != 2 or weight.shape[1] != x.shape[-1]:
        raise ValueError(
            f"{w_name} must have shape (vocab, hidden={x.shape[-1]}) to match {x_name}, got {tuple(weight.shape)}"
        )
    check_shape(bias, (weight.shape[0],), b_name, f"one value per row of {w_name}")
    if x.dtype != weight.dtype:
        raise ValueError(f"{x_name} ({x.dtype}) and {w_name} ({weight.dtype}) must have the same dtype")


def check_targets(target: torch.Tensor, vocab_size: int, ignore_index: int | None, name: str) -> None:
    """Every target is a vocabulary index or ignore_index (one host sync per call)."""
    if target.is_floating_point():
        raise ValueError(f"{name} must hold integer token ids, got {target.dtype}")
    bad = (target < 0) | (target >= vocab_size)
    if ignore_index is not None:
        bad &= target != ignore_index
    if bool(bad.any()):
        values = target[bad]
        raise ValueError(
            f"{name} has token ids outside [0, {vocab_size}) that are not ignore_index={ignore_index}: "
            f"min {int(values.min())}, max {int(values.max())}"
        )


def finish_forward(
    ctx: Any,
    slots: tuple[int, int, int | None],
    num_args: int,
    tensors: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
    grads: Sequence[torch.Tensor | None],
    outputs: Sequence[torch.Tensor],
) -> None:
    """Keeps a Function's gradients for ``FusedLinearChunkedFunction.backward`` and marks its metric outputs
    non-differentiable. ``slots``: positions of (input, weight, bias) among forward's arguments (after ctx);
    ``tensors``: those arguments."""
    ctx.slots, ctx.num_args = slots, num_args
    ctx.dtypes = tuple(t.dtype if t is not None else None for t in tensors)
    ctx.save_for_backward(*grads)
    metric_tensors = [t for t in outputs if isinstance(t, torch.Tensor)]
    if metric_tensors:
        ctx.mark_non_differentiable(*metric_tensors)


def needs_grads(ctx: Any, slots: tuple[int, int, int | None]) -> tuple[bool, bool, bool]:
    return tuple(slot is not None and bool(ctx.needs_input_grad[slot]) for slot in slots)


def check_sequences(_input: torch.Tensor, what: str = "(batch, seq_len, hidden)") -> None:
    if _input.dim() != 3:
        raise ValueError(f"_input must have shape {what}, got {tuple(_input.shape)}")


def check_reference(
    _input: torch.Tensor,
    weight: torch.Tensor,
    ref_input: torch.Tensor | None,
    ref_weight: torch.Tensor | None,
    ref_bias: torch.Tensor | None,
    missing: str,
) -> None:
    """A reference model given as hidden states: rows and tokens as _input's, the same vocabulary as weight.
    ``missing`` is the error when ref_input or ref_weight is None."""
    if ref_input is None or ref_weight is None:
        raise ValueError(missing)
    check_shape(ref_input, (*_input.shape[:2], ref_input.shape[-1]), "ref_input", "_input's rows and tokens")
    check_linear(ref_input, ref_weight, ref_bias, ("ref_input", "ref_weight", "ref_bias"))
    if ref_weight.shape[0] != weight.shape[0]:
        raise ValueError(f"ref_weight has vocabulary {ref_weight.shape[0]}, weight has {weight.shape[0]}")
