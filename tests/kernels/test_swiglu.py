"""SwiGLU: LigerSwiGLUMLP against Hugging Face's LlamaMLP and liger_swiglu against eager silu(a) * b.

Checks are in reference-error mode: the kernel's error against a float64 golden (the same module or
math in float64) may be at most twice the error of the same-dtype PyTorch computation it replaces.
"""

from types import SimpleNamespace

import _mlp_check
import pytest
import torch
import torch.nn.functional as F
from _mlp_check import assert_mlp_close, assert_product_close
from hypothesis import given
from hypothesis import strategies as st
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaMLP

from liger_kernel.transformers import LigerSwiGLUMLP
from liger_kernel.transformers.functional import liger_swiglu
from liger_testing import assert_close, assert_close_to_reference, bounds_checked
from liger_testing import strategies as lst
from liger_testing.profiles import scaled

# exp(-a) overflows to inf for very negative a, which the kernels rely on (1 / (1 + inf) = 0); Triton's
# interpreter computes with NumPy, which warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")


def llama_config(hidden: int, intermediate: int, bias: bool = False, act: str = "silu") -> LlamaConfig:
    return LlamaConfig(
        hidden_size=hidden,
        intermediate_size=intermediate,
        mlp_bias=bias,
        hidden_act=act,
        num_attention_heads=1,
        num_key_value_heads=1,
        head_dim=2,  # attention is not built; a tiny even head_dim passes the config's checks
    )


def run_mlp(config, x: torch.Tensor, dtype: torch.dtype, init_seed: int | None = None) -> dict:
    return _mlp_check.run_mlp(LlamaMLP, LigerSwiGLUMLP, config, x, dtype, init_seed, grad_seed=11)


# Sizes start at 8 (and 2 tokens): below that a gradient is a sum of one or two products, and which of
# two equally valid roundings lands closer to the golden is a coin toss that no factor bounds.
@given(
    lead=lst.shapes(min_dims=1, max_dims=2, min_side=2, max_side=4),
    hidden=lst.dims(min_value=8, max_value=48),
    intermediate=lst.dims(min_value=8, max_value=100),
    bias=st.booleans(),
    dtype=lst.dtypes(),
    init_seed=lst.seeds(),
    data=st.data(),
)
def test_mlp_matches_llama_mlp(device, lead, hidden, intermediate, bias, dtype, init_seed, data):
    x = data.draw(lst.tensors((*lead, hidden), dtype, device=device))
    r = run_mlp(llama_config(hidden, intermediate, bias), x, dtype, init_seed)
    assert r["liger"]["y"].dtype == dtype
    assert set(r["liger"]) == set(r["reference"])
    assert_mlp_close(r, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_mlp_one_token_and_1d_input(device, seed, dtype):
    config = llama_config(37, 91, bias=True)
    for x in (torch.randn(1, 37), torch.randn(37)):
        r = run_mlp(config, x.to(device=device, dtype=dtype), dtype)
        assert r["liger"]["dx"].shape == x.shape
        assert_mlp_close(r, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mlp_several_kernel_tiles(device, seed, dtype):
    """An intermediate size wider than one column block and more rows than one row block: the kernel
    runs several programs, and the in-place backward must keep each one's tile to itself."""
    r = run_mlp(
        llama_config(16, 2100, bias=True), torch.randn(2, 5, 16).to(device=device, dtype=dtype), dtype
    )
    assert_mlp_close(r, dtype)


@given(dtype=lst.dtypes(), init_seed=lst.seeds(), data=st.data())
@scaled(0.32)  # 8 examples under the ci profile
def test_mlp_non_contiguous_input(device, dtype, init_seed, data):
    x = data.draw(lst.tensors((3, 2, 29), dtype, device=device, contiguous=False))
    assert not x.is_contiguous()
    r = run_mlp(llama_config(29, 67), x, dtype, init_seed)
    assert_mlp_close(r, dtype)


def test_mlp_float64(device, seed):
    config = llama_config(19, 45, bias=True)
    x = torch.randn(2, 3, 19, device=device, dtype=torch.float64)
    r = run_mlp(config, x, torch.float64)
    assert_close(r["liger"], r["golden"])


def test_mlp_zero_tokens(device, seed):
    config = llama_config(16, 40)
    r = run_mlp(config, torch.randn(0, 16, device=device), torch.float32)
    assert r["liger"]["y"].shape == (0, 16)
    assert_close(r["liger"], r["reference"])


@pytest.mark.parametrize("frozen", ["x", "weights", "down_only"])
def test_mlp_partial_gradients(device, seed, frozen):
    """Only the gradients autograd asks for are computed; each one still matches Hugging Face."""
    config = llama_config(24, 56, bias=True)
    ref = LlamaMLP(config).to(device)
    liger = LigerSwiGLUMLP(config).to(device)
    liger.load_state_dict(ref.state_dict())
    for module in (ref, liger):
        if frozen == "weights":
            module.requires_grad_(False)
        elif frozen == "down_only":
            module.gate_proj.requires_grad_(False)
            module.up_proj.requires_grad_(False)
    x = torch.randn(5, 24, device=device, requires_grad=frozen == "weights")
    grad = torch.randn(5, 24, device=device)
    wanted = lambda m: [t for t in (x, *m.parameters()) if t.requires_grad]  # noqa: E731
    got = torch.autograd.grad(liger(x), wanted(liger), grad)
    expected = torch.autograd.grad(ref(x), wanted(ref), grad)
    assert len(got) == len(expected) > 0
    assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_second_backward_through_the_same_graph(device, seed):
    """The backward reuses the saved gate/up activations as gradient buffers, unless the graph is
    retained: then it overwrites copies, and a second backward gets the same gradients."""
    liger = LigerSwiGLUMLP(llama_config(16, 40)).to(device)
    x = torch.randn(3, 16, device=device, requires_grad=True)
    y = liger(x).sum()
    (first,) = torch.autograd.grad(y, x, retain_graph=True)
    y.backward()
    assert_close(x.grad, first)


def test_hooked_projection_runs_the_projection_module(device, seed):
    """A hook on a projection (PEFT, ZeRO-3, probes) means the module must really be called."""
    config = llama_config(20, 44)
    ref = LlamaMLP(config).to(device)
    liger = LigerSwiGLUMLP(config).to(device)
    liger.load_state_dict(ref.state_dict())
    calls = []
    liger.gate_proj.register_forward_hook(lambda mod, inp, out: calls.append(out.shape))
    x = torch.randn(4, 20, device=device, requires_grad=True)
    y = liger(x)
    assert calls == [torch.Size([4, 44])]
    grad = torch.randn_like(y)
    assert_close(torch.autograd.grad(y, x, grad), torch.autograd.grad(ref(x), x, grad), atol=1e-5, rtol=1e-5)


def test_autocast_matches_llama_mlp(device, seed):
    config = llama_config(24, 52)
    ref = LlamaMLP(config).to(device)
    liger = LigerSwiGLUMLP(config).to(device)
    liger.load_state_dict(ref.state_dict())
    x = torch.randn(6, 24, device=device)
    with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
        y, y_ref = liger(x), ref(x)
    assert y.dtype == y_ref.dtype == torch.bfloat16
    golden = LlamaMLP(config).to(device=device, dtype=torch.float64)
    golden.load_state_dict(ref.state_dict())
    assert_close_to_reference(y, y_ref, golden(x.double()))


def test_loads_and_round_trips_hugging_face_state_dict(device):
    for bias in (False, True):
        config = llama_config(12, 30, bias=bias)
        ref, liger = LlamaMLP(config), LigerSwiGLUMLP(config)
        liger.load_state_dict(ref.state_dict(), strict=True)
        ref.load_state_dict(liger.state_dict(), strict=True)
        assert list(liger.state_dict()) == list(ref.state_dict())


@pytest.mark.parametrize("bias", [False, True])
def test_compile_fullgraph_no_graph_break(device, seed, bias):
    backend = "inductor" if device == "cuda" else "aot_eager"
    config = llama_config(32, 72, bias=bias)
    liger = LigerSwiGLUMLP(config).to(device)
    x = torch.randn(2, 3, 32, device=device, requires_grad=True)
    grad = torch.randn(2, 3, 32, device=device)
    params = [x, *liger.parameters()]
    expected = torch.autograd.grad(liger(x), params, grad)
    compiled = torch.compile(liger, fullgraph=True, backend=backend)
    got = torch.autograd.grad(compiled(x), params, grad)
    assert_close(got, expected, atol=1e-5, rtol=1e-5)

    a = torch.randn(4, 50, device=device, requires_grad=True)
    b = torch.randn(4, 50, device=device, requires_grad=True)
    f = torch.compile(lambda a, b: liger_swiglu(a, b).square().sum(), fullgraph=True, backend=backend)
    assert_close(
        torch.autograd.grad(f(a, b), [a, b]), torch.autograd.grad((F.silu(a) * b).square().sum(), [a, b])
    )


# --- the fused product alone ---------------------------------------------------------------------------


def run_product(a: torch.Tensor, b: torch.Tensor) -> dict:
    return _mlp_check.run_product(liger_swiglu, lambda u, v: F.silu(u) * v, a, b)


@given(
    # Rows of at least 16: on a handful of elements the max error of two equally good roundings (ours,
    # PyTorch's) can differ by 2 ulps either way, which no factor of the other's error bounds.
    shape=lst.shapes(min_dims=1, max_dims=3, max_side=40, last_dim=lst.dims(16, 300), max_numel=4096),
    dtype=lst.dtypes(),
    data=st.data(),
)
def test_function_matches_eager(device, shape, dtype, data):
    a = data.draw(lst.tensors(shape, dtype, device=device, low=-8.0, high=8.0))
    b = data.draw(lst.tensors(shape, dtype, device=device))
    r = run_product(a, b)
    assert r["liger"]["c"].dtype == dtype and r["liger"]["c"].shape == a.shape
    assert_product_close(r, a, b, "silu")


@given(dtype=lst.dtypes(), data=st.data())
@scaled(0.32)  # 8 examples under the ci profile
def test_function_non_contiguous(device, dtype, data):
    a = data.draw(lst.tensors((5, 3, 33), dtype, device=device, contiguous=False))
    b = data.draw(lst.tensors((5, 3, 33), dtype, device=device, contiguous=False))
    r = run_product(a, b)
    assert_product_close(r, a, b, "silu")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_function_several_tiles(device, seed, dtype):
    a = (torch.randn(9, 2100) * 3).to(device=device, dtype=dtype)
    r = run_product(a, torch.randn(9, 2100).to(device=device, dtype=dtype))
    assert_close_to_reference(r["liger"], r["reference"], r["golden"])


def test_writes_stay_in_bounds(device, seed):
    """c, da and db (and the MLP's in-place buffers) sit between guard regions: a column or row mask that
    lets one write through past the end is an assertion naming the kernel."""
    with bounds_checked("glu (silu)") as guard:
        r = run_product(torch.randn(5, 33, device=device), torch.randn(5, 33, device=device))
        config = llama_config(12, 37)
        mlp = run_mlp(config, torch.randn(3, 12, device=device), torch.float32)
    assert len(guard.buffers) >= 3
    assert_close_to_reference(r["liger"], r["reference"], r["golden"])
    assert_mlp_close(mlp, torch.float32)


def test_function_column_slices_of_one_buffer(device, seed):
    """gate and up as the two halves of one fused projection: strided rows, no copy needed."""
    ab = torch.randn(7, 2 * 130, device=device)
    r = run_product(ab[:, :130], ab[:, 130:])
    assert_close_to_reference(r["liger"], r["reference"], r["golden"])


def test_function_extreme_values(device):
    a = torch.tensor([-1e4, -90.0, -20.0, -1e-6, 0.0, 1e-6, 20.0, 90.0, 1e4], device=device)
    r = run_product(a, torch.ones_like(a))
    for leaf in r["liger"].values():
        assert torch.isfinite(leaf).all()
    assert_close_to_reference(r["liger"], r["reference"], r["golden"])


# --- errors --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("act", ["gelu", "relu", "gelu_pytorch_tanh"])
def test_rejects_other_activations(act):
    with pytest.raises(ValueError, match=f"config.hidden_act.*{act}"):
        LigerSwiGLUMLP(llama_config(8, 16, act=act))


@pytest.mark.parametrize("missing", ["hidden_size", "intermediate_size"])
def test_rejects_config_missing_a_size(missing):
    fields = {"hidden_size": 8, "intermediate_size": 16, "hidden_act": "silu"}
    del fields[missing]
    with pytest.raises(ValueError, match=f"config.{missing}"):
        LigerSwiGLUMLP(SimpleNamespace(**fields))


def test_accepts_swish_and_plain_namespace_config():
    mlp = LigerSwiGLUMLP(SimpleNamespace(hidden_size=8, intermediate_size=16, hidden_act="swish"))
    assert mlp.gate_proj.bias is None and mlp.intermediate_size == 16
    assert LigerSwiGLUMLP(llama_config(8, 16), intermediate_size=6).up_proj.out_features == 6


def test_function_rejects_bad_inputs(device):
    a = torch.randn(3, 4, device=device)
    with pytest.raises(ValueError, match="same shape"):
        liger_swiglu(a, torch.randn(3, 5, device=device))
    with pytest.raises(TypeError, match="same dtype"):
        liger_swiglu(a, a.double())
    with pytest.raises(TypeError, match="floating-point"):
        liger_swiglu(a, torch.ones(3, 4, dtype=torch.int64, device=device))
    with pytest.raises(ValueError, match="one device"):
        liger_swiglu(a, torch.randn(3, 4, device="meta"))
    with pytest.raises(TypeError, match="torch.Tensor"):
        liger_swiglu(a, [[1.0] * 4] * 3)
