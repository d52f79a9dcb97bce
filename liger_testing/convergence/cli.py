"""Command line of the convergence runner: ``python -m liger_testing.converge``.

Exit status: 0 the arms stayed within tolerance, 1 they diverged, 2 bad arguments or a run that
cannot be judged (the patch changed nothing, undo left changes, ...), 3 the run crashed, 130
interrupted (Ctrl-C: the report of the steps done so far is printed first).

Arguments are checked when they are parsed, before torch is imported: ``--help`` and a bad argument
answer at once.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import time
import traceback
from typing import Any

from liger_testing.convergence.defaults import (
    DEFAULT_FLOOR_ULPS,
    DEFAULT_NOISE_FACTOR,
    DTYPE_NAMES,
    canonical_dtype_name,
)

EXIT_PASS, EXIT_DIVERGED, EXIT_SETUP, EXIT_CRASH, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
# Longest sequence the command line accepts before it knows the model (the built-in tiny configs
# allow 512 positions; the model's own limit is checked once its spec is loaded).
_MIN_SEQ_LEN = 2


def _int_at_least(minimum: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _float_above(minimum: float, inclusive: bool) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if (
            not (value >= minimum if inclusive else value > minimum)
            or value != value
            or value == float("inf")
        ):
            raise argparse.ArgumentTypeError(
                f"must be a finite number {'>=' if inclusive else '>'} {minimum:g}, got {text}"
            )
        return value

    return parse


def _dtype(text: str) -> str:
    try:
        name = canonical_dtype_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if name == "float64":
        raise argparse.ArgumentTypeError(
            "float64 is the reference arm's dtype; run float32, bfloat16 or float16"
        )
    return name


def _parse_option(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    lowered = raw.strip().lower()
    if lowered in ("true", "false"):
        return key.strip(), lowered == "true"
    try:
        return key.strip(), ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return key.strip(), raw


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m liger_testing.converge",
        description="Train a patched and an unpatched tiny Hugging Face model side by side (plus the unpatched "
        "model in float64, which measures the dtype's own noise) and report whether they diverge.",
        epilog="exit status: 0 within tolerance, 1 diverged, 2 bad arguments or a run that cannot be judged, "
        "3 crashed",
    )
    parser.add_argument(
        "--model", default="llama", help="registered model spec (default llama; --list shows them)"
    )
    parser.add_argument("--steps", type=_int_at_least(1), default=30, help="training steps (default 30)")
    aliases = ", ".join(sorted(k for k, v in DTYPE_NAMES.items() if v != "float64"))
    parser.add_argument(
        "--dtype", type=_dtype, default="float32", help=f"dtype of the two arms (default float32; {aliases})"
    )
    parser.add_argument(
        "--device", default="auto", help="auto (cuda when available, else cpu), cpu, cuda, cuda:1 ..."
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the batches")
    parser.add_argument(
        "--lr", type=_float_above(0.0, False), default=1e-3, help="AdamW learning rate (default 1e-3)"
    )
    parser.add_argument(
        "--weight-decay", type=_float_above(0.0, True), default=0.0, help="AdamW weight decay (default 0)"
    )
    parser.add_argument(
        "--batch-size",
        type=_int_at_least(1),
        default=None,
        help="sequences per batch (default 2 on cpu, 8 on gpu)",
    )
    parser.add_argument(
        "--seq-len",
        type=_int_at_least(_MIN_SEQ_LEN),
        default=None,
        help="tokens per sequence, at least 2 and at most the model's positions (default 16 on cpu, 128 on gpu)",
    )
    parser.add_argument(
        "--tolerance",
        choices=["measured", "fixed"],
        default="measured",
        help="measured: within noise-factor x the float64 noise floor (default); fixed: liger_testing.tolerances(dtype)",
    )
    parser.add_argument(
        "--noise-factor",
        type=_float_above(0.0, False),
        default=DEFAULT_NOISE_FACTOR,
        help=f"measured mode: c (default {DEFAULT_NOISE_FACTOR:g})",
    )
    parser.add_argument(
        "--floor-ulps",
        type=_float_above(0.0, True),
        default=DEFAULT_FLOOR_ULPS,
        help=f"measured mode: absolute floor in ulps of the largest value (default {DEFAULT_FLOOR_ULPS:g})",
    )
    parser.add_argument(
        "--judge-params",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="judge the parameters too (default: in float32 yes, in bfloat16/float16 recorded only)",
    )
    parser.add_argument(
        "--top-k",
        type=_int_at_least(1),
        default=5,
        help="top-k log-probabilities compared on the held-back batch (default 5)",
    )
    parser.add_argument(
        "--patch", default=None, help="patch callable 'package.module:function' (default: the spec's)"
    )
    parser.add_argument(
        "--undo",
        default=None,
        help="undo callable 'package.module:function', or 'none' (default: the spec's)",
    )
    parser.add_argument(
        "--patch-option",
        action="append",
        type=_parse_option,
        default=[],
        metavar="NAME=VALUE",
        help="keyword for the patch, repeatable (e.g. --patch-option swiglu=false to leave SwiGLU out)",
    )
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (repeatable), e.g. one that calls register_spec for your own models",
    )
    parser.add_argument(
        "--json",
        default=None,
        metavar="PATH",
        help="write every measurement as JSON ('-': to standard output, the report then goes to standard error)",
    )
    parser.add_argument(
        "--plot", default=None, metavar="PATH", help="write a PNG of the loss curves and per-layer drift"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--list", action="store_true", help="list the registered model specs and exit")
    return parser


class _Progress:
    """Per-step lines (or a tqdm bar on a terminal) once the run has taken more than a few seconds."""

    DELAY_S = 3.0

    def __init__(self, steps: int, quiet: bool) -> None:
        self.start = time.perf_counter()
        self.quiet = quiet
        self.bar = None
        if not quiet and sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self.bar = tqdm(
                    total=steps, desc="converge", unit="step", file=sys.stderr, delay=self.DELAY_S
                )
            except ImportError:
                pass

    def __call__(self, record: Any) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{record.loss['patched']:.4f}", ratio=f"{record.worst_ratio:.2f}")
            self.bar.update(1)
            return
        elapsed = time.perf_counter() - self.start
        if elapsed < self.DELAY_S and record.step + 1 < record.steps:
            return
        print(
            f"step {record.step + 1}/{record.steps}: loss unpatched {record.loss['unpatched']:.6f} "
            f"patched {record.loss['patched']:.6f}; worst {record.worst_quantity} ratio {record.worst_ratio:.3f} "
            f"({record.seconds:.2f} s, {elapsed:.0f} s in all)",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _say(text: str) -> None:
    print(f"converge: {text}", file=sys.stderr, flush=True)


def _check_device(parser: argparse.ArgumentParser, requested: str) -> str:
    import torch

    device = "cuda" if requested == "auto" and torch.cuda.is_available() else requested
    if device == "auto":
        device = "cpu"
    try:
        kind = torch.device(device).type
    except RuntimeError as exc:
        parser.error(f"--device {requested!r}: {exc}")
    if kind == "cuda" and not torch.cuda.is_available():
        parser.error(
            f"--device {requested!r}: no CUDA GPU is available here (torch.cuda.is_available() is False)"
        )
    if kind == "cuda":
        index = torch.device(device).index
        if index is not None and index >= torch.cuda.device_count():
            parser.error(f"--device {requested!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device


def _check_seq_len(parser: argparse.ArgumentParser, seq_len: int | None, spec: Any) -> None:
    if seq_len is None:
        return
    from liger_testing.convergence.data import load_dataset

    dataset = load_dataset()
    limit = getattr(spec.make_config(dataset.vocab_size), "max_position_embeddings", None)
    if isinstance(limit, int) and seq_len > limit:
        parser.error(f"--seq-len {seq_len}: the {spec.name} spec's model has {limit} positions")
    available = min(dataset.split, len(dataset.tokens) - dataset.split) - 1
    if seq_len > available:
        parser.error(f"--seq-len {seq_len}: the shipped dataset's held-back split has {available + 1} tokens")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _main(parser, args)
    except KeyboardInterrupt:  # before the first step or during the evaluation: nothing to report yet
        _say("interrupted before any step was completed")
        return EXIT_INTERRUPTED


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    import importlib

    if not (args.list or args.quiet):
        _say(
            f"building three tiny {args.model} models ({args.dtype}: unpatched, patched, float64 reference); "
            "importing torch and transformers first (10-30 s on a small CPU machine)"
        )
    device = _check_device(parser, args.device)
    import torch

    # Before anything imports Triton (building a model does): on CPU its kernels need the interpreter.
    if torch.device(device).type == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")

    from liger_testing.convergence import report
    from liger_testing.convergence.runner import ConvergenceSetupError, RunConfig, run_convergence
    from liger_testing.convergence.specs import available_specs, get_spec, resolve_callable

    for module in args.imports:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            parser.error(f"--import {module}: {exc}")
    if args.list:
        for name in available_specs():
            spec = get_spec(name)
            print(
                f"{name:12s} {spec.description}  [patch {spec.patch if isinstance(spec.patch, str) else spec.patch!r}]"
            )
        return EXIT_PASS
    if args.model not in available_specs():
        parser.error(f"--model {args.model!r}: not registered; choose from {', '.join(available_specs())}")
    _check_seq_len(parser, args.seq_len, get_spec(args.model))
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            parser.error(
                "--plot needs matplotlib: pip install 'liger-kernel[convergence]' (or pip install matplotlib)"
            )

    progress = _Progress(args.steps, args.quiet)
    config = RunConfig(
        model=args.model,
        steps=args.steps,
        dtype=args.dtype,
        device=device,
        seed=args.seed,
        lr=args.lr,
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        tolerance=args.tolerance,
        noise_factor=args.noise_factor,
        floor_ulps=args.floor_ulps,
        top_k=args.top_k,
        judge_params=args.judge_params,
        patch=args.patch,
        undo=args.undo,
        patch_kwargs=dict(args.patch_option) if args.patch_option else None,
        progress=progress,
    )
    try:  # bad arguments: exit 2 before any training
        resolved = config.resolved()
        spec = get_spec(resolved.model)
        resolve_callable(resolved.patch if resolved.patch is not None else spec.patch, "patch")
        resolve_callable(resolved.undo if resolved.undo is not None else spec.undo, "undo")
    except (ValueError, TypeError, ImportError, AttributeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_SETUP
    if not args.quiet:
        _say(
            f"training {resolved.steps} steps of batch {resolved.batch_size} x {resolved.seq_len} tokens on "
            f"{resolved.device}"
            + (" (Triton interpreter: seconds per step)" if resolved.device == "cpu" else "")
        )
    try:
        result = run_convergence(config)
    except ConvergenceSetupError as exc:
        progress.close()
        print(f"error: the run cannot be judged: {exc}", file=sys.stderr)
        return EXIT_SETUP
    except KeyboardInterrupt:
        raise
    except Exception:
        progress.close()
        traceback.print_exc()
        return EXIT_CRASH
    progress.close()

    json_to_stdout = args.json == "-"
    print(report.format_report(result), file=sys.stderr if json_to_stdout else sys.stdout)
    if args.json:
        where = report.write_json(result, args.json)
        if not json_to_stdout:
            print(f"JSON: {where}")
    if args.plot:
        print(
            f"plot: {report.plot_result(result, args.plot)}",
            file=sys.stderr if json_to_stdout else sys.stdout,
        )
    if result.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_PASS if result.passed else EXIT_DIVERGED
