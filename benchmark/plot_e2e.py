"""Bar charts from CSVs written by ``python -m benchmark.e2e`` (one preset; several CSVs of a split run
are merged, a later file winning per arm).

    python -m benchmark.plot_e2e benchmark/results/e2e_llama3-8b_<date>*.csv --out benchmark/results/

writes ``e2e_<preset>.png`` (or ``--name``): for each step kind measured (``fwd_bwd``, and
``train_step`` with ``--optimizer``), tokens/s per arm with the ratio to eager above each bar, and peak
GiB per arm with the ratio to eager.  Arms that failed (OOM, error) show their note instead of a bar.
Needs matplotlib (run it on a workstation from committed CSVs).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

COLORS = {"eager": "#8c8c8c", "compile": "#4c72b0", "liger": "#dd8452", "liger_compile": "#c44e52"}
PANELS = (
    ("tokens_per_s", "tokens / s (higher is better)"),
    ("peak_gib", "peak memory, GiB (lower is better)"),
)


def plot(csv_paths: list[Path], out_dir: Path, name: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmark.e2e import ARMS, KINDS, load_csvs

    preset, results, info = load_csvs(csv_paths)
    arms = [a for a in ARMS if a in results] + [a for a in results if a not in ARMS]
    kinds = [k for k in KINDS if any(f"{k}_ms" in r.values for r in results.values())] or [KINDS[0]]
    fig, axes = plt.subplots(len(kinds), 2, figsize=(11, 3.8 * len(kinds)), squeeze=False)
    for row, kind in enumerate(kinds):
        for col, (metric, title) in enumerate(PANELS):
            ax = axes[row][col]
            values = [results[a].values.get(f"{kind}_{metric}", math.nan) for a in arms]
            base = (
                results["eager"].values.get(f"{kind}_{metric}", math.nan) if "eager" in results else math.nan
            )
            xs = range(len(arms))
            ax.bar(
                xs,
                [0 if math.isnan(v) else v for v in values],
                color=[COLORS.get(a, "#55a868") for a in arms],
            )
            top = max([v for v in values if not math.isnan(v)], default=1.0)
            for x, a, v in zip(xs, arms, values):
                if math.isnan(v):
                    note = results[a].note
                    label = "OOM" if "OOM" in note else ("error" if "error" in note else "n/a")
                    ax.text(x, top * 0.02, label, ha="center", va="bottom", rotation=90, fontsize=8)
                else:
                    ratio = "" if math.isnan(base) or base == 0 else f"\n{v / base:.2f}x eager"
                    ax.text(
                        x,
                        v,
                        f"{v:,.0f}{ratio}" if metric == "tokens_per_s" else f"{v:.1f}{ratio}",
                        ha="center",
                        va="bottom",
                        fontsize=8,
                    )
            ax.set_xticks(list(xs), arms)
            ax.set_ylim(0, top * 1.25)
            shape = f" b{info['batch']} s{info['seq']}" if info.get("batch") else ""
            ax.set_title(f"{preset}{shape} {kind}: {title}", fontsize=10)
    fig.suptitle(
        f"{info.get('gpu', '')}; torch {info.get('torch', '')}, transformers {info.get('transformers', '')}, "
        f"liger_kernel {info.get('liger_kernel', '')}",
        fontsize=9,
    )
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name or 'e2e_' + preset}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.plot_e2e", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("csv", type=Path, nargs="+", help="CSVs from python -m benchmark.e2e (one preset)")
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for the PNG (default: the first CSV's)"
    )
    parser.add_argument("--name", default=None, help="file name without .png (default e2e_<preset>)")
    args = parser.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
        return 1
    missing = [p for p in args.csv if not p.is_file()]
    if missing:
        print(f"no such file: {missing}", file=sys.stderr)
        return 2
    print(f"wrote {plot(args.csv, args.out if args.out is not None else args.csv[0].parent, args.name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
