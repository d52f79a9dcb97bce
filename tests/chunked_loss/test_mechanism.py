"""The chunked mechanism's two ways of making a log-prob loss's logits gradient agree: the Triton kernels of
``liger_kernel.ops.token_logprobs`` (logits in x's dtype) and the PyTorch steps they replace (an fp32 copy of
the chunk), with two target sets (ORPO's NLL) and a temperature (GRPO). ``compiled`` has no effect."""

import pytest
import torch

import liger_kernel.ops.token_logprobs as token_logprobs
from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss, LigerFusedLinearORPOLoss, fused_linear_chunked
from liger_kernel.chunked_loss.fused_linear_chunked import logprob_chunk_budget, units_per_chunk
from liger_kernel.ops.fused_linear_cross_entropy import REFERENCE_RATES
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
    # the H200's rates, whatever this machine is (meta tensors would get the CPU's)
    monkeypatch.setattr(fused_linear_chunked, "device_rates", lambda device: REFERENCE_RATES)
    meta = dict(device="meta", dtype=torch.bfloat16)
    hidden, vocab = 4096, 128256
    x, weight = torch.empty(16, 1024, hidden, **meta), torch.empty(vocab, hidden, **meta)
    assert units_per_chunk(3, 16, 1024, x, weight) == 3  # given: kept
    budget = logprob_chunk_budget(16 * 1024, hidden, vocab, 2, 4)
    # the plain computation's peak is ~10 bytes per logit; a quarter of it, less the fp32 dW and dx
    assert budget == (16 * 1024 * vocab * 10) // 4 - (vocab * hidden * 4 + 16 * 1024 * hidden * 2)
    # GRPO-like, 16 x 1024 tokens: the cost rule's 4096-token chunks fit the budget (4 chunks, where
    # one sequence per chunk re-reads and re-writes the fp32 dW 16 times)
    assert units_per_chunk(None, 16, 1024, x, weight) == 4
    # short sequences are packed as far as the cost rule asks
    assert units_per_chunk(None, 64, 256, torch.empty(64, 256, hidden, **meta), weight) == 16
    # DPO-like, 8 pairs of 1024 + 1024 tokens with a reference model's logits alongside: 2 pairs per chunk
    assert units_per_chunk(None, 8, 2048, x, weight, logits_buffers=2) == 2
    # the budget binds: 4 buffers of 8192-token chunks would not fit, so fewer tokens per chunk
    per = units_per_chunk(None, 8, 2048, x, weight, logits_buffers=4)
    assert per * 2048 * vocab * 2 * 4 <= budget and per == 1
    # a user's budget wins over the default, down to one unit
    monkeypatch.setenv("LIGER_FLCE_CHUNK_BUDGET_MIB", "256")
    assert units_per_chunk(None, 16, 1024, x, weight) == 1
    monkeypatch.setenv("LIGER_FLCE_CHUNK_BUDGET_MIB", "65536")
    assert units_per_chunk(None, 16, 1024, x, weight) == 4  # the cost rule's, not more


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "4"])
def test_bad_chunk_size_is_named(bad):
    x, weight = torch.zeros(2, 3, 4), torch.zeros(5, 4)
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        units_per_chunk(bad, 2, 3, x, weight)


def test_lm_head_logits_rows_start_aligned(device):
    """A chunk's logits (and a frozen model's) are stored with rows LOGITS_ROW_ALIGN elements apart,
    whatever the vocabulary, and hold exactly what the lm_head computes (``F.linear`` in x's dtype);
    under autocast they are ``F.linear``'s own output, in autocast's dtype."""
    from liger_kernel.ops.fused_linear_cross_entropy import LOGITS_ROW_ALIGN

    gen = torch.Generator(device="cpu").manual_seed(1)
    x = torch.randn(3, 5, 16, generator=gen).to(device=device, dtype=torch.bfloat16)
    weight = torch.randn(97, 16, generator=gen).to(device=device, dtype=torch.bfloat16)
    bias = torch.randn(97, generator=gen).to(device=device, dtype=torch.bfloat16)
    # Bit for bit on the CPU; on a GPU the stride may pick another GEMM kernel (bf16's tolerances).
    exact = dict(atol=0, rtol=0) if device == "cpu" else {}
    for b in (None, bias):
        logits = fused_linear_chunked.lm_head_logits(x, weight, b)
        assert logits.shape == (3, 5, 97) and logits.stride(-1) == 1
        assert logits.stride(-2) % LOGITS_ROW_ALIGN == 0 and logits.stride(-2) >= 97
        assert_close(logits, torch.nn.functional.linear(x, weight, b), **exact)
    with torch.autocast(device, dtype=torch.bfloat16):
        x32, w32 = x.float(), weight.float()
        logits = fused_linear_chunked.lm_head_logits(x32, w32, None)
        assert logits.dtype == torch.bfloat16
        assert_close(logits, torch.nn.functional.linear(x32, w32), atol=0, rtol=0)


def test_weight_gradient_without_chunks_is_zero(device):
    """dW is written by the first chunk (no zero fill); with no chunk at all it is zeros, in the fp32
    accumulator's dtype."""
    x = torch.randn(0, 8, device=device, dtype=torch.bfloat16)
    weight = torch.randn(11, 8, device=device, dtype=torch.bfloat16)
    loss, auxes, grad_x, grad_w, grad_b = fused_linear_chunked.chunked_value_and_grads(
        x, weight, None, [], lambda logits, rows: (logits.sum(), None), (True, True, False)
    )
    assert auxes == [] and grad_b is None and grad_x.shape == (0, 8)
    assert grad_w.dtype == torch.float32 and bool((grad_w == 0).all())
