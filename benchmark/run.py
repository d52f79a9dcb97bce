"""Benchmark Liger kernels against eager PyTorch / Hugging Face code and torch.compile of that code.

    python -m benchmark.run [--ops rms_norm,layer_norm,...] [--out benchmark/results/kernels_<date>.csv]
                            [--smoke] [--providers eager,compile,liger] [--warmup 25] [--rep 100]

For each op (benchmark/ops.py) and shape, and each provider
    eager    the Hugging Face module / PyTorch function the kernel replaces,
    compile  torch.compile of that same eager code (default mode, static shapes; compiled once and
             warmed up before anything is timed),
    liger    the Liger kernel through its public module / function,
it measures (median of ``triton.testing.do_bench`` on CUDA):
    fwd_ms   the forward, with autograd recording (as in training);
    bwd_ms   the backward alone: each iteration runs a fresh forward outside the timed region, flushes
             L2, then times ``torch.autograd.grad(outputs, inputs+params, fixed grad_outputs)`` between
             CUDA events (no retain_graph: torch.compile's backward donates its saved buffers and
             refuses retain_graph=True).  For ops whose Liger forward already computes the gradient
             (cross_entropy, fused_linear_cross_entropy) a backward alone means nothing, so for every
             provider of such an op bwd_ms = full_ms - fwd_ms, and the note column says so;
    full_ms  forward + backward (``torch.autograd.grad``, so no ``.grad`` accumulation is timed);
    peak_mib peak extra memory of one full pass: ``torch.cuda.max_memory_allocated()`` during the pass
             minus ``torch.cuda.memory_allocated()`` just before it.  Allocated before the pass and so
             NOT counted: weights, inputs, targets, the fixed output gradients.  Counted: everything the
             pass allocates (activations saved for backward, temporaries, the output, and the
             gradients of the inputs and weights it returns).  The same definition for every op.
Before timing, the Liger result is checked once against eager (forward outputs and every gradient,
relative L2 error < --check-tol, default 2e-2); the note column of the liger rows says check=ok or
check=FAIL with the worst error, so a fast but wrong kernel cannot pass unnoticed.

Without CUDA only ``--smoke`` runs: tiny shapes on CPU tensors, Liger kernels through Triton's
interpreter (TRITON_INTERPRET=1 is set here before liger_kernel/triton are imported), compile with the
"aot_eager" backend, wall-clock timing, no memory figures.  It checks the harness, not the speed.

One op failing (import error, OOM, compile error) records rows with note "error: ..." and the run goes
on.  Rows are appended to the CSV as each shape finishes, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import gc
import importlib.metadata
import inspect
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

if not torch.cuda.is_available():
    # Must happen before anything imports triton or liger_kernel (kernels are decorated at import).
    os.environ.setdefault("TRITON_INTERPRET", "1")

from benchmark.ops import OPS, OpSpec, Problem, Shape  # noqa: E402

PROVIDERS = ("eager", "compile", "liger")
METRICS = ("fwd_ms", "bwd_ms", "full_ms", "graph_ms", "peak_mib")
# Every results CSV ends with where and when it was measured (``environment``) and a note.
ENV_COLUMNS = ("gpu", "torch", "triton", "transformers", "liger_kernel", "date", "note")
COLUMNS = ("op", "shape", "dtype", "provider", "metric", "value", *ENV_COLUMNS)
_DTYPES = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "float32": torch.float32,
    "fp32": torch.float32,
}
_REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------
# environment


def _git_commit() -> str | None:
    # The GPU machine's copy of the tree may carry a stale .git; scripts run there write the commit
    # they were started from into .gitrev (ignored by git), which then wins.
    gitrev = _REPO / ".gitrev"
    if gitrev.is_file() and gitrev.read_text().strip():
        return gitrev.read_text().strip()
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=10", "HEAD"], cwd=_REPO, capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=_REPO,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device, liger_version: str | None) -> dict[str, str]:
    import transformers
    import triton

    if liger_version is None:
        try:
            liger_version = importlib.metadata.version("liger-kernel")
        except importlib.metadata.PackageNotFoundError:
            liger_version = "unknown"
        commit = _git_commit()
        if commit:
            liger_version = f"{liger_version}+g{commit}"
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()})"
    return {
        "gpu": gpu,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "transformers": transformers.__version__,
        "liger_kernel": liger_version,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


# ---------------------------------------------------------------------------------------------
# timing and memory


class Timer:
    """Median milliseconds: ``triton.testing.do_bench`` on CUDA, the wall clock on CPU."""

    def __init__(self, device: torch.device, warmup: int, rep: int, cpu_reps: int) -> None:
        self.device = device
        self.warmup = warmup
        self.rep = rep
        self.cpu_reps = cpu_reps
        self._flush_buffer: torch.Tensor | None = None
        if device.type == "cuda":
            from triton.testing import do_bench

            self._do_bench = do_bench
            self._kwargs: dict[str, Any] = {"warmup": warmup, "rep": rep}
            if "return_mode" in inspect.signature(do_bench).parameters:
                self._kwargs["return_mode"] = "median"
            else:  # older triton: the 0.5 quantile is the median
                self._kwargs["quantiles"] = [0.5]

    def __call__(self, fn: Callable[[], Any]) -> float:
        if self.device.type == "cuda":
            value = self._do_bench(fn, **self._kwargs)
            return float(value[0] if isinstance(value, (list, tuple)) else value)
        fn()
        times = []
        for _ in range(self.cpu_reps):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times)

    def _flush_l2(self) -> None:
        # As do_bench does before each timed call: overwrite a buffer larger than the L2 cache.
        if self._flush_buffer is None:
            self._flush_buffer = torch.empty(256 * 2**20, dtype=torch.int8, device=self.device)
        self._flush_buffer.zero_()

    def backward(self, p: Problem, full_ms: float) -> float:
        """The backward alone: each iteration runs a fresh forward outside the timed region, then
        times ``torch.autograd.grad`` (no retain_graph, so compiled backwards that donate their saved
        buffers and kernels that reuse them work as in training).  Iteration counts follow do_bench's
        budgets, sized from the full pass's time."""
        wrt = list(p.wrt.values())
        if self.device.type != "cuda":
            times = []
            for _ in range(self.cpu_reps + 1):
                outs = _outputs(forward(p))
                start = time.perf_counter()
                torch.autograd.grad(outs, wrt, p.grad_outputs)
                times.append((time.perf_counter() - start) * 1e3)
                del outs
            return statistics.median(times[1:])
        est = max(full_ms, 1e-3)
        n_warmup = max(1, int(self.warmup / est))
        n_rep = max(1, min(int(self.rep / est), 2000))
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(n_rep)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(n_rep)]
        for i in range(n_warmup + n_rep):
            outs = _outputs(forward(p))
            self._flush_l2()
            if i >= n_warmup:
                starts[i - n_warmup].record()
            torch.autograd.grad(outs, wrt, p.grad_outputs)
            if i >= n_warmup:
                ends[i - n_warmup].record()
            del outs
        torch.cuda.synchronize(self.device)
        self._flush_buffer = None
        return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))


def _outputs(out: Any) -> tuple[torch.Tensor, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def forward(p: Problem) -> Any:
    return p.fn(*p.args)


def full_pass(p: Problem) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad(_outputs(forward(p)), list(p.wrt.values()), p.grad_outputs)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def peak_extra_mib(p: Problem, device: torch.device) -> float:
    """Peak memory allocated during one full pass beyond what was allocated before it, in MiB."""
    if device.type != "cuda":
        return math.nan
    for t in p.wrt.values():
        t.grad = None
    gc.collect()
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    grads = full_pass(p)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    del grads
    return (peak - before) / 2**20


def measure(
    p: Problem,
    device: torch.device,
    timer: Timer,
    bwd_from_full: bool,
    results: dict[str, float],
) -> None:
    """Fill ``results`` metric by metric (so whatever finished survives an exception later on)."""
    for _ in range(2):  # warm-up: compiles (torch.compile, Triton JIT) and settles the allocator
        full_pass(p)
    _sync(device)
    results["peak_mib"] = peak_extra_mib(p, device)
    results["fwd_ms"] = timer(lambda: forward(p))
    results["full_ms"] = timer(lambda: full_pass(p))
    if device.type == "cuda":
        try:
            results["graph_ms"] = graph_full_ms(p, timer)
        except Exception as exc:  # a provider that cannot be captured keeps its other metrics
            print(f"    (no CUDA-graph time: {_short(exc)})", flush=True)
        _free(device)
    if not bwd_from_full:
        results["bwd_ms"] = timer.backward(p, results["full_ms"])
        return
    results["bwd_ms"] = results["full_ms"] - results["fwd_ms"]


def graph_full_ms(p: Problem, timer: Timer) -> float:
    """The full pass captured once in a CUDA graph and timed by its replays: the GPU's own time, with
    no host launch overhead between kernels (which dominates ``full_ms`` for sub-millisecond ops run
    alone, and is hidden behind the matrix products in a real model)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up off the default stream, as graph capture requires
        for _ in range(3):
            full_pass(p)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        full_pass(p)
    try:
        return timer(graph.replay)
    finally:
        del graph


# ---------------------------------------------------------------------------------------------
# correctness check


def _rel_l2(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected|| in fp32, in chunks (the tensors can be GiBs)."""
    a = actual.detach().reshape(-1)
    e = expected.detach().reshape(-1)
    if a.numel() != e.numel():
        return math.inf
    chunk = 1 << 26
    diff_sq = 0.0
    ref_sq = 0.0
    for start in range(0, a.numel(), chunk):
        ac = a[start : start + chunk].float()
        ec = e[start : start + chunk].float()
        diff_sq += float(torch.sum((ac - ec) ** 2))
        ref_sq += float(torch.sum(ec**2))
    if ref_sq == 0.0:
        return 0.0 if diff_sq == 0.0 else math.inf
    return math.sqrt(diff_sq / ref_sq)


def _first_pass(p: Problem) -> dict[str, torch.Tensor]:
    outs = _outputs(forward(p))
    grads = torch.autograd.grad(outs, list(p.wrt.values()), p.grad_outputs)
    result = {f"out{i}" if len(outs) > 1 else "out": o.detach() for i, o in enumerate(outs)}
    result.update({f"d{name}": g for name, g in zip(p.wrt, grads)})
    return result


def check(spec: OpSpec, shape: Shape, dtype: torch.dtype, device: torch.device, tol: float) -> str:
    """Liger vs eager on identical inputs, once: 'ok (...)' or 'FAIL (...)'."""
    p = spec.build("eager", shape.dims, dtype, device)
    expected = _first_pass(p)
    del p
    p = spec.build("liger", shape.dims, dtype, device)
    actual = _first_pass(p)
    del p
    errors = {}
    for name, ref in expected.items():
        if name not in actual:
            errors[name] = math.inf
        elif tuple(actual[name].shape) != tuple(ref.shape):
            errors[name] = math.inf
        else:
            errors[name] = _rel_l2(actual[name], ref)
    del expected, actual
    worst = max(errors, key=lambda n: (math.isnan(errors[n]), errors[n]))
    ok = all(e < tol for e in errors.values())  # NaN compares False: fails
    return f"{'ok' if ok else 'FAIL'} (worst rel L2 {errors[worst]:.2e} on {worst}; tol {tol:g})"


# ---------------------------------------------------------------------------------------------
# running


def _short(exc: BaseException, limit: int = 240) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ").strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_provider(
    spec: OpSpec,
    shape: Shape,
    provider: str,
    dtype: torch.dtype,
    device: torch.device,
    timer: Timer,
    compile_backend: str,
) -> tuple[dict[str, float], list[str]]:
    results: dict[str, float] = {}
    notes: list[str] = []
    if spec.bwd_from_full:
        notes.append(spec.bwd_from_full)
    p = None
    try:
        p = spec.build("liger" if provider == "liger" else "eager", shape.dims, dtype, device)
        if provider == "compile":
            torch._dynamo.reset()  # fresh caches: no recompile limits, no dynamic-shape recompiles
            p.fn = torch.compile(p.fn, backend=compile_backend, dynamic=False)
            if compile_backend != "inductor":
                notes.append(f"compile backend={compile_backend}")
        measure(p, device, timer, spec.bwd_from_full is not None, results)
    except Exception as exc:  # one provider failing must not stop the run
        notes.append(f"error: {_short(exc)}")
        print(f"    {provider}: ERROR {_short(exc, 400)}", flush=True)
    finally:
        del p
        _free(device)
    return results, notes


class CsvSink:
    def __init__(self, path: Path, env: dict[str, str]) -> None:
        self.path = path
        self.env = env
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            csv.writer(f).writerow(COLUMNS)

    def write(self, rows: list[dict[str, Any]]) -> None:
        append_csv_rows(self.path, COLUMNS, self.env, rows)


def append_csv_rows(
    path: Path, columns: tuple[str, ...], env: dict[str, str], rows: list[dict[str, Any]]
) -> None:
    """Append ``rows`` (each merged over ``env``) to the CSV at ``path``, writing the header first if the
    file is new or empty; ``value`` is written with 6 significant digits, None/NaN as ``nan``."""
    new = not path.exists() or path.stat().st_size == 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(columns)
        for row in rows:
            full = {**env, **row}
            value = full["value"]
            full["value"] = "nan" if value is None or math.isnan(value) else f"{value:.6g}"
            writer.writerow([full.get(c, "") for c in columns])


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def run_shape(
    spec: OpSpec,
    shape: Shape,
    providers: list[str],
    dtype: torch.dtype,
    device: torch.device,
    timer: Timer,
    args: argparse.Namespace,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    base = {"op": spec.name, "shape": shape.label, "dtype": _dtype_name(dtype)}
    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"spec": spec, "shape": shape, "results": {}, "check": "-"}

    check_note = None
    if "liger" in providers:
        try:
            check_note = "check=" + check(spec, shape, dtype, device, args.check_tol)
        except Exception as exc:
            check_note = f"check=error ({_short(exc)})"
        finally:
            _free(device)
        summary["check"] = check_note.split(" ", 1)[0].removeprefix("check=")
        print(f"    liger {check_note}", flush=True)

    for provider in providers:
        start = time.perf_counter()
        backend = args.compile_backend or ("inductor" if device.type == "cuda" else "aot_eager")
        results, notes = run_provider(spec, shape, provider, dtype, device, timer, backend)
        if provider == "liger":
            notes[:0] = [n for n in (check_note, spec.liger_note) if n]
        summary["results"][provider] = results
        for metric in METRICS:
            row_notes = [n for n in notes if n.startswith(("check=", "compile", "liger "))]
            if metric == "bwd_ms":
                row_notes += [n for n in notes if n.startswith("bwd=")]
            if metric == "peak_mib" and device.type != "cuda":
                row_notes.append("no CUDA memory stats")
            if metric not in results:  # the error stopped the provider before this metric
                row_notes += [n for n in notes if n.startswith("error:")]
            rows.append(
                {
                    **base,
                    "provider": provider,
                    "metric": metric,
                    "value": results.get(metric, math.nan),
                    "note": "; ".join(row_notes),
                }
            )
        got = "  ".join(f"{m}={results[m]:.4g}" for m in METRICS if m in results)
        print(f"    {provider:8s} {got}  ({time.perf_counter() - start:.1f} s)", flush=True)
    return rows, summary


def _skip_rows(
    spec: OpSpec, shape: Shape, dtype: torch.dtype, reason: str, provider: str
) -> list[dict[str, Any]]:
    return [
        {
            "op": spec.name,
            "shape": shape.label,
            "dtype": _dtype_name(dtype),
            "provider": provider,
            "metric": "full_ms",
            "value": math.nan,
            "note": f"skipped: {reason}",
        }
    ]


# ---------------------------------------------------------------------------------------------
# the printed table


def _fmt(v: float | None, spec: str = ".3g") -> str:
    return "-" if v is None or math.isnan(v) else format(v, spec)


def _ratio(a: float | None, b: float | None) -> float:
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b == 0:
        return math.nan
    return a / b


def _as_full(results: dict[str, float], key: str) -> dict[str, float]:
    """The results with ``key``'s time standing in as ``full_ms`` (goals are written on full_ms)."""
    return {**results, "full_ms": results.get(key, math.nan)}


def _verdict(s: dict[str, Any], smoke: bool, verdicts: list[bool | None]) -> str:
    if smoke:
        return "n/a (smoke)"
    if s["check"] not in ("ok", "-"):  # "-": liger was not run, so the goals read "?"
        return "NO (check not ok)"
    if any(v is False for v in verdicts):
        return "NO"
    if any(v is None for v in verdicts):
        return "?"
    return "yes"


def print_table(summaries: list[dict[str, Any]], smoke: bool, elem_bytes: int) -> None:
    """Four narrow tables (each fits 120 columns): launched time, GPU time, peak memory, targets."""
    from benchmark.table import print_table as print_rich_table

    launched, graph_rows, memory, targets = [], [], [], []
    for s in summaries:
        spec: OpSpec = s["spec"]
        shape: Shape = s["shape"]
        key = [spec.name, shape.label]
        if s.get("skipped"):
            targets.append([*key, f"skipped: {s['skipped']}"])
            continue
        e, c, lg = (s["results"].get(p, {}) for p in PROVIDERS)
        full = [d.get("full_ms") for d in (e, c, lg)]
        graph = [d.get("graph_ms") for d in (e, c, lg)]
        peak = [d.get("peak_mib") for d in (e, c, lg)]
        ratios = lambda v, spec=".2f": [_fmt(_ratio(v[2], v[0]), spec), _fmt(_ratio(v[2], v[1]), spec)]
        floor = _fmt(spec.floor_ms(shape.dims, elem_bytes))
        launched.append([*key, *(_fmt(v) for v in full), floor, *ratios(full), s["check"]])
        graph_rows.append([*key, *(_fmt(v) for v in graph), floor, *ratios(graph)])
        memory.append([*key, *(_fmt(v, ".0f") for v in peak), *ratios(peak)])
        goals = " & ".join(g.describe() for g in shape.goals)
        met = " / ".join(
            _verdict(s, smoke, [g.met(_as_full(lg, key), _as_full(c, key)) for g in shape.goals])
            for key in ("full_ms", "graph_ms")
        )
        targets.append([*key, f"{goals} -> {met}"])
    times = ["eager", "compile", "liger", "floor", "liger/eager", "liger/compile"]
    print_rich_table("full pass, launched from Python: median ms", ["op", "shape", *times, "check"], launched)
    print_rich_table(
        "the same full pass as CUDA-graph replay (GPU time): median ms", ["op", "shape", *times], graph_rows
    )
    print_rich_table(
        "peak extra memory of one full pass: MiB",
        ["op", "shape", "eager", "compile", "liger", "liger/eager", "liger/compile"],
        memory,
    )
    print_rich_table(
        "targets -> met (on the launched time / on the GPU time)", ["op", "shape", "target -> met"], targets
    )


# ---------------------------------------------------------------------------------------------
# command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    today = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d")
    parser = argparse.ArgumentParser(prog="python -m benchmark.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", default=",".join(OPS), help=f"comma-separated, from: {','.join(OPS)}")
    parser.add_argument(
        "--providers", default=",".join(PROVIDERS), help="comma-separated subset of eager,compile,liger"
    )
    parser.add_argument(
        "--out",
        default=None,
        help=f"CSV path (default benchmark/results/kernels_{today}.csv; with --smoke a file in the temp dir)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny shapes (CPU + Triton interpreter without CUDA)"
    )
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(_DTYPES))
    parser.add_argument(
        "--warmup", type=int, default=None, help="do_bench warmup ms (default 25; 5 with --smoke)"
    )
    parser.add_argument(
        "--rep", type=int, default=None, help="do_bench rep ms (default 100; 20 with --smoke)"
    )
    parser.add_argument("--cpu-reps", type=int, default=3, help="timed repetitions per metric on CPU")
    parser.add_argument("--check-tol", type=float, default=2e-2, help="max relative L2 error, liger vs eager")
    parser.add_argument(
        "--compile-backend",
        default=None,
        help="torch.compile backend (default inductor on CUDA, aot_eager on CPU)",
    )
    parser.add_argument(
        "--liger-version",
        default=None,
        help="value of the liger_kernel column (default: package version + git commit)",
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        default=0.0,
        help="seconds; shapes not started before this much time has passed are skipped (0: none)",
    )
    parser.add_argument("--list", action="store_true", help="list ops and shapes, then exit")
    args = parser.parse_args(argv)
    args.warmup = args.warmup if args.warmup is not None else (5 if args.smoke else 25)
    args.rep = args.rep if args.rep is not None else (20 if args.smoke else 100)
    if args.out is None:
        if args.smoke:
            import tempfile

            args.out = str(Path(tempfile.gettempdir()) / f"liger_benchmark_smoke_{today}.csv")
        else:
            args.out = str(_REPO / "benchmark" / "results" / f"kernels_{today}.csv")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for spec in OPS.values():
            shapes = ", ".join(s.label for s in (spec.smoke_shapes if args.smoke else spec.shapes))
            print(f"{spec.name:27s} eager: {spec.reference}; liger: {spec.liger}; shapes: {shapes}")
        return 0
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    unknown = [o for o in ops if o not in OPS]
    providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    bad_providers = [p for p in providers if p not in PROVIDERS]
    if unknown or bad_providers:
        print(f"unknown ops {unknown} / providers {bad_providers}; ops: {','.join(OPS)}", file=sys.stderr)
        return 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not args.smoke:
        print("no CUDA device: only --smoke runs on CPU (tiny shapes, Triton interpreter)", file=sys.stderr)
        return 2
    dtype = _DTYPES[args.dtype]
    elem_bytes = torch.empty((), dtype=dtype).element_size()
    env = environment(device, args.liger_version)
    timer = Timer(device, args.warmup, args.rep, args.cpu_reps)
    sink = CsvSink(Path(args.out), env)
    print(
        f"device {env['gpu']}; torch {env['torch']}, triton {env['triton']}, transformers "
        f"{env['transformers']}, liger_kernel {env['liger_kernel']}; "
        f"interpreter={os.environ.get('TRITON_INTERPRET', '0')}; do_bench warmup={args.warmup} rep={args.rep} ms"
    )
    print(f"writing {args.out}", flush=True)

    started = time.perf_counter()
    summaries: list[dict[str, Any]] = []
    for name in ops:
        spec = OPS[name]
        shapes = spec.smoke_shapes if args.smoke else spec.shapes
        reason = None
        if "liger" in providers:
            try:
                spec.liger_import()
            except Exception as exc:  # ImportError, AttributeError while the module is being written
                reason = f"liger {spec.liger} not importable ({_short(exc)})"
        for shape in shapes:
            skip, skipped_provider = reason, "liger"
            if skip is None and args.time_budget and time.perf_counter() - started > args.time_budget:
                skip, skipped_provider = f"time budget of {args.time_budget:g} s spent", "-"
            if skip is not None:
                print(f"{name} [{shape.label}]: skipped: {skip}", flush=True)
                sink.write(_skip_rows(spec, shape, dtype, skip, skipped_provider))
                summaries.append({"spec": spec, "shape": shape, "results": {}, "check": "-", "skipped": skip})
                continue
            t0 = time.perf_counter()
            print(f"{name} [{shape.label}] {args.dtype}", flush=True)
            try:
                rows, summary = run_shape(spec, shape, providers, dtype, device, timer, args)
            except Exception as exc:  # a bug outside the per-provider guards: record it, go on
                print(f"    ERROR {_short(exc, 400)}", flush=True)
                rows = [
                    {
                        "op": name,
                        "shape": shape.label,
                        "dtype": _dtype_name(dtype),
                        "provider": "-",
                        "metric": "full_ms",
                        "value": math.nan,
                        "note": f"error: {_short(exc)}",
                    }
                ]
                summary = {"spec": spec, "shape": shape, "results": {}, "check": "error", "skipped": "error"}
            sink.write(rows)
            summaries.append(summary)
            print(f"    ({time.perf_counter() - t0:.1f} s)", flush=True)

    print_table(summaries, args.smoke, elem_bytes)
    print(f"\nwrote {args.out}; total {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
