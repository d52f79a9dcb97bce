"""Hugging Face Trainer with ``use_liger_kernel=True`` logs the same losses as the unpatched run.

Two Trainer runs on a tiny llama with the same initial weights, seed, data and shuffling (checked:
the batches each model saw are recorded and compared), one with ``use_liger_kernel=True``: the loss
and gradient norm logged at every optimizer step, and the final parameters, agree within float32
tolerances; with ``gradient_accumulation_steps=2`` too, where the Trainer passes
``num_items_in_batch`` and the patched forward (fused linear cross entropy) must normalise the summed
loss by the token count of the whole accumulated batch (labels with different numbers of ignored
tokens per example make a per-micro-batch mean visibly wrong).
Not covered: multi-GPU Trainer (accelerate/FSDP), mixed precision, the Trainer's liger_kernel_config.
"""

from __future__ import annotations

import _hf_tiny as T
import pytest
import torch

from liger_kernel.transformers import LigerRMSNorm
from liger_kernel.transformers.model.causal_lm import is_liger_forward
from liger_testing import assert_close

pytest.importorskip("accelerate", reason="transformers' Trainer needs accelerate (test extra)")

from transformers import Trainer, TrainingArguments  # noqa: E402


def _examples(n: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(11)
    out = []
    for i in range(n):
        ids = torch.randint(3, T.VOCAB, (T.SEQ,), generator=g)
        labels = ids.clone()
        labels[: i % 4] = -100  # 0..3 ignored prompt tokens: token counts differ between micro-batches
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    return out


def _train(tmp_path, device: str, use_liger: bool, accumulation: int):
    model = T.build("llama")
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda _m, _a, kw: seen.append(kw["input_ids"].cpu()), with_kwargs=True)
    args = TrainingArguments(
        output_dir=str(tmp_path / f"liger{use_liger}_ga{accumulation}"),
        use_liger_kernel=use_liger,
        use_cpu=device == "cpu",
        seed=123,
        data_seed=123,
        max_steps=3,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=accumulation,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=_examples(12))
    trainer.train()
    logs = [e for e in trainer.state.log_history if "loss" in e]
    return model, logs, seen


@pytest.mark.parametrize("accumulation", [1, 2])
def test_trainer_liger_loss_matches_unpatched(tmp_path, device, accumulation):
    plain, plain_logs, plain_seen = _train(tmp_path, device, False, accumulation)
    liger, liger_logs, liger_seen = _train(tmp_path, device, True, accumulation)

    assert isinstance(liger.model.norm, LigerRMSNorm) and is_liger_forward(liger.forward)
    assert not isinstance(plain.model.norm, LigerRMSNorm)
    assert len(liger_seen) == len(plain_seen) == 3 * accumulation
    assert all(torch.equal(a, b) for a, b in zip(liger_seen, plain_seen)), "the runs saw different batches"
    assert len(liger_logs) == len(plain_logs) == 3
    for key in ("loss", "grad_norm"):
        got = torch.tensor([float(e[key]) for e in liger_logs], dtype=torch.float64)
        want = torch.tensor([float(e[key]) for e in plain_logs], dtype=torch.float64)
        assert_close(got, want, atol=1e-5, rtol=1e-5, msg=f"logged {key}")
    assert_close(
        {n: p.detach() for n, p in liger.named_parameters()},
        {n: p.detach() for n, p in plain.named_parameters()},
        # AdamW divides by sqrt(v): where a gradient is ~0 a float32 rounding difference moves the update
        # by up to lr, so the bound is 1% of lr (1e-3) per element, not float32 eps
        atol=1e-5,
        msg="parameters after training",
    )
