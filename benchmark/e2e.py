"""End-to-end training throughput and peak memory of a causal LM, four arms side by side.

    python -m benchmark.e2e --preset llama3-8b [--arms eager,compile,liger,liger_compile] [--optimizer]
    python -m benchmark.e2e --preset qwen3-8b | qwen3-moe-30b-a3b-12l | gemma3-4b-text   # issue 20
                            [--out benchmark/results/e2e_<preset>_<date>.csv]
    python -m benchmark.e2e --report a.csv [b.csv ...]     # table (and targets) from earlier CSVs

The model is built from the preset's config (``AutoConfig.for_model(preset.model_type, ...)``; Llama
unless the preset says otherwise) with random weights (no download), in the preset's dtype,
directly on the device, from a fixed seed (so every arm starts from the same weights and data).
Arms, each built, measured and freed in turn in this one process:
    eager          Hugging Face ``LlamaForCausalLM`` as is;
    compile        ``torch.compile(model)`` of that model (default mode, static shapes);
    liger          the model patched in place: ``apply_liger_kernel_to_<model_type>(model=model)``
                   (defaults: RMSNorm, RoPE, SwiGLU / GeGLU, fused linear cross-entropy in training);
    liger_compile  the patched model, then ``torch.compile``;
    liger085       (only when named) the model patched by liger-kernel 0.8.5's
                   ``apply_liger_kernel_to_<model_type>(model=model)``, imported from --peer-path in a
                   child process (both packages are named liger_kernel), its defaults.
``rope=True`` patches the modeling module globally, so after each liger arm
``liger_kernel.transformers.unpatch()`` restores everything before the next arm is built.

One step = ``model(input_ids=ids, labels=ids).loss.backward()`` (HF shifts the labels; with labels in
training mode the patched model takes the fused linear cross-entropy path, so no logits are stored),
gradients set to None before each step.  With ``--optimizer`` a second kind of step, ``train_step``,
adds ``AdamW.step()`` (fused on CUDA) and ``zero_grad``.  Per arm and kind:
    <kind>_ms           median step time over --steps steps after --warmup steps (the first warm-up
                        step includes compilation), each timed as synchronize + perf_counter;
    <kind>_tokens_per_s batch * seq / step time;
    <kind>_peak_gib     torch.cuda.max_memory_allocated() over the timed steps (reset after warm-up):
                        the whole footprint: weights, gradients, optimizer state, activations;
    <kind>_loss         the loss of the first step (sanity: the arms should agree, ~ln(vocab));
    warmup_s            wall time of the warm-up steps (mostly compilation for the compiled arms).
An arm that runs out of memory records its rows with value nan and note "OOM"; any other failure
(e.g. a compile error) records "error: ..." and the run goes on with the next arm.

Without CUDA only the ``tiny*`` presets are meant to run (float32, compile backend aot_eager, the Liger
kernels through Triton's interpreter, no memory figures): it checks the harness, not the speed.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

if not torch.cuda.is_available():
    # Must happen before anything imports triton or liger_kernel (kernels are decorated at import).
    os.environ.setdefault("TRITON_INTERPRET", "1")
if "--peer-child" in sys.argv:  # the liger085 arm's process: the peer's liger_kernel must win
    sys.path.insert(0, os.path.abspath(sys.argv[sys.argv.index("--peer-path") + 1]))

from benchmark.peer import add_peer_path_argument, child_env, import_peer, peer_version  # noqa: E402
from benchmark.run import (  # noqa: E402
    _DTYPES,
    _REPO,
    ENV_COLUMNS,
    _free,
    _short,
    _sync,
    append_csv_rows,
    environment,
)

ARMS = ("eager", "compile", "liger", "liger_compile")
# Run only when named in --arms: the liger arm with one option off, to measure that option's gain
# (``liger_unfused_add``: fused_add_rms_norm=False, the residual adds and norms unfused).
EXTRA_ARMS = {"liger_unfused_add": {"fused_add_rms_norm": False}}
# Run only when named: liger-kernel 0.8.5 (the reference release) in a child process (see run_peer_arm).
PEER_ARM = "liger085"
KINDS = ("fwd_bwd", "train_step")
COLUMNS = ("arm", "preset", "batch", "seq", "metric", "value", *ENV_COLUMNS)


@dataclass(frozen=True)
class Preset:
    config: dict[str, Any]
    batch: int
    seq: int
    dtype: str = "bfloat16"
    warmup: int = 3
    steps: int = 10
    compile_backend: str = "inductor"
    model_type: str = "llama"


_LLAMA_COMMON = {"vocab_size": 128256, "rope_theta": 500000.0, "max_position_embeddings": 8192}
PRESETS: dict[str, Preset] = {
    "llama3-8b": Preset(
        config={
            **_LLAMA_COMMON,
            "hidden_size": 4096,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "intermediate_size": 14336,
        },
        batch=4,
        seq=2048,
    ),
    # The case where memory decides: 32768 tokens x 128256 vocab of logits (8 GiB bf16, 16 GiB as fp32).
    "llama-1b": Preset(
        config={
            **_LLAMA_COMMON,
            "hidden_size": 2048,
            "num_hidden_layers": 16,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "intermediate_size": 8192,
            "tie_word_embeddings": True,
        },
        batch=4,
        seq=8192,
    ),
    "tiny": Preset(
        config={
            "vocab_size": 256,
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "intermediate_size": 160,
            "max_position_embeddings": 64,
        },
        batch=2,
        seq=32,
        dtype="float32",
        warmup=1,
        steps=3,
        compile_backend="aot_eager",
    ),
}

# Issue 20's configurations (random weights; Hugging Face's published shapes). The MoE one is
# Qwen3-30B-A3B with 12 of its 48 layers, so that weights and gradients fit beside the activations.
_QWEN3_COMMON = {
    "vocab_size": 151936,
    "rope_theta": 1000000.0,
    "max_position_embeddings": 40960,
    "head_dim": 128,
}
PRESETS.update(
    {
        "qwen3-8b": Preset(
            config={
                **_QWEN3_COMMON,
                "hidden_size": 4096,
                "num_hidden_layers": 36,
                "num_attention_heads": 32,
                "num_key_value_heads": 8,
                "intermediate_size": 12288,
                "tie_word_embeddings": False,
            },
            batch=4,
            seq=2048,
            model_type="qwen3",
        ),
        "qwen3-moe-30b-a3b-12l": Preset(
            config={
                **_QWEN3_COMMON,
                "hidden_size": 2048,
                "num_hidden_layers": 12,
                "num_attention_heads": 32,
                "num_key_value_heads": 4,
                "intermediate_size": 6144,
                "moe_intermediate_size": 768,
                "num_experts": 128,
                "num_experts_per_tok": 8,
                "norm_topk_prob": True,
                "tie_word_embeddings": False,
            },
            batch=4,
            seq=2048,
            model_type="qwen3_moe",
        ),
        "gemma3-4b-text": Preset(
            config={
                "vocab_size": 262208,
                "hidden_size": 2560,
                "num_hidden_layers": 34,
                "num_attention_heads": 8,
                "num_key_value_heads": 4,
                "head_dim": 256,
                "intermediate_size": 10240,
                "query_pre_attn_scalar": 256,
                "sliding_window": 1024,
                "max_position_embeddings": 131072,
                "tie_word_embeddings": True,
            },
            batch=4,
            seq=2048,
            model_type="gemma3_text",
        ),
    }
)
# The same model types at the tiny preset's size: the harness on CPU (tests/benchmark).
for _name, _model_type, _extra in (
    ("tiny-qwen3", "qwen3", {"head_dim": 16}),
    ("tiny-qwen3-moe", "qwen3_moe", {"head_dim": 16, "num_experts": 4, "num_experts_per_tok": 2,
                                     "moe_intermediate_size": 48}),
    ("tiny-gemma3-text", "gemma3_text", {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 16}),
):  # fmt: skip
    PRESETS[_name] = Preset(
        config={**PRESETS["tiny"].config, **_extra},
        batch=2,
        seq=32,
        dtype="float32",
        warmup=1,
        steps=3,
        compile_backend="aot_eager",
        model_type=_model_type,
    )

# Issue 7's targets (llama3-8b): a patched arm against eager and compile.
TARGETS = (
    ("tokens_per_s", "eager", ">=", 1.25),
    ("tokens_per_s", "compile", ">=", 1.05),
    ("peak_gib", "eager", "<=", 0.6),
    ("tokens_per_s", PEER_ARM, ">=", 1.05),  # issue 19
)
# Issue 20's targets: against eager (the MoE configuration has none: report what it gets).
PRESET_TARGETS = {
    "llama3-8b": TARGETS,
    "qwen3-8b": (("tokens_per_s", "eager", ">=", 1.2), ("peak_gib", "eager", "<=", 0.6)),
    "gemma3-4b-text": (("tokens_per_s", "eager", ">=", 1.2), ("peak_gib", "eager", "<=", 0.5)),
}
# H200 figures from shared/ANCHORS.md (fwd+bwd, llama3-8b, bsz 4, seq 2048, bf16, sdpa): ms, GiB.
ANCHORS = {"eager": (761.0, 78.0), "compile": (699.0, 61.1), "Liger Kernel 0.8.2 (patched)": (743.0, 53.2)}


# ---------------------------------------------------------------------------------------------
# one arm


@dataclass
class ArmResult:
    values: dict[str, float] = field(default_factory=dict)
    note: str = ""


def build_model(preset: Preset, device: torch.device, attn: str) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    dtype = _DTYPES[preset.dtype]
    config = AutoConfig.for_model(preset.model_type, **preset.config, use_cache=False)
    config._attn_implementation = attn
    torch.manual_seed(1234)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # parameters created directly in the target dtype, on the device
    try:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config)
    finally:
        torch.set_default_dtype(previous)
    return model.to(dtype).train()


def measure_kind(
    step: Callable[[], torch.Tensor],
    model: torch.nn.Module,
    device: torch.device,
    warmup: int,
    steps: int,
    tokens: int,
    prefix: str,
    values: dict[str, float],
) -> None:
    """Fill ``values`` metric by metric, so whatever finished survives an OOM later on."""
    t0 = time.perf_counter()
    for i in range(max(warmup, 1)):
        model.zero_grad(set_to_none=True)
        loss = step()
        if i == 0:
            values[f"{prefix}_loss"] = float(loss)
        del loss
    _sync(device)
    values.setdefault("warmup_s", time.perf_counter() - t0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        model.zero_grad(set_to_none=True)  # outside the timed region: no accumulation into old grads
        _sync(device)
        start = time.perf_counter()
        loss = step()
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
        del loss
    ms = statistics.median(times)
    values[f"{prefix}_ms"] = ms
    values[f"{prefix}_tokens_per_s"] = tokens / (ms / 1e3)
    if device.type == "cuda":
        values[f"{prefix}_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    model.zero_grad(set_to_none=True)


def _steps(state: dict[str, Any]) -> tuple[Callable[[], torch.Tensor], Callable[[], torch.Tensor]]:
    """The step functions read everything from ``state``, so clearing it frees the model, even while
    the closures are still referenced (e.g. from an exception's traceback)."""

    def fwd_bwd() -> torch.Tensor:
        ids = state["ids"]
        loss = state["runner"](input_ids=ids, labels=ids).loss
        loss.backward()
        return loss.detach()

    def train_step() -> torch.Tensor:
        loss = fwd_bwd()
        state["optimizer"].step()
        state["optimizer"].zero_grad(set_to_none=True)
        return loss

    return fwd_bwd, train_step


def run_arm(arm: str, preset: Preset, args: argparse.Namespace, device: torch.device) -> ArmResult:
    result = ArmResult()
    notes: list[str] = []
    state: dict[str, Any] = {}  # model, runner, ids, optimizer: cleared at the end of the arm
    patched = arm.startswith("liger")
    try:
        state["model"] = model = build_model(preset, device, args.attn)
        if arm == PEER_ARM:  # in the child process, where liger_kernel is the peer's
            import liger_kernel.transformers as peer_transformers

            notes.append(f"liger_kernel {import_peer(args.peer_path)}")
            getattr(peer_transformers, f"apply_liger_kernel_to_{preset.model_type}")(model=model)
        elif patched:
            from liger_kernel.transformers.monkey_patch import apply_liger_kernel

            apply_liger_kernel(preset.model_type, model=model, **EXTRA_ARMS.get(arm, {}))
        if patched:  # modules swapped for ours, or given a forward of liger_kernel's (the peer's patches)
            swapped = sum(
                type(m).__module__.startswith("liger_kernel")
                or getattr(m.forward, "__module__", "").startswith("liger_kernel")
                for m in model.modules()
            )
            notes.append(f"liger modules={swapped}")  # 0 would mean the patch did not take
        state["runner"] = model
        if arm.endswith("compile"):
            torch._dynamo.reset()  # fresh caches for every compiled arm
            backend = args.compile_backend or preset.compile_backend
            state["runner"] = torch.compile(model, backend=backend)
            if backend != "inductor":
                notes.append(f"compile backend={backend}")
        g = torch.Generator(device="cpu").manual_seed(4321)
        ids = torch.randint(0, preset.config["vocab_size"], (args.batch, args.seq), generator=g)
        state["ids"] = ids.to(device)
        del ids
        tokens = args.batch * args.seq
        fwd_bwd, train_step = _steps(state)
        measure_kind(fwd_bwd, model, device, args.warmup, args.steps, tokens, "fwd_bwd", result.values)
        if args.optimizer:
            state["optimizer"] = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
            # At least 2 warm-up steps: the first allocates the optimizer state.
            warmup = max(args.warmup, 2)
            measure_kind(train_step, model, device, warmup, args.steps, tokens, "train_step", result.values)
    except torch.cuda.OutOfMemoryError:
        notes.append("OOM")
    except Exception as exc:  # compile errors, missing kernels...: record and go on with the next arm
        notes.append(f"error: {_short(exc)}")
    finally:
        model = None
        state.clear()
        if patched and arm != PEER_ARM:  # the peer's process ends with its arm
            try:
                from liger_kernel.transformers import unpatch

                unpatch()  # rope=True patched the modeling module for the whole process
            except Exception as exc:
                notes.append(f"unpatch error: {_short(exc)}")
        torch._dynamo.reset()
        _free(device)
    result.note = "; ".join(notes)
    return result


def run_peer_arm(args: argparse.Namespace) -> ArmResult:
    """The liger085 arm in a child process with --peer-path ahead of this repository; its result comes
    back as one JSON line."""
    env, why = child_env(args.peer_path)
    if env is None:
        return ArmResult(note=why)
    cmd = [sys.executable, "-m", "benchmark.e2e", "--preset", args.preset, "--arms", PEER_ARM, "--peer-child"]
    cmd += ["--peer-path", args.peer_path, "--batch", str(args.batch), "--seq", str(args.seq)]
    cmd += ["--warmup", str(args.warmup), "--steps", str(args.steps), "--attn", args.attn]
    cmd += ["--optimizer"] if args.optimizer else []
    cmd += ["--compile-backend", args.compile_backend] if args.compile_backend else []
    proc = subprocess.run(cmd, env=env, cwd=str(_REPO), capture_output=True, text=True)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            got = json.loads(line[len("RESULT ") :])
            return ArmResult(values=got["values"], note=got["note"])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
    return ArmResult(note=f"error: child exit {proc.returncode}: {tail[0][:200]}")


# ---------------------------------------------------------------------------------------------
# CSV and table


def metric_names(optimizer: bool) -> list[str]:
    names = ["warmup_s"]
    for kind in KINDS if optimizer else KINDS[:1]:
        names += [f"{kind}_{m}" for m in ("ms", "tokens_per_s", "peak_gib", "loss")]
    return names


def write_rows(path: Path, env: dict[str, str], rows: list[dict[str, Any]]) -> None:
    append_csv_rows(path, COLUMNS, env, rows)


def load_csvs(paths: list[Path]) -> tuple[str, dict[str, ArmResult], dict[str, str]]:
    """Merge CSVs of one preset and shape (e.g. a run split over two calls); a later file wins per arm.

    Raises ValueError for CSVs of different presets or batch/seq (files from before the batch and seq
    columns existed carry none and are taken as the preset's own shape)."""
    results: dict[str, ArmResult] = {}
    preset = ""
    shape: tuple[str, str] | None = None
    info: dict[str, str] = {}
    for path in paths:
        seen: set[str] = set()
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                row_shape = (row.get("batch") or "preset", row.get("seq") or "preset")
                if (preset and row["preset"] != preset) or (shape and row_shape != shape):
                    raise ValueError(
                        f"{path}: preset {row['preset']} batch/seq {row_shape} differs from the earlier "
                        f"files' {preset} {shape}; plot or report each shape on its own"
                    )
                preset, shape = row["preset"], row_shape
                info = info or {"batch": row.get("batch", ""), "seq": row.get("seq", "")}
                if "gpu" not in info:
                    info.update(
                        {
                            k: row.get(k, "")
                            for k in ("gpu", "torch", "triton", "transformers", "liger_kernel")
                        }
                    )
                arm = row["arm"]
                if arm not in seen:
                    results[arm] = ArmResult()
                    seen.add(arm)
                try:
                    value = float(row["value"])
                except ValueError:
                    value = math.nan
                if not math.isnan(value):
                    results[arm].values[row["metric"]] = value
                if row["note"]:
                    results[arm].note = row["note"]
    return preset, results, info


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None or math.isnan(v) else format(v, spec)


def _ratio(a: float | None, b: float | None) -> float:
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b == 0:
        return math.nan
    return a / b


def print_table(preset_name: str, results: dict[str, ArmResult]) -> None:
    arms = [a for a in ARMS if a in results] + [a for a in results if a not in ARMS]
    for kind in KINDS:
        if not any(f"{kind}_ms" in r.values for r in results.values()):
            continue
        get = {a: (lambda m, a=a, k=kind: results[a].values.get(f"{k}_{m}", math.nan)) for a in arms}
        print(f"\n{preset_name}: {kind} (tok/s ratio > 1 = faster; memory ratio < 1 = less memory)")
        header = (
            f"{'arm':14s} {'ms/step':>9s} {'tokens/s':>10s} {'peak GiB':>9s} {'x eager':>8s} {'x compile':>9s} "
            f"{'mem/eager':>9s} {'mem/comp':>9s} {'loss':>8s} {'warmup s':>8s}  note"
        )
        print(header)
        print("-" * len(header))
        for a in arms:
            tps, peak = get[a]("tokens_per_s"), get[a]("peak_gib")
            eager_tps = get["eager"]("tokens_per_s") if "eager" in get else math.nan
            comp_tps = get["compile"]("tokens_per_s") if "compile" in get else math.nan
            eager_peak = get["eager"]("peak_gib") if "eager" in get else math.nan
            comp_peak = get["compile"]("peak_gib") if "compile" in get else math.nan
            print(
                f"{a:14s} {_fmt(get[a]('ms')):>9s} {_fmt(tps, '.0f'):>10s} {_fmt(peak):>9s} "
                f"{_fmt(_ratio(tps, eager_tps), '.3f'):>8s} {_fmt(_ratio(tps, comp_tps), '.3f'):>9s} "
                f"{_fmt(_ratio(peak, eager_peak), '.3f'):>9s} {_fmt(_ratio(peak, comp_peak), '.3f'):>9s} "
                f"{_fmt(get[a]('loss'), '.4f'):>8s} {_fmt(results[a].values.get('warmup_s')):>8s}  {results[a].note}"
            )
        if kind == "fwd_bwd" and preset_name in PRESET_TARGETS:
            if preset_name == "llama3-8b":
                print(
                    "H200 anchors (shared/ANCHORS.md): "
                    + "; ".join(f"{k} {ms:g} ms {gib:g} GiB" for k, (ms, gib) in ANCHORS.items())
                )
            for a in ("liger", "liger_compile"):
                if a not in results:
                    continue
                verdicts = []
                for metric, base, cmp, bound in PRESET_TARGETS[preset_name]:
                    r = _ratio(get[a](metric), get[base](metric) if base in get else math.nan)
                    ok = (
                        "?"
                        if math.isnan(r)
                        else ("yes" if (r >= bound if cmp == ">=" else r <= bound) else "NO")
                    )
                    verdicts.append(f"{metric} vs {base} {_fmt(r, '.3f')} {cmp} {bound:g}: {ok}")
                print(f"targets ({a}): " + " | ".join(verdicts))


# ---------------------------------------------------------------------------------------------
# command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmark.e2e", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="llama3-8b")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {','.join(ARMS)}")
    parser.add_argument("--optimizer", action="store_true", help="also time a train step with AdamW")
    parser.add_argument("--batch", type=int, default=None, help="override the preset's batch size")
    parser.add_argument("--seq", type=int, default=None, help="override the preset's sequence length")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps (first one compiles)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (median reported)")
    parser.add_argument("--attn", default="sdpa", help="attn_implementation (default sdpa)")
    parser.add_argument(
        "--compile-backend", default=None, help="default: the preset's (inductor; tiny: aot_eager)"
    )
    parser.add_argument("--liger-version", default=None, help="text for the liger_kernel column")
    add_peer_path_argument(parser)
    parser.add_argument("--peer-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--out", default=None, help="CSV path (default benchmark/results/e2e_<preset>_<date>.csv)"
    )
    parser.add_argument(
        "--report", nargs="+", type=Path, default=None, help="only print the table of these CSVs"
    )
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    args.batch = args.batch or preset.batch
    args.seq = args.seq or preset.seq
    args.warmup = preset.warmup if args.warmup is None else args.warmup
    args.steps = preset.steps if args.steps is None else args.steps
    if args.out is None:
        today = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d")
        if args.preset.startswith("tiny"):
            import tempfile

            args.out = str(Path(tempfile.gettempdir()) / f"liger_e2e_{args.preset}_{today}.csv")
        else:
            args.out = str(_REPO / "benchmark" / "results" / f"e2e_{args.preset}_{today}.csv")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        preset_name, results, info = load_csvs(args.report)
        print(", ".join(f"{k} {v}" for k, v in info.items()))
        print_table(preset_name, results)
        return 0
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if any(a not in ARMS and a not in EXTRA_ARMS and a != PEER_ARM for a in arms) or args.steps < 1:
        known = ",".join([*ARMS, *EXTRA_ARMS, PEER_ARM])
        print(f"unknown arms in {arms} (known: {known}) or --steps < 1", file=sys.stderr)
        return 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not args.preset.startswith("tiny"):
        print("no CUDA device: only the tiny presets run on CPU", file=sys.stderr)
        return 2
    preset = PRESETS[args.preset]
    if args.peer_child:  # the liger085 arm's process: run it, report it to the parent, write nothing
        res = run_arm(PEER_ARM, preset, args, device)
        print("RESULT " + json.dumps({"values": res.values, "note": res.note}), flush=True)
        return 0
    env = environment(device, args.liger_version)
    out = Path(args.out)
    print(
        f"device {env['gpu']}; torch {env['torch']}, triton {env['triton']}, transformers {env['transformers']}, "
        f"liger_kernel {env['liger_kernel']}; interpreter={os.environ.get('TRITON_INTERPRET', '0')}"
    )
    print(
        f"preset {args.preset}: {preset.config}; batch {args.batch} seq {args.seq} {preset.dtype} attn {args.attn}; "
        f"warmup {args.warmup} steps {args.steps}; writing {out}",
        flush=True,
    )
    results: dict[str, ArmResult] = {}
    started = time.perf_counter()
    for arm in arms:
        t0 = time.perf_counter()
        print(f"{arm} ...", flush=True)
        res = run_peer_arm(args) if arm == PEER_ARM else run_arm(arm, preset, args, device)
        results[arm] = res
        rows = [
            {
                "arm": arm,
                "preset": args.preset,
                "batch": args.batch,
                "seq": args.seq,
                "metric": m,
                "value": res.values.get(m, math.nan),
                "note": res.note,
            }
            for m in metric_names(args.optimizer)
        ]
        arm_env = {**env, "liger_kernel": f"peer {peer_version(args.peer_path)}"} if arm == PEER_ARM else env
        write_rows(out, arm_env, rows)  # each arm appended as it finishes: a run cut short keeps its arms
        got = "  ".join(f"{k}={v:.4g}" for k, v in res.values.items())
        print(f"    {got}  {res.note}  ({time.perf_counter() - t0:.1f} s)", flush=True)
    print_table(args.preset, results)
    print(f"\nwrote {out}; total {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
