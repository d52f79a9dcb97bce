"""Fused linear cross entropy: LigerFusedLinearCrossEntropyLoss / liger_fused_linear_cross_entropy against
``F.linear`` -> ``.float()`` -> cross entropy (what a Hugging Face causal LM computes).

Options torch lacks (z-loss, softcap) are added in plain PyTorch by the cross entropy tests'
``reference_loss``. bf16 checks are in reference-error mode (the kernel's error against a float64 golden may be at most twice the error of the
same-dtype PyTorch computation); fp32 checks use fp32 tolerances against the golden.
"""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from test_cross_entropy import reference_loss as cross_entropy_reference

from liger_kernel.ops.fused_linear_cross_entropy import default_chunk_size
from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy
from liger_testing import assert_close, assert_close_to_reference, default_floor, tolerances
from liger_testing import strategies as lst
from liger_testing.profiles import scaled


def reference_loss(
    x, weight, target, bias=None, ce_weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0,
    lse_square_scale=0.0, softcap=None,
):  # fmt: skip
    """(loss, z-loss) of the logits x @ weight.T + bias, upcast to fp32 (float64 stays float64), by the
    cross entropy tests' reference."""
    shape = target.shape
    logits = F.linear(x, weight, bias).reshape(-1, weight.shape[0])
    if logits.dtype != torch.float64:
        logits = logits.float()
    if ce_weight is not None:
        ce_weight = ce_weight.to(logits.dtype)
    loss, z_loss = cross_entropy_reference(
        logits,
        target.reshape(-1),
        ce_weight,
        ignore_index,
        reduction,
        label_smoothing,
        lse_square_scale,
        softcap,
    )
    if reduction == "none":
        loss, z_loss = loss.view(shape), z_loss.view(shape)
    return loss, z_loss


def run(fn, x, weight, bias, target, grad_out, wrt, **opts):
    """Loss, z-loss and the gradients of ``wrt`` (names among x, weight, bias) of one full pass."""
    leaves = {"x": x, "weight": weight, "bias": bias}
    leaves = {
        k: (v.detach().clone().requires_grad_(k in wrt) if v is not None else None) for k, v in leaves.items()
    }
    loss, z = fn(leaves["x"], leaves["weight"], target, leaves["bias"], **opts)
    inputs = [leaves[k] for k in wrt]
    grads = torch.autograd.grad(loss, inputs, grad_out.to(loss.dtype))
    return {"loss": loss.detach(), "z_loss": z.detach(), **{f"d{k}": g for k, g in zip(wrt, grads)}}


def liger_fn(x, weight, target, bias, **opts):
    return liger_fused_linear_cross_entropy(x, weight, target, bias, return_z_loss=True, **opts)


def check(x, weight, bias, target, ce_weight, wrt, grad_kind, opts, liger_opts, seed=0):
    gen = torch.Generator().manual_seed(seed)
    loss_shape = target.shape if opts.get("reduction") == "none" else ()
    if grad_kind == "one":
        grad_out = torch.ones(loss_shape, dtype=torch.float64)
    elif grad_kind == "scaled":
        grad_out = torch.full(loss_shape, 0.25, dtype=torch.float64)
    else:
        grad_out = torch.randn(loss_shape, generator=gen, dtype=torch.float64)
    grad_out = grad_out.to(x.device)
    actual = run(liger_fn, x, weight, bias, target, grad_out, wrt, ce_weight=ce_weight, **opts, **liger_opts)
    reference = run(reference_loss, x, weight, bias, target, grad_out, wrt, ce_weight=ce_weight, **opts)
    golden = run(
        reference_loss, x.double(), weight.double(), None if bias is None else bias.double(), target, grad_out,
        wrt, ce_weight=None if ce_weight is None else ce_weight.double(), **opts,
    )  # fmt: skip
    assert actual["loss"].dtype == torch.float32
    if x.dtype == torch.float32:
        # torch's CPU kernels accumulate fp32 in fp64 and are sometimes almost exact: fp32 tolerances.
        tol = tolerances(torch.float32)
        assert_close(
            actual, {k: v.to(actual[k].dtype) for k, v in golden.items()}, atol=tol.atol, rtol=tol.rtol
        )
        return
    # The weight and bias gradients are rounded to bf16 once per chunk unless accumulated in fp32.
    n_chunks = -(-x.shape[0] // (liger_opts.get("chunk_size") or x.shape[0]))
    accumulated = liger_opts.get("accum_dtype") != torch.float32 and n_chunks > 1
    floors = gradient_floors(actual, golden, x, weight, bias, target, ce_weight, grad_out, opts)
    for key in actual:
        factor = 2.0 + n_chunks if accumulated and key in ("dweight", "dbias") else 2.0
        assert_close_to_reference(
            {key: actual[key]},
            {key: reference[key]},
            {key: golden[key]},
            factor=factor,
            floor=floors.get(key),
        )


def gradient_floors(actual, golden, x, weight, bias, target, ce_weight, grad_out, opts):
    """Relative floors: one rounding of the terms each result sums, not of the result.

    dx = dlogits @ W sums over the vocabulary, dweight = dlogits^T @ x and dbias over the tokens, and
    the softmax gradient's terms cancel (each row of dlogits sums to about 0): one ulp of every term can
    be many ulps of the sum. The kernel rounds dlogits to the logits' dtype before the matmuls, as the
    reference does, but under Triton's interpreter by truncation, which is biased, so the errors add up
    instead of averaging out. Bound: eps * sum |term| (``default_floor``'s eps) relative to max|golden|.

    The loss and z-loss come from logits rounded to their dtype, by the kernel and the reference alike,
    but from different matmuls (the kernel's are per chunk), which can round a logit the other way. The
    first-order effect of one rounding of every logit z_ij is at most eps(dtype) * sum |dloss/dz_ij| |z_ij|
    (per row for reduction="none"; eps, not eps / 2, because the interpreter truncates): that, relative
    to max|golden|, is their floor.
    """
    logits = F.linear(x.double(), weight.double(), None if bias is None else bias.double())
    logits = logits.reshape(-1, weight.shape[0]).requires_grad_()
    ce64 = None if ce_weight is None else ce_weight.double()
    loss, z_loss = cross_entropy_reference(logits, target.reshape(-1), ce64, **opts)
    (dlogits,) = torch.autograd.grad(loss, logits, grad_out.double().reshape(loss.shape), retain_graph=True)
    g = dlogits.abs()
    terms = {
        "dx": g @ weight.double().abs(),
        "dweight": g.T @ x.double().reshape(-1, x.shape[-1]).abs(),
        "dbias": g.sum(0),
    }
    floors = {}
    for key, t in terms.items():
        if key in actual:
            floor = default_floor(actual[key])
            scale = golden[key].abs().max().item()
            floors[key] = max(floor, floor * t.max().item() / scale) if scale > 0 else floor
    eps = torch.finfo(x.dtype).eps
    for key, value in (("loss", loss), ("z_loss", z_loss)):
        floor = default_floor(actual[key])
        scale = golden[key].abs().max().item()
        if not value.requires_grad or scale == 0:
            floors[key] = floor
            continue
        (d,) = torch.autograd.grad(value.sum(), logits, retain_graph=True)
        bound = eps * (d.abs() * logits.detach().abs()).sum(1)
        bound = bound.max() if value.dim() else bound.sum()
        floors[key] = max(floor, bound.item() / scale)
    return floors


@scaled(1.2)  # 30 examples under the ci profile
@given(
    n=lst.dims(1, 16),
    hidden=lst.dims(1, 40),
    vocab=lst.dims(2, 300),
    dtype=lst.dtypes(torch.float32, torch.bfloat16),
    data=st.data(),
    use_bias=st.booleans(),
    use_ce_weight=st.booleans(),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    label_smoothing=st.sampled_from([0.0, 0.0, 0.1]),
    lse_square_scale=st.sampled_from([0.0, 0.0, 1e-3]),
    softcap=st.sampled_from([None, None, 2.0]),
    ignore_fraction=st.sampled_from([0.0, 0.25]),
    grad_kind=st.sampled_from(["one", "scaled", "random"]),
    chunk_size=st.sampled_from([None, 1, 3, 7]),
    accum_dtype=st.sampled_from([None, torch.float32]),
    wrt=st.sampled_from([("x", "weight", "bias"), ("x",), ("weight", "bias"), ("x", "bias")]),
)
def test_matches_torch(
    device, n, hidden, vocab, dtype, data, use_bias, use_ce_weight, reduction, label_smoothing,
    lse_square_scale, softcap, ignore_fraction, grad_kind, chunk_size, accum_dtype, wrt,
):  # fmt: skip
    x = data.draw(lst.tensors((n, hidden), dtype, device=device, low=-1.0, high=1.0))
    weight = data.draw(lst.tensors((vocab, hidden), dtype, device=device, low=-0.5, high=0.5))
    bias = data.draw(lst.tensors((vocab,), dtype, device=device, low=-1.0, high=1.0)) if use_bias else None
    ce_weight = (
        data.draw(lst.tensors((vocab,), torch.float32, device=device, low=0.25, high=2.0))
        if use_ce_weight
        else None
    )
    target = data.draw(lst.labels(n, vocab, device=device, ignore_fraction=ignore_fraction))
    if bias is None:
        wrt = tuple(k for k in wrt if k != "bias") or ("x",)
    opts = dict(
        reduction=reduction,
        label_smoothing=label_smoothing,
        lse_square_scale=lse_square_scale,
        softcap=softcap,
    )
    liger_opts = dict(chunk_size=chunk_size, accum_dtype=accum_dtype)
    check(x, weight, bias, target, ce_weight, wrt, grad_kind, opts, liger_opts, seed=n * 100 + vocab)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_options_at_once(device, seed, dtype, reduction):
    gen = torch.Generator().manual_seed(seed)
    n, hidden, vocab = 11, 24, 129
    x = (torch.rand(n, hidden, generator=gen) * 2 - 1).to(dtype).to(device)
    weight = (torch.rand(vocab, hidden, generator=gen) - 0.5).to(dtype).to(device)
    bias = (torch.rand(vocab, generator=gen) - 0.5).to(dtype).to(device)
    ce_weight = (torch.rand(vocab, generator=gen) + 0.5).to(device)
    target = torch.randint(0, vocab, (n,), generator=gen).to(device)
    target[[1, 6]] = -100
    opts = dict(reduction=reduction, label_smoothing=0.2, lse_square_scale=1e-3, softcap=3.0)
    check(
        x, weight, bias, target, ce_weight, ("x", "weight", "bias"), "random", opts,
        dict(chunk_size=4, accum_dtype=torch.float32), seed=seed,
    )  # fmt: skip


def test_leading_dims_and_module(device):
    gen = torch.Generator().manual_seed(1)
    x = (torch.rand(2, 5, 8, generator=gen) - 0.5).to(device)
    weight = (torch.rand(30, 8, generator=gen) - 0.5).to(device)
    target = torch.randint(0, 30, (2, 5), generator=gen).to(device)
    target[1, 4] = -100
    for reduction in ("mean", "none"):
        module = LigerFusedLinearCrossEntropyLoss(reduction=reduction, chunk_size=3, lse_square_scale=0.01)
        xl, wl = x.clone().requires_grad_(), weight.clone().requires_grad_()
        loss = module(wl, xl, target)
        xr, wr = x.clone().requires_grad_(), weight.clone().requires_grad_()
        ref, _ = reference_loss(xr, wr, target, reduction=reduction, lse_square_scale=0.01)
        assert loss.shape == ref.shape
        go = torch.randn(ref.shape, generator=gen).to(device)
        loss.backward(go)
        ref.backward(go)
        assert_close((loss, xl.grad, wl.grad), (ref, xr.grad, wr.grad), atol=2e-6, rtol=2e-6)


def test_no_grad_and_frozen_weight(device):
    gen = torch.Generator().manual_seed(2)
    x = (torch.rand(6, 8, generator=gen) - 0.5).to(device).requires_grad_()
    weight = (torch.rand(20, 8, generator=gen) - 0.5).to(device)  # frozen: no dW is computed
    target = torch.randint(0, 20, (6,), generator=gen).to(device)
    with torch.no_grad():
        loss_nograd = liger_fused_linear_cross_entropy(x, weight, target)
    assert not loss_nograd.requires_grad
    loss = liger_fused_linear_cross_entropy(x, weight, target, chunk_size=4)
    (dx,) = torch.autograd.grad(loss * 3, x)
    xr = x.detach().clone().requires_grad_()
    ref, _ = reference_loss(xr, weight, target)
    (ref * 3).backward()
    assert_close(
        (loss_nograd, loss.detach(), dx), (ref.detach(), ref.detach(), xr.grad), atol=2e-6, rtol=2e-6
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_ignored(device, reduction):
    x = torch.randn(4, 8, device=device, requires_grad=True)
    weight = torch.randn(16, 8, device=device, requires_grad=True)
    bias = torch.randn(16, device=device, requires_grad=True)
    target = torch.full((4,), -100, device=device)
    loss, z = liger_fused_linear_cross_entropy(
        x, weight, target, bias, reduction=reduction, lse_square_scale=0.1, label_smoothing=0.1,
        return_z_loss=True, ce_weight=torch.rand(16, device=device) + 0.5, chunk_size=3,
    )  # fmt: skip
    loss.backward(torch.ones_like(loss))
    expected_shape = (4,) if reduction == "none" else ()
    assert_close((loss, z), (torch.zeros(expected_shape, device=device),) * 2)
    assert_close(
        (x.grad, weight.grad, bias.grad),
        (torch.zeros_like(x), torch.zeros_like(weight), torch.zeros_like(bias)),
    )


def test_bad_inputs_raise(device):
    x = torch.randn(4, 8, device=device)
    w = torch.randn(10, 8, device=device)
    t = torch.tensor([1, 2, 3, 4], device=device)
    with pytest.raises(IndexError, match=r"outside \[0, 10\)"):
        liger_fused_linear_cross_entropy(x, w, torch.tensor([1, 2, 10, 4], device=device))
    with pytest.raises(ValueError, match="must share H"):
        liger_fused_linear_cross_entropy(x, torch.randn(10, 7, device=device), t)
    with pytest.raises(ValueError, match="target must have shape"):
        liger_fused_linear_cross_entropy(x, w, t[:3])
    with pytest.raises(TypeError, match="one dtype"):
        liger_fused_linear_cross_entropy(x, w.to(torch.bfloat16), t)
    with pytest.raises(TypeError, match="class indices"):
        liger_fused_linear_cross_entropy(x, w, t.float())
    with pytest.raises(ValueError, match=r"bias must have shape \(10,\)"):
        liger_fused_linear_cross_entropy(x, w, t, torch.randn(9, device=device))
    with pytest.raises(TypeError, match="bias must have input's dtype"):
        liger_fused_linear_cross_entropy(x, w, t, torch.randn(10, device=device, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"ce_weight must have shape \(10,\)"):
        liger_fused_linear_cross_entropy(x, w, t, ce_weight=torch.ones(3, device=device))
    with pytest.raises(ValueError, match="accum_dtype must be"):
        liger_fused_linear_cross_entropy(x, w, t, accum_dtype=torch.float16)
    with pytest.raises(ValueError, match="chunk_size must be positive"):
        liger_fused_linear_cross_entropy(x, w, t, chunk_size=0)
    with pytest.raises(ValueError, match="reduction must be one of"):
        LigerFusedLinearCrossEntropyLoss(reduction="avg")
    with pytest.raises(ValueError, match="softcap must be positive"):
        liger_fused_linear_cross_entropy(x, w, t, softcap=-1.0)


def test_backward_twice_through_one_graph(device):
    """retain_graph=True: the second backward gets its own gradients (the first scaled copies)."""
    x = torch.randn(4, 8, device=device, requires_grad=True)
    w = torch.randn(10, 8, device=device, requires_grad=True)
    t = torch.tensor([1, 2, 3, 4], device=device)
    loss = liger_fused_linear_cross_entropy(x, w, t)
    (loss * 2).backward(retain_graph=True)
    loss.backward()
    x2, w2 = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    (F.cross_entropy(x2 @ w2.t(), t) * 3).backward()
    assert_close((x.grad, w.grad), (x2.grad, w2.grad), atol=1e-6, rtol=1e-5)


def test_default_chunk_size():
    # ~256 MiB of logits per chunk, multiples of the 256-row tile (64 below it), chunks of even size.
    assert default_chunk_size(8192, 128256, 2) == 1024
    assert default_chunk_size(9000, 128256, 2) <= 1046
    assert default_chunk_size(100, 32000, 2) == 100
    assert default_chunk_size(1, 300, 4) == 1
    rows = default_chunk_size(100_000, 50_000, 4)
    assert rows % 64 == 0 and rows * 50_000 * 4 <= 256 * 2**20


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_compile_fullgraph(device, reduction):
    backend = "inductor" if device == "cuda" else "aot_eager"
    gen = torch.Generator().manual_seed(3)
    x = (torch.rand(6, 8, generator=gen) - 0.5).to(device)
    w = (torch.rand(40, 8, generator=gen) - 0.5).to(device)
    b = (torch.rand(40, generator=gen) - 0.5).to(device)
    t = torch.tensor([0, 39, 7, -100, 3, 3], device=device)

    def fn(x, w, b, t):
        loss, z = liger_fused_linear_cross_entropy(
            x,
            w,
            t,
            b,
            reduction=reduction,
            softcap=4.0,
            lse_square_scale=0.01,
            return_z_loss=True,
            chunk_size=4,
        )
        return loss.sum() * 2, z

    compiled = torch.compile(fn, fullgraph=True, backend=backend)
    outs = {}
    for name, f in (("eager", fn), ("compiled", compiled)):
        xx, ww, bb = (v.clone().requires_grad_() for v in (x, w, b))
        loss, z = f(xx, ww, bb, t)
        loss.backward()
        outs[name] = (loss.detach(), z, xx.grad, ww.grad, bb.grad)
    assert_close(outs["compiled"], outs["eager"], atol=1e-6, rtol=1e-5)


@pytest.mark.gpu
def test_peak_memory_below_full_logits(device):
    # 8192 tokens x vocab 32768 bf16: full logits 512 MiB. The fused loss keeps dW (64 MiB), dx (16 MiB)
    # and one chunk of logits (<= 256 MiB): its extra peak must stay below the full logits.
    n, hidden, vocab = 8192, 1024, 32768
    x = torch.randn(n, hidden, device=device, dtype=torch.bfloat16, requires_grad=True)
    w = (torch.randn(vocab, hidden, device=device, dtype=torch.bfloat16) * 0.02).requires_grad_()
    target = torch.randint(0, vocab, (n,), device=device)
    liger_fused_linear_cross_entropy(x, w, target).backward()  # warm-up (compiles kernels)
    x.grad = w.grad = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    loss = liger_fused_linear_cross_entropy(x, w, target)
    loss.backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    full_logits = n * vocab * 2
    assert extra < full_logits, (
        f"peak extra {extra / 2**20:.0f} MiB >= full logits {full_logits / 2**20:.0f} MiB"
    )
    ref, _ = reference_loss(x.detach().float(), w.detach().float(), target)
    assert abs(loss.item() - ref.item()) < 2e-2


def test_autocast(device):
    # Mixed precision: fp32 weights and input, matmuls in bf16 as autocast's F.linear would run them.
    gen = torch.Generator().manual_seed(6)
    x = (torch.rand(6, 16, generator=gen) - 0.5).to(device).requires_grad_()
    w = (torch.rand(24, 16, generator=gen) - 0.5).to(device).requires_grad_()
    t = torch.randint(0, 24, (6,), generator=gen).to(device)
    with torch.autocast(device, dtype=torch.bfloat16):
        loss = liger_fused_linear_cross_entropy(x, w, t, chunk_size=4)
    loss.backward()
    assert x.grad.dtype == torch.float32 and w.grad.dtype == torch.float32
    xr, wr = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    ref, _ = reference_loss(xr.to(torch.bfloat16), wr.to(torch.bfloat16), t)
    ref.backward()
    assert_close((loss.detach(), x.grad, w.grad), (ref.detach(), xr.grad, wr.grad), atol=1e-2, rtol=1e-2)


@pytest.mark.filterwarnings("ignore:liger_kernel.*:RuntimeWarning")
def test_pytorch_fallback_matches_kernel(device, monkeypatch):
    # CPU tensors with Triton's interpreter off run the PyTorch path: same results as the kernel.
    if device != "cpu":
        pytest.skip("the PyTorch fallback is for CPU tensors")
    gen = torch.Generator().manual_seed(14)
    x = torch.rand(7, 12, generator=gen) - 0.5
    w = torch.rand(50, 12, generator=gen) - 0.5
    b = torch.rand(50, generator=gen) - 0.5
    target = torch.tensor([0, 49, -100, 3, 3, 17, 8])
    opts = dict(label_smoothing=0.1, lse_square_scale=0.01, softcap=6.0, return_z_loss=True, chunk_size=3)
    results = {}
    for interpret in ("1", "0"):
        monkeypatch.setenv("TRITON_INTERPRET", interpret)
        for reduction in ("sum", "none"):
            xx, ww, bb = (v.clone().requires_grad_() for v in (x, w, b))
            loss, z = liger_fused_linear_cross_entropy(xx, ww, target, bb, reduction=reduction, **opts)
            grads = torch.autograd.grad(loss, (xx, ww, bb), torch.full(loss.shape, 0.5))
            results[interpret, reduction] = (loss.detach(), z, *grads)
    for reduction in ("sum", "none"):
        assert_close(results["0", reduction], results["1", reduction], atol=1e-6, rtol=1e-5)


def test_fp32_accumulation_reduces_weight_gradient_error(device, seed):
    """``accum_dtype=torch.float32`` exists to change rounding, so it must measurably change it.

    With bf16 weights and many chunks, dW accumulated in bf16 is rounded once per chunk (its error grows
    with the number of chunks); fp32 accumulation rounds once, at the end. Reference-error checks cannot
    tell the two apart (both stay within a bf16 floor of the golden), so this checks the property itself.
    A zero weight makes every softmax exactly 1/V (V a power of two): each chunk's dlogits, and so each
    chunk's product, is exact, and the accumulation is the only rounding left to measure.
    """
    n_rows, hidden, vocab, chunk = 64, 8, 32, 2  # 32 chunks
    x = torch.randn(n_rows, hidden, device=device).to(torch.bfloat16)
    weight = torch.zeros(vocab, hidden, device=device, dtype=torch.bfloat16)
    target = torch.randint(0, vocab, (n_rows,), device=device)
    w64 = weight.double().requires_grad_()
    loss64 = F.cross_entropy(x.double() @ w64.T, target, reduction="sum")
    (golden,) = torch.autograd.grad(loss64, w64)

    def weight_grad_error(accum_dtype):
        w = weight.clone().requires_grad_()
        loss = liger_fused_linear_cross_entropy(
            x, w, target, reduction="sum", chunk_size=chunk, accum_dtype=accum_dtype
        )
        (dw,) = torch.autograd.grad(loss, w)
        return torch.linalg.vector_norm(dw.double() - golden).item()

    err = {"fp32": weight_grad_error(torch.float32), "bf16": weight_grad_error(None)}
    one_rounding = torch.linalg.vector_norm(golden.to(torch.bfloat16).double() - golden).item()
    # fp32 accumulation: the golden rounded once to bf16 (fp32's own rounding is 2^16 times smaller).
    assert err["fp32"] <= 1.01 * one_rounding, f"fp32-accumulated dW is not the golden rounded once: {err}"
    assert err["fp32"] <= 0.5 * err["bf16"], f"fp32 accumulation does not reduce dW's error: {err}"


@pytest.mark.parametrize("vocab", [97, 128])
def test_chunk_logits_rows_start_aligned(device, monkeypatch, vocab):
    """The chunk's logits reach the cross entropy kernel with rows LOGITS_ROW_ALIGN elements apart
    whatever the vocabulary (an odd one packed end to end would start rows off 16-byte alignment), and
    the padding columns change nothing: the loss and gradients of rows packed end to end."""
    from liger_kernel.ops import fused_linear_cross_entropy as flce

    strides = []
    kernel_rows = flce.cross_entropy_rows

    def spy(logits, *args, **kwargs):
        strides.append(logits.stride())
        return kernel_rows(logits, *args, **kwargs)

    monkeypatch.setattr(flce, "cross_entropy_rows", spy)
    gen = torch.Generator(device=device).manual_seed(3)
    x = torch.randn(10, 16, device=device, generator=gen)
    w = torch.randn(vocab, 16, device=device, generator=gen) * 0.3
    target = torch.randint(0, vocab, (10,), device=device, generator=gen)
    results = {}
    aligned = flce.LOGITS_ROW_ALIGN
    for align in (aligned, 1):
        monkeypatch.setattr(flce, "LOGITS_ROW_ALIGN", align)
        strides.clear()
        results[align] = run(
            liger_fused_linear_cross_entropy, x, w, None, target, torch.tensor(1.0), ("x", "weight"),
            chunk_size=4, return_z_loss=True,
        )  # fmt: skip
        assert len(strides) == 3  # 10 rows in chunks of 4
        expected_stride = -(-vocab // align) * align
        assert all(s == (expected_stride, 1) for s in strides), strides
    # fp32 tolerances, not bit equality: packed rows of an odd vocabulary take the cross entropy kernel's
    # peeled path (another summation order), and on a GPU the stride may pick another GEMM kernel.
    assert_close(results[aligned], results[1])
