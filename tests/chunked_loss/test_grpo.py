"""GRPO and its variants against the full-logits float64 formula of TRL's GRPOTrainer (``_reference.py``):
loss, metrics and the gradients of input, weight and bias, fp32, bf16 and fp16, with masked tokens, fully masked
sequences, chunk boundaries, off-policy old log-probs and a reference model given as hidden states or as
per-token log-probs."""

import pytest
import torch
from _reference import check_against_reference, grpo_reference, logits_of
from hypothesis import given, settings
from hypothesis import strategies as st

from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss
from liger_kernel.chunked_loss.grpo_loss import GRPO_LOSS_TYPES
from liger_testing import strategies as lst


@settings(max_examples=16, deadline=None)
@given(data=st.data())
def test_grpo_matches_formula(device, data):
    n_seq = data.draw(st.integers(1, 4))
    seq_len = data.draw(st.integers(1, 4))
    hidden = data.draw(st.integers(1, 8))
    vocab = data.draw(lst.dims(2, 40))
    dtype = data.draw(lst.dtypes(torch.float32, torch.bfloat16, torch.float16))
    loss_type = data.draw(st.sampled_from(GRPO_LOSS_TYPES))
    level = (
        "token"
        if loss_type in ("cispo", "sapo", "vespo")
        else data.draw(st.sampled_from(["token", "sequence"]))
    )
    beta = data.draw(st.sampled_from([0.0, 0.04, 0.5]))
    temperature = data.draw(st.sampled_from([1.0, 0.7]))
    ref_as_hidden = data.draw(st.booleans())
    off_policy = data.draw(st.booleans())
    delta = data.draw(st.sampled_from([None, 1.1])) if loss_type not in ("cispo", "sapo", "vespo") else None
    epsilon_high = 5.0 if loss_type == "cispo" else 0.28
    chunk_size = data.draw(st.none() | st.integers(1, n_seq + 1))

    def tensor(shape, grad=False):
        return data.draw(lst.tensors(shape, dtype, device=device, requires_grad=grad, low=-1, high=1))

    x, weight = tensor((n_seq, seq_len, hidden), True), tensor((vocab, hidden), True)
    bias = tensor((vocab,), True) if data.draw(st.booleans()) else None
    ids = torch.randint(0, vocab, (n_seq, seq_len), device=device)
    mask = (torch.rand(n_seq, seq_len, device=device) > 0.3).long()
    if data.draw(st.booleans()):
        mask[data.draw(st.integers(0, n_seq - 1))] = 0  # a completion with no token
    advantages = torch.randn(n_seq, device=device)
    ref_x, ref_w = tensor(x.shape), tensor(weight.shape)
    with torch.no_grad():  # per-token log-probs of the frozen reference and of the "old" policy
        ref_logps = torch.log_softmax(logits_of(ref_x, ref_w) / temperature, -1).gather(-1, ids[..., None])[
            ..., 0
        ]
        old_logps = torch.log_softmax(logits_of(x, weight, bias) / temperature, -1).gather(
            -1, ids[..., None]
        )[..., 0]
        old_logps = old_logps + 0.3 * torch.randn_like(old_logps) if off_policy else None
    options = dict(beta=beta, loss_type=loss_type, importance_sampling_level=level, temperature=temperature,
                   delta=delta, epsilon_high=epsilon_high, max_completion_length=seq_len + 2)  # fmt: skip
    module = LigerFusedLinearGRPOLoss(chunk_size=chunk_size, epsilon_low=0.2, **options)

    def ours(x, weight, bias):
        if ref_as_hidden:
            loss, metrics = module(x, weight, ids, mask, advantages, bias, None, old_logps, ref_x, ref_w)
        else:
            loss, metrics = module(x, weight, ids, mask, advantages, bias, ref_logps, old_logps)
        assert len(metrics) == (2 if beta else 1)
        return (loss, *metrics)

    def reference(x, weight, bias):
        loss, kl, clipped = grpo_reference(
            x, weight, ids, mask, advantages, bias, ref_logps=ref_logps,
            old_logps=old_logps, epsilon_low=0.2, **options,
        )  # fmt: skip
        return (loss, clipped) if kl is None else (loss, kl, clipped)

    check_against_reference(ours, reference, [x, weight, bias], 3, msg=f"{loss_type} {level}")


def test_grpo_bad_arguments_are_named():
    x = torch.randn(2, 3, 4, requires_grad=True)
    weight = torch.randn(7, 4, requires_grad=True)
    ids, mask, adv = torch.randint(0, 7, (2, 3)), torch.ones(2, 3), torch.zeros(2)
    with pytest.raises(ValueError, match="unknown loss_type 'ppo'"):
        LigerFusedLinearGRPOLoss(loss_type="ppo")
    with pytest.raises(ValueError, match="beta must be >= 0"):
        LigerFusedLinearGRPOLoss(beta=-1.0)
    with pytest.raises(ValueError, match="max_completion_length"):
        LigerFusedLinearGRPOLoss(loss_type="dr_grpo")
    with pytest.raises(ValueError, match="unknown importance_sampling_level"):
        LigerFusedLinearGRPOLoss(importance_sampling_level="seq")
    with pytest.raises(ValueError, match="beta != 0 needs ref_per_token_logps"):
        LigerFusedLinearGRPOLoss(beta=0.1)(x, weight, ids, mask, adv)
    with pytest.raises(ValueError, match="ref_per_token_logps must have shape"):
        LigerFusedLinearGRPOLoss(beta=0.1)(x, weight, ids, mask, adv, ref_per_token_logps=torch.zeros(2, 2))
    with pytest.raises(ValueError, match="advantages must have shape"):
        LigerFusedLinearGRPOLoss(beta=0.0)(x, weight, ids, mask, torch.zeros(3))
