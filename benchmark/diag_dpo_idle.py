"""Where DPO's pass leaves the GPU idle (benchmark/NOTES.md: ~97 ms of kernels, 124 ms measured, while
GRPO's kernels fill its measured time). Run alone in a fresh process on the GPU:

    python -m benchmark.diag_dpo_idle [--workloads dpo,grpo] [--tiny]

For each workload (the shapes and the ``ours`` arm of benchmark/post_training.py): the full pass timed
three ways (do_bench median with a 1 s budget, i.e. several samples instead of post_training's one; the
minimum of 10 event-timed passes; the kernels' summed device time in one profiled pass), then every
stretch of more than --gap-ms between two consecutive kernels of that profiled pass, with the kernels on
either side and the CPU ops running at the time, and their total.
"""

from __future__ import annotations

import argparse

import torch

from benchmark.post_training import FULL, TINY, build, chunked_fns
from benchmark.run import full_pass


def event_times_ms(fn, n: int) -> list[float]:
    times = []
    for _ in range(n):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return times


def gaps(prof, gap_ms: float) -> tuple[float, float, list[str]]:
    """(kernel time, idle time between kernels, a line per gap over gap_ms) of one profiled pass."""
    events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    events.sort(key=lambda e: e.time_range.start)
    cpu_ops = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CPU]
    busy = idle = 0.0
    lines = []
    end = None
    for before, e in zip([None, *events[:-1]], events):
        busy += (e.time_range.end - e.time_range.start) / 1e3
        if end is not None and e.time_range.start > end:
            gap = (e.time_range.start - end) / 1e3
            idle += gap
            if gap > gap_ms:
                during = sorted(
                    {
                        c.name
                        for c in cpu_ops
                        if c.time_range.start < e.time_range.start and c.time_range.end > end
                    }
                )[:8]
                lines.append(
                    f"  {gap:7.2f} ms idle after {before.name[:50]!r}, before {e.name[:50]!r}; CPU ops: {during}"
                )
        end = max(end or 0, e.time_range.end)
    return busy, idle, lines


def diagnose(workload: str, dims: dict[str, int], device: torch.device, gap_ms: float) -> None:
    problem = build(workload, chunked_fns()[workload], dims, device)

    def one_pass():
        return full_pass(problem)

    for _ in range(3):
        one_pass()
    if device.type != "cuda":
        print(f"{workload}: ran on the CPU (timings need a GPU)")
        return
    from torch.profiler import ProfilerActivity, profile
    from triton.testing import do_bench

    median = do_bench(one_pass, warmup=200, rep=1000, return_mode="median")
    events = event_times_ms(one_pass, 10)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        one_pass()
        torch.cuda.synchronize()
    busy, idle, lines = gaps(prof, gap_ms)
    print(
        f"{workload}: do_bench median {median:.1f} ms; event-timed min {min(events):.1f}, max "
        f"{max(events):.1f} ms; profiled pass: kernels {busy:.1f} ms, idle between them {idle:.1f} ms"
    )
    print("\n".join(lines) or "  (no gap over the threshold)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workloads", default="dpo,grpo")
    parser.add_argument("--gap-ms", type=float, default=0.2)
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (checks the script)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for workload in args.workloads.split(","):
        diagnose(workload, TINY if args.tiny else FULL, device, args.gap_ms)
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
