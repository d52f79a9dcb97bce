"""Llama 4's RoPE (interleaved pairs times a complex table) against Hugging Face's ``apply_rotary_emb``.

Reference-error mode: the kernel's error against the formula in float64 (complex128 on the same rounded
inputs) may be at most twice the error of Hugging Face's function run in the model's dtype (plus a
floor of one rounding), for both outputs and both gradients. Tables are random angles with a scale
(Hugging Face multiplies by ``attention_scaling``), batch-1 or per batch.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from liger_kernel.ops import LigerLlama4RopeFunction
from liger_kernel.ops.llama4_rope import llama4_rope
from liger_kernel.transformers import liger_llama4_text_rotary_pos_emb
from liger_kernel.transformers.functional import liger_llama4_rope
from liger_testing import assert_close, assert_close_to_reference, bounds_checked
from liger_testing import strategies as lst
from liger_testing.profiles import scaled

modeling_llama4 = pytest.importorskip("transformers.models.llama4.modeling_llama4")
apply_rotary_emb = modeling_llama4.apply_rotary_emb


def golden_rope(xq: torch.Tensor, xk: torch.Tensor, freqs_cis: torch.Tensor):
    """The formula in float64: each pair (x[2i], x[2i+1]) as a complex number times freqs_cis[..., i]."""
    table = freqs_cis.to(torch.complex128)[:, :, None, :]

    def rotate(x):
        pairs = torch.view_as_complex(x.double().reshape(*x.shape[:-1], -1, 2).contiguous())
        return torch.view_as_real(pairs * table).flatten(3)

    return rotate(xq), rotate(xk)


def hf_rope(xq, xk, freqs_cis):
    # view_as_complex needs a unit stride along head_dim, which Hugging Face's q and k (views of the
    # projections) always have; the strided inputs of the tests below get a dense copy here.
    return apply_rotary_emb(xq.contiguous(), xk.contiguous(), freqs_cis)


def run_all(q, k, freqs_cis):
    """Outputs and q, k gradients of Hugging Face's function, Liger's and the float64 golden, as dicts."""
    gen = torch.Generator().manual_seed(11)
    cotangents = (torch.randn(q.shape, generator=gen), torch.randn(k.shape, generator=gen))
    results = {}
    for name, fn, dtype in (
        ("reference", hf_rope, q.dtype),
        ("liger", liger_llama4_text_rotary_pos_emb, q.dtype),
        ("golden", golden_rope, torch.float64),
    ):
        # new leaves over the same storage (the kernel sees the inputs' strides); the golden sees the
        # same rounded values in float64
        qi = q.detach().to(dtype).requires_grad_()
        ki = k.detach().to(dtype).requires_grad_()
        qo, ko = fn(qi, ki, freqs_cis)
        grads = tuple(c.to(device=qo.device, dtype=o.dtype) for c, o in zip(cotangents, (qo, ko)))
        dq, dk = torch.autograd.grad((qo, ko), (qi, ki), grads)
        results[name] = {"q": qo.detach(), "k": ko.detach(), "dq": dq, "dk": dk}
    return results


def random_table(shape, device, scale=1.0, generator=None):
    angles = torch.rand(shape, generator=generator) * 200.0 - 100.0
    return torch.polar(torch.full(shape, scale), angles).to(device)


# head_dim = 2 * pairs: the pair block (a power of two) full, one short, one over.
head_dims = st.one_of(st.sampled_from([64, 128]), lst.dims(1, 40).map(lambda p: 2 * p))


@given(
    bsz=st.integers(1, 2),
    seq=lst.dims(1, 5),
    n_kv_heads=st.integers(1, 3),
    group=st.sampled_from([1, 5]),
    head_dim=head_dims,
    dtype=lst.dtypes(),
    per_batch_table=st.booleans(),
    scale=st.sampled_from([1.0, 0.75]),
    seed=lst.seeds(),
    data=st.data(),
)
@scaled(0.6)
def test_matches_reference(
    device, bsz, seq, n_kv_heads, group, head_dim, dtype, per_batch_table, scale, seed, data
):
    n_q_heads = n_kv_heads * group
    q = data.draw(lst.tensors((bsz, seq, n_q_heads, head_dim), dtype, device=device))
    k = data.draw(lst.tensors((bsz, seq, n_kv_heads, head_dim), dtype, device=device))
    table_shape = (bsz if per_batch_table else 1, seq, head_dim // 2)
    freqs_cis = random_table(table_shape, device, scale, torch.Generator().manual_seed(seed))
    r = run_all(q, k, freqs_cis)
    assert r["liger"]["q"].dtype == r["reference"]["q"].dtype == dtype
    assert_close_to_reference(r["liger"], r["reference"], r["golden"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_hugging_face_rotary_table(device, seed, dtype):
    """freqs_cis as Llama4TextRotaryEmbedding makes it, at position ids that skip around."""
    config = modeling_llama4.Llama4TextConfig(
        hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16
    )
    rotary = modeling_llama4.Llama4TextRotaryEmbedding(config).to(device)
    q = torch.randn(2, 6, 4, 16, device=device).to(dtype)
    k = torch.randn(2, 6, 2, 16, device=device).to(dtype)
    position_ids = torch.tensor([[0, 1, 2, 3, 4, 5], [7, 100, 3, 8191, 9, 9]], device=device)
    freqs_cis = rotary(q, position_ids)
    assert freqs_cis.dtype == torch.complex64 and freqs_cis.shape == (2, 6, 8)
    r = run_all(q, k, freqs_cis)
    assert_close_to_reference(r["liger"], r["reference"], r["golden"])


def test_many_heads_take_several_tiles(device, seed):
    """More heads than one tile holds (head_dim 256: 4 heads per tile), odd counts."""
    q = torch.randn(1, 2, 11, 256, device=device)
    k = torch.randn(1, 2, 5, 256, device=device)
    r = run_all(q, k, random_table((1, 2, 128), device))
    assert_close_to_reference(r["liger"], r["reference"], r["golden"])


@given(dtype=lst.dtypes(), data=st.data())
@scaled(0.2)
def test_non_contiguous_inputs(device, dtype, data):
    """Strided views everywhere, head_dim included (every other element of a larger buffer)."""
    q = data.draw(lst.tensors((2, 3, 4, 12), dtype, device=device, contiguous=False))
    k = data.draw(lst.tensors((2, 3, 2, 12), dtype, device=device, contiguous=False))  # 2 heads: head stride
    freqs_cis = random_table((2, 6, 6), device)[:, ::2]  # every other position of a longer table
    assert not (q.is_contiguous() or k.is_contiguous() or freqs_cis.is_contiguous())
    r = run_all(q, k, freqs_cis)
    assert_close_to_reference(r["liger"], r["reference"], r["golden"])


def test_slices_of_a_fused_projection_and_output_layout(device, seed):
    """q, k cut out of one qkv tensor (strided in the heads dim); outputs are new and laid out like
    dense inputs, which stay untouched."""
    qkv = torch.randn(2, 3, 4 + 2 * 2, 16, device=device)
    q, k = qkv[:, :, :4], qkv[:, :, 4:6]
    freqs_cis = random_table((1, 3, 8), device)
    r = run_all(q, k, freqs_cis)
    assert_close_to_reference(r["liger"], r["reference"], r["golden"])
    # head_dim 12 of a 16-wide buffer: a head stride that is not head_dim, in q and in k
    r = run_all(qkv[:, :, :4, :12], qkv[:, :, 4:6, :12], random_table((1, 3, 6), device))
    assert_close_to_reference(r["liger"], r["reference"], r["golden"])

    dense_q = torch.randn(2, 4, 3, 16, device=device).transpose(1, 2)  # (b, s, h, d), heads outermost
    dense_k = torch.randn(2, 2, 3, 16, device=device).transpose(1, 2)
    before = (dense_q.clone(), dense_k.clone())
    q_out, k_out = liger_llama4_rope(dense_q, dense_k, freqs_cis)
    assert q_out.stride() == dense_q.stride() and k_out.stride() == dense_k.stride()
    assert q_out.data_ptr() != dense_q.data_ptr() and k_out.data_ptr() != dense_k.data_ptr()
    assert_close((dense_q, dense_k), before)
    assert_close((q_out, k_out), apply_rotary_emb(dense_q, dense_k, freqs_cis))


def test_writes_stay_in_bounds(device, seed):
    """Outputs and gradients between guard regions: a head or column mask that lets a write through past
    the last head or past head_dim is an assertion naming the kernel."""
    q = torch.randn(2, 5, 3, 12, device=device)  # 3 query heads, head_dim 12: masks on both axes
    k = torch.randn(2, 5, 1, 12, device=device)
    with bounds_checked("llama4_rope") as guard:
        q, k = guard.guarded(q).requires_grad_(), guard.guarded(k).requires_grad_()
        r = run_all(q, k, random_table((2, 5, 6), device))
    assert len(guard.buffers) >= 6  # q, k and the kernel's outputs and gradients
    assert_close_to_reference(r["liger"], r["reference"], r["golden"])


def test_table_gets_no_gradient_and_only_q_may_need_one(device, seed):
    """The table is a constant (Hugging Face computes it from a buffer); a k without grad is fine."""
    angles = torch.randn(1, 3, 4, device=device, requires_grad=True)
    freqs_cis = torch.polar(torch.ones_like(angles), angles)
    q = torch.randn(1, 3, 2, 8, device=device, requires_grad=True)
    k = torch.randn(1, 3, 1, 8, device=device)
    grad = torch.randn(1, 3, 2, 8, device=device)
    q_out, _ = liger_llama4_rope(q, k, freqs_cis)
    q_out.backward(grad)
    assert angles.grad is None
    q2 = q.detach().requires_grad_()
    (dq_ref,) = torch.autograd.grad(apply_rotary_emb(q2, k, freqs_cis.detach())[0], q2, grad)
    assert_close(q.grad, dq_ref)


def test_compile_fullgraph_no_graph_break(device, seed):
    backend = "inductor" if device == "cuda" else "aot_eager"
    q = torch.randn(2, 3, 4, 16, device=device, requires_grad=True)
    k = torch.randn(2, 3, 2, 16, device=device, requires_grad=True)
    inv_freq = torch.rand(8, device=device)
    weights = torch.arange(16, device=device, dtype=torch.float32)

    def f(q_, k_, position_ids):
        angles = position_ids[..., None].float() * inv_freq  # the table made inside the graph, as HF does
        freqs_cis = torch.polar(torch.ones_like(angles), angles)
        qo, ko = liger_llama4_rope(q_ * 2.0, k_, freqs_cis)
        return (qo * weights).sum() + (ko * ko).sum()

    position_ids = torch.arange(3, device=device)[None]
    compiled = torch.compile(f, fullgraph=True, backend=backend)
    loss = compiled(q, k, position_ids)
    grads = torch.autograd.grad(loss, (q, k))
    loss_eager = f(q, k, position_ids)
    grads_eager = torch.autograd.grad(loss_eager, (q, k))
    assert_close({"loss": loss, "grads": grads}, {"loss": loss_eager, "grads": grads_eager})


def test_public_names_are_one_function(device, seed):
    q, k = torch.randn(1, 2, 2, 8, device=device), torch.randn(1, 2, 1, 8, device=device)
    freqs_cis = random_table((1, 2, 4), device)
    want = llama4_rope(q, k, freqs_cis)
    assert_close(liger_llama4_rope(q, k, freqs_cis), want)
    assert_close(liger_llama4_text_rotary_pos_emb(q, k, freqs_cis), want)
    assert_close(LigerLlama4RopeFunction.apply(q, k, freqs_cis, 64), want)  # BLOCK_SIZE is ignored
    assert_close(liger_llama4_rope(q, k, freqs_cis[0]), want)  # a 2-D table serves the whole batch


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="compares interpreter and fallback")
def test_cpu_fallback_when_interpreter_off(monkeypatch, seed):
    """With the interpreter off, CPU tensors take the PyTorch path: same math, and a warning."""
    q = torch.randn(2, 3, 4, 8).transpose(1, 2).requires_grad_()
    k = torch.randn(2, 4, 1, 8).requires_grad_()
    freqs_cis = random_table((2, 4, 4), "cpu")
    grads = (torch.randn(2, 4, 3, 8), torch.randn(2, 4, 1, 8))

    def run():
        out = liger_llama4_rope(q, k, freqs_cis)
        return {"out": out, "grads": torch.autograd.grad(out, (q, k), grads)}

    kernel = run()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr("liger_kernel.ops.utils._warned_fallback", set())
    with pytest.warns(RuntimeWarning, match="running the equivalent PyTorch code"):
        fallback = run()
    assert_close(fallback, kernel)


def _inputs(d, q=(2, 3, 4, 8), k=(2, 3, 2, 8), table=(1, 3, 4)):
    return torch.randn(*q, device=d), torch.randn(*k, device=d), random_table(table, d)


@pytest.mark.parametrize(
    "make_inputs, error, match",
    [
        (lambda d: _inputs(d, q=(2, 3, 4, 7), k=(2, 3, 2, 7)), ValueError, "head_dim .* must be even"),
        (lambda d: _inputs(d, k=(1, 3, 2, 8)), ValueError, "must match xq .* batch, seq and head_dim"),
        (lambda d: _inputs(d, k=(2, 4, 2, 8)), ValueError, "must match xq .* batch, seq and head_dim"),
        (lambda d: _inputs(d, k=(2, 3, 2, 6)), ValueError, "must match xq .* batch, seq and head_dim"),
        (lambda d: _inputs(d, q=(3, 4, 8)), ValueError, "xq and xk must be 4-D"),
        (lambda d: _inputs(d, table=(3, 3, 4)), ValueError, r"freqs_cis must have shape \(1 or 2, 3, 4\)"),
        (lambda d: _inputs(d, table=(1, 3, 8)), ValueError, r"freqs_cis must have shape"),
        (lambda d: _inputs(d, table=(1, 1, 3, 4)), ValueError, r"freqs_cis must have shape"),
    ],
)
def test_bad_input_is_named(device, make_inputs, error, match):
    q, k, freqs_cis = make_inputs(device)
    with pytest.raises(error, match=match):
        liger_llama4_rope(q, k, freqs_cis)


def test_bad_input_types_and_devices(device):
    q, k, freqs_cis = _inputs(device)
    with pytest.raises(TypeError, match="xq must be a floating-point"):
        liger_llama4_rope(q.to(torch.int32), k, freqs_cis)
    with pytest.raises(TypeError, match="freqs_cis must be a complex tensor"):
        liger_llama4_rope(q, k, torch.view_as_real(freqs_cis))
    with pytest.raises(ValueError, match="one device"):
        liger_llama4_rope(q, k, freqs_cis.to("meta"))


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(4, 2048, 40, 8, 128), (2, 1000, 28, 4, 128), (1, 333, 12, 12, 80)])
def test_training_shapes_on_gpu(device, seed, shape):
    bsz, seq, n_q, n_kv, head_dim = shape
    q = torch.randn(bsz, seq, n_q, head_dim, device=device).to(torch.bfloat16)
    k = torch.randn(bsz, seq, n_kv, head_dim, device=device).to(torch.bfloat16)
    r = run_all(q, k, random_table((1, seq, head_dim // 2), device, scale=1.0))
    assert_close_to_reference(r["liger"], r["reference"], r["golden"])
