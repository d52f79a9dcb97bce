"""The two ways users reach the patching without calling it: HF Trainer(use_liger_kernel=True) and
AutoLigerKernelForCausalLM. CPU only, no downloads: tiny models built here or saved to tmp_path."""

from __future__ import annotations

import math

import _hf_tiny as T
import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, Trainer, TrainingArguments

from liger_kernel.transformers import AutoLigerKernelForCausalLM, LigerRMSNorm, LigerSwiGLUMLP, unpatch
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
    model = AutoLigerKernelForCausalLM.from_pretrained(saved_llama, attn_implementation="eager").to(T.DEVICE)

    assert type(model) is modeling.LlamaForCausalLM  # an instance patched in place, classes untouched
    assert modeling.LlamaRMSNorm.__module__ == modeling.__name__
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


def test_auto_liger_model_options_and_errors(saved_llama):
    model = AutoLigerKernelForCausalLM.from_pretrained(saved_llama, swiglu=False, rope=False, geglu=True)
    assert type(model.model.layers[0].mlp) is T.modeling("llama").LlamaMLP
    assert isinstance(model.model.norm, LigerRMSNorm)

    built = AutoLigerKernelForCausalLM.from_config(T.tiny_config("qwen2"), fused_linear_cross_entropy=False)
    assert isinstance(built.model.norm, LigerRMSNorm) and not is_liger_forward(built.forward)

    tiny_gpt2 = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=T.VOCAB, n_positions=16)
    with pytest.raises(ValueError, match="supported model types: deepseek_v3, gemma, gemma2, gemma3"):
        AutoLigerKernelForCausalLM.from_config(tiny_gpt2)
    tiny_gpt2.save_pretrained(saved_llama / "gpt2")
    with pytest.raises(ValueError, match="does not support model type 'gpt2'"):
        AutoLigerKernelForCausalLM.from_pretrained(saved_llama / "gpt2")
