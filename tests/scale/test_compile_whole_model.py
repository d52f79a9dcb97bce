"""torch.compile(fullgraph=True) of whole Liger-patched tiny models, forward and backward.

For each supported model type, the patched model is compiled with ``fullgraph=True`` (any graph break,
ours or Hugging Face's, raises), trained one step through the compiled forward (``loss.backward()``),
and its loss and every parameter gradient equal eager patched training of the same weights within
float32 tolerances. The backend records the FX graphs it is handed, to show the Liger custom ops
(``torch.ops.liger.*``) are inside the one graph rather than run eagerly around it.

Backends: ``aot_eager`` on CPU (dynamo + AOTAutograd with the fake/meta registrations of our ops,
no code generation; kernels run in Triton's interpreter), ``inductor`` on CUDA.
Not covered: dynamic shapes (one shape per test), mixed precision, ``mode="max-autotune"``, generation.
"""

from __future__ import annotations

import _hf_tiny as T
import pytest
import torch

from liger_kernel.transformers import _apply_liger_kernel_to_instance
from liger_kernel.transformers.model.causal_lm import is_liger_forward
from liger_testing import assert_close


class _RecordingBackend:
    """Delegates to a real backend; keeps the names of the ops each captured graph calls."""

    def __init__(self, name: str) -> None:
        self.inner = torch._dynamo.lookup_backend(name)
        self.graphs: list[set[str]] = []

    def __call__(self, gm: torch.fx.GraphModule, example_inputs):
        self.graphs.append({str(node.target) for node in gm.graph.nodes if node.op == "call_function"})
        return self.inner(gm, example_inputs)


def _xfail_if_hugging_face_fails_alone(model_type: str, backend_name: str, exc: Exception) -> None:
    """When the unpatched model fails to compile the same way, the failure is Hugging Face's (or
    PyTorch's), not ours: xfail with both errors instead of passing or blaming the kernels. (Seen on
    the H200 with inductor: Mixtral's grouped_mm fallback backward guards on a data-dependent size.)"""
    torch._dynamo.reset()
    plain = T.build(model_type)
    try:
        T.train_step(torch.compile(plain, fullgraph=True, backend=backend_name), *T.batch())
    except Exception as plain_exc:
        if type(plain_exc) is type(exc):
            pytest.xfail(f"the unpatched {model_type} model fails to compile too: {type(exc).__name__}")


# The types added with issue 20 compile in the GPU run (inductor); on CPU only Qwen3 (QK-norm inside
# the graph; Mixtral already has the experts' gate there), to keep the interpreter's time in CI down.
# (Each new type passed here on CPU by hand -- Llama 4's two on 2026-12-04 -- except Gemma 3's two,
# whose q_norm/k_norm run on transposed q/k: RMSNorm's backward fake gives dx x's strides while the
# kernel returns it contiguous -- the RMSNorm strides fix in ops/rms_norm.py.)
_COMPILED_ON_CPU = (*T.FIRST_TYPES, "qwen3")


@pytest.mark.parametrize(
    "model_type",
    [t if t in _COMPILED_ON_CPU else pytest.param(t, marks=pytest.mark.gpu) for t in T.MODEL_TYPES],
)
def test_compiled_patched_model_trains_like_eager(model_type, device):
    torch._dynamo.reset()
    ids, mask, labels = T.batch()
    eager, compiled_model = T.build(model_type), T.build(model_type)
    _apply_liger_kernel_to_instance(eager)
    _apply_liger_kernel_to_instance(compiled_model)
    assert is_liger_forward(compiled_model.forward)
    expected, expected_grads = T.train_step(eager, ids, mask, labels)

    backend_name = "inductor" if device == "cuda" else "aot_eager"
    backend = _RecordingBackend(backend_name)
    compiled = torch.compile(compiled_model, fullgraph=True, backend=backend)
    try:
        out, _ = T.train_step(compiled, ids, mask, labels)  # backward through the compiled forward
    except Exception as exc:
        _xfail_if_hugging_face_fails_alone(model_type, backend_name, exc)
        raise
    grads = T.grads(compiled_model)  # by the model's own parameter names (no "_orig_mod." prefix)

    assert len(backend.graphs) == 1, "fullgraph=True compiles exactly one graph"
    liger_ops = {t for t in backend.graphs[0] if t.startswith("liger.")}
    # every model type runs at least RMSNorm and the fused linear cross entropy inside the graph
    assert any("rms_norm" in t for t in liger_ops) and any(
        "fused_linear_cross_entropy" in t for t in liger_ops
    )
    assert_close(out.loss.detach(), expected.loss.detach())
    assert set(grads) == set(expected_grads)  # (a multimodal model's vision tower gets none from text)
    assert_close(grads, expected_grads)
