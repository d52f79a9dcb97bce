"""KTO (Ethayarajh et al. 2024, arXiv:2402.01306) on the chunked mechanism: unpaired sequences, each desirable
(preference_labels True) or undesirable, with lambda_D = lambda_U = 1 as in TRL's KTOTrainer defaults:

    r_i = logp(y_i) - logp_ref(y_i)          (logp_ref = 0 without a reference; average_log_prob averages)
    L = (1/B) sum_i [1 - sigma(beta (r_i - z0))]  if desirable,  [1 - sigma(beta (z0 - r_i))]  if undesirable

z0 is ``kl`` (the batch KL estimate TRL computes from mismatched pairs; a scalar or one value per row,
0 when None), not differentiated. A chunk is ``chunk_size`` sequences (None: ``units_per_chunk``'s rule). Outputs (as liger-kernel 0.8.5): loss,
(sum of chosen logps, sum of rejected logps, sum of chosen logits, sum of rejected logits, sum of chosen
rewards, sum of rejected rewards), rewards = beta r.
"""

from __future__ import annotations

from typing import Any

import torch

from liger_kernel.chunked_loss.fused_linear_chunked import (
    FusedLinearChunkedFunction,
    check_beta,
    check_linear,
    check_reference,
    check_sequences,
    check_shape,
    check_targets,
    chunked_value_and_grads,
    finish_forward,
    frozen_token_logprobs,
    needs_grads,
    row_chunks,
    units_per_chunk,
)

_SLOTS = (0, 1, 4)


class LigerFusedLinearKTOFunction(FusedLinearChunkedFunction):
    @staticmethod
    def forward(
        ctx: Any,
        _input: torch.Tensor,
        weight: torch.Tensor,
        target: torch.Tensor,
        preference_labels: torch.Tensor,
        bias: torch.Tensor | None = None,
        ref_input: torch.Tensor | None = None,
        ref_weight: torch.Tensor | None = None,
        ref_bias: torch.Tensor | None = None,
        kl: torch.Tensor | float | None = None,
        ignore_index: int = -100,
        beta: float = 0.1,
        compiled: bool = True,
        use_ref_model: bool = True,
        average_log_prob: bool = False,
        chunk_size: int | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Arguments as liger-kernel 0.8.5's; ``compiled`` is accepted for compatibility (the per-chunk
        gradient step is a Triton kernel either way)."""
        check_beta(beta)
        check_sequences(_input)
        n_seq = _input.shape[0]
        check_linear(_input, weight, bias, ("_input", "weight", "bias"))
        check_shape(target, _input.shape[:2], "target", "one token id per row of _input")
        check_targets(target, weight.shape[0], ignore_index, "target")
        if preference_labels is None:
            raise ValueError("preference_labels is required: one bool per sequence (True = desirable)")
        check_shape(preference_labels, (n_seq,), "preference_labels", "one bool per sequence")
        if use_ref_model:
            check_reference(
                _input,
                weight,
                ref_input,
                ref_weight,
                ref_bias,
                "use_ref_model=True needs ref_input and ref_weight",
            )
        if isinstance(kl, torch.Tensor) and kl.numel() != 1:
            check_shape(kl, (n_seq,), "kl", "a scalar or one value per sequence")
        desirable = preference_labels.bool()
        z0 = kl.detach() if isinstance(kl, torch.Tensor) else kl

        def chunk_targets(rows: torch.Tensor) -> list[tuple[torch.Tensor, int | None]]:
            return [(target.index_select(0, rows), ignore_index)]

        def chunk_loss(
            logprobs: list[torch.Tensor], rows: torch.Tensor, logit_sums: torch.Tensor
        ) -> tuple[torch.Tensor, Any]:
            chunk_target = target.index_select(0, rows)
            lengths = (chunk_target != ignore_index).sum(-1).clamp(min=1)
            logps = logprobs[0].sum(-1)
            if average_log_prob:
                logps = logps / lengths
            ratio = logps
            if use_ref_model:
                ref = frozen_token_logprobs(
                    ref_input.index_select(0, rows), ref_weight, ref_bias, chunk_target, ignore_index
                )
                ref = ref.sum(-1)
                ratio = logps - (ref / lengths if average_log_prob else ref)
            good = desirable.index_select(0, rows)
            sign = torch.where(good, 1.0, -1.0).to(ratio.dtype)
            shift = ratio
            if z0 is not None:
                shift = ratio - (
                    z0.index_select(0, rows) if isinstance(z0, torch.Tensor) and z0.numel() > 1 else z0
                )
            loss = (1 - torch.sigmoid(beta * shift * sign)).sum() / n_seq
            with torch.no_grad():
                rewards = beta * ratio
                logit_sums = logit_sums.sum(1)  # per sequence

                def desirable_and_undesirable(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                    # where-sums: a boolean index would sync the host with the GPU once per chunk
                    return torch.where(good, v, 0.0).sum(), torch.where(good, 0.0, v).sum()

                sums = torch.stack(
                    [s for v in (logps, logit_sums, rewards) for s in desirable_and_undesirable(v)]
                )
            return loss, sums

        loss, auxes, *grads = chunked_value_and_grads(
            _input,
            weight,
            bias,
            row_chunks(
                n_seq,
                units_per_chunk(
                    chunk_size, n_seq, _input.shape[1], _input, weight, 2 if use_ref_model else 1
                ),
                _input.device,
            ),
            chunk_loss,
            needs_grads(ctx, _SLOTS),
            chunk_targets=chunk_targets,
        )
        outputs = tuple(torch.stack(auxes).sum(0).unbind(0))
        finish_forward(ctx, _SLOTS, 15, (_input, weight, bias), grads, outputs)
        return loss, outputs


class LigerFusedLinearKTOLoss(torch.nn.Module):
    """lm_head + KTO loss. forward(_input, lin_weight, target, bias=None, preference_labels=None, ref_input=None,
    ref_weight=None, ref_bias=None, kl=None) returns (loss, (chosen_logps_sum, rejected_logps_sum,
    chosen_logits_sum, rejected_logits_sum, chosen_rewards_sum, rejected_rewards_sum))."""

    def __init__(
        self,
        ignore_index: int = -100,
        beta: float = 0.1,
        compiled: bool = True,
        use_ref_model: bool = False,
        average_log_prob: bool = False,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        check_beta(beta)
        self.ignore_index, self.beta, self.compiled, self.use_ref_model = (
            ignore_index,
            beta,
            compiled,
            use_ref_model,
        )
        self.average_log_prob, self.chunk_size = average_log_prob, chunk_size

    def forward(
        self,
        _input: torch.Tensor,
        lin_weight: torch.Tensor,
        target: torch.Tensor,
        bias: torch.Tensor | None = None,
        preference_labels: torch.Tensor | None = None,
        ref_input: torch.Tensor | None = None,
        ref_weight: torch.Tensor | None = None,
        ref_bias: torch.Tensor | None = None,
        kl: torch.Tensor | float | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        return LigerFusedLinearKTOFunction.apply(
            _input, lin_weight, target, preference_labels, bias, ref_input, ref_weight, ref_bias, kl,
            self.ignore_index, self.beta, self.compiled, self.use_ref_model, self.average_log_prob, self.chunk_size,
        )  # fmt: skip
