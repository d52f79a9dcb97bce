"""The chunked mechanism's two ways of making a log-prob loss's logits gradient agree: the in-place steps
(compiled=False, and every device but CUDA) and ``logprob_logits_grad``, the out-of-place form torch.compile
fuses on CUDA. Here the out-of-place form runs eagerly on the CPU; on a GPU (``gpu`` marker) compiled."""

import pytest
import torch

import liger_kernel.chunked_loss.fused_linear_chunked as mechanism
from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss, LigerFusedLinearORPOLoss
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
    for compiled in (False, True):
        orpo = LigerFusedLinearORPOLoss(compiled=compiled, chunk_size=1)  # two target sets (the NLL's own)
        grpo = LigerFusedLinearGRPOLoss(
            beta=0.0, loss_type="bnpo", temperature=0.7, compiled=compiled, chunk_size=3
        )
        loss = orpo(weight, x, target, bias, nll_target)[0] + grpo(x, weight, ids, mask, advantages, bias)[0]
        results[compiled] = (loss.detach(), *torch.autograd.grad(loss, (x, weight, bias)))
    return results


def test_out_of_place_gradient_matches_in_place(monkeypatch):
    monkeypatch.setattr(mechanism, "COMPILE_DEVICES", ("cpu",))
    monkeypatch.setattr(mechanism, "_logprob_logits_grad_compiled", mechanism.logprob_logits_grad)
    results = _both_paths("cpu", torch.float32)
    tol = tolerances(torch.float32)
    assert_close(results[True], results[False], atol=tol.atol, rtol=tol.rtol)


@pytest.mark.gpu
def test_compiled_gradient_matches_in_place(device):
    results = _both_paths(device, torch.bfloat16)
    # bf16 rounding of the gradient happens once in both; the fp32 steps before it differ in order only
    assert_close(results[True], results[False], atol=2e-2, rtol=2e-2)
