"""Sweep launch settings of LayerNorm, RoPE, Llama 4 RoPE, CrossEntropy and FusedLinearCrossEntropy on
a GPU, timing each full pass (forward + backward) as CUDA-graph replays (GPU time, no launch gaps); also
measures the host overhead of one launched full pass at a small shape. Prints the best settings of each
op."""

from __future__ import annotations

import itertools
import sys

import torch
from triton.testing import do_bench

import liger_kernel.ops.cross_entropy as CE
import liger_kernel.ops.layer_norm as LN
import liger_kernel.ops.llama4_rope as L4
import liger_kernel.ops.rope as RP
from liger_kernel.transformers.functional import (
    liger_cross_entropy,
    liger_fused_linear_cross_entropy,
    liger_layer_norm,
    liger_llama4_rope,
    liger_rms_norm,
    liger_rope,
)

DEV, BF16 = "cuda", torch.bfloat16


def graph_ms(fn) -> float:
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return do_bench(graph.replay, warmup=10, rep=50, return_mode="median")


def report(name: str, results: list[tuple[float, str]], top: int = 4) -> None:
    for t, cfg in sorted(results)[:top]:
        print(f"{name} {cfg}: {t:.4f} ms", flush=True)


def sweep_layer_norm() -> None:
    x = torch.randn(16384, 4096, device=DEV, dtype=BF16, requires_grad=True)
    w = (1 + 0.1 * torch.randn(4096, device=DEV)).to(BF16).requires_grad_()
    b = (0.1 * torch.randn(4096, device=DEV)).to(BF16).requires_grad_()
    g = torch.randn_like(x)
    res = []
    for per_sm, rows, warps in itertools.product((1, 2, 4), (1, 2, 4), (8, 16)):
        LN._backward_programs = lambda n, dev, k=per_sm: max(1, min(n, k * 132))
        LN._backward_config = lambda bn, r=rows, nw=warps: (r, nw)
        try:
            t = graph_ms(lambda: torch.autograd.grad(liger_layer_norm(x, w, b, 1e-5), (x, w, b), g))
        except Exception as e:  # noqa: BLE001 - keep sweeping
            print("layer_norm", per_sm, rows, warps, "error", type(e).__name__, e, file=sys.stderr)
            continue
        res.append((t, f"per_sm={per_sm} rows={rows} warps={warps}"))
    report("layer_norm full(graph)", res)


def sweep_rope() -> None:
    q = torch.randn(4, 2048, 32, 128, device=DEV, dtype=BF16).transpose(1, 2).requires_grad_()
    k = torch.randn(4, 2048, 8, 128, device=DEV, dtype=BF16).transpose(1, 2).requires_grad_()
    cos, sin = torch.randn(2, 1, 2048, 128, device=DEV, dtype=BF16).unbind(0)
    gq, gk = torch.randn_like(q), torch.randn_like(k)
    _sweep_tile_and_warps(
        "rope", RP, "_rope_config", lambda: torch.autograd.grad(liger_rope(q, k, cos, sin), (q, k), (gq, gk))
    )


def _sweep_tile_and_warps(name: str, module, config_attr: str, full_pass) -> None:
    """Time ``full_pass`` with ``module.<config_attr>(n_q_heads, n_k_heads, head_dim, max_tile, warps)``
    (the RoPE kernels' launch settings) called with each max tile and warp count in turn."""
    orig = getattr(module, config_attr)
    res = []
    for tile, warps in itertools.product((512, 1024, 2048, 4096), (1, 2, 4, 8)):
        setattr(module, config_attr, lambda a, c, hd, t=tile, nw=warps: orig(a, c, hd, t, nw))
        try:
            t = graph_ms(full_pass)
        except Exception as e:  # noqa: BLE001
            print(name, tile, warps, "error", type(e).__name__, e, file=sys.stderr)
            continue
        res.append((t, f"max_tile={tile} warps={warps}"))
    setattr(module, config_attr, orig)
    report(f"{name} full(graph)", res)


def sweep_llama4_rope() -> None:
    """Llama 4 Scout's attention (40 query heads over 8 KV heads of 128), batch 4 x 2048, bf16."""
    q = torch.randn(4, 2048, 40, 128, device=DEV, dtype=BF16, requires_grad=True)
    k = torch.randn(4, 2048, 8, 128, device=DEV, dtype=BF16, requires_grad=True)
    angles = torch.rand(1, 2048, 64, device=DEV) * 100
    freqs_cis = torch.polar(torch.ones_like(angles), angles)
    gq, gk = torch.randn_like(q), torch.randn_like(k)
    _sweep_tile_and_warps(
        "llama4_rope",
        L4,
        "_llama4_rope_config",
        lambda: torch.autograd.grad(liger_llama4_rope(q, k, freqs_cis), (q, k), (gq, gk)),
    )


def sweep_cross_entropy() -> None:
    """Grid (one program per row, or persistent with k per SM), block, warps and L2 eviction hints.

    Run 3 (benchmark/results/sweep_ce_flce_2026-11-29_h200_run3.txt) also swept tl.range software
    pipelining (num_stages 2-4) on the kernel of that day; it never helped. Runs 4 and 5
    (benchmark/NOTES.md): deeper steps, and a next-block prefetch (since reverted), on persistent grids;
    ncu showed they serve pass 2 from L2 but are latency-bound. Run 6: pass 1 keeps its logsumexp per
    lane; run 7: per warp; run 8: per thread (no shuffle in the loop); run 9: L2 hints again, now that
    the kernel is bandwidth-bound; run 10: software pipelining (tl.range num_stages 2-4) again: 17-40 %
    slower, so that knob was taken out. Also times the launched pass with and without the target check."""
    logits = torch.randn(8192, 128256, device=DEV, dtype=BF16, requires_grad=True)
    target = torch.randint(0, 128256, (8192,), device=DEV)

    def full():
        return torch.autograd.grad(liger_cross_entropy(logits, target, inplace=True), logits)

    res = []
    # (programs per SM, block, warps, L2 hints)
    configs = [
        (0, 32768, 32, True), (0, 32768, 32, False), (1, 32768, 32, True), (0, 16384, 32, True),
        (0, 8192, 16, True), (0, 4096, 8, False),
    ]  # fmt: skip
    saved = (CE.PROGRAMS_PER_SM, CE.BLOCK_MAX, CE.NUM_WARPS, CE.L2_HINTS)
    for cfg in configs:
        CE.PROGRAMS_PER_SM, CE.BLOCK_MAX, CE.NUM_WARPS, CE.L2_HINTS = cfg
        try:
            t = graph_ms(full)
        except Exception as e:  # noqa: BLE001
            print("ce", cfg, "error", type(e).__name__, e, file=sys.stderr)
            continue
        res.append((t, "per_sm={} BLOCK_MAX={} warps={} l2_hints={}".format(*cfg)))
    report("cross_entropy full(graph)", res, top=len(res))
    CE.PROGRAMS_PER_SM, CE.BLOCK_MAX, CE.NUM_WARPS, CE.L2_HINTS = saved
    for check in (True, False):
        CE.CHECK_TARGETS = check
        t = do_bench(full, warmup=25, rep=100, return_mode="median")
        print(f"cross_entropy full(launched, defaults) check_targets={check}: {t:.4f} ms", flush=True)
    CE.CHECK_TARGETS = True


def sweep_flce() -> None:
    """Chunk sizes: time and peak (``diag_flce_memory.py`` shows what is alive at the peak)."""
    x = torch.randn(8192, 4096, device=DEV, dtype=BF16, requires_grad=True)
    w = (0.02 * torch.randn(128256, 4096, device=DEV)).to(BF16).requires_grad_()
    target = torch.randint(0, 128256, (8192,), device=DEV)
    for chunk in (1024, 1216, 1408, 1536, 2048):

        def full(c=chunk):
            return torch.autograd.grad(liger_fused_linear_cross_entropy(x, w, target, chunk_size=c), (x, w))

        full()
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        grads = full()
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - before) / 2**20
        del grads
        t = do_bench(full, warmup=5, rep=200, return_mode="median")
        g = graph_ms(full)
        print(
            f"flce chunk={chunk}: launched {t:.2f} ms, graph {g:.2f} ms, peak extra {peak:.0f} MiB",
            flush=True,
        )


def host_overhead() -> None:
    """Launched vs graph time of a small full pass: the difference is host (Python + launch) cost."""
    x = torch.randn(64, 4096, device=DEV, dtype=BF16, requires_grad=True)
    w = torch.ones(4096, device=DEV, dtype=BF16, requires_grad=True)
    g = torch.randn_like(x)

    def eager():
        xf = x.float()
        y = w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).to(BF16)
        return torch.autograd.grad(y, (x, w), g)

    def liger():
        return torch.autograd.grad(liger_rms_norm(x, w), (x, w), g)

    for name, fn in (("eager", eager), ("liger", liger)):
        launched = do_bench(fn, warmup=20, rep=200, return_mode="median")
        print(f"rms_norm 64x4096 {name}: launched {launched * 1e3:.0f} us, graph {graph_ms(fn) * 1e3:.0f} us")


if __name__ == "__main__":
    which = sys.argv[1:] or ["host", "layer_norm", "rope", "cross_entropy", "flce"]
    funcs = {"host": host_overhead, "layer_norm": sweep_layer_norm, "rope": sweep_rope,
             "llama4_rope": sweep_llama4_rope,
             "cross_entropy": sweep_cross_entropy, "flce": sweep_flce}  # fmt: skip
    for name in which:
        funcs[name]()
