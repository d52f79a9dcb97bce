"""Sweep RMSNorm launch settings on a GPU: forward (rows per program, warps) and backward
(rows per step, warps, programs per SM). Prints the best of each; used to pick the defaults."""

import functools
import itertools
import sys

import torch
from triton.testing import do_bench

import liger_kernel.ops.rms_norm as rn


def bench(fn):
    return do_bench(fn, warmup=10, rep=40, return_mode="median")


def main(shapes=((16384, 4096), (16384, 8192))):
    for m, n in shapes:
        x = torch.randn(m, n, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(n, device="cuda", dtype=torch.bfloat16)
        dy = torch.randn_like(x)
        _, rstd = rn.rms_norm_forward_impl(x, w, 1e-6, 0.0, "llama")
        gb = x.numel() * 2 / 1e9
        results = []
        for bm, warps in itertools.product((1, 2, 4), (4, 8, 16, 32)):
            rn._forward_config = lambda block_n, bm=bm, warps=warps: (bm, warps)
            try:
                t = bench(functools.partial(rn.rms_norm_forward_impl, x, w, 1e-6, 0.0, "llama"))
            except Exception as e:  # noqa: BLE001 - report and keep sweeping
                print("fwd", bm, warps, "error", type(e).__name__, file=sys.stderr)
                continue
            results.append((t, "fwd", bm, warps, None))
        for bm, warps, per_sm in itertools.product((1, 2, 4), (4, 8, 16, 32), (1, 2, 4, 8, 16)):
            rn._backward_config = lambda block_n, bm=bm, warps=warps: (bm, warps)
            rn.BACKWARD_PROGRAMS_PER_SM = per_sm
            try:
                t = bench(functools.partial(rn.rms_norm_backward_impl, dy, x, w, rstd, 0.0, "llama", True))
            except Exception as e:  # noqa: BLE001
                print("bwd", bm, warps, per_sm, "error", type(e).__name__, file=sys.stderr)
                continue
            results.append((t, "bwd", bm, warps, per_sm))
        for kind, floor_gb in (("fwd", 2 * gb), ("bwd", 3 * gb)):
            best = sorted(r for r in results if r[1] == kind)[:5]
            for t, _, bm, warps, per_sm in best:
                print(
                    f"{m}x{n} {kind} rows={bm} warps={warps} per_sm={per_sm}: {t:.4f} ms "
                    f"({floor_gb / t * 1e3 / 1e3:.2f} TB/s)"
                )


if __name__ == "__main__":
    main()
