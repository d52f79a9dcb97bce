"""Fused linear JSD and cosine-similarity distillation against the full-logits float64 formula (``_reference.py``): loss, soft and hard
parts and the gradients of the student's input, weight and bias (the teacher has no grad), fp32, bf16 and fp16,
beta in {0, 0.5, 1}, temperature, chunk boundaries, ignored labels and an all-ignored batch."""

import pytest
import torch
from _reference import check_against_reference, jsd_reference
from hypothesis import given, settings
from hypothesis import strategies as st

from liger_kernel.chunked_loss import LigerFusedLinearCosineSimilarityLoss, LigerFusedLinearJSDLoss
from liger_kernel.chunked_loss.functional import liger_fused_linear_jsd
from liger_testing import strategies as lst


@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_jsd_matches_formula(device, data):
    n_tokens = data.draw(st.integers(1, 9))
    student_hidden, teacher_hidden = data.draw(st.integers(1, 8)), data.draw(st.integers(1, 8))
    vocab = data.draw(lst.dims(2, 40))
    dtype = data.draw(lst.dtypes(torch.float32, torch.bfloat16, torch.float16))

    def tensor(shape, grad=False):
        return data.draw(lst.tensors(shape, dtype, device=device, requires_grad=grad, low=-1, high=1))

    x, weight = tensor((n_tokens, student_hidden), True), tensor((vocab, student_hidden), True)
    bias = tensor((vocab,), True) if data.draw(st.booleans()) else None
    teacher_x, teacher_w = tensor((n_tokens, teacher_hidden)), tensor((vocab, teacher_hidden))
    teacher_b = tensor((vocab,)) if data.draw(st.booleans()) else None
    fraction = data.draw(st.sampled_from([0.0, 0.3, 1.0]))
    labels = data.draw(lst.labels(n_tokens, vocab, device=device, ignore_fraction=fraction))
    options = dict(
        beta=data.draw(st.sampled_from([0.0, 0.5, 1.0, 0.2])), temperature=data.draw(st.sampled_from([1.0, 2.0])),
        weight_hard_loss=data.draw(st.sampled_from([0.0, 0.3])), weight_soft_loss=0.7,
    )  # fmt: skip
    soft = data.draw(st.sampled_from(["jsd", "cosine"]))
    cls = LigerFusedLinearJSDLoss if soft == "jsd" else LigerFusedLinearCosineSimilarityLoss
    module = cls(chunk_size=data.draw(st.integers(1, n_tokens + 1)), return_soft_hard_loss=True, **options)

    def ours(x, weight, bias):
        return module(x, weight, teacher_x, teacher_w, labels, bias, teacher_b)

    def reference(x, weight, bias):
        return jsd_reference(x, weight, teacher_x, teacher_w, labels, bias, teacher_b, soft=soft, **options)

    check_against_reference(ours, reference, [x, weight, bias], 3, msg=f"{soft} {options}")


def test_jsd_functional_positional_and_bad_arguments():
    x, w = torch.randn(5, 4, requires_grad=True), torch.randn(7, 4, requires_grad=True)
    tx, tw = torch.randn(5, 3), torch.randn(7, 3)
    labels = torch.randint(0, 7, (5,))
    loss = liger_fused_linear_jsd(x, w, tx, tw, labels, None, None, 0.5, 0.5, 0.5, -100, 1.0, True, 2, False)
    expected = jsd_reference(x, w, tx, tw, labels)[0]
    torch.testing.assert_close(loss, expected)
    with pytest.raises(ValueError, match="teacher_weight has vocabulary 6 but student_weight has 7"):
        LigerFusedLinearJSDLoss()(x, w, tx, tw[:6], labels)
    with pytest.raises(ValueError, match="beta must lie in"):
        LigerFusedLinearJSDLoss(beta=1.5)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        LigerFusedLinearJSDLoss(temperature=0)
    with pytest.raises(ValueError, match="teacher_input must have shape"):
        LigerFusedLinearJSDLoss()(x, w, tx[:4], tw, labels)
