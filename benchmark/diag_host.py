"""Where the host time of a small launched RMSNorm pass goes (the GPU work is ~20 us; launched it takes
~0.7 ms on the lent H200's host): per-call host cost of the pieces, then a cProfile of liger's forward +
backward. Run on a GPU machine: ``python -m benchmark.diag_host``."""

from __future__ import annotations

import cProfile
import pstats
import time
from collections.abc import Callable

import torch

from liger_kernel.ops.rms_norm import _rms_norm_forward_kernel
from liger_kernel.transformers.functional import liger_rms_norm

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


def main() -> None:
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
    for name, fn in pieces.items():
        print(f"{name:45s} {host_us(fn):8.1f} us", flush=True)

    prof = cProfile.Profile()
    fn = pieces["liger forward + backward"]
    prof.enable()
    for _ in range(500):
        fn()
    torch.cuda.synchronize()
    prof.disable()
    print("\ncProfile, liger forward + backward, 500 calls (times in s):")
    pstats.Stats(prof).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
