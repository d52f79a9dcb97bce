"""Time and peak memory of the post-training and distillation losses, every arm side by side, from the
CSVs of ``benchmark.post_training`` and ``benchmark.distill`` (full pass: forward + backward).

    python -m benchmark.plot_losses benchmark/results/post_training_<date>_h200.csv \
        benchmark/results/distill_<date>_h200.csv --out benchmark/results/losses_<date>_h200.png

Two panels, log scales: launched full-pass time (ms) and peak extra memory (MiB) per workload, one bar
per arm; each bar of ours is labelled with its ratio to torch.compile's time and to eager's memory (the
issue's targets: time <= compile's, memory <= 1/4 of eager's). Needs matplotlib.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict
from pathlib import Path

ARM_NAMES = {"eager": "eager", "compile": "compile", "liger085": "0.8.5", "peer": "0.8.5", "ours": "ours"}
ARM_ORDER = ("eager", "compile", "0.8.5", "ours")
COLORS = {"eager": "#8c8c8c", "compile": "#4c72b0", "0.8.5": "#55a868", "ours": "#dd8452"}


def load(paths: list[Path]) -> tuple[dict, list[str], set[str]]:
    """(values[workload][arm][metric], workloads in file order, run descriptions)."""
    values: dict = defaultdict(lambda: defaultdict(dict))
    order: list[str] = []
    runs: set[str] = set()
    for path in paths:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                workload = row.get("workload") or row["op"]
                arm = ARM_NAMES.get(row.get("arm") or row["provider"])
                if arm is None:
                    continue
                if workload not in order:
                    order.append(workload)
                try:
                    values[workload][arm][row["metric"]] = float(row["value"])
                except ValueError:
                    values[workload][arm][row["metric"]] = math.nan
                runs.add(f"{row['gpu']}, torch {row['torch']}, triton {row['triton']}, {row['date'][:10]}")
    return values, order, runs


def plot(paths: list[Path], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    values, workloads, runs = load(paths)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    width = 0.8 / len(ARM_ORDER)
    x = np.arange(len(workloads))
    for ax, metric, title, log in (
        (axes[0], "full_ms", "full pass (forward + backward), ms (log)", True),
        (axes[1], "peak_mib", "peak extra memory, MiB (log)", True),
    ):
        for i, arm in enumerate(ARM_ORDER):
            heights = [values[w].get(arm, {}).get(metric, math.nan) for w in workloads]
            bars = ax.bar(x + (i - 1.5) * width, [math.nan if math.isnan(h) else h for h in heights], width,
                          label=arm, color=COLORS[arm])  # fmt: skip
            for bar, h, w in zip(bars, heights, workloads):
                if math.isnan(h):
                    ax.annotate("n/a", (bar.get_x() + width / 2, 0.01), xycoords=ax.get_xaxis_transform(),
                                ha="center", va="bottom", fontsize=7)  # fmt: skip
                elif arm == "ours":
                    base = values[w].get("compile" if metric == "full_ms" else "eager", {}).get(metric)
                    if base:
                        label = f"{h / base:.2f}x {'compile' if metric == 'full_ms' else 'eager'}"
                        ax.annotate(label, (bar.get_x() + width / 2, h), ha="center", va="bottom", fontsize=7)
        ax.set_xticks(x, workloads, fontsize=8)
        ax.set_title(title, fontsize=10)
        if log:
            ax.set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle("Post-training and distillation losses, bf16 (" + "; ".join(sorted(runs)) + ")", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csvs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    plot(args.csvs, args.out)


if __name__ == "__main__":
    main()
