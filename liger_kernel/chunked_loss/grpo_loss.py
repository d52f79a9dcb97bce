"""GRPO (Shao et al. 2024, arXiv:2402.03300) and the variants of TRL's GRPOTrainer, on the chunked mechanism.

Per completion token t of sequence i (mask m, advantage A_i, lp = log softmax(z / temperature)[y]):
    log w = lp - lp_old                          token level; sequence level (GSPO): sum_t m log w / sum_t m
    ratio = exp(log w), clipped = clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    l_t = -min(min(ratio, delta) A, clipped A)   grpo, bnpo, dr_grpo, dapo, luspo
          -min(ratio, epsilon_high).detach() A lp            cispo (TRL)
          -sigmoid(tau (ratio - 1)) 4 / tau A, tau by sign of A   sapo (TRL)
          -phi A lp, phi = exp(lam + k log W - lam W) detached, W = exp(clamp(sum_t m clamp(log w, +-20)
              (+ sum_t log vllm_is_ratio), log 1e-8, 20)), (k, lam) by sign of A        vespo (TRL)
    l_t *= vllm_is_ratio (if given; vespo folds it into W);  l_t += beta k3,  k3 = exp(lp_ref - lp) - (lp_ref - lp) - 1
          (k3 *= ratio with use_bias_correction_kl)
    loss: grpo, sapo   mean_i (sum_t m l / max(sum_t m, 1))
          bnpo         sum m l / max(sum m, 1)
          dr_grpo      sum m l / (B * max_completion_length)
          dapo, cispo, vespo  sum m l / max(num_items_in_batch / world_size (or sum m), 1)
          luspo        mean_i sum_t m l          (TRL 1.16's definition)
lp_old defaults to lp.detach() (one policy update per generation). A chunk is ``chunk_size`` sequences (None: ``units_per_chunk``'s rule); the
normalizers are batch-level, computed before the loop. Metrics (as liger-kernel 0.8.5, and as TRL logs them as ``kl``
and ``clip_ratio/region_mean``): the masked mean of k3 (when beta != 0) and the fraction of masked tokens
(of sequences, at sequence level, as TRL; 0.8.5 counts their tokens) whose ratio was clipped in the direction
that matters (below with A < 0, above with A > 0).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from liger_kernel.chunked_loss.fused_linear_chunked import (
    FusedLinearChunkedFunction,
    check_beta,
    check_choice,
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

GRPO_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo")
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")


def check_grpo_options(
    beta: float,
    loss_type: str,
    importance_sampling_level: str,
    max_completion_length: int | None,
    temperature: float,
    sapo_temperature_pos: float,
    sapo_temperature_neg: float,
    delta: float | None,
) -> None:
    check_beta(beta)
    check_choice(loss_type, GRPO_LOSS_TYPES, "loss_type")
    check_choice(importance_sampling_level, IMPORTANCE_SAMPLING_LEVELS, "importance_sampling_level")
    if importance_sampling_level == "sequence" and loss_type in ("cispo", "sapo", "vespo"):
        raise ValueError(f"importance_sampling_level='sequence' is not defined for loss_type={loss_type!r}")
    if loss_type == "dr_grpo" and (max_completion_length is None or max_completion_length <= 0):
        raise ValueError(f"loss_type='dr_grpo' needs max_completion_length > 0, got {max_completion_length}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not (sapo_temperature_pos > 0 and sapo_temperature_neg > 0):
        raise ValueError(
            f"sapo_temperature_pos and sapo_temperature_neg must be > 0, got {sapo_temperature_pos}, "
            f"{sapo_temperature_neg}"
        )
    if delta is not None and not delta > 0:
        raise ValueError(f"delta must be > 0 or None, got {delta}")


def _world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


_GRPO_SLOTS = (0, 1, 5)


class LigerFusedLinearGRPOFunction(FusedLinearChunkedFunction):
    @staticmethod
    def forward(
        ctx: Any,
        _input: torch.Tensor,
        weight: torch.Tensor,
        selected_token_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        advantages: torch.Tensor,
        bias: torch.Tensor | None = None,
        ref_per_token_logps: torch.Tensor | None = None,
        old_per_token_logps: torch.Tensor | None = None,
        ref_input: torch.Tensor | None = None,
        ref_weight: torch.Tensor | None = None,
        ref_bias: torch.Tensor | None = None,
        beta: float = 0.04,
        epsilon_low: float = 0.2,
        epsilon_high: float = 0.2,
        loss_type: str = "dapo",
        max_completion_length: int | None = None,
        importance_sampling_level: str = "token",
        sapo_temperature_pos: float = 1.0,
        sapo_temperature_neg: float = 1.05,
        temperature: float = 1.0,
        compiled: bool = True,
        use_ref_model: bool = True,
        chunk_size: int | None = None,
        vllm_is_ratio: torch.Tensor | None = None,
        delta: float | None = None,
        use_bias_correction_kl: bool = False,
        vespo_k_pos: float = 2.0,
        vespo_lambda_pos: float = 3.0,
        vespo_k_neg: float = 3.0,
        vespo_lambda_neg: float = 2.0,
        num_items_in_batch: int | torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Arguments as liger-kernel 0.8.5's, in its order.
        Returns (loss, (mean k3 if beta != 0, clip_ratio)). ``compiled`` is accepted for compatibility
        (the per-chunk gradient step is a Triton kernel either way)."""
        check_grpo_options(
            beta, loss_type, importance_sampling_level, max_completion_length, temperature,
            sapo_temperature_pos, sapo_temperature_neg, delta,
        )  # fmt: skip
        check_sequences(_input)
        n_seq, seq_len = _input.shape[:2]
        check_linear(_input, weight, bias, ("_input", "weight", "bias"))
        check_shape(
            selected_token_ids, (n_seq, seq_len), "selected_token_ids", "one token id per row of _input"
        )
        check_targets(selected_token_ids, weight.shape[0], None, "selected_token_ids")
        check_shape(attention_mask, (n_seq, seq_len), "attention_mask", "one value per token")
        if tuple(advantages.shape) not in ((n_seq,), (n_seq, seq_len)):
            raise ValueError(
                f"advantages must have shape ({n_seq},) or ({n_seq}, {seq_len}), got {tuple(advantages.shape)}"
            )
        check_shape(old_per_token_logps, (n_seq, seq_len), "old_per_token_logps", "one log-prob per token")
        check_shape(ref_per_token_logps, (n_seq, seq_len), "ref_per_token_logps", "one log-prob per token")
        if vllm_is_ratio is not None and tuple(vllm_is_ratio.shape) not in ((n_seq, seq_len), (n_seq, 1)):
            raise ValueError(
                f"vllm_is_ratio must have shape ({n_seq}, {seq_len}) or ({n_seq}, 1), got {tuple(vllm_is_ratio.shape)}"
            )
        use_ref_input = beta != 0 and ref_per_token_logps is None
        if use_ref_input:
            check_reference(
                _input, weight, ref_input if use_ref_model else None, ref_weight, ref_bias,
                "beta != 0 needs ref_per_token_logps, or ref_input and ref_weight with use_ref_model=True",
            )  # fmt: skip

        mask = attention_mask.to(torch.float32 if _input.dtype != torch.float64 else torch.float64)
        advantages = advantages.to(mask.dtype)
        token_count = mask.sum().clamp(min=1.0)
        if loss_type in ("grpo", "sapo", "luspo"):
            normalizer = torch.tensor(float(n_seq), device=mask.device)
        elif loss_type == "bnpo":
            normalizer = token_count
        elif loss_type == "dr_grpo":
            normalizer = torch.tensor(float(n_seq * max_completion_length), device=mask.device)
        elif num_items_in_batch is not None:
            normalizer = (
                torch.as_tensor(num_items_in_batch, device=mask.device).to(mask.dtype) / _world_size()
            ).clamp(min=1.0)
        else:
            normalizer = token_count

        def chunk_targets(rows: torch.Tensor) -> list[tuple[torch.Tensor, int | None]]:
            return [(selected_token_ids.index_select(0, rows), None)]

        def chunk_loss(
            logprobs: list[torch.Tensor], rows: torch.Tensor, logit_sums: torch.Tensor
        ) -> tuple[torch.Tensor, Any]:
            ids = selected_token_ids.index_select(0, rows)
            m = mask.index_select(0, rows)
            adv = advantages.index_select(0, rows)
            adv = adv.unsqueeze(1) if adv.dim() == 1 else adv
            lp = logprobs[0]
            old = (
                old_per_token_logps.index_select(0, rows) if old_per_token_logps is not None else lp.detach()
            )
            log_ratio = lp - old
            if importance_sampling_level == "sequence":
                log_w = ((log_ratio * m).sum(-1) / m.sum(-1).clamp(min=1.0)).unsqueeze(-1)
            else:
                log_w = log_ratio
            ratio = torch.exp(log_w)
            if loss_type == "cispo":
                per_token = -torch.clamp(ratio, max=epsilon_high).detach() * adv * lp
                low_clipped, high_clipped = torch.zeros_like(ratio, dtype=torch.bool), ratio > epsilon_high
            elif loss_type == "vespo":
                with torch.no_grad():
                    seq_log_w = (torch.clamp(log_ratio, -20.0, 20.0) * m).sum(-1, keepdim=True)
                    if vllm_is_ratio is not None:
                        log_is = torch.log(vllm_is_ratio.index_select(0, rows)).clamp(math.log(1e-8), 20.0)
                        seq_log_w = seq_log_w + log_is.sum(-1, keepdim=True)
                    seq_log_w = seq_log_w.clamp(math.log(1e-8), 20.0)
                    k = torch.where(adv >= 0, vespo_k_pos, vespo_k_neg)
                    lam = torch.where(adv >= 0, vespo_lambda_pos, vespo_lambda_neg).clamp(min=1e-4)
                    phi = torch.exp(lam + k * seq_log_w - lam * seq_log_w.exp()).nan_to_num(0.0, 0.0, 0.0)
                per_token = -phi * adv * lp
                low_clipped = high_clipped = torch.zeros_like(ratio, dtype=torch.bool)
            elif loss_type == "sapo":
                tau = torch.where(adv > 0, sapo_temperature_pos, sapo_temperature_neg)
                per_token = -torch.sigmoid(tau * (ratio - 1)) * 4 / tau * adv
                low_clipped = high_clipped = torch.zeros_like(ratio, dtype=torch.bool)
            else:
                clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
                unclipped = torch.clamp(ratio, max=delta) if delta is not None else ratio
                per_token = -torch.min(unclipped * adv, clipped * adv)
                low_clipped, high_clipped = ratio < 1 - epsilon_low, ratio > 1 + epsilon_high
            if vllm_is_ratio is not None and loss_type != "vespo":
                per_token = per_token * vllm_is_ratio.index_select(0, rows)
            kl_sum = None
            if beta != 0:
                if use_ref_input:
                    ref_lp = frozen_token_logprobs(
                        ref_input.index_select(0, rows), ref_weight, ref_bias, ids, None, temperature
                    )
                else:
                    ref_lp = ref_per_token_logps.index_select(0, rows)
                kl = torch.exp(ref_lp - lp) - (ref_lp - lp) - 1
                if use_bias_correction_kl:
                    kl = kl * ratio
                per_token = per_token + beta * kl
                kl_sum = (kl.detach() * m).sum()
            if loss_type in ("grpo", "sapo"):
                loss = ((per_token * m).sum(-1) / m.sum(-1).clamp(min=1.0)).sum() / normalizer
            else:
                loss = (per_token * m).sum() / normalizer
            is_clipped = (low_clipped & (adv < 0)) | (high_clipped & (adv > 0))
            if importance_sampling_level == "sequence":  # one ratio per sequence: TRL counts sequences
                clipped_sum = is_clipped.sum().to(m.dtype)
            else:
                clipped_sum = (is_clipped * m).sum()
            return loss, (kl_sum, clipped_sum)

        seqs_per_chunk = units_per_chunk(
            chunk_size, n_seq, _input.shape[1], _input, weight, logits_buffers=2 if use_ref_input else 1
        )
        loss, auxes, *grads = chunked_value_and_grads(
            _input, weight, bias, row_chunks(n_seq, seqs_per_chunk, _input.device), chunk_loss,
            needs_grads(ctx, _GRPO_SLOTS), chunk_targets=chunk_targets, temperature=temperature,
        )  # fmt: skip
        metrics = []
        if beta != 0:
            metrics.append(torch.stack([a[0] for a in auxes]).sum() / token_count)
        clip_count = (
            torch.tensor(float(n_seq), device=mask.device)
            if importance_sampling_level == "sequence"
            else token_count
        )
        metrics.append(torch.stack([a[1] for a in auxes]).sum() / clip_count.clamp(min=1.0))
        metrics = tuple(metrics)
        finish_forward(ctx, _GRPO_SLOTS, 31, (_input, weight, bias), grads, metrics)
        return loss, metrics


class LigerFusedLinearGRPOLoss(torch.nn.Module):
    """lm_head + GRPO loss without the logits. forward(_input, lin_weight, selected_token_ids, attention_mask,
    advantages, bias=None, ref_per_token_logps=None, old_per_token_logps=None, ref_input=None, ref_weight=None,
    ref_bias=None, vllm_is_ratio=None, num_items_in_batch=None) returns (loss, metrics)."""

    def __init__(
        self,
        beta: float = 0.04,
        compiled: bool = True,
        use_ref_model: bool = True,
        chunk_size: int | None = None,
        epsilon_low: float = 0.2,
        epsilon_high: float = 0.2,
        loss_type: str = "dapo",
        max_completion_length: int | None = None,
        importance_sampling_level: str = "token",
        sapo_temperature_pos: float = 1.0,
        sapo_temperature_neg: float = 1.05,
        temperature: float = 1.0,
        delta: float | None = None,
        use_bias_correction_kl: bool = False,
        vespo_k_pos: float = 2.0,
        vespo_lambda_pos: float = 3.0,
        vespo_k_neg: float = 3.0,
        vespo_lambda_neg: float = 2.0,
    ) -> None:
        super().__init__()
        check_grpo_options(
            beta, loss_type, importance_sampling_level, max_completion_length, temperature,
            sapo_temperature_pos, sapo_temperature_neg, delta,
        )  # fmt: skip
        self.beta, self.compiled, self.use_ref_model, self.chunk_size = (
            beta,
            compiled,
            use_ref_model,
            chunk_size,
        )
        self.epsilon_low, self.epsilon_high, self.loss_type = epsilon_low, epsilon_high, loss_type
        self.max_completion_length, self.importance_sampling_level = (
            max_completion_length,
            importance_sampling_level,
        )
        self.sapo_temperature_pos, self.sapo_temperature_neg = sapo_temperature_pos, sapo_temperature_neg
        self.temperature, self.delta, self.use_bias_correction_kl = temperature, delta, use_bias_correction_kl
        self.vespo_k_pos, self.vespo_lambda_pos = vespo_k_pos, vespo_lambda_pos
        self.vespo_k_neg, self.vespo_lambda_neg = vespo_k_neg, vespo_lambda_neg

    def forward(
        self,
        _input: torch.Tensor,
        lin_weight: torch.Tensor,
        selected_token_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        advantages: torch.Tensor,
        bias: torch.Tensor | None = None,
        ref_per_token_logps: torch.Tensor | None = None,
        old_per_token_logps: torch.Tensor | None = None,
        ref_input: torch.Tensor | None = None,
        ref_weight: torch.Tensor | None = None,
        ref_bias: torch.Tensor | None = None,
        vllm_is_ratio: torch.Tensor | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        return LigerFusedLinearGRPOFunction.apply(
            _input, lin_weight, selected_token_ids, attention_mask, advantages, bias, ref_per_token_logps,
            old_per_token_logps, ref_input, ref_weight, ref_bias, self.beta, self.epsilon_low, self.epsilon_high,
            self.loss_type, self.max_completion_length, self.importance_sampling_level, self.sapo_temperature_pos,
            self.sapo_temperature_neg, self.temperature, self.compiled, self.use_ref_model, self.chunk_size,
            vllm_is_ratio, self.delta, self.use_bias_correction_kl, self.vespo_k_pos, self.vespo_lambda_pos,
            self.vespo_k_neg, self.vespo_lambda_neg, num_items_in_batch,
        )  # fmt: skip
