"""The one chunked mechanism behind every loss in ``liger_kernel.chunked_loss``.

A loss of hidden states x (R rows, each (..., H)) through an lm_head W (V x H) and bias b whose value is a sum
over chunks of rows, given batch-level constants (token counts, pair counts) computed before the loop:

    L = sum_k L_k(z_k),    z_k = x_k W^T + b    (fp32, one chunk of rows at a time, never all R rows)

For each chunk the forward computes z_k, L_k with plain torch and G_k = dL_k/dz_k, then the gradients by hand.
G_k comes one of two ways. A loss of per-token log-probs lp = log softmax(z/T)[y] (preference, KTO, GRPO) is
handed lp (r x T values) only; autograd gives c = dL_k/dlp, and G_k = (c onehot(y) - c softmax(z/T)) / T is
written over the chunk's one fp32 logits buffer in place. Any other loss (distillation) is handed the fp32
logits and autograd gives G_k on the chunk's small graph (from z_k on, never through the matmul). Then

    dx_k  = G_k W            written into the chunk's rows of dx
    dW   += G_k^T x_k        fp32 accumulator when W is in a lower precision
    db   += sum_rows G_k     fp32

So the forward makes all gradients; backward only multiplies them by the incoming scalar. A frozen second model
(reference or teacher) is evaluated by the loss, chunk by chunk under ``no_grad``, with the helpers below.
Kept for backward: dx, dW, db. Memory beyond the inputs: those, plus one chunk's logits and their gradient.

A chunk is a set of rows of x along dim 0: sequences for the preference and RL losses (a loss that is
non-linear in a sequence's log-prob sum needs the whole sequence in one chunk), tokens for distillation.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from liger_kernel.ops.fused_linear_cross_entropy import _addmm_into

# A chunk's loss: (fp32 logits of the chunk's rows (r, ..., V), the rows' indices) -> (scalar loss, aux).
# aux is anything detached (per-row values, partial sums); the caller assembles it from the list of chunks.
ChunkLoss = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, Any]]


def chunk_logits(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ W^T + b in x's dtype, rounded once (as an lm_head computes it), returned in fp32 (float64 stays)."""
    logits = torch.nn.functional.linear(x, weight, bias)
    return logits if logits.dtype == torch.float64 else logits.float()


def token_logprobs(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int | None = -100,
    lse: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(log softmax(logits)[target], mask, target with ignored tokens set to 0) per token; the log-prob is 0
    where target == ignore_index (no mask when ignore_index is None). ``lse``: logsumexp(logits) if known."""
    lse = torch.logsumexp(logits, dim=-1) if lse is None else lse
    mask = None if ignore_index is None else target != ignore_index
    safe_target = target if mask is None else target.masked_fill(~mask, 0)
    logprobs = logits.gather(-1, safe_target.unsqueeze(-1)).squeeze(-1) - lse
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
    logits = chunk_logits(x, weight, bias)
    if temperature != 1.0:
        logits.div_(temperature)
    return token_logprobs(logits, target, ignore_index)[0]


def row_chunks(num_rows: int, rows_per_chunk: int, device: torch.device) -> list[torch.Tensor]:
    """Consecutive row index chunks of at most ``rows_per_chunk`` rows."""
    rows_per_chunk = max(1, int(rows_per_chunk))
    return [
        torch.arange(start, min(start + rows_per_chunk, num_rows), device=device)
        for start in range(0, num_rows, rows_per_chunk)
    ]


# A log-prob chunk loss: (per-token log-probs of each target set (r, ...), the rows' indices, the chunk's logits
# for metrics, not differentiable) -> (scalar loss, aux).
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
    compiled: bool = False,
) -> tuple[torch.Tensor, list[Any], torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Loop over ``chunks`` (row indices of x along dim 0): returns (loss, [aux of each chunk], dx, dW, db).

    ``needs_grad`` = (x, weight, bias); gradients not needed are None and cost nothing.

    Without ``chunk_targets``, ``chunk_loss`` takes the chunk's fp32 logits and G = dL/dz comes from autograd.
    With it, the loss depends on the logits only through per-token log-probs lp_k = log softmax(z/T)[y_k] of
    the target sets (ignored tokens give 0), ``chunk_loss`` takes those, autograd gives only c_k = dL/dlp_k
    (r x T values), and G is written over the logits buffer in place:
        G = (sum_k c_k onehot(y_k) - (sum_k c_k) softmax(z/T)) / T
    so a chunk holds one (r, V) fp32 buffer instead of autograd's several. With ``compiled`` on CUDA that
    step is one torch.compile'd kernel (``logprob_logits_grad``: one read of the logits, one write of G in x's
    dtype, plus its fp32 column sums for the bias) instead of five passes.
    """
    need_x, need_w, need_b = needs_grad
    need_b = need_b and bias is not None
    any_grad = need_x or need_w or need_b
    accum_dtype = torch.float32 if weight.dtype in (torch.float16, torch.bfloat16) else weight.dtype
    grad_x = torch.zeros_like(x) if need_x else None
    grad_w = torch.zeros(weight.shape, dtype=accum_dtype, device=weight.device) if need_w else None
    grad_b = torch.zeros(bias.shape, dtype=accum_dtype, device=bias.device) if need_b else None
    loss = torch.zeros(
        (), dtype=torch.float64 if x.dtype == torch.float64 else torch.float32, device=x.device
    )
    auxes = []
    hidden = x.shape[-1]
    for rows in chunks:
        x_chunk = x.index_select(0, rows)
        grad_bias_part = None
        if chunk_targets is None:
            chunk_value, aux, grad_logits = _autograd_chunk(x_chunk, weight, bias, rows, chunk_loss, any_grad)
        else:
            chunk_value, aux, grad_logits, grad_bias_part = _logprob_chunk(
                x_chunk, weight, bias, rows, chunk_loss, chunk_targets(rows), temperature, any_grad,
                compiled=compiled and x.device.type in COMPILE_DEVICES, need_bias=need_b,
            )  # fmt: skip
        loss += chunk_value.detach()
        auxes.append(aux)
        if not any_grad:
            continue
        grad_logits = grad_logits.reshape(-1, grad_logits.shape[-1])
        if need_b:
            grad_b += grad_bias_part if grad_bias_part is not None else grad_logits.sum(0)
        grad_logits = grad_logits.to(x.dtype)
        if need_x:
            grad_x.index_copy_(0, rows, (grad_logits @ weight).reshape(x_chunk.shape))
        if need_w:
            _addmm_into(grad_w, grad_logits.t(), x_chunk.reshape(-1, hidden), first=False)
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


def logprob_logits_grad(
    logits: torch.Tensor,
    lse: torch.Tensor,
    safe_targets: Sequence[torch.Tensor],
    coeffs: Sequence[torch.Tensor],
    inv_temperature: float,
    out_dtype: torch.dtype,
    need_bias: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """G = (sum_k c_k onehot(y_k) - (sum_k c_k) exp(logits - lse)) / T as rows x V in ``out_dtype``, and its fp32
    sum over rows when ``need_bias``: the out-of-place form of the in-place step, for torch.compile to fuse."""
    vocab_ids = torch.arange(logits.shape[-1], device=logits.device)
    total = torch.stack(list(coeffs)).sum(0)
    grad = torch.exp(logits - lse.unsqueeze(-1)) * -total.unsqueeze(-1)
    for safe, c in zip(safe_targets, coeffs):
        grad = grad + torch.where(vocab_ids == safe.unsqueeze(-1), c.unsqueeze(-1), 0.0)
    grad = (grad * inv_temperature).reshape(-1, logits.shape[-1])
    return grad.to(out_dtype), (grad.sum(0) if need_bias else None)


# Devices where ``compiled=True`` compiles the gradient step (on a CPU, inductor's C++ build costs more than it saves).
COMPILE_DEVICES = ("cuda",)
_compiled_logprob_logits_grad = None


def _logprob_logits_grad_compiled(*args: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    global _compiled_logprob_logits_grad
    if _compiled_logprob_logits_grad is None:  # compiled on first use, not at import
        _compiled_logprob_logits_grad = torch.compile(logprob_logits_grad, dynamic=True)
    return _compiled_logprob_logits_grad(*args)


_COMPILE_FAILED = False


def _note_compile_failure(exc: Exception) -> None:
    global _COMPILE_FAILED
    _COMPILE_FAILED = True
    warnings.warn(
        f"liger_kernel.chunked_loss: torch.compile of the gradient step failed ({type(exc).__name__}: {exc}); "
        "using the uncompiled steps (same result, slower)",
        RuntimeWarning,
        stacklevel=3,
    )


def _logprob_chunk(
    x_chunk, weight, bias, rows, chunk_loss, targets, temperature, any_grad, compiled, need_bias
):
    with torch.no_grad():
        logits = chunk_logits(x_chunk, weight, bias)
        if temperature != 1.0:
            logits.div_(temperature)
        lse = torch.logsumexp(logits, dim=-1)
        logprobs, masks, safe_targets = zip(
            *(token_logprobs(logits, t, ignore, lse) for t, ignore in targets)
        )
    with torch.enable_grad():
        logprobs = [lp.requires_grad_(any_grad) for lp in logprobs]
        value, aux = chunk_loss(logprobs, rows, logits)
        if not any_grad:
            return value, aux, None, None
        coeffs = [None] * len(logprobs)
        if value.requires_grad:
            coeffs = list(torch.autograd.grad(value, logprobs, allow_unused=True))
    with torch.no_grad():
        coeffs = [
            torch.zeros_like(lse) if c is None else (c if m is None else c.masked_fill(~m, 0.0))
            for c, m in zip(coeffs, masks)
        ]
        if compiled and not _COMPILE_FAILED:
            try:
                grad_logits, grad_bias_part = _logprob_logits_grad_compiled(
                    logits,
                    lse,
                    tuple(safe_targets),
                    tuple(coeffs),
                    1.0 / temperature,
                    x_chunk.dtype,
                    need_bias,
                )
                return value, aux, grad_logits, grad_bias_part
            except Exception as exc:  # a broken compiler stack: say so once, then the in-place steps
                _note_compile_failure(exc)
        total = torch.stack(coeffs).sum(0)
        grad_logits = logits.sub_(lse.unsqueeze(-1)).exp_().mul_(-total.unsqueeze(-1))
        for safe, c in zip(safe_targets, coeffs):
            grad_logits.scatter_add_(-1, safe.unsqueeze(-1), c.unsqueeze(-1))
        if temperature != 1.0:
            grad_logits.div_(temperature)
    return value, aux, grad_logits, None


class FusedLinearChunkedFunction(torch.autograd.Function):
    """Base of the loss Functions: a subclass's ``forward`` runs ``chunked_value_and_grads`` and keeps its
    gradients with ``finish_forward``; this ``backward`` scales them by the incoming gradient of the loss (the
    other outputs are metrics, not differentiable)."""

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor, *grad_metrics: Any) -> tuple[torch.Tensor | None, ...]:
        grads_out: list[torch.Tensor | None] = [None] * ctx.num_args
        for slot, grad, dtype in zip(ctx.slots, ctx.saved_tensors, ctx.dtypes):
            if slot is not None and grad is not None:
                # in place: no second full-size copy of dW (backward runs once per forward)
                grads_out[slot] = grad.mul_(grad_loss).to(dtype)
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
    valid = target if ignore_index is None else target[target != ignore_index]
    if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= vocab_size):
        raise ValueError(
            f"{name} has token ids outside [0, {vocab_size}) that are not ignore_index={ignore_index}: "
            f"min {int(valid.min())}, max {int(valid.max())}"
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
