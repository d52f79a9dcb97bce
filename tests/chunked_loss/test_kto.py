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


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("use_ref", [False, True])
def test_kto_metrics_match_formula(device, dtype, use_ref):
    """The six sums KTO returns (as liger-kernel 0.8.5 and TRL log them), each over the desirable or the
    undesirable sequences: log-probs, logits (every position, every class), rewards beta * r; against
    float64 (reference-error mode for fp32: the same sums in fp32 are the reference). float64 runs the
    PyTorch steps, fp32 the Triton kernels; chunks of two sequences."""
    from _reference import logits_of, sequence_logps

    from liger_testing import assert_close, assert_close_to_reference

    gen = torch.Generator().manual_seed(5)
    n_seq, seq_len, hidden, vocab, beta = 5, 3, 8, 37, 0.5
    x, weight = torch.randn(n_seq, seq_len, hidden, generator=gen), torch.randn(vocab, hidden, generator=gen)
    ref_x, ref_w = (
        torch.randn(n_seq, seq_len, hidden, generator=gen),
        torch.randn(vocab, hidden, generator=gen),
    )
    x, weight, ref_x, ref_w = (t.to(device=device, dtype=dtype) for t in (x, weight, ref_x, ref_w))
    target = torch.randint(0, vocab, (n_seq, seq_len), generator=gen).to(device)
    target[1, :2] = -100
    labels = torch.tensor([True, False, True, True, False], device=device)
    module = LigerFusedLinearKTOLoss(beta=beta, use_ref_model=use_ref, chunk_size=2)
    _, metrics = module(
        x, weight, target, None, labels, ref_x if use_ref else None, ref_w if use_ref else None
    )

    def sums(dtype):
        logits = logits_of(x.to(dtype), weight.to(dtype))
        logps = sequence_logps(logits, target)[0]
        ref = sequence_logps(logits_of(ref_x.to(dtype), ref_w.to(dtype)), target)[0] if use_ref else 0
        values = (logps, logits.sum((1, 2)), beta * (logps - ref))
        return torch.stack([v[labels].sum() if good else v[~labels].sum() for v in values for good in (1, 0)])

    got, golden = torch.stack(metrics), sums(torch.float64)
    if dtype == torch.float64:
        assert_close(got, golden)
    else:
        assert_close_to_reference(got, sums(torch.float32), golden)
