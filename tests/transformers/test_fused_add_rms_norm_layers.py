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
    position embeddings (cos, sin) as inputs so that they take the run's dtype."""

    def __init__(self, layer: nn.Module, kwargs: dict) -> None:
        super().__init__()
        self.layer = layer
        self.kwargs = kwargs

    def forward(self, hidden_states, cos, sin):
        return self.layer(hidden_states, **self.kwargs, position_embeddings=(cos, sin))


def _first_layer_call(model: nn.Module) -> tuple[torch.Tensor, dict]:
    """The hidden states and keyword arguments the model passes to its first decoder layer."""
    layer = _decoder_layers(model)[0]
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("model_type", FUSED_TYPES)
def test_fused_layer_matches_the_unpatched_layer(model_type, dtype):
    # (batched_mm experts: grouped_mm has no float64 kernel for the golden)
    config = T.tiny_config(model_type, experts_implementation="batched_mm")
    model = T.build(model_type, config=config)
    hidden_states, kwargs = _first_layer_call(model)
    cos, sin = kwargs.pop("position_embeddings")
    patched = copy.deepcopy(model)
    apply_liger_kernel(model_type, model=patched, **_only_fused_add(model_type))
    layer, patched_layer = _decoder_layers(model)[0], _decoder_layers(patched)[0]
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
        _Layer(layer, kwargs), _Layer(patched_layer, kwargs), x, cos, sin, dtype=dtype, msg=model_type
    )


def test_option_defaults_and_description():
    """On by default for every type with a decoder-layer entry (all exact: the test above); no option
    at all for OLMo 2/3, whose adds feed no norm, nor (not yet) for Llama 4, whose layer calls its MLP
    ``feed_forward`` (dense or MoE), and Mistral 3, whose decoder layers live in other types' modules."""
    without = {t for t, spec in MODEL_SPECS.items() if spec.decoder_layer is None}
    assert without == {"olmo2", "olmo3", "llama4_text", "llama4", "mistral3"}
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
    hidden_states, kwargs = _first_layer_call(model)
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
    hidden_states, kwargs = _first_layer_call(model)
    apply_liger_kernel("llama", model=model, **_only_fused_add("llama"))
    layer = _decoder_layers(model)[0]
    x = hidden_states.clone().requires_grad_()

    def run(inp):
        return layer(inp, **kwargs).square().sum()

    compiled = torch.compile(run, fullgraph=True, backend="aot_eager")
    got = torch.autograd.grad(compiled(x), x)
    want = torch.autograd.grad(run(x), x)
    torch.testing.assert_close(got, want)
