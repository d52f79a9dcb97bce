"""Paired preference losses (DPO and its variants, ORPO, CPO, SimPO) against full-logits float64 formulas
(``_reference.py``): loss, chosen/rejected log-probs and the gradients of input, weight and bias, in fp32,
bf16 and fp16, with chunk boundaries, padding, all-ignored sequences and a reference model without grad."""

import pytest
import torch
from _reference import check_against_reference, preference_reference
from hypothesis import given, settings
from hypothesis import strategies as st

from liger_kernel.chunked_loss import (
    LigerFusedLinearCPOLoss,
    LigerFusedLinearDPOLoss,
    LigerFusedLinearORPOLoss,
    LigerFusedLinearSimPOLoss,
)
from liger_kernel.chunked_loss.dpo_loss import DPO_LOSS_TYPES
from liger_kernel.chunked_loss.functional import liger_fused_linear_dpo
from liger_testing import strategies as lst

IGNORE = -100


@st.composite
def preference_batch(draw, device, *, min_tokens_per_seq=0, ref=True):
    """(x, weight, target, bias, ref_x, ref_weight, ref_bias, chunk_size, dtype)."""
    n_pairs = draw(st.integers(1, 3))
    seq_len = draw(st.integers(1, 4))
    hidden = draw(st.integers(1, 8))
    vocab = draw(lst.dims(2, 40))
    dtype = draw(lst.dtypes(torch.float32, torch.bfloat16, torch.float16))
    x = draw(
        lst.tensors((2 * n_pairs, seq_len, hidden), dtype, device=device, requires_grad=True, low=-1, high=1)
    )
    weight = draw(lst.tensors((vocab, hidden), dtype, device=device, requires_grad=True, low=-1, high=1))
    bias = None
    if draw(st.booleans()):
        bias = draw(lst.tensors((vocab,), dtype, device=device, requires_grad=True, low=-1, high=1))
    target = draw(
        lst.labels(2 * n_pairs * seq_len, vocab, device=device, ignore_fraction=st.sampled_from([0, 0.3]))
    )
    target = target.reshape(2 * n_pairs, seq_len)
    if min_tokens_per_seq:  # ORPO's log(1 - p) needs p < 1: keep a token in every sequence
        target[:, 0] = target[:, 0].clamp(min=0)
    elif draw(st.booleans()):  # a sequence whose every token is ignored
        target[draw(st.integers(0, 2 * n_pairs - 1))] = IGNORE
    ref_x = ref_w = ref_b = None
    if ref:
        ref_x = draw(lst.tensors(x.shape, dtype, device=device, low=-1, high=1))
        ref_w = draw(lst.tensors(weight.shape, dtype, device=device, low=-1, high=1))
        if draw(st.booleans()):
            ref_b = draw(lst.tensors((vocab,), dtype, device=device, low=-1, high=1))
    chunk_size = draw(st.none() | st.integers(1, n_pairs + 1))
    return x, weight, target, bias, ref_x, ref_w, ref_b, chunk_size, dtype


@settings(max_examples=18, deadline=None)
@given(data=st.data())
def test_dpo_matches_formula(device, data):
    x, weight, target, bias, ref_x, ref_w, ref_b, chunk_size, dtype = data.draw(preference_batch(device))
    loss_type = data.draw(st.sampled_from(DPO_LOSS_TYPES))
    beta = data.draw(st.sampled_from([0.1, 0.5, 2.0]))
    smoothing = {"exo_pair": 1e-3, "robust": 0.2}.get(loss_type, 0.0)
    average = data.draw(st.booleans())
    nll = data.draw(st.booleans())
    use_ref = data.draw(st.booleans())
    options = dict(beta=beta, loss_type=loss_type, label_smoothing=smoothing, average_log_prob=average,
                   compute_nll_loss=nll)  # fmt: skip
    module = LigerFusedLinearDPOLoss(chunk_size=chunk_size, alpha=0.7, use_ref_model=use_ref, **options)

    def ours(x, weight, target, bias, ref_x, ref_w, ref_b):
        loss, aux = module(weight, x, target, bias, ref_x, ref_w, ref_b)
        assert len(aux) == 7
        return loss, aux[0], aux[1]

    def reference(x, weight, target, bias, ref_x, ref_w, ref_b):
        if not use_ref:
            ref_x = None
        return preference_reference("dpo", x, weight, target, bias, ref_x, ref_w, ref_b, alpha=0.7, **options)

    check_against_reference(ours, reference, [x, weight, target, bias, ref_x, ref_w, ref_b], 4, msg=loss_type)


@settings(max_examples=6, deadline=None)
@given(data=st.data())
def test_dpo_precomputed_reference_logps(device, data):
    """ref_chosen_logps / ref_rejected_logps replace the reference model; they equal it when they are its
    log-probs; the functional form takes 0.8.5's positional arguments."""
    x, weight, target, bias, ref_x, ref_w, ref_b, chunk_size, dtype = data.draw(preference_batch(device))
    n = x.shape[0] // 2
    ref_logps = torch.randn(2, n, device=device, dtype=torch.float32)

    def ours(x, weight, bias, ref_logps):
        return liger_fused_linear_dpo(
            x, weight, target, bias, None, None, None, IGNORE, 0.3, False, True, True, False, chunk_size,
            "sigmoid", 0.0, 0.05, 1.0, ref_logps[0], ref_logps[1],
        )[0]  # fmt: skip

    def reference(x, weight, bias, ref_logps):
        return preference_reference(
            "dpo", x, weight, target, bias, beta=0.3, ref_logps=(ref_logps[0], ref_logps[1])
        )[0]

    check_against_reference(ours, reference, [x, weight, bias, ref_logps], 3)


FAMILIES = {
    "orpo": (LigerFusedLinearORPOLoss, dict(beta=0.3), dict(beta=0.3, average_log_prob=True)),
    "cpo": (LigerFusedLinearCPOLoss, dict(beta=0.3, alpha=0.5, label_smoothing=0.1),
            dict(beta=0.3, alpha=0.5, label_smoothing=0.1)),
    "simpo": (LigerFusedLinearSimPOLoss, dict(beta=2.0, gamma=0.3, alpha=0.5, label_smoothing=0.1),
              dict(beta=2.0, gamma=0.3, alpha=0.5, label_smoothing=0.1, average_log_prob=True)),
}  # fmt: skip


@pytest.mark.parametrize("family", sorted(FAMILIES))
@settings(max_examples=6, deadline=None)
@given(data=st.data())
def test_reference_free_losses_match_formula(device, family, data):
    x, weight, target, bias, _, _, _, chunk_size, dtype = data.draw(
        preference_batch(device, min_tokens_per_seq=1 if family == "orpo" else 0, ref=False)
    )
    cls, options, ref_options = FAMILIES[family]
    nll = data.draw(st.booleans())
    module = cls(chunk_size=chunk_size, compute_nll_loss=nll, **options)

    def ours(x, weight, target, bias):
        loss, aux = module(weight, x, target, bias)
        return loss, aux[0], aux[1]

    def reference(x, weight, target, bias):
        return preference_reference(family, x, weight, target, bias, compute_nll_loss=nll, **ref_options)

    check_against_reference(ours, reference, [x, weight, target, bias], 4, msg=family)


def _pair_inputs(n_rows=4, seq_len=3, hidden=4, vocab=7):
    x = torch.randn(n_rows, seq_len, hidden, requires_grad=True)
    weight = torch.randn(vocab, hidden, requires_grad=True)
    return x, weight, torch.randint(0, vocab, (n_rows, seq_len))


def test_bad_arguments_are_named():
    x, weight, target = _pair_inputs(n_rows=3)
    with pytest.raises(ValueError, match="_input has 3 sequences"):
        LigerFusedLinearDPOLoss(use_ref_model=False)(weight, x, target)
    x, weight, target = _pair_inputs()
    with pytest.raises(ValueError, match="ref_chosen_logps must have shape"):
        LigerFusedLinearDPOLoss()(
            weight, x, target, ref_chosen_logps=torch.zeros(3), ref_rejected_logps=torch.zeros(2)
        )
    with pytest.raises(ValueError, match="beta must be >= 0"):
        LigerFusedLinearDPOLoss(beta=-0.1)
    with pytest.raises(ValueError, match="unknown loss_type 'nope'"):
        LigerFusedLinearDPOLoss(loss_type="nope")
    with pytest.raises(ValueError, match="use_ref_model=True needs ref_input"):
        LigerFusedLinearDPOLoss()(weight, x, target)
    with pytest.raises(ValueError, match="target must have shape"):
        LigerFusedLinearCPOLoss()(weight, x, target[:, :2])
    with pytest.raises(ValueError, match="target has token ids outside"):
        LigerFusedLinearSimPOLoss()(weight, x, target + 100)
    with pytest.raises(ValueError, match="weight must have shape"):
        LigerFusedLinearORPOLoss()(weight[:, :2], x, target)


def test_empty_sequences_give_finite_losses_and_grads():
    """A pair whose sequence has no completion token: finite loss and gradients for every loss (ORPO's odds
    would be infinite: the pair adds 0 to its odds-ratio term)."""
    x, weight, target = _pair_inputs()
    target[1] = IGNORE  # chosen sequence of pair 1
    target[2] = IGNORE  # rejected sequence of pair 0
    for module in (
        LigerFusedLinearORPOLoss(),
        LigerFusedLinearSimPOLoss(),
        LigerFusedLinearCPOLoss(average_log_prob=True),
        LigerFusedLinearDPOLoss(use_ref_model=False, average_log_prob=True, loss_type="ipo"),
    ):
        loss, aux = module(weight, x, target)
        grads = torch.autograd.grad(loss, (x, weight))
        assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads), type(module).__name__
        assert all(torch.isfinite(a).all() for a in aux), type(module).__name__


def test_upstream_gradient_scales_the_kept_gradients():
    """The forward keeps dL/dx, dL/dW, dL/db; backward multiplies them by the incoming gradient."""
    x, weight, target = _pair_inputs()
    bias = torch.randn(weight.shape[0], requires_grad=True)
    module = LigerFusedLinearDPOLoss(use_ref_model=False, chunk_size=1)
    unit = torch.autograd.grad(module(weight, x, target, bias)[0], (x, weight, bias))
    scaled = torch.autograd.grad(-2.5 * module(weight, x, target, bias)[0], (x, weight, bias))
    for u, s in zip(unit, scaled):
        torch.testing.assert_close(s, -2.5 * u)


def test_public_names_of_liger_kernel_0_8_5():
    """The module and functional names liger-kernel 0.8.5 exposes from liger_kernel.chunked_loss."""
    import liger_kernel.chunked_loss as chunked
    import liger_kernel.chunked_loss.functional as functional

    for name in ("CosineSimilarity", "CPO", "DPO", "GRPO", "JSD", "KTO", "ORPO", "SimPO"):
        assert issubclass(getattr(chunked, f"LigerFusedLinear{name}Loss"), torch.nn.Module)
    for name in ("orpo", "dpo", "jsd", "cosine", "cpo", "simpo", "kto", "grpo"):
        assert callable(getattr(functional, f"liger_fused_linear_{name}"))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_dpo_metrics_match_formula(device, dtype):
    """Every output DPO returns besides the loss (as liger-kernel 0.8.5 and TRL log them): the chosen and
    rejected sequence log-probs, the chosen and rejected logits means (over pairs x tokens x classes, every
    position), the NLL of the chosen, and the per-pair rewards beta (logp - logp_ref); against float64
    (reference-error mode for fp32: the same math in fp32 is the reference). float64 runs the PyTorch
    steps, fp32 the Triton kernels; one pair per chunk."""
    from _reference import logits_of, sequence_logps

    from liger_testing import assert_close, assert_close_to_reference

    gen = torch.Generator().manual_seed(9)
    pairs, seq_len, hidden, vocab, beta = 3, 4, 8, 37, 0.5

    def randn(*shape):
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    x, weight, ref_x, ref_w = (
        randn(2 * pairs, seq_len, hidden),
        randn(vocab, hidden),
        randn(2 * pairs, seq_len, hidden),
        randn(vocab, hidden),
    )
    target = torch.randint(0, vocab, (2 * pairs, seq_len), generator=gen).to(device)
    target[:, 0] = -100  # the prompt
    module = LigerFusedLinearDPOLoss(beta=beta, compute_nll_loss=True, use_ref_model=True, chunk_size=1)
    _, aux = module(weight, x, target, None, ref_x, ref_w)

    def outputs(dtype):
        logits = logits_of(x.to(dtype), weight.to(dtype))
        logps = sequence_logps(logits, target)[0]
        ref = sequence_logps(logits_of(ref_x.to(dtype), ref_w.to(dtype)), target)[0]
        count = pairs * seq_len * vocab
        chosen_tokens = (target[:pairs] != -100).sum()
        nll = -sequence_logps(logits[:pairs], target[:pairs])[0].sum() / chosen_tokens
        means = torch.stack([logits[:pairs].sum() / count, logits[pairs:].sum() / count, nll])
        rewards = beta * (logps - ref)
        return torch.cat([logps[:pairs], logps[pairs:], means, rewards[:pairs], rewards[pairs:]])

    got = torch.cat([aux[0], aux[1], torch.stack(aux[2:5]), aux[5], aux[6]])
    golden = outputs(torch.float64)
    if dtype == torch.float64:
        assert_close(got, golden)
    else:
        assert_close_to_reference(got, outputs(torch.float32), golden)
