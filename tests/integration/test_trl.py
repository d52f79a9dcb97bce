"""TRL with this package, on a tiny Llama built from a config and the tokenizer shipped with liger_testing.

What TRL (>= 1.x) does with Liger: ``use_liger_kernel=True`` makes the Hugging Face Trainer call
``liger_kernel.transformers._apply_liger_kernel_to_instance`` (TRL turns ``fused_linear_cross_entropy`` off,
since its DPO and GRPO trainers compute per-token log-probs with their own chunked LM head). TRL no longer
imports ``liger_kernel.chunked_loss``. So there are two kinds of checks:

- the trainers end to end, Liger option on against off (slow: the patched layers run in Triton's interpreter
  without a GPU): the same losses, gradient norms and logged log-probs step by step;
- our chunked losses against the trainers' own loss on the same batch and model (fast, plain torch): the DPO
  loss of ``DPOTrainer.compute_loss`` and the GRPO loss of ``GRPOTrainer._compute_loss``, and the gradients
  of every model parameter, from the model's hidden states and lm_head weight, the way a trainer would call
  ``LigerFusedLinearDPOLoss`` / ``LigerFusedLinearGRPOLoss``.
"""

from __future__ import annotations

import copy
from importlib import resources

import pytest
import torch

trl = pytest.importorskip("trl", minversion="1.16")
datasets = pytest.importorskip("datasets")
transformers = pytest.importorskip("transformers")

from liger_kernel.chunked_loss import LigerFusedLinearDPOLoss, LigerFusedLinearGRPOLoss  # noqa: E402
from liger_testing import assert_close, tolerances  # noqa: E402

PROMPTS = ["def f(x):", "import os", "class A:", "return None"]
TOL = tolerances(torch.float32)


def tiny_tokenizer():
    path = resources.files("liger_testing.convergence").joinpath("data", "tokenizer.json")
    return transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(path), pad_token="<pad>", bos_token="<bos>", eos_token="<eos>"
    )


def tiny_llama(seed=0):
    config = transformers.LlamaConfig(
        vocab_size=384, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(config).float()


def preference_data():
    return datasets.Dataset.from_dict(
        {
            "prompt": PROMPTS,
            "chosen": [" return x", " os.path", " pass", " done"],
            "rejected": [" raise", " sys", " x = 1", " oops"],
        }  # fmt: skip
    )


@pytest.fixture
def selected_as_slow(request):
    """The end-to-end trainer runs take about a minute each on a CPU (the patched layers run in Triton's
    interpreter): they run when the marker expression names ``slow`` (``pytest -m slow tests/integration``),
    not in the default full-suite run."""
    if "slow" not in (request.config.getoption("-m") or "") or "not slow" in request.config.getoption("-m"):
        pytest.skip("end-to-end trainer run: select it with -m slow")


@pytest.fixture
def liger_available(monkeypatch):
    """Transformers checks for liger-kernel by its installed package metadata; a source checkout on the
    path is the same code, so say it is there when it is importable but not installed."""
    import transformers.integrations.liger as hf_liger

    monkeypatch.setattr(hf_liger, "is_liger_kernel_available", lambda: True)


def dpo_trainer(model, tmp_path, use_liger=False, steps=1, **config):
    args = trl.DPOConfig(
        output_dir=str(tmp_path / "dpo"), per_device_train_batch_size=2, max_steps=steps, learning_rate=1e-3,
        logging_steps=1, report_to=[], use_cpu=True, use_liger_kernel=use_liger, save_strategy="no", seed=0,
        disable_dropout=True, bf16=False, **config,
    )  # fmt: skip
    return trl.DPOTrainer(
        model=model, ref_model=copy.deepcopy(model), args=args, train_dataset=preference_data(),
        processing_class=tiny_tokenizer(),
    )  # fmt: skip


def reward_length(completions, **kwargs):
    return [len(c) / 10 for c in completions]


def grpo_trainer(model_dir, tmp_path, use_liger=False, steps=1, **config):
    args = trl.GRPOConfig(
        output_dir=str(tmp_path / "grpo"), per_device_train_batch_size=4, num_generations=2,
        max_completion_length=6, max_steps=steps, learning_rate=1e-3, logging_steps=1, report_to=[],
        use_cpu=True, use_liger_kernel=use_liger, save_strategy="no", seed=0,
        model_init_kwargs={"dtype": torch.float32}, bf16=False, **config,
    )  # fmt: skip
    return trl.GRPOTrainer(
        model=str(model_dir), reward_funcs=reward_length, args=args,
        train_dataset=datasets.Dataset.from_dict({"prompt": PROMPTS}), processing_class=tiny_tokenizer(),
    )  # fmt: skip


def saved_tiny_llama(tmp_path):
    model_dir = tmp_path / "tiny-llama"
    tiny_llama().save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    return model_dir


def param_grads(model):
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


# ---- our losses against the trainers' own loss on the same batch (fast) ---------------------------------


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_chunked_dpo_matches_dpo_trainer(tmp_path, loss_type):
    trainer = dpo_trainer(tiny_llama(), tmp_path, loss_type=[loss_type], beta=0.5)
    model, ref_model = trainer.model, trainer.ref_model
    batch = next(iter(trainer.get_train_dataloader()))
    # Different weights for the reference, or every log-ratio is 0 at the first step
    with torch.no_grad():
        for p in ref_model.parameters():
            p.add_(0.05 * torch.randn_like(p))

    model.zero_grad()
    trl_loss = trainer.compute_loss(model, batch)
    trl_loss.backward()
    trl_grads = param_grads(model)

    model.zero_grad()
    model_kwargs = {k: v for k, v in batch.items() if k != "completion_mask"}
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    hidden = model.model(**model_kwargs).last_hidden_state
    with torch.no_grad():
        ref_hidden = ref_model.model(**model_kwargs).last_hidden_state
    loss_fn = LigerFusedLinearDPOLoss(beta=0.5, loss_type=loss_type, chunk_size=1)
    ours, _ = loss_fn(
        model.lm_head.weight,
        hidden[:, :-1],
        labels[:, 1:],
        None,
        ref_hidden[:, :-1],
        ref_model.lm_head.weight,
    )
    ours.backward()
    assert_close(ours.detach(), trl_loss.detach(), atol=TOL.atol, rtol=TOL.rtol)
    assert_close(param_grads(model), trl_grads, atol=TOL.atol, rtol=TOL.rtol)


@pytest.mark.parametrize(
    "options",
    [
        dict(loss_type="dapo", beta=0.04),
        dict(loss_type="bnpo", beta=0.04, importance_sampling_level="sequence", epsilon_high=0.28),
    ],  # the other loss types are checked against the formula in tests/chunked_loss/test_grpo.py
)
def test_chunked_grpo_matches_grpo_trainer(tmp_path, options):
    options = dict(options, temperature=0.7)
    trainer = grpo_trainer(saved_tiny_llama(tmp_path), tmp_path, **options)
    trainer.current_gradient_accumulation_steps = 1
    model = trainer.model
    gen = torch.Generator().manual_seed(0)
    n_seq, prompt_len, completion_len = 4, 3, 5
    prompt_ids = torch.randint(3, 384, (n_seq, prompt_len), generator=gen)
    completion_ids = torch.randint(3, 384, (n_seq, completion_len), generator=gen)
    completion_mask = torch.ones(n_seq, completion_len, dtype=torch.long)
    completion_mask[1, 3:] = 0
    completion_mask[2, 1:] = 0
    prompt_mask = torch.ones_like(prompt_ids)
    input_ids = torch.cat([prompt_ids, completion_ids], 1)
    attention_mask = torch.cat([prompt_mask, completion_mask], 1)
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, prompt_len - 1 : -1]
        logps = torch.log_softmax(logits / 0.7, -1).gather(-1, completion_ids[..., None])[..., 0]
    old_logps = logps + 0.2 * torch.randn(logps.shape, generator=gen)
    ref_logps = logps + 0.3 * torch.randn(logps.shape, generator=gen)
    advantages = torch.randn(n_seq, generator=gen)
    inputs = dict(
        prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion_ids,
        completion_mask=completion_mask, advantages=advantages, old_per_token_logps=old_logps,
        ref_per_token_logps=ref_logps, num_items_in_batch=completion_mask.sum().float(),
    )  # fmt: skip

    model.zero_grad()
    trl_loss = trainer._compute_loss(model, inputs)
    trl_loss.backward()
    trl_grads = param_grads(model)

    model.zero_grad()
    hidden = model.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    loss_fn = LigerFusedLinearGRPOLoss(
        beta=options["beta"], loss_type=options["loss_type"], temperature=0.7, max_completion_length=6,
        epsilon_low=trainer.epsilon_low, epsilon_high=trainer.epsilon_high,
        use_bias_correction_kl=trainer.args.use_bias_correction_kl,
        importance_sampling_level=options.get("importance_sampling_level", "token"), chunk_size=3,
    )  # fmt: skip
    ours, metrics = loss_fn(
        hidden[:, prompt_len - 1 : -1], model.lm_head.weight, completion_ids, completion_mask, advantages,
        ref_per_token_logps=ref_logps, old_per_token_logps=old_logps, num_items_in_batch=inputs["num_items_in_batch"],
    )  # fmt: skip
    ours.backward()
    assert_close(ours.detach(), trl_loss.detach(), atol=TOL.atol, rtol=TOL.rtol)
    assert_close(param_grads(model), trl_grads, atol=TOL.atol, rtol=TOL.rtol)
    logged = trainer._metrics["train" if model.training else "eval"]
    if options["beta"]:  # TRL logs the same masked mean of k3
        assert_close(metrics[0].item(), logged["kl"][-1], atol=TOL.atol, rtol=TOL.rtol)
    assert_close(metrics[-1].item(), logged["clip_ratio/region_mean"][-1], atol=TOL.atol, rtol=TOL.rtol)


# ---- the trainers end to end, Liger option on against off (slow) ----------------------------------------


def logged(trainer, keys):
    rows = [h for h in trainer.state.log_history if "loss" in h]
    return [{k: h[k] for k in keys if k in h} for h in rows]


@pytest.mark.slow
def test_dpo_trainer_with_liger_matches_without(tmp_path, selected_as_slow, liger_available):
    model = tiny_llama()
    runs = {}
    for use_liger in (False, True):
        trainer = dpo_trainer(copy.deepcopy(model), tmp_path, use_liger=use_liger, steps=3)
        trainer.train()
        runs[use_liger] = logged(trainer, ("loss", "grad_norm", "logps/chosen", "logps/rejected"))
    assert len(runs[True]) == 3
    assert_close(runs[True], runs[False], atol=TOL.atol, rtol=TOL.rtol)


@pytest.mark.slow
def test_grpo_trainer_with_liger_matches_without(tmp_path, selected_as_slow, liger_available):
    model_dir = saved_tiny_llama(tmp_path)
    runs = {}
    for use_liger in (False, True):
        trainer = grpo_trainer(model_dir, tmp_path, use_liger=use_liger, steps=2, beta=0.04)
        trainer.train()
        runs[use_liger] = logged(trainer, ("loss", "grad_norm", "kl", "reward", "entropy"))
    assert len(runs[True]) == 2
    assert_close(runs[True], runs[False], atol=TOL.atol, rtol=TOL.rtol)
