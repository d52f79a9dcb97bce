"""Post-training losses: forward + backward time and peak memory of DPO and GRPO through the lm_head.

    python -m benchmark.post_training [--out-dir $OUT] [--peer-path .peer/liger085] [--tiny]
                                      [--workloads dpo,grpo,grpo_short] [--arms eager,compile,ours,liger085]
                                      [--profile]

Workloads (bf16, hidden 4096, vocab 128256 as Llama-3-8B; ``--tiny`` shrinks them for a CPU check):
    dpo   8 pairs x 1024 tokens, sigmoid loss, beta 0.1; the reference model's lm_head runs in the loss
          (its hidden states and weight are inputs, as TRL's DPOTrainer computes the reference per batch)
    grpo  16 completions x 1024 tokens, loss "dapo", beta 0.04; the reference and old per-token
          log-probs are inputs (TRL computes them once per generation, outside the loss step)
    grpo_short  the same loss over 64 completions x 256 tokens (as many tokens; the chunk rule packs
          several completions per chunk where one per chunk re-reads and re-writes dW 64 times)
Arms:
    eager     the loss the way TRL computes it without Liger: full logits F.linear -> .float() ->
              log_softmax -> gather, then the formula (and the same for the reference, under no_grad)
    compile   torch.compile of that eager function
    ours      liger_kernel.chunked_loss (this repository), default chunk sizes
    liger085  liger-kernel 0.8.5's chunked_loss, imported from --peer-path in a child process (both
              packages are named liger_kernel); "n/a" when the path is absent
Metrics per arm (the harness of benchmark/run.py): full_ms (forward + ``autograd.grad`` of the policy's
hidden states and lm_head weight, median), peak_mib (peak memory allocated during one pass beyond what
was allocated before it: weights, hidden states and targets are not counted). Each non-eager arm is
checked once against eager (loss and gradients, relative L2 < 2e-2) and the note column says so.
The CSV (one row per workload x arm x metric, with GPU name, versions and date) goes to
``--out-dir/post_training_<date>.csv``; a table is printed. ``--profile`` also writes the CUDA kernels of one
pass of ours per workload, by total GPU time (torch.profiler), to ``--out-dir/post_training_profile.txt``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

if "--peer-path" in sys.argv and "--child" in sys.argv:  # the liger085 child: its package must win
    sys.path.insert(0, os.path.abspath(sys.argv[sys.argv.index("--peer-path") + 1]))

from benchmark.run import (  # noqa: E402
    Problem,
    Timer,
    _first_pass,
    _free,
    _rel_l2,
    _short,
    append_csv_rows,
    environment,
    full_pass,
    peak_extra_mib,
)

ARMS = ("eager", "compile", "ours", "liger085")
WORKLOADS = ("dpo", "grpo", "grpo_short")
COLUMNS = ("workload", "shape", "arm", "metric", "value", "gpu", "torch", "triton", "transformers", "liger_kernel",
           "date", "note")  # fmt: skip
FULL = dict(pairs=8, completions=16, seq=1024, short_completions=64, short_seq=256, hidden=4096, vocab=128256)
TINY = dict(pairs=2, completions=4, seq=16, short_completions=8, short_seq=4, hidden=32, vocab=97)
BETA_DPO, BETA_GRPO = 0.1, 0.04


def _token_logps(hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """TRL without Liger: the full (B, T, V) logits, upcast, log_softmax, gather."""
    logits = F.linear(hidden, weight).float()
    return torch.log_softmax(logits, -1).gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)


def eager_dpo(hidden, weight, target, ref_hidden, ref_weight):
    mask = target != -100
    logps = (_token_logps(hidden, weight, target) * mask).sum(-1)
    with torch.no_grad():
        ref = (_token_logps(ref_hidden, ref_weight, target) * mask).sum(-1)
    n = hidden.shape[0] // 2
    margin = (logps[:n] - ref[:n]) - (logps[n:] - ref[n:])
    return -F.logsigmoid(BETA_DPO * margin).mean()


def eager_grpo(hidden, weight, ids, mask, advantages, ref_logps):
    logps = _token_logps(hidden, weight, ids)
    ratio = torch.exp(logps - logps.detach())
    per_token = -torch.min(ratio * advantages[:, None], ratio.clamp(0.8, 1.2) * advantages[:, None])
    per_token = per_token + BETA_GRPO * (torch.exp(ref_logps - logps) - (ref_logps - logps) - 1)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


def chunked_fns() -> dict[str, Any]:
    """The chunked losses of whichever liger_kernel is importable (ours, or 0.8.5 in the child)."""
    from liger_kernel.chunked_loss import LigerFusedLinearDPOLoss, LigerFusedLinearGRPOLoss

    dpo = LigerFusedLinearDPOLoss(beta=BETA_DPO, use_ref_model=True)
    grpo = LigerFusedLinearGRPOLoss(beta=BETA_GRPO, loss_type="dapo", use_ref_model=False)

    def dpo_fn(hidden, weight, target, ref_hidden, ref_weight):
        return dpo(weight, hidden, target, None, ref_hidden, ref_weight)[0]

    def grpo_fn(hidden, weight, ids, mask, advantages, ref_logps):
        return grpo(hidden, weight, ids, mask, advantages, None, ref_logps)[0]

    return {"dpo": dpo_fn, "grpo": grpo_fn, "grpo_short": grpo_fn}


def build(workload: str, fn, dims: dict[str, int], device: torch.device) -> Problem:
    gen = torch.Generator(device=device).manual_seed(1234)
    dtype = torch.bfloat16

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, device=device) * scale).to(dtype)

    hidden_size, vocab, seq = dims["hidden"], dims["vocab"], dims["seq"]
    weight = randn(vocab, hidden_size, scale=hidden_size**-0.5).requires_grad_()
    rows = 2 * dims["pairs"] if workload == "dpo" else dims["completions"]
    if workload == "grpo_short":
        rows, seq = dims["short_completions"], dims["short_seq"]
    hidden = randn(rows, seq, hidden_size).requires_grad_()
    target = torch.randint(0, vocab, (rows, seq), generator=gen, device=device)
    if workload == "dpo":
        target[:, : seq // 4] = -100  # the prompt
        args = (
            hidden,
            weight,
            target,
            randn(rows, seq, hidden_size),
            randn(vocab, hidden_size, scale=hidden_size**-0.5),
        )
    else:
        mask = torch.ones(rows, seq, dtype=torch.long, device=device)
        mask[::3, seq // 2 :] = 0  # some completions end early
        advantages = torch.randn(rows, generator=gen, device=device)
        with torch.no_grad():
            ref_logps = torch.cat(
                [_token_logps(hidden[i : i + 1], weight, target[i : i + 1]) for i in range(rows)]
            )
        ref_logps = ref_logps + 0.01 * torch.randn(ref_logps.shape, generator=gen, device=device)
        args = (hidden, weight, target, mask, advantages, ref_logps)
    return Problem(fn=fn, args=args, wrt={"hidden": hidden, "weight": weight}, grad_outputs=None)


def measure_arm(
    workload: str, arm: str, dims: dict[str, int], device: torch.device, timer: Timer
) -> dict[str, Any]:
    """{'full_ms', 'peak_mib', 'note'} of one arm; errors become a note."""
    eager = {"dpo": eager_dpo, "grpo": eager_grpo, "grpo_short": eager_grpo}[workload]
    result: dict[str, Any] = {"full_ms": math.nan, "peak_mib": math.nan, "note": ""}
    p = None
    try:
        if arm == "eager":
            fn = eager
        elif arm == "compile":
            torch._dynamo.reset()
            fn = torch.compile(
                eager, backend="inductor" if device.type == "cuda" else "aot_eager", dynamic=False
            )
        else:
            fn = chunked_fns()[workload]
        if arm != "eager":  # one check against eager on the same inputs
            expected = _first_pass(build(workload, eager, dims, device))
            actual = _first_pass(build(workload, fn, dims, device))
            worst = max(_rel_l2(actual[k], expected[k]) for k in expected)
            result["note"] = f"check={'ok' if worst < 2e-2 else 'FAIL'} (worst rel L2 {worst:.1e})"
            del expected, actual
            _free(device)
        p = build(workload, fn, dims, device)
        for _ in range(2):  # compiles and settles the allocator
            full_pass(p)
        result["peak_mib"] = peak_extra_mib(p, device)
        result["full_ms"] = timer(lambda problem=p: full_pass(problem))
    except Exception as exc:  # one arm failing (OOM, compile error) must not stop the run
        result["note"] = f"error: {_short(exc)}"
        print(f"    {workload}/{arm}: ERROR {_short(exc, 400)}", flush=True)
    finally:
        del p
        _free(device)
    return result


def run_child(
    args: argparse.Namespace, dims: dict[str, int], workloads: list[str]
) -> dict[str, dict[str, Any]]:
    """liger085 in a child process whose sys.path starts with --peer-path; results come back as JSON."""
    peer = Path(args.peer_path)
    if not (peer / "liger_kernel" / "chunked_loss").is_dir():
        return {w: {"full_ms": math.nan, "peak_mib": math.nan, "note": f"n/a: no liger_kernel under {peer}"}
                for w in workloads}  # fmt: skip
    cmd = [sys.executable, "-m", "benchmark.post_training", "--child", "--peer-path", str(peer),
           "--workloads", ",".join(workloads)] + (["--tiny"] if args.tiny else [])  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    for line in proc.stdout.splitlines():
        if line.startswith("CHILD_RESULT "):
            return json.loads(line.removeprefix("CHILD_RESULT "))
    note = f"error: child exited {proc.returncode}: {proc.stderr.strip().splitlines()[-1:] or ''}"
    return {w: {"full_ms": math.nan, "peak_mib": math.nan, "note": note} for w in workloads}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", default=os.environ.get("OUT", "benchmark/results"))
    parser.add_argument("--peer-path", default=".peer/liger085")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (CPU check of the script)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--profile", action="store_true", help="profile one pass of ours per workload")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not args.tiny:
        parser.error("without CUDA only --tiny runs")
    dims = TINY if args.tiny else FULL
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = sorted(set(workloads) - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {WORKLOADS}")
    # A 1 s budget: about ten timed passes at ~100 ms each (do_bench's default 100 ms times one, so a
    # single sample decided the 2026-12-05 figures).
    timer = Timer(device, warmup=200, rep=1000, cpu_reps=3)

    if args.child:
        import importlib.metadata

        results = {w: measure_arm(w, "liger085", dims, device, timer) for w in workloads}
        for r in results.values():
            r["note"] = (r["note"] + f"; liger_kernel {importlib.metadata.version('liger-kernel')}").strip(
                "; "
            )
        print("CHILD_RESULT " + json.dumps(results), flush=True)
        return 0

    arms = [a for a in args.arms.split(",") if a]
    env = environment(device, None)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d_%H%M%S")
    csv_path = Path(args.out_dir) / f"post_training_{'tiny_' if args.tiny else ''}{stamp}.csv"
    table: dict[tuple[str, str], dict[str, Any]] = {}
    for workload in workloads:
        for arm in arms:
            if arm == "liger085":
                continue
            print(f"{workload}/{arm} ...", flush=True)
            table[workload, arm] = measure_arm(workload, arm, dims, device, timer)
    if "liger085" in arms:
        print("liger085 (child process) ...", flush=True)
        for workload, result in run_child(args, dims, workloads).items():
            table[workload, "liger085"] = result
    shapes = {
        "dpo": f"{dims['pairs']} pairs x {dims['seq']}",
        "grpo": f"{dims['completions']} x {dims['seq']}",
        "grpo_short": f"{dims['short_completions']} x {dims['short_seq']}",
    }
    rows = []
    for (workload, arm), r in table.items():
        for metric in ("full_ms", "peak_mib"):
            shape = f"{shapes[workload]}, H {dims['hidden']}, V {dims['vocab']}, bf16"
            rows.append(
                dict(workload=workload, shape=shape, arm=arm, metric=metric, value=r[metric], note=r["note"])
            )
    append_csv_rows(csv_path, COLUMNS, env, rows)

    print(f"\n{env['gpu']}, torch {env['torch']}, triton {env['triton']}, {env['date']}")
    print(
        f"{'workload':9} {'arm':9} {'full ms':>10} {'peak MiB':>10} {'mem/eager':>9} {'t/compile':>9}  note"
    )
    for (workload, arm), r in table.items():
        eager_peak = table.get((workload, "eager"), {}).get("peak_mib", math.nan)
        compile_ms = table.get((workload, "compile"), {}).get("full_ms", math.nan)
        mem_ratio = r["peak_mib"] / eager_peak if eager_peak else math.nan
        time_ratio = r["full_ms"] / compile_ms if compile_ms else math.nan
        print(f"{workload:9} {arm:9} {r['full_ms']:10.2f} {r['peak_mib']:10.1f} {mem_ratio:9.3f} {time_ratio:9.3f}  "
              f"{r['note']}")  # fmt: skip
    print(f"\nCSV: {csv_path}")
    if args.profile:
        profile_ours(workloads, dims, device, Path(args.out_dir) / "post_training_profile.txt")
    return 0


def profile_ours(workloads: list[str], dims: dict[str, int], device: torch.device, path: Path) -> None:
    """The kernels of one pass (forward + grad) of ours per workload, by total device time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort_by = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    parts = []
    for workload in workloads:
        p = build(workload, chunked_fns()[workload], dims, device)
        full_pass(p)  # warm: Triton compiles, allocator settles
        with profile(activities=activities) as prof:
            full_pass(p)
            if device.type == "cuda":
                torch.cuda.synchronize()
        parts.append(f"== {workload} ==\n" + prof.key_averages().table(sort_by=sort_by, row_limit=25))
        del p
        _free(device)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(parts))
    print("\n".join(parts))
    print(f"profile: {path}")


if __name__ == "__main__":
    sys.exit(main())
