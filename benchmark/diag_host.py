"""Where the host time of a small launched RMSNorm pass goes (the GPU work is ~20 us; launched it takes
~0.7 ms on the lent H200's host): per-call host cost of the pieces, then a cProfile of liger's forward +
backward. Run on a GPU machine: ``python -m benchmark.diag_host [--op rms_norm|cross_entropy]``.

``--op cross_entropy``: the same for the cross entropy (launched 1.08 ms at 8192 x 32000 against 0.43 ms
of GPU time, sweep_ce_20261205_h200.csv): its pieces (the bad-target check's pinned copy, event and
wait; the reduction), ours, eager and compile forward + backward on 64 rows, and a cProfile of ours."""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections.abc import Callable

import torch

import liger_kernel.ops.cross_entropy as ce_ops
from liger_kernel.ops.rms_norm import _rms_norm_forward_kernel
from liger_kernel.transformers.functional import liger_cross_entropy, liger_rms_norm

DEV, BF16 = "cuda", torch.bfloat16


def host_us(fn: Callable[[], object], n: int = 2000) -> float:
    """Mean wall time per call, in us, of ``n`` calls enqueued back to back (one sync at the end)."""
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / n * 1e6


def cross_entropy_pieces() -> dict[str, Callable[[], object]]:
    logits = torch.randn(64, 32000, device=DEV, dtype=BF16, requires_grad=True)
    target = torch.randint(0, 32000, (64,), device=DEV)
    scales = ce_ops.loss_scales(target, None, -100, "mean", 32000, True)
    ce, zl = torch.zeros(64, device=DEV), torch.zeros(64, device=DEV)

    def check():
        ce_ops.TargetCheck(scales, 32000, -100).finish()

    def eager():
        return torch.nn.functional.cross_entropy(logits.float(), target)

    compiled = torch.compile(eager)
    return {
        "loss_scales (one launch)": lambda: ce_ops.loss_scales(target, None, -100, "mean", 32000, True),
        "TargetCheck: pinned copy, event, wait": check,
        "reduce_loss": lambda: ce_ops.reduce_loss(ce, zl, scales, "mean", BF16),
        "liger forward + backward": lambda: torch.autograd.grad(liger_cross_entropy(logits, target), logits),
        "eager forward + backward": lambda: torch.autograd.grad(eager(), logits),
        "compile forward + backward": lambda: torch.autograd.grad(compiled(), logits),
    }


def rms_norm_pieces() -> dict[str, Callable[[], object]]:
    x = torch.randn(64, 4096, device=DEV, dtype=BF16, requires_grad=True)
    w = torch.ones(4096, device=DEV, dtype=BF16, requires_grad=True)
    g = torch.randn_like(x)
    xd = x.detach()
    y = torch.empty_like(xd)
    rstd = torch.empty(64, device=DEV)

    def eager_fwd(x=x):
        xf = x.float()
        return w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).to(BF16)

    compiled_fwd = torch.compile(eager_fwd)
    pieces = {
        "torch.empty": lambda: torch.empty(64, 4096, device=DEV, dtype=BF16),
        "one torch op (x + x)": lambda: xd + xd,
        "raw triton launch (rms forward kernel)": lambda: _rms_norm_forward_kernel[(64,)](
            xd,
            y,
            w,
            rstd,
            4096,
            4096,
            64,
            4096,
            1e-6,
            0.0,
            xd,
            xd,
            4096,
            4096,
            CASTING=0,
            BLOCK_M=1,
            BLOCK_N=4096,
            num_warps=8,
        ),
        "liger forward, no grad": lambda: liger_rms_norm(xd, w.detach()),
        "liger forward, grad": lambda: liger_rms_norm(x, w),
        "liger forward + backward": lambda: torch.autograd.grad(liger_rms_norm(x, w), (x, w), g),
        "eager forward + backward": lambda: torch.autograd.grad(eager_fwd(), (x, w), g),
        "compile forward, grad": lambda: compiled_fwd(),
        "compile forward + backward": lambda: torch.autograd.grad(compiled_fwd(), (x, w), g),
    }
    return pieces


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--op", choices=("rms_norm", "cross_entropy"), default="rms_norm")
    args = parser.parse_args()
    pieces = rms_norm_pieces() if args.op == "rms_norm" else cross_entropy_pieces()
    for name, fn in pieces.items():
        print(f"{name:45s} {host_us(fn):8.1f} us", flush=True)

    prof = cProfile.Profile()
    fn = pieces["liger forward + backward"]
    prof.enable()
    for _ in range(500):
        fn()
    torch.cuda.synchronize()
    prof.disable()
    print(f"\ncProfile, liger {args.op} forward + backward, 500 calls (times in s):")
    pstats.Stats(prof).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
