"""Where the time of one end-to-end training step goes: GPU kernel time by category, per arm.

    python -m benchmark.profile_e2e --preset llama3-8b --arms liger,liger_compile [--out DIR]

Builds the arm's model as ``benchmark.e2e`` does, runs warm-up steps (compilation included), then
profiles one forward + backward with ``torch.profiler`` and prints (and writes to ``DIR``) the top
kernels by GPU time and a breakdown by category: matrix products, attention, Liger's Triton kernels,
inductor's Triton kernels, copies, other elementwise work, plus the step's wall time against the sum
of GPU kernel time (the difference is GPU idle time: host-bound gaps or syncs).
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
