"""Train a Liger-patched causal LM sharded with FSDP2 (``torch.distributed.fsdp.fully_shard``).

    torchrun --nproc_per_node=2 examples/train_fsdp2.py --steps 2            # CPU (gloo) or GPUs (NCCL)
    torchrun --nproc_per_node=8 examples/train_fsdp2.py --config path/to/config.json --steps 100

By default a tiny random llama (2 layers, hidden 64) on random tokens, so it runs anywhere; ``--config``
takes any Hugging Face config.json of a supported model type (weights are random: this shows the
wiring, not a recipe). Patch BEFORE sharding (the patch swaps module classes in place, fully_shard
then wraps them), and keep lm_head in the group whose forward computes the loss (here the root): the
fused linear cross entropy reads ``lm_head.weight`` without calling lm_head, so lm_head must not be
its own FSDP group.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

if not torch.cuda.is_available():
    # no GPU: the Triton kernels run in Triton's interpreter, which must be on before liger_kernel loads
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("NCCL_NVLS_ENABLE", "0")

import torch.distributed as dist  # noqa: E402
from torch.distributed.device_mesh import init_device_mesh  # noqa: E402
from torch.distributed.fsdp import fully_shard  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig  # noqa: E402

from liger_kernel.transformers import _apply_liger_kernel_to_instance  # noqa: E402


def tiny_llama_config() -> LlamaConfig:
    return LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="a Hugging Face config.json (default: a tiny llama)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=2, help="sequences per rank")
    parser.add_argument("--seq-len", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()

    on_gpu = torch.cuda.is_available()
    if on_gpu:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if on_gpu else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")

    config = AutoConfig.from_pretrained(args.config) if args.config else tiny_llama_config()
    torch.manual_seed(0)  # the same initial weights on every rank
    model = AutoModelForCausalLM.from_config(config).to(device)
    _apply_liger_kernel_to_instance(model)  # RMSNorm, gated MLP, RoPE, fused linear cross entropy

    mesh = init_device_mesh(device.type, (world,))
    for layer in model.model.layers:  # one all-gather / reduce-scatter group per decoder layer
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)  # root: embeddings, final norm, lm_head
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)

    gen = torch.Generator().manual_seed(1000 + rank)  # each rank its own data
    for step in range(args.steps):
        ids = torch.randint(0, config.vocab_size, (args.batch_size, args.seq_len), generator=gen).to(device)
        loss = model(input_ids=ids, labels=ids).loss  # the fused loss: logits are never materialised
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        if rank == 0:
            print(f"step {step + 1}/{args.steps}  loss {mean.item() / world:.4f}", flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
    # Leave without the interpreter's teardown. FSDP2 keeps the process group alive after
    # destroy_process_group(), so gloo's worker threads outlive it; the last one to drop a collective's
    # tensor that Python has already freed must take the GIL to free the Python object, and a thread that
    # asks for the GIL while the interpreter finalises is ended inside a destructor that may not throw:
    # SIGABRT ("terminate called without an active exception") after a finished run, about 1 CPU run in
    # 100 on busy cores. Everything is flushed and torn down by now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
