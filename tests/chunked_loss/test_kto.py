"""KTO against the full-logits float64 formula (``_reference.py``): loss and the gradients of input, weight and
bias, fp32, bf16 and fp16, with and without a reference model and a KL estimate, padding and all-ignored rows."""

import pytest
import torch
from _reference import check_against_reference, kto_reference
from hypothesis import given, settings
from hypothesis import strategies as st

from liger_kernel.chunked_loss import LigerFusedLinearKTOLoss
from liger_testing import strategies as lst


@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_kto_matches_formula(device, data):
    n_seq, seq_len, hidden = (
        data.draw(st.integers(1, 4)),
        data.draw(st.integers(1, 4)),
        data.draw(st.integers(1, 8)),
    )
    vocab = data.draw(lst.dims(2, 40))
    dtype = data.draw(lst.dtypes(torch.float32, torch.bfloat16, torch.float16))

    def tensor(shape, grad=False):
        return data.draw(lst.tensors(shape, dtype, device=device, requires_grad=grad, low=-1, high=1))

    x, weight = tensor((n_seq, seq_len, hidden), True), tensor((vocab, hidden), True)
    bias = tensor((vocab,), True) if data.draw(st.booleans()) else None
    target = data.draw(
        lst.labels(n_seq * seq_len, vocab, device=device, ignore_fraction=st.sampled_from([0, 0.3]))
    )
    target = target.reshape(n_seq, seq_len)
    if data.draw(st.booleans()):
        target[data.draw(st.integers(0, n_seq - 1))] = -100
    labels = torch.rand(n_seq, device=device) > 0.5
    use_ref = data.draw(st.booleans())
    ref_x, ref_w = tensor(x.shape), tensor(weight.shape)
    kl = data.draw(st.sampled_from([None, 0.25]))
    kl = None if kl is None else torch.tensor(kl, device=device)
    average = data.draw(st.booleans())
    module = LigerFusedLinearKTOLoss(
        beta=0.5,
        use_ref_model=use_ref,
        average_log_prob=average,
        chunk_size=data.draw(st.none() | st.integers(1, n_seq + 1)),
    )

    def ours(x, weight, bias):
        return module(x, weight, target, bias, labels, ref_x, ref_w, None, kl)[0]

    def reference(x, weight, bias):
        return kto_reference(
            x,
            weight,
            target,
            labels,
            bias,
            ref_x if use_ref else None,
            ref_w,
            kl=kl,
            beta=0.5,
            average_log_prob=average,
        )

    check_against_reference(ours, reference, [x, weight, bias], 3)


def test_kto_bad_arguments_are_named():
    x, weight = torch.randn(3, 2, 4), torch.randn(5, 4)
    target = torch.randint(0, 5, (3, 2))
    with pytest.raises(ValueError, match="preference_labels must have shape"):
        LigerFusedLinearKTOLoss()(x, weight, target, preference_labels=torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="preference_labels is required"):
        LigerFusedLinearKTOLoss()(x, weight, target)
    with pytest.raises(ValueError, match="beta must be >= 0"):
        LigerFusedLinearKTOLoss(beta=-1)
