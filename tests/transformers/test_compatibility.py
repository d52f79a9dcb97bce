"""Drop-in compatibility with Liger Kernel 0.8 (docs/compatibility.md): every name of the table imports,
and its parameters match the ones recorded from the reference's public source (compat_signatures.json,
"module:attribute[.method]" -> parameter names; "*name" keyword-only, "**name" var-keyword). Ours may add
parameters only after the recorded ones, with defaults or keyword-only, so a call written for the
reference binds every argument to the parameter of the same name. CPU, tiny tensors."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import inspect
import json
from pathlib import Path

import pytest
import torch

from liger_testing import assert_close

RECORDED = json.loads((Path(__file__).parent / "compat_signatures.json").read_text())

# Names imported from the package roots by the reference's tests and by TRL, Axolotl, LLaMA-Factory,
# verl and OpenRLHF (checked for import only; their signatures are recorded under their home module).
REEXPORTS = {
    "liger_kernel.transformers": [
        "AutoLigerKernelForCausalLM", "LigerBlockSparseTop2MLP", "LigerCrossEntropyLoss", "LigerExperts",
        "LigerFalconH1SwiGLUMLP", "LigerFusedLinearCrossEntropyLoss", "LigerGEGLUMLP", "LigerLayerNorm",
        "LigerPhi3SwiGLUMLP", "LigerQwen3MoeSwiGLUMLP", "LigerRMSNorm", "LigerSwiGLUMLP", "liger_rotary_pos_emb",
        "liger_llama4_text_rotary_pos_emb",

        "LigerFusedAddRMSNorm",
        "_apply_liger_kernel", "_apply_liger_kernel_to_instance", "MODEL_TYPE_TO_APPLY_LIGER_FN",
        *(f"apply_liger_kernel_to_{t}" for t in ("llama", "mistral", "mixtral", "gemma", "gemma2", "qwen2", "phi3")),
    ],
    "liger_kernel.transformers.trainer_integration": ["_apply_liger_kernel"],
    "liger_kernel.transformers.monkey_patch": ["MODEL_TYPE_TO_APPLY_LIGER_FN"],
    "liger_kernel.ops.cross_entropy": ["liger_cross_entropy_kernel"],
}  # fmt: skip


def _resolve(key: str):
    module, _, attr = key.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _parameters(obj) -> list[inspect.Parameter]:
    params = list(inspect.signature(obj).parameters.values())
    return params[1:] if params and params[0].name == "self" else params  # a method read off its class


def _names(obj) -> list[str]:
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj):
        return [f.name for f in dataclasses.fields(obj)]
    kinds = inspect.Parameter
    out = []
    for p in _parameters(obj):
        prefix = {kinds.KEYWORD_ONLY: "*", kinds.VAR_KEYWORD: "**", kinds.VAR_POSITIONAL: "*"}.get(p.kind, "")
        out.append(prefix + p.name)
    return out


@pytest.mark.parametrize("key", sorted(RECORDED))
def test_signature_matches_reference(key):
    ours = _names(_resolve(key))
    recorded = RECORDED[key]
    if key.startswith("liger_kernel.transformers.auto_model:"):
        ours = [n for n in ours if not n.startswith("*")]  # *model_args / **kwargs pass through
    assert ours[: len(recorded)] == recorded, f"{key}: ours {ours}, reference {recorded}"
    if inspect.isclass(obj := _resolve(key)) and dataclasses.is_dataclass(obj):
        assert ours == recorded
        return
    params = _parameters(obj)[len(recorded) :]
    for p in params:  # ours adds only optional parameters after the reference's
        assert p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD, p.VAR_POSITIONAL) or p.default is not p.empty, (
            key,
            p,
        )


@pytest.mark.parametrize("module", sorted(REEXPORTS))
def test_reexported_names_import(module):
    mod = importlib.import_module(module)
    missing = [name for name in REEXPORTS[module] if not hasattr(mod, name)]
    assert not missing


def test_ops_package_exports_the_functions_of_the_op_modules():
    import liger_kernel.ops as ops

    for key in RECORDED:
        module, _, attr = key.partition(":")
        if module.startswith("liger_kernel.ops.") and attr.endswith(".apply"):
            name = attr.split(".")[0]
            assert getattr(ops, name) is _resolve(f"{module}:{name}")


def test_cross_entropy_output_and_metrics(seed):
    from liger_kernel.transformers.functional import CrossEntropyOutput, liger_cross_entropy

    logits = torch.randn(6, 11)
    target = torch.randint(0, 11, (6,))
    target[1] = -100
    target[2] = logits[2].argmax()
    plain = liger_cross_entropy(logits, target, lse_square_scale=0.1)
    out = liger_cross_entropy(
        logits, target, lse_square_scale=0.1, return_z_loss=True, return_predicted_tokens=True
    )
    assert isinstance(out, CrossEntropyOutput) and out.token_accuracy is None
    assert_close(out.loss, plain)
    z = 0.1 * torch.logsumexp(logits.double(), -1) ** 2
    assert_close(out.z_loss, (z[target != -100].mean()).float())
    expected = torch.where(target != -100, logits.argmax(-1), -1)
    assert torch.equal(out.predicted_tokens, expected)
    loss, z_loss, predicted = out  # iterates the fields that were asked for
    assert predicted is out.predicted_tokens

    acc = liger_cross_entropy(logits, target, return_token_accuracy=True).token_accuracy
    valid = target != -100
    assert_close(acc, (expected == target)[valid].float().mean())


def test_ops_functions_return_the_reference_tuples(seed):
    from liger_kernel.ops import LigerCrossEntropyFunction, LigerFusedLinearCrossEntropyFunction

    x = torch.randn(5, 4, requires_grad=True)
    w = torch.randn(9, 4, requires_grad=True)
    target = torch.tensor([1, -100, 3, 8, 0])
    loss, z, acc, pred = LigerFusedLinearCrossEntropyFunction.apply(x, w, target)
    assert z is None and acc is None and pred is None
    logits = (x @ w.T).double()
    assert_close(loss, torch.nn.functional.cross_entropy(logits, target).float())

    # use_token_scaling: each token's loss times its detached p(target), mean over valid tokens.
    scaled, _, acc, pred = LigerFusedLinearCrossEntropyFunction.apply(
        x, w, target, None, None, -100, 0.0, 0.0, "mean", None, False, None, True, True, True
    )
    valid = target != -100
    p = torch.softmax(logits, -1).gather(1, target.clamp(min=0)[:, None])[:, 0].detach()
    nll = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    assert_close(scaled, ((nll * p)[valid].sum() / valid.sum()).float())
    (gx,) = torch.autograd.grad(scaled, x)
    (gx_ref,) = torch.autograd.grad((nll * p)[valid].sum() / valid.sum(), x)
    assert_close(gx, gx_ref.float())
    assert torch.equal(pred, torch.where(valid, logits.argmax(-1), -1))
    assert_close(acc, (pred == target)[valid].float().mean())

    # The reference overwrites the logits with their gradient, leaf or not; so does its entry point.
    leaf = torch.randn(3, 7, requires_grad=True)
    before = leaf.detach().clone()
    LigerCrossEntropyFunction.apply(leaf, torch.tensor([0, 6, 2]))[0].backward()
    assert not torch.equal(leaf.detach(), before)


def test_out_of_bounds_target_is_catchable_as_in_the_reference():
    from liger_kernel.transformers.functional import liger_cross_entropy

    with pytest.raises(AssertionError, match="out of bounds"):
        liger_cross_entropy(torch.randn(2, 5), torch.tensor([1, 7]))
    with pytest.raises(IndexError):
        liger_cross_entropy(torch.randn(2, 5), torch.tensor([-3, 1]))


def test_fused_linear_loss_positional_ce_weight():
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    ce_weight = torch.rand(9) + 0.5
    module = LigerFusedLinearCrossEntropyLoss(ce_weight)
    assert module.ce_weight is ce_weight and module.ignore_index == -100
    x, w, target = torch.randn(4, 3), torch.randn(9, 3), torch.tensor([0, 8, 2, 5])
    expected = torch.nn.functional.cross_entropy(x @ w.T, target, weight=ce_weight)
    assert_close(module(w, x, target), expected)


def test_norms_without_weight_and_layer_norm_bias():
    from liger_kernel.transformers import LigerLayerNorm, LigerRMSNorm
    from liger_kernel.transformers.functional import liger_rms_norm

    x = torch.randn(3, 8)
    norm = LigerRMSNorm(8, elementwise_affine=False)
    assert norm.weight is None and not list(norm.parameters())
    expected = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    assert_close(norm(x), expected)
    assert_close(liger_rms_norm(x, None, 1e-6), expected)

    ln = LigerLayerNorm(8)
    assert isinstance(ln.bias, torch.nn.Parameter) and not ln.bias.any()
    assert list(ln.state_dict()) == list(torch.nn.LayerNorm(8).state_dict())


def test_rope_table_layouts_and_partial_rotation(seed):
    from liger_kernel.transformers.rope import liger_rotary_pos_emb, liger_rotary_pos_emb_gpt_oss

    q, k = torch.randn(2, 3, 5, 8), torch.randn(2, 1, 5, 8)
    cos, sin = torch.randn(5, 8), torch.randn(5, 8)

    def rotate_half(t):
        return torch.cat([-t[..., t.shape[-1] // 2 :], t[..., : t.shape[-1] // 2]], -1)

    for got, x in zip(liger_rotary_pos_emb(q, k, cos, sin), (q, k)):  # 2-D (seq, head_dim) tables
        assert_close(got, x * cos + rotate_half(x) * sin)
    for got, x in zip(liger_rotary_pos_emb(q, k, cos[:, :4], sin[:, :4]), (q, k)):  # partial: 4 of 8
        assert_close(got[..., :4], x[..., :4] * cos[:, :4] + rotate_half(x[..., :4]) * sin[:, :4])
        assert torch.equal(got[..., 4:], x[..., 4:])
    half_c, half_s = cos[:, :4], sin[:, :4]
    full_c, full_s = torch.cat([half_c, half_c], -1), torch.cat([half_s, half_s], -1)
    for got, x in zip(liger_rotary_pos_emb_gpt_oss(q, k, half_c[None], half_s[None]), (q, k)):
        assert_close(got, x * full_c + rotate_half(x) * full_s)


def test_silu_mul_multipliers_and_moe_modules(seed):
    from types import SimpleNamespace

    from liger_kernel.ops import LigerSiLUMulFunction
    from liger_kernel.transformers import LigerExperts, LigerPhi3SwiGLUMLP

    a, b = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4)
    out = LigerSiLUMulFunction.apply(a, b, 0.5, 3.0)
    expected = torch.nn.functional.silu(a * 0.5) * b * 3.0
    assert_close(out, expected)
    assert_close(torch.autograd.grad(out.sum(), a), torch.autograd.grad(expected.sum(), a))

    config = SimpleNamespace(hidden_size=4, intermediate_size=3, hidden_act="silu", num_local_experts=3)
    experts = LigerExperts(config)
    torch.nn.init.normal_(experts.gate_up_proj)
    torch.nn.init.normal_(experts.down_proj)
    x = torch.randn(5, 4)
    index = torch.tensor([[0, 2], [1, 1], [2, 0], [3, 1], [0, 1]])  # 3: a dropped slot
    weights = torch.rand(5, 2)
    expected = torch.zeros(5, 4)
    for t in range(5):
        for s in range(2):
            e = int(index[t, s])
            if e < 3:
                gate, up = (experts.gate_up_proj[e] @ x[t]).chunk(2)
                expected[t] += weights[t, s] * (experts.down_proj[e] @ (torch.nn.functional.silu(gate) * up))
    assert_close(experts(x, index, weights), expected.detach())

    mlp = LigerPhi3SwiGLUMLP(config)
    gate, up = mlp.gate_up_proj(x).chunk(2, -1)
    assert_close(mlp(x), mlp.down_proj(torch.nn.functional.silu(gate) * up))


def test_utils():
    from liger_kernel.utils import infer_comm_backend, infer_device, transformers_version_dispatch

    assert infer_device() in ("cuda", "npu", "xpu", "cpu")
    assert infer_comm_backend() in ("nccl", "hccl", "xccl", "mpi", "gloo")
    pick = transformers_version_dispatch("0.0.1", lambda: "before", lambda x: x, after_args=("after",))
    assert pick == "after"


def test_silu_mul_on_dtensors(tmp_path, seed):
    """DTensor inputs (tensor parallelism) run the kernel on their local shards; gradients are DTensors."""
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor, Shard, distribute_tensor

    from liger_kernel.ops import LigerSiLUMulFunction

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        mesh = dist.device_mesh.init_device_mesh("cpu", (1,))
        a, b = torch.randn(2, 3, 8, requires_grad=True), torch.randn(2, 3, 8, requires_grad=True)
        da = distribute_tensor(a.detach().clone().requires_grad_(), mesh, [Shard(2)])
        db = distribute_tensor(b.detach().clone().requires_grad_(), mesh, [Shard(2)])
        out = LigerSiLUMulFunction.apply(da, b.detach(), 0.7, 1.3)  # a plain tensor is distributed alike
        assert isinstance(out, DTensor) and out.placements == (Shard(2),)
        expected = torch.nn.functional.silu(a * 0.7) * b * 1.3
        assert_close(out.full_tensor(), expected.detach())
        grad = torch.randn_like(expected)
        LigerSiLUMulFunction.apply(da, db, 0.7, 1.3).backward(distribute_tensor(grad, mesh, [Shard(2)]))
        expected.backward(grad)
        assert_close((da.grad.full_tensor(), db.grad.full_tensor()), (a.grad, b.grad))
    finally:
        dist.destroy_process_group()


# liger_kernel.transformers.model.<module>: attribute -> model type (the reference's import paths of
# the fused-loss forwards, for the model types we support)
PER_TYPE_FORWARDS = {
    **{t: {"lce_forward": t} for t in ("llama", "mistral", "mixtral", "gemma", "gemma2", "qwen2", "phi3")},
    **{t: {"lce_forward": t} for t in ("qwen3", "qwen3_moe", "olmo2", "olmo3", "glm4", "smollm3")},
    **{t: {"lce_forward": t} for t in ("ministral", "deepseek_v3", "gpt_oss")},
    "gemma3": {"causal_forward": "gemma3_text", "multimodal_forward": "gemma3"},
    "llama4": {"lce_forward": "llama4_text"},
}  # fmt: skip
# Import paths the reference's test_monkey_patch.py needs at import for types not supported yet (issue 20).
UNSUPPORTED_TYPE_FORWARDS = {
    "falcon_h1": ["lce_forward"],
    "mllama": ["lce_forward"],
    "paligemma": ["lce_forward"],
    "qwen3_next": ["lce_forward"],
    "qwen3_5": ["lce_forward", "lce_forward_for_multimodal"],
}


def test_per_type_forwards_are_the_patched_forwards():
    from liger_kernel.transformers.model.per_type import dispatching_lce_forward
    from liger_kernel.transformers.monkey_patch import causal_lm_forward

    for module, names in PER_TYPE_FORWARDS.items():
        mod = importlib.import_module(f"liger_kernel.transformers.model.{module}")
        for name, model_type in names.items():
            forward = getattr(mod, name)
            assert forward is causal_lm_forward(model_type), (module, name)
            # the installed transformers' forward signature (the reference's differs by version after these)
            params = list(inspect.signature(forward).parameters)
            assert params[:2] == ["self", "input_ids"] and "labels" in params, (module, params)
        with pytest.raises(AttributeError, match="no attribute 'nothing'"):
            mod.nothing  # noqa: B018
    for module, names in UNSUPPORTED_TYPE_FORWARDS.items():
        mod = importlib.import_module(f"liger_kernel.transformers.model.{module}")
        assert all(getattr(mod, name) is dispatching_lce_forward for name in names)


def test_per_type_forward_runs_the_fused_loss_and_reads_as_the_patched_one(seed):
    import _hf_tiny as T

    from liger_kernel.transformers import apply_liger_kernel_to_llama, monkey_patch
    from liger_kernel.transformers.model.falcon_h1 import lce_forward as dispatching
    from liger_kernel.transformers.model.llama import lce_forward

    model = T.build("llama")
    input_ids, attention_mask, labels = T.batch()
    expected = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
    kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels, skip_logits=True)
    out = lce_forward(model, **kwargs)  # called as the reference's: the model first
    assert out.logits is None
    assert_close(out.loss, expected)
    assert_close(dispatching(model, **kwargs).loss, expected)  # dispatched on config.model_type
    assert inspect.getsource(model.forward) != inspect.getsource(lce_forward)
    apply_liger_kernel_to_llama(model=model)
    try:
        # what the reference's tests compare, and what the Trainer reads to keep dataset columns
        assert model.forward.__func__ is lce_forward
        assert inspect.getsource(model.forward) == inspect.getsource(lce_forward)
        assert list(inspect.signature(model.forward).parameters)[:2] == ["input_ids", "attention_mask"]
    finally:
        monkey_patch.unpatch(model)
    model.config.model_type = "falcon_h1"
    with pytest.raises(NotImplementedError, match="'falcon_h1'"):
        dispatching(model, **kwargs)


def test_patch_is_set_again_after_the_module_attribute_is_replaced():
    """The reference's tests revert by importlib.reload of the modeling module, which sets every
    attribute back while our record says patched: patching again must patch, and unpatch restore the
    value that the reload put there."""
    from transformers.models.llama import modeling_llama

    from liger_kernel.transformers import apply_liger_kernel_to_llama, monkey_patch

    original = modeling_llama.apply_rotary_pos_emb
    reloaded = functools.wraps(original)(lambda *args, **kwargs: original(*args, **kwargs))
    apply_liger_kernel_to_llama(rope=True)
    try:
        patched = modeling_llama.apply_rotary_pos_emb
        assert patched is not original
        modeling_llama.apply_rotary_pos_emb = reloaded  # what a reload does to the module's globals
        apply_liger_kernel_to_llama(rope=True)
        assert modeling_llama.apply_rotary_pos_emb not in (reloaded, original)
        monkey_patch.unpatch("llama")
        assert modeling_llama.apply_rotary_pos_emb is reloaded
    finally:
        monkey_patch.unpatch("llama")
        modeling_llama.apply_rotary_pos_emb = original


def _peer_suite_summary():
    path = Path(__file__).parents[2] / "scripts" / "peer_suite_summary.py"
    spec = importlib.util.spec_from_file_location("peer_suite_summary", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_peer_suite_summary_judges_failures_by_the_expected_list(tmp_path):
    summary = _peer_suite_summary()
    expected = tmp_path / "expected.txt"
    expected.write_text("# comment\ntest_a\\.py::test_known | a documented deviation\ntest/conv/ | not yet\n")
    rules = summary.load_expected(str(expected))
    cls = 'classname="test.t.test_a"'
    (tmp_path / "a.xml").write_text(
        f"""<testsuites><testsuite>
        <testcase {cls} name="test_ok"/>
        <testcase {cls} name="test_known[x]"><failure message="boom"/></testcase>
        <testcase {cls} name="test_new"><failure message="AssertionError: new&#10;more"/></testcase>
        <testcase {cls} name="test_gpus"><skipped type="pytest.xfail" message="needs 8"/></testcase>
        <testcase {cls} name="test_skip"><skipped type="pytest.skip" message="no bf16"/></testcase>
        </testsuite></testsuites>"""
    )
    (tmp_path / "a.log").write_text("")
    row, failures = summary.summarize(
        "test/t/test_a.py", "1", "3", tmp_path / "a.xml", tmp_path / "a.log", rules
    )
    assert row == {
        "file": "test/t/test_a.py", "status": "FAIL", "passed": 1, "failed": 2, "errors": 0, "skipped": 1,
        "xfailed": 1, "expected": 1, "unexpected": 1, "collected": 5, "seconds": "3",
    }  # fmt: skip
    assert [(f["test"], f["expected"], f["why"]) for f in failures] == [
        ("test/t/test_a.py::test_known[x]", "yes", "a documented deviation"),
        ("test/t/test_a.py::test_new", "no", "AssertionError: new"),
    ]
    (tmp_path / "c.xml").write_text(
        '<testsuites><testsuite><testcase classname="" name="test.conv.test_m">'
        '<error message="collection failure"/></testcase></testsuite></testsuites>'
    )
    row, failures = summary.summarize(
        "test/conv/test_m.py", "2", "1", tmp_path / "c.xml", tmp_path / "a.log", rules
    )
    assert (row["status"], row["errors"], row["expected"]) == ("COLLECT_ERROR", 1, 1)
    assert failures[0]["outcome"] == "collection error"


def test_causal_lm_loss_of_custom_forwards(seed):
    """``LigerForCausalLMLoss``, what custom model forwards import: Hugging Face's causal-LM loss of
    ``hidden_states @ lm_head_weight.T`` (labels shifted here, sum / num_items_in_batch when given)."""
    from transformers.loss.loss_utils import ForCausalLMLoss

    from liger_kernel.transformers.model.loss_utils import LigerForCausalLMLoss, unpack_cross_entropy_result

    hidden, weight = torch.randn(2, 5, 8), torch.randn(11, 8)
    labels = torch.randint(0, 11, (2, 5))
    labels[0, 1] = -100
    for num_items in (None, 7):
        expected = ForCausalLMLoss(hidden @ weight.T, labels, 11, num_items_in_batch=num_items)
        loss = LigerForCausalLMLoss(hidden, weight, labels, 8, num_items_in_batch=num_items, unrelated=1)
        assert_close(loss, expected)
    out = LigerForCausalLMLoss(
        hidden, weight, labels, 8, return_token_accuracy=True, return_predicted_tokens=True
    )
    loss, z_loss, accuracy, predicted = unpack_cross_entropy_result(out)
    targets = torch.cat([labels[:, 1:], torch.full((2, 1), -100)], dim=1).reshape(-1)
    argmax = (hidden.reshape(-1, 8) @ weight.T).argmax(-1)
    counted = targets != -100
    assert z_loss is None and torch.equal(predicted, torch.where(counted, argmax, -1))
    assert_close(accuracy, (argmax == targets)[counted].float().mean())
    assert_close(loss, ForCausalLMLoss(hidden @ weight.T, labels, 11))
    assert unpack_cross_entropy_result(loss)[1:] == (None, None, None)
    assert unpack_cross_entropy_result((loss, z_loss))[2:] == (None, None)
    with pytest.raises(ValueError, match="hidden_size is 4"):
        LigerForCausalLMLoss(hidden, weight, labels, 4)


def test_a_failing_lazy_import_names_its_cause(monkeypatch):
    """The packages load their exports on first use (PEP 562): an AttributeError while importing a module
    (a transformers release that renamed something) must not read as "cannot import name"."""
    import liger_kernel.ops
    import liger_kernel.transformers

    def broken(name, *args, **kwargs):
        raise AttributeError("module 'transformers' has no attribute 'RenamedThing'")

    monkeypatch.setattr(importlib, "import_module", broken)
    monkeypatch.delitem(liger_kernel.transformers.__dict__, "LigerRMSNorm", raising=False)
    with pytest.raises(
        ImportError, match=r"importing liger_kernel.transformers.rms_norm failed: .*RenamedThing"
    ):
        from liger_kernel.transformers import LigerRMSNorm  # noqa: F401
    with pytest.raises(ImportError, match=r"importing liger_kernel.ops.rms_norm failed: .*RenamedThing"):
        liger_kernel.ops.LigerRMSNormFunction  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'NoSuchName'"):  # an unknown name stays that
        liger_kernel.transformers.NoSuchName  # noqa: B018
