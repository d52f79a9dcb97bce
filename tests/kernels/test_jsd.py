"""LigerJSD / liger_jsd against the generalized JSD's float64 math (tests/kernels/_distill_check.py)."""

import pytest
import torch
from _distill_check import block_max, check, jsd_per_row, kept_mean, log_probs
from hypothesis import given, settings
from hypothesis import strategies as st

from liger_kernel.ops import jsd as jsd_ops
from liger_kernel.transformers import LigerJSD
from liger_kernel.transformers.functional import liger_jsd, liger_tvd
from liger_testing import bounds_checked
from liger_testing import strategies as lst


def jsd_math(input, target, shift_labels=None, beta=0.5):
    return kept_mean(jsd_per_row(input, target, beta), shift_labels)


@settings(max_examples=24, deadline=None)
@given(
    n=lst.dims(1, 9),
    vocab=lst.dims(2, 300),
    dtype=lst.dtypes(torch.float32, torch.bfloat16, torch.float16),
    beta=st.sampled_from([0.0, 1.0, 0.5, 0.1]),
    ignore_fraction=st.sampled_from([None, 0.0, 0.5, 1.0]),
    target_grad=st.booleans(),
    blocks=st.sampled_from([8192, 64]),
    contiguous=st.booleans(),
    data=st.data(),
)
def test_matches_math(device, n, vocab, dtype, beta, ignore_fraction, target_grad, blocks, contiguous, data):
    raw = (n, vocab)
    x = data.draw(lst.tensors(raw, torch.float32, device=device, low=-6.0, high=6.0, contiguous=contiguous))
    y = data.draw(lst.tensors(raw, torch.float32, device=device, low=-6.0, high=6.0))
    labels = None
    if ignore_fraction is not None:
        labels = data.draw(lst.labels(n, vocab, device=device, ignore_fraction=ignore_fraction))
    inputs = {
        "input": log_probs(x, dtype),
        "target": log_probs(y, dtype),
        "shift_labels": labels,
        "beta": beta,
    }
    grads = ("input", "target") if target_grad else ("input",)
    with block_max(blocks):
        out = check(liger_jsd, jsd_math, inputs, grads, dtype)
    assert out["loss"].dtype == dtype


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_all_ignored_gives_zero(device, beta):
    x = torch.randn(4, 33, device=device).log_softmax(-1).requires_grad_()
    y = torch.randn(4, 33, device=device).log_softmax(-1)
    loss = liger_jsd(x, y, torch.full((4,), -100, device=device), beta)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("backend", [None, "inductor"])
def test_backward_through_retained_graph_twice(device, backend):
    # The kept gradient is scaled into a copy when the graph is retained (eager) or traced (compiled).
    gen = torch.Generator().manual_seed(3)
    x0 = torch.randn(3, 7, generator=gen).log_softmax(-1).to(device)
    y = torch.randn(3, 7, generator=gen).log_softmax(-1).to(device)

    def loss_of(x):
        return liger_jsd(x, y, None, 0.3) * 3

    fn = loss_of if backend is None else torch.compile(loss_of, fullgraph=True, backend=backend)
    x = x0.clone().requires_grad_()
    loss = fn(x)
    (first,) = torch.autograd.grad(loss, x, retain_graph=True)
    (second,) = torch.autograd.grad(loss, x)
    xr = x0.clone().requires_grad_()
    (expected,) = torch.autograd.grad(loss_of(xr), xr)
    torch.testing.assert_close((first, second), (expected, expected), atol=1e-6, rtol=1e-5)


def test_module_matches_functional_and_takes_leading_dims(device):
    x = torch.randn(2, 3, 17, device=device).log_softmax(-1)
    y = torch.randn(2, 3, 17, device=device).log_softmax(-1)
    labels = torch.tensor([[1, -100, 2], [3, 4, -100]], device=device)
    module = LigerJSD(beta=0.25, ignore_index=-100)
    assert torch.equal(module(x, y, labels), liger_jsd(x.view(6, 17), y.view(6, 17), labels.view(-1), 0.25))
    assert "beta=0.25" in repr(module)


def test_bad_input_names_the_argument(device):
    x = torch.randn(4, 10, device=device).log_softmax(-1)
    with pytest.raises(ValueError, match="beta must be in"):
        LigerJSD(beta=1.5)
    with pytest.raises(ValueError, match="beta must be in"):
        liger_jsd(x, x, beta=-0.1)
    with pytest.raises(ValueError, match="input and target must have the same shape"):
        liger_jsd(x, x[:, :9])
    with pytest.raises(ValueError, match="shift_labels must hold one label per row"):
        liger_jsd(x, x, torch.zeros(3, dtype=torch.long, device=device))
    with pytest.raises(TypeError, match="shift_labels must be an integer tensor"):
        liger_jsd(x, x, torch.zeros(4, device=device))
    with pytest.raises(TypeError, match="target must be a floating-point tensor"):
        liger_jsd(x, torch.zeros(4, 10, dtype=torch.long, device=device))


def test_opcheck(device):
    x = torch.randn(5, 24, device=device).log_softmax(-1).requires_grad_()
    y = torch.randn(5, 24, device=device).log_softmax(-1)
    labels = torch.tensor([1, -100, 2, 3, 4], device=device)
    args = (x, y, labels, 0.5, -100, True, False)
    # The gradients it returns are saved for backward (see test_custom_ops.SAVED_OUTPUT_OPS).
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    torch.library.opcheck(jsd_ops.jsd_forward.op, args, test_utils=utils)


@pytest.mark.parametrize(("op", "reduction"), [("jsd", None), ("tvd", "batchmean"), ("tvd", "none")])
@pytest.mark.parametrize("wanted", ["both", "student", "teacher"])
def test_ignored_rows_write_only_their_own_row(device, op, reduction, wanted):
    """An ignored row's loss and gradients are zero-filled by a loop of masked stores (shared by JSD and
    TVD): with the last row ignored, a store one column too far lands past the buffer, which only the
    guard regions see (the next row's program would overwrite a spill into it). A gradient not wanted
    (a frozen teacher, the usual case) has no buffer: nothing may be written for it, and the loss of an
    ignored row is 0 in every element."""
    g = torch.Generator().manual_seed(0)
    student, teacher = (
        log_probs(torch.randn(4, 37, generator=g), torch.float32).to(device) for _ in range(2)
    )
    labels = torch.tensor([3, -100, 5, -100], device=device)
    if op == "tvd":
        student, teacher = student.exp(), teacher.exp()
    student.requires_grad_(wanted in ("both", "student"))
    teacher.requires_grad_(wanted in ("both", "teacher"))
    with block_max(16), bounds_checked(op) as guard:
        if op == "jsd":
            loss = liger_jsd(student, teacher, labels, beta=0.4)
            expected = liger_jsd(student.detach(), teacher.detach(), labels, beta=0.4)
        else:
            loss = liger_tvd(student, teacher, labels, reduction=reduction)
            expected = liger_tvd(student.detach(), teacher.detach(), labels, reduction=reduction)
        loss.backward(torch.ones_like(loss))
    assert guard.buffers  # the kernels' outputs were guarded
    assert torch.equal(loss.detach(), expected)  # the loss does not depend on which gradients are wanted
    if reduction == "none":
        assert torch.all(loss[1] == 0) and torch.all(loss[3] == 0)
    for t in (student, teacher):
        if t.requires_grad:
            assert torch.all(t.grad[1] == 0) and torch.all(t.grad[3] == 0)
