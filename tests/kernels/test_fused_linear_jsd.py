"""LigerFusedLinearJSD / liger_fused_linear_jsd against the float64 math of the JSD of the two models'
temperature-scaled log-softmax (tests/kernels/_distill_check.py), chunks of every size."""

import pytest
import torch
from _distill_check import block_max, check, jsd_per_row, kept_mean
from hypothesis import given, settings
from hypothesis import strategies as st

from liger_kernel.ops import fused_linear_jsd as fljsd_ops
from liger_kernel.transformers import LigerFusedLinearJSD
from liger_kernel.transformers.functional import liger_fused_linear_jsd
from liger_testing import bounds_checked
from liger_testing import strategies as lst


def fused_jsd_math(
    student_input, student_weight, teacher_input, teacher_weight, shift_labels=None, jsd_beta=0.5,
    temperature=1.0, **_options,
):  # fmt: skip
    """The eager computation (logits in the inputs' dtype, as a Hugging Face lm_head gives them)."""
    log_q = torch.log_softmax(student_input @ student_weight.T / temperature, dim=-1)
    log_p = torch.log_softmax(teacher_input @ teacher_weight.T / temperature, dim=-1)
    return kept_mean(jsd_per_row(log_q, log_p, jsd_beta), shift_labels)


@settings(max_examples=16, deadline=None)
@given(
    n=lst.dims(1, 12),
    hidden=st.sampled_from([(8, 16), (5, 3), (1, 1)]),
    vocab=lst.dims(2, 200),
    dtype=lst.dtypes(torch.float32, torch.bfloat16, torch.float16),
    beta=st.sampled_from([0.0, 1.0, 0.5, 0.2]),
    temperature=st.sampled_from([1.0, 0.5, 2.0]),
    ignore_fraction=st.sampled_from([None, 0.0, 0.5, 1.0]),
    chunk_size=st.sampled_from([None, 1, 3, 5, 64]),
    accum_fp32=st.booleans(),
    blocks=st.sampled_from([8192, 64]),
    data=st.data(),
)
def test_matches_math(
    device, n, hidden, vocab, dtype, beta, temperature, ignore_fraction, chunk_size, accum_fp32, blocks, data
):
    hs, ht = hidden

    def draw(shape, scale):
        return data.draw(lst.tensors(shape, dtype, device=device, low=-scale, high=scale))

    labels = None
    if ignore_fraction is not None:
        labels = data.draw(lst.labels(n, vocab, device=device, ignore_fraction=ignore_fraction))
    inputs = {
        "student_input": draw((n, hs), 2.0),
        "student_weight": draw((vocab, hs), 1.0),
        "teacher_input": draw((n, ht), 2.0),
        "teacher_weight": draw((vocab, ht), 1.0),
        "shift_labels": labels,
        "jsd_beta": beta,
        "temperature": temperature,
        "accum_dtype": torch.float32 if accum_fp32 else None,
        "chunk_size": chunk_size,
    }
    with block_max(blocks):
        check(liger_fused_linear_jsd, fused_jsd_math, inputs, ("student_input", "student_weight"), dtype)


def test_teacher_is_a_constant_and_module_matches_functional(device):
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(2, 3, 8, generator=g).to(device).requires_grad_()
    ws = torch.randn(33, 8, generator=g).to(device).requires_grad_()
    xt = torch.randn(2, 3, 12, generator=g).to(device).requires_grad_()
    wt = torch.randn(33, 12, generator=g).to(device).requires_grad_()
    labels = torch.tensor([[1, -100, 2], [3, 4, 5]], device=device)
    module = LigerFusedLinearJSD(jsd_beta=0.3, temperature=2.0, chunk_size=4)
    loss = module(xs, ws, xt, wt, labels)
    loss.backward()
    assert xt.grad is None and wt.grad is None and xs.grad.shape == xs.shape and ws.grad.shape == ws.shape
    flat = liger_fused_linear_jsd(xs.view(6, 8), ws, xt.view(6, 12), wt, labels.view(-1), 0.3, -100, 2.0)
    torch.testing.assert_close(loss, flat)
    assert "jsd_beta=0.3" in repr(module)


def test_bad_input_names_the_argument(device):
    xs, ws = torch.randn(4, 8, device=device), torch.randn(10, 8, device=device)
    xt, wt = torch.randn(4, 6, device=device), torch.randn(10, 6, device=device)
    with pytest.raises(ValueError, match="same vocabulary size"):
        liger_fused_linear_jsd(xs, ws, xt, wt[:9])
    with pytest.raises(ValueError, match="jsd_beta must be in"):
        liger_fused_linear_jsd(xs, ws, xt, wt, jsd_beta=1.01)
    with pytest.raises(ValueError, match="jsd_beta must be in"):
        LigerFusedLinearJSD(jsd_beta=-1.0)
    with pytest.raises(ValueError, match="temperature must be positive"):
        LigerFusedLinearJSD(temperature=0.0)
    with pytest.raises(ValueError, match="same leading"):
        liger_fused_linear_jsd(xs, ws, xt[:3], wt)
    with pytest.raises(ValueError, match="teacher_input .* and teacher_weight .* must share H"):
        liger_fused_linear_jsd(xs, ws, xt, ws)
    with pytest.raises(ValueError, match="shift_labels must hold one label per row"):
        liger_fused_linear_jsd(xs, ws, xt, wt, torch.zeros(3, dtype=torch.long, device=device))
    with pytest.raises(TypeError, match="student_input and student_weight must have one dtype"):
        liger_fused_linear_jsd(xs, ws.double(), xt, wt)


def test_opcheck_and_compile(device):
    xs = torch.randn(5, 8, device=device, requires_grad=True)
    ws = torch.randn(24, 8, device=device, requires_grad=True)
    xt, wt = torch.randn(5, 6, device=device), torch.randn(24, 6, device=device)
    labels = torch.tensor([1, -100, 2, 3, 4], device=device)
    args = (xs, ws, xt, wt, labels, 0.5, -100, 2.0, False, True, True, 2)
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    torch.library.opcheck(fljsd_ops.fused_linear_jsd_forward.op, args, test_utils=utils)

    def loss_fn(xs, ws, labels):
        return liger_fused_linear_jsd(xs, ws, xt, wt, labels, 0.5, temperature=2.0, chunk_size=2)

    compiled = torch.compile(loss_fn, backend="aot_eager", fullgraph=True)
    got = torch.autograd.grad(compiled(xs, ws, labels), (xs, ws))
    want = torch.autograd.grad(loss_fn(xs, ws, labels), (xs, ws))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("beta", [0.0, 0.4])
def test_writes_stay_in_bounds(device, beta):
    """The chunk's logits buffers and gradients sit between guard regions; the last row of a full chunk
    (4 rows, chunk_size 4) ends its buffer, so a store one column too far lands in the guard (a spill
    inside the buffer would be overwritten by the next row's program). Both gradient passes: beta 0
    writes the gradient in pass 2, otherwise pass 3."""
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(4, 8, generator=g).to(device).requires_grad_()
    ws = torch.randn(37, 8, generator=g).to(device).requires_grad_()
    xt, wt = torch.randn(4, 6, generator=g).to(device), torch.randn(37, 6, generator=g).to(device)
    with block_max(16), bounds_checked("fused_linear_jsd") as guard:
        loss = liger_fused_linear_jsd(xs, ws, xt, wt, None, beta, -100, 1.0, chunk_size=4)
        loss.backward()
    assert len(guard.buffers) >= 3  # the two logits buffers and a gradient at least
    assert torch.isfinite(xs.grad).all() and torch.isfinite(ws.grad).all()


def test_backward_through_retained_graph_twice(device):
    """retain_graph=True: the second backward gets the same gradients (the kept ones are not scaled in
    place then), with an incoming gradient other than 1."""
    g = torch.Generator().manual_seed(1)
    xs = torch.randn(5, 8, generator=g).to(device).requires_grad_()
    ws = torch.randn(21, 8, generator=g).to(device).requires_grad_()
    xt, wt = torch.randn(5, 6, generator=g).to(device), torch.randn(21, 6, generator=g).to(device)
    loss = liger_fused_linear_jsd(xs, ws, xt, wt, None, 0.3)
    grad_out = torch.tensor(2.5, device=device)
    loss.backward(grad_out, retain_graph=True)
    first = (xs.grad.clone(), ws.grad.clone())
    xs.grad = ws.grad = None
    loss.backward(grad_out)
    assert torch.equal(xs.grad, first[0]) and torch.equal(ws.grad, first[1])


@pytest.mark.parametrize(
    "n_rows, hidden, vocab, accum_size",
    [(16384, 2048, 128256, 4), (8192, 4096, 128256, 4), (4096, 896, 151936, 2), (100, 64, 300, 4)],
)
def test_default_chunk_keeps_a_quarter_of_the_plain_peak(monkeypatch, n_rows, hidden, vocab, accum_size):
    """The default chunk: within the budget (the peak, dW + dx + the chunk's buffers, at most a quarter of
    the plain computation's, both models' logits at 2 + 8 bytes each, or the CHUNK_BYTES floor), and no
    larger than the cost rule asks (on the H200's rates)."""
    from liger_kernel.ops import fused_linear_cross_entropy as flce

    monkeypatch.setattr(fljsd_ops, "device_rates", lambda device: flce.REFERENCE_RATES)
    e, bytes_per_logit = 2, 10
    rows = fljsd_ops.default_jsd_chunk_rows(n_rows, hidden, vocab, e, bytes_per_logit, accum_size, "cpu")
    assert 1 <= rows <= n_rows
    chunk = rows * vocab * bytes_per_logit
    peak = vocab * hidden * accum_size + n_rows * hidden * e + chunk
    assert peak <= n_rows * vocab * 2 * (e + 8) / 4 or chunk <= fljsd_ops.CHUNK_BYTES
    assert rows <= flce.cost_rule_rows(n_rows, hidden, vocab, e, accum_size, flce.REFERENCE_RATES)
    if (n_rows, hidden) == (16384, 2048):
        assert rows == 4096  # 4 chunks: the fp32 dW (1 GiB) re-read and re-written 3 times, not 19


@pytest.mark.parametrize(
    "n_rows, hidden, vocab, accum_size",
    [(2048, 896, 151936, 2), (2048, 896, 151936, 4), (4096, 5120, 128256, 2)],
)
def test_default_chunk_fills_the_memory_budget_where_it_binds(monkeypatch, n_rows, hidden, vocab, accum_size):
    """Shapes where the memory budget, not the cost rule, sets the chunk: the chunk's buffers fit the budget
    (what keeps the peak, dW + dx + the buffers, at a quarter of the plain computation's, or CHUNK_BYTES
    when that is more), and one more 256-row tile would not."""
    from liger_kernel.ops import fused_linear_cross_entropy as flce

    monkeypatch.setattr(fljsd_ops, "device_rates", lambda device: flce.REFERENCE_RATES)
    e, bytes_per_logit = 2, 10
    rows = fljsd_ops.default_jsd_chunk_rows(n_rows, hidden, vocab, e, bytes_per_logit, accum_size, "cpu")
    assert rows < flce.cost_rule_rows(n_rows, hidden, vocab, e, accum_size, flce.REFERENCE_RATES)
    held = vocab * hidden * accum_size + n_rows * hidden * e
    budget = max(fljsd_ops.CHUNK_BYTES, n_rows * vocab * 2 * (e + 8) // 4 - held)
    row_bytes = vocab * bytes_per_logit
    assert rows * row_bytes <= budget < (rows + flce.CHUNK_ROW_TILE) * row_bytes
