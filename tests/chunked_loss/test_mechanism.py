"""The chunked mechanism's two ways of making a log-prob loss's logits gradient agree: the Triton kernels of
``liger_kernel.ops.token_logprobs`` (logits in x's dtype) and the PyTorch steps they replace (an fp32 copy of
the chunk), with two target sets (ORPO's NLL) and a temperature (GRPO). ``compiled`` has no effect."""

import pytest
import torch

import liger_kernel.ops.token_logprobs as token_logprobs
from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss, LigerFusedLinearORPOLoss
from liger_kernel.chunked_loss.fused_linear_chunked import units_per_chunk
from liger_testing import assert_close, tolerances


def _both_paths(device, dtype):
    gen = torch.Generator(device="cpu").manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype).requires_grad_()

    x, weight, bias = randn(4, 5, 8), randn(37, 8), randn(37)
    target = torch.randint(0, 37, (4, 5), generator=gen).to(device)
    target[0, :2] = -100
    nll_target = target.roll(1, dims=1)
    ids, mask = target.clamp(min=0), (target >= 0).long()
    advantages = torch.randn(4, generator=gen).to(device)
    results = {}
    uses_kernel = token_logprobs._uses_kernel
    for kernel in (False, True):
        token_logprobs._uses_kernel = uses_kernel if kernel else (lambda logits: False)
        try:
            orpo = LigerFusedLinearORPOLoss(chunk_size=1)  # two target sets (the NLL's own)
            grpo = LigerFusedLinearGRPOLoss(beta=0.0, loss_type="bnpo", temperature=0.7, chunk_size=3)
            loss = (
                orpo(weight, x, target, bias, nll_target)[0] + grpo(x, weight, ids, mask, advantages, bias)[0]
            )
            results[kernel] = (loss.detach(), *torch.autograd.grad(loss, (x, weight, bias)))
        finally:
            token_logprobs._uses_kernel = uses_kernel
    return results


def test_kernel_gradient_matches_torch_steps():
    results = _both_paths("cpu", torch.float32)
    tol = tolerances(torch.float32)
    assert_close(results[True], results[False], atol=tol.atol, rtol=tol.rtol)


@pytest.mark.gpu
def test_kernel_gradient_matches_torch_steps_bf16(device):
    results = _both_paths(device, torch.bfloat16)
    # both round G to bf16 once, from fp32 values that differ only in the order of the sums
    tol = tolerances(torch.bfloat16)
    assert_close(results[True], results[False], atol=tol.atol, rtol=tol.rtol)


def test_units_per_chunk_rule(monkeypatch):
    monkeypatch.delenv("LIGER_FLCE_CHUNK_BUDGET_MIB", raising=False)
    meta = dict(device="meta", dtype=torch.bfloat16)
    x, weight = torch.empty(16, 1024, 4096, **meta), torch.empty(128256, 4096, **meta)
    assert units_per_chunk(3, 16, 1024, x, weight) == 3  # given: kept
    # a 1024-token sequence's logits are ~250 MiB: one per chunk, as liger-kernel 0.8's default
    assert units_per_chunk(None, 16, 1024, x, weight) == 1
    # short sequences are packed (one per chunk would re-read and re-write the fp32 dW 16 times)
    short = units_per_chunk(None, 16, 64, x[:, :64], weight)
    assert 1 < short <= 16
    # a frozen model's logits share the budget; a larger budget never gives smaller chunks
    assert units_per_chunk(None, 16, 64, x[:, :64], weight, logits_buffers=2) <= short
    monkeypatch.setenv("LIGER_FLCE_CHUNK_BUDGET_MIB", "4096")
    assert units_per_chunk(None, 16, 1024, x, weight) >= 1
    assert units_per_chunk(None, 16, 64, x[:, :64], weight) >= short


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "4"])
def test_bad_chunk_size_is_named(bad):
    x, weight = torch.zeros(2, 3, 4), torch.zeros(5, 4)
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        units_per_chunk(bad, 2, 3, x, weight)
