"""Where CrossEntropy's second pass reads from: run one forward (which writes the gradient) per launch
configuration, for Nsight Compute to count DRAM bytes and L2 hits of ``_cross_entropy_kernel``.

    ncu --clock-control none --kernel-name regex:_cross_entropy_kernel \\
        --metrics dram__bytes_read.sum,dram__bytes_write.sum,lts__t_sector_hit_rate.pct,gpu__time_duration.sum \\
        python -m benchmark.diag_ce_l2

Two sweeps of 8192 x 128256 bf16 logits read 2 x 2004 MiB; if the second came from L2, DRAM reads
would be close to one sweep (2004 MiB = 2.10e9 B).
"""

import sys

import torch

import liger_kernel.ops.cross_entropy as CE
from liger_kernel.transformers.functional import liger_cross_entropy

# (programs per SM, block, warps, L2 hints); or as arguments: python -m benchmark.diag_ce_l2 0,4096,8,0 1,16384,32,1
CONFIGS = ((0, 4096, 8, 0), (1, 16384, 32, 0), (1, 32768, 32, 0))


def main() -> None:
    logits = torch.randn(8192, 128256, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    target = torch.randint(0, 128256, (8192,), device="cuda")
    saved = (CE.PROGRAMS_PER_SM, CE.BLOCK_MAX, CE.NUM_WARPS, CE.L2_HINTS)
    configs = [tuple(int(v) for v in a.split(",")) for a in sys.argv[1:]] or CONFIGS
    for per_sm, block, warps, hints in configs:
        CE.PROGRAMS_PER_SM, CE.BLOCK_MAX, CE.NUM_WARPS, CE.L2_HINTS = per_sm, block, warps, bool(hints)
        liger_cross_entropy(logits, target, inplace=True)
        torch.cuda.synchronize()
        print(f"launched per_sm={per_sm} block={block} warps={warps} l2_hints={bool(hints)}", flush=True)
    CE.PROGRAMS_PER_SM, CE.BLOCK_MAX, CE.NUM_WARPS, CE.L2_HINTS = saved


if __name__ == "__main__":
    main()
