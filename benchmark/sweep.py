"""Shape sweeps (issue 19): every kernel at the shapes of the models we patch, four arms side by side.

    python -m benchmark.sweep --family {norm,ce,flce,rope,flce_curve} [--ops rms_norm,layer_norm]
                              [--arms eager,compile,ours,peer] [--part I/N] [--all-sizes]
                              [--peer-path .peer/liger085] [--out DIR] [--tag T] [--smoke] [--list]

Families (bf16, forward + backward):
    norm        RMSNorm (Llama's) and LayerNorm: hidden in NORM_HIDDEN x tokens in NORM_TOKENS;
    ce          CrossEntropy, 8192 rows, at the vocabulary of every model in MODELS;
    flce        FusedLinearCrossEntropy, 8192 tokens, at the (hidden, vocab) of every model in MODELS;
    rope        RoPE at the (q heads, kv heads, head_dim) of every model in MODELS, batch 4, sequence
                2048 / 4096 / 8192 (the layout Hugging Face attention hands it);
    flce_curve  time against peak memory of our fused loss over its chunking, for CURVE_PAIRS: explicit
                rows per chunk (CURVE_ROWS), memory budgets (CURVE_BUDGETS_MIB, through
                chunk_budget_bytes) and the default; each point with the cost model's prediction
                (predicted_ms, predicted_peak_mib: ``chunk_loop_seconds`` and dW + dx + one chunk).
MODELS holds one or two published configurations per model type of liger_kernel/transformers/
model_specs.py (``--all-sizes``: all of them; default: the first of each type); a type missing from
MODELS is printed as a warning.

Arms (benchmark/ops.py builds each problem; "ours" is its "liger" provider):
    eager    the Hugging Face / PyTorch code the kernel replaces;
    compile  torch.compile of that same code (static shapes, inductor on CUDA, aot_eager on CPU;
             torch._dynamo.reset() before each shape, as benchmark/run.py);
    ours     this tree's kernels through the public module / function;
    peer     the same public modules of liger-kernel 0.8.5, imported from --peer-path (a folder holding
             that release's ``liger_kernel`` package); "n/a" if it does not import.
Each arm runs all its shapes in a subprocess of its own (the peer's package is also ``liger_kernel``;
separate processes also keep compile caches and allocator state apart). Metrics, by benchmark/run.py's
helpers: graph_ms (one full pass captured in a CUDA graph, replayed: the GPU's own time), full_ms (the
full pass launched from Python, median of do_bench: what a user waits for), peak_mib (peak memory of one
full pass beyond what was allocated before it; the gradients count, inputs and weights do not). The ours
and peer arms are checked once per shape against eager (relative L2 error of outputs and gradients <
--check-tol): the note says check=ok or check=FAIL.

Compilation first (``--prewarm N``, on a GPU): N processes per compiling arm (compile, ours, peer) run
two untimed passes of their shapes side by side, so that the timed arms find torch.compile's graphs
(inductor's FX graph and AOTAutograd caches) and the Triton kernels already built on disk instead of
compiling shape after shape on one core. Nothing is timed then; inductor's autotuning results are not
kept from those processes (``autotune_local_cache`` off there), so the compile arm still picks its
kernels' configurations alone on the GPU, in its own warm-up passes.
Time: each arm gets a share of --time-budget (default 420 s; compile's share is three times eager's,
ours' and peer's 1.5 times: see ARM_WEIGHT; an arm that finishes early leaves its rest to the next);
shapes not started within it are recorded as skipped, so one invocation ends in about 8 minutes (a
worker still busy a minute past its share is stopped). ``--list`` prints the plan, its shape count and a
rough H200 estimate; ``--part I/N`` runs the I-th of N contiguous slices of it (a family split over
several invocations).
Writes ``sweep_<family>_<date>[_<tag>].csv`` (GPU name, versions, date, commit on every row) to --out
(default $OUT, else benchmark/results) after each arm, and prints a table. ``--smoke``: tiny shapes, on
the CPU through Triton's interpreter when there is no GPU: it checks the script, not the speed.
Plots: ``python -m benchmark.plot_sweep <csv>...``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton or liger_kernel

from benchmark.peer import add_peer_path_argument, child_env, import_peer  # noqa: E402

_REPO = Path(__file__).resolve().parent.parent
ARMS = ("eager", "compile", "ours", "peer")
# Share of the time budget per arm: compile compiles every shape (several seconds each); ours and peer
# are checked against eager first (two more passes) and JIT-compile their kernels at each new width.
ARM_WEIGHT = {"eager": 1.0, "compile": 3.0, "ours": 1.5, "peer": 1.5}
FAMILIES = {
    "norm": ("rms_norm", "layer_norm"),
    "ce": ("cross_entropy",),
    "flce": ("fused_linear_cross_entropy",),
    "rope": ("rope",),
    "flce_curve": ("fused_linear_cross_entropy",),
}


@dataclass(frozen=True)
class Model:
    """A published configuration: the dimensions the kernels see."""

    model_type: str
    name: str
    hidden: int
    vocab: int
    q_heads: int
    kv_heads: int
    head_dim: int  # the rotated width (DeepSeek-V3: qk_rope_head_dim)


# From the models' published config.json files. The first entry of each type is its main size.
MODELS = (
    Model("llama", "Llama-3.1-8B", 4096, 128256, 32, 8, 128),
    Model("llama", "Llama-3.2-1B", 2048, 128256, 32, 8, 64),
    Model("llama", "Llama-3.2-3B", 3072, 128256, 24, 8, 128),
    Model("llama", "Llama-3.1-70B", 8192, 128256, 64, 8, 128),
    Model("mistral", "Mistral-7B-v0.1", 4096, 32000, 32, 8, 128),
    Model("mistral", "Mistral-Nemo-12B", 5120, 131072, 32, 8, 128),
    Model("mixtral", "Mixtral-8x7B", 4096, 32000, 32, 8, 128),
    Model("gemma", "Gemma-2B", 2048, 256000, 8, 1, 256),
    Model("gemma", "Gemma-7B", 3072, 256000, 16, 16, 256),
    Model("gemma2", "Gemma-2-2B", 2304, 256000, 8, 4, 256),
    Model("gemma2", "Gemma-2-9B", 3584, 256000, 16, 8, 256),
    Model("qwen2", "Qwen2.5-7B", 3584, 152064, 28, 4, 128),
    Model("qwen2", "Qwen2.5-1.5B", 1536, 151936, 12, 2, 128),
    Model("phi3", "Phi-3-mini", 3072, 32064, 32, 32, 96),
    Model("phi3", "Phi-3-medium", 5120, 32064, 40, 10, 128),
    Model("qwen3", "Qwen3-8B", 4096, 151936, 32, 8, 128),
    Model("qwen3", "Qwen3-4B", 2560, 151936, 32, 8, 128),
    Model("qwen3_moe", "Qwen3-30B-A3B", 2048, 151936, 32, 4, 128),
    Model("gemma3_text", "Gemma-3-1B", 1152, 262144, 4, 1, 256),
    Model("gemma3", "Gemma-3-12B", 3840, 262208, 16, 8, 256),
    Model("gemma3", "Gemma-3-4B", 2560, 262208, 8, 4, 256),
    Model("olmo2", "OLMo-2-7B", 4096, 100352, 32, 32, 128),
    Model("olmo3", "OLMo-3-7B", 4096, 100278, 32, 32, 128),
    Model("glm4", "GLM-4-9B-0414", 4096, 151552, 32, 2, 128),
    Model("granite", "Granite-3.3-8B", 4096, 49159, 32, 8, 128),
    Model("smollm3", "SmolLM3-3B", 2048, 128256, 16, 4, 128),
    Model("deepseek_v3", "DeepSeek-V3", 7168, 129280, 128, 1, 64),
    Model("gpt_oss", "gpt-oss-20b", 2880, 201088, 64, 8, 64),
    Model("ministral", "Ministral-8B", 4096, 131072, 32, 8, 128),
    Model("ministral3", "Ministral-3-8B", 4096, 131072, 32, 8, 128),
    Model("mistral3", "Mistral-Small-3.1-24B", 5120, 131072, 32, 8, 128),
    # Llama 4 rotates with its own kernel (llama4_rope); the rope family runs the Llama-style kernel
    # at its head counts as one more shape.
    Model("llama4", "Llama-4-Scout-17B-16E", 5120, 202048, 40, 8, 128),
    Model("llama4_text", "Llama-4-Scout-17B-16E", 5120, 202048, 40, 8, 128),
)
NORM_HIDDEN = (1024, 2048, 2304, 2560, 3072, 3584, 4096, 5120, 6144, 7168, 8192, 12288, 16384)
NORM_TOKENS = (4096, 16384, 32768)
LOSS_TOKENS = 8192
ROPE_BSZ = 4
ROPE_SEQ = (2048, 4096, 8192)
# flce_curve: Llama 3 (the benchmark's shape) and Gemma 2 2B (small hidden, large vocabulary: many
# chunks under a fixed budget, each re-reading and re-writing the whole dW).
CURVE_PAIRS = ((4096, 128256), (2304, 256000))
CURVE_ROWS = (256, 512, 1024, 1536, 2048, 3072, 4096, 8192)
CURVE_BUDGETS_MIB = (128, 256, 512, 1024)


@dataclass
class Case:
    op: str
    label: str
    dims: dict[str, int]
    models: str = ""
    point: dict[str, Any] = field(default_factory=dict)  # flce_curve: chunk_size / budget_mib / default


def _models(all_sizes: bool) -> list[Model]:
    seen: set[str] = set()
    chosen = []
    for m in MODELS:
        if all_sizes or m.model_type not in seen:
            chosen.append(m)
        seen.add(m.model_type)
    return chosen


def _grouped(models: list[Model], key) -> dict[tuple, str]:
    """Distinct keys (in table order) -> the names of the models that have them."""
    groups: dict[tuple, list[str]] = {}
    for m in models:
        groups.setdefault(key(m), []).append(m.name)
    return {k: "+".join(v) for k, v in groups.items()}


def plan(family: str, ops: list[str], smoke: bool, all_sizes: bool) -> list[Case]:
    """The shapes of one family, in run order."""
    models = _models(all_sizes)
    cases: list[Case] = []
    if family == "norm":
        tokens, hiddens = ((8,), (64, 200)) if smoke else (NORM_TOKENS, NORM_HIDDEN)
        for op in ops:
            cases += [Case(op, f"{t}x{h}", {"rows": t, "hidden": h}) for t in tokens for h in hiddens]
    elif family == "ce":
        vocabs = {(300,): "tiny", (1000,): "tiny"} if smoke else _grouped(models, lambda m: (m.vocab,))
        rows = 8 if smoke else LOSS_TOKENS
        cases = [
            Case("cross_entropy", f"{rows}x{v}", {"rows": rows, "vocab": v}, n) for (v,), n in vocabs.items()
        ]
    elif family == "flce":
        pairs = (
            {(32, 300): "tiny", (16, 500): "tiny"}
            if smoke
            else _grouped(models, lambda m: (m.hidden, m.vocab))
        )
        t = 8 if smoke else LOSS_TOKENS
        cases = [
            Case("fused_linear_cross_entropy", f"T{t} H{h} V{v}", {"tokens": t, "hidden": h, "vocab": v}, n)
            for (h, v), n in pairs.items()
        ]
    elif family == "rope":
        heads = (
            {(4, 2, 16): "tiny"} if smoke else _grouped(models, lambda m: (m.q_heads, m.kv_heads, m.head_dim))
        )
        bsz, seqs = (2, (6, 10)) if smoke else (ROPE_BSZ, ROPE_SEQ)
        for (q, kv, d), names in heads.items():
            for s in seqs:
                dims = {"bsz": bsz, "seq": s, "q_heads": q, "kv_heads": kv, "head_dim": d}
                cases.append(Case("rope", f"b{bsz} s{s} hq{q} hkv{kv} d{d}", dims, names))
    elif family == "flce_curve":
        pairs, tokens = (((16, 300),), 24) if smoke else (CURVE_PAIRS, LOSS_TOKENS)
        rows = (4, 8, 24) if smoke else CURVE_ROWS
        budgets = (0.0012, 0.0035) if smoke else CURVE_BUDGETS_MIB  # MiB (smoke: 1 and 3 fp32 rows of 300)
        for h, v in pairs:
            dims = {"tokens": tokens, "hidden": h, "vocab": v}
            label = f"T{tokens} H{h} V{v}"
            points = (
                [{"default": True}] + [{"chunk_size": r} for r in rows] + [{"budget_mib": b} for b in budgets]
            )
            cases += [Case("fused_linear_cross_entropy", label, dims, "", p) for p in points]
    else:
        raise ValueError(f"unknown family {family!r}; one of {', '.join(FAMILIES)}")
    return cases


def part_of(cases: list[Case], part: str | None) -> list[Case]:
    """The I-th of N contiguous slices (``part`` "I/N", 1-based) of ``cases``."""
    if not part:
        return cases
    try:
        i, n = (int(v) for v in part.split("/"))
    except ValueError:
        raise ValueError(f"--part must be I/N with integers, got {part!r}") from None
    if not 1 <= i <= n:
        raise ValueError(f"--part {part}: I must be in 1..N")
    size = math.ceil(len(cases) / n)
    return cases[(i - 1) * size : i * size]


def unswept_model_types() -> list[str]:
    """Model types of the patch table that MODELS does not cover."""
    from liger_kernel.transformers.model_specs import MODEL_SPECS

    covered = {m.model_type for m in MODELS}
    return sorted(t for t in MODEL_SPECS if t not in covered)


# ---------------------------------------------------------------------------------------------
# one arm, all its cases, in its own process


def _point_label(point: dict[str, Any]) -> str:
    if point.get("default"):
        return "default"
    if "chunk_size" in point:
        return f"rows={point['chunk_size']}"
    if "budget_mib" in point:
        return f"budget={point['budget_mib']:g}MiB"
    return ""


def _curve_setup(problem, case: Case, device: torch.device, dtype: torch.dtype) -> dict[str, float]:
    """Sets our loss module's chunking for a curve point; returns the rows it will use and the cost model's
    prediction for them."""
    from liger_kernel.ops.fused_linear_cross_entropy import chunk_loop_seconds, device_rates, flce_chunk_rows

    module = problem.keep[0]
    t, h, v = case.dims["tokens"], case.dims["hidden"], case.dims["vocab"]
    e = torch.empty((), dtype=dtype).element_size()
    budget = None
    if "chunk_size" in case.point:
        module.chunk_size = rows = min(int(case.point["chunk_size"]), t)
    else:
        if "budget_mib" in case.point:
            budget = max(1, int(case.point["budget_mib"] * 2**20))
            module.chunk_budget_bytes = budget
        rows = flce_chunk_rows(t, h, v, e, e, device, budget)
    rates = device_rates(device)
    return {
        "chunk_rows": rows,
        "predicted_ms": chunk_loop_seconds(t, h, v, rows, e, e, rates) * 1e3,
        "predicted_peak_mib": (v * h * e + t * h * e + rows * v * e) / 2**20,
        "rates_tflops": rates[0] / 1e12,
        "rates_tbps": rates[1] / 1e12,
    }


def build_problem(case: Case, arm: str, device: torch.device, dtype: torch.dtype) -> Any:
    """The arm's problem at the case's shape: eager code (compile: under torch.compile, static shapes,
    fresh dynamo caches) or the ``liger`` provider (ours and peer)."""
    from benchmark.ops import OPS

    problem = OPS[case.op].build("liger" if arm in ("ours", "peer") else "eager", case.dims, dtype, device)
    if arm == "compile":
        torch._dynamo.reset()
        backend = "inductor" if device.type == "cuda" else "aot_eager"
        problem.fn = torch.compile(problem.fn, backend=backend, dynamic=False)
    return problem


def run_case(case: Case, arm: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    from benchmark.ops import OPS, Shape
    from benchmark.run import Timer, _free, _short, check, full_pass, graph_full_ms, peak_extra_mib

    dtype = torch.bfloat16 if device.type == "cuda" or not args.smoke else torch.float32
    spec = OPS[case.op]
    metrics: dict[str, float] = {}
    notes: list[str] = []
    problem = None
    try:
        if arm in ("ours", "peer") and (not case.point or case.point.get("default")):
            notes.append("check=" + check(spec, Shape(case.label, case.dims), dtype, device, args.check_tol))
            _free(device)
        problem = build_problem(case, arm, device, dtype)
        if case.point:
            metrics.update(_curve_setup(problem, case, device, dtype))
        elif arm == "ours" and case.op == "fused_linear_cross_entropy":
            from liger_kernel.ops.fused_linear_cross_entropy import flce_chunk_rows

            e = torch.empty((), dtype=dtype).element_size()
            d = case.dims
            metrics["chunk_rows"] = flce_chunk_rows(d["tokens"], d["hidden"], d["vocab"], e, e, device)
        timer = Timer(device, args.warmup, args.rep, args.cpu_reps)
        for _ in range(2):  # compiles (torch.compile, Triton) and settles the allocator
            full_pass(problem)
        metrics["peak_mib"] = peak_extra_mib(problem, device)
        metrics["full_ms"] = timer(lambda: full_pass(problem))
        if device.type == "cuda":
            try:
                metrics["graph_ms"] = graph_full_ms(problem, timer)
            except Exception as exc:  # an arm that cannot be captured keeps its launched time
                notes.append(f"no graph: {_short(exc, 120)}")
    except Exception as exc:  # out of memory, compile error...: the row says so, the sweep goes on
        notes.append(f"error: {_short(exc, 200)}")
    finally:
        problem = None  # frees its tensors before the next case
        _free(device)
    return {"metrics": metrics, "note": "; ".join(notes)}


def warm_case(case: Case, arm: str, args: argparse.Namespace, device: torch.device) -> str:
    """Two untimed passes of one shape (compiles it); '' or the error."""
    from benchmark.run import _free, _short, full_pass

    dtype = torch.bfloat16 if device.type == "cuda" or not args.smoke else torch.float32
    problem = None
    try:
        problem = build_problem(case, arm, device, dtype)
        if case.point:
            _curve_setup(problem, case, device, dtype)
        for _ in range(2):
            full_pass(problem)
        return ""
    except Exception as exc:  # the timed arm meets it again and records it
        return _short(exc, 160)
    finally:
        problem = None
        _free(device)


def worker(args: argparse.Namespace) -> int:
    arm = args.worker
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cases = part_of(plan(args.family, _ops(args), args.smoke, args.all_sizes), args.part)
    if args.warm_shard:
        # Prewarm: every n-th shape from the i-th; best configurations are not cached from here (they
        # would be timed while other processes share the GPU).
        import torch._inductor.config as inductor_config

        inductor_config.autotune_local_cache = False
        i, n = (int(v) for v in args.warm_shard.split("/"))
        if arm == "peer":
            import_peer(args.peer_path)
        for index in range(i - 1, len(cases), n):
            if args.deadline and time.time() > args.deadline:
                break
            started = time.perf_counter()
            error = warm_case(cases[index], arm, args, device)
            print(f"WARM {arm} #{index} {time.perf_counter() - started:.1f}s {error}", flush=True)
        return 0
    header: dict[str, Any] = {"arm": arm}
    if arm == "peer":
        try:
            header["liger_kernel"] = "peer " + import_peer(args.peer_path)
        except Exception as exc:  # the peer's own imports failing: every case n/a
            for i in range(len(cases)):
                _emit(
                    {"index": i, "arm": arm, "metrics": {}, "note": f"n/a: {type(exc).__name__}: {exc}"[:200]}
                )
            return 0
    for i, case in enumerate(cases):
        if args.deadline and time.time() > args.deadline:
            result = {"metrics": {}, "note": "skipped: time budget spent"}
        else:
            started = time.perf_counter()
            result = run_case(case, arm, args, device)
            result["seconds"] = round(time.perf_counter() - started, 1)
        _emit({"index": i, "arm": arm, **header, **result})
    return 0


def _emit(result: dict[str, Any]) -> None:
    print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------------
# the parent: one subprocess per arm, table, CSV


COMPILING_ARMS = ("compile", "ours", "peer")


def prewarm(args: argparse.Namespace, arms: list[str], seconds: float) -> None:
    """``args.prewarm`` processes for the compile arm and half as many (at least one) for ours and
    peer, all at once, each warming every n-th shape of its arm; stopped after ``seconds``."""
    deadline = time.time() + seconds
    procs = []
    for arm in (a for a in arms if a in COMPILING_ARMS):
        env, _ = child_env(args.peer_path if arm == "peer" else None)
        if env is None:
            continue
        n = args.prewarm if arm == "compile" else max(1, args.prewarm // 2)
        for i in range(1, n + 1):
            cmd = [sys.executable, "-m", "benchmark.sweep", "--worker", arm, "--warm-shard", f"{i}/{n}"]
            cmd += ["--deadline", f"{deadline:.0f}", *_forwarded(args)]
            procs.append(
                subprocess.Popen(
                    cmd, env=env, cwd=str(_REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
                )
            )
    print(f"prewarm: {len(procs)} processes (up to {seconds:.0f} s) ...", flush=True)
    started = time.time()
    warmed = 0
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=max(1.0, deadline + 30 - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        lines = [line for line in out.splitlines() if line.startswith("WARM ")]
        warmed += len(lines)
        for line in lines:
            if len(line.split(maxsplit=4)) == 5:  # WARM arm #index seconds error
                print(f"  {line[:200]}", flush=True)
    print(f"prewarm: {warmed} shape-arms in {time.time() - started:.0f} s", flush=True)


def run_arm(arm: str, args: argparse.Namespace, deadline: float, n_cases: int) -> list[dict[str, Any]]:
    env, why = child_env(args.peer_path if arm == "peer" else None)
    if env is None:
        return [{"index": i, "arm": arm, "metrics": {}, "note": why} for i in range(n_cases)]
    cmd = [sys.executable, "-m", "benchmark.sweep", "--worker", arm, "--deadline", f"{deadline:.0f}"]
    cmd += _forwarded(args)
    results: list[dict[str, Any]] = []
    proc = subprocess.Popen(
        cmd, env=env, cwd=str(_REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    tail: list[str] = []
    # A worker still busy a minute past its deadline (a case that hangs or compiles for minutes) is
    # stopped; the cases it did not report are recorded as errors.
    watchdog = threading.Timer(max(30.0, deadline + 60 - time.time()), proc.kill)
    watchdog.start()
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            if line.startswith("RESULT "):
                r = json.loads(line[len("RESULT ") :])
                results.append(r)
                print(f"  {arm:8s} {_one_line(r)}", flush=True)
            else:
                tail = (tail + [line.rstrip()])[-5:]
        proc.wait()
    finally:
        watchdog.cancel()
    if proc.returncode:
        print(f"  {arm}: worker exited with {proc.returncode}: {' | '.join(tail)[-400:]}", flush=True)
    done = {r["index"] for r in results}
    why = f"error: worker exit {proc.returncode}: {(tail or [''])[-1][:160]}"
    results += [{"index": i, "arm": arm, "metrics": {}, "note": why} for i in range(n_cases) if i not in done]
    return sorted(results, key=lambda r: r["index"])


def _one_line(r: dict[str, Any]) -> str:
    m = r["metrics"]
    got = " ".join(f"{k}={m[k]:.4g}" for k in ("graph_ms", "full_ms", "peak_mib", "chunk_rows") if k in m)
    return f"#{r['index']} {got} {r.get('note', '')}"[:300]


def _ops(args: argparse.Namespace) -> list[str]:
    family_ops = FAMILIES[args.family]
    if not args.ops:
        return list(family_ops)
    ops = [o for o in args.ops.split(",") if o]
    bad = [o for o in ops if o not in family_ops]
    if bad:
        raise ValueError(f"--ops {bad} not in family {args.family} ({', '.join(family_ops)})")
    return ops


def _forwarded(args: argparse.Namespace) -> list[str]:
    out = ["--family", args.family, "--peer-path", args.peer_path, "--warmup", str(args.warmup)]
    out += ["--rep", str(args.rep), "--cpu-reps", str(args.cpu_reps), "--check-tol", str(args.check_tol)]
    for flag, value in (("--ops", args.ops), ("--part", args.part)):
        if value:
            out += [flag, value]
    return out + (["--smoke"] if args.smoke else []) + (["--all-sizes"] if args.all_sizes else [])


CSV_COLUMNS = ("family", "op", "shape", "point", "models", "dims", "dtype", "provider", "metric", "value",
               "gpu", "torch", "triton", "transformers", "liger_kernel", "date", "note")  # fmt: skip


def write_csv(path: Path, family: str, cases: list[Case], results: list[dict[str, Any]], dtype: str) -> None:
    from benchmark.run import append_csv_rows, environment

    env = environment(torch.device("cuda" if torch.cuda.is_available() else "cpu"), None)
    rows = []
    for r in results:
        case = cases[r["index"]]
        base = {
            "family": family, "op": case.op, "shape": case.label, "point": _point_label(case.point),
            "models": case.models, "dims": ";".join(f"{k}={v}" for k, v in case.dims.items()),
            "dtype": dtype, "provider": r["arm"], "note": r.get("note", ""),
        }  # fmt: skip
        if "liger_kernel" in r:
            base["liger_kernel"] = r["liger_kernel"]
        metrics = r["metrics"] or {"full_ms": math.nan}
        rows += [{**base, "metric": k, "value": float(v)} for k, v in metrics.items()]
    if path.exists():
        path.unlink()
    append_csv_rows(path, CSV_COLUMNS, env, rows)


def _fmt(v: float | None, spec: str = ".3g") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return "-"
    return f"{a / b:.2f}"


def print_tables(family: str, arms: list[str], cases: list[Case], results: list[dict[str, Any]]) -> None:
    from benchmark.table import print_table

    by_case: dict[int, dict[str, dict[str, Any]]] = {}
    for r in results:
        by_case.setdefault(r["index"], {})[r["arm"]] = r
    if family == "flce_curve":
        header = [
            "shape",
            "point",
            "rows",
            "graph ms",
            "launched ms",
            "peak MiB",
            "pred ms",
            "pred peak MiB",
            "note",
        ]
        rows = []
        for i, case in enumerate(cases):
            r = by_case.get(i, {}).get("ours", {"metrics": {}, "note": "-"})
            m = r["metrics"]
            rows.append([case.label, _point_label(case.point), _fmt(m.get("chunk_rows"), ".0f"),
                         _fmt(m.get("graph_ms")), _fmt(m.get("full_ms")), _fmt(m.get("peak_mib"), ".0f"),
                         _fmt(m.get("predicted_ms")), _fmt(m.get("predicted_peak_mib"), ".0f"), r["note"][:60]])  # fmt: skip
        print_table(
            "flce_curve: our fused loss over its chunking (GPU time, launched time, peak)", header, rows
        )
        return
    for metric, title in (
        ("graph_ms", "GPU time (CUDA-graph replay of a full pass), ms"),
        ("full_ms", "launched time (full pass from Python, do_bench median), ms"),
        ("peak_mib", "peak extra memory of a full pass, MiB"),
    ):
        header = ["op", "shape", *arms]
        header += [f"ours/{a}" for a in ("compile", "peer", "eager") if a in arms and "ours" in arms]
        rows = []
        for i, case in enumerate(cases):
            got = {a: by_case.get(i, {}).get(a, {"metrics": {}})["metrics"].get(metric) for a in arms}
            row = [case.op, case.label + (f" ({case.models})" if case.models else "")]
            row += [_fmt(got[a], ".0f" if metric == "peak_mib" else ".3g") for a in arms]
            row += [
                _ratio(got["ours"], got[a])
                for a in ("compile", "peer", "eager")
                if a in arms and "ours" in arms
            ]
            rows.append(row)
        print_table(f"{family}: {title}", header, rows)
    notes = [
        [cases[r["index"]].label, r["arm"], r["note"][:100]]
        for r in results
        if r.get("note") and not r["note"].startswith("check=ok")
    ]
    if notes:
        print_table(f"{family}: notes (checks that failed, errors, skips)", ["shape", "arm", "note"], notes)


def estimate_seconds(family: str, cases: list[Case], arms: list[str], smoke: bool) -> float:
    """A rough H200 estimate for --list: per shape and arm a few seconds of measuring (more for the fused
    loss, whose passes take 10-75 ms), compile's compilation per shape, ~15 s to start each worker."""
    if smoke:
        return 0.0
    per_shape = {"norm": 2.0, "ce": 2.0, "flce": 4.0, "rope": 2.0, "flce_curve": 3.0}[family]
    compile_per_shape = {"norm": 6.0, "ce": 8.0, "flce": 25.0, "rope": 6.0, "flce_curve": 0.0}[family]
    total = 15.0 * len(arms)
    for arm in arms:
        total += len(cases) * (per_shape + (compile_per_shape if arm == "compile" else 0.0))
    return total


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmark.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", required=True, choices=sorted(FAMILIES))
    parser.add_argument("--ops", default="", help="subset of the family's ops (norm: rms_norm,layer_norm)")
    parser.add_argument(
        "--arms", default=None, help="comma-separated, from " + ",".join(ARMS) + " (flce_curve: ours)"
    )
    parser.add_argument("--part", default=None, help="I/N: run the I-th of N contiguous slices of the plan")
    parser.add_argument(
        "--all-sizes", action="store_true", help="every configuration in MODELS, not one per type"
    )
    add_peer_path_argument(parser)
    parser.add_argument("--out", default=os.environ.get("OUT") or str(_REPO / "benchmark" / "results"))
    parser.add_argument("--tag", default="", help="CSV name sweep_<family>_<date>_<tag>.csv")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes (CPU + interpreter without CUDA)")
    parser.add_argument(
        "--list", action="store_true", help="print the plan and an H200 time estimate, then exit"
    )
    parser.add_argument("--warmup", type=int, default=10, help="do_bench warmup ms")
    parser.add_argument("--rep", type=int, default=50, help="do_bench rep ms")
    parser.add_argument("--cpu-reps", type=int, default=1, help="timed repetitions per metric on CPU")
    parser.add_argument("--check-tol", type=float, default=2e-2, help="max relative L2 error against eager")
    parser.add_argument("--time-budget", type=float, default=420.0, help="seconds for all arms together")
    parser.add_argument(
        "--prewarm",
        type=int,
        default=None,
        help="processes that compile the compile arm's shapes side by side before the timed arms "
        "(half as many for ours and peer; default 6 on a GPU, 0 elsewhere)",
    )
    parser.add_argument("--prewarm-seconds", type=float, default=150.0, help="time limit of the prewarm")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--warm-shard", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.prewarm is None:
        args.prewarm = 6 if torch.cuda.is_available() else 0
    if args.arms is None:
        args.arms = "ours" if args.family == "flce_curve" else ",".join(ARMS)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        if args.worker == "peer":  # ahead of the repository (the working directory, first under -m)
            sys.path.insert(0, str(Path(args.peer_path).resolve()))
        return worker(args)
    try:
        cases = part_of(plan(args.family, _ops(args), args.smoke, args.all_sizes), args.part)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    arms = [a for a in args.arms.split(",") if a]
    bad = [a for a in arms if a not in ARMS]
    if bad:
        print(f"unknown arms {bad}; from {','.join(ARMS)}", file=sys.stderr)
        return 2
    if args.family == "flce_curve" and arms != ["ours"]:
        print("flce_curve measures our chunking: --arms ours", file=sys.stderr)
        return 2
    missing = unswept_model_types()
    if missing:
        print(f"warning: model types with no configuration in MODELS (not swept): {', '.join(missing)}")
    print(f"{args.family}: {len(cases)} shapes x arms {','.join(arms)}; H200 estimate "
          f"{estimate_seconds(args.family, cases, arms, args.smoke):.0f} s (budget {args.time_budget:g} s)")  # fmt: skip
    if args.list:
        for i, c in enumerate(cases):
            print(f"  #{i} {c.op} {c.label} {_point_label(c.point)} {c.models}")
        return 0
    if not torch.cuda.is_available() and not args.smoke:
        print("no CUDA device: only --smoke runs on the CPU", file=sys.stderr)
        return 2
    today = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d")
    path = Path(args.out) / f"sweep_{args.family}_{today}{'_' + args.tag if args.tag else ''}.csv"
    dtype = "bfloat16" if torch.cuda.is_available() or not args.smoke else "float32"
    if args.prewarm > 0 and args.family != "flce_curve":
        prewarm(args, arms, args.prewarm_seconds)
    started = time.time()
    weights = [ARM_WEIGHT[a] for a in arms]
    results: list[dict[str, Any]] = []
    for k, arm in enumerate(arms):
        deadline = started + args.time_budget * sum(weights[: k + 1]) / sum(weights)
        print(f"{arm} (until +{deadline - started:.0f} s) ...", flush=True)
        results += run_arm(arm, args, deadline, len(cases))
        write_csv(path, args.family, cases, results, dtype)
    print()
    print_tables(args.family, arms, cases, results)
    print(f"\nCSV: {path} ({time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
