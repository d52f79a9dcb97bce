"""The chunked losses' per-token log-prob kernels (liger_kernel.ops.token_logprobs) against their float64 math:
the rows' logsumexp, the log-probs of target ids and the logits gradient written in place."""

import math

import pytest
import torch
from _distill_check import block_max
from hypothesis import given, settings
from hypothesis import strategies as st

from liger_kernel.ops import token_logprobs as ops
from liger_testing import assert_close_to_reference
from liger_testing import strategies as lst

TEMPERATURES = [1.0, 0.7, 2.0]


def _logits(data, device, n, vocab, dtype):
    """(n, vocab) logits, some far beyond exp's fp32 range (exp(100) overflows: the max must be taken out),
    possibly a masked entry, and possibly a column slice of a wider buffer (a row stride beyond vocab)."""
    padding = data.draw(st.sampled_from([0, 3]))
    scale = data.draw(st.sampled_from([1.0, 40.0]))
    wide = data.draw(lst.tensors((n, vocab + padding), torch.float32, device=device, low=-8.0, high=8.0))
    logits = (wide * scale).to(dtype)[:, :vocab]
    if vocab > 2 and data.draw(st.booleans()):
        logits[:, -1] = float("-inf")  # a masked vocabulary entry: probability 0, gradient 0
    return logits


@settings(max_examples=15, deadline=None)
@given(
    n=lst.dims(1, 6),
    vocab=lst.dims(2, 300),
    dtype=lst.dtypes(torch.float32, torch.bfloat16, torch.float16),
    temperature=st.sampled_from(TEMPERATURES),
    blocks=st.sampled_from([8192, 64]),
    data=st.data(),
)
def test_logsumexp_and_logprobs_match_float64(device, n, vocab, dtype, temperature, blocks, data):
    logits = _logits(data, device, n, vocab, dtype)
    target = data.draw(lst.labels(n, vocab - 1 if vocab > 2 else vocab, device=device))
    golden_lse = torch.logsumexp(logits.double() / temperature, -1)
    golden_lp = logits.double().gather(-1, target[:, None]).squeeze(-1) / temperature - golden_lse
    reference_lse = torch.logsumexp(logits.float() / temperature, -1)
    reference_lp = logits.float().gather(-1, target[:, None]).squeeze(-1) / temperature - reference_lse
    with block_max(blocks):
        lse = ops.row_logsumexp(logits, temperature)
        lse_too, sums = ops.row_logsumexp_and_sums(logits, temperature)
    assert torch.equal(lse_too, lse)
    # the row sums (the losses' logit metrics) of the same read, not divided by the temperature; a masked
    # (-inf) entry makes its row's sum -inf in both
    golden_sums, reference_sums = logits.double().sum(-1), logits.float().sum(-1)
    assert torch.equal(torch.isinf(sums), torch.isinf(golden_sums))
    finite = torch.isfinite(golden_sums)
    sums_scale = logits.double().abs().nan_to_num(posinf=0.0).sum(-1)[finite]
    assert_close_to_reference(
        sums[finite], reference_sums[finite], golden_sums[finite], roundings=4, terms_scale=sums_scale
    )
    lp = ops.gather_logprobs(logits, lse, target, temperature)
    assert lse.dtype == lp.dtype == torch.float32
    # fp32 sums of exact inputs: relative to the terms (the largest |logit| / T and log V), not the result
    scale = logits.double().abs().nan_to_num(posinf=0.0).amax(-1) / temperature + math.log(vocab)
    assert_close_to_reference(lse, reference_lse, golden_lse, roundings=4, terms_scale=scale)
    assert_close_to_reference(lp, reference_lp, golden_lp, roundings=4, terms_scale=scale)


@settings(max_examples=15, deadline=None)
@given(
    n=lst.dims(1, 6),
    vocab=lst.dims(2, 300),
    dtype=lst.dtypes(torch.float32, torch.bfloat16, torch.float16),
    temperature=st.sampled_from(TEMPERATURES),
    two_targets=st.booleans(),
    blocks=st.sampled_from([8192, 64]),
    data=st.data(),
)
def test_gradient_in_place_matches_float64(device, n, vocab, dtype, temperature, two_targets, blocks, data):
    logits = _logits(data, device, n, vocab, dtype)
    kept_vocab = vocab - 1 if vocab > 2 else vocab
    targets = [data.draw(lst.labels(n, kept_vocab, device=device)) for _ in range(1 + two_targets)]
    coeffs = [data.draw(lst.tensors((n,), torch.float32, device=device, low=-2.0, high=2.0)) for _ in targets]

    def grad_math(z):  # G = (sum_k c_k onehot(y_k) - (sum_k c_k) softmax(z / T)) / T
        c = [c_k.to(z.dtype) for c_k in coeffs]
        g = -sum(c)[:, None] * torch.softmax(z / temperature, -1)
        for y, c_k in zip(targets, c):
            g = g + c_k[:, None] * torch.nn.functional.one_hot(y, vocab).to(z.dtype)
        return g / temperature

    golden = grad_math(logits.double())
    reference = grad_math(logits.float()).to(dtype)
    base = logits._base if logits._base is not None else logits
    wide = base.clone()  # the same layout: a row stride beyond V when logits is a column slice
    buffer = wide[:, : logits.shape[1]]
    with block_max(blocks):
        lse = ops.row_logsumexp(buffer, temperature)
        grad = ops.logprob_grad_(buffer, lse, targets, coeffs, temperature)
    assert grad.data_ptr() == buffer.data_ptr() and grad.dtype == dtype  # in place, in the logits' dtype
    assert torch.equal(wide[:, logits.shape[1] :], base[:, logits.shape[1] :])  # nothing written past a row
    # c_y (1 - p_y) cancels where p_y -> 1: the floor is relative to the two terms, not their difference; and
    # p = exp(z / T - lse) carries the rounding of its argument, a difference of |z / T| and |lse|, as a relative
    # error
    z = logits.double() / temperature
    lse64 = torch.logsumexp(z, -1, keepdim=True)
    p = torch.softmax(z, -1)
    exponent_scale = 1.0 + z.abs().nan_to_num(posinf=0.0) + lse64.abs()
    terms = sum(c.double().abs() for c in coeffs)[:, None] * p * exponent_scale
    for y, c in zip(targets, coeffs):
        terms = terms + c.double().abs()[:, None] * torch.nn.functional.one_hot(y, vocab).double()
    assert_close_to_reference(grad, reference, golden, terms_scale=terms / temperature)


def test_torch_steps_match_the_kernels(device):
    """The PyTorch path (float64, and CPU tensors with the interpreter off) computes the same values."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 40, generator=gen).to(device)
    targets = [torch.tensor([1, 5, 39], device=device), torch.tensor([0, 5, 7], device=device)]
    coeffs = [torch.randn(3, generator=gen).to(device) for _ in targets]
    kernel = ops.logprob_grad_(logits.clone(), ops.row_logsumexp(logits, 0.7), targets, coeffs, 0.7)
    as_double = logits.double()
    torch_steps = ops.logprob_grad_(as_double, ops.row_logsumexp(as_double, 0.7), targets, coeffs, 0.7)
    torch.testing.assert_close(kernel, torch_steps.float(), atol=1e-6, rtol=1e-5)


def test_gradient_needs_unit_stride_along_the_vocabulary(device):
    logits = torch.zeros(5, 4, device=device).t()  # (4, 5) with stride 4 along the vocabulary
    y, c = torch.zeros(4, dtype=torch.long, device=device), torch.ones(4, device=device)
    lse = ops.row_logsumexp(logits)  # reads: copies to rows
    torch.testing.assert_close(lse, torch.logsumexp(logits, -1))
    with pytest.raises(ValueError, match="unit stride along V"):
        ops.logprob_grad_(logits, lse, [y], [c])


def test_bad_target_count_is_named(device):
    logits = torch.zeros(2, 5, device=device)
    y = torch.zeros(2, dtype=torch.long, device=device)
    c = torch.ones(2, device=device)
    with pytest.raises(ValueError, match="one or two target sets"):
        ops.logprob_grad_(logits, ops.row_logsumexp(logits), [y, y, y], [c, c, c])


def test_logsumexp_kernel_one_exp_per_logit_and_16_byte_loads():
    """The logsumexp's code for the GPU (cross-compiled for sm_90) at Llama 3's vocabulary in bf16, rows
    aligned as the chunked losses store them (and the row sums they ask for): full blocks load 16 bytes
    per thread, and there is one exponential per logit (the running max and sum are kept per thread, not
    per element): at most one ex2 per element of a thread's share of a full block and of the masked last
    block, plus the merge."""
    from _ptx import ptx_stats, vector_count

    import liger_kernel.ops.cross_entropy as ce_ops

    block, vec, lanes, warps = ce_ops._launch_shape(128256, 2)
    args = dict(Z="*bf16", stride_z="i64", LSE="*fp32", SUMS="*fp32", inv_temperature="fp32", n_cols="i32")
    consts = dict(WITH_SUMS=True, WARPS=warps, LANES=lanes, VEC=vec, BLOCK=block)
    spec = dict(module=ops.__name__, kernel="_row_lse_kernel", args=args, constexprs=consts, num_warps=warps)
    (stats,) = ptx_stats([spec | dict(aligned=("Z", "LSE", "SUMS", "stride_z"))])
    per_thread = block // (32 * warps)
    assert vector_count(stats["loads"]) == per_thread // vec > 0, stats
    assert stats["ex2"] <= 2 * per_thread + 4, stats
