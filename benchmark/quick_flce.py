"""One timing of the fused linear cross entropy at its default chunking (Llama-3-8B lm_head, 8192 tokens,
bf16): launched full pass (do_bench median) and peak extra memory; for a short device call.

    python -m benchmark.quick_flce [--tokens 8192 --hidden 4096 --vocab 128256] [--row-align N]

``--row-align``: the chunk buffer's row stride multiple (``LOGITS_ROW_ALIGN``; 1 packs rows end to end, as
before it existed): for vocabularies that are not a multiple of 8, with and without.
"""

from __future__ import annotations

import argparse

import torch

from liger_kernel.ops import fused_linear_cross_entropy as flce_ops
from liger_kernel.ops.fused_linear_cross_entropy import flce_chunk_rows
from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=128256)
    parser.add_argument("--row-align", type=int, default=flce_ops.LOGITS_ROW_ALIGN)
    args = parser.parse_args()
    flce_ops.LOGITS_ROW_ALIGN = args.row_align
    from triton.testing import do_bench

    dev, dt = torch.device("cuda"), torch.bfloat16
    gen = torch.Generator(device=dev).manual_seed(0)
    x = (torch.randn(args.tokens, args.hidden, device=dev, generator=gen) * 0.5).to(dt).requires_grad_()
    w = (torch.randn(args.vocab, args.hidden, device=dev, generator=gen) * 0.02).to(dt).requires_grad_()
    t = torch.randint(0, args.vocab, (args.tokens,), device=dev, generator=gen)
    loss_fn = LigerFusedLinearCrossEntropyLoss()

    def full_pass():
        return torch.autograd.grad(loss_fn(w, x, t), (x, w))

    full_pass()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    full_pass()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - before) / 2**20
    ms = do_bench(full_pass, warmup=100, rep=1000, return_mode="median")
    rows = flce_chunk_rows(args.tokens, args.hidden, args.vocab, 2, 2, dev)
    print(
        f"flce T{args.tokens} H{args.hidden} V{args.vocab} bf16 row align {args.row_align}: rows per chunk {rows}, "
        f"full pass {ms:.2f} ms (do_bench median), peak extra {peak:.0f} MiB; {torch.cuda.get_device_name()}"
    )


if __name__ == "__main__":
    main()
