"""The two ways users reach the patching without calling it: HF Trainer(use_liger_kernel=True) and
AutoLigerKernelForCausalLM. CPU only, no downloads: tiny models built here or saved to tmp_path."""

from __future__ import annotations

import math

import _hf_tiny as T
import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, Trainer, TrainingArguments

from liger_kernel.transformers import (
    AutoLigerKernelForCausalLM,
    LigerRMSNorm,
    LigerSwiGLUMLP,
    _apply_liger_kernel_to_instance,
    unpatch,
)
from liger_kernel.transformers.model.causal_lm import is_liger_forward
from liger_testing import assert_close


def _examples(n: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(7)
    out = []
    for _ in range(n):
        ids = torch.randint(3, T.VOCAB, (T.SEQ,), generator=g)
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()})
    return out


def test_trainer_with_use_liger_kernel_trains_a_patched_model(tmp_path):
    pytest.importorskip("accelerate", reason="transformers' Trainer needs accelerate (test extra)")
    model = T.build("llama")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = TrainingArguments(
        output_dir=str(tmp_path),
        use_liger_kernel=True,
        use_cpu=True,
        max_steps=2,
        per_device_train_batch_size=2,
        per_device_eval_batch_size=2,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=_examples(4), eval_dataset=_examples(2))
    result = trainer.train()

    # Trainer called liger_kernel.transformers._apply_liger_kernel_to_instance on this very model.
    assert isinstance(model.model.norm, LigerRMSNorm)
    assert all(isinstance(layer.mlp, LigerSwiGLUMLP) for layer in model.model.layers)
    assert is_liger_forward(model.forward)
    assert T.modeling("llama").apply_rotary_pos_emb.__module__.startswith("liger_kernel")
    assert math.isfinite(result.training_loss)
    changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach().cpu(), before[n].cpu())]
    assert len(changed) == len(before)  # every parameter got a gradient through the kernels

    # Loss-only evaluation: the Trainer passes skip_logits=True, the fused loss answers.
    metrics = trainer.evaluate()
    assert math.isfinite(metrics["eval_loss"])
    unpatch(model)
    assert not T.modeling("llama").apply_rotary_pos_emb.__module__.startswith("liger_kernel")


@pytest.fixture
def saved_llama(tmp_path):
    model = T.build("llama")
    model.save_pretrained(tmp_path)
    return tmp_path


def test_auto_liger_model_loads_a_patched_model(saved_llama):
    modeling = T.modeling("llama")
    plain = AutoModelForCausalLM.from_pretrained(saved_llama, attn_implementation="eager").to(T.DEVICE)
    try:
        model = AutoLigerKernelForCausalLM.from_pretrained(saved_llama, attn_implementation="eager").to(
            T.DEVICE
        )
        # As Liger Kernel 0.8: the classes are patched before the model is built.
        assert modeling.LlamaRMSNorm is not plain.model.norm.__class__
        assert isinstance(model.model.norm, LigerRMSNorm)
        assert isinstance(model.model.layers[0].mlp, LigerSwiGLUMLP)
        assert is_liger_forward(model.forward)
        assert list(model.state_dict()) == list(plain.state_dict())

        ids, mask, labels = T.batch()
        assert_close(T.eval_logits(model, ids, mask), T.eval_logits(plain, ids, mask))
        out, grads = T.train_step(model, ids, mask, labels)
        expected, expected_grads = T.train_step(plain, ids, mask, labels)
        assert out.logits is None
        assert_close(out.loss.detach(), expected.loss.detach())
        assert_close(grads, expected_grads)
    finally:
        unpatch("llama")
    assert modeling.LlamaRMSNorm is plain.model.norm.__class__


def test_auto_liger_model_options_and_unsupported_types(saved_llama, caplog):
    try:
        model = AutoLigerKernelForCausalLM.from_pretrained(saved_llama, swiglu=False, rope=False, geglu=True)
        assert type(model.model.layers[0].mlp) is T.modeling("llama").LlamaMLP
        assert isinstance(model.model.norm, LigerRMSNorm)

        built = AutoLigerKernelForCausalLM.from_config(
            T.tiny_config("qwen2"), fused_linear_cross_entropy=False
        )
        assert isinstance(built.model.norm, LigerRMSNorm) and not is_liger_forward(built.forward)
    finally:
        unpatch("llama")
        unpatch("qwen2")

    # A type without Liger kernels loads unpatched, with a warning (as Liger Kernel 0.8 loads it).
    tiny_gpt2 = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=T.VOCAB, n_positions=16)
    with caplog.at_level("WARNING", logger="liger_kernel.transformers.auto_model"):
        gpt2 = AutoLigerKernelForCausalLM.from_config(tiny_gpt2)
    assert type(gpt2).__name__ == "GPT2LMHeadModel"
    assert "no Liger kernels for model type 'gpt2'" in caplog.text
    gpt2.save_pretrained(saved_llama / "gpt2")
    assert (
        type(AutoLigerKernelForCausalLM.from_pretrained(saved_llama / "gpt2")).__name__ == "GPT2LMHeadModel"
    )


@pytest.mark.skipif("llama4" not in T.MODEL_TYPES, reason="transformers without Llama 4")
def test_llama4_configs_patch_the_model_they_build():
    """A Llama 4 checkpoint's config is the image-text ``llama4`` one, from which AutoModelForCausalLM
    builds the text-only Llama4ForCausalLM (``llama4_text``): that type's patch is the one applied, so
    its loss forward is fused. The Trainer path patches either model by its own type."""
    try:
        built = AutoLigerKernelForCausalLM.from_config(T.tiny_config("llama4"))
        assert built.config.model_type == "llama4_text" and is_liger_forward(built.forward)
        assert isinstance(built.model.norm, LigerRMSNorm)
    finally:
        unpatch("llama4_text")
        unpatch("llama4")
    for model_type in ("llama4", "llama4_text"):
        model = T.build(model_type)
        _apply_liger_kernel_to_instance(model, rope=True, geglu=True)  # geglu: not Llama 4's, dropped
        assert is_liger_forward(model.forward) and any(isinstance(m, LigerRMSNorm) for m in model.modules())
        unpatch(model)
