"""Where the time of one end-to-end training step goes: GPU kernel time by category, per arm.

    python -m benchmark.profile_e2e --preset llama3-8b --arms liger,liger_compile [--out DIR]

Builds the arm's model as ``benchmark.e2e`` does, runs warm-up steps (compilation included), then
profiles one forward + backward with ``torch.profiler`` and prints (and writes to ``DIR``) the top
kernels by GPU time and a breakdown by category: matrix products, attention, Liger's Triton kernels,
inductor's Triton kernels, copies, other elementwise work, plus the step's wall time against the sum
of GPU kernel time (the difference is GPU idle time: host-bound gaps or syncs), the largest idle gaps
between kernels, and (``--prefill``) the step's GPU time measured by events with and without a long GPU
sleep queued before it: with the sleep the host enqueues the whole step ahead of the GPU, so the
difference is what the host costs (the cross-entropy target check, a host sync, is off for this).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from benchmark.e2e import PRESETS, build_model

# Substrings of kernel names, first match wins (lower-cased).
CATEGORIES = (
    ("attention", ("flash", "fmha", "attention", "sdpa")),
    ("matmul", ("gemm", "cutlass", "sm90_xmma", "nvjet", "cublas", "ampere_bf16", "sm80_xmma", "splitk")),
    ("liger triton", ("_rms_norm", "_layer_norm", "_rope", "_glu", "_swiglu", "_geglu", "_cross_entropy",
                      "_loss_scales", "_scale_rows", "_scale_kernel", "_norm_")),
    ("inductor triton", ("triton_",)),
    ("copy / cast", ("copy", "cast", "transpose", "cat", "index")),
    ("reduce", ("reduce",)),
    ("elementwise", ("elementwise", "vectorized", "unrolled")),
)  # fmt: skip


def category(name: str) -> str:
    low = name.lower()
    for cat, keys in CATEGORIES:
        if any(k in low for k in keys):
            return cat
    return "other"


def _event_ms(model: torch.nn.Module, runner, ids: torch.Tensor, sleep_cycles: int) -> float:
    model.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    if sleep_cycles:
        torch.cuda._sleep(sleep_cycles)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    runner(input_ids=ids, labels=ids).loss.backward()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end)


def prefill_report(model: torch.nn.Module, runner, ids: torch.Tensor, reps: int = 5) -> str:
    import statistics

    import liger_kernel.ops.cross_entropy as ce_ops

    saved, ce_ops.CHECK_TARGETS = ce_ops.CHECK_TARGETS, False
    try:
        plain = statistics.median(_event_ms(model, runner, ids, 0) for _ in range(reps))
        # ~1.5 s at the H200's ~2 GHz: longer than the host needs to enqueue a whole step.
        ahead = statistics.median(_event_ms(model, runner, ids, 3_000_000_000) for _ in range(reps))
    finally:
        ce_ops.CHECK_TARGETS = saved
    return (
        f"  step by CUDA events (median of {reps}, target check off): launched as usual {plain:.1f} ms; "
        f"enqueued ahead behind a GPU sleep {ahead:.1f} ms; host-bound share {plain - ahead:.1f} ms"
    )


def profile_arm(arm: str, args: argparse.Namespace, out: Path) -> str:
    preset = PRESETS[args.preset]
    device = torch.device("cuda")
    model = build_model(preset, device, "sdpa")
    if arm.startswith("liger"):
        from liger_kernel.transformers import apply_liger_kernel_to_llama

        apply_liger_kernel_to_llama(model=model)
    runner = torch.compile(model) if arm.endswith("compile") else model
    ids = torch.randint(
        0, preset.config["vocab_size"], (args.batch or preset.batch, preset.seq), device=device
    )

    for _ in range(3):  # warm-up: compilation, Triton JIT, the allocator
        model.zero_grad(set_to_none=True)
        runner(input_ids=ids, labels=ids).loss.backward()
    torch.cuda.synchronize()
    model.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        runner(input_ids=ids, labels=ids).loss.backward()
        torch.cuda.synchronize()
    wall_ms = (time.perf_counter() - t0) * 1e3
    kernels: dict[str, list[float]] = {}
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            k = kernels.setdefault(ev.name, [0.0, 0])
            k[0] += ev.device_time / 1e3  # us -> ms
            k[1] += 1
    total = sum(v[0] for v in kernels.values())
    by_cat: dict[str, float] = {}
    for name, (ms, _) in kernels.items():
        by_cat[category(name)] = by_cat.get(category(name), 0.0) + ms
    lines = [f"== {args.preset} {arm}: wall {wall_ms:.1f} ms (profiled), GPU kernel time {total:.1f} ms"]
    for cat, ms in sorted(by_cat.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {cat:16s} {ms:8.1f} ms  {100 * ms / total:5.1f} %")
    lines.append("  top kernels (ms, calls, name):")
    for name, (ms, n) in sorted(kernels.items(), key=lambda kv: -kv[1][0])[: args.top]:
        lines.append(f"  {ms:8.2f} {n:5d}  [{category(name)}] {name[:150]}")
    spans = sorted(
        (ev.time_range.start, ev.time_range.end, ev.name)
        for ev in prof.events()
        if ev.device_type == torch.autograd.DeviceType.CUDA
    )
    gaps = []
    busy_until, last_name = spans[0][1], spans[0][2]
    for start, end, name in spans[1:]:
        if start > busy_until:
            gaps.append(((start - busy_until) / 1e3, last_name, name))
        if end > busy_until:
            busy_until, last_name = end, name
    lines.append(
        f"  GPU idle between kernels: {sum(g[0] for g in gaps):.1f} ms in {len(gaps)} gaps; largest:"
    )
    for ms, before, after in sorted(gaps, reverse=True)[:10]:
        lines.append(f"  {ms:8.2f} ms after [{before[:60]}] before [{after[:60]}]")
    if args.prefill:
        lines.append(prefill_report(model, runner, ids))
    text = "\n".join(lines)
    (out / f"profile_{args.preset}_{arm}.txt").write_text(text + "\n")
    del model, runner
    if arm.startswith("liger"):
        from liger_kernel.transformers import unpatch

        unpatch()
    torch._dynamo.reset()
    torch.cuda.empty_cache()
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.profile_e2e", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="llama3-8b")
    parser.add_argument("--arms", default="liger")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--prefill", action="store_true", help="also time the step enqueued ahead of the GPU")
    parser.add_argument("--out", type=Path, default=Path("."))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("profile_e2e needs a CUDA device", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for arm in args.arms.split(","):
        print(profile_arm(arm.strip(), args, args.out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
