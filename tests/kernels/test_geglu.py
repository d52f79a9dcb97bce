"""GeGLU: LigerGEGLUMLP against Hugging Face's GemmaMLP / Gemma2MLP and liger_geglu against eager
gelu(a) * b, for the tanh approximation and exact (erf) GELU.

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
from transformers import Gemma2Config, GemmaConfig
from transformers.models.gemma.modeling_gemma import GemmaMLP
from transformers.models.gemma2.modeling_gemma2 import Gemma2MLP

from liger_kernel.ops.geglu import gelu_activation
from liger_kernel.transformers import LigerGEGLUMLP
from liger_kernel.transformers.functional import liger_geglu
from liger_testing import assert_close, assert_close_to_reference
from liger_testing import strategies as lst
from liger_testing.profiles import scaled

# exp(-a) overflows to inf for very negative a, which the kernels rely on (1 / (1 + inf) = 0); Triton's
# interpreter computes with NumPy, which warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")

_TINY = dict(num_attention_heads=1, num_key_value_heads=1, head_dim=2)  # attention is never built


def gemma_config(hidden: int, intermediate: int, act: str = "gelu_pytorch_tanh"):
    """Gemma (field ``hidden_act``) for the tanh names; Gemma 2 (``hidden_activation``) for exact "gelu",
    since GemmaConfig rewrites "gelu" to the tanh approximation."""
    if act in ("gelu", "gelu_python"):
        return Gemma2Config(
            hidden_size=hidden, intermediate_size=intermediate, hidden_activation=act, **_TINY
        )
    return GemmaConfig(hidden_size=hidden, intermediate_size=intermediate, hidden_act=act, **_TINY)


def hf_mlp(config):
    return Gemma2MLP(config) if isinstance(config, Gemma2Config) else GemmaMLP(config)


def run_mlp(config, x: torch.Tensor, dtype: torch.dtype, init_seed: int | None = None) -> dict:
    return _mlp_check.run_mlp(hf_mlp, LigerGEGLUMLP, config, x, dtype, init_seed, grad_seed=13)


# Sizes start at 8 (and 2 tokens): below that a gradient is a sum of one or two products, and which of
# two equally valid roundings lands closer to the golden is a coin toss that no factor bounds.
@pytest.mark.parametrize("act", ["gelu_pytorch_tanh", "gelu_new", "gelu"])
@given(
    lead=lst.shapes(min_dims=1, max_dims=2, min_side=2, max_side=4),
    hidden=lst.dims(min_value=8, max_value=48),
    intermediate=lst.dims(min_value=8, max_value=100),
    dtype=lst.dtypes(),
    init_seed=lst.seeds(),
    data=st.data(),
)
@scaled(0.48)  # 12 examples under the ci profile
def test_mlp_matches_gemma_mlp(device, act, lead, hidden, intermediate, dtype, init_seed, data):
    x = data.draw(lst.tensors((*lead, hidden), dtype, device=device))
    r = run_mlp(gemma_config(hidden, intermediate, act), x, dtype, init_seed)
    assert r["liger"]["y"].dtype == dtype
    assert set(r["liger"]) == set(r["reference"])
    assert_mlp_close(r, dtype)


@pytest.mark.parametrize("act", ["gelu_pytorch_tanh", "gelu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_mlp_one_token_and_1d_input(device, seed, act, dtype):
    config = gemma_config(37, 91, act)
    for x in (torch.randn(1, 37), torch.randn(37)):
        r = run_mlp(config, x.to(device=device, dtype=dtype), dtype)
        assert r["liger"]["dx"].shape == x.shape
        assert_mlp_close(r, dtype)


@given(dtype=lst.dtypes(), init_seed=lst.seeds(), data=st.data())
@scaled(0.32)  # 8 examples under the ci profile
def test_mlp_non_contiguous_input(device, dtype, init_seed, data):
    x = data.draw(lst.tensors((3, 2, 29), dtype, device=device, contiguous=False))
    assert not x.is_contiguous()
    r = run_mlp(gemma_config(29, 67), x, dtype, init_seed)
    assert_mlp_close(r, dtype)


@pytest.mark.parametrize("act", ["gelu_fast", "gelu_python_tanh", "gelu_accurate", "gelu_python"])
def test_other_names_of_the_same_functions(device, seed, act):
    r = run_mlp(gemma_config(24, 40, act), torch.randn(3, 24, device=device), torch.float32)
    assert_mlp_close(r, torch.float32)


def test_gemma_config_gelu_means_tanh_like_gemma_mlp(device, seed):
    """Whatever the installed GemmaConfig makes of hidden_act="gelu" (transformers 5.24 rewrites it to
    the tanh approximation, 5.17 keeps exact GELU), the module computes what GemmaMLP computes."""
    config = GemmaConfig(hidden_size=16, intermediate_size=40, hidden_act="gelu", **_TINY)
    r = run_mlp(config, torch.randn(4, 16, device=device), torch.float32)
    assert_mlp_close(r, torch.float32)


def test_mlp_float64(device, seed):
    x = torch.randn(2, 3, 19, device=device, dtype=torch.float64)
    r = run_mlp(gemma_config(19, 45), x, torch.float64)
    assert_close(r["liger"], r["golden"])


def test_mlp_frozen_weights(device, seed):
    config = gemma_config(24, 56)
    ref, liger = GemmaMLP(config).to(device), LigerGEGLUMLP(config).to(device)
    liger.load_state_dict(ref.state_dict())
    ref.requires_grad_(False)
    liger.requires_grad_(False)
    x = torch.randn(5, 24, device=device, requires_grad=True)
    grad = torch.randn(5, 24, device=device)
    assert_close(
        torch.autograd.grad(liger(x), x, grad), torch.autograd.grad(ref(x), x, grad), atol=1e-5, rtol=1e-5
    )


def test_loads_and_round_trips_hugging_face_state_dict():
    config = gemma_config(12, 30)
    ref, liger = GemmaMLP(config), LigerGEGLUMLP(config)
    liger.load_state_dict(ref.state_dict(), strict=True)
    ref.load_state_dict(liger.state_dict(), strict=True)
    assert list(liger.state_dict()) == list(ref.state_dict())
    assert liger.gate_proj.bias is None


@pytest.mark.parametrize("act", ["gelu_pytorch_tanh", "gelu"])
def test_compile_fullgraph_no_graph_break(device, seed, act):
    backend = "inductor" if device == "cuda" else "aot_eager"
    liger = LigerGEGLUMLP(gemma_config(32, 72, act)).to(device)
    x = torch.randn(2, 3, 32, device=device, requires_grad=True)
    grad = torch.randn(2, 3, 32, device=device)
    params = [x, *liger.parameters()]
    expected = torch.autograd.grad(liger(x), params, grad)
    compiled = torch.compile(liger, fullgraph=True, backend=backend)
    assert_close(torch.autograd.grad(compiled(x), params, grad), expected, atol=1e-5, rtol=1e-5)

    approximate = "tanh" if act == "gelu_pytorch_tanh" else "none"
    a = torch.randn(4, 50, device=device, requires_grad=True)
    b = torch.randn(4, 50, device=device, requires_grad=True)
    f = torch.compile(
        lambda a, b: liger_geglu(a, b, approximate).square().sum(), fullgraph=True, backend=backend
    )
    eager = (F.gelu(a, approximate=approximate) * b).square().sum()
    assert_close(torch.autograd.grad(f(a, b), [a, b]), torch.autograd.grad(eager, [a, b]))


# --- the fused product alone ---------------------------------------------------------------------------


def run_product(a: torch.Tensor, b: torch.Tensor, approximate: str) -> dict:
    eager = lambda u, v: F.gelu(u, approximate=approximate) * v  # noqa: E731
    return _mlp_check.run_product(lambda u, v: liger_geglu(u, v, approximate), eager, a, b)


@pytest.mark.parametrize("approximate", ["tanh", "none"])
@given(
    # Rows of at least 16: on a handful of elements the max error of two equally good roundings (ours,
    # PyTorch's) can differ by 2 ulps either way, which no factor of the other's error bounds.
    shape=lst.shapes(min_dims=1, max_dims=3, max_side=40, last_dim=lst.dims(16, 300), max_numel=4096),
    dtype=lst.dtypes(),
    data=st.data(),
)
@scaled(0.6)  # 15 examples under the ci profile
def test_function_matches_eager(device, approximate, shape, dtype, data):
    a = data.draw(lst.tensors(shape, dtype, device=device, low=-8.0, high=8.0))
    b = data.draw(lst.tensors(shape, dtype, device=device))
    r = run_product(a, b, approximate)
    assert r["liger"]["c"].dtype == dtype and r["liger"]["c"].shape == a.shape
    assert_product_close(r, a, b, gelu_activation(approximate))


@pytest.mark.parametrize("approximate", ["tanh", "none"])
@given(dtype=lst.dtypes(), data=st.data())
@scaled(0.24)  # 6 examples under the ci profile
def test_function_non_contiguous(device, approximate, dtype, data):
    a = data.draw(lst.tensors((5, 3, 33), dtype, device=device, contiguous=False))
    b = data.draw(lst.tensors((5, 3, 33), dtype, device=device, contiguous=False))
    r = run_product(a, b, approximate)
    assert_product_close(r, a, b, gelu_activation(approximate))


@pytest.mark.parametrize("approximate", ["tanh", "none"])
def test_function_several_tiles(device, seed, approximate):
    a = torch.randn(9, 2100, device=device) * 3
    r = run_product(a, torch.randn(9, 2100, device=device), approximate)
    assert_close_to_reference(r["liger"], r["reference"], r["golden"])


def test_mlp_several_kernel_tiles(device, seed):
    r = run_mlp(gemma_config(16, 2100), torch.randn(2, 5, 16, device=device), torch.float32)
    assert_mlp_close(r, torch.float32)


def test_function_column_slices_of_one_buffer(device, seed):
    ab = torch.randn(7, 2 * 130, device=device)
    r = run_product(ab[:, :130], ab[:, 130:], "tanh")
    assert_close_to_reference(r["liger"], r["reference"], r["golden"])


@pytest.mark.parametrize("approximate", ["tanh", "none"])
def test_function_extreme_values(device, approximate):
    a = torch.tensor([-1e4, -90.0, -20.0, -5.0, -1e-6, 0.0, 1e-6, 5.0, 20.0, 90.0, 1e4], device=device)
    r = run_product(a, torch.ones_like(a), approximate)
    for leaf in r["liger"].values():
        assert torch.isfinite(leaf).all()
    assert_close_to_reference(r["liger"], r["reference"], r["golden"])


# --- errors --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("act", ["relu", "silu", "gelu_10", "quick_gelu"])
def test_rejects_other_activations(act):
    with pytest.raises(ValueError, match=f"config.hidden_act.*{act}"):
        LigerGEGLUMLP(GemmaConfig(hidden_size=8, intermediate_size=16, hidden_act=act, **_TINY))
    with pytest.raises(ValueError, match=f"config.hidden_activation.*{act}"):
        LigerGEGLUMLP(Gemma2Config(hidden_size=8, intermediate_size=16, hidden_activation=act, **_TINY))


@pytest.mark.parametrize("missing", ["hidden_size", "intermediate_size"])
def test_rejects_config_missing_a_size(missing):
    fields = {"hidden_size": 8, "intermediate_size": 16, "hidden_act": "gelu_pytorch_tanh"}
    del fields[missing]
    with pytest.raises(ValueError, match=f"config.{missing}"):
        LigerGEGLUMLP(SimpleNamespace(**fields))


def test_rejects_config_without_activation():
    with pytest.raises(ValueError, match="config.hidden_act.*None"):
        LigerGEGLUMLP(SimpleNamespace(hidden_size=8, intermediate_size=16))


def test_function_rejects_bad_inputs(device):
    a = torch.randn(3, 4, device=device)
    with pytest.raises(ValueError, match="approximate"):
        liger_geglu(a, a, approximate="sigmoid")
    with pytest.raises(ValueError, match="same shape"):
        liger_geglu(a, torch.randn(4, 3, device=device))
    with pytest.raises(TypeError, match="same dtype"):
        liger_geglu(a, a.half())
    with pytest.raises(TypeError, match="floating-point"):
        liger_geglu(torch.ones(3, 4, dtype=torch.int32, device=device), a)
    with pytest.raises(ValueError, match="one device"):
        liger_geglu(a, torch.randn(3, 4, device="meta"))
