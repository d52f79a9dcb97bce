"""The ``fused_add_rms_norm`` option: each model type's decoder layer with the generic fused forward
against the same layer unpatched, in reference-error mode (liger_testing.assert_modules_equivalent:
outputs, the gradient of the layer's input and of every parameter, fp32 and bf16, float64 golden).

Only the fused add + norm differs between the two arms (every other option off, Hugging Face's norm
modules in both), so these tests are what "on by default only where exact" rests on: a type whose
layer the generic forward does not reproduce fails here. Whole-model checks with every option on are
in test_monkey_patch (class and instance patching, undo) and the convergence runner.
"""

from __future__ import annotations

import copy

import _hf_tiny as T
import pytest
import torch
from torch import nn

from liger_kernel.transformers import describe, liger_patched
from liger_kernel.transformers.model_specs import MODEL_SPECS
from liger_kernel.transformers.monkey_patch import apply_liger_kernel
from liger_testing import assert_modules_equivalent

FUSED_TYPES = [t for t in T.MODEL_TYPES if MODEL_SPECS[t].decoder_layer is not None]


def _only_fused_add(model_type: str) -> dict[str, bool]:
    options = {o: False for o in MODEL_SPECS[model_type].option_defaults()}
    return {**options, "fused_add_rms_norm": True}


class _Layer(nn.Module):
    """One decoder layer called as the model calls it: the captured keyword arguments, with the
    position embeddings (cos, sin) and a float attention mask as inputs, so that they take the run's
    dtype as in a model of that dtype. (Llama 4's position embeddings are one complex table, which stays
    in the keyword arguments: a complex table has no bf16 form.)"""

    def __init__(self, layer: nn.Module, kwargs: dict, names: tuple[str, ...]) -> None:
        super().__init__()
        self.layer = layer
        self.kwargs = kwargs
        self.names = names

    def forward(self, hidden_states, *tensors):
        given = dict(zip(self.names, tensors))
        if "cos" in given:
            given["position_embeddings"] = (given.pop("cos"), given.pop("sin"))
        return self.layer(hidden_states, **self.kwargs, **given)

    @staticmethod
    def split(kwargs: dict) -> tuple[dict, tuple[str, ...], tuple[torch.Tensor, ...]]:
        """The keyword arguments that stay, and the names and values of those that become inputs."""
        kwargs, names, tensors = dict(kwargs), [], []
        if isinstance(kwargs.get("position_embeddings"), tuple):
            names += ["cos", "sin"]
            tensors += list(kwargs.pop("position_embeddings"))
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.is_floating_point():
            names.append("attention_mask")
            tensors.append(kwargs.pop("attention_mask"))
        return kwargs, tuple(names), tuple(tensors)


def _layer_call(model: nn.Module, index: int = 0) -> tuple[torch.Tensor, dict]:
    """The hidden states and keyword arguments the model passes to its decoder layer ``index``."""
    layer = _decoder_layers(model)[index]
    seen = {}

    def hook(module, args, kwargs):
        seen["hidden_states"] = (args[0] if args else kwargs["hidden_states"]).detach()
        seen["kwargs"] = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        raise _Captured

    handle = layer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            model(input_ids=T.batch()[0], attention_mask=T.batch()[1], use_cache=False)
    except _Captured:
        pass
    finally:
        handle.remove()
    return seen["hidden_states"], seen["kwargs"]


class _Captured(Exception):
    pass


def _decoder_layers(model: nn.Module) -> nn.ModuleList:
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and type(module[0]).__name__.endswith("DecoderLayer"):
            return module
    raise AssertionError(f"no decoder layers in {type(model).__name__}")


def _check_layer(model_type: str, config, dtype: torch.dtype, index: int = 0) -> None:
    model = T.build(model_type, config=config)
    hidden_states, kwargs = _layer_call(model, index)
    kwargs, names, tensors = _Layer.split(kwargs)
    patched = copy.deepcopy(model)
    apply_liger_kernel(model_type, model=patched, **_only_fused_add(model_type))
    layer, patched_layer = _decoder_layers(model)[index], _decoder_layers(patched)[index]
    assert type(patched_layer) is not type(layer) and isinstance(patched_layer, type(layer))

    # a residual stream larger than the branch outputs, as in a trained model, and random weights in the
    # norms (initialized to ones or zeros, they would hide a wrong weight or offset)
    x = (4 * hidden_states).requires_grad_()
    with torch.no_grad():
        for m in (layer, patched_layer):
            torch.manual_seed(0)
            for name, p in m.named_parameters():
                if "norm" in name:
                    p.copy_(torch.randn_like(p) * 0.5)
    assert_modules_equivalent(
        _Layer(layer, kwargs, names),
        _Layer(patched_layer, kwargs, names),
        x,
        *tensors,
        dtype=dtype,
        msg=model_type,
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("model_type", FUSED_TYPES)
def test_fused_layer_matches_the_unpatched_layer(model_type, dtype):
    # (batched_mm experts: grouped_mm has no float64 kernel for the golden)
    _check_layer(model_type, T.tiny_config(model_type, experts_implementation="batched_mm"), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_llama4_dense_layer_matches_the_unpatched_layer(dtype):
    """The tiny Llama 4's one layer is MoE (its feed_forward returns flattened tokens and router scores);
    with every second layer MoE, layer 0 is dense (a Llama4TextMLP returning the input's shape)."""
    config = T.tiny_config(
        "llama4_text", experts_implementation="batched_mm", num_hidden_layers=2, interleave_moe_layer_step=2
    )
    model = T.build("llama4_text", config=config)
    assert not model.model.layers[0].is_moe_layer and model.model.layers[1].is_moe_layer
    _check_layer("llama4_text", config, dtype, index=0)


def test_option_defaults_and_description():
    """On by default for every type with a decoder-layer entry (all exact: the test above); no option
    at all for OLMo 2/3, whose adds feed no norm. Mistral 3 takes its text decoders' layers, each in
    its own modeling module."""
    without = {t for t, spec in MODEL_SPECS.items() if spec.decoder_layer is None}
    assert without == {"olmo2", "olmo3"}
    layers = MODEL_SPECS["mistral3"].targets("fused_add_rms_norm")
    assert {(t.cls, t.module) for t in layers} == {
        ("MistralDecoderLayer", "transformers.models.mistral.modeling_mistral"),
        ("Ministral3DecoderLayer", "transformers.models.ministral3.modeling_ministral3"),
    }
    for model_type, spec in MODEL_SPECS.items():
        defaults = spec.option_defaults()
        if model_type in without:
            assert "fused_add_rms_norm" not in defaults
            continue
        assert defaults["fused_add_rms_norm"] is True, model_type
    lines = describe("gemma2")["fused_add_rms_norm"]
    assert "Gemma2DecoderLayer.forward" in lines[0] and "pre_feedforward_layernorm" in lines[0]
    assert "casting_mode='gemma'" in lines[0]


def test_class_patching_and_undo_swap_the_layer_forward():
    modeling = T.modeling("llama")
    original = modeling.LlamaDecoderLayer.forward
    with liger_patched("llama", **_only_fused_add("llama")):
        assert modeling.LlamaDecoderLayer.forward is not original
        model = T.build("llama")
    assert modeling.LlamaDecoderLayer.forward is original
    assert isinstance(model.model.layers[0], modeling.LlamaDecoderLayer)


def test_positional_arguments_are_named_by_the_original_signature():
    """Mixtral's layer takes position_embeddings second: a positional call must bind it there."""
    config = T.tiny_config("mixtral", experts_implementation="batched_mm")
    model = T.build("mixtral", config=config)
    hidden_states, kwargs = _layer_call(model)
    patched = copy.deepcopy(model)
    apply_liger_kernel("mixtral", model=patched, **_only_fused_add("mixtral"))
    layer = _decoder_layers(patched)[0]
    by_keyword = layer(hidden_states, **kwargs)
    position_embeddings = kwargs.pop("position_embeddings")
    by_position = layer(hidden_states, position_embeddings, **kwargs)
    assert torch.equal(by_keyword, by_position)
    with pytest.raises(TypeError, match="positional arguments"):
        layer(hidden_states, *range(10))


def test_compile_fullgraph_no_graph_break():
    """The patched layer inside torch.compile(fullgraph=True): no graph break, same result as eager
    (the op's own registration is checked by tests/kernels/test_custom_ops.py's opcheck)."""
    model = T.build("llama")
    hidden_states, kwargs = _layer_call(model)
    apply_liger_kernel("llama", model=model, **_only_fused_add("llama"))
    layer = _decoder_layers(model)[0]
    x = hidden_states.clone().requires_grad_()

    def run(inp):
        return layer(inp, **kwargs).square().sum()

    compiled = torch.compile(run, fullgraph=True, backend="aot_eager")
    got = torch.autograd.grad(compiled(x), x)
    want = torch.autograd.grad(run(x), x)
    torch.testing.assert_close(got, want)
