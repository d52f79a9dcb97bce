"""Patching Hugging Face models with Liger kernels: same numbers as the original, exact undo.

Each model type is checked both ways (classes patched before the model is built, an instance patched
in place) against the unpatched Hugging Face model holding the same fp32 weights: the loss, the logits
where they are returned and every parameter gradient by name. Undoing the patch must give back the
original module attributes by identity and bit-identical outputs.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import inspect
import io
import logging
import math
import pickle
import subprocess
import sys
from types import SimpleNamespace

import _hf_tiny as T
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import liger_kernel.transformers as lt
from liger_kernel.transformers import (
    MODEL_TYPE_TO_APPLY_LIGER_FN,
    LigerRMSNorm,
    _apply_liger_kernel_to_instance,
    liger_patched,
    unpatch,
)
from liger_kernel.transformers.model.causal_lm import is_liger_forward
from liger_kernel.transformers.model.loss_utils import liger_for_causal_lm_loss
from liger_kernel.transformers.monkey_patch import (
    KEYWORD_ONLY_OPTIONS,
    MODEL_SPECS,
    apply_liger_kernel,
    describe,
)
from liger_testing import assert_close, assert_close_to_reference

SUPPORTED = ", ".join(sorted(t for t, spec in MODEL_SPECS.items() if spec.available()))


@functools.cache
def _reference(model_type: str) -> SimpleNamespace:
    """The unpatched model's weights, loss, gradients and eval logits on the test batch (computed once),
    and the same in float64 (the golden values of liger_testing's reference-error mode)."""
    assert not _patched_attributes(model_type), "reference computed while patched"
    model = T.build(model_type)
    ids, mask, labels = T.batch()
    out, grads = T.train_step(model, ids, mask, labels)
    logits = T.eval_logits(model, ids, mask)
    # (grouped_mm experts have no float64 kernel; batched_mm computes the same in float64)
    golden_config = T.tiny_config(model_type, experts_implementation="batched_mm")
    golden_model = T.build(model_type, model.state_dict(), config=golden_config, dtype=torch.float64)
    golden_out, golden_grads = T.train_step(golden_model, ids, mask, labels)
    return SimpleNamespace(
        golden_loss=golden_out.loss.detach(),
        golden_grads=golden_grads,
        golden_logits=T.eval_logits(golden_model, ids, mask),
        state_dict={k: v.clone() for k, v in model.state_dict().items()},
        keys=list(model.state_dict()),
        batch=(ids, mask, labels),
        loss=out.loss.detach(),
        train_logits=out.logits.detach(),
        grads=grads,
        logits=logits,
    )


def _snapshot(model_type: str) -> dict[str, object]:
    """Every attribute of the modeling module, and of the classes it defines, by identity."""
    mod = T.modeling(model_type)
    snap = {}
    for name, value in vars(mod).items():
        snap[name] = value
        if isinstance(value, type) and value.__module__ == mod.__name__:
            for attr, v in vars(value).items():
                if not attr.endswith("_cached_value"):  # caches transformers fills in lazily
                    snap[f"{name}.{attr}"] = v
    return snap


def _patched_attributes(model_type: str) -> list[str]:
    """Names in the snapshot whose value came from liger_kernel."""
    return [
        k
        for k, v in _snapshot(model_type).items()
        if str(getattr(v, "__module__", "")).startswith("liger_kernel") or is_liger_forward(v)
    ]


def _assert_same_snapshot(after: dict, before: dict) -> None:
    assert after.keys() == before.keys(), sorted(after.keys() ^ before.keys())
    changed = [k for k in before if after[k] is not before[k]]
    assert not changed, f"not restored: {changed}"


def _assert_matches_reference(model_type: str, out, grads, logits=None) -> None:
    """Reference-error mode for every gradient and the eval logits: the patched model's error against the
    float64 model is at most twice the unpatched model's (plus one rounding). The loss, one scalar, is
    compared within fp32 tolerances instead: the unpatched loss's error is a single sample, exactly 0
    when its rounding happens to land on the float64 value (seen for Qwen3 and SmolLM3), which would
    leave the fused loss, summed in another order, one rounding of room."""
    ref = _reference(model_type)
    assert_close(out.loss.detach(), ref.loss, msg=f"{model_type} loss")
    # Every parameter gradient is a sum over the batch's tokens (a norm weight's: sum_t dy_t * n_t), which
    # rounds like its terms, not like the (partly cancelled) sum: the default floor, one eps of
    # max|golden|, is a few ulps of a small gradient, where the patched and HF models summing in other
    # orders land 3-4x apart by chance (seen on the H200: Qwen2's layer-1 norm weight, 3 ulps). The
    # model-level term scale would need a second, absolute-valued backward; instead the floor is the
    # typical accumulated rounding of a sum of n_tokens terms, sqrt(n_tokens) * eps (random-walk
    # growth; 4 eps here, still ~2e4 times below a 1% error of the largest gradient).
    n_tokens = ref.batch[0].numel()
    floor = math.sqrt(n_tokens) * torch.finfo(torch.float32).eps
    assert_close_to_reference(grads, ref.grads, ref.golden_grads, floor=floor, msg=f"{model_type} grads")
    if logits is not None:
        assert_close_to_reference(logits, ref.logits, ref.golden_logits, msg=f"{model_type} eval logits")


# ----------------------------------------------------------------------------------------------------
# Same numbers as Hugging Face, both ways of patching
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", T.MODEL_TYPES)
def test_class_patching_matches_hugging_face(model_type):
    ref = _reference(model_type)
    with liger_patched(model_type):
        assert _patched_attributes(model_type)
        model = T.build(model_type, ref.state_dict)
        assert list(model.state_dict()) == ref.keys
        assert any(isinstance(m, LigerRMSNorm) for m in model.modules())
        out, grads = T.train_step(model, *ref.batch)
        assert out.logits is None  # the fused loss never built them
        logits = T.eval_logits(model, *ref.batch[:2])
    _assert_matches_reference(model_type, out, grads, logits)
    assert not _patched_attributes(model_type)


@pytest.mark.parametrize("model_type", T.MODEL_TYPES)
def test_instance_patching_matches_hugging_face_and_unpatch_restores_exactly(model_type):
    ref = _reference(model_type)
    model = T.build(model_type, ref.state_dict)
    params = dict(model.named_parameters())
    classes = {name: type(m) for name, m in model.named_modules()}

    MODEL_TYPE_TO_APPLY_LIGER_FN[model_type](model=model)
    assert type(model) is T.causal_lm_class(model_type)  # save_pretrained's architectures unchanged
    assert list(model.state_dict()) == ref.keys
    assert all(p is params[n] for n, p in model.named_parameters())  # same tensors, nothing reallocated
    assert any(isinstance(m, LigerRMSNorm) for m in model.modules())
    assert is_liger_forward(model.forward)
    with liger_patched(model_type):  # the same replacement classes as class patching
        built_patched = dict(T.build(model_type).named_modules())
    swapped = dict(model.named_modules())  # (swapped MLPs keep HF's parameter-free act_fn child)
    # (Method targets patch the class itself, the instance gets a subclass overriding that method)
    assert all(issubclass(type(swapped[n]), type(m)) for n, m in built_patched.items())
    # Gradients through each replacement class are checked by the class-patching test; here the
    # swapped-in-place modules run forward (the fused loss in training, logits in eval), to keep the
    # interpreter time down, except for two models whose norms differ (eps attribute, Gemma casting).
    if model_type in ("llama", "gemma"):
        out, grads = T.train_step(model, *ref.batch)
    else:
        model.train()
        with torch.no_grad():
            out, grads = (
                model(input_ids=ref.batch[0], attention_mask=ref.batch[1], labels=ref.batch[2]),
                ref.grads,
            )
    assert out.logits is None
    _assert_matches_reference(model_type, out, grads, T.eval_logits(model, *ref.batch[:2]))

    unpatch(model)
    assert {name: type(m) for name, m in model.named_modules()} == classes
    assert "forward" not in vars(model) and "_replicate_for_data_parallel" not in vars(model)
    assert not _patched_attributes(model_type)
    out, grads = T.train_step(model, *ref.batch)
    assert torch.equal(out.loss, ref.loss) and torch.equal(out.logits, ref.train_logits)
    assert grads.keys() == ref.grads.keys()
    assert all(torch.equal(grads[k], ref.grads[k]) for k in grads)
    assert torch.equal(T.eval_logits(model, *ref.batch[:2]), ref.logits)


@pytest.mark.parametrize("model_type", T.MODEL_TYPES)
def test_revert_restores_the_modeling_module_exactly(model_type):
    ref = _reference(model_type)
    before = _snapshot(model_type)
    apply_fn = MODEL_TYPE_TO_APPLY_LIGER_FN[model_type]
    apply_fn()
    patched = _snapshot(model_type)
    apply_fn()  # twice: harmless
    _assert_same_snapshot(_snapshot(model_type), patched)
    getattr(lt, f"revert_liger_kernel_to_{model_type}")()
    _assert_same_snapshot(_snapshot(model_type), before)

    model = T.build(model_type, ref.state_dict)  # built after the revert: plain Hugging Face, bit for bit
    assert not any(type(m).__module__.startswith("liger_kernel") for m in model.modules())
    out, grads = T.train_step(model, *ref.batch)
    assert torch.equal(out.loss, ref.loss)
    assert all(torch.equal(grads[k], ref.grads[k]) for k in ref.grads)


# ----------------------------------------------------------------------------------------------------
# Idempotence, scopes, errors
# ----------------------------------------------------------------------------------------------------


def test_double_instance_patching_is_harmless():
    ref = _reference("llama")
    model = T.build("llama", ref.state_dict)
    lt.apply_liger_kernel_to_llama(model=model)
    first = {name: type(m) for name, m in model.named_modules()}
    forward = model.forward
    lt.apply_liger_kernel_to_llama(model=model)
    _apply_liger_kernel_to_instance(model=model)
    assert {name: type(m) for name, m in model.named_modules()} == first
    assert model.forward == forward
    assert model.forward.__func__.__liger_original__ is T.causal_lm_class("llama").forward  # not re-wrapped
    unpatch(model)
    assert not any(type(m).__module__.startswith("liger_kernel") for m in model.modules())
    assert "forward" not in vars(model)
    assert not _patched_attributes("llama")


def test_scopes_nest_and_instances_keep_their_own_patches():
    before = _snapshot("llama")
    lt.apply_liger_kernel_to_llama()
    patched = _snapshot("llama")
    with liger_patched("llama", swiglu=False):
        pass
    _assert_same_snapshot(_snapshot("llama"), patched)  # the plain apply still holds every patch
    with liger_patched("llama"):
        model = T.build("llama")  # built patched: instance patching finds nothing left to swap
    lt.apply_liger_kernel_to_llama(model=model)
    unpatch(model)
    _assert_same_snapshot(_snapshot("llama"), patched)
    lt.revert_liger_kernel_to_llama()
    _assert_same_snapshot(_snapshot("llama"), before)

    # An instance's hold on the module-level RoPE outlives a scope that ends first.
    instance = T.build("llama")
    with liger_patched("llama"):
        lt.apply_liger_kernel_to_llama(model=instance)
    assert T.modeling("llama").apply_rotary_pos_emb is not before["apply_rotary_pos_emb"]
    unpatch(instance)
    _assert_same_snapshot(_snapshot("llama"), before)

    # A patched model that is dropped without unpatch() lets go of the module-level RoPE when collected.
    lt.apply_liger_kernel_to_llama(model=instance)
    assert T.modeling("llama").apply_rotary_pos_emb is not before["apply_rotary_pos_emb"]
    del instance
    gc.collect()
    _assert_same_snapshot(_snapshot("llama"), before)


def test_only_requested_options_are_patched():
    mod = T.modeling("llama")
    before = _snapshot("llama")
    with liger_patched("llama", rope=False, swiglu=False, fused_linear_cross_entropy=False):
        assert mod.LlamaRMSNorm is not before["LlamaRMSNorm"]
        assert mod.LlamaMLP is before["LlamaMLP"]
        assert mod.apply_rotary_pos_emb is before["apply_rotary_pos_emb"]
        assert mod.LlamaForCausalLM.forward is before["LlamaForCausalLM.forward"]
    model = T.build("llama")
    lt.apply_liger_kernel_to_llama(model=model, rope=False, rms_norm=False, fused_linear_cross_entropy=False)
    assert type(model.model.layers[0].mlp).__name__ == "LigerLlamaMLP"
    assert type(model.model.norm) is before["LlamaRMSNorm"]
    assert mod.apply_rotary_pos_emb is before["apply_rotary_pos_emb"]
    assert "forward" not in vars(model)


def test_unsupported_model_type_lists_the_supported_ones(caplog):
    class Other(nn.Module):
        config = SimpleNamespace(model_type="gpt2")

    # The Trainer path: one warning naming the type and the supported ones; the model trains unpatched.
    other = Other()
    with caplog.at_level(logging.WARNING, logger="liger_kernel"):
        _apply_liger_kernel_to_instance(model=other)
    assert len(caplog.records) == 1, caplog.text
    assert "model type 'gpt2'" in caplog.text and f"Supported model types: {SUPPORTED}" in caplog.text
    assert "forward" not in vars(other) and "_liger_instance_patch" not in vars(other)
    with pytest.raises(ValueError, match=f"supported model types: {SUPPORTED}"):
        apply_liger_kernel("gpt2")
    with pytest.raises(ValueError, match=f"supported model types: {SUPPORTED}"):
        liger_patched("gpt2").__enter__()


def test_a_model_of_another_type_is_refused_before_anything_is_patched():
    before = _snapshot("llama")
    qwen2 = T.build("qwen2")
    with pytest.raises(ValueError, match=r"apply_liger_kernel_to_llama.*'qwen2', not 'llama'.*_to_qwen2\("):
        lt.apply_liger_kernel_to_llama(model=qwen2)

    class Other(nn.Module):
        config = SimpleNamespace(model_type="gpt2")

    with pytest.raises(ValueError, match=f"'gpt2', not 'llama' \\(supported model types: {SUPPORTED}"):
        lt.apply_liger_kernel_to_llama(model=Other())
    with pytest.raises(ValueError, match="None, not 'llama'"):
        lt.apply_liger_kernel_to_llama(model=nn.Linear(2, 2))  # no config at all
    _assert_same_snapshot(_snapshot("llama"), before)  # llama's RoPE untouched
    assert not any(type(m).__module__.startswith("liger_kernel") for m in qwen2.modules())


def test_a_model_type_missing_from_transformers_is_unavailable_not_an_error(monkeypatch, caplog):
    """The table may hold a type that the installed transformers lacks (the GPU machine's is older)."""
    spec = dataclasses.replace(
        MODEL_SPECS["llama"], model_type="future", module="transformers.models.future.x"
    )
    monkeypatch.setitem(MODEL_SPECS, "future", spec)
    assert not spec.available()
    lines = [line for option in describe("future").values() for line in option]
    assert lines and all("unavailable" in line and "transformers.models.future.x" in line for line in lines)

    class Future(nn.Module):
        config = SimpleNamespace(model_type="future")

    with caplog.at_level(logging.WARNING, logger="liger_kernel"):
        _apply_liger_kernel_to_instance(model=Future())
    assert (
        len(caplog.records) == 1 and "'future' is not available in the installed transformers" in caplog.text
    )
    assert "Supported model types: " in caplog.text and "future" not in caplog.text.split("Supported")[-1]
    with pytest.raises(ValueError, match="cannot patch model type 'future'.*not available"):
        apply_liger_kernel("future")
    assert all(MODEL_SPECS[t].available() for t in T.MODEL_TYPES)


def test_both_cross_entropy_options_is_an_error():
    model = T.build("llama")
    with pytest.raises(ValueError, match="cross_entropy and fused_linear_cross_entropy cannot both be True"):
        lt.apply_liger_kernel_to_llama(cross_entropy=True)
    with pytest.raises(ValueError, match="cannot both be True"):
        lt.apply_liger_kernel_to_llama(cross_entropy=True, fused_linear_cross_entropy=True, model=model)
    with pytest.raises(TypeError):
        lt.apply_liger_kernel_to_llama(geglu=True)
    assert not _patched_attributes("llama")
    assert not any(type(m).__module__.startswith("liger_kernel") for m in model.modules())


def test_instance_entry_point_drops_options_the_model_type_does_not_take(caplog):
    model = T.build("gemma")
    with caplog.at_level(logging.DEBUG, logger="liger_kernel.transformers.monkey_patch"):
        _apply_liger_kernel_to_instance(model=model, swiglu=True, geglu=False, rope=False, not_an_option=1)
    assert "['not_an_option', 'swiglu']" in caplog.text
    assert type(model.model.layers[0].mlp).__name__ == "GemmaMLP"  # geglu=False honoured
    assert type(model.model.norm).__name__ == "LigerGemmaRMSNorm"
    assert T.modeling("gemma").apply_rotary_pos_emb.__module__.startswith("transformers")


def _said(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "keeps the model's own code" in r.getMessage()]


@pytest.fixture
def nothing_said_yet(monkeypatch):
    """The fallbacks say once per process what keeps the model's code: start from nothing said."""
    from liger_kernel.transformers import model_specs

    monkeypatch.setattr(model_specs, "_SAID", set())


def test_unsupported_activation_keeps_the_original_mlp(caplog, nothing_said_yet):
    config = T.tiny_config("llama", hidden_act="relu")
    with caplog.at_level(logging.WARNING, logger="liger_kernel"), liger_patched("llama"):
        model = T.build("llama", config=config)
    assert [type(layer.mlp) for layer in model.model.layers] == [T.modeling("llama").LlamaMLP] * 2
    assert isinstance(model.model.norm, LigerRMSNorm)
    assert len(_said(caplog)) == 1 and "LlamaMLP" in caplog.text and "hidden_act" in caplog.text  # once
    other = T.build("llama", config=config)
    lt.apply_liger_kernel_to_llama(model=other)
    assert type(other.model.layers[0].mlp) is T.modeling("llama").LlamaMLP
    assert len(_said(caplog)) == 1


@pytest.mark.parametrize(
    "model_type, option, config, part, reason",
    [
        (
            "phi3",
            "rope",
            {"partial_rotary_factor": 0.5},
            "modeling_phi3.apply_rotary_pos_emb",
            "partial rotary",
        ),
        ("glm4", "swiglu", {"hidden_act": "gelu"}, "Glm4MLP.forward", "hidden_act is 'gelu'"),
        (
            "qwen3_moe",
            "swiglu",
            {"hidden_act": "gelu"},
            "Qwen3MoeExperts._apply_gate",
            "hidden_act is 'gelu'",
        ),
    ],
    ids=["partial-rotary", "fused-gate-up-gelu", "experts-gelu"],
)
def test_a_config_the_kernel_does_not_cover_keeps_the_models_code_and_says_so_once(
    model_type, option, config, part, reason, caplog, nothing_said_yet
):
    config = T.tiny_config(model_type, **config)
    if model_type == "qwen3_moe":
        config._experts_implementation = "batched_mm"  # calls _apply_gate
    ref = T.build(model_type, config=config)
    model = T.build(model_type, config=config)
    with caplog.at_level(logging.WARNING, logger="liger_kernel"):
        # only the option concerned, so the patched model runs exactly the unpatched one's code
        only = {o: o == option for o in MODEL_SPECS[model_type].option_defaults()}
        MODEL_TYPE_TO_APPLY_LIGER_FN[model_type](model=model, **only)
        for _ in range(2):
            logits = T.eval_logits(model, *T.batch()[:2])
    said = [m for m in _said(caplog) if part in m]
    assert len(said) == 1 and reason in said[0], _said(caplog)
    assert torch.equal(logits, T.eval_logits(ref, *T.batch()[:2]))


def test_a_norm_with_a_bias_keeps_its_code_and_says_so(caplog, nothing_said_yet):
    model = T.build("llama")
    model.model.norm.bias = nn.Parameter(torch.zeros(model.config.hidden_size))
    with caplog.at_level(logging.WARNING, logger="liger_kernel"):
        lt.apply_liger_kernel_to_llama(model=model)
    assert type(model.model.norm) is T.modeling("llama").LlamaRMSNorm
    assert isinstance(model.model.layers[0].input_layernorm, LigerRMSNorm)
    assert len(_said(caplog)) == 1 and "['bias', 'weight']" in caplog.text


def test_generated_functions_describe_the_table():
    for model_type, spec in MODEL_SPECS.items():
        fn = MODEL_TYPE_TO_APPLY_LIGER_FN[model_type]
        params = inspect.signature(fn).parameters
        options = list(spec.option_defaults())
        keyword_only = [o for o in options if o in KEYWORD_ONLY_OPTIONS]
        assert list(params) == [*(o for o in options if o not in keyword_only), "model", *keyword_only]
        assert all(params[o].kind is inspect.Parameter.KEYWORD_ONLY for o in keyword_only)
        assert params["fused_linear_cross_entropy"].default is True
        assert params["cross_entropy"].default is False
        assert all(t.name in fn.__doc__ for t in spec.targets("rms_norm")) and spec.causal_lm in fn.__doc__
    assert "offset=1.0, casting_mode='gemma', init_fn='zeros'" in lt.apply_liger_kernel_to_gemma2.__doc__
    assert "final_logit_softcapping" in lt.apply_liger_kernel_to_gemma2.__doc__
    assert "geglu" in inspect.signature(lt.apply_liger_kernel_to_gemma).parameters


# ----------------------------------------------------------------------------------------------------
# The causal-LM forward: loss kwargs, logits_to_keep, skip_logits, the other loss option
# ----------------------------------------------------------------------------------------------------


def test_num_items_in_batch_gives_the_hugging_face_loss():
    ref = _reference("llama")
    n = torch.tensor(23)  # e.g. the token count of a whole gradient-accumulation step
    plain = T.build("llama", ref.state_dict)
    expected, expected_grads = T.train_step(plain, *ref.batch, num_items_in_batch=n)
    model = T.build("llama", ref.state_dict)
    lt.apply_liger_kernel_to_llama(model=model, rope=False, rms_norm=False, swiglu=False)
    out, grads = T.train_step(model, *ref.batch, num_items_in_batch=n)
    assert out.logits is None
    assert_close(out.loss.detach(), expected.loss.detach())
    assert_close(grads, expected_grads)


def test_logits_to_keep():
    ref = _reference("llama")
    ids, mask, labels = ref.batch
    model = T.build("llama", ref.state_dict)
    lt.apply_liger_kernel_to_llama(model=model, rope=False, rms_norm=False, swiglu=False)  # the loss only
    assert_close(T.eval_logits(model, ids, mask, logits_to_keep=3), ref.logits[:, -3:])

    # Fused: each kept position is scored against its next token, as with the kept logits.
    model.train()
    shifted = F.pad(labels, (0, 1), value=-100)[:, 1:]
    for keep, positions in ((3, slice(-3, None)), (torch.tensor([1, 4, 6]), torch.tensor([1, 4, 6]))):
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, labels=labels, logits_to_keep=keep)
        kept_logits = ref.logits[:, positions].reshape(-1, T.VOCAB)
        assert_close(out.loss, F.cross_entropy(kept_logits, shifted[:, positions].reshape(-1)))


def test_skip_logits_and_eval_mode():
    ref = _reference("llama")
    ids, mask, labels = ref.batch
    model = T.build("llama", ref.state_dict)
    lt.apply_liger_kernel_to_llama(
        model=model, rope=False, rms_norm=False, swiglu=False, fused_add_rms_norm=False
    )
    plain = T.build("llama", ref.state_dict).eval()
    model.eval()
    with torch.no_grad():
        expected = plain(input_ids=ids, attention_mask=mask, labels=labels)
        # eval with labels: logits and Hugging Face's loss, through the original forward
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        assert torch.equal(out.logits, expected.logits) and torch.equal(out.loss, expected.loss)
        # what the Trainer passes in loss-only evaluation
        out = model(input_ids=ids, attention_mask=mask, labels=labels, skip_logits=True)
        assert out.logits is None
        assert_close(out.loss, expected.loss)
        with pytest.raises(ValueError, match="skip_logits=True needs labels"):
            model(input_ids=ids, attention_mask=mask, skip_logits=True)
    out, _ = T.train_step(model, ids, mask, labels, skip_logits=False)
    assert_close(out.logits.detach(), ref.train_logits)
    out = model(ids, mask, None, None, None, labels, return_dict=False)  # positional, tuple output
    assert isinstance(out, tuple) and out[0].ndim == 0
    assert_close(out[0].detach(), ref.loss)


@pytest.mark.parametrize("model_type", ["llama", "gemma2"])
def test_cross_entropy_option(model_type):
    ref = _reference(model_type)
    options = {"rope": False, "rms_norm": False, "cross_entropy": True, "fused_linear_cross_entropy": False}
    options["geglu" if model_type == "gemma2" else "swiglu"] = False
    with liger_patched(model_type, **options):
        model = T.build(model_type, ref.state_dict)
        assert model.loss_function is liger_for_causal_lm_loss
        out, grads = T.train_step(model, *ref.batch)
    assert_close(out.logits.detach(), ref.train_logits)
    _assert_matches_reference(model_type, out, grads)
    assert model.loss_function is not liger_for_causal_lm_loss  # reverted with the class

    model = T.build(model_type, ref.state_dict)
    MODEL_TYPE_TO_APPLY_LIGER_FN[model_type](model=model, **options)
    assert model.loss_function is liger_for_causal_lm_loss
    out, grads = T.train_step(model, *ref.batch)
    _assert_matches_reference(model_type, out, grads)
    unpatch(model)
    assert "_loss_function" not in vars(model)


def test_mixtral_router_aux_loss_is_added():
    config = T.tiny_config("mixtral", output_router_logits=True, router_aux_loss_coef=0.5)
    plain = T.build("mixtral", config=config)
    ids, mask, labels = T.batch()
    expected, expected_grads = T.train_step(plain, ids, mask, labels)
    model = T.build("mixtral", plain.state_dict(), config=config)
    lt.apply_liger_kernel_to_mixtral(model=model, rope=False, rms_norm=False, swiglu=False)
    out, grads = T.train_step(model, ids, mask, labels)
    assert out.logits is None and out.aux_loss is not None
    assert_close(out.aux_loss.detach(), expected.aux_loss.detach())
    assert_close(out.loss.detach(), expected.loss.detach())
    assert_close(grads, expected_grads)


@pytest.mark.parametrize("model_type", ["llama", "gemma"])
def test_patched_model_copies_and_replicates(model_type):
    """copy.deepcopy (reference models, EMA) and nn.DataParallel's replicas (the Trainer on several
    GPUs without a launcher) build modules with ``cls.__new__(cls)`` and no constructor arguments; the
    copies compute what the original does."""
    import copy

    ref = _reference(model_type)
    with liger_patched(model_type):
        model = T.build(model_type, ref.state_dict)
    twin = copy.deepcopy(model)
    assert [type(m) for m in twin.modules()] == [type(m) for m in model.modules()]
    assert all(p is not q for p, q in zip(twin.parameters(), model.parameters()))
    ids, mask, labels = ref.batch
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        assert torch.equal(twin(input_ids=ids, attention_mask=mask, labels=labels).loss, expected)
    for module in model.modules():
        replica = module._replicate_for_data_parallel()
        assert type(replica) is type(module)


def test_instance_patched_model_copies_and_replicates():
    """Instance patching keeps the model's class and puts the fused-loss forward, bound to the model,
    in its ``__dict__``: a deep copy and a DataParallel replica (a shallow ``__dict__`` copy) must each
    get it bound to themselves, or the replica on another GPU would run the original."""
    import copy

    ref = _reference("llama")
    model = T.build("llama", ref.state_dict)
    MODEL_TYPE_TO_APPLY_LIGER_FN["llama"](model=model)
    replica = model._replicate_for_data_parallel()
    assert replica.forward.__self__ is replica and is_liger_forward(replica.forward)
    again = replica._replicate_for_data_parallel()  # (the hook was rebound too)
    assert again.forward.__self__ is again
    twin = copy.deepcopy(model)
    assert twin.forward.__self__ is twin
    ids, mask, labels = ref.batch
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        assert torch.equal(twin(input_ids=ids, attention_mask=mask, labels=labels).loss, expected)
    unpatch(model)
    assert type(model)._replicate_for_data_parallel is nn.Module._replicate_for_data_parallel
    assert model._replicate_for_data_parallel().forward.__func__ is type(model).forward


def _save(model) -> bytes:
    buffer = io.BytesIO()
    torch.save(model, buffer)
    return buffer.getvalue()


def _load(data: bytes):
    return torch.load(io.BytesIO(data), weights_only=False)


@pytest.mark.parametrize("mode", ["classes", "instance"])
def test_patched_model_pickles(mode):
    """``torch.save(model)`` (a whole-model pickle) of a patched model loads as the same patched model:
    the replacement classes are found by name in ``liger_kernel.transformers.patched_classes``, and an
    instance-patched model's forward is rebuilt for, and bound to, the loaded model."""
    ref = _reference("mixtral")  # all three kinds of replacement: RMSNorm, a Method (experts), the forward
    if mode == "classes":
        with liger_patched("mixtral"):
            model = T.build("mixtral", ref.state_dict)
    else:
        model = T.build("mixtral", ref.state_dict)
        MODEL_TYPE_TO_APPLY_LIGER_FN["mixtral"](model=model)
    loaded = _load(_save(model))
    assert [type(m) for m in loaded.modules()] == [type(m) for m in model.modules()]
    # With the ``kernels`` package (transformers >= 5.25), each attention layer keeps private wrappers
    # of the kernelized functions, rebuilt on load from the type of the modeling module's global --
    # which the RoPE patch replaces. They must come back as Hugging Face's own wrappers.
    for original, rebuilt in zip(model.modules(), loaded.modules(), strict=True):
        wrappers = original.__dict__.get("_kernel_funcs", {})
        assert {k: type(v) for k, v in rebuilt.__dict__.get("_kernel_funcs", {}).items()} == {
            k: type(v) for k, v in wrappers.items()
        }
    assert any(type(m).__module__ == "liger_kernel.transformers.patched_classes" for m in loaded.modules())
    if mode == "instance":
        assert is_liger_forward(loaded.forward) and loaded.forward.__self__ is loaded
        assert inspect.signature(loaded.forward) == inspect.signature(model.forward)
        replica = loaded._replicate_for_data_parallel()
        assert replica.forward.__self__ is replica
    ids, mask, labels = ref.batch
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        assert torch.equal(loaded(input_ids=ids, attention_mask=mask, labels=labels).loss, expected)
    if mode == "instance":
        unpatch(model)


def _module_attrs(model: nn.Module) -> dict[str, tuple[type, list[str]]]:
    """Each submodule's class and the names in its ``__dict__``, by qualified name."""
    return {name: (type(m), sorted(vars(m))) for name, m in model.named_modules()}


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_unpatch_undoes_a_copy_and_only_the_copy(how):
    """A deep copy or a pickle of an instance-patched model carries its own record of what patching
    changed: ``unpatch(copy)`` restores the copy exactly and leaves the original patched."""
    import copy

    ref = _reference("mixtral")  # all three kinds of replacement: RMSNorm, a Method (experts), the forward
    model = T.build("mixtral", ref.state_dict)
    before = _module_attrs(model)
    MODEL_TYPE_TO_APPLY_LIGER_FN["mixtral"](model=model)
    patched = _module_attrs(model)
    assert patched != before
    twin = copy.deepcopy(model) if how == "deepcopy" else _load(_save(model))
    assert _module_attrs(twin) == patched

    unpatch(twin)
    assert _module_attrs(twin) == before
    assert _module_attrs(model) == patched and is_liger_forward(model.forward)
    assert _patched_attributes("mixtral")  # the original still holds RoPE; the copy never held it
    unpatch(twin)  # a second time: nothing left to undo
    assert _module_attrs(twin) == before

    unpatch(model)
    assert _module_attrs(model) == before and not _patched_attributes("mixtral")
    for restored in (model, twin):
        out, grads = T.train_step(restored, *ref.batch)
        assert torch.equal(out.loss, ref.loss) and torch.equal(out.logits, ref.train_logits)
        assert all(torch.equal(grads[k], ref.grads[k]) for k in ref.grads)


def test_data_parallel_replica_does_not_carry_the_record():
    """A replica is a shallow copy of the model's ``__dict__``: a record shared with the original would
    name the original's submodules, so ``unpatch(replica)`` would undo the original."""
    model = T.build("llama", _reference("llama").state_dict)
    MODEL_TYPE_TO_APPLY_LIGER_FN["llama"](model=model)
    patched = _module_attrs(model)
    replica = model._replicate_for_data_parallel()
    unpatch(replica)
    assert _module_attrs(model) == patched and is_liger_forward(model.forward)
    unpatch(model)
    assert not is_liger_forward(model.forward)


def test_patched_model_unpickles_in_a_fresh_process(tmp_path):
    """A process that has not patched anything makes the replacement classes on first lookup."""
    ref = _reference("llama")
    model = T.build("llama", ref.state_dict)
    MODEL_TYPE_TO_APPLY_LIGER_FN["llama"](model=model)
    path = tmp_path / "model.pt"
    torch.save(model, path)
    ids, mask, labels = ref.batch
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, labels=labels).loss.item()
    unpatch(model)
    torch.save((ids, mask, labels), tmp_path / "batch.pt")
    script = f"""
import torch
from liger_kernel.transformers.model.causal_lm import is_liger_forward
model = torch.load({str(path)!r}, weights_only=False)
ids, mask, labels = torch.load({str(tmp_path / "batch.pt")!r})
assert is_liger_forward(model.forward), model.forward
assert type(model.model.norm).__name__ == "LigerLlamaRMSNorm", type(model.model.norm)
with torch.no_grad():
    print(repr(model(input_ids=ids, attention_mask=mask, labels=labels).loss.item()))
# RoPE is patched on the modeling module, which this process has not patched: applying to the loaded
# model patches it (the rest is patched already), and unpatch undoes both.
import transformers.models.llama.modeling_llama as modeling
from liger_kernel.transformers import MODEL_TYPE_TO_APPLY_LIGER_FN, unpatch
hf_rope = modeling.apply_rotary_pos_emb
MODEL_TYPE_TO_APPLY_LIGER_FN["llama"](model=model)
assert modeling.apply_rotary_pos_emb is not hf_rope
unpatch(model)
assert modeling.apply_rotary_pos_emb is hf_rope
assert not is_liger_forward(model.forward), model.forward
assert type(model.model.norm).__name__ == "LlamaRMSNorm", type(model.model.norm)
"""
    # The child inherits this process's environment: TRITON_INTERPRET=1 where the plugin set it (CPU),
    # compiled kernels on a GPU, where the model and batch are on the GPU.
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert float(out.stdout.strip().splitlines()[-1]) == expected


@pytest.mark.parametrize("model_type", [t for t in ("olmo2", "olmo3", "gpt_oss") if t in T.MODEL_TYPES])
def test_rope_replacements_that_adapt_the_tables_match_the_model(model_type):
    """OLMo's RoPE gets fp32 cos/sin with bf16 q/k and returns q's dtype; gpt-oss's tables hold half a
    head. Each replacement returns what the model's own function returns, in its dtype."""
    mod = T.modeling(model_type)
    original = mod.apply_rotary_pos_emb
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 5, 8, generator=g).to(T.DEVICE, torch.bfloat16)
    k = torch.randn(2, 2, 5, 8, generator=g).to(T.DEVICE, torch.bfloat16)
    width = 4 if model_type == "gpt_oss" else 8
    angles = torch.rand(1, 5, width, generator=g).to(T.DEVICE) * 3
    cos, sin = angles.cos(), angles.sin()
    if model_type == "gpt_oss":
        cos, sin = cos.to(torch.bfloat16), sin.to(torch.bfloat16)
    with liger_patched(model_type, rms_norm=False, swiglu=False, fused_linear_cross_entropy=False):
        assert mod.apply_rotary_pos_emb is not original
        ours = mod.apply_rotary_pos_emb(q, k, cos, sin)
    expected = original(q, k, cos, sin)
    assert [t.dtype for t in ours] == [t.dtype for t in expected]
    golden = original(q.double(), k.double(), cos.double(), sin.double())
    assert_close_to_reference(ours, expected, golden, msg=model_type)


# ----------------------------------------------------------------------------------------------------
# Llama 4: what the per-type tests above do not reach
# ----------------------------------------------------------------------------------------------------


@pytest.mark.skipif("llama4_text" not in T.MODEL_TYPES, reason="transformers without Llama 4")
def test_llama4_dense_mlp_keeps_its_width():
    """A dense layer's Llama4TextMLP is built with intermediate_size_mlp and does not store it: patched
    in place, it keeps its own width (read off gate_proj) and computes what it did."""
    model = T.build(
        "llama4_text", config=T.tiny_config("llama4_text", num_hidden_layers=2, interleave_moe_layer_step=2)
    )
    dense = model.model.layers[0].feed_forward
    assert type(dense).__name__ == "Llama4TextMLP" and dense.gate_proj.out_features == 40
    x = torch.randn(3, 32, device=T.DEVICE)
    expected = dense(x)
    lt.apply_liger_kernel_to_llama4_text(model=model, rope=False, rms_norm=False)
    assert isinstance(dense, lt.LigerSwiGLUMLP) and dense.intermediate_size == 40
    assert_close(dense(x), expected)
    unpatch(model)
    assert type(dense).__name__ == "Llama4TextMLP"


def test_multimodal_arguments_send_the_batch_to_the_original_forward():
    """Llama 4's image-text forward merges the images inside itself: with images the original runs (and
    returns logits); given as None they are dropped before the text decoder."""
    from liger_kernel.transformers.model.causal_lm import liger_causal_lm_forward

    calls = []

    def original(self, input_ids=None, pixel_values=None, labels=None, **kwargs):
        calls.append(pixel_values)
        return "original"

    class Decoder:
        def __call__(self, **kwargs):
            calls.append(sorted(kwargs))
            raise RuntimeError("decoder reached")

    model = SimpleNamespace(training=True, config=SimpleNamespace(return_dict=True))
    model.inner = SimpleNamespace(decoder=Decoder())
    forward = liger_causal_lm_forward(original, decoder="inner.decoder", multimodal_args=("pixel_values",))
    ids = torch.ones(1, 4, dtype=torch.long)
    assert forward(model, ids, torch.ones(1, 3), ids) == "original"
    with pytest.raises(RuntimeError, match="decoder reached"):
        forward(model, input_ids=ids, pixel_values=None, labels=ids)
    assert calls[0].shape == (1, 3) and calls[1] == ["input_ids"]


@pytest.mark.skipif("llama4_text" not in T.MODEL_TYPES, reason="transformers without Llama 4")
def test_llama4_rope_replacement_matches_the_model():
    """The patched ``apply_rotary_emb`` returns what the model's own does (bf16 q/k, a complex64 table),
    in q's dtype."""
    mod = T.modeling("llama4_text")
    original = mod.apply_rotary_emb
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 5, 4, 8, generator=g).to(T.DEVICE, torch.bfloat16)
    k = torch.randn(2, 5, 2, 8, generator=g).to(T.DEVICE, torch.bfloat16)
    angles = torch.rand(1, 5, 4, generator=g).to(T.DEVICE) * 3
    freqs_cis = torch.polar(torch.ones_like(angles), angles)
    with liger_patched("llama4_text", rms_norm=False, swiglu=False, fused_linear_cross_entropy=False):
        assert mod.apply_rotary_emb is not original
        ours = mod.apply_rotary_emb(q, k, freqs_cis)
    expected = original(q, k, freqs_cis)
    assert [t.dtype for t in ours] == [t.dtype for t in expected] == [torch.bfloat16] * 2

    def golden(x):  # the complex product in complex128
        pairs = torch.view_as_complex(x.double().unflatten(-1, (-1, 2)).contiguous())
        return torch.view_as_real(pairs * freqs_cis.to(torch.complex128)[:, :, None]).flatten(3)

    assert_close_to_reference(ours, expected, (golden(q), golden(k)), msg="llama4 rope")


@pytest.mark.skipif("llama4_text" not in T.MODEL_TYPES, reason="transformers without Llama 4")
def test_llama4_experts_and_qk_norm_edge_cases(monkeypatch, caplog):
    """Experts whose activation is not SiLU keep the model's forward; a QK-norm class name that the
    installed transformers lacks (the other release's) is skipped without a warning."""
    mod = T.modeling("llama4_text")
    config = T.tiny_config("llama4_text", hidden_act="gelu")
    experts = mod.Llama4TextExperts(config).to(T.DEVICE)
    torch.nn.init.normal_(experts.gate_up_proj)
    torch.nn.init.normal_(experts.down_proj)
    x = torch.randn(4 * 3, config.hidden_size, device=T.DEVICE)  # 3 tokens for each of the 4 experts
    expected = experts(x)
    with liger_patched("llama4_text", rope=False, rms_norm=False, fused_linear_cross_entropy=False):
        assert "Llama4TextExperts.forward" in _patched_attributes("llama4_text")
        assert torch.equal(experts(x), expected)

    # transformers 5.25 has both names (L2Norm an alias), 5.17 only Llama4TextL2Norm: keep one of them.
    names = [n for n in ("Llama4TextWeightlessRMSNorm", "Llama4TextL2Norm") if hasattr(mod, n)]
    if len(names) == 2:
        monkeypatch.delattr(mod, "Llama4TextL2Norm")
    with caplog.at_level("WARNING", logger="liger_kernel"):
        with liger_patched("llama4_text"):
            assert getattr(mod, names[0]).__module__.startswith("liger_kernel")
    assert "has no" not in caplog.text


@pytest.mark.skipif("llama4_text" not in T.MODEL_TYPES, reason="transformers without Llama 4")
def test_llama4_qk_norm_alias_gets_one_replacement_class_and_pickles():
    """transformers 5.25 binds Llama4TextL2Norm to Llama4TextWeightlessRMSNorm: one replacement class is
    made (under the class's own name), so patched models pickle, in both ways of patching."""
    mod = T.modeling("llama4_text")
    if getattr(mod, "Llama4TextL2Norm", None) is not getattr(mod, "Llama4TextWeightlessRMSNorm", None):
        pytest.skip("this transformers has one name for the QK-norm class")
    hf_norm = mod.Llama4TextL2Norm
    with liger_patched("llama4_text"):
        assert mod.Llama4TextL2Norm is hf_norm and mod.Llama4TextWeightlessRMSNorm is not hf_norm
        norm = pickle.loads(pickle.dumps(mod.Llama4TextWeightlessRMSNorm(1e-5)))
        assert type(norm) is mod.Llama4TextWeightlessRMSNorm and norm.variance_epsilon == 1e-5
    model = T.build("llama4_text")
    lt.apply_liger_kernel_to_llama4_text(model=model)
    copy = pickle.loads(pickle.dumps(model))
    assert type(copy.model.layers[0].self_attn.qk_norm) is type(model.model.layers[0].self_attn.qk_norm)
    unpatch(copy)
    unpatch(model)
    assert type(copy.model.layers[0].self_attn.qk_norm) is hf_norm


# Image-text models whose text decoder is another model type's (Mistral 3)
# ----------------------------------------------------------------------------------------------------


@pytest.mark.skipif("mistral3" not in T.MODEL_TYPES, reason="transformers without Mistral 3")
def test_text_decoder_entry_patches_the_decoder_modules_the_model_uses():
    from transformers.models.ministral3 import modeling_ministral3
    from transformers.models.mistral import modeling_mistral
    from transformers.models.mistral3 import modeling_mistral3

    assert {MODEL_SPECS["mistral3"].module_of(t) for t in MODEL_SPECS["mistral3"].targets("rope")} == {
        MODEL_SPECS["mistral"].module,
        MODEL_SPECS["ministral3"].module,
    }
    originals = {m: m.apply_rotary_pos_emb for m in (modeling_mistral, modeling_ministral3)}
    projector_norm = modeling_mistral3.Mistral3RMSNorm
    model = T.build("mistral3")  # the Ministral 3 text decoder
    lt.apply_liger_kernel_to_mistral3(model=model)
    # RoPE is a module global: only the decoder module this model runs is patched
    assert modeling_mistral.apply_rotary_pos_emb is originals[modeling_mistral]
    assert modeling_ministral3.apply_rotary_pos_emb is not originals[modeling_ministral3]
    assert isinstance(model.model.language_model.norm, LigerRMSNorm)
    assert type(model.model.multi_modal_projector.norm) is projector_norm  # the projector keeps its code
    assert not any(type(m).__module__.startswith("liger_kernel") for m in model.model.vision_tower.modules())
    unpatch(model)
    assert all(m.apply_rotary_pos_emb is f for m, f in originals.items())

    with liger_patched("mistral3"):  # classes: every decoder the config may name
        assert all(m.apply_rotary_pos_emb is not f for m, f in originals.items())
        assert issubclass(modeling_mistral.MistralRMSNorm, LigerRMSNorm)
        assert modeling_mistral3.Mistral3RMSNorm is projector_norm
    assert all(m.apply_rotary_pos_emb is f for m, f in originals.items())


def test_text_decoder_missing_from_transformers_is_skipped(monkeypatch):
    """A text decoder type newer than the installed transformers: its targets are skipped, the other
    decoder's apply."""
    from transformers.models.mistral import modeling_mistral

    from liger_kernel.transformers import model_specs

    decoder = dataclasses.replace(
        MODEL_SPECS["ministral3"], module="transformers.models.future.modeling_future"
    )
    monkeypatch.setitem(MODEL_SPECS, "ministral3", decoder)
    spec = model_specs._text_decoder_of(
        "mistral3", "Mistral3ForConditionalGeneration", ("mistral", "ministral3"), ""
    )
    monkeypatch.setitem(MODEL_SPECS, "mistral3", spec)
    assert spec.modeling_of(spec.targets("rms_norm")[1]) is None
    original = modeling_mistral.MistralRMSNorm
    with liger_patched("mistral3"):
        assert issubclass(modeling_mistral.MistralRMSNorm, LigerRMSNorm)
    assert modeling_mistral.MistralRMSNorm is original
    assert any("modeling_future" in line for line in describe("mistral3")["rms_norm"])
