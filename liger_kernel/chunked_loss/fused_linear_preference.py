"""Paired preference losses (DPO, ORPO, CPO, SimPO) on the chunked mechanism of ``fused_linear_chunked``.

Input: hidden states (2B, T, H) stacked [chosen_1..chosen_B, rejected_1..rejected_B], targets (2B, T). A
chunk is ``chunk_size`` pairs (chosen i..j with rejected i..j; None: ``units_per_chunk``'s rule), so each pair's loss is computed whole:

    logp(y|x) = sum_t mask_t log softmax(z_t)[y_t]      (divided by the token count if average_log_prob;
                                                          a sequence with no token gives 0, not NaN)
    L = (1/B) sum_pairs l(logp_chosen, logp_rejected, ref logps, token counts)  [+ alpha * NLL of chosen]

NLL = -(sum of chosen-token log-probs) / (number of chosen tokens in the whole batch). The pair function l
is the only thing a loss defines. Outputs (as liger-kernel 0.8.5): loss, (chosen_logps (B,),
rejected_logps (B,), chosen_logits_mean, rejected_logits_mean, nll_loss, *per-pair aux (B,), *aux means).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from liger_kernel.chunked_loss.fused_linear_chunked import (
    check_linear,
    check_reference,
    check_sequences,
    check_shape,
    check_targets,
    chunked_value_and_grads,
    frozen_token_logprobs,
    units_per_chunk,
)

# l(chosen_logps, rejected_logps, ref_chosen_logps | None, ref_rejected_logps | None, chosen_len, rejected_len)
#   -> (per-pair losses (r,), per-pair aux tuple of (r,), aux-to-average tuple of (r,))
PairLoss = Callable[..., tuple[torch.Tensor, tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]]


def check_pairs(_input: torch.Tensor, target: torch.Tensor) -> int:
    """Returns the number of pairs B of a (2B, T, H) input."""
    check_sequences(_input, "(2 * pairs, seq_len, hidden)")
    if _input.shape[0] % 2 or _input.shape[0] == 0:
        raise ValueError(
            f"_input has {_input.shape[0]} sequences: the chosen and rejected halves must be the same size "
            "(chosen rows first, then rejected), so the batch must be even and non-empty"
        )
    check_shape(target, _input.shape[:2], "target", "one token id per row of _input")
    return _input.shape[0] // 2


def paired_preference_forward(
    needs_grad: tuple[bool, bool, bool],
    _input: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    bias: torch.Tensor | None,
    pair_loss: PairLoss,
    *,
    ignore_index: int = -100,
    alpha: float = 1.0,
    compute_nll_loss: bool = False,
    nll_target: torch.Tensor | None = None,
    chunk_size: int | None = None,
    average_log_prob: bool = False,
    use_ref_model: bool = False,
    ref_input: torch.Tensor | None = None,
    ref_weight: torch.Tensor | None = None,
    ref_bias: torch.Tensor | None = None,
    ref_chosen_logps: torch.Tensor | None = None,
    ref_rejected_logps: torch.Tensor | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], tuple[torch.Tensor | None, ...]]:
    """Returns (loss, outputs, (d_input, d_weight, d_bias)) for a Function's forward."""
    n_pairs = check_pairs(_input, target)
    check_linear(_input, weight, bias, ("_input", "weight", "bias"))
    vocab = weight.shape[0]
    check_targets(target, vocab, ignore_index, "target")
    check_shape(nll_target, target.shape, "nll_target", "the shape of target")
    if nll_target is not None:
        check_targets(nll_target, vocab, ignore_index, "nll_target")
    precomputed = ref_chosen_logps is not None or ref_rejected_logps is not None
    if precomputed:
        if ref_chosen_logps is None or ref_rejected_logps is None:
            raise ValueError("ref_chosen_logps and ref_rejected_logps must be given together")
        check_shape(ref_chosen_logps, (n_pairs,), "ref_chosen_logps", "one log-prob per chosen sequence")
        check_shape(
            ref_rejected_logps, (n_pairs,), "ref_rejected_logps", "one log-prob per rejected sequence"
        )
    use_ref_input = use_ref_model and not precomputed
    if use_ref_input:
        check_reference(
            _input, weight, ref_input, ref_weight, ref_bias,
            "use_ref_model=True needs ref_input and ref_weight (or ref_chosen_logps and ref_rejected_logps)",
        )  # fmt: skip

    nll_labels = nll_target if nll_target is not None else target
    chosen_tokens = (nll_labels[:n_pairs] != ignore_index).sum().clamp(min=1)
    logits_count = n_pairs * _input.shape[1] * vocab
    step = units_per_chunk(
        chunk_size, n_pairs, 2 * _input.shape[1], _input, weight, logits_buffers=2 if use_ref_input else 1
    )
    chunks = [
        torch.cat(
            [
                torch.arange(i, min(i + step, n_pairs), device=_input.device),
                torch.arange(n_pairs + i, n_pairs + min(i + step, n_pairs), device=_input.device),
            ]
        )
        for i in range(0, n_pairs, step)
    ]

    def chunk_targets(rows: torch.Tensor) -> list[tuple[torch.Tensor, int | None]]:
        targets = [(target.index_select(0, rows), ignore_index)]
        if compute_nll_loss and nll_target is not None:  # the chosen rows' NLL targets; none for rejected
            chosen_nll = nll_target.index_select(0, rows[: rows.shape[0] // 2])
            targets.append((torch.cat([chosen_nll, torch.full_like(chosen_nll, ignore_index)]), ignore_index))
        return targets

    def chunk_loss(
        logprobs: list[torch.Tensor], rows: torch.Tensor, logit_sums: torch.Tensor
    ) -> tuple[torch.Tensor, Any]:
        r = rows.shape[0] // 2
        chunk_target = target.index_select(0, rows)
        token_lp = logprobs[0]
        lengths = (chunk_target != ignore_index).sum(-1)
        seq_lp = token_lp.sum(-1)
        if average_log_prob:
            seq_lp = seq_lp / lengths.clamp(min=1)
        if use_ref_input:
            ref_lp = frozen_token_logprobs(
                ref_input.index_select(0, rows), ref_weight, ref_bias, chunk_target, ignore_index
            ).sum(-1)
            if average_log_prob:
                ref_lp = ref_lp / lengths.clamp(min=1)
            ref_c, ref_r = ref_lp[:r], ref_lp[r:]
        elif precomputed:
            ref_c, ref_r = ref_chosen_logps[rows[:r]], ref_rejected_logps[rows[:r]]
        else:
            ref_c = ref_r = None
        losses, row_aux, mean_aux = pair_loss(seq_lp[:r], seq_lp[r:], ref_c, ref_r, lengths[:r], lengths[r:])
        loss = losses.sum() / n_pairs
        nll = torch.zeros((), device=logit_sums.device, dtype=logit_sums.dtype)
        if compute_nll_loss:
            nll_lp = token_lp[:r] if nll_target is None else logprobs[1][:r]
            nll = -nll_lp.sum() / chosen_tokens
            loss = loss + alpha * nll
        with torch.no_grad():
            sums = torch.stack([logit_sums[:r].sum(), logit_sums[r:].sum(), nll.detach()])
            aux = (seq_lp[:r].detach(), seq_lp[r:].detach(), sums, [a.detach() for a in row_aux], mean_aux)
        return loss, aux

    loss, auxes, *grads = chunked_value_and_grads(
        _input, weight, bias, chunks, chunk_loss, needs_grad, chunk_targets=chunk_targets
    )
    sums = torch.stack([a[2] for a in auxes]).sum(0)
    outputs = (
        torch.cat([a[0] for a in auxes]),
        torch.cat([a[1] for a in auxes]),
        sums[0] / logits_count,
        sums[1] / logits_count,
        sums[2],
        *(torch.cat(parts) for parts in zip(*(a[3] for a in auxes))),
        *(torch.cat(parts).detach().sum() / n_pairs for parts in zip(*(a[4] for a in auxes))),
    )
    return loss, outputs, tuple(grads)
