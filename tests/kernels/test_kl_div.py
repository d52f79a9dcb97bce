"""LigerKLDIVLoss / liger_kl_div against the KL divergence's float64 math, with torch.nn.functional.kl_div
in the same dtype as the reference."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from _distill_check import block_max, check, log_probs
from hypothesis import given, settings
from hypothesis import strategies as st

from liger_kernel.ops import kl_div as kl_ops
from liger_kernel.transformers import LigerKLDIVLoss
from liger_kernel.transformers.functional import liger_kl_div
from liger_testing import strategies as lst


def kl_math(input, target, reduction="batchmean", log_target=False):
    """sum_j p_j (log p_j - input_j), p the target's probabilities, reduced as torch's KLDivLoss says."""
    if log_target:
        elements = target.exp() * (target - input)
    else:  # 0 log 0 = 0 (no target here is that small in its dtype)
        elements = target * (target.log() - input)
    if reduction == "none":
        return elements
    if reduction == "batchmean":
        return elements.sum() / input.shape[0]
    if reduction == "mean":
        return elements.sum() / input.numel()
    return elements.sum()


def torch_kl_div(input, target, reduction="batchmean", log_target=False):
    with warnings.catch_warnings():  # "mean" warns that it is not the KL divergence's mean
        warnings.simplefilter("ignore")
        return F.kl_div(input, target, reduction=reduction, log_target=log_target)


@settings(max_examples=24, deadline=None)
@given(
    shape=st.sampled_from([(1,), (3,), (2, 1), (1, 2), (4, 3)]),
    vocab=lst.dims(2, 300),
    dtype=lst.dtypes(torch.float32, torch.bfloat16, torch.float16),
    reduction=st.sampled_from(["batchmean", "sum", "mean", "none"]),
    log_target=st.booleans(),
    target_grad=st.booleans(),
    blocks=st.sampled_from([8192, 64]),
    data=st.data(),
)
def test_matches_math(device, shape, vocab, dtype, reduction, log_target, target_grad, blocks, data):
    full = (*shape, vocab)
    x = data.draw(lst.tensors(full, torch.float32, device=device, low=-6.0, high=6.0))
    y = data.draw(lst.tensors(full, torch.float32, device=device, low=-6.0, high=6.0))
    target = log_probs(y, dtype) if log_target else torch.softmax(y, -1).to(dtype)
    inputs = {
        "input": log_probs(x, dtype),
        "target": target,
        "reduction": reduction,
        "log_target": log_target,
    }
    grads = ("input", "target") if target_grad else ("input",)
    with block_max(blocks):
        check(liger_kl_div, kl_math, inputs, grads, dtype, reference_fn=torch_kl_div)


def test_module_is_a_kldivloss(device):
    x = torch.randn(4, 11, device=device).log_softmax(-1)
    t = torch.randn(4, 11, device=device).softmax(-1)
    module = LigerKLDIVLoss(reduction="batchmean")
    assert isinstance(module, torch.nn.KLDivLoss) and module.eps == 1e-10
    torch.testing.assert_close(module(x, t), torch_kl_div(x, t, "batchmean"))
    with pytest.warns(UserWarning, match="deprecated"):  # torch's deprecated options: reduction="sum"
        legacy = LigerKLDIVLoss(size_average=False)
    torch.testing.assert_close(legacy(x, t), torch_kl_div(x, t, "sum"))
    torch.testing.assert_close(liger_kl_div(x, t, reduction="none"), torch_kl_div(x, t, "none"))


def test_zero_target_gives_zero(device):
    x = torch.randn(2, 9, device=device).log_softmax(-1).requires_grad_()
    t = torch.zeros(2, 9, device=device)
    loss = liger_kl_div(x, t, reduction="sum")
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(x.grad, torch.zeros_like(x))


def test_bad_input_names_the_argument(device):
    x = torch.randn(4, 10, device=device).log_softmax(-1)
    with pytest.raises(ValueError, match="reduction must be one of"):
        LigerKLDIVLoss(reduction="avg")
    with pytest.raises(ValueError, match="reduction must be one of"):
        liger_kl_div(x, x.exp(), reduction="elementwise_mean")
    with pytest.raises(ValueError, match="input and target must have the same shape"):
        liger_kl_div(x, x[:2])
    with pytest.raises(ValueError, match="eps must be positive"):
        liger_kl_div(x, x.exp(), eps=0.0)


def test_opcheck(device):
    x = torch.randn(5, 24, device=device).log_softmax(-1).requires_grad_()
    t = torch.randn(5, 24, device=device).softmax(-1).requires_grad_()
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    for reduction in ("batchmean", "none"):
        args = (x, t, reduction, False, 1e-10, 0.2, True, True)
        torch.library.opcheck(kl_ops.kl_div_forward.op, args, test_utils=utils)
