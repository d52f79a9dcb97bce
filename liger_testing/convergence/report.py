"""Output of a convergence run: terminal report, JSON file, PNG plot.

* :func:`format_report` -- the text printed by the CLI: settings, what the patch changed, a per-step
  table (losses, the worst quantity of the step and its ratio to the tolerance), the evaluation on the
  held-back batch, the quantities closest to (or beyond) their tolerance, and the verdict with the
  first step where the arms diverge.
* :func:`result_to_dict` / :func:`write_json` -- everything measured, per step and per quantity.
* :func:`plot_result` -- the three loss curves and the per-layer drift (relative parameter difference
  patched vs unpatched, with the unpatched arm's own float64 drift for comparison). Needs matplotlib
  (``pip install liger-kernel[convergence]``).
"""

from __future__ import annotations

import io
import json
import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from liger_testing.convergence.runner import ConvergenceResult

__all__ = ["format_report", "result_to_dict", "write_json", "plot_result", "layer_drift"]

_MAX_TABLE_ROWS = 40
REPORT_WIDTH = 120  # the report fits a 120-column terminal
JSON_SCHEMA_VERSION = 1  # bumped whenever a key of result_to_dict changes meaning or goes away


def _fmt(x: float, spec: str = ".3e") -> str:
    if isinstance(x, str):
        return x
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    if math.isinf(x):
        return "inf"
    return format(x, spec)


def shown_step(step: int | str) -> str:
    """Steps are numbered from 1 everywhere a person reads them (progress lines, tables, verdict)."""
    return str(step + 1) if isinstance(step, int) else str(step)


def _render(*renderables: Any) -> str:
    from rich.console import Console

    console = Console(
        file=io.StringIO(), width=REPORT_WIDTH, force_terminal=False, color_system=None, soft_wrap=False
    )
    for item in renderables:
        console.print(item)
    return "\n".join(line.rstrip() for line in console.file.getvalue().rstrip("\n").splitlines())


def _table(header: list[str], rows: list[list[str]], *, title: str | None = None) -> Any:
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right", overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def _shown_steps(n: int, also: int | None) -> list[int]:
    if n <= _MAX_TABLE_ROWS:
        return list(range(n))
    stride = math.ceil(n / (_MAX_TABLE_ROWS - 6))
    shown = set(range(0, 3)) | set(range(0, n, stride)) | {n - 1}
    if also is not None:
        shown |= {also}
    return sorted(shown)


def _wrapped(text: str, indent: str = "") -> list[str]:
    return textwrap.wrap(text, REPORT_WIDTH, subsequent_indent=indent + "  ", initial_indent=indent) or [""]


def format_report(result: ConvergenceResult) -> str:
    """The human-readable report of a run (what the CLI prints), at most 120 columns wide."""
    cfg = result.config
    done = len(result.steps)
    lines = _wrapped(
        f"liger_testing convergence: {cfg.model}, {str(cfg.dtype).removeprefix('torch.')}, {cfg.device}, "
        f"{cfg.steps} steps, batch {cfg.batch_size} x {cfg.seq_len} tokens, seed {cfg.seed}, AdamW lr {cfg.lr:g}"
    )
    lines += _wrapped(f"patch: {result.patch_ref}  undo: {result.undo_ref}")
    if cfg.tolerance == "measured":
        from liger_testing.tolerances import machine_eps

        floor = max(cfg.floor_ulps * machine_eps(torch.float32), machine_eps(cfg.dtype))
        lines += _wrapped(
            f"tolerance: measured, per tensor and step: max|patched - unpatched| <= {cfg.noise_factor:g} x noise "
            f"+ {floor:.3g} x max|unpatched|, noise = max|unpatched - float64 reference| (or its largest value "
            f"so far relative to max|unpatched|)"
        )
    else:
        from liger_testing.tolerances import tolerances

        tol = tolerances(cfg.dtype)
        lines += _wrapped(
            f"tolerance: fixed: |patched - unpatched| <= {tol.atol:.3g} + {tol.rtol:.3g} x |unpatched| elementwise"
        )
    if not cfg.judge_params:
        lines += _wrapped(
            "parameters: recorded, not judged (low precision: AdamW's sign-like first updates flip parameters "
            "whose gradient rounds across zero; the gradients, losses and logits are judged)"
        )
    lines.append("what the patch changed:")
    for change in result.patch_changes:
        lines += _wrapped(change, "  ")
    lines.append("")

    first = result.first_divergence()
    first_step = first["step"] if first and isinstance(first["step"], int) else None
    rows = []
    for i in _shown_steps(done, first_step):
        rec = result.steps[i]
        rows.append(
            [
                shown_step(rec.step),
                _fmt(rec.loss["unpatched"], ".6f"),
                _fmt(rec.loss["patched"], ".6f"),
                _fmt(abs(rec.loss["patched"] - rec.loss["unpatched"])),
                _fmt(abs(rec.grad_norm["patched"] - rec.grad_norm["unpatched"])),
                rec.worst_quantity,
                _fmt(rec.worst_ratio, ".3f"),
                "DIVERGED" if not rec.worst_ratio <= 1.0 else "ok",
            ]
        )
    renderables: list[Any] = [
        _table(
            [
                "step",
                "loss unpatched",
                "loss patched",
                "|loss diff|",
                "|grad-norm diff|",
                "worst quantity",
                "ratio",
                "",
            ],
            rows,
        )
    ]
    if result.eval:
        renderables.append(
            _table(
                ["held-back batch", "max|diff|", "noise", "ratio"],
                [
                    [name.removeprefix("eval/"), _fmt(s.diff[0]), _fmt(s.noise[0]), _fmt(s.ratio[0], ".3f")]
                    for name, s in result.eval.items()
                ]
                + [["top-1 agreement", f"{100 * result.top1_agreement:.1f}%", "", ""]],
            )
        )
    renderables.append(
        _table(
            ["quantity", "layer", "step", "diff", "noise", "allowed", "ratio"],
            [
                [
                    w["quantity"],
                    w["layer"],
                    shown_step(w["step"]),
                    _fmt(w["diff"]),
                    _fmt(w["noise"]),
                    _fmt(w["allowed"]),
                    _fmt(w["ratio"], ".3f"),
                ]
                for w in result.worst(8)
            ],
            title="closest to tolerance (ratio = diff / allowed; > 1 is a divergence)",
        )
    )
    lines.append(_render(*renderables))
    lines.append("")
    if first is not None:
        verdict = (
            f"RESULT: DIVERGED at step {shown_step(first['step'])}: {first['quantity']} ({first['layer']}) differs "
            f"by {_fmt(first['diff'])}, allowed {_fmt(first['allowed'])} (ratio {_fmt(first['ratio'], '.3g')}; "
            f"the unpatched arm's own float64 noise there is {_fmt(first['noise'])})"
        )
    elif result.interrupted:
        verdict = (
            f"RESULT: INTERRUPTED after {done} of {cfg.steps} steps (no evaluation, no verdict): the steps done "
            f"stayed within tolerance ({result.seconds:.1f} s)"
        )
    else:
        verdict = (
            f"RESULT: PASS: the arms stay within tolerance for all {cfg.steps} steps and the evaluation "
            f"({result.seconds:.1f} s)"
        )
    lines += _wrapped(verdict)
    return "\n".join(lines)


def layer_drift(result: ConvergenceResult) -> dict[str, dict[str, list[float]]]:
    """Per layer, per step: max relative parameter difference patched vs unpatched ("drift") and
    unpatched vs float64 reference ("noise"), relative to the largest parameter magnitude."""
    out: dict[str, dict[str, list[float]]] = {}
    from liger_testing.convergence.runner import layer_of

    n = len(result.steps)
    for name, series in result.quantities.items():
        if not name.startswith("param/"):
            continue
        layer = layer_of(name)
        entry = out.setdefault(layer, {"drift": [0.0] * n, "noise": [0.0] * n})
        for i in range(n):
            scale = series.scale[i] or 1.0
            entry["drift"][i] = _max(entry["drift"][i], series.diff[i] / scale)
            entry["noise"][i] = _max(entry["noise"][i], series.noise[i] / scale)
    return dict(sorted(out.items(), key=lambda kv: _layer_order(kv[0])))


def _max(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return max(a, b)


def _layer_order(layer: str) -> tuple[int, int, str]:
    if layer == "embeddings":
        return (0, 0, layer)
    if layer.startswith("layer "):
        return (1, int(layer.split()[1]), layer)
    return (2, 0, layer)


def _clean(x: Any) -> Any:
    """JSON has no NaN/inf: write them as strings."""
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    return x


def _numbered(point: dict[str, Any] | None) -> dict[str, Any] | None:
    if point is None or not isinstance(point["step"], int):
        return point
    return {**point, "step": point["step"] + 1}


def result_to_dict(result: ConvergenceResult) -> dict[str, Any]:
    """Everything measured. Steps count from 1, as in the printed report; per-quantity lists have one
    entry per step, in order."""
    return _clean(
        {
            "schema_version": JSON_SCHEMA_VERSION,
            "passed": result.passed,
            "interrupted": result.interrupted,
            "first_divergence": _numbered(result.first_divergence()),
            "worst": [_numbered(w) for w in result.worst(10)],
            "config": result.config.describe(),
            "spec": {"name": result.spec.name, "description": result.spec.description},
            "patch": {
                "patch": result.patch_ref,
                "undo": result.undo_ref,
                "kwargs": dict(result.config.patch_kwargs or result.spec.patch_kwargs),
                "changes": result.patch_changes,
            },
            "versions": result.versions,
            "seconds": result.seconds,
            "steps": [
                {
                    "step": r.step + 1,
                    "loss": r.loss,
                    "grad_norm": r.grad_norm,
                    "worst": r.worst_quantity,
                    "ratio": r.worst_ratio,
                }
                for r in result.steps
            ],
            "quantities": {name: s.to_dict() for name, s in result.quantities.items()},
            "eval": {
                "top1_agreement": result.top1_agreement,
                **{name: {k: v[0] for k, v in s.to_dict().items()} for name, s in result.eval.items()},
            },
            "layers": layer_drift(result),
        }
    )


def write_json(result: ConvergenceResult, path: str | Path) -> Path | str:
    """Write :func:`result_to_dict` as JSON to ``path``; ``"-"`` writes it to standard output."""
    if str(path) == "-":
        import sys

        sys.stdout.write(json.dumps(result_to_dict(result), indent=1) + "\n")
        sys.stdout.flush()
        return "<stdout>"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result_to_dict(result), indent=1) + "\n")
    return path


def plot_result(result: ConvergenceResult, path: str | Path) -> Path:
    """Write a PNG: loss curves of the three arms, and per-layer drift on a log scale."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            "plotting the convergence run needs matplotlib: pip install 'liger-kernel[convergence]' "
            "(or pip install matplotlib)"
        ) from exc

    from matplotlib.ticker import MaxNLocator

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    steps = [r.step + 1 for r in result.steps]  # numbered from 1, as in the printed report
    first = result.first_divergence()
    fig, (ax_loss, ax_drift) = plt.subplots(2, 1, figsize=(9, 8), sharex=True)
    styles = {"unpatched": "-", "patched": "--", "reference": ":"}
    labels = {"unpatched": "unpatched", "patched": "patched", "reference": "unpatched, float64"}
    for arm in ("unpatched", "patched", "reference"):
        ax_loss.plot(steps, [r.loss[arm] for r in result.steps], styles[arm], label=labels[arm])
    ax_loss.set_ylabel("training loss")
    if result.interrupted:
        verdict = f"INTERRUPTED after {len(steps)} of {result.config.steps} steps"
    else:
        verdict = "PASS" if first is None else f"DIVERGED at step {shown_step(first['step'])}"
    cfg = result.config
    ax_loss.set_title(f"{cfg.model}, {str(cfg.dtype).removeprefix('torch.')}, {cfg.device}: {verdict}")
    ax_loss.legend()

    # Log scale: exact zeros have no place on it. They are left out of the line (a gap), and a layer
    # that is exact at every step is named in the legend rather than drawn at an invented value.
    drift = layer_drift(result)
    for layer, series in drift.items():
        positive = [v if v > 0 else math.nan for v in series["drift"]]
        exact = all(v == 0 for v in series["drift"])
        label = f"{layer} (exact at every step)" if exact else layer
        (line,) = ax_drift.semilogy(steps, positive, marker=".", label=label)
        ax_drift.semilogy(
            steps,
            [v if v > 0 else math.nan for v in series["noise"]],
            ":",
            color=line.get_color(),
            alpha=0.6,
        )
    ax_drift.set_ylabel("max |param diff| / max |param|")
    ax_drift.set_xlabel("step")
    ax_drift.xaxis.set_major_locator(MaxNLocator(integer=True))
    judged = (
        "judged" if cfg.judge_params else f"recorded, NOT judged in {str(cfg.dtype).removeprefix('torch.')}"
    )
    ax_drift.set_title(
        f"per-layer parameter drift ({judged}): solid patched vs unpatched, dotted unpatched vs float64"
    )
    if first is not None and isinstance(first["step"], int):
        for ax in (ax_loss, ax_drift):
            ax.axvline(first["step"] + 1, color="red", alpha=0.5)
    if drift:
        ax_drift.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
