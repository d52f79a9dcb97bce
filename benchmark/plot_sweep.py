"""Charts from the CSVs of ``python -m benchmark.sweep``.

    python -m benchmark.plot_sweep benchmark/results/sweep_<family>_<date>*.csv [--out DIR]

Each CSV (or several of one family, e.g. the parts of a split run, given together) becomes
``<first csv stem>.png`` in --out (default: beside the first CSV):
    norm, ce, flce, rope  one panel per op (norm: per op and token count): GPU time (CUDA-graph replay)
                          of each arm relative to torch.compile's (below 1: faster than compile) along
                          the swept shapes, solid; launched time the same, dotted; and for the losses a
                          second row of panels with peak memory relative to compile's;
    flce_curve            time (GPU, launched) against peak memory of our fused loss for each (hidden,
                          vocab), each point labelled with its rows per chunk, with the cost model's
                          predicted curve dashed; ``--with`` adds the other arms' points at the same shapes
                          from a flce-family CSV.
Missing values (nan) are left out.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections import defaultdict
from pathlib import Path

ARMS = ("eager", "compile", "ours", "peer")
COLORS = {"eager": "#8c8c8c", "compile": "#4c72b0", "ours": "#dd8452", "peer": "#55a868"}


def load(paths: list[Path]) -> tuple[str, list[dict[str, str]]]:
    """(family, rows) of the CSVs, which must share one family."""
    rows: list[dict[str, str]] = []
    for path in paths:
        with path.open(newline="") as f:
            rows += list(csv.DictReader(f))
    families = sorted({r["family"] for r in rows})
    if len(families) != 1:
        raise ValueError(f"expected CSVs of one family, got {families or 'none'}")
    return families[0], rows


def _value(row: dict[str, str]) -> float:
    try:
        return float(row["value"])
    except ValueError:
        return math.nan


def _dims(row: dict[str, str]) -> dict[str, int]:
    return {k: int(v) for k, v in (kv.split("=") for kv in row["dims"].split(";") if kv)}


def table(rows: list[dict[str, str]]) -> dict[tuple[str, str, str], dict[str, dict[str, float]]]:
    """values[(op, shape, point)][provider][metric]."""
    values: dict = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        values[(r["op"], r["shape"], r.get("point", ""))][r["provider"]][r["metric"]] = _value(r)
    return values


def _run_info(rows: list[dict[str, str]]) -> str:
    first = rows[0]
    return f"{first['gpu']}, torch {first['torch']}, triton {first['triton']}, {first['date'][:10]}"


def plot_shapes(family: str, rows: list[dict[str, str]], out: Path) -> None:
    """Per panel (op, or op x tokens for norms): each arm's time over compile's along the shapes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = table(rows)
    dims = {(r["op"], r["shape"]): _dims(r) for r in rows}
    models = {(r["op"], r["shape"]): r["models"] for r in rows}
    panels: dict[str, list[str]] = defaultdict(list)  # title -> shapes in file order
    for op, shape, _point in values:
        d = dims[(op, shape)]
        title = f"{op}, {d['rows']} tokens" if family == "norm" else op
        if shape not in panels[title]:
            panels[title].append(shape)
    with_memory = family in ("ce", "flce")
    n_rows = 2 if with_memory else 1
    fig, axes = plt.subplots(n_rows, len(panels), figsize=(6 * len(panels), 4.5 * n_rows), squeeze=False)
    for col, (title, shapes) in enumerate(panels.items()):
        op = title.split(",")[0]
        labels = []
        for shape in shapes:
            d = dims[(op, shape)]
            labels.append(str(d["hidden"]) if family == "norm" else f"{shape}\n{models[(op, shape)][:30]}")
        x = list(range(len(shapes)))
        ax = axes[0][col]
        for arm in ARMS:
            for metric, style in (("graph_ms", "-"), ("full_ms", ":")):
                ys = [
                    _ratio(values[(op, s, "")][arm].get(metric), values[(op, s, "")]["compile"].get(metric))
                    for s in shapes
                ]
                if all(math.isnan(y) for y in ys):
                    continue
                name = f"{arm} ({'GPU' if metric == 'graph_ms' else 'launched'})"
                ax.plot(x, ys, style, marker="o", ms=3, color=COLORS[arm], label=name)
        ax.axhline(1.0, color="black", lw=0.6)
        ax.set_title(title)
        ax.set_ylabel("time / torch.compile's time")
        ax.set_xticks(x, labels, rotation=60 if family != "norm" else 0, fontsize=7, ha="right")
        if family == "norm":
            ax.set_xlabel("hidden")
        _legend(ax)
        if with_memory:
            ax = axes[1][col]
            for arm in ARMS:
                ys = [
                    _ratio(
                        values[(op, s, "")][arm].get("peak_mib"),
                        values[(op, s, "")]["compile"].get("peak_mib"),
                    )
                    for s in shapes
                ]
                if not all(math.isnan(y) for y in ys):
                    ax.plot(x, ys, "-", marker="s", ms=3, color=COLORS[arm], label=arm)
            ax.axhline(0.5, color="black", lw=0.6, ls="--")
            ax.set_ylabel("peak memory / torch.compile's")
            ax.set_xticks(x, labels, rotation=60, fontsize=7, ha="right")
            _legend(ax)
    fig.suptitle(f"sweep {family}: {_run_info(rows)}")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_curve(rows: list[dict[str, str]], out: Path, others: list[dict[str, str]]) -> None:
    """Time against peak memory per (hidden, vocab): measured (GPU solid, launched dotted), predicted dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = table(rows)
    shapes = list(dict.fromkeys(shape for _op, shape, _p in values))
    fig, axes = plt.subplots(1, len(shapes), figsize=(7 * len(shapes), 5), squeeze=False)
    other_values = table(others) if others else {}
    for ax, shape in zip(axes[0], shapes):
        points = [(p, values[(op, s, p)]["ours"]) for (op, s, p) in values if s == shape]
        swept = sorted((m for p, m in points if p.startswith("rows=")), key=lambda m: m.get("chunk_rows", 0))
        for metric, style, name in (("graph_ms", "-o", "GPU time"), ("full_ms", ":o", "launched")):
            xs = [m.get("peak_mib", math.nan) for m in swept]
            ax.plot(
                xs, [m.get(metric, math.nan) for m in swept], style, ms=3, color=COLORS["ours"], label=name
            )
        ax.plot(
            [m.get("predicted_peak_mib", math.nan) for m in swept],
            [m.get("predicted_ms", math.nan) for m in swept],
            "--",
            color="black",
            lw=0.8,
            label="cost model",
        )
        for m in swept:
            ax.annotate(f"{m.get('chunk_rows', 0):.0f}", (m.get("peak_mib", math.nan), m.get("graph_ms", math.nan)),
                        fontsize=7, xytext=(3, 3), textcoords="offset points")  # fmt: skip
        for p, m in points:
            if not p.startswith("rows="):
                ax.plot(
                    m.get("peak_mib", math.nan),
                    m.get("graph_ms", math.nan),
                    "*",
                    ms=9,
                    color="#c44e52" if p == "default" else "#8172b2",
                )
                ax.annotate(p, (m.get("peak_mib", math.nan), m.get("graph_ms", math.nan)), fontsize=7,
                            xytext=(3, -10), textcoords="offset points")  # fmt: skip
        for (_op, s, _p), by_arm in other_values.items():
            if s != shape:
                continue
            for arm in ("eager", "compile", "peer"):
                m = by_arm.get(arm, {})
                if not math.isnan(m.get("graph_ms", math.nan)):
                    ax.plot(
                        m.get("peak_mib", math.nan),
                        m.get("graph_ms", math.nan),
                        "D",
                        color=COLORS[arm],
                        label=arm,
                    )
        ax.set_xlabel("peak extra memory of a full pass, MiB")
        ax.set_ylabel("full pass, ms")
        ax.set_title(f"fused linear cross entropy {shape}: rows per chunk")
        _legend(ax)
    fig.suptitle(f"time against memory: {_run_info(rows)}")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def _ratio(a: float | None, b: float | None) -> float:
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b == 0:
        return math.nan
    return a / b


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.plot_sweep", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("csv", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="folder (default: the first CSV's)")
    parser.add_argument(
        "--with", dest="with_csv", type=Path, default=None, help="flce_curve: a flce-family CSV"
    )
    args = parser.parse_args(argv)
    family, rows = load(args.csv)
    out_dir = args.out or args.csv[0].parent
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{args.csv[0].stem}.png"
    if family == "flce_curve":
        others = load([args.with_csv])[1] if args.with_csv else []
        plot_curve(rows, out, others)
    else:
        plot_shapes(family, rows, out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
