"""Train with the Hugging Face Trainer and ``use_liger_kernel=True``.

    python examples/train_trainer.py                 # a tiny random llama on random tokens, CPU or GPU
    python examples/train_trainer.py --steps 50 --gradient-accumulation-steps 4

``TrainingArguments(use_liger_kernel=True)`` makes the Trainer patch the model in place
(``liger_kernel.transformers._apply_liger_kernel_to_instance``) before training. Nothing is
downloaded: the model is built from a config, the data is random.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # kernels in Triton's interpreter; set before import

from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments  # noqa: E402


def random_dataset(n: int, seq_len: int, vocab: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (seq_len,), generator=g)
        rows.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--gradient-accumulation-steps", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=16)
    parser.add_argument("--output-dir", help="default: a temporary directory")
    args = parser.parse_args()

    config = LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    n = args.steps * args.batch_size * args.gradient_accumulation_steps
    with tempfile.TemporaryDirectory() as tmp:
        training_args = TrainingArguments(
            output_dir=args.output_dir or tmp,
            use_liger_kernel=True,
            max_steps=args.steps,
            per_device_train_batch_size=args.batch_size,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            learning_rate=1e-3,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            dataloader_num_workers=0,
        )
        trainer = Trainer(model=model, args=training_args, train_dataset=random_dataset(n, args.seq_len, 128))
        result = trainer.train()
    print(f"trained {result.global_step} steps, mean loss {result.training_loss:.4f}")
    print(
        "patched modules:", sorted({type(m).__name__ for m in model.modules() if "Liger" in type(m).__name__})
    )


if __name__ == "__main__":
    main()
