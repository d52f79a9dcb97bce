"""Planted-bug tests: the toolkit catches realistic kernel bugs and passes a correct kernel.

The kernels below are small Triton RMSNorm row kernels (one program per row, looping over the row in
BLOCK-sized chunks). On a machine without a GPU they run through Triton's interpreter: the
liger_testing pytest plugin sets TRITON_INTERPRET=1 in pytest_load_initial_conftests, before this
module is imported and ``@triton.jit`` runs, so importing triton at module level is fine.
"""

import pytest
import torch
import triton
import triton.language as tl
from hypothesis import given, settings
from hypothesis import strategies as st

from liger_testing import assert_close, assert_close_to_reference
from liger_testing import strategies as lst

EPS = 1e-6
BLOCK = 64


@triton.jit
def _rms_norm_rows(
    X,
    W,
    Y,
    stride_x_row,
    stride_x_col,
    stride_y_row,
    n_cols,
    eps,
    BLOCK: tl.constexpr,
    BUG_SKIP_TAIL: tl.constexpr,
    BUG_BF16_ACC: tl.constexpr,
):
    row = tl.program_id(0)
    x_row = X + row * stride_x_row
    y_row = Y + row * stride_y_row
    if BUG_BF16_ACC:
        acc = tl.zeros([BLOCK], dtype=tl.bfloat16)  # bug: sum of squares accumulated in bf16
    else:
        acc = tl.zeros([BLOCK], dtype=tl.float32)
    if BUG_SKIP_TAIL:
        n_sum = (n_cols // BLOCK) * BLOCK  # bug: only full BLOCK chunks enter the sum of squares
    else:
        n_sum = n_cols
    for start in range(0, n_sum, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(x_row + cols * stride_x_col, mask=cols < n_cols, other=0.0).to(tl.float32)
        acc = (acc + x * x).to(acc.dtype)
    rstd = 1.0 / tl.sqrt(tl.sum(acc.to(tl.float32), axis=0) / n_cols + eps)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < n_cols
        x = tl.load(x_row + cols * stride_x_col, mask=mask, other=0.0).to(tl.float32)
        w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(y_row + cols, (x * rstd * w).to(Y.dtype.element_ty), mask=mask)


def rms_norm(x, w, eps=EPS, *, skip_tail=False, bf16_acc=False):
    """RMSNorm over the last dim with the Triton kernel; the flags plant bugs."""
    n = x.shape[-1]
    x2 = x.reshape(-1, n)
    y = torch.empty(x2.shape, dtype=x.dtype, device=x.device)
    _rms_norm_rows[(x2.shape[0],)](
        x2,
        w.contiguous(),
        y,
        x2.stride(0),
        x2.stride(1),
        y.stride(0),
        n,
        eps,
        BLOCK=BLOCK,
        BUG_SKIP_TAIL=skip_tail,
        BUG_BF16_ACC=bf16_acc,
    )
    return y.reshape(x.shape)


def rms_norm_wrong_eps(x, w, eps=EPS):
    """Planted bug: a hard-coded eps of 1e-5 instead of the caller's."""
    return rms_norm(x, w, 1e-5)


def reference(x, w, eps=EPS):
    """PyTorch reference in the input dtype, computing (and accumulating) in float32."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * w.float()).to(x.dtype)


def golden(x, w, eps=EPS):
    x64 = x.double()
    return x64 * torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + eps) * w.double()


# --------------------------------------------------------------------------------------------------------
# correct kernel: passes both assertion modes over many seeds, dtypes, shapes and layouts
# --------------------------------------------------------------------------------------------------------


@settings(max_examples=30)
@given(data=st.data())
def test_correct_kernel_passes(device, data):
    dtype = data.draw(lst.dtypes(), label="dtype")
    shape = data.draw(
        lst.shapes(min_dims=1, max_dims=2, max_side=3, last_dim=lst.dims(1, 300)), label="shape"
    )
    contiguous = data.draw(st.booleans(), label="contiguous")
    x = data.draw(lst.tensors(shape, dtype, device=device, contiguous=contiguous, special=True), label="x")
    w = data.draw(lst.tensors((shape[-1],), dtype, device=device, low=0.5, high=1.5), label="w")
    y = rms_norm(x, w)
    assert_close(y, reference(x, w))
    assert_close_to_reference(y, reference(x, w), golden(x, w))


# --------------------------------------------------------------------------------------------------------
# planted bugs: each is caught on inputs that expose it, for every drawn seed
# --------------------------------------------------------------------------------------------------------


@settings(max_examples=5)
@given(data=st.data())
def test_wrong_eps_is_caught(device, data):
    # eps only matters relative to mean(x^2): rstd = (ms + eps)^-1/2, so swapping 1e-6 for 1e-5 changes
    # the output by a factor sqrt((ms + 1e-6) / (ms + 1e-5)). For |x| ~ U(0, 4e-3), ms ~ 5.3e-6 and the
    # factor is ~0.64 -- far outside any tolerance. (With O(1) inputs the relative effect is ~5e-6,
    # below float32 resolution of a single rounding chain, and the bug would be invisible.)
    dtype = data.draw(lst.dtypes(torch.float32, torch.bfloat16))
    x = data.draw(lst.tensors((3, 200), dtype, device=device, low=-4e-3, high=4e-3))
    w = data.draw(lst.tensors((200,), dtype, device=device, low=0.5, high=1.5))
    assert_close(rms_norm(x, w), reference(x, w))  # the correct kernel passes these inputs
    with pytest.raises(AssertionError, match="mismatched"):
        assert_close(rms_norm_wrong_eps(x, w), reference(x, w))
    with pytest.raises(AssertionError, match="FAIL"):
        assert_close_to_reference(rms_norm_wrong_eps(x, w), reference(x, w), golden(x, w))


@settings(max_examples=5)
@given(data=st.data())
def test_skipped_tail_block_is_caught(device, data):
    # A row of BLOCK + 40 elements: the 40-element tail (~38% of the sum of squares for uniform inputs)
    # is left out of the reduction, so rstd is ~25% too large. Rows that are a multiple of BLOCK do not
    # expose this bug, which is why lst.dims() favours BLOCK +- 1.
    dtype = data.draw(lst.dtypes())
    n = BLOCK + 40
    x = data.draw(lst.tensors((2, n), dtype, device=device))
    w = data.draw(lst.tensors((n,), dtype, device=device, low=0.5, high=1.5))
    assert_close(rms_norm(x, w), reference(x, w))
    with pytest.raises(AssertionError, match="mismatched"):
        assert_close(rms_norm(x, w, skip_tail=True), reference(x, w))
    with pytest.raises(AssertionError, match="FAIL"):
        assert_close_to_reference(rms_norm(x, w, skip_tail=True), reference(x, w), golden(x, w))


def test_skipped_tail_is_invisible_on_full_blocks(device):
    # Sanity check of the planted bug itself: with n a multiple of BLOCK the buggy kernel is correct.
    x = torch.linspace(-2, 2, 2 * BLOCK, device=device).reshape(1, -1)
    w = torch.ones(2 * BLOCK, device=device)
    assert_close(rms_norm(x, w, skip_tail=True), reference(x, w))


@settings(max_examples=3)
@given(data=st.data())
def test_bf16_accumulation_is_caught(device, data):
    # float32 inputs, a long row (2048 = 32 chunks per lane): the bf16 accumulator rounds every partial
    # sum to 8 mantissa bits, leaving a ~0.1-1% error in mean(x^2) -- thousands of times the float32
    # reference's own error, which accumulates in float32. Reference-error mode catches it.
    # (In a bf16-output kernel the same error is about one rounding of the output, i.e. as accurate as
    # the bf16 reference; reference-error mode deliberately accepts that.)
    n = 2048
    x = data.draw(lst.tensors((2, n), torch.float32, device=device))
    w = data.draw(lst.tensors((n,), torch.float32, device=device, low=0.5, high=1.5))
    ref, gold = reference(x, w), golden(x, w)
    assert_close_to_reference(rms_norm(x, w), ref, gold)
    with pytest.raises(AssertionError) as info:
        assert_close_to_reference(rms_norm(x, w, bf16_acc=True), ref, gold)
    assert "normwise" in str(info.value) and "FAIL" in str(info.value)
