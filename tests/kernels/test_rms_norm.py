"""RMSNorm against Hugging Face's LlamaRMSNorm / GemmaRMSNorm and an eager reference, using liger_testing.

Every check is in reference-error mode: the kernel's error against a float64 golden may be at most
twice the error of the same-dtype module it replaces (plus a floor of one rounding of the dtype).
"""

import os

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers.models.gemma.modeling_gemma import GemmaRMSNorm
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from liger_kernel.transformers import LigerRMSNorm
from liger_kernel.transformers.functional import liger_rms_norm
from liger_testing import (
    assert_close,
    assert_close_to_reference,
    assert_modules_equivalent,
    bounds_checked,
    default_floor,
    tolerances,
)
from liger_testing import strategies as lst

EPS = 1e-6


def golden_rms_norm(x, w, eps, offset):
    """The exact math in float64, without the roundings any casting mode adds."""
    x64 = x.detach().double().requires_grad_()
    w64 = w.detach().double().requires_grad_()
    y = x64 * torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + eps) * (offset + w64)
    return y, x64, w64


def eager_none(x, w, eps, offset):
    """casting_mode="none": plain eager arithmetic in the input dtype."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * (offset + w)


class _EagerNone(torch.nn.Module):
    def __init__(self, hidden, eps, offset):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(hidden))
        self.eps, self.offset = eps, offset

    def forward(self, x):
        return eager_none(x, self.weight, self.eps, self.offset)


def reference_module(casting_mode: str, hidden: int):
    """(module replaced, LigerRMSNorm kwargs) for a casting mode."""
    if casting_mode == "llama":
        return LlamaRMSNorm(hidden, eps=EPS), {}
    if casting_mode == "gemma":
        return GemmaRMSNorm(hidden, eps=EPS), {"offset": 1.0, "casting_mode": "gemma", "init_fn": "zeros"}
    return _EagerNone(hidden, EPS, 0.5), {"offset": 0.5, "casting_mode": "none"}


def run_all(casting_mode, x, weight, dtype):
    """Forward and gradients of the reference module, the Liger module and the float64 golden."""
    hidden = x.shape[-1]
    ref, kwargs = reference_module(casting_mode, hidden)
    ref = ref.to(device=x.device, dtype=dtype)
    liger = LigerRMSNorm(hidden, eps=EPS, **kwargs).to(device=x.device, dtype=dtype)
    with torch.no_grad():
        ref.weight.copy_(weight)
        liger.weight.copy_(weight)

    results = {}
    grad_out = None
    for name, module in (("reference", ref), ("liger", liger)):
        xi = x.detach().clone().requires_grad_()
        y = module(xi)
        if grad_out is None:
            grad_out = torch.randn(y.shape, generator=torch.Generator().manual_seed(7)).to(y)
        y.backward(grad_out)
        results[name] = {"y": y.detach(), "dx": xi.grad, "dw": module.weight.grad}

    y, x64, w64 = golden_rms_norm(x, weight, EPS, liger.offset)
    y.backward(grad_out.double())
    results["golden"] = {"y": y.detach(), "dx": x64.grad, "dw": w64.grad}
    results["grad_out"], results["offset"] = grad_out, liger.offset
    return results


@pytest.mark.parametrize("casting_mode", ["llama", "gemma", "none"])
@given(
    shape=lst.shapes(min_dims=1, max_dims=2, max_side=5),
    # hidden=1 is left out: there n = ±1 and dx = rstd * dn * (1 - n^2) is all cancellation, so any
    # fp32 implementation's error scales with eps32 * |dn| * rstd, not with |dx|; no relative bound holds.
    hidden=lst.dims(min_value=2, max_value=600),
    dtype=lst.dtypes(),
    data=st.data(),
)
def test_matches_reference(device, casting_mode, shape, hidden, dtype, data):
    x = data.draw(lst.tensors((*shape, hidden), dtype, device=device))
    weight = data.draw(lst.tensors((hidden,), dtype, device=device, low=-2.0, high=2.0))
    r = run_all(casting_mode, x, weight, dtype)
    assert r["liger"]["y"].dtype == r["reference"]["y"].dtype
    check_results(r, x, weight)


def dx_floor(r, x, weight):
    """Relative floor for dx: one rounding of the terms dx is the difference of, not of dx itself.

    dx = rstd * (dn - n * mean(n * dn)) with n = x * rstd, dn = dy * (offset + w): when the two terms
    nearly cancel (a short row, a weight that tracks x), one ulp of the terms is many ulps of dx.
    Any order of operations rounds the terms, so the floor is eps * their scale / max|dx|.
    """
    terms = dx_terms(x, r["grad_out"], r["offset"], weight)
    return terms_floor(terms, r["golden"]["dx"], r["liger"]["dx"])


def dx_terms(x, dy, offset, weight):
    """|the two terms| of the norm's dx, rstd * max(|dn|, |n * mean(n * dn)|), per element (rows, hidden),
    in float64."""
    x64 = x.detach().double().reshape(-1, x.shape[-1])
    dy = dy.double().reshape(x64.shape)
    rstd = torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + EPS)
    n = x64 * rstd
    dn = dy * (offset + weight.detach().double())
    c = (n * dn).mean(-1, keepdim=True)
    return rstd * torch.maximum(dn.abs(), (n * c).abs())


def terms_floor(terms, golden, actual):
    """The relative floor of one rounding of ``terms`` (actual's dtype), relative to max|golden|."""
    scale = golden.abs().max().item()
    floor = default_floor(actual)
    return max(floor, floor * terms.max().item() / scale) if scale > 0 else floor


def dw_terms(x, dy):
    """dw sums dy * n over the rows (times rstd's rounding of n in each casting mode): the scale of its
    terms, sum over rows of |dy * n| per column, in float64. When they cancel (a short column of rows,
    random signs), one rounding of them is many ulps of dw, in any summation order: the kernel's
    per-program partial sums and torch's reduction land on different sides of the golden."""
    x64 = x.detach().double().reshape(-1, x.shape[-1])
    n = x64 * torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + EPS)
    return (dy.double().reshape(x64.shape) * n).abs().sum(0)


def check_results(r, x, weight):
    assert_close_to_reference(*(r[a]["y"] for a in ("liger", "reference", "golden")))
    assert_close_to_reference(
        r["liger"]["dw"], r["reference"]["dw"], r["golden"]["dw"], terms_scale=dw_terms(x, r["grad_out"])
    )
    assert_close_to_reference(
        r["liger"]["dx"], r["reference"]["dx"], r["golden"]["dx"], floor=dx_floor(r, x, weight)
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_large_row_and_many_rows(device, seed, dtype):
    """A row wider than any forward block of small rows, and more rows than programs in the backward."""
    hidden = 4099 if device == "cpu" else 8195
    rows = 37 if device == "cpu" else 3001
    x = torch.randn(rows, hidden, device=device).to(dtype)
    weight = torch.randn(hidden, device=device).to(dtype)
    r = run_all("llama", x, weight, dtype)
    assert_close_to_reference(r["liger"], r["reference"], r["golden"])


@given(dtype=lst.dtypes(), data=st.data())
def test_non_contiguous_input(device, dtype, data):
    x = data.draw(lst.tensors((3, 4, 70), dtype, device=device, contiguous=False))
    assert not x.is_contiguous()
    weight = data.draw(lst.tensors((70,), dtype, device=device))
    r = run_all("llama", x, weight, dtype)
    assert_close_to_reference(r["liger"], r["reference"], r["golden"])


def test_sliced_rows_keep_their_stride(device, seed):
    """A slice of the hidden dim is a strided view; the kernel must read it without mixing rows."""
    base = torch.randn(6, 2 * 96, device=device)
    x = base[:, :96]
    weight = torch.randn(96, device=device)
    r = run_all("llama", x, weight, torch.float32)
    assert_close_to_reference(r["liger"], r["reference"], r["golden"])


def test_fp32_weight_bf16_input_promotes_like_llama(device, seed):
    x = torch.randn(4, 40, device=device).to(torch.bfloat16)
    ref = LlamaRMSNorm(40).to(device)
    liger = LigerRMSNorm(40).to(device)
    y_ref, y = ref(x), liger(x)
    assert y.dtype == y_ref.dtype == torch.float32
    # n is rounded to bf16 before the fp32 product, so one bf16 rounding separates the two.
    atol, rtol = tolerances(torch.bfloat16)
    assert_close(y, y_ref, atol=atol, rtol=rtol)


def test_weight_without_grad(device, seed):
    x = torch.randn(5, 33, device=device, requires_grad=True)
    liger = LigerRMSNorm(33).to(device).requires_grad_(False)
    ref = LlamaRMSNorm(33).to(device)
    grad = torch.randn(5, 33, device=device)
    (dx,) = torch.autograd.grad(liger(x), x, grad)
    (dx_ref,) = torch.autograd.grad(ref(x), x, grad)
    assert_close(dx, dx_ref)


def test_loads_hugging_face_state_dict(device):
    ref = LlamaRMSNorm(24)
    torch.nn.init.normal_(ref.weight)
    liger = LigerRMSNorm(24)
    liger.load_state_dict(ref.state_dict())
    assert_close(liger.weight, ref.weight)

    gemma = GemmaRMSNorm(24)
    liger_gemma = LigerRMSNorm(24, offset=1.0, casting_mode="gemma", init_fn="zeros")
    assert liger_gemma.state_dict().keys() == gemma.state_dict().keys()


def test_compile_fullgraph_no_graph_break(device, seed):
    backend = "inductor" if device == "cuda" else "aot_eager"
    liger = LigerRMSNorm(48).to(device)
    x = torch.randn(2, 3, 48, device=device, requires_grad=True)

    def f(inp):
        return liger(inp * 2.0).sum()

    compiled = torch.compile(f, fullgraph=True, backend=backend)
    loss = compiled(x)
    (dx,) = torch.autograd.grad(loss, x)
    loss_eager = f(x)
    (dx_eager,) = torch.autograd.grad(loss_eager, x)
    assert_close({"loss": loss, "dx": dx}, {"loss": loss_eager, "dx": dx_eager})


def test_functional_matches_module(device, seed):
    x = torch.randn(3, 50, device=device)
    w = torch.randn(50, device=device)
    m = LigerRMSNorm(50, eps=1e-5).to(device)
    with torch.no_grad():
        m.weight.copy_(w)
    assert_close(liger_rms_norm(x, w, 1e-5), m(x))


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="compares interpreter and fallback")
def test_cpu_fallback_when_interpreter_off(monkeypatch, seed):
    """With the interpreter off, CPU tensors take the PyTorch path: same math, and a warning."""
    x = torch.randn(4, 30, requires_grad=True)
    m = LigerRMSNorm(30)
    y_kernel = m(x)
    (dx_kernel,) = torch.autograd.grad(y_kernel.sum(), x)

    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr("liger_kernel.ops.utils._warned_fallback", set())
    with pytest.warns(RuntimeWarning, match="running the equivalent PyTorch code"):
        y_torch = m(x)
    (dx_torch,) = torch.autograd.grad(y_torch.sum(), x)
    assert_close({"y": y_torch, "dx": dx_torch}, {"y": y_kernel, "dx": dx_kernel})


@pytest.mark.parametrize(
    "make_inputs, error, match",
    [
        (
            lambda d: (torch.randn(2, 8, device=d), torch.ones(7, device=d)),
            ValueError,
            "weight must have shape",
        ),
        (
            lambda d: (torch.ones(2, 8, dtype=torch.int32, device=d), torch.ones(8, device=d)),
            TypeError,
            "x must be",
        ),
        (
            lambda d: (torch.randn(2, 8, device=d), torch.ones(8, dtype=torch.int64, device=d)),
            TypeError,
            "weight",
        ),
        (lambda d: (torch.randn(2, 8, device=d), torch.ones(8, device="meta")), ValueError, "one device"),
        (lambda d: (torch.randn(2, 0, device=d), torch.ones(0, device=d)), ValueError, "non-empty last dim"),
    ],
)
def test_bad_input_is_named(device, make_inputs, error, match):
    x, w = make_inputs(device)
    with pytest.raises(error, match=match):
        liger_rms_norm(x, w)


def test_bad_casting_mode():
    with pytest.raises(ValueError, match="casting_mode"):
        LigerRMSNorm(8, casting_mode="fp8")
    with pytest.raises(ValueError, match="casting_mode"):
        liger_rms_norm(torch.randn(2, 8), torch.ones(8), casting_mode="bf16")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_llama_mode_rounds_like_llama_in_forward_and_dw(device, seed, dtype):
    """Fidelity to LlamaRMSNorm's rounding points, which the float64 golden cannot check (dropping a
    rounding step only makes the kernel more accurate against it).

    LlamaRMSNorm rounds n = x * rstd to x's dtype before the product with the weight, and autograd's dW
    is then sum(dy * n_rounded). With a unit fp32 weight the output is n_rounded itself: every value must
    be representable in x's dtype, and dW must be the fp32 sum of dy * y, not of dy * (the fp32 n).
    The check uses the kernel's own y, so it holds for the interpreter's truncating bf16 conversion too.
    """
    rows, hidden = 64, 40
    x = (3 * torch.randn(rows, hidden, device=device)).to(dtype).requires_grad_()
    module = LigerRMSNorm(hidden, eps=EPS).to(device)  # fp32 weight of ones
    y = module(x)
    assert y.dtype == torch.float32
    assert torch.equal(y.to(dtype).float(), y), "llama mode must round x * rstd to x's dtype in the forward"

    dy = torch.randn(rows, hidden, device=device)
    y.backward(dy)
    terms = dy.double() * y.detach().double()
    expected = terms.sum(0)
    # An fp32 sum of `rows` terms errs by at most about rows * eps32 * sum|terms| per column; rounding n
    # or not is a change of about eps(dtype) / 2 * |terms| per term, far above that.
    atol = rows * torch.finfo(torch.float32).eps * terms.abs().sum(0).max().item()
    assert_close(module.weight.grad.double(), expected, atol=atol, rtol=0.0)


@pytest.mark.parametrize("casting_mode", ["gemma", "none"])
def test_gemma_and_none_modes_round_only_the_output(device, seed, casting_mode):
    """GemmaRMSNorm (and "none") compute y in fp32 and round it once: y is within one rounding of the
    float64 golden everywhere. Rounding n to bf16 first (llama's rounding point, in the wrong mode) adds a
    second rounding, which reference-error mode with its factor of 2 lets through."""
    rows, hidden = 64, 40
    x = (3 * torch.randn(rows, hidden, device=device)).to(torch.bfloat16)
    weight = torch.randn(hidden, device=device).to(torch.bfloat16)
    offset = 1.0 if casting_mode == "gemma" else 0.5
    y = liger_rms_norm(x, weight, EPS, offset=offset, casting_mode=casting_mode)
    golden, _, _ = golden_rms_norm(x, weight, EPS, offset)
    # One rounding: half an ulp, a whole one under the interpreter's truncation; either is at most
    # eps * |golden|. The fp32 arithmetic before it adds about 2^-16 of that.
    bound = torch.finfo(torch.bfloat16).eps * golden.detach().abs() * (1 + 2**-10)
    excess = (y.double() - golden.detach()).abs() - bound
    assert excess.max() <= 0, f"{int((excess > 0).sum())} elements are more than one rounding off"


@pytest.mark.parametrize("casting_mode", ["gemma", "none"])
def test_gemma_and_none_modes_take_dw_from_the_fp32_normalized_value(device, seed, casting_mode):
    """Only llama mode rounds n before dW = sum(dy * n); in the other modes n stays fp32. With an fp32
    weight (so dW itself is not rounded to bf16) dW is the fp32 sum of dy * n, n exact to fp32."""
    rows, hidden = 64, 40
    x = (3 * torch.randn(rows, hidden, device=device)).to(torch.bfloat16)
    weight = torch.randn(hidden, device=device, requires_grad=True)
    offset = 1.0 if casting_mode == "gemma" else 0.5
    y = liger_rms_norm(x, weight, EPS, offset=offset, casting_mode=casting_mode)
    dy = torch.randn(y.shape, device=device)
    (dw,) = torch.autograd.grad(y, weight, dy.to(y.dtype))
    x64 = x.double()
    terms = dy.to(y.dtype).double() * x64 * torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + EPS)
    # fp32 arithmetic: a few eps32 per term and rows * eps32 for the sum; rounding n to bf16 instead is
    # eps(bf16) / 2 per term, 2^15 times more.
    atol = rows * torch.finfo(torch.float32).eps * terms.abs().sum(0).max().item()
    assert_close(dw.double(), terms.sum(0), atol=atol, rtol=0.0)


def test_strided_views_in_and_out_of_the_kernel(device, seed):
    """x and the incoming gradient as column slices of wider buffers, passed as they are (``run_all``
    clones its input, which makes it contiguous): forward and backward must use each one's row stride."""
    base = torch.randn(6, 2 * 96, device=device, requires_grad=True)
    x = base[:, :96]
    weight = torch.randn(96, device=device, requires_grad=True)
    dy = torch.randn(6, 3 * 96, device=device)[:, 96:192]
    assert x.stride(0) == 192 and dy.stride(0) == 288
    y = liger_rms_norm(x, weight, EPS)
    dx, dw = torch.autograd.grad(y, (base, weight), dy)

    x_ref = x.detach().clone().requires_grad_()
    w_ref = weight.detach().clone().requires_grad_()
    y_ref = LlamaRMSNorm(96, eps=EPS).to(device)
    with torch.no_grad():
        y_ref.weight.copy_(w_ref)
    out = y_ref(x_ref)
    dx_ref, dw_ref = torch.autograd.grad(out, (x_ref, y_ref.weight), dy.contiguous())
    assert_close(
        {"y": y, "dx": dx[:, :96], "dw": dw}, {"y": out, "dx": dx_ref, "dw": dw_ref}, atol=1e-5, rtol=1e-5
    )
    assert (dx[:, 96:] == 0).all()


@pytest.mark.parametrize("weight_grad", [True, False])
def test_writes_stay_in_bounds(device, seed, weight_grad):
    """Every buffer the launch code allocates sits between guard regions. Many rows make the backward run
    several programs, each writing its row of dW shares: without a weight gradient there is one row of
    them, and a program that wrote its share anyway would write past it."""
    x = torch.randn(70, 33, device=device, requires_grad=True)
    weight = torch.randn(33, device=device, requires_grad=weight_grad)
    with bounds_checked("rms_norm") as guard:
        y = liger_rms_norm(x, weight, EPS)
        y.backward(torch.randn_like(y))
    assert len(guard.buffers) >= 4  # y, rstd, dx, dW shares
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_module_can_replace_llama_rms_norm(device, seed, dtype):
    """liger_testing.assert_modules_equivalent, as a downstream project replacing a module would use it."""
    reference = LlamaRMSNorm(48, eps=EPS)
    torch.nn.init.normal_(reference.weight)
    candidate = LigerRMSNorm(48, eps=EPS)
    candidate.load_state_dict(reference.state_dict())
    x = torch.randn(3, 5, 48, requires_grad=True)
    assert_modules_equivalent(reference.to(device), candidate.to(device), x.to(device), dtype=dtype)
