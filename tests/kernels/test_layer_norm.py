"""LayerNorm against torch.nn.LayerNorm, using liger_testing.

Numerical checks are in reference-error mode: the kernel's error against a float64 golden may be at
most twice the error of nn.LayerNorm in the same dtype (plus a floor of one rounding of the dtype).
"""

import os

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from liger_kernel.transformers import LigerLayerNorm
from liger_kernel.transformers.functional import liger_layer_norm
from liger_testing import assert_close, assert_close_to_reference, bounds_checked
from liger_testing import strategies as lst
from liger_testing.profiles import scaled

EPS = 1e-5


def run_all(x, weight, bias, *, weight_grad=True, bias_grad=True):
    """y and every gradient from nn.LayerNorm, LigerLayerNorm and a float64 golden, as dicts."""
    hidden = x.shape[-1]
    has_bias = bias is not None
    ref = torch.nn.LayerNorm(hidden, eps=EPS, bias=has_bias).to(device=x.device, dtype=weight.dtype)
    liger = LigerLayerNorm(hidden, eps=EPS, bias=True if has_bias else None).to(
        device=x.device, dtype=weight.dtype
    )
    with torch.no_grad():
        for m in (ref, liger):
            m.weight.copy_(weight)
            m.weight.requires_grad_(weight_grad)
            if has_bias:
                m.bias.copy_(bias)
                m.bias.requires_grad_(bias_grad)

    results = {}
    grad_out = None
    for name, module in (("reference", ref), ("liger", liger)):
        xi = x.detach().clone().requires_grad_()
        y = module(xi)
        if grad_out is None:
            grad_out = torch.randn(y.shape, generator=torch.Generator().manual_seed(7)).to(y)
        y.backward(grad_out)
        out = {"y": y.detach(), "dx": xi.grad}
        if weight_grad:
            out["dw"] = module.weight.grad
        if has_bias and bias_grad:
            out["db"] = module.bias.grad
        results[name] = out

    x64 = x.detach().double().requires_grad_()
    w64 = weight.detach().double().requires_grad_()
    b64 = bias.detach().double().requires_grad_() if has_bias else None
    y = F.layer_norm(x64, (hidden,), w64, b64, EPS)
    y.backward(grad_out.double())
    golden = {"y": y.detach(), "dx": x64.grad}
    if weight_grad:
        golden["dw"] = w64.grad
    if has_bias and bias_grad:
        golden["db"] = b64.grad
    results["golden"] = golden
    return results


@pytest.mark.parametrize("has_bias", [True, False])
@given(
    shape=lst.shapes(min_dims=1, max_dims=2, max_side=5),
    # hidden 1 and 2 are left out: there x_hat is fixed (0, or ±1) whatever x is, so dx is exactly 0
    # and any fp32 kernel (with FMA contraction on the GPU) leaves rounding residue of order
    # eps32 * rstd * |dy * w|, which no bound relative to the (zero) result can admit.
    hidden=lst.dims(min_value=3, max_value=600),
    dtype=lst.dtypes(),
    data=st.data(),
)
@scaled(0.48)  # 12 examples under the ci profile
def test_matches_reference(device, has_bias, shape, hidden, dtype, data):
    x = data.draw(lst.tensors((*shape, hidden), dtype, device=device, special=True))
    weight = data.draw(lst.tensors((hidden,), dtype, device=device, low=-2.0, high=2.0))
    bias = data.draw(lst.tensors((hidden,), dtype, device=device)) if has_bias else None
    r = run_all(x, weight, bias)
    assert r["liger"]["y"].dtype == r["reference"]["y"].dtype
    assert_close_to_reference(r["liger"], r["reference"], r["golden"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_one_row(device, seed, dtype):
    x = (torch.randn(1, 333, device=device) * 3 + 1).to(dtype)
    weight = torch.randn(333, device=device).to(dtype)
    bias = torch.randn(333, device=device).to(dtype)
    r = run_all(x, weight, bias)
    assert_close_to_reference(r["liger"], r["reference"], r["golden"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_large_row_and_many_rows(device, seed, dtype):
    """A row wider than the packed-rows forward block, and more rows than backward programs."""
    hidden = 4099 if device == "cpu" else 8195
    rows = 37 if device == "cpu" else 3001
    x = (torch.randn(rows, hidden, device=device) + 2.0).to(dtype)  # a mean far from 0
    weight = torch.randn(hidden, device=device).to(dtype)
    bias = torch.randn(hidden, device=device).to(dtype)
    r = run_all(x, weight, bias)
    assert_close_to_reference(r["liger"], r["reference"], r["golden"])


@pytest.mark.parametrize("shape", [(16384, 4096), (4096, 1000), (513, 12288)])
@pytest.mark.gpu
def test_training_shapes_on_gpu(device, seed, shape):
    x = torch.randn(shape, device=device).to(torch.bfloat16)
    weight = torch.randn(shape[-1], device=device).to(torch.bfloat16)
    bias = torch.randn(shape[-1], device=device).to(torch.bfloat16)
    r = run_all(x, weight, bias)
    assert_close_to_reference(r["liger"], r["reference"], r["golden"])


@given(dtype=lst.dtypes(), data=st.data())
@scaled(0.24)  # 6 examples under the ci profile
def test_non_contiguous_input(device, dtype, data):
    x = data.draw(lst.tensors((3, 4, 70), dtype, device=device, contiguous=False))
    assert not x.is_contiguous()
    weight = data.draw(lst.tensors((70,), dtype, device=device))
    bias = data.draw(lst.tensors((70,), dtype, device=device))
    r = run_all(x, weight, bias)
    assert_close_to_reference(r["liger"], r["reference"], r["golden"])


def test_sliced_rows_keep_their_stride(device, seed):
    base = torch.randn(6, 2 * 96, device=device)
    x = base[:, :96]
    r = run_all(x, torch.randn(96, device=device), torch.randn(96, device=device))
    assert_close_to_reference(r["liger"], r["reference"], r["golden"])


@pytest.mark.parametrize("weight_grad, bias_grad", [(True, False), (False, True), (False, False)])
def test_frozen_parameters(device, seed, weight_grad, bias_grad):
    x = torch.randn(5, 33, device=device)
    r = run_all(
        x,
        torch.randn(33, device=device),
        torch.randn(33, device=device),
        weight_grad=weight_grad,
        bias_grad=bias_grad,
    )
    assert_close_to_reference(r["liger"], r["reference"], r["golden"])


def test_fp32_parameters_bf16_input_like_torch(device, seed):
    """nn.LayerNorm keeps the input's dtype for y and dx and the parameters' dtype for their grads."""
    x = torch.randn(4, 40, device=device).to(torch.bfloat16)
    ref = torch.nn.LayerNorm(40, eps=EPS).to(device)
    with torch.no_grad():
        ref.weight.normal_()
        ref.bias.normal_()
    liger = LigerLayerNorm(40, eps=EPS, bias=True).to(device)
    liger.load_state_dict(ref.state_dict())
    grad = torch.randn(4, 40, device=device).to(torch.bfloat16)
    out = {}
    for name, m in (("ref", ref), ("liger", liger), ("golden", torch.nn.LayerNorm(40, eps=EPS))):
        if name == "golden":
            m.load_state_dict(ref.state_dict())
            m = m.to(device=device, dtype=torch.float64)
        xi = x.clone().to(m.weight.dtype if name == "golden" else x.dtype).requires_grad_()
        if name == "ref" and device == "cuda":
            # torch's CUDA kernel rejects bf16 input with fp32 parameters; its CPU semantics are
            # fp32 math with y and dx in the input's dtype, which this reproduces.
            y = m(xi.float()).to(xi.dtype)
        else:
            y = m(xi)
        y.backward(grad.to(y.dtype))
        out[name] = {"y": y.detach(), "dx": xi.grad, "dw": m.weight.grad, "db": m.bias.grad}
    for key in out["ref"]:
        assert out["liger"][key].dtype == out["ref"][key].dtype, key
    assert out["liger"]["y"].dtype == torch.bfloat16 and out["liger"]["dw"].dtype == torch.float32
    # torch's CPU kernel rounds dw through bf16 here; compare accuracies, not bits.
    assert_close_to_reference(out["liger"], out["ref"], out["golden"])


def test_state_dict_round_trips_with_nn_layer_norm(device):
    ref = torch.nn.LayerNorm(24)  # bias=True by default
    torch.nn.init.normal_(ref.weight)
    torch.nn.init.normal_(ref.bias)
    liger = LigerLayerNorm(24, bias=True)
    assert liger.state_dict().keys() == ref.state_dict().keys()
    liger.load_state_dict(ref.state_dict())
    assert_close({"w": liger.weight, "b": liger.bias}, {"w": ref.weight, "b": ref.bias})

    back = torch.nn.LayerNorm(24)
    back.load_state_dict(liger.state_dict())
    assert_close(back.weight, ref.weight)

    no_bias = torch.nn.LayerNorm(24, bias=False)
    liger_no_bias = LigerLayerNorm(24, bias=None)
    assert liger_no_bias.bias is None
    assert liger_no_bias.state_dict().keys() == no_bias.state_dict().keys()
    liger_no_bias.load_state_dict(no_bias.state_dict())


def test_state_dict_bias_into_module_without_bias(device):
    """A zero bias (as LigerLayerNorm of earlier Liger Kernel versions saved) loads; a non-zero one is refused."""
    liger = LigerLayerNorm(8, bias=None)
    zero = {"weight": torch.full((8,), 2.0), "bias": torch.zeros(8)}
    liger.load_state_dict(zero)
    assert_close(liger.weight, zero["weight"])
    with pytest.raises(RuntimeError, match="bias=True"):
        liger.load_state_dict({"weight": torch.ones(8), "bias": torch.ones(8)})
    with pytest.raises(RuntimeError, match="bias=True"):
        liger.load_state_dict({"weight": torch.ones(8), "bias": torch.ones(8)}, strict=False)


def test_module_options(device):
    m = LigerLayerNorm(10, eps=1e-3, init_fn="zeros")
    assert_close(m.weight.detach(), torch.zeros(10))
    assert m.variance_epsilon == m.eps == 1e-3
    m.eps = 1e-4
    assert m.variance_epsilon == 1e-4
    # Liger Kernel 0.8's default: a zero bias Parameter (bias=False too); bias=None builds none.
    assert_close(m.bias.detach(), torch.zeros(10))
    assert [n for n, _ in m.named_parameters()] == ["weight", "bias"]
    assert LigerLayerNorm(10, bias=None).bias is None
    assert [n for n, _ in LigerLayerNorm(10, bias=None).named_parameters()] == ["weight"]
    assert [n for n, _ in LigerLayerNorm(10, bias=True).named_parameters()] == ["weight", "bias"]
    with pytest.raises(ValueError, match="init_fn"):
        LigerLayerNorm(10, init_fn="normal")
    with pytest.raises(ValueError, match="hidden_size"):
        LigerLayerNorm(0)


@pytest.mark.parametrize("has_bias", [True, False])
def test_compile_fullgraph_no_graph_break(device, seed, has_bias):
    backend = "inductor" if device == "cuda" else "aot_eager"
    liger = LigerLayerNorm(48, bias=True if has_bias else None).to(device)
    with torch.no_grad():
        liger.weight.normal_()
        if has_bias:
            liger.bias.normal_()
    x = torch.randn(2, 3, 48, device=device, requires_grad=True)

    def f(inp):
        return (liger(inp * 2.0) * torch.arange(48, device=device)).sum()

    params = [p for p in liger.parameters()]
    compiled = torch.compile(f, fullgraph=True, backend=backend)
    grads = torch.autograd.grad(compiled(x), [x, *params])
    grads_eager = torch.autograd.grad(f(x), [x, *params])
    assert_close(grads, grads_eager)


def test_functional_matches_module(device, seed):
    x = torch.randn(3, 50, device=device)
    w, b = torch.randn(50, device=device), torch.randn(50, device=device)
    m = LigerLayerNorm(50, eps=1e-5, bias=True).to(device)
    with torch.no_grad():
        m.weight.copy_(w)
        m.bias.copy_(b)
    assert_close(liger_layer_norm(x, w, b, 1e-5), m(x))
    assert_close(liger_layer_norm(x, w, None, 1e-5), F.layer_norm(x, (50,), w, None, 1e-5))


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="compares interpreter and fallback")
def test_cpu_fallback_when_interpreter_off(monkeypatch, seed):
    """With the interpreter off, CPU tensors take the PyTorch path: same math, and a warning."""
    x = torch.randn(4, 30, requires_grad=True)
    m = LigerLayerNorm(30, bias=True)
    grad = torch.randn(4, 30)

    def run():
        y = m(x)
        return {"y": y, "grads": torch.autograd.grad(y, [x, m.weight, m.bias], grad)}

    kernel = run()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr("liger_kernel.ops.utils._warned_fallback", set())
    with pytest.warns(RuntimeWarning, match="running the equivalent PyTorch code"):
        fallback = run()
    assert_close(fallback, kernel)


def _t(d, *shape, dtype=torch.float32, dev=None):
    return torch.randn(*shape, device=dev or d).to(dtype)


@pytest.mark.parametrize(
    "make_inputs, error, match",
    [
        (lambda d: (_t(d, 2, 8), _t(d, 7), None), ValueError, "weight must have shape"),
        (lambda d: (_t(d, 2, 8), _t(d, 8), _t(d, 9)), ValueError, "bias must have shape"),
        (lambda d: (torch.ones(2, 8, dtype=torch.int32, device=d), _t(d, 8), None), TypeError, "x must be"),
        (lambda d: (_t(d, 2, 8), torch.ones(8, dtype=torch.int64, device=d), None), TypeError, "weight"),
        (lambda d: (_t(d, 2, 8), _t(d, 8), torch.ones(8, dtype=torch.int64, device=d)), TypeError, "bias"),
        (lambda d: (_t(d, 2, 8), _t(d, 8, dev="meta"), None), ValueError, "one device"),
        (lambda d: (_t(d, 2, 0), _t(d, 0), None), ValueError, "non-empty last dim"),
    ],
)
def test_bad_input_is_named(device, make_inputs, error, match):
    x, w, b = make_inputs(device)
    with pytest.raises(error, match=match):
        liger_layer_norm(x, w, b, EPS)


def test_negative_eps_is_refused():
    with pytest.raises(ValueError, match="eps"):
        liger_layer_norm(torch.randn(2, 8), torch.ones(8), None, -1.0)


@pytest.mark.parametrize(
    ("weight_grad", "bias_grad"), [(True, True), (True, False), (False, True), (False, False)]
)
def test_writes_stay_in_bounds(device, weight_grad, bias_grad):
    """Every buffer the launch code allocates sits between guard regions. Many rows: several backward
    programs, each with its row of dW and dB shares; without either gradient the shares' buffer has one
    row per plane, and a program that wrote its share anyway would write past it."""
    x = torch.randn(70, 33, device=device, requires_grad=True)
    weight = torch.randn(33, device=device, requires_grad=weight_grad)
    bias = torch.randn(33, device=device, requires_grad=bias_grad)
    with bounds_checked("layer_norm") as guard:
        y = liger_layer_norm(x, weight, bias, 1e-5)
        y.backward(torch.randn_like(y))
    assert len(guard.buffers) >= 4  # y, mean, rstd, dx, the shares
    assert torch.isfinite(x.grad).all()
