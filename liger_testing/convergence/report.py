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

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from liger_testing.convergence.runner import ConvergenceResult

__all__ = ["format_report", "result_to_dict", "write_json", "plot_result", "layer_drift"]

_MAX_TABLE_ROWS = 40


def _fmt(x: float, spec: str = ".3e") -> str:
    if isinstance(x, str):
        return x
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    if math.isinf(x):
        return "inf"
    return format(x, spec)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(
        c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
    )
    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _shown_steps(n: int, also: int | None) -> list[int]:
    if n <= _MAX_TABLE_ROWS:
        return list(range(n))
    stride = math.ceil(n / (_MAX_TABLE_ROWS - 6))
    shown = set(range(0, 3)) | set(range(0, n, stride)) | {n - 1}
    if also is not None:
        shown |= {also}
    return sorted(shown)


def format_report(result: ConvergenceResult) -> str:
    """The human-readable report of a run (what the CLI prints)."""
    cfg = result.config
    lines = [
        f"liger_testing convergence: {cfg.model}, {str(cfg.dtype).removeprefix('torch.')}, {cfg.device}, "
        f"{cfg.steps} steps, batch {cfg.batch_size} x {cfg.seq_len} tokens, seed {cfg.seed}, AdamW lr {cfg.lr:g}",
        f"patch: {result.patch_ref}  undo: {result.undo_ref}",
    ]
    if cfg.tolerance == "measured":
        from liger_testing.tolerances import machine_eps

        floor = max(cfg.floor_ulps * machine_eps(torch.float32), machine_eps(cfg.dtype))
        lines.append(
            f"tolerance: measured, per tensor and step: max|patched - unpatched| <= {cfg.noise_factor:g} x noise "
            f"+ {floor:.3g} x max|unpatched|, noise = max|unpatched - float64 reference| (or its largest value "
            f"so far relative to max|unpatched|)"
        )
    else:
        from liger_testing.tolerances import tolerances

        tol = tolerances(cfg.dtype)
        lines.append(
            f"tolerance: fixed: |patched - unpatched| <= {tol.atol:.3g} + {tol.rtol:.3g} x |unpatched| elementwise"
        )
    if not cfg.judge_params:
        lines.append(
            "parameters: recorded, not judged (low precision: AdamW's sign-like first updates flip parameters "
            "whose gradient rounds across zero; the gradients, losses and logits are judged)"
        )
    lines.append("patched model (what the patch changed):")
    lines.extend(f"  {c}" for c in result.patch_changes)
    lines.append("")

    first = result.first_divergence()
    first_step = first["step"] if first and isinstance(first["step"], int) else None
    rows = []
    for i in _shown_steps(len(result.steps), first_step):
        rec = result.steps[i]
        rows.append(
            [
                str(rec.step),
                _fmt(rec.loss["unpatched"], ".6f"),
                _fmt(rec.loss["patched"], ".6f"),
                _fmt(abs(rec.loss["patched"] - rec.loss["unpatched"])),
                _fmt(abs(rec.grad_norm["patched"] - rec.grad_norm["unpatched"])),
                rec.worst_quantity,
                _fmt(rec.worst_ratio, ".3f"),
                "DIVERGED" if not rec.worst_ratio <= 1.0 else "ok",
            ]
        )
    lines.extend(
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
    )
    lines.append("")
    lines.append(
        f"held-back batch: top-1 agreement {100 * result.top1_agreement:.1f}%; "
        + "; ".join(
            f"{name.removeprefix('eval/')} max|diff| {_fmt(s.diff[0])} (noise {_fmt(s.noise[0])}, ratio {_fmt(s.ratio[0], '.3f')})"
            for name, s in result.eval.items()
        )
    )
    lines.append("")
    lines.append("closest to tolerance (ratio = diff / allowed; > 1 is a divergence):")
    lines.extend(
        "  " + line
        for line in _table(
            ["quantity", "layer", "step", "diff", "noise", "allowed", "ratio"],
            [
                [
                    w["quantity"],
                    w["layer"],
                    str(w["step"]),
                    _fmt(w["diff"]),
                    _fmt(w["noise"]),
                    _fmt(w["allowed"]),
                    _fmt(w["ratio"], ".3f"),
                ]
                for w in result.worst(8)
            ],
        )
    )
    lines.append("")
    if first is None:
        lines.append(
            f"RESULT: PASS: the arms stay within tolerance for all {cfg.steps} steps and the evaluation ({result.seconds:.1f} s)"
        )
    else:
        lines.append(
            f"RESULT: DIVERGED at step {first['step']}: {first['quantity']} ({first['layer']}) differs by "
            f"{_fmt(first['diff'])}, allowed {_fmt(first['allowed'])} (ratio {_fmt(first['ratio'], '.3g')}; "
            f"the unpatched arm's own float64 noise there is {_fmt(first['noise'])})"
        )
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


def result_to_dict(result: ConvergenceResult) -> dict[str, Any]:
    return _clean(
        {
            "passed": result.passed,
            "first_divergence": result.first_divergence(),
            "worst": result.worst(10),
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
                    "step": r.step,
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


def write_json(result: ConvergenceResult, path: str | Path) -> Path:
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

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    steps = [r.step for r in result.steps]
    first = result.first_divergence()
    fig, (ax_loss, ax_drift) = plt.subplots(2, 1, figsize=(9, 8), sharex=True)
    styles = {"unpatched": "-", "patched": "--", "reference": ":"}
    labels = {"unpatched": "unpatched", "patched": "patched", "reference": "unpatched, float64"}
    for arm in ("unpatched", "patched", "reference"):
        ax_loss.plot(steps, [r.loss[arm] for r in result.steps], styles[arm], label=labels[arm])
    ax_loss.set_ylabel("training loss")
    verdict = "PASS" if first is None else f"DIVERGED at step {first['step']}"
    cfg = result.config
    ax_loss.set_title(f"{cfg.model}, {str(cfg.dtype).removeprefix('torch.')}, {cfg.device}: {verdict}")
    ax_loss.legend()

    drift = layer_drift(result)
    tiny = 1e-30  # log scale: exact agreement drawn at the bottom
    for layer, series in drift.items():
        (line,) = ax_drift.semilogy(steps, [max(v, tiny) for v in series["drift"]], label=f"{layer}")
        ax_drift.semilogy(
            steps, [max(v, tiny) for v in series["noise"]], ":", color=line.get_color(), alpha=0.6
        )
    ax_drift.set_ylabel("max |param diff| / max |param|")
    ax_drift.set_xlabel("step")
    ax_drift.set_title("per-layer drift: solid patched vs unpatched, dotted unpatched vs float64")
    if first is not None and isinstance(first["step"], int):
        for ax in (ax_loss, ax_drift):
            ax.axvline(first["step"], color="red", alpha=0.5)
    ax_drift.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
