"""The convergence runner catches planted bugs, passes correct re-implementations, and refuses runs it
cannot judge. The patches (plain PyTorch, no liger_kernel) are in ``_planted_patches.py``."""

from __future__ import annotations

import math

import _planted_patches as planted
import pytest
import torch

from liger_testing.convergence import (
    ConvergenceSetupError,
    RunConfig,
    available_specs,
    get_spec,
    load_dataset,
    register_spec,
    run_convergence,
    tiny_config,
)

pytestmark = pytest.mark.convergence

FAST = dict(model="llama", steps=6, dtype=torch.float32, batch_size=2, seq_len=16)


def _run(device, patch, undo="none", **kw):
    return run_convergence(**{**FAST, "device": device, "patch": patch, "undo": undo, **kw})


@pytest.mark.parametrize(
    "patch, where",
    [
        (planted.eps_rmsnorm_patch, "RMSNorm eps 10x"),
        (planted.grad_scale_patch, "RMSNorm input gradient x 1.01"),
        (planted.bf16_silu_patch, "SiLU through bfloat16"),
    ],
    ids=["eps10x", "grad_x1.01", "bf16_silu"],
)
def test_planted_bug_fails_the_run(device, patch, where):
    result = _run(device, patch)
    assert not result.passed, f"{where}: not caught"
    first = result.first_divergence()
    assert first["step"] == 0, first  # wrong from the first step on, so caught at once
    assert first["ratio"] > 10, first  # and by far, not at the edge of the band
    with pytest.raises(AssertionError, match="RESULT: DIVERGED at step 1:"):
        result.assert_converged()


def test_planted_bug_fails_with_fixed_tolerances_too(device):
    assert not _run(device, planted.grad_scale_patch, tolerance="fixed").passed


def test_gradient_bug_is_found_in_the_gradients(device):
    # The forward is exact: the loss at step 0 agrees, the gradients upstream of the norms do not.
    result = _run(device, planted.grad_scale_patch)
    assert result.quantities["loss"].ratio[0] <= 1.0
    bad = {n for n, s in result.quantities.items() if s.ratio[0] > 1.0}
    assert "grad/model.embed_tokens.weight" in bad, bad
    assert "grad/model.norm.weight" not in bad, bad  # downstream of every planted norm: exact


def test_correct_reimplementation_passes(device):
    result = _run(device, planted.manual_rmsnorm_patch)
    result.assert_converged()
    assert any("RMSNorm -> ManualLlamaRMSNorm" in c for c in result.patch_changes), result.patch_changes
    # The hand-written backward rounds differently from autograd's, yet stays inside the band.
    assert max(result.quantities["grad/model.norm.weight"].diff) > 0


def test_global_patch_with_undo_passes_and_is_undone(device):
    modeling = pytest.importorskip("transformers.models.llama.modeling_llama")
    original = modeling.apply_rotary_pos_emb
    result = _run(device, planted.global_rope_patch, undo=planted.global_rope_undo)
    result.assert_converged()
    assert modeling.apply_rotary_pos_emb is original
    assert any("apply_rotary_pos_emb" in c for c in result.patch_changes), result.patch_changes


def test_global_patch_without_undo_is_refused(device):
    modeling = pytest.importorskip("transformers.models.llama.modeling_llama")
    try:
        with pytest.raises(ConvergenceSetupError, match="(?s)still changed.*apply_rotary_pos_emb"):
            _run(device, planted.global_rope_patch, undo="none")
    finally:
        planted.global_rope_undo()
    assert modeling.apply_rotary_pos_emb.__module__ == modeling.__name__


def test_patch_that_changes_nothing_is_refused(device):
    with pytest.raises(ConvergenceSetupError, match="changed nothing"):
        _run(device, planted.noop_patch)


def test_patch_replacing_parameters_is_refused(device):
    with pytest.raises(ConvergenceSetupError, match="replaced parameters"):
        _run(device, planted.new_parameter_patch)


def test_patch_by_dotted_path(device):
    result = _run(device, "_planted_patches:eps_rmsnorm_patch", steps=2)
    assert result.patch_ref == "_planted_patches:eps_rmsnorm_patch"
    assert not result.passed


def test_register_spec_for_a_downstream_model(device):
    def make_config(vocab_size):
        return tiny_config("llama", vocab_size, hidden_size=48, intermediate_size=72, num_hidden_layers=1)

    name = "downstream-tiny-llama"
    spec = register_spec(
        name,
        make_config,
        patch=planted.manual_rmsnorm_patch,
        undo=None,
        description="a downstream project's own model and patch",
        replace=True,
    )
    assert get_spec(name) is spec and name in available_specs()
    with pytest.raises(ValueError, match="already registered"):
        register_spec(name, make_config, patch=planted.manual_rmsnorm_patch)
    result = run_convergence(RunConfig(model=name, steps=3, device=device, batch_size=2, seq_len=16))
    result.assert_converged()
    assert result.undo_ref == "none"
    # matched by name: one layer, so only layers.0 parameters
    assert not any("layers.1." in q for q in result.quantities)


def test_records_are_matched_by_name_and_complete(device):
    result = _run(device, planted.manual_rmsnorm_patch, steps=3)
    spec = get_spec("llama")
    names = dict(spec.make_model(spec.make_config(load_dataset().vocab_size)).named_parameters())
    for pname in names:
        assert len(result.quantities[f"param/{pname}"].diff) == 3
        assert len(result.quantities[f"grad/{pname}"].diff) == 3
    assert set(result.eval) == {"eval/logits", "eval/top5_logprobs", "eval/loss"}
    assert result.top1_agreement == 1.0
    for rec in result.steps:
        assert set(rec.loss) == {"unpatched", "patched", "reference"}
        assert all(math.isfinite(v) for v in rec.loss.values())


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="unknown model spec"):
        run_convergence(model="no-such-model", steps=1)
    with pytest.raises(ValueError, match="tolerance"):
        run_convergence(model="llama", steps=1, tolerance="loose")
    with pytest.raises(ValueError, match="float64 is the reference"):
        run_convergence(model="llama", steps=1, dtype="float64")
    with pytest.raises(TypeError, match="unknown options"):
        run_convergence(model="llama", stepz=1)
    with pytest.raises(ValueError, match="seq_len"):
        run_convergence(model="llama", steps=1, seq_len=1, patch=planted.manual_rmsnorm_patch, undo="none")


def test_unpinned_elements_are_those_whose_gradient_sign_the_check_leaves_open():
    """AdamW's early updates are about lr * g / (|g| + eps): where the float64 gradient is within the
    accepted gradient difference of zero, an accepted gradient may move the parameter either way, so
    those elements (and only those whose arms' gradients differ) leave the parameter comparison."""
    from liger_testing.convergence.runner import _unpinned

    reference = torch.tensor([1e-9, -1e-9, 1e-9, 5e-6, -5e-6, 0.0], dtype=torch.float64)
    unpatched = reference.float()
    patched = unpatched + torch.tensor([5e-11, 0.0, -3e-9, 1e-7, 0.0, 0.0])
    allowed = torch.tensor(2e-6, dtype=torch.float64)
    got = _unpinned(patched, unpatched, reference, allowed)
    assert got.tolist() == [True, False, True, False, False, False]
