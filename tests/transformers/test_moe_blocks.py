"""The MoE blocks of every patched MoE model type, patched in place against Hugging Face's, in float32.

One sparse block (router, experts and, for DeepSeek-V3, the shared expert) of a tiny model, run through
each of transformers' experts implementations: ``batched_mm`` and ``grouped_mm`` call the experts'
``_apply_gate``, which Liger replaces; ``eager`` inlines the gate (gpt-oss's calls ``_apply_gate`` there
too). ``liger_testing.assert_modules_equivalent`` compares the block's outputs, the input gradient and
every parameter gradient (router, fused gate_up and down projections, shared expert) with a float64
copy of the unpatched block, in reference-error mode: the patched block must be as close to float64 as
Hugging Face's own float32 block is. A mistake in the gate_up halves, the activation, the routing
weights or the expert dispatch shows up here, in one block, before any training run.
"""

from __future__ import annotations

import copy

import _hf_tiny as T
import pytest
import torch

from liger_kernel.transformers import apply_liger_kernel
from liger_kernel.transformers.model_specs import MODEL_SPECS, Method
from liger_testing import assert_modules_equivalent


def _replaces_an_experts_gate(model_type: str) -> bool:
    spec = MODEL_SPECS[model_type]
    return any(isinstance(x, Method) and x.method == "_apply_gate" for x in spec.targets(spec.mlp_option))


# every table entry that replaces an experts gate (llama4's too, once the table has it)
MOE_TYPES = [t for t in T.MODEL_TYPES if _replaces_an_experts_gate(t)]
IMPLEMENTATIONS = ("batched_mm", "grouped_mm", "eager")


def test_the_moe_model_types_are_covered():
    assert {"mixtral", "qwen3_moe", "deepseek_v3", "gpt_oss"} <= set(MOE_TYPES)
    missing = {t for t, s in MODEL_SPECS.items() if s.available() and _replaces_an_experts_gate(t)}
    assert missing <= set(T.MODEL_TYPES), f"no tiny config in _hf_tiny for {missing - set(T.MODEL_TYPES)}"


def _sparse_block(model: torch.nn.Module) -> tuple[str, torch.nn.Module]:
    return next((name, m) for name, m in model.named_modules() if hasattr(m, "experts"))


class _Block(torch.nn.Module):
    """A sparse block run with ``implementation`` experts, and with ``batched_mm`` in float64 (the
    golden): torch's grouped matmul has no float64; batched_mm is the same experts math, one matmul per
    token and expert."""

    def __init__(self, block: torch.nn.Module, implementation: str) -> None:
        super().__init__()
        self.block = block
        self.implementation = implementation

    def forward(self, x: torch.Tensor):
        f64 = x.dtype == torch.float64 and self.implementation == "grouped_mm"
        self.block.experts.config._experts_implementation = "batched_mm" if f64 else self.implementation
        return self.block(x)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("model_type", MOE_TYPES)
def test_patched_moe_block_matches_hugging_face(model_type, implementation):
    config = T.tiny_config(model_type)
    config._experts_implementation = implementation
    model = T.build(model_type, config=config)
    name, reference = _sparse_block(model)

    patched_model = copy.deepcopy(model)
    spec = MODEL_SPECS[model_type]
    # only the MLP option: nothing else lives in the block, and nothing module-wide gets patched
    apply_liger_kernel(
        model_type, model=patched_model, **{o: o == spec.mlp_option for o in spec.option_defaults()}
    )
    candidate = dict(patched_model.named_modules())[name]
    assert type(candidate.experts) is not type(reference.experts)  # the experts' gate is Liger's

    g = torch.Generator().manual_seed(0)
    x = torch.randn(T.BATCH, T.SEQ, config.hidden_size, generator=g).to(T.DEVICE).requires_grad_(True)
    assert_modules_equivalent(
        _Block(reference, implementation),
        _Block(candidate, implementation),
        x,
        dtype=torch.float32,
        msg=f"{model_type} {name} ({implementation} experts)",
    )
