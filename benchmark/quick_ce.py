"""The cross entropy kernel at chosen vocabularies, with the unaligned-row peel on and off, in one
process: GPU time (CUDA-graph replay of a full pass) and launched time (do_bench median), bf16, for a
short device call.

    python -m benchmark.quick_ce [--rows 8192] [--vocabs 49159,100278,100352,32000]

OLMo 3's 100278 and Granite's 49159 start their rows off 16-byte alignment; OLMo 2's 100352 (aligned)
is the control, and 32000 the launched-time case (host-bound: GPU time under 0.5 ms).
"""

from __future__ import annotations

import argparse

import torch

import liger_kernel.ops.cross_entropy as ce_ops
from benchmark.ops import OPS
from benchmark.run import Timer, full_pass, graph_full_ms


def measure(
    rows: int, vocab: int, timer: Timer, dtype: torch.dtype, device: torch.device
) -> tuple[float, float]:
    """(GPU ms, launched ms) of our full pass at rows x vocab."""
    problem = OPS["cross_entropy"].build("liger", {"rows": rows, "vocab": vocab}, dtype, device)
    for _ in range(3):
        full_pass(problem)
    return graph_full_ms(problem, timer), timer(lambda: full_pass(problem))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--vocabs", default="49159,100278,100352,32000")
    args = parser.parse_args()
    device, dtype = torch.device("cuda"), torch.bfloat16
    timer = Timer(device, warmup=50, rep=500, cpu_reps=1)
    print(f"{torch.cuda.get_device_name()}, rows {args.rows}, bf16; ms per full pass (forward + backward)")
    for vocab in (int(v) for v in args.vocabs.split(",")):
        for peel in (True, False):
            ce_ops.PEEL_UNALIGNED_ROWS = peel
            graph, launched = measure(args.rows, vocab, timer, dtype, device)
            gb = 3 * args.rows * vocab * 2 / 1e9  # read twice (once from L2 at best), written once
            print(
                f"vocab {vocab:6d} peel {'on ' if peel else 'off'}: GPU {graph:.3f} ms "
                f"({gb / graph:.2f} TB/s over 3 passes), launched {launched:.3f} ms"
            )
    ce_ops.PEEL_UNALIGNED_ROWS = True


if __name__ == "__main__":
    main()
