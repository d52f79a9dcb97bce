"""Fused residual add + RMSNorm against a float64 implementation of its formula and against the unfused
layer it replaces (``x + residual`` in the model's dtype, then LlamaRMSNorm / GemmaRMSNorm / our
LigerRMSNorm), with liger_testing's reference-error mode.

Rounding points, the same in the fused op and the unfused layer: h = x + residual is rounded once to
the inputs' dtype (where the unfused add rounds it), and the norm reads that rounded h. The gradient
of x and residual is the norm's gradient plus the incoming gradient of h, summed in fp32 and rounded
once (the unfused layer rounds the norm's gradient first, then the sum: the fused op is as accurate or
better, which reference-error mode allows).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_rms_norm import EPS, dw_terms, dx_terms, reference_module, terms_floor
from transformers.models.gemma.modeling_gemma import GemmaRMSNorm
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from liger_kernel.ops import LigerFusedAddRMSNormFunction
from liger_kernel.ops.utils import interpreter_enabled
from liger_kernel.transformers import LigerFusedAddRMSNorm, LigerRMSNorm
from liger_kernel.transformers.functional import liger_fused_add_rms_norm, liger_rms_norm
from liger_testing import (
    assert_close,
    assert_close_to_reference,
    assert_modules_equivalent,
    bounds_checked,
)
from liger_testing import strategies as lst

_MODE_KWARGS = {
    "llama": {},
    "gemma": {"offset": 1.0, "casting_mode": "gemma", "init_fn": "zeros"},
    "none": {"offset": 0.5, "casting_mode": "none"},
}


def golden(x, residual, weight, offset):
    """The formula in float64: (y, h) and the float64 leaves, without any rounding."""
    x64, r64, w64 = (t.detach().double().requires_grad_() for t in (x, residual, weight))
    h = x64 + r64
    y = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + EPS) * (offset + w64)
    return (y, h), (x64, r64, w64)


def _grads(outs, leaves, cotangents):
    return dict(zip(("dx", "dresidual", "dw"), torch.autograd.grad(outs, leaves, cotangents)))


def run_all(casting_mode, x, residual, weight):
    """Outputs and gradients of the fused op, the unfused layer in x's dtype and the float64 formula,
    with the same incoming gradients of y and h."""
    hidden, dtype = x.shape[-1], x.dtype
    ref_norm, _ = reference_module(casting_mode, hidden)
    ref_norm = ref_norm.to(device=x.device, dtype=dtype)
    fused = LigerFusedAddRMSNorm(hidden, eps=EPS, **_MODE_KWARGS[casting_mode]).to(x.device, dtype)
    with torch.no_grad():
        ref_norm.weight.copy_(weight)
        fused.weight.copy_(weight)
    gen = torch.Generator().manual_seed(7)
    dy, dh = (torch.randn(x.shape, generator=gen).to(x.device) for _ in range(2))

    results = {}
    for name in ("liger", "reference"):
        xi, ri = (t.detach().clone().requires_grad_() for t in (x, residual))
        if name == "liger":
            y, h = fused(xi, ri)
            module = fused
        else:
            h = xi + ri
            y = ref_norm(h)
            module = ref_norm
        grads = _grads((y, h), (xi, ri, module.weight), (dy.to(y.dtype), dh.to(h.dtype)))
        results[name] = {"y": y.detach(), "h": h.detach(), **grads}
    outs, leaves = golden(x, residual, weight, fused.offset)
    results["golden"] = {"y": outs[0].detach(), "h": outs[1].detach(), **_grads(outs, leaves, (dy, dh))}
    results["dy"], results["dh"], results["offset"] = dy, dh, fused.offset
    return results


def dh_floor(r, x, residual, weight, actual):
    """Relative floor for dx = dresidual = dnorm + dh_out: one rounding of the terms it sums, not of the
    (possibly cancelled) result: the norm's gradient terms (test_rms_norm.dx_terms) plus |dh_out|."""
    h = x.double() + residual.double()
    terms = dx_terms(h, r["dy"], r["offset"], weight) + r["dh"].double().reshape(-1, x.shape[-1]).abs()
    return terms_floor(terms, r["golden"]["dx"], actual)


def check_results(r, x, residual, weight):
    pick = ("y", "h")
    assert_close_to_reference(*({k: r[a][k] for k in pick} for a in ("liger", "reference", "golden")))
    h = x.double() + residual.double()  # dw sums over rows: a floor from its terms (test_rms_norm.dw_terms)
    assert_close_to_reference(
        r["liger"]["dw"], r["reference"]["dw"], r["golden"]["dw"], terms_scale=dw_terms(h, r["dy"]), msg="dw"
    )
    for grad in ("dx", "dresidual"):
        assert_close_to_reference(
            r["liger"][grad],
            r["reference"][grad],
            r["golden"][grad],
            floor=dh_floor(r, x, residual, weight, r["liger"][grad]),
            msg=grad,
        )


@pytest.mark.parametrize("casting_mode", ["llama", "gemma", "none"])
@given(
    shape=lst.shapes(min_dims=1, max_dims=2, max_side=5),
    # hidden=1 is left out as in test_rms_norm: the norm's gradient there is all cancellation.
    hidden=lst.dims(min_value=2, max_value=600),
    dtype=lst.dtypes(),
    data=st.data(),
)
def test_matches_reference(device, casting_mode, shape, hidden, dtype, data):
    x = data.draw(lst.tensors((*shape, hidden), dtype, device=device))
    residual = data.draw(lst.tensors((*shape, hidden), dtype, device=device))
    weight = data.draw(lst.tensors((hidden,), dtype, device=device, low=-2.0, high=2.0))
    r = run_all(casting_mode, x, residual, weight)
    assert r["liger"]["y"].dtype == r["reference"]["y"].dtype
    assert r["liger"]["h"].dtype == r["reference"]["h"].dtype == dtype
    check_results(r, x, residual, weight)


# (bf16 here costs ~5 s of interpreter time: GPU only; the Hypothesis test covers bf16 at small widths)
@pytest.mark.parametrize("dtype", [torch.float32, pytest.param(torch.bfloat16, marks=pytest.mark.gpu)])
def test_large_row_and_many_rows(device, seed, dtype):
    """A row wider than any forward block of small rows, and more rows than programs in the backward."""
    hidden = 4099 if device == "cpu" else 8195
    rows = 21 if device == "cpu" else 3001
    x, residual = (torch.randn(rows, hidden, device=device).to(dtype) for _ in range(2))
    weight = torch.randn(hidden, device=device).to(dtype)
    check_results(run_all("llama", x, residual, weight), x, residual, weight)


@pytest.mark.parametrize("casting_mode", ["llama", "gemma", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_rounds_h_where_the_unfused_add_does(device, seed, casting_mode, dtype):
    """h is ``x + residual`` rounded to the dtype, and y is the norm of that rounded h: bit for bit what
    our LigerRMSNorm gives for the returned h (the same arithmetic on the same values). Normalizing the
    fp32 sum instead (one rounding fewer than the unfused layer) would pass the float64 comparison,
    which only bounds errors from above; this catches it."""
    rows, hidden = 16, 40
    x, residual = ((3 * torch.randn(rows, hidden, device=device)).to(dtype) for _ in range(2))
    weight = torch.randn(hidden, device=device).to(dtype)
    offset, mode = _MODE_KWARGS[casting_mode].get("offset", 0.0), casting_mode
    y, h = liger_fused_add_rms_norm(x, residual, weight, EPS, offset, mode)
    if interpreter_enabled() and dtype == torch.bfloat16:
        # the interpreter converts fp32 to bf16 by truncation, torch's add rounds to nearest: one ulp
        assert_close(h, x + residual, atol=0.0, rtol=torch.finfo(dtype).eps)
    else:
        assert torch.equal(h, x + residual)
    assert torch.equal(y, liger_rms_norm(h, weight, EPS, offset, mode))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("norm_cls", [LlamaRMSNorm, GemmaRMSNorm, LigerRMSNorm])
def test_module_can_replace_the_unfused_layer(device, seed, dtype, norm_cls):
    """liger_testing.assert_modules_equivalent: the fused module against ``x + residual`` followed by
    Hugging Face's norm (or our unfused LigerRMSNorm), run in the model's dtype; outputs (y and h), the
    gradients of x and residual and of the weight."""
    hidden = 48
    gemma = norm_cls is GemmaRMSNorm
    eps_attr = "eps" if gemma else "variance_epsilon"

    class Unfused(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = norm_cls(hidden, eps=EPS)

        def forward(self, x, residual):
            h = x + residual
            return self.norm(h), h

    class Fused(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = LigerFusedAddRMSNorm(hidden, eps=EPS, **(_MODE_KWARGS["gemma"] if gemma else {}))

        def forward(self, x, residual):
            return self.norm(x, residual)

    reference = Unfused()
    torch.nn.init.normal_(reference.norm.weight)
    assert getattr(reference.norm, eps_attr) == EPS
    candidate = Fused()
    candidate.load_state_dict(reference.state_dict())
    x, residual = (torch.randn(3, 5, hidden, device=device, requires_grad=True) for _ in range(2))
    assert_modules_equivalent(reference.to(device), candidate.to(device), x, residual, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_row_strided_inputs(device, seed, dtype):
    """x and residual as column slices of wider buffers (a row stride beyond the hidden size) give what
    their contiguous copies give, bit for bit, outputs and gradients."""
    hidden = 40
    x_wide = torch.randn(6, hidden + 8, device=device).to(dtype).requires_grad_()
    r_wide = torch.randn(6, hidden + 3, device=device).to(dtype).requires_grad_()
    norm = LigerFusedAddRMSNorm(hidden, eps=EPS).to(device, dtype)
    dy, dh = (torch.randn(6, hidden, device=device).to(dtype) for _ in range(2))
    x, residual = x_wide[:, :hidden], r_wide[:, 3:]
    assert x.stride(0) != hidden and residual.stride(0) != hidden
    strided = norm(x, residual)
    grads = torch.autograd.grad(strided, (x_wide, r_wide), (dy, dh))
    xc, rc = (t.detach().contiguous().requires_grad_() for t in (x, residual))
    dense = norm(xc, rc)
    dense_grads = torch.autograd.grad(dense, (xc, rc), (dy, dh))
    # Bit for bit under the interpreter. Compiled, the row reduction's order follows the load layout the
    # compiler picks, and a row stride of 43 elements (not a multiple of 16 bytes) rules out the vector
    # loads of the contiguous copy: an ulp here and there (seen on the H200, fp32), so the dtype's
    # tolerances there.
    tol = dict(atol=0, rtol=0) if device == "cpu" else {}
    assert_close(strided, dense, **tol)
    assert_close((grads[0][:, :hidden], grads[1][:, 3:]), dense_grads, **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pytorch_fallback_matches_the_formula(monkeypatch, seed, dtype):
    """CPU tensors with the interpreter off take the PyTorch path: the same rounding points."""
    import liger_kernel.ops.fused_add_rms_norm as fused_ops
    import liger_kernel.ops.rms_norm as rms_ops

    monkeypatch.setattr(fused_ops, "use_triton", lambda name, t: False)
    monkeypatch.setattr(rms_ops, "use_triton", lambda name, t: False)
    x, residual = (torch.randn(5, 24).to(dtype) for _ in range(2))
    weight = (1 + 0.1 * torch.randn(24)).to(dtype)
    r = run_all("llama", x, residual, weight)
    check_results(r, x, residual, weight)


def test_unused_outputs_get_no_gradient_work(device, seed):
    """Only h used (y's gradient None): x and residual get h's gradient unchanged, the weight none.
    Only y used: dx = dresidual = the norm's gradient."""
    x, residual = (torch.randn(4, 24, device=device, requires_grad=True) for _ in range(2))
    weight = torch.randn(24, device=device, requires_grad=True)
    y, h = liger_fused_add_rms_norm(x, residual, weight, EPS)
    dh = torch.randn(4, 24, device=device)
    dx, dr, dw = torch.autograd.grad(h, (x, residual, weight), dh, allow_unused=True)
    assert torch.equal(dx, dh) and torch.equal(dr, dh) and dw is None

    y, h = liger_fused_add_rms_norm(x, residual, weight, EPS)
    dy = torch.randn(4, 24, device=device)
    dx, dr, dw = torch.autograd.grad(y, (x, residual, weight), dy)
    h_ref = (x + residual).detach().requires_grad_()
    dh_ref, dw_ref = torch.autograd.grad(liger_rms_norm(h_ref, weight, EPS), (h_ref, weight), dy)
    assert_close({"dx": dx, "dr": dr, "dw": dw}, {"dx": dh_ref, "dr": dh_ref, "dw": dw_ref})


def test_same_tensor_as_both_inputs(device, seed):
    """``f(x, x)``: autograd sums the two gradients (h = 2x)."""
    x = torch.randn(3, 20, device=device, requires_grad=True)
    weight = torch.randn(20, device=device)
    y, h = liger_fused_add_rms_norm(x, x, weight, EPS)
    dy, dh = torch.randn(3, 20, device=device), torch.randn(3, 20, device=device)
    (dx,) = torch.autograd.grad((y, h), x, (dy, dh))
    x_ref = x.detach().requires_grad_()
    h_ref = x_ref + x_ref
    (dx_ref,) = torch.autograd.grad((liger_rms_norm(h_ref, weight, EPS), h_ref), x_ref, (dy, dh))
    assert_close(dx, dx_ref)


def test_mixed_input_dtypes_promote(device, seed):
    """A bf16 branch output added to an fp32 residual stream: h is fp32 (promoted), each input's
    gradient comes back in its own dtype."""
    x = torch.randn(3, 16, device=device).to(torch.bfloat16).requires_grad_()
    residual = torch.randn(3, 16, device=device, requires_grad=True)
    weight = torch.randn(16, device=device)
    y, h = liger_fused_add_rms_norm(x, residual, weight, EPS)
    assert h.dtype == y.dtype == torch.float32
    assert torch.equal(h, x.float() + residual)
    dx, dr = torch.autograd.grad(y.sum() + h.sum(), (x, residual))
    assert (dx.dtype, dr.dtype) == (torch.bfloat16, torch.float32)
    assert_close(dx, dr.to(torch.bfloat16))


def test_function_adapter_and_module_api(device, seed):
    """Liger Kernel 0.8's names: ``LigerFusedAddRMSNormFunction.apply(X, R, W, eps, offset, casting_mode,
    in_place)`` returns (Y, S), as the functional and the module do."""
    x, residual = (torch.randn(2, 3, 32, device=device) for _ in range(2))
    module = LigerFusedAddRMSNorm(32, eps=1e-5, in_place=True).to(device)
    torch.nn.init.normal_(module.weight)
    y, s = LigerFusedAddRMSNormFunction.apply(x, residual, module.weight, 1e-5, 0.0, "llama", True)
    assert_close((y, s), module(x, residual))
    assert_close((y, s), liger_fused_add_rms_norm(x, residual, module.weight, 1e-5))
    assert "casting_mode='llama'" in repr(module)
    assert module.state_dict().keys() == LlamaRMSNorm(32).state_dict().keys()


@pytest.mark.parametrize(
    "make_inputs, error, match",
    [
        (lambda d: (torch.randn(2, 8, device=d), torch.randn(2, 7, device=d), torch.ones(8, device=d)),
         ValueError, "residual must have the shape of x"),
        (lambda d: (torch.randn(2, 8, device=d), torch.randn(1, 8, device=d), torch.ones(8, device=d)),
         ValueError, "residual must have the shape of x"),
        (lambda d: (torch.randn(2, 8, device=d), torch.ones(2, 8, dtype=torch.int32, device=d),
                    torch.ones(8, device=d)), TypeError, "residual must be"),
        (lambda d: (torch.randn(2, 8, device=d), torch.randn(2, 8, device=d), torch.ones(7, device=d)),
         ValueError, "weight must have shape"),
        (lambda d: (torch.randn(2, 8, device=d), torch.randn(2, 8, device="meta"), torch.ones(8, device=d)),
         ValueError, "one device"),
    ],
)  # fmt: skip
def test_bad_input_is_named(device, make_inputs, error, match):
    x, residual, weight = make_inputs(device)
    with pytest.raises(error, match=match):
        liger_fused_add_rms_norm(x, residual, weight, EPS)


def test_bad_module_arguments():
    with pytest.raises(ValueError, match="casting_mode"):
        LigerFusedAddRMSNorm(8, casting_mode="fp8")
    with pytest.raises(ValueError, match="init_fn"):
        LigerFusedAddRMSNorm(8, init_fn="randn")


@pytest.mark.parametrize("weight_grad", [True, False])
def test_writes_stay_in_bounds(device, seed, weight_grad):
    """Every buffer the launch code allocates sits between guard regions (many rows: several backward
    programs, each with its row of dW shares; one row of them without a weight gradient)."""
    x, residual = (torch.randn(70, 33, device=device, requires_grad=True) for _ in range(2))
    weight = torch.randn(33, device=device, requires_grad=weight_grad)
    with bounds_checked("fused_add_rms_norm") as guard:
        y, h = liger_fused_add_rms_norm(x, residual, weight, EPS)
        torch.autograd.backward((y, h), (torch.randn_like(y), torch.randn_like(h)))
    assert len(guard.buffers) >= 5  # y, h, rstd, dh, dW shares
    assert torch.isfinite(x.grad).all() and torch.isfinite(residual.grad).all()
