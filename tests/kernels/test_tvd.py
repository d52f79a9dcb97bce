"""LigerTVDLoss / liger_tvd against the total variation distance's float64 math."""

import pytest
import torch
from _distill_check import block_max, check
from hypothesis import given, settings
from hypothesis import strategies as st

from liger_kernel.ops import tvd as tvd_ops
from liger_kernel.transformers import LigerTVDLoss
from liger_kernel.transformers.functional import liger_tvd
from liger_testing import strategies as lst


def tvd_math(input, target, shift_labels=None, reduction="batchmean"):
    """1/2 sum_j |p_j - q_j| per token, tokens labelled -100 left out, reduced over the tokens kept."""
    keep = torch.ones(input.shape[0], 1, dtype=torch.bool, device=input.device)
    if shift_labels is not None:
        keep = (shift_labels != -100)[:, None]
    elements = 0.5 * (input - target).abs() * keep
    kept = keep.sum().clamp(min=1)
    if reduction == "none":
        return elements
    if reduction == "batchmean":
        return elements.sum() / kept
    if reduction == "mean":
        return elements.sum() / (kept * input.shape[1])
    return elements.sum()


@settings(max_examples=20, deadline=None)
@given(
    n=lst.dims(1, 9),
    vocab=lst.dims(2, 300),
    dtype=lst.dtypes(torch.float32, torch.bfloat16, torch.float16),
    reduction=st.sampled_from(["batchmean", "sum", "mean", "none"]),
    ignore_fraction=st.sampled_from([None, 0.0, 0.5, 1.0]),
    target_grad=st.booleans(),
    blocks=st.sampled_from([8192, 64]),
    data=st.data(),
)
def test_matches_math(device, n, vocab, dtype, reduction, ignore_fraction, target_grad, blocks, data):
    x = data.draw(lst.tensors((n, vocab), torch.float32, device=device, low=-6.0, high=6.0))
    y = data.draw(lst.tensors((n, vocab), torch.float32, device=device, low=-6.0, high=6.0))
    p, q = torch.softmax(x, -1).to(dtype), torch.softmax(y, -1).to(dtype)
    q[0, 0] = p[0, 0]  # a tie: sign(0) = 0 in the gradient
    labels = None
    if ignore_fraction is not None:
        labels = data.draw(lst.labels(n, vocab, device=device, ignore_fraction=ignore_fraction))
    inputs = {"input": p, "target": q, "shift_labels": labels, "reduction": reduction}
    grads = ("input", "target") if target_grad else ("input",)
    with block_max(blocks):
        check(liger_tvd, tvd_math, inputs, grads, dtype)


def test_module_defaults_and_all_ignored(device):
    p = torch.randn(3, 7, device=device).softmax(-1).requires_grad_()
    q = torch.randn(3, 7, device=device).softmax(-1)
    module = LigerTVDLoss()
    assert module.reduction == "batchmean" and module.ignore_index == -100
    torch.testing.assert_close(module(p, q), liger_tvd(p, q, reduction="batchmean"))
    loss = module(p, q, torch.full((3,), -100, device=device))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(p.grad, torch.zeros_like(p))


def test_bad_input_names_the_argument(device):
    p = torch.randn(4, 10, device=device).softmax(-1)
    with pytest.raises(ValueError, match="reduction must be one of"):
        LigerTVDLoss(reduction="avg")
    with pytest.raises(ValueError, match="input and target must have the same shape"):
        liger_tvd(p, p[:, :5])
    with pytest.raises(ValueError, match="shift_labels must hold one label per row"):
        liger_tvd(p, p, torch.zeros(5, dtype=torch.long, device=device))


def test_opcheck(device):
    p = torch.randn(5, 24, device=device).softmax(-1).requires_grad_()
    q = torch.randn(5, 24, device=device).softmax(-1)
    labels = torch.tensor([1, -100, 2, 3, 4], device=device)
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    for reduction in ("mean", "none"):
        args = (p, q, labels, reduction, -100, True, False)
        torch.library.opcheck(tvd_ops.tvd_forward.op, args, test_utils=utils)
