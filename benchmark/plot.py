"""Bar charts from a results CSV written by ``python -m benchmark.run``.

    python -m benchmark.plot benchmark/results/kernels_<date>.csv --out benchmark/results/

writes, next to each other in ``--out``:
    <csv stem>_speedup.png  speed-up of liger over eager and over compile (baseline ms / liger ms; above
                            1 means Liger is faster), one panel each for the forward, the backward and
                            the full pass, one pair of bars per op and shape;
    <csv stem>_memory.png   peak extra memory of a full pass per provider (MiB, log scale) and the
                            memory reduction (baseline MiB / liger MiB; above 1 means Liger uses less).
Missing or failed measurements (nan) leave a gap marked "n/a".  Needs matplotlib (not needed on the GPU
machine: plots are made from committed CSVs).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections import defaultdict
from pathlib import Path

BASELINES = ("eager", "compile")
PROVIDERS = ("eager", "compile", "liger")
TIME_METRICS = (
    ("fwd_ms", "forward"),
    ("bwd_ms", "backward"),
    ("full_ms", "full pass (fwd + bwd), launched from Python"),
    ("graph_ms", "full pass as CUDA-graph replay (GPU time)"),
)
COLORS = {"eager": "#8c8c8c", "compile": "#4c72b0", "liger": "#dd8452"}


def load(path: Path) -> tuple[list[tuple[str, str, str]], dict, dict[str, str]]:
    """(case keys in file order, values[case][provider][metric], run info: each field's distinct values
    in file order, joined by " + " -- a file may merge runs, each op's providers from one run)."""
    values: dict = defaultdict(lambda: defaultdict(dict))
    cases: list[tuple[str, str, str]] = []
    seen: dict[str, list[str]] = {k: [] for k in ("gpu", "torch", "triton", "transformers", "liger_kernel")}
    seen["date"] = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            for k, vals in seen.items():
                v = row.get(k, "")
                if k == "date":
                    v = v[:10]  # the day: runs of one file start seconds or minutes apart
                if v not in vals:
                    vals.append(v)
            key = (row["op"], row["shape"], row["dtype"])
            if key not in cases:
                cases.append(key)
            try:
                value = float(row["value"])
            except ValueError:
                value = math.nan
            values[key][row["provider"]][row["metric"]] = value
    info = {k: " + ".join(vals) for k, vals in seen.items()}
    return cases, values, info


def _ratio(num: float | None, den: float | None) -> float:
    if num is None or den is None or math.isnan(num) or math.isnan(den) or den <= 0:
        return math.nan
    return num / den


def _label(v: float) -> str:
    if math.isnan(v):
        return "n/a"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"


def _bar_group(ax, labels, series: dict[str, list[float]], log: bool = False, ref: float | None = None):
    import numpy as np

    n = len(series)
    width = 0.8 / max(n, 1)
    x = np.arange(len(labels))
    finite = [v for vals in series.values() for v in vals if not math.isnan(v) and v > 0]
    for i, (name, vals) in enumerate(series.items()):
        pos = x - 0.4 + width * (i + 0.5)
        heights = [0.0 if math.isnan(v) else v for v in vals]
        color = COLORS.get(name.split(" ")[-1], None)
        bars = ax.bar(pos, heights, width, label=name, color=color)
        for bar, v in zip(bars, vals):
            text = _label(v)
            y = bar.get_height() if not math.isnan(v) else (min(finite) if (log and finite) else 0.0)
            ax.annotate(
                text,
                (bar.get_x() + bar.get_width() / 2, y),
                ha="center",
                va="bottom",
                fontsize=7,
                rotation=90 if len(labels) > 6 else 0,
                xytext=(0, 2),
                textcoords="offset points",
            )
    if log and finite:
        ax.set_yscale("log")
        ax.set_ylim(min(min(finite), ref or math.inf) / 2, max(max(finite), ref or 0) * 4)
    elif finite:
        ax.set_ylim(0, max(max(finite), ref or 0) * 1.18)  # room for the value labels
    if ref is not None:
        ax.axhline(ref, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def plot(csv_path: Path, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases, values, info = load(csv_path)
    labels = [f"{op}\n{shape}" for op, shape, _ in cases]
    subtitle = (
        f"{info.get('gpu', '?')} | torch {info.get('torch', '?')} | triton {info.get('triton', '?')} | "
        f"transformers {info.get('transformers', '?')} | liger_kernel {info.get('liger_kernel', '?')} | "
        f"{info.get('date', '')} | dtype {cases[0][2] if cases else '?'}"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    width = max(8.0, 1.3 * len(cases) + 3)

    fig, axes = plt.subplots(len(TIME_METRICS), 1, figsize=(width, 4.2 * len(TIME_METRICS)), squeeze=False)
    for ax, (metric, title) in zip(axes[:, 0], TIME_METRICS):
        series = {
            f"liger vs {base}": [
                _ratio(values[c][base].get(metric), values[c]["liger"].get(metric)) for c in cases
            ]
            for base in BASELINES
        }
        _bar_group(ax, labels, series, ref=1.0)
        ax.set_title(f"speed-up of liger, {title} (above 1: liger faster)", fontsize=10)
        ax.set_ylabel("baseline ms / liger ms")
    fig.suptitle(f"Liger kernels: speed-up (median times)\n{subtitle}", fontsize=10)
    fig.tight_layout()
    path = out_dir / f"{csv_path.stem}_speedup.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path)

    fig, axes = plt.subplots(2, 1, figsize=(width, 8.4), squeeze=False)
    peaks = {p: [values[c][p].get("peak_mib", math.nan) for c in cases] for p in PROVIDERS}
    _bar_group(axes[0, 0], labels, peaks, log=True)
    axes[0, 0].set_title("peak extra memory of one full pass (MiB, log scale)", fontsize=10)
    axes[0, 0].set_ylabel("MiB")
    reductions = {
        f"liger vs {base}": [
            _ratio(values[c][base].get("peak_mib"), values[c]["liger"].get("peak_mib")) for c in cases
        ]
        for base in BASELINES
    }
    _bar_group(axes[1, 0], labels, reductions, log=True, ref=1.0)
    axes[1, 0].set_title(
        "memory reduction (baseline MiB / liger MiB, log scale; above 1: liger uses less)", fontsize=10
    )
    axes[1, 0].set_ylabel("baseline / liger")
    if all(math.isnan(v) for vals in peaks.values() for v in vals):
        axes[0, 0].text(0.5, 0.5, "no memory data (CPU run)", transform=axes[0, 0].transAxes, ha="center")
    fig.suptitle(f"Liger kernels: memory\n{subtitle}", fontsize=10)
    fig.tight_layout()
    path = out_dir / f"{csv_path.stem}_memory.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.plot", description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", type=Path, help="results CSV from python -m benchmark.run")
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for the PNGs (default: the CSV's folder)"
    )
    args = parser.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
        return 1
    if not args.csv.is_file():
        print(f"no such file: {args.csv}", file=sys.stderr)
        return 2
    for path in plot(args.csv, args.out if args.out is not None else args.csv.parent):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
