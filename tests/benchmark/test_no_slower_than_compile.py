"""Each Liger kernel's full pass (forward + backward) must not be slower than torch.compile of the eager
code it replaces, on the GPU, at the op's first benchmark shape (benchmark/ops.py, 8B-class sizes) and at
the shapes drawn from the H200 sweeps (``SWEEP_SHAPES``: the worst ones found).

Both are timed as CUDA-graph replays (``benchmark.run.graph_full_ms``: GPU time, no host launch overhead)
in the same process, interleaved (compile, liger, compile, liger) so clock or thermal drift hits both;
the best of each pair is compared.  Allowed margin: max(5%, 2 x the spread seen between the two
timings of the same provider), capped at 15%.  5% because repeated do_bench medians of the same CUDA
graph on the H200 differed by up to ~2-3% between runs of benchmark.run (e.g. rope 0.095 vs 0.097 ms),
and a kernel within that of compile is "not slower" for practical purposes; the spread term widens it
on a noisy machine, the cap keeps a noisy run from passing anything.  The Liger result is also checked
against eager once (benchmark.run.check), so a fast but wrong kernel cannot pass.

One op is slower than compile by design and gets a derived allowance (``structural_cost_ms``): the
fused linear cross entropy keeps its memory at ~1.3 GiB where compile's takes 3 GiB, and pays for it in
dW traffic, counted in bytes and timed at the GPU's measured copy bandwidth.

Timings need the GPU to themselves: under pytest-xdist with more than one worker (other tests, or
the other ops of this test, running on the same GPU at once) the test skips and says how to run it
alone (``pytest tests/benchmark -n 0``; ``scripts/gpu_tests.sh`` does that after the parallel run).
On the H200 a parallel run once made SwiGLU look 2.3x slower than compile.

Marked ``gpu``: skipped on CPU by the liger_testing plugin.  benchmark/ is imported inside the test, so
collection on CPU needs nothing from it.  Runtime on an H200: about 1-2 min, mostly torch.compile.
"""

from __future__ import annotations

import os

import pytest
import torch

# One moderate (the kernels' design) shape per op: each op's first shape in benchmark/ops.py.
OPS = (
    "rms_norm",
    "fused_add_rms_norm",
    "layer_norm",
    "rope",
    "swiglu_mlp",
    "geglu_mlp",
    "cross_entropy",
    "fused_linear_cross_entropy",
    "llama4_rope",
    "gpt_oss_glu",
)
# Shapes drawn from the H200 sweeps (benchmark/results/sweep_*_h200.csv), the worst ones found among
# them: (op, label, dims).
SWEEP_SHAPES = (
    # cross entropy, 8192 rows: the smallest vocabulary (where the host's path is the largest share),
    # and the two that are not a multiple of 8 (rows start off 16-byte alignment; 0.88x and 0.69x
    # compile's GPU time on 2026-12-05, the closest to it of the sweep)
    ("cross_entropy", "8192x32000", {"rows": 8192, "vocab": 32000}),
    ("cross_entropy", "8192x49159", {"rows": 8192, "vocab": 49159}),
    ("cross_entropy", "8192x100278", {"rows": 8192, "vocab": 100278}),
    # fused linear cross entropy at Gemma 2 2B's small hidden and large vocabulary (the most chunks)
    ("fused_linear_cross_entropy", "T8192 H2304 V256000", {"tokens": 8192, "hidden": 2304, "vocab": 256000}),
    # the fused add + RMSNorm's second benchmark shape (its first, 16384 x 4096, is the op's case above:
    # 1.02x compile's GPU time on 2026-12-05, the closest of any op)
    ("fused_add_rms_norm", "16384x8192", {"rows": 16384, "hidden": 8192}),
)
MIN_MARGIN = 0.05
MAX_MARGIN = 0.15


def _cases():
    return [pytest.param(op, None, id=op) for op in OPS] + [
        pytest.param(op, dims, id=f"{op}[{label}]") for op, label, dims in SWEEP_SHAPES
    ]


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("op, dims", _cases())
def test_no_slower_than_compile(op: str, dims: dict | None, device: str, benchmark_module) -> None:
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if workers > 1:
        pytest.skip(
            f"timing guard shares the GPU with {workers} pytest-xdist workers; run it alone: "
            "pytest tests/benchmark -n 0"
        )
    ops, run = benchmark_module("ops"), benchmark_module("run")
    spec = ops.OPS[op]
    shape = spec.shapes[0]
    if dims is not None:  # a sweep shape: the op's own goals do not apply, only the comparison below
        shape = ops.Shape(" ".join(f"{k}={v}" for k, v in dims.items()), dims, ())
    dev = torch.device(device)
    dtype = torch.bfloat16
    timer = run.Timer(dev, warmup=10, rep=50, cpu_reps=1)

    verdict = run.check(spec, shape, dtype, dev, tol=2e-2)
    run._free(dev)
    assert verdict.startswith("ok"), f"{op} [{shape.label}]: liger vs eager {verdict}"

    torch._dynamo.reset()
    compiled = spec.build("eager", shape.dims, dtype, dev)
    compiled.fn = torch.compile(compiled.fn, dynamic=False)
    liger = spec.build("liger", shape.dims, dtype, dev)
    for p in (compiled, liger):
        for _ in range(2):  # compile / JIT and settle the allocator before capture
            run.full_pass(p)
    run._sync(dev)

    times: dict[str, list[float]] = {"compile": [], "liger": []}
    for _ in range(2):
        times["compile"].append(run.graph_full_ms(compiled, timer))
        times["liger"].append(run.graph_full_ms(liger, timer))
    del compiled, liger
    run._free(dev)
    torch._dynamo.reset()

    best = {k: min(v) for k, v in times.items()}
    spread = max((max(v) - min(v)) / min(v) for v in times.values())
    margin = min(max(MIN_MARGIN, 2 * spread), MAX_MARGIN)
    extra_ms, why = structural_cost_ms(op, shape.dims, dtype, dev, timer)
    allowed = best["compile"] * (1 + margin) + extra_ms
    ratio = best["liger"] / best["compile"]
    assert best["liger"] <= allowed, (
        f"{op} [{shape.label}]: liger full pass {best['liger']:.4f} ms is {ratio:.3f}x torch.compile's "
        f"{best['compile']:.4f} ms (allowed {allowed:.4f} ms = {1 + margin:.3f}x + {extra_ms:.3f} ms {why}; "
        f"timings {times})"
    )


def copy_bandwidth(device: torch.device, timer) -> float:
    """Bytes per second of a 1 GiB device-to-device copy (read + write), measured here."""
    buffers = torch.empty(2, 2**30, dtype=torch.uint8, device=device)
    ms = timer(lambda: buffers[1].copy_(buffers[0]))
    return 2 * 2**30 / (ms * 1e-3)


def structural_cost_ms(op: str, dims: dict[str, int], dtype: torch.dtype, device: torch.device, timer):
    """Time an op spends, by design, on traffic torch.compile's version does not have: (ms, reason).

    Only the fused linear cross entropy has one. It holds one chunk of logits at a time (its memory
    bound, ~1.3 GiB at 8192 x 4096 -> 128256 against compile's 3 GiB) and so accumulates dW chunk by
    chunk: every chunk after the first reads and writes dW (V x H) once more, which compile's single
    dW matmul does not. That traffic, at this GPU's measured copy bandwidth, is its allowance; a
    slowdown beyond it still fails.
    """
    if op != "fused_linear_cross_entropy":
        return 0.0, ""
    from liger_kernel.ops.fused_linear_cross_entropy import flce_chunk_rows
    from liger_kernel.ops.utils import cdiv

    tokens, hidden, vocab = dims["tokens"], dims["hidden"], dims["vocab"]
    elem = torch.finfo(dtype).bits // 8
    rows = flce_chunk_rows(tokens, hidden, vocab, elem, elem, device)
    chunks = cdiv(tokens, rows)
    dw_bytes = vocab * hidden * elem
    ms = (chunks - 1) * 2 * dw_bytes / copy_bandwidth(device, timer) * 1e3
    return ms, f"(dW read + written by {chunks - 1} more chunks than compile's one matmul)"
