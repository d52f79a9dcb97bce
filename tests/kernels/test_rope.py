"""RoPE against Hugging Face's apply_rotary_pos_emb (Llama), using liger_testing.

Numerical checks are in reference-error mode: the kernel's error against a float64 golden may be at
most twice the error of Hugging Face's function in the same dtype (plus a floor of one rounding).
cos and sin are random with different halves unless a test says otherwise, so the kernel may not
rely on Hugging Face's tables repeating one half.
"""

import os

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from liger_kernel.transformers import liger_rotary_pos_emb
from liger_kernel.transformers.functional import liger_rope
from liger_testing import assert_close, assert_close_to_reference, bounds_checked
from liger_testing import strategies as lst
from liger_testing.profiles import scaled


def hf_layout(x, unsqueeze_dim):
    """Hugging Face makes q, k by viewing (bsz, seq, heads, head_dim) and transposing to heads-first."""
    return x.transpose(1, 2) if unsqueeze_dim == 1 else x


def run_all(q, k, cos, sin, unsqueeze_dim=1, position_ids=None, golden_cos=None, golden_sin=None):
    """Outputs and q, k gradients of Hugging Face's function, Liger's and a float64 golden, as dicts."""
    results = {}
    grads_out = None
    hf_cos = golden_cos if golden_cos is not None else cos
    hf_sin = golden_sin if golden_sin is not None else sin
    for name in ("reference", "liger"):
        qi = q.detach().clone().requires_grad_()
        ki = k.detach().clone().requires_grad_()
        # Keep the inputs' strides (clone preserves them for dense tensors).
        if name == "reference":
            qo, ko = apply_rotary_pos_emb(qi, ki, hf_cos, hf_sin, unsqueeze_dim=unsqueeze_dim)
        else:
            qo, ko = liger_rotary_pos_emb(
                qi, ki, cos, sin, position_ids=position_ids, unsqueeze_dim=unsqueeze_dim
            )
        if grads_out is None:
            gen = torch.Generator().manual_seed(11)
            grads_out = (
                torch.randn(qo.shape, generator=gen).to(qo),
                torch.randn(ko.shape, generator=gen).to(ko),
            )
        dq, dk = torch.autograd.grad((qo, ko), (qi, ki), grads_out)
        results[name] = {"q": qo.detach(), "k": ko.detach(), "dq": dq, "dk": dk}

    q64 = q.detach().double().requires_grad_()
    k64 = k.detach().double().requires_grad_()
    qo, ko = apply_rotary_pos_emb(q64, k64, hf_cos.double(), hf_sin.double(), unsqueeze_dim=unsqueeze_dim)
    dq, dk = torch.autograd.grad((qo, ko), (q64, k64), tuple(g.double() for g in grads_out))
    results["golden"] = {"q": qo.detach(), "k": ko.detach(), "dq": dq, "dk": dk}
    return results


head_dims = st.one_of(st.sampled_from([64, 80, 96, 128, 256]), lst.dims(1, 48).map(lambda h: 2 * h))


@given(
    bsz=st.integers(1, 2),
    seq=lst.dims(1, 5),
    n_kv_heads=st.integers(1, 3),
    group=st.sampled_from([1, 4, 8]),
    head_dim=head_dims,
    dtype=lst.dtypes(),
    per_batch_cos=st.booleans(),
    unsqueeze_dim=st.sampled_from([1, 2]),
    data=st.data(),
)
@scaled(0.8)  # 20 examples under the ci profile
def test_matches_reference(
    device, bsz, seq, n_kv_heads, group, head_dim, dtype, per_batch_cos, unsqueeze_dim, data
):
    n_q_heads = n_kv_heads * group
    q = data.draw(lst.tensors((bsz, seq, n_q_heads, head_dim), dtype, device=device))
    k = data.draw(lst.tensors((bsz, seq, n_kv_heads, head_dim), dtype, device=device))
    cos_shape = (bsz if per_batch_cos else 1, seq, head_dim)
    cos = data.draw(lst.tensors(cos_shape, dtype, device=device, low=-1.0, high=1.0))
    sin = data.draw(lst.tensors(cos_shape, dtype, device=device, low=-1.0, high=1.0))
    q, k = hf_layout(q, unsqueeze_dim), hf_layout(k, unsqueeze_dim)
    r = run_all(q, k, cos, sin, unsqueeze_dim)
    assert r["liger"]["q"].dtype == r["reference"]["q"].dtype
    assert_close_to_reference(r["liger"], r["reference"], r["golden"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_hugging_face_rotary_tables(device, seed, dtype):
    """cos, sin as LlamaRotaryEmbedding makes them, with position_ids that skip around."""
    bsz, seq, n_q, n_kv, head_dim = 2, 6, 8, 2, 64
    config = LlamaConfig(hidden_size=n_q * head_dim, num_attention_heads=n_q, num_key_value_heads=n_kv)
    rotary = LlamaRotaryEmbedding(config).to(device)
    q = torch.randn(bsz, seq, n_q, head_dim, device=device).to(dtype).transpose(1, 2)
    k = torch.randn(bsz, seq, n_kv, head_dim, device=device).to(dtype).transpose(1, 2)
    position_ids = torch.tensor([[0, 1, 2, 3, 4, 5], [7, 100, 3, 2048, 9, 9]], device=device)
    cos, sin = rotary(q, position_ids)
    assert cos.dtype == dtype
    r = run_all(q, k, cos, sin)
    assert_close_to_reference(r["liger"], r["reference"], r["golden"])


def test_many_heads_take_several_tiles(device, seed):
    """More heads than one tile holds (head_dim 256), with odd counts, so the head loop runs twice."""
    q = torch.randn(1, 2, 40, 256, device=device).transpose(1, 2)
    k = torch.randn(1, 2, 5, 256, device=device).transpose(1, 2)
    cos = torch.randn(1, 2, 256, device=device)
    sin = torch.randn(1, 2, 256, device=device)
    r = run_all(q, k, cos, sin)
    assert_close_to_reference(r["liger"], r["reference"], r["golden"])


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(4, 2048, 32, 8, 128), (2, 1000, 28, 4, 128), (1, 333, 12, 12, 80)])
def test_training_shapes_on_gpu(device, seed, shape):
    bsz, seq, n_q, n_kv, head_dim = shape
    q = torch.randn(bsz, seq, n_q, head_dim, device=device).to(torch.bfloat16).transpose(1, 2)
    k = torch.randn(bsz, seq, n_kv, head_dim, device=device).to(torch.bfloat16).transpose(1, 2)
    cos = torch.randn(1, seq, head_dim, device=device).to(torch.bfloat16)
    sin = torch.randn(1, seq, head_dim, device=device).to(torch.bfloat16)
    r = run_all(q, k, cos, sin)
    assert_close_to_reference(r["liger"], r["reference"], r["golden"])


@given(dtype=lst.dtypes(), data=st.data())
@scaled(0.24)  # 6 examples under the ci profile
def test_non_contiguous_inputs(device, dtype, data):
    """Strided views everywhere, head_dim included (every other element of a larger buffer)."""
    q = data.draw(lst.tensors((2, 3, 4, 16), dtype, device=device, contiguous=False))
    k = data.draw(lst.tensors((2, 1, 4, 16), dtype, device=device, contiguous=False))
    cos = data.draw(lst.tensors((2, 4, 16), dtype, device=device, contiguous=False, low=-1.0, high=1.0))
    sin = data.draw(lst.tensors((1, 4, 16), dtype, device=device, contiguous=False, low=-1.0, high=1.0))
    assert not (q.is_contiguous() or k.is_contiguous() or cos.is_contiguous())
    r = run_all(q, k, cos, sin)
    assert_close_to_reference(r["liger"], r["reference"], r["golden"])


def test_slices_of_a_fused_projection(device, seed):
    """q, k cut out of one qkv tensor: strided in the heads dim, not dense."""
    bsz, seq, n_q, n_kv, head_dim = 2, 3, 4, 2, 32
    qkv = torch.randn(bsz, seq, n_q + 2 * n_kv, head_dim, device=device)
    q = qkv[:, :, :n_q].transpose(1, 2)
    k = qkv[:, :, n_q : n_q + n_kv].transpose(1, 2)
    cos, sin = torch.randn(2, 1, seq, head_dim, device=device).unbind(0)
    r = run_all(q, k, cos, sin)
    assert_close_to_reference(r["liger"], r["reference"], r["golden"])


@pytest.mark.parametrize("unsqueeze_dim", [1, 2])
def test_outputs_are_new_and_laid_out_like_inputs(device, seed, unsqueeze_dim):
    q = hf_layout(torch.randn(2, 3, 4, 8, device=device), unsqueeze_dim)
    k = hf_layout(torch.randn(2, 3, 2, 8, device=device), unsqueeze_dim)
    cos, sin = torch.randn(2, 1, 3, 8, device=device).unbind(0)
    q_ref, k_ref = apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=unsqueeze_dim)
    q_before, k_before = q.clone(), k.clone()
    q_out, k_out = liger_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=unsqueeze_dim)
    assert q_out.shape == q.shape and k_out.shape == k.shape
    assert q_out.stride() == q.stride() and k_out.stride() == k.stride()
    assert q_out.data_ptr() != q.data_ptr() and k_out.data_ptr() != k.data_ptr()
    assert_close({"q": q, "k": k}, {"q": q_before, "k": k_before})  # inputs untouched
    assert_close({"q": q_out, "k": k_out}, {"q": q_ref, "k": k_ref})


def test_position_ids_select_rows_of_a_2d_table(device, seed):
    """Older calling convention: cos, sin are (max_positions, head_dim) and position_ids pick rows."""
    bsz, seq, head_dim = 2, 4, 16
    table_cos = torch.randn(64, head_dim, device=device)
    table_sin = torch.randn(64, head_dim, device=device)
    position_ids = torch.tensor([[3, 0, 63, 5], [1, 1, 2, 40]], device=device)
    q = torch.randn(bsz, 3, seq, head_dim, device=device)
    k = torch.randn(bsz, 1, seq, head_dim, device=device)
    r = run_all(
        q, k, table_cos, table_sin, position_ids=position_ids,
        golden_cos=table_cos[position_ids], golden_sin=table_sin[position_ids],
    )  # fmt: skip
    assert_close_to_reference(r["liger"], r["reference"], r["golden"])

    # A 1-D position_ids is shared by the whole batch.
    out = liger_rotary_pos_emb(q, k, table_cos, table_sin, position_ids=position_ids[0])
    ref = apply_rotary_pos_emb(q, k, table_cos[position_ids[0]][None], table_sin[position_ids[0]][None])
    assert_close(out, ref)


def test_position_ids_ignored_with_per_position_tables(device, seed):
    """With 3-D cos and sin (already per position), position_ids changes nothing, as in Hugging Face."""
    q = torch.randn(1, 2, 3, 8, device=device)
    k = torch.randn(1, 2, 3, 8, device=device)
    cos, sin = torch.randn(2, 1, 3, 8, device=device).unbind(0)
    plain = liger_rotary_pos_emb(q, k, cos, sin)
    with_ids = liger_rotary_pos_emb(q, k, cos, sin, position_ids=torch.tensor([[5, 6, 7]], device=device))
    assert_close(with_ids, plain)


def test_fp32_tables_promote_like_hugging_face(device, seed):
    q = torch.randn(1, 2, 3, 8, device=device).to(torch.bfloat16)
    k = torch.randn(1, 1, 3, 8, device=device).to(torch.bfloat16)
    cos, sin = torch.randn(2, 1, 3, 8, device=device).unbind(0)
    r = run_all(q, k, cos, sin)
    assert r["liger"]["q"].dtype == r["reference"]["q"].dtype == torch.float32
    assert r["liger"]["dq"].dtype == torch.bfloat16
    assert_close_to_reference(r["liger"], r["reference"], r["golden"])


def test_only_q_needs_grad_and_cos_gets_none(device, seed):
    q = torch.randn(1, 2, 3, 8, device=device, requires_grad=True)
    k = torch.randn(1, 1, 3, 8, device=device)
    cos = torch.randn(1, 3, 8, device=device, requires_grad=True)
    sin = torch.randn(1, 3, 8, device=device)
    grad = torch.randn(1, 2, 3, 8, device=device)
    q_out, _ = liger_rotary_pos_emb(q, k, cos, sin)
    q_out.backward(grad)
    assert cos.grad is None  # documented: cos and sin are constants
    q2 = q.detach().requires_grad_()
    (dq_ref,) = torch.autograd.grad(apply_rotary_pos_emb(q2, k, cos.detach(), sin)[0], q2, grad)
    assert_close(q.grad, dq_ref)


@pytest.mark.parametrize("unsqueeze_dim", [1, 2])
def test_compile_fullgraph_no_graph_break(device, seed, unsqueeze_dim):
    backend = "inductor" if device == "cuda" else "aot_eager"
    q = hf_layout(torch.randn(2, 3, 4, 16, device=device), unsqueeze_dim).requires_grad_()
    k = hf_layout(torch.randn(2, 3, 2, 16, device=device), unsqueeze_dim).requires_grad_()
    cos, sin = torch.randn(2, 1, 3, 16, device=device).unbind(0)
    weights = torch.arange(16, device=device, dtype=torch.float32)

    def f(q_, k_):
        qo, ko = liger_rotary_pos_emb(q_ * 2.0, k_, cos, sin, unsqueeze_dim=unsqueeze_dim)
        return (qo * weights).sum() + (ko * ko).sum()

    compiled = torch.compile(f, fullgraph=True, backend=backend)
    loss = compiled(q, k)
    grads = torch.autograd.grad(loss, (q, k))
    loss_eager = f(q, k)
    grads_eager = torch.autograd.grad(loss_eager, (q, k))
    assert_close({"loss": loss, "grads": grads}, {"loss": loss_eager, "grads": grads_eager})


def test_functional_matches_module_function(device, seed):
    q = torch.randn(2, 3, 4, 8, device=device)
    k = torch.randn(2, 1, 4, 8, device=device)
    cos, sin = torch.randn(2, 2, 4, 8, device=device).unbind(0)
    assert_close(liger_rope(q, k, cos, sin), liger_rotary_pos_emb(q, k, cos, sin))


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="compares interpreter and fallback")
def test_cpu_fallback_when_interpreter_off(monkeypatch, seed):
    """With the interpreter off, CPU tensors take the PyTorch path: same math, and a warning."""
    q = torch.randn(2, 3, 4, 8).transpose(1, 2).requires_grad_()
    k = torch.randn(2, 3, 1, 8).transpose(1, 2).requires_grad_()
    cos, sin = torch.randn(2, 1, 3, 8).unbind(0)
    grads = (torch.randn(2, 4, 3, 8), torch.randn(2, 1, 3, 8))

    def run():
        out = liger_rotary_pos_emb(q, k, cos, sin)
        return {"out": out, "grads": torch.autograd.grad(out, (q, k), grads)}

    kernel = run()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr("liger_kernel.ops.utils._warned_fallback", set())
    with pytest.warns(RuntimeWarning, match="running the equivalent PyTorch code"):
        fallback = run()
    assert_close(fallback, kernel)


def _rand(d, *shape, dtype=torch.float32):
    return torch.randn(*shape, device=d).to(dtype)


def _inputs(d, q=(2, 4, 3, 8), k=(2, 2, 3, 8), cos=(1, 3, 8), sin=None, q_dtype=torch.float32):
    return _rand(d, *q, dtype=q_dtype), _rand(d, *k), _rand(d, *cos), _rand(d, *(sin or cos))


@pytest.mark.parametrize(
    "make_inputs, kwargs, error, match",
    [
        (
            lambda d: _inputs(d, q=(2, 4, 3, 7), k=(2, 2, 3, 7), cos=(1, 3, 7)),
            {},
            ValueError,
            "head_dim .* even",
        ),
        (lambda d: _inputs(d, k=(1, 2, 3, 8)), {}, ValueError, "must match q .* batch, seq and head_dim"),
        (lambda d: _inputs(d, k=(2, 2, 4, 8)), {}, ValueError, "must match q .* batch, seq and head_dim"),
        (lambda d: _inputs(d, k=(2, 2, 3, 6)), {}, ValueError, "must match q .* batch, seq and head_dim"),
        (lambda d: _inputs(d, cos=(3, 3, 8)), {}, ValueError, r"cos must have shape \(1 or 2, 3, 8\)"),
        (lambda d: _inputs(d, cos=(1, 4, 8)), {}, ValueError, r"cos must have shape"),
        # Narrower tables rotate the first cos-width entries (partial RoPE), as Liger Kernel 0.8 does.
        (lambda d: _inputs(d, cos=(1, 3, 5)), {}, ValueError, r"rotary_dim must be even"),
        (lambda d: _inputs(d, cos=(4, 8)), {}, ValueError, r"cos must have shape"),
        (lambda d: _inputs(d, sin=(1, 4, 8)), {}, ValueError, r"sin must have shape \(1 or 2, 3, 8\)"),
        (lambda d: _inputs(d, q=(4, 3, 8)), {}, ValueError, "must be 4-D"),
        (lambda d: _inputs(d), {"unsqueeze_dim": 0}, ValueError, "unsqueeze_dim must be 1"),
        (lambda d: _inputs(d), {"unsqueeze_dim": 3}, ValueError, "unsqueeze_dim must be 1"),
        (lambda d: _inputs(d, q_dtype=torch.bfloat16), {}, TypeError, "q and k must have the same dtype"),
    ],
)
def test_bad_input_is_named(device, make_inputs, kwargs, error, match):
    q, k, cos, sin = make_inputs(device)
    with pytest.raises(error, match=match):
        liger_rotary_pos_emb(q, k, cos, sin, **kwargs)


def test_bad_input_types_and_devices(device):
    q, k, cos, sin = _inputs(device)
    with pytest.raises(TypeError, match="q must be a floating-point"):
        liger_rotary_pos_emb(q.to(torch.int32), k, cos, sin)
    with pytest.raises(TypeError, match="sin must be a floating-point"):
        liger_rotary_pos_emb(q, k, cos, sin.to(torch.int64))
    with pytest.raises(ValueError, match="one device"):
        liger_rotary_pos_emb(q, k, cos.to("meta"), sin)
    with pytest.raises(TypeError, match="position_ids must be an integer"):
        liger_rotary_pos_emb(q, k, cos[0], sin[0], position_ids=torch.zeros(2, 3, device=device))


@pytest.mark.parametrize("unsqueeze_dim", [1, 2])
def test_writes_stay_in_bounds(device, seed, unsqueeze_dim):
    """Every output (forward and backward) sits between guard regions; a head or column mask that lets a
    write through past the last head or past head_dim / 2 is an assertion naming the kernel, not a lucky
    heap corruption."""
    q = torch.randn(2, 5, 3, 12, device=device)  # 3 query heads, head_dim 12: masks on both axes
    k = torch.randn(2, 5, 1, 12, device=device)
    cos, sin = torch.randn(2, 5, 12, device=device), torch.randn(2, 5, 12, device=device)
    with bounds_checked("rope") as guard:
        q, k = hf_layout(q, unsqueeze_dim), hf_layout(k, unsqueeze_dim)
        q, k = guard.guarded(q).requires_grad_(), guard.guarded(k).requires_grad_()
        r = run_all(q, k, cos, sin, unsqueeze_dim=unsqueeze_dim)
    assert len(guard.buffers) >= 6  # q, k and the kernel's outputs and gradients
    assert_close_to_reference(r["liger"], r["reference"], r["golden"])


def test_tables_with_a_row_stride(device, seed):
    """cos and sin as column slices of wider tables: a position's row is stride(1) apart, not head_dim."""
    q, k = torch.randn(2, 3, 5, 12, device=device), torch.randn(2, 1, 5, 12, device=device)
    cos, sin = (
        torch.randn(2, 5, 2 * 12, device=device)[..., :12],
        torch.randn(2, 5, 3 * 12, device=device)[..., :12],
    )
    assert cos.stride(1) == 24 and sin.stride(1) == 36
    r = run_all(q, k, cos, sin)
    assert_close_to_reference(r["liger"], r["reference"], r["golden"])
