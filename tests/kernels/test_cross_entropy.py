"""Cross entropy: LigerCrossEntropyLoss / liger_cross_entropy against torch.nn.functional.cross_entropy.

Options torch lacks (z-loss, softcap) are checked against ``reference_loss`` below, plain PyTorch on top
of torch's cross entropy. Checks are in reference-error mode: the kernel's error against a float64
golden (the same math on float64 copies) may be at most twice the error of the same math in the
kernel's dtype.
"""

import contextlib

import pytest
import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from hypothesis import given
from hypothesis import strategies as st

import liger_kernel.ops.cross_entropy as ce_ops
from liger_kernel.transformers import LigerCrossEntropyLoss
from liger_kernel.transformers.functional import liger_cross_entropy
from liger_testing import assert_close, assert_close_to_reference, tolerances
from liger_testing import strategies as lst
from liger_testing.profiles import scaled


def reference_loss(
    logits, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0,
    lse_square_scale=0.0, softcap=None,
):  # fmt: skip
    """(loss, z-loss): torch's cross entropy of the softcapped logits plus the z-loss, in logits' dtype."""
    z = softcap * torch.tanh(logits / softcap) if softcap else logits
    loss = F.cross_entropy(
        z,
        target,
        weight=weight,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
    )
    valid = target != ignore_index
    z_rows = lse_square_scale * torch.logsumexp(z, dim=-1) ** 2 * valid
    if reduction == "mean":
        z_loss = z_rows.sum() / valid.sum().clamp(min=1)
    elif reduction == "sum":
        z_loss = z_rows.sum()
    else:
        z_loss = z_rows
    return loss + z_loss.to(loss.dtype), z_loss.to(loss.dtype)


@contextlib.contextmanager
def block_max(value):
    """Smaller blocks make the kernel walk each row in several blocks (online logsumexp across them)."""
    saved = ce_ops.BLOCK_MAX
    ce_ops.BLOCK_MAX = value
    try:
        yield
    finally:
        ce_ops.BLOCK_MAX = saved


def grad_output_for(kind, loss_shape, gen):
    if kind == "one":
        return torch.ones(loss_shape, dtype=torch.float64)
    if kind == "scaled":
        return torch.full(loss_shape, 0.25, dtype=torch.float64)
    return torch.randn(loss_shape, generator=gen, dtype=torch.float64)


def liger_pass(x, target, grad_out, mode, opts):
    """Loss, z-loss and logits gradient of liger_cross_entropy with the logits given as ``mode`` says."""
    base = x.detach().clone().requires_grad_()
    inplace = None
    if mode == "leaf":
        logits = base
    elif mode == "leaf_inplace":
        logits, inplace = base, True
    elif mode == "intermediate_copy":
        logits, inplace = base * 1, False
    else:  # an intermediate of autograd: overwritten with the gradient
        logits = base * 1
    loss, z = liger_cross_entropy(logits, target, return_z_loss=True, inplace=inplace, **opts)
    (grad,) = torch.autograd.grad(loss, base, grad_out.to(loss.dtype))
    return {"loss": loss.detach(), "z_loss": z, "dlogits": grad}


def reference_pass(x, target, grad_out, opts):
    logits = x.detach().clone().requires_grad_()
    loss, z = reference_loss(logits, target, **opts)
    (grad,) = torch.autograd.grad(loss, logits, grad_out.to(loss.dtype))
    return {"loss": loss.detach(), "z_loss": z.detach(), "dlogits": grad}


def check_against_torch(x, target, grad_kind, mode, opts, seed=0):
    gen = torch.Generator().manual_seed(seed)
    loss_shape = target.shape if opts.get("reduction") == "none" else ()
    grad_out = grad_output_for(grad_kind, loss_shape, gen).to(x.device)
    golden_opts = dict(opts)
    if opts.get("weight") is not None:
        golden_opts["weight"] = opts["weight"].double()
    actual = liger_pass(x, target, grad_out, mode, opts)
    reference = reference_pass(x, target, grad_out, opts)
    golden = reference_pass(x.double(), target, grad_out, golden_opts)
    assert actual["loss"].dtype == x.dtype and actual["dlogits"].dtype == x.dtype
    check_result(actual, reference, golden)


def check_result(actual, reference, golden):
    """bf16/fp16: reference-error mode. fp32: fp32 tolerances against the golden (see below)."""
    dtype = next(iter(actual.values())).dtype
    if dtype != torch.float32:
        assert_close_to_reference(actual, reference, golden)
        return
    # torch's CPU kernels accumulate fp32 in fp64, so a CPU fp32 reference is sometimes almost exact,
    # while a kernel in fp32 (as torch's own CUDA kernels) is off by an ulp or two of O(1) terms -- e.g.
    # in p_t - 1 for a confident row, whose golden is far smaller than 1: fp32 tolerances instead.
    tol = tolerances(torch.float32)
    assert_close(actual, {k: v.to(dtype) for k, v in golden.items()}, atol=tol.atol, rtol=tol.rtol)


@scaled(1.6)  # 40 examples under the ci profile
@given(
    n=lst.dims(1, 16),
    vocab=lst.dims(2, 300),
    dtype=lst.dtypes(torch.float32, torch.bfloat16),
    data=st.data(),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    use_weight=st.booleans(),
    label_smoothing=st.sampled_from([0.0, 0.0, 0.1, 0.75]),
    lse_square_scale=st.sampled_from([0.0, 0.0, 1e-4, 0.05]),
    softcap=st.sampled_from([None, None, 3.0, 30.0]),
    ignore_fraction=st.sampled_from([0.0, 0.25, 0.5]),
    grad_kind=st.sampled_from(["one", "scaled", "random"]),
    mode=st.sampled_from(["leaf", "intermediate", "leaf_inplace", "intermediate_copy"]),
    blocks=st.sampled_from([16384, 64]),
    contiguous=st.booleans(),
)
def test_matches_torch(
    device, n, vocab, dtype, data, reduction, use_weight, label_smoothing, lse_square_scale, softcap,
    ignore_fraction, grad_kind, mode, blocks, contiguous,
):  # fmt: skip
    x = data.draw(lst.tensors((n, vocab), dtype, device=device, low=-8.0, high=8.0, contiguous=contiguous))
    target = data.draw(lst.labels(n, vocab, device=device, ignore_fraction=ignore_fraction))
    if reduction == "mean" and bool((target == -100).all()):
        target[0] = 0  # all ignored is torch's NaN; test_all_ignored covers it
    weight = None
    if use_weight:
        weight = data.draw(lst.tensors((vocab,), dtype, device=device, low=0.25, high=2.0))
    opts = dict(
        weight=weight, reduction=reduction, label_smoothing=label_smoothing,
        lse_square_scale=lse_square_scale, softcap=softcap,
    )  # fmt: skip
    with block_max(blocks):
        check_against_torch(x, target, grad_kind, mode, opts, seed=n * 1000 + vocab)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_options_at_once(device, seed, dtype, reduction):
    gen = torch.Generator().manual_seed(seed)
    n, vocab = 13, 257
    x = (torch.randn(n, vocab, generator=gen) * 4).to(dtype).to(device)
    target = torch.randint(0, vocab, (n,), generator=gen).to(device)
    target[[2, 7]] = -100
    weight = (torch.rand(vocab, generator=gen) + 0.5).to(dtype).to(device)
    opts = dict(weight=weight, reduction=reduction, label_smoothing=0.2, lse_square_scale=1e-3, softcap=20.0)
    with block_max(64):
        check_against_torch(x, target, "random", "intermediate", opts, seed=seed)


def test_persistent_grid(device, seed, monkeypatch):
    """With a persistent grid each program walks several rows (ignored ones among them)."""
    monkeypatch.setattr("liger_kernel.ops.cross_entropy.PROGRAMS_PER_SM", 1)
    gen = torch.Generator().manual_seed(seed)
    n, vocab = 1000 if device == "cuda" else 11, 300
    x = torch.randn(n, vocab, generator=gen).to(device)
    target = torch.randint(0, vocab, (n,), generator=gen).to(device)
    target[::3] = -100
    with block_max(64):
        check_against_torch(x, target, "random", "intermediate", {"label_smoothing": 0.1}, seed=seed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("num_warps", "block"), [(1, 1024), (2, 512), (4, 32), (8, 4096)])
def test_launch_shapes(device, seed, monkeypatch, dtype, num_warps, block):
    """Pass 1 views each block as (rows, warps, lanes, vec); these cover several rows per warp, fewer
    warps than asked for, blocks smaller than a warp's load, and a partial last block."""
    monkeypatch.setattr(ce_ops, "NUM_WARPS", num_warps)
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(5, 1000, generator=gen) * 3).to(dtype).to(device)
    target = torch.randint(0, 1000, (5,), generator=gen).to(device)
    with block_max(block):
        check_against_torch(x, target, "random", "intermediate", {"label_smoothing": 0.1}, seed=seed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_extreme_rows(device, dtype):
    """Rows that stress the per-thread online logsumexp: a running max rising at every step, or
    falling, logits of 1e4 (exp overflows without the max), -inf entries (masked vocabulary) and a
    thread that only ever sees -inf, walked in blocks of 16 bytes' worth of elements per thread x 2
    threads (block_max(16): 16 bf16 or 8 fp32), so each thread takes several steps."""
    vocab = 70
    cols = torch.arange(vocab, dtype=torch.float64)
    rows = [
        cols * 0.5,  # rising
        -cols * 0.5,  # falling
        1e4 + torch.sin(cols),  # large
        torch.where(cols % 3 == 0, float("-inf"), torch.cos(cols)),  # masked vocabulary
        # The second thread of each block (bf16: columns 8-15 mod 16, fp32: 4-7 mod 8) sees only -inf.
        torch.where((cols % 16 >= 8) | (cols % 8 >= 4), float("-inf"), torch.sin(cols)),
        torch.where(cols < 60, float("-inf"), cols - 65.0),  # all but the last block masked
    ]
    x = torch.stack(rows).to(dtype).to(device)
    target = torch.tensor([69, 0, 3, 1, 2, 62], device=device)
    with block_max(16):
        check_against_torch(x, target, "random", "intermediate", {"reduction": "none"})


@triton.jit
def _tanh_of(X, Y, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    tl.store(Y + offsets, ce_ops._tanh(tl.load(X + offsets, mask=mask)), mask=mask)


def test_softcap_tanh_is_accurate_to_the_last_bits(device):
    """The kernels' own tanh (the softcap's) against float64, in fp32 ulps: the Taylor branch (|x| <
    0.55) within 1.5 ulp (0.77 measured under the interpreter), the exp branch within 3 (1.86 there; the
    GPU's exp approximation adds some). A loss or gradient check cannot see a few ulps in one capped
    logit; dropping any Taylor term of order 15 or lower costs 3 ulps or more at |x| = 0.55."""
    grid = torch.linspace(0.0, 3.0, 30001, dtype=torch.float64)
    near_switch = torch.linspace(0.3, 0.7, 20001, dtype=torch.float64)
    extremes = torch.tensor([1e-30, 1e-6, 20.0, 100.0, float("inf")], dtype=torch.float64)
    x = torch.cat([grid, near_switch, extremes])
    x = torch.cat([x, -x]).float().to(device)
    y = torch.empty_like(x)
    _tanh_of[(triton.cdiv(x.numel(), 4096),)](x, y, x.numel(), BLOCK=4096)
    exact = torch.tanh(x.double())
    ulp = (
        torch.nextafter(exact.float().abs(), torch.tensor(float("inf"), device=device)) - exact.float().abs()
    )
    ulps = (y.double() - exact).abs() / ulp.double()
    taylor = x.abs() < 0.55
    assert ulps[taylor].max() <= 1.5, (
        f"Taylor branch: {ulps[taylor].max():.2f} ulp at x = {x[taylor][ulps[taylor].argmax()]}"
    )
    assert ulps[~taylor].max() <= 3.0, (
        f"exp branch: {ulps[~taylor].max():.2f} ulp at x = {x[~taylor][ulps[~taylor].argmax()]}"
    )
    assert torch.equal(y[x == float("inf")], torch.ones(1, device=device))


def test_nan_logit_poisons_its_row(device):
    x = torch.randn(3, 40, device=device)
    x[1, 17] = float("nan")
    with block_max(16):
        loss = liger_cross_entropy(x, torch.tensor([1, 2, 3], device=device), reduction="none")
    assert torch.isnan(loss[1]) and torch.isfinite(loss[[0, 2]]).all()


def test_ignore_index_inside_vocab(device):
    # ignore_index 0 is a valid class: rows with target 0 are ignored, also in the weight denominator.
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(9, 20, generator=gen).to(device)
    target = torch.tensor([0, 3, 0, 5, 19, 0, 1, 2, 7], device=device)
    weight = (torch.rand(20, generator=gen) + 0.5).to(device)
    opts = dict(weight=weight, ignore_index=0, label_smoothing=0.1, lse_square_scale=0.01)
    check_against_torch(x, target, "random", "intermediate", opts)


def test_module_matches_functional(device):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(6, 33, generator=gen).to(device)
    target = torch.tensor([1, 0, 32, -100, 4, 5], device=device)
    weight = (torch.rand(33, generator=gen) + 0.5).to(device)
    opts = dict(ignore_index=-100, lse_square_scale=0.01, label_smoothing=0.1, reduction="sum", softcap=5.0)
    module = LigerCrossEntropyLoss(weight=weight, return_z_loss=True, **opts)
    loss, z = module(x, target)
    f_loss, f_z = liger_cross_entropy(x, target, weight, return_z_loss=True, **opts)
    assert_close((loss, z), (f_loss, f_z))
    assert torch.equal(module.weight, weight)  # a buffer: moves with .to()
    assert "weight" in dict(module.named_buffers())
    plain = LigerCrossEntropyLoss()(x, target)
    assert_close(plain, F.cross_entropy(x, target), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    ("size_average", "reduce", "reduction"),
    [
        (None, None, "mean"),
        (False, None, "sum"),
        (True, None, "mean"),
        (None, False, "none"),
        (False, True, "sum"),
    ],
)
def test_legacy_reduction_args(device, size_average, reduce, reduction):
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(5, 11, generator=gen).to(device)
    target = torch.tensor([1, 2, -100, 10, 0], device=device)
    with (
        pytest.warns(UserWarning)
        if (size_average is not None or reduce is not None)
        else contextlib.nullcontext()
    ):
        ours = liger_cross_entropy(x, target, size_average=size_average, reduce=reduce)
    assert_close(ours, F.cross_entropy(x, target, reduction=reduction), atol=1e-6, rtol=1e-6)


def test_higher_dim_and_unbatched_inputs(device):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 7, 3, 4, generator=gen).to(device).requires_grad_()  # (N, C, d1, d2)
    target = torch.randint(0, 7, (2, 3, 4), generator=gen).to(device)
    target[0, 1, 2] = -100
    for reduction in ("mean", "none"):
        ours = liger_cross_entropy(x, target, reduction=reduction, label_smoothing=0.1)
        ref = F.cross_entropy(x, target, reduction=reduction, label_smoothing=0.1)
        assert ours.shape == ref.shape
        go = torch.randn(ref.shape, generator=gen).to(device)
        (g_ours,) = torch.autograd.grad(ours, x, go)
        (g_ref,) = torch.autograd.grad(ref, x, go)
        assert_close((ours, g_ours), (ref, g_ref), atol=1e-6, rtol=1e-5)
    x1 = torch.randn(7, generator=gen).to(device)
    t1 = torch.tensor(3, device=device)
    for reduction in ("mean", "none"):
        ours = liger_cross_entropy(x1, t1, reduction=reduction)
        ref = F.cross_entropy(x1, t1, reduction=reduction)
        assert ours.shape == ref.shape == ()
        assert_close(ours, ref, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("use_weight", [False, True])
def test_all_ignored(device, reduction, use_weight):
    # Documented: mean over zero targets is 0 (torch: NaN), and every gradient is 0.
    x = torch.randn(4, 10, device=device)
    target = torch.full((4,), -100, device=device)
    weight = torch.rand(10, device=device) + 0.5 if use_weight else None
    base = x.clone().requires_grad_()
    logits = base * 1
    loss, z = liger_cross_entropy(
        logits,
        target,
        weight,
        reduction=reduction,
        lse_square_scale=0.1,
        label_smoothing=0.1,
        return_z_loss=True,
    )
    loss.backward(torch.ones_like(loss))
    expected_shape = (4,) if reduction == "none" else ()
    assert_close((loss, z), (torch.zeros(expected_shape, device=device),) * 2)
    assert_close(base.grad, torch.zeros_like(x))


@pytest.mark.parametrize("use_weight", [False, True], ids=["plain", "weighted"])
def test_mean_over_more_rows_than_one_block(device, use_weight):
    """The mean's denominator (targets counted, or their class weights summed) is reduced in blocks of
    1024 rows: 1100 rows, with the ignored ones and the heavy class in the second block only, so a loop
    that counted the first block again (or stopped after it) gives another mean."""
    n, vocab = 1100, 5
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, vocab, generator=gen).to(device)
    target = torch.randint(0, 4, (n,), generator=gen)
    target[1024:] = 4  # the heavy class only in the second block
    target[1024::3] = -100  # and the ignored rows
    weight = torch.tensor([1.0, 1.0, 1.0, 1.0, 8.0], device=device) if use_weight else None
    check_against_torch(x, target.to(device), "random", "intermediate", {"weight": weight})


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_gradient_over_a_row_strided_intermediate(device, reduction):
    """The gradient is written over an intermediate's view whose rows are further apart than its width
    (a column slice), then scaled in place by the incoming gradient (not 1): both kernels must use the
    view's row stride, not its width."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 2 * 33, generator=gen).to(device)
    target = torch.tensor([3, -100, 32, 0, 7, 1], device=device)
    grad_out = (torch.rand(6, generator=gen) + 0.5 if reduction == "none" else torch.tensor(2.5)).to(device)
    base = x.clone().requires_grad_()
    logits = (base * 1)[:, :33]
    assert logits.stride(0) == 66 and logits._base is not None  # overwritten in place (not a leaf's view)
    loss = liger_cross_entropy(logits, target, reduction=reduction)
    loss.backward(grad_out)
    ref_base = x.clone().requires_grad_()
    ref_loss = F.cross_entropy(ref_base[:, :33], target, reduction=reduction)
    ref_loss.backward(grad_out)
    tol = tolerances(torch.float32)
    assert_close((loss, base.grad), (ref_loss, ref_base.grad), atol=tol.atol, rtol=tol.rtol)


def test_forward_without_gradient_leaves_the_logits_alone(device):
    """Without a gradient to write (no grad mode, or logits that need none) the kernel must not touch the
    logits, not even the rows it ignores (the gradient buffer argument is the logits then)."""
    before = torch.randn(5, 40, device=device)
    target = torch.tensor([1, -100, 39, -100, 0], device=device)
    x, y = before.clone().requires_grad_(), before.clone()
    with torch.no_grad():
        loss = liger_cross_entropy(x, target)
    loss_none = liger_cross_entropy(y, target, reduction="none")
    assert torch.equal(x, before) and torch.equal(y, before)
    assert_close(loss, F.cross_entropy(before, target))
    assert_close(loss_none, F.cross_entropy(before, target, reduction="none"))


def test_bad_targets_raise(device):
    x = torch.randn(3, 10, device=device)
    for bad in (10, -1, 1000):
        target = torch.tensor([1, bad, 2], device=device)
        with pytest.raises(IndexError, match=r"outside \[0, 10\)"):
            liger_cross_entropy(x, target)
    # The logits are not touched when the check fails.
    base = x.clone().requires_grad_()
    logits = base * 1
    before = logits.detach().clone()
    with pytest.raises(IndexError, match="ignore_index=-100"):
        liger_cross_entropy(logits, torch.tensor([1, 11, 2], device=device))
    assert torch.equal(logits.detach(), before)
    # A failed check leaves nothing behind: the next call is checked and computed as usual.
    good = torch.tensor([1, 9, 2], device=device)
    assert_close(liger_cross_entropy(x, good), F.cross_entropy(x, good))


def test_unchecked_bad_target_gives_nan(device):
    # With the check off (as while a CUDA graph is captured) a bad row poisons the loss: never a plausible value.
    x = torch.randn(3, 10, device=device)
    saved = ce_ops.CHECK_TARGETS
    ce_ops.CHECK_TARGETS = False
    try:
        loss = liger_cross_entropy(x, torch.tensor([1, 12, 2], device=device))
    finally:
        ce_ops.CHECK_TARGETS = saved
    assert torch.isnan(loss)


def test_bad_inputs_raise(device):
    x = torch.randn(4, 10, device=device)
    t = torch.tensor([1, 2, 3, 4], device=device)
    with pytest.raises(ValueError, match="target must have shape"):
        liger_cross_entropy(x, t[:3])
    with pytest.raises(TypeError, match="soft labels"):
        liger_cross_entropy(x, torch.rand(4, 10, device=device))
    with pytest.raises(TypeError, match="input must be a floating-point"):
        liger_cross_entropy(t, t)
    with pytest.raises(ValueError, match=r"weight must have shape \(10,\)"):
        liger_cross_entropy(x, t, weight=torch.ones(9, device=device))
    with pytest.raises(TypeError, match="weight must be a floating-point"):
        liger_cross_entropy(x, t, weight=torch.ones(10, dtype=torch.long, device=device))
    with pytest.raises(ValueError, match="reduction must be one of"):
        liger_cross_entropy(x, t, reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        liger_cross_entropy(x, t, label_smoothing=1.5)
    with pytest.raises(ValueError, match="softcap must be positive"):
        liger_cross_entropy(x, t, softcap=0.0)
    with pytest.raises(ValueError, match="lse_square_scale must be non-negative"):
        liger_cross_entropy(x, t, lse_square_scale=-1.0)
    with pytest.raises(ValueError, match="reduction must be one of"):
        LigerCrossEntropyLoss(reduction="avg")


def test_where_the_gradient_goes(device):
    x = torch.randn(4, 10, device=device)
    t = torch.tensor([1, 2, 3, 4], device=device)
    # A leaf the caller made is never overwritten (its next use would silently see gradients).
    leaf = x.clone().requires_grad_()
    liger_cross_entropy(leaf, t).backward()
    assert torch.equal(leaf.detach(), x)
    view_of_leaf = x.clone().requires_grad_()
    liger_cross_entropy(view_of_leaf[:, :], t).backward()
    assert torch.equal(view_of_leaf.detach(), x)
    # Without a gradient the logits are only read.
    leaf = x.clone().requires_grad_()
    with torch.no_grad():
        liger_cross_entropy(leaf * 1, t)
    assert torch.equal(leaf.detach(), x)
    # An intermediate is overwritten with the gradient (documented), unless inplace=False.
    base = x.clone().requires_grad_()
    logits = base * 1
    liger_cross_entropy(logits, t).backward()
    assert_close(logits.detach(), base.grad)
    base = x.clone().requires_grad_()
    logits = base * 1
    liger_cross_entropy(logits, t, inplace=False).backward()
    assert torch.equal(logits.detach(), x)
    # inplace=True overwrites even a leaf.
    leaf = x.clone().requires_grad_()
    liger_cross_entropy(leaf, t, inplace=True).backward()
    assert_close(leaf.detach(), leaf.grad)


def test_overwrite_of_a_saved_tensor_is_loud(device):
    # tanh keeps its output for its backward: overwriting it must fail loudly, never give wrong grads.
    h = torch.randn(4, 10, device=device, requires_grad=True)
    t = torch.tensor([1, 2, 3, 4], device=device)
    loss = liger_cross_entropy(torch.tanh(h), t)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
    loss = liger_cross_entropy(torch.tanh(h), t, inplace=False)
    loss.backward()
    ref_h = h.detach().clone().requires_grad_()
    F.cross_entropy(torch.tanh(ref_h), t).backward()
    assert_close(h.grad, ref_h.grad, atol=1e-6, rtol=1e-5)


def test_backward_twice_through_one_graph(device):
    """retain_graph=True: the second backward gets its own gradient (the first scaled a copy)."""
    base = torch.randn(4, 10, device=device, requires_grad=True)
    t = torch.tensor([1, 2, 3, 4], device=device)
    loss = liger_cross_entropy(base * 1, t)
    (loss * 2).backward(retain_graph=True)
    loss.backward()
    ref = base.detach().clone().requires_grad_()
    (F.cross_entropy(ref, t) * 3).backward()
    assert_close(base.grad, ref.grad, atol=1e-6, rtol=1e-5)


def test_gradient_accumulation(device):
    # Two losses over one set of logits, backward together, with incoming gradients other than 1.
    gen = torch.Generator().manual_seed(2)
    h = torch.randn(5, 6, generator=gen).to(device).requires_grad_()
    w = torch.randn(12, 6, generator=gen).to(device).requires_grad_()
    t1 = torch.tensor([0, 3, 11, -100, 5], device=device)
    t2 = torch.tensor([1, 1, 2, 3, -100], device=device)
    loss = liger_cross_entropy(h @ w.t(), t1) / 4 + 3 * liger_cross_entropy(h @ w.t(), t2, reduction="sum")
    loss.backward()
    ours = (h.grad, w.grad)
    h2, w2 = h.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    ref = F.cross_entropy(h2 @ w2.t(), t1) / 4 + 3 * F.cross_entropy(h2 @ w2.t(), t2, reduction="sum")
    ref.backward()
    assert_close((loss.detach(), *ours), (ref.detach(), h2.grad, w2.grad), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["intermediate", "leaf"])
def test_compile_fullgraph(device, mode):
    backend = "inductor" if device == "cuda" else "aot_eager"
    gen = torch.Generator().manual_seed(8)
    h = torch.randn(6, 5, generator=gen).to(device)
    w = torch.randn(40, 5, generator=gen).to(device)
    t = torch.tensor([0, 39, 7, -100, 3, 3], device=device)

    def fn(h, w, t):
        logits = h @ w.t() if mode == "intermediate" else h
        loss, z = liger_cross_entropy(logits, t, lse_square_scale=0.01, softcap=4.0, return_z_loss=True)
        return loss * 2, z

    compiled = torch.compile(fn, fullgraph=True, backend=backend)
    if mode == "leaf":
        h = torch.randn(6, 40, generator=gen).to(device)
    outs = {}
    for name, f in (("eager", fn), ("compiled", compiled)):
        hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_()
        loss, z = f(hh, ww, t)
        loss.backward()
        outs[name] = (loss.detach(), z, hh.grad, ww.grad if mode == "intermediate" else torch.zeros(()))
    assert_close(outs["compiled"], outs["eager"], atol=1e-6, rtol=1e-5)
    golden = reference_loss(
        (h.double() @ w.double().t()) if mode == "intermediate" else h.double(), t,
        lse_square_scale=0.01, softcap=4.0,
    )  # fmt: skip
    assert_close(outs["compiled"][0].double(), 2 * golden[0], atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.slow
def test_int64_offsets(device):
    # 8192 x 262144 logits: 2^31 elements, past int32 offsets.
    n, vocab = 8192, 262144
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(n, vocab, device=device, dtype=torch.bfloat16, generator=gen)
    target = torch.randint(0, vocab, (n,), device=device, generator=gen)
    rows = torch.tensor([0, 1, n // 2, n - 2, n - 1], device=device)
    expected_loss = F.cross_entropy(x[rows].float(), target[rows], reduction="none")
    expected_grad = torch.softmax(x[rows].float(), -1)
    expected_grad[torch.arange(len(rows)), target[rows]] -= 1
    base = x.requires_grad_()
    logits = base * 1  # intermediate: overwritten in place
    del x
    loss = liger_cross_entropy(logits, target, reduction="none")
    assert_close(loss[rows].float(), expected_loss, atol=2e-2, rtol=1e-2)
    assert_close(logits.detach()[rows].float(), expected_grad, atol=1e-3, rtol=2e-2)


def test_compiled_backward_twice(device):
    # Under torch.compile the backward scales a copy of the stored gradient: a second backward through
    # the retained graph is right. Inductor on CPU too (C++ codegen): aot_eager never reuses buffers.
    backend = "inductor"
    gen = torch.Generator().manual_seed(12)
    h0 = torch.randn(4, 5, generator=gen).to(device)
    w0 = torch.randn(10, 5, generator=gen).to(device)
    t = torch.tensor([1, 2, 3, -100], device=device)
    compiled = torch.compile(
        lambda h, w: liger_cross_entropy(h @ w.t(), t) * 3, fullgraph=True, backend=backend
    )
    h = h0.clone().requires_grad_()
    loss = compiled(h, w0)
    (first,) = torch.autograd.grad(loss, h, retain_graph=True)
    (second,) = torch.autograd.grad(loss, h)
    hr = h0.clone().requires_grad_()
    (F.cross_entropy(hr @ w0.t(), t) * 3).backward()
    assert_close((first, second), (hr.grad, hr.grad), atol=1e-6, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:liger_kernel.*:RuntimeWarning")
def test_pytorch_fallback_matches_kernel(device, monkeypatch):
    # CPU tensors with Triton's interpreter off run the PyTorch path: same results as the kernel.
    if device != "cpu":
        pytest.skip("the PyTorch fallback is for CPU tensors")
    gen = torch.Generator().manual_seed(13)
    x = torch.randn(7, 50, generator=gen)
    target = torch.tensor([0, 49, -100, 3, 3, 17, 8])
    weight = torch.rand(50, generator=gen) + 0.5
    opts = dict(weight=weight, label_smoothing=0.1, lse_square_scale=0.01, softcap=6.0, return_z_loss=True)
    results = {}
    for interpret in ("1", "0"):
        monkeypatch.setenv("TRITON_INTERPRET", interpret)
        for reduction in ("mean", "none"):
            base = x.clone().requires_grad_()
            loss, z = liger_cross_entropy(base * 1, target, reduction=reduction, **opts)
            (grad,) = torch.autograd.grad(loss, base, torch.full(loss.shape, 0.5))
            results[interpret, reduction] = (loss.detach(), z, grad)
        with pytest.raises(IndexError, match="outside"):
            liger_cross_entropy(x, torch.tensor([0, 50, 1, 1, 1, 1, 1]))
    for reduction in ("mean", "none"):
        assert_close(results["0", reduction], results["1", reduction], atol=1e-6, rtol=1e-5)


class _LaunchSpy:
    """Stands in for the row kernel: records each launch's PEEL and launches the real one."""

    def __init__(self, kernel):
        self.kernel, self.peel = kernel, []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.peel.append(kwargs["PEEL"])
            return self.kernel[grid](*args, **kwargs)

        return launch


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mode", ["intermediate", "leaf", "intermediate_copy"])
def test_rows_off_alignment_are_peeled(device, seed, monkeypatch, dtype, mode):
    """With a vocabulary that is not a multiple of the 16-byte load (203 classes) each row starts at
    another offset from alignment; the kernel takes each row's first columns apart (PEEL) so the rest
    loads aligned. Targets inside the peeled columns of several rows, class weights, smoothing, softcap,
    z-loss and ignored rows, over several blocks per row, against the golden, in place or not."""
    spy = _LaunchSpy(ce_ops._cross_entropy_kernel)
    monkeypatch.setattr(ce_ops, "_cross_entropy_kernel", spy)
    gen = torch.Generator().manual_seed(seed)
    n, vocab = 9, 203
    x = (torch.randn(n, vocab, generator=gen) * 4).to(dtype).to(device)
    target = torch.tensor([0, 1, 2, 3, 5, 6, -100, 202, 7]).to(device)
    weight = (torch.rand(vocab, generator=gen) + 0.5).to(dtype).to(device)
    opts = dict(weight=weight, reduction="mean", label_smoothing=0.2, lse_square_scale=1e-3, softcap=20.0)
    with block_max(64):
        check_against_torch(x, target, "random", mode, opts, seed=seed)
    assert spy.peel == [True]


def test_peeled_rows_load_16_bytes_at_a_time():
    """The point of PEEL, checked in the code the GPU would run (cross-compiled for sm_90): with a row
    stride that is not a multiple of the 16-byte load (OLMo 3's 100278), the full blocks' loads and
    stores are 16 bytes per thread with PEEL, as many as with an aligned stride, and none without it.
    Also compiles PEEL with every option on and with fp32 logits."""
    from _ptx import ptx_stats, vector_count

    args = dict(
        X="*bf16", G="*bf16", Y="*i64", CW="*fp32", ROW_SCALE="*fp32", SCALES="*fp32", LOSS="*fp32",
        ZLOSS="*fp32", stride_x="i64", stride_g="i64", stride_y="i64", stride_rs="i32", n_rows="i32",
        n_cols="i32", n_programs="i32", ignore_index="i32", label_smoothing="fp32", lse_square_scale="fp32",
        softcap="fp32",
    )  # fmt: skip
    pointers = tuple(name for name, kind in args.items() if kind.startswith("*"))
    options = ("HAS_WEIGHT", "HAS_SMOOTHING", "HAS_Z", "HAS_SOFTCAP", "HAS_ROW_SCALE")

    def spec(peel, stride_aligned, all_options=False, logits="*bf16"):
        block, vec, lanes, warps = ce_ops._launch_shape(100278, 2 if logits == "*bf16" else 4)
        consts = dict.fromkeys(options, all_options)
        consts |= dict(WRITE_GRAD=True, WARPS=warps, LANES=lanes, VEC=vec, BLOCK=block, SKIP_IF_BAD=True)
        consts |= dict(EVICT1="evict_last", EVICT2="evict_first", PEEL=peel)
        aligned = pointers + (("stride_x", "stride_g") if stride_aligned else ())
        return dict(
            module=ce_ops.__name__, kernel="_cross_entropy_kernel", args=args | dict(X=logits, G=logits),
            constexprs=consts, aligned=aligned, num_warps=warps,
        )  # fmt: skip

    peeled, aligned, packed, peeled_all, peeled_fp32 = ptx_stats(
        [
            spec(True, False),
            spec(False, True),
            spec(False, False),
            spec(True, False, True),
            spec(True, False, False, "*fp32"),
        ]
    )
    for ops in ("loads", "stores"):
        assert vector_count(peeled[ops]) == vector_count(aligned[ops]) > 0, (peeled, aligned)
        assert vector_count(packed[ops]) == 0, packed
    assert vector_count(peeled_all["loads"]) > 0 and vector_count(peeled_fp32["loads"]) > 0, (
        peeled_all,
        peeled_fp32,
    )
