"""The fused linear cross entropy's chunk rule (``flce_chunk_rows``): a cost model of the chunk loop
capped by a memory budget. Sane chunks (at least one row, never more than the rows, within the budget,
non-decreasing in the budget, the cost model's own criterion met), the budget's argument and environment
variable validated, and results that do not depend on the chunking beyond rounding."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_fused_linear_cross_entropy import check

from liger_kernel.ops import fused_linear_cross_entropy as flce
from liger_kernel.ops.fused_linear_cross_entropy import (
    CHUNK_BUDGET_ENV,
    CHUNK_OVERHEAD_TARGET,
    REFERENCE_RATES,
    chunk_loop_seconds,
    flce_chunk_rows,
    resolve_chunk_budget,
)
from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy
from liger_testing import assert_close, tolerances
from liger_testing.profiles import scaled

MODEL_SHAPES = [(4096, 128256), (4096, 32000), (2048, 262144), (3840, 262208), (1152, 262144), (7168, 129280)]


@pytest.fixture(autouse=True)
def _no_budget_env(monkeypatch):
    monkeypatch.delenv(CHUNK_BUDGET_ENV, raising=False)


@scaled(1.0)
@given(
    n_rows=st.integers(1, 70_000),
    hidden=st.integers(1, 16384),
    vocab=st.integers(2, 300_000),
    element_size=st.sampled_from([2, 4]),
    fp32_accum=st.booleans(),
    budgets=st.lists(st.integers(1, 2**33), min_size=2, max_size=5),
)
def test_rows_sane_and_monotone_in_budget(n_rows, hidden, vocab, element_size, fp32_accum, budgets):
    accum = 4 if fp32_accum else element_size
    previous = 0
    for budget in sorted(budgets):
        rows = flce_chunk_rows(n_rows, hidden, vocab, element_size, accum, "cpu", budget)
        assert 1 <= rows <= n_rows
        if budget >= vocab * element_size:  # a budget of at least one row of logits is respected
            assert rows * vocab * element_size <= budget
        assert rows >= previous, f"budget {budget}: {rows} rows, fewer than {previous} at a smaller budget"
        previous = rows


@pytest.mark.parametrize("hidden, vocab", MODEL_SHAPES)
@pytest.mark.parametrize("accum", [2, 4])
def test_cost_rule_meets_its_criterion(hidden, vocab, accum):
    """With no budget in the way, the chosen chunk is predicted within CHUNK_OVERHEAD_TARGET of one
    chunk's time, and the next smaller chunk (one more chunk, rounded as the rule rounds) would not be."""
    n = 8192

    def seconds(rows):
        return chunk_loop_seconds(n, hidden, vocab, rows, 2, accum, REFERENCE_RATES)

    rows = flce.cost_rule_rows(n, hidden, vocab, 2, accum, REFERENCE_RATES)
    allowed = (1 + CHUNK_OVERHEAD_TARGET) * seconds(n)
    assert seconds(rows) <= allowed
    chunks = -(-n // rows)
    smaller = -(-n // (chunks + 1))
    multiple = flce._row_multiple(smaller)
    smaller = -(-smaller // multiple) * multiple
    assert smaller >= rows or seconds(smaller) > allowed


@scaled(1.0)
@given(
    n_rows=st.integers(1, 70_000),
    hidden=st.integers(1, 16384),
    vocab=st.integers(2, 300_000),
    budget=st.none() | st.integers(1, 2**33),
)
def test_chunks_fill_whole_row_tiles(n_rows, hidden, vocab, budget):
    """A chunk of more than CHUNK_ROW_TILE rows (the M of its logits and dx matmuls) is a multiple of it,
    so no chunk but the last pads a half-empty row tile; smaller chunks are multiples of 64, or below 64."""
    rows = flce_chunk_rows(n_rows, hidden, vocab, 2, 4, "cpu", budget)
    if rows < n_rows:  # (a single chunk holds every row, whatever their number)
        assert rows % flce._row_multiple(rows) == 0
    assert flce._row_multiple(rows) in (1, 64, flce.CHUNK_ROW_TILE)


def test_cost_rule_does_not_depend_on_vocab_or_hidden():
    """The fixed cost of a chunk (dW read and written) against its matmuls depends on the rows, dW's
    element size and the device's FLOP-to-byte ratio only (see ``flce_chunk_rows``): one chunk size for every
    (hidden, vocab) of the models, until the budget caps it. (At small hidden sizes the cross entropy
    kernel's share of one chunk's time, 2e F / (6 H B), grows, and with it the time the 5 % is of.)"""
    rows = {flce.cost_rule_rows(8192, h, v, 2, 2, REFERENCE_RATES) for h, v in MODEL_SHAPES if h >= 2048}
    assert len(rows) == 1, rows


def test_chunk_loop_seconds_grows_with_the_number_of_chunks():
    n, hidden, vocab = 8192, 4096, 128256
    times = [chunk_loop_seconds(n, hidden, vocab, n // k, 2, 2) for k in (1, 2, 4, 8, 16, 32)]
    assert times == sorted(times) and times[0] < times[-1]
    # The floor is the three matmuls at the reference rate.
    assert times[0] > 3 * 2 * n * hidden * vocab / REFERENCE_RATES[0]


@pytest.mark.parametrize("hidden, vocab", MODEL_SHAPES)
@pytest.mark.parametrize("n_rows", [512, 8192, 65536])
def test_default_budget_keeps_half_the_unchunked_memory(hidden, vocab, n_rows):
    """By default the peak (dW, dx, one chunk) is at most half of the unchunked computation's (logits, dW,
    dx), unless the chunk is no larger than the CHUNK_LOGITS_BYTES floor."""
    e = 2
    rows = flce_chunk_rows(n_rows, hidden, vocab, e, e, "cuda:0" if torch.cuda.is_available() else "cpu")
    peak = (vocab * hidden + n_rows * hidden + rows * vocab) * e
    unchunked = (n_rows * vocab + vocab * hidden + n_rows * hidden) * e
    assert peak <= unchunked / 2 or rows * vocab * e <= flce.CHUNK_LOGITS_BYTES


def test_budget_from_argument_and_environment(monkeypatch):
    args = (8192, 4096, 128256, 2, 2, "cpu")
    row = 128256 * 2
    assert flce_chunk_rows(*args, budget_bytes=100 * row) <= 100
    monkeypatch.setenv(CHUNK_BUDGET_ENV, str(100 * row / 2**20))
    assert flce_chunk_rows(*args) <= 100
    assert flce_chunk_rows(*args, budget_bytes=1000 * row) > 100  # the argument wins over the variable
    monkeypatch.setenv(CHUNK_BUDGET_ENV, "0.0001")  # less than one row of logits: one row per chunk
    assert flce_chunk_rows(*args) == 1


@pytest.mark.parametrize("value", ["0", "-5", "abc", "nan", "inf"])
def test_bad_budget_variable_raises(monkeypatch, value):
    monkeypatch.setenv(CHUNK_BUDGET_ENV, value)
    with pytest.raises(ValueError, match=CHUNK_BUDGET_ENV):
        resolve_chunk_budget(None)


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "256"])
def test_bad_budget_argument_raises(device, value):
    x, w, t = torch.randn(4, 8, device=device), torch.randn(10, 8, device=device), torch.zeros(4, dtype=int)
    with pytest.raises(ValueError, match="chunk_budget_bytes must be a positive int"):
        liger_fused_linear_cross_entropy(x, w, t.to(device), chunk_budget_bytes=value)
    with pytest.raises(ValueError, match="chunk_budget_bytes must be a positive int"):
        LigerFusedLinearCrossEntropyLoss(chunk_budget_bytes=value)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_results_do_not_depend_on_the_chunking(device, reduction):
    """fp32: the loss and gradients with one chunk, and with budgets of 1, 5 and 10 rows of logits, agree
    to fp32 rounding (the chunked matmuls and the dW accumulation order are the only differences)."""
    gen = torch.Generator().manual_seed(7)
    n, hidden, vocab = 23, 16, 40
    x = (torch.rand(n, hidden, generator=gen) - 0.5).to(device)
    w = (torch.rand(vocab, hidden, generator=gen) - 0.5).to(device)
    b = (torch.rand(vocab, generator=gen) - 0.5).to(device)
    t = torch.randint(0, vocab, (n,), generator=gen).to(device)
    go = torch.rand(n if reduction == "none" else (), generator=gen).to(device)

    def full_pass(budget):
        leaves = [v.clone().requires_grad_() for v in (x, w, b)]
        loss = liger_fused_linear_cross_entropy(*leaves[:2], t, leaves[2], reduction=reduction,
                                                chunk_budget_bytes=budget)  # fmt: skip
        return (loss.detach(), *torch.autograd.grad(loss, leaves, go))

    row = vocab * 4
    assert [flce_chunk_rows(n, hidden, vocab, 4, 4, device, k * row) for k in (1, 5, 10)] == [1, 5, 8]
    one_chunk = full_pass(n * row)
    tol = tolerances(torch.float32)
    for rows in (1, 5, 10):
        assert_close(full_pass(rows * row), one_chunk, atol=tol.atol, rtol=tol.rtol)


def test_bf16_chunked_by_budget_matches_reference(device):
    """bf16 with fp32 accumulation, chunked by a budget of 3 rows: the reference-error check of the main
    tests (which holds the kernel to twice the same-dtype PyTorch error)."""
    gen = torch.Generator().manual_seed(11)
    n, hidden, vocab = 10, 12, 50
    x = (torch.rand(n, hidden, generator=gen) - 0.5).to(device, torch.bfloat16)
    w = (torch.rand(vocab, hidden, generator=gen) - 0.5).to(device, torch.bfloat16)
    t = torch.randint(0, vocab, (n,), generator=gen).to(device)
    liger_opts = dict(chunk_budget_bytes=3 * vocab * 2, accum_dtype=torch.float32)
    check(x, w, None, t, None, ("x", "weight"), "random", dict(reduction="mean"), liger_opts, seed=1)


def test_cpu_rates():
    assert flce.device_rates("cpu") == flce.CPU_RATES
    assert flce.device_rates(None) == flce.CPU_RATES


@pytest.mark.gpu
def test_cuda_rates_are_plausible(device):
    """The rates read from the driver: a matmul rate of 10-5000 TFLOP/s, a bandwidth of 0.1-20 TB/s, and a
    machine balance F / B of 20-1000 FLOP per byte (an H200: about 165)."""
    flops, bandwidth = flce.device_rates(torch.device(device))
    assert 10e12 <= flops <= 5000e12 and 0.1e12 <= bandwidth <= 20e12
    assert 20 <= flops / bandwidth <= 1000
