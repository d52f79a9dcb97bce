"""Benchmark the distillation losses: KL divergence, JSD, TVD (logits in) and the fused linear JSD
(hidden states in), forward + backward time and peak memory, four arms side by side in one run.

    python -m benchmark.distill [--ops kl_div,jsd,tvd,fused_linear_jsd] [--arms eager,compile,ours,peer]
                                [--peer-path .peer/liger085] [--out DIR] [--tiny]

Arms:
    eager    the loss written in PyTorch as TRL computes it without Liger (generalized JSD through a
             logsumexp mixture, F.kl_div, |p - q|; the fused loss through both lm_heads' full logits);
    compile  torch.compile of that same eager code (inductor on CUDA, aot_eager on CPU);
    ours     this package's LigerKLDIVLoss / LigerJSD / LigerTVDLoss / LigerFusedLinearJSD;
    peer     the same modules of liger-kernel 0.8.5, imported from ``--peer-path`` (or $LIGER_PEER_PATH:
             a folder holding that release's ``liger_kernel`` package, e.g. an unzipped wheel); "n/a"
             when it cannot be imported.
Each arm runs in a subprocess of its own (the peer's package is also called ``liger_kernel``; separate
processes also keep compile caches and allocator state apart). Metrics are benchmark/run.py's: fwd_ms,
full_ms (forward + backward, median of do_bench), graph_ms (the full pass as a CUDA-graph replay, when the
arm can be captured), bwd_ms = full_ms - fwd_ms (every Liger arm makes its gradients in the forward), and
peak_mib (peak memory of one full pass beyond what was allocated before it: inputs and weights are not
counted, gradients are). Before timing, the ours and peer arms are checked once against the eager code
run in fp32 on the same (bf16) inputs (loss and every gradient, relative L2 error < --check-tol); the
note says check=ok or FAIL.

Shapes (bf16): 8192 x 128256 for the three logits-in losses; the fused loss at 8 x 2048 tokens, a 1B
student (hidden 2048) and an 8B teacher (hidden 4096), vocab 128256. ``--tiny`` runs small shapes, on the
CPU through Triton's interpreter when there is no GPU: it checks the script, not the speed.
Writes ``distill_<date>[_<tag>].csv`` (with GPU, versions and date) to --out (default $OUT, else
benchmark/results; an existing file of that name is replaced) and prints a table.
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

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton or liger_kernel

from benchmark.peer import add_peer_path_argument, child_env, import_peer  # noqa: E402

_REPO = Path(__file__).resolve().parent.parent
ARMS = ("eager", "compile", "ours", "peer")
BETA = 0.5
TEMPERATURE = 1.0
IGNORE_FRACTION = 0.1

SHAPES = {
    "kl_div": {"rows": 8192, "vocab": 128256},
    "jsd": {"rows": 8192, "vocab": 128256},
    "tvd": {"rows": 8192, "vocab": 128256},
    "fused_linear_jsd": {"tokens": 8 * 2048, "student_hidden": 2048, "teacher_hidden": 4096, "vocab": 128256},
}
TINY_SHAPES = {
    "kl_div": {"rows": 16, "vocab": 300},
    "jsd": {"rows": 16, "vocab": 300},
    "tvd": {"rows": 16, "vocab": 300},
    "fused_linear_jsd": {"tokens": 24, "student_hidden": 16, "teacher_hidden": 32, "vocab": 300},
}


# ---------------------------------------------------------------------------------------------
# the eager code (what TRL computes without Liger); "compile" is torch.compile of these


def kl_div_eager(log_q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.kl_div(log_q, p, reduction="batchmean")


def _masked_mean(per_token: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    keep = labels != -100
    return (per_token * keep).sum() / keep.sum().clamp(min=1)


def jsd_eager(log_q: torch.Tensor, log_p: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """TRL's generalized_jsd_loss (beta in (0, 1)), token mean over the labels that are not -100."""
    log_m = torch.logsumexp(torch.stack([log_q + math.log(1 - BETA), log_p + math.log(BETA)]), dim=0)
    kl_p = torch.nn.functional.kl_div(log_m, log_p, reduction="none", log_target=True)
    kl_q = torch.nn.functional.kl_div(log_m, log_q, reduction="none", log_target=True)
    return _masked_mean((BETA * kl_p + (1 - BETA) * kl_q).sum(-1), labels)


def tvd_eager(p: torch.Tensor, q: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return _masked_mean(0.5 * (p - q).abs().sum(-1), labels)


def fused_linear_jsd_eager(xs, ws, xt, wt, labels):
    """Both lm_heads' full logits, temperature, log_softmax, then the JSD above."""
    log_q = torch.log_softmax(xs @ ws.T / TEMPERATURE, dim=-1)
    with torch.no_grad():
        log_p = torch.log_softmax(xt @ wt.T / TEMPERATURE, dim=-1)
    return jsd_eager(log_q, log_p, labels)


# ---------------------------------------------------------------------------------------------
# problems (benchmark/ops.py's Problem: fn(*args), differentiated with respect to wrt)


def build(op: str, arm: str, dims: dict[str, int], dtype: torch.dtype, device: torch.device):
    from benchmark.ops import Problem

    gen = torch.Generator(device="cpu").manual_seed(1234)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(device=device, dtype=dtype)

    module = None
    if arm in ("ours", "peer"):
        import liger_kernel.transformers as lt

        module = {
            "kl_div": lambda: lt.LigerKLDIVLoss(reduction="batchmean"),
            "jsd": lambda: lt.LigerJSD(beta=BETA),
            "tvd": lambda: lt.LigerTVDLoss(reduction="batchmean"),
            "fused_linear_jsd": lambda: lt.LigerFusedLinearJSD(jsd_beta=BETA, temperature=TEMPERATURE),
        }[op]()
    if op == "fused_linear_jsd":
        n, hs, ht, v = dims["tokens"], dims["student_hidden"], dims["teacher_hidden"], dims["vocab"]
        xs, ws = randn(n, hs).requires_grad_(), randn(v, hs, scale=hs**-0.5).requires_grad_()
        xt, wt = randn(n, ht), randn(v, ht, scale=ht**-0.5)
        args: tuple = (xs, ws, xt, wt, _labels(n, v, gen, device))
        wrt = {"student_input": xs, "student_weight": ws}
    else:
        n, v = dims["rows"], dims["vocab"]
        student = torch.log_softmax(randn(n, v).float(), -1).to(dtype).requires_grad_()
        teacher = torch.log_softmax(randn(n, v).float(), -1).to(dtype)
        if op == "kl_div":
            args = (student, teacher.exp())
        elif op == "tvd":
            student = student.detach().exp().requires_grad_()
            args = (student, teacher.exp(), _labels(n, v, gen, device))
        else:
            args = (student, teacher, _labels(n, v, gen, device))
        wrt = {"input": student}
    eager = {"kl_div": kl_div_eager, "jsd": jsd_eager, "tvd": tvd_eager}.get(op, fused_linear_jsd_eager)
    fn = module if module is not None else eager
    return Problem(fn=fn, args=args, wrt=wrt, grad_outputs=None, keep=[module])


def _labels(n: int, vocab: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    labels = torch.randint(0, vocab, (n,), generator=gen)
    labels[torch.rand(n, generator=gen) < IGNORE_FRACTION] = -100
    return labels.to(device)


# ---------------------------------------------------------------------------------------------
# one arm of one op, in its own process


def worker(op: str, arm: str, dims: dict[str, int], args: argparse.Namespace) -> dict[str, Any]:
    from benchmark.run import Timer, measure

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16
    result: dict[str, Any] = {"op": op, "arm": arm, "metrics": {}, "note": ""}
    if arm == "peer":
        try:
            result["liger_kernel"] = import_peer(args.peer_path)
        except Exception as exc:  # the peer's own imports failing: n/a
            result["note"] = f"n/a: {type(exc).__name__}: {exc}"[:200]
            return result
    notes = []
    if arm in ("ours", "peer"):
        notes.append(_check(op, arm, dims, dtype, device, args.check_tol))
    problem = build(op, arm, dims, dtype, device)
    if arm == "compile":
        backend = "inductor" if device.type == "cuda" else "aot_eager"
        problem.fn = torch.compile(problem.fn, backend=backend, dynamic=False)
    timer = Timer(device, args.warmup, args.rep, args.cpu_reps)
    try:
        measure(problem, device, timer, True, result["metrics"])
    except Exception as exc:  # out of memory, compile error...: the row says so
        notes.append(f"error: {type(exc).__name__}: {str(exc)[:160]}")
    result["note"] = "; ".join(notes)
    return result


def _check(
    op: str, arm: str, dims: dict[str, int], dtype: torch.dtype, device: torch.device, tol: float
) -> str:
    """'check=ok (...)' or 'check=FAIL (...)': the arm against the eager code in fp32, loss and gradients."""
    from benchmark.run import _first_pass, _free, _rel_l2

    try:
        expected = _first_pass(_in_fp32(build(op, "eager", dims, dtype, device)))
        actual = _first_pass(build(op, arm, dims, dtype, device))
    except Exception as exc:  # e.g. the fp32 eager pass running out of memory: time the arm anyway
        return f"check=error ({type(exc).__name__}: {str(exc)[:120]})"
    finally:
        _free(device)
    errors = {k: _rel_l2(actual[k], expected[k]) for k in expected}
    worst = max(errors, key=lambda k: (math.isnan(errors[k]), errors[k]))
    ok = all(e < tol for e in errors.values())
    return f"check={'ok' if ok else 'FAIL'} (worst rel L2 {errors[worst]:.1e} on {worst})"


def _in_fp32(problem):
    """The same problem on fp32 copies of its (bf16) inputs: the check's reference, as the bf16 eager
    code's own rounding (a divergence is a small difference of nearly equal terms) is not."""
    copies = {id(t): t.detach().float().requires_grad_(t.requires_grad) for t in problem.args if _is_float(t)}
    problem.args = tuple(copies.get(id(a), a) for a in problem.args)
    problem.wrt = {k: copies[id(t)] for k, t in problem.wrt.items()}
    return problem


def _is_float(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.is_floating_point()


def run_arm(op: str, arm: str, tiny: bool, args: argparse.Namespace) -> dict[str, Any]:
    env, why = child_env(args.peer_path if arm == "peer" else None)
    if env is None:
        return {"op": op, "arm": arm, "metrics": {}, "note": why}
    cmd = [sys.executable, "-m", "benchmark.distill", "--worker", op, arm, "--peer-path", args.peer_path]
    cmd += ["--warmup", str(args.warmup), "--rep", str(args.rep), "--cpu-reps", str(args.cpu_reps)]
    cmd += ["--check-tol", str(args.check_tol)] + (["--tiny"] if tiny else [])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=str(_REPO), timeout=args.timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        return {
            "op": op,
            "arm": arm,
            "metrics": {},
            "note": f"error (exit {proc.returncode}): {tail[0][:200]}",
        }
    return json.loads(lines[-1][len("RESULT ") :])


# ---------------------------------------------------------------------------------------------
# report


def _fmt(value: float | None, spec: str = ".3g") -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def print_table(results: list[dict[str, Any]]) -> None:
    header = (
        f"{'op':18s} {'arm':8s} | {'fwd ms':>8s} {'full ms':>8s} {'graph ms':>8s} {'peak MiB':>9s} | note"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        m = r["metrics"]
        print(
            f"{r['op']:18s} {r['arm']:8s} | {_fmt(m.get('fwd_ms')):>8s} {_fmt(m.get('full_ms')):>8s} "
            f"{_fmt(m.get('graph_ms')):>8s} {_fmt(m.get('peak_mib'), '.0f'):>9s} | {r['note']}"
        )


def write_csv(
    results: list[dict[str, Any]], out_dir: Path, shapes: dict[str, dict[str, int]], tag: str = ""
) -> Path:
    from benchmark.run import append_csv_rows, environment

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    env = environment(device, None)
    today = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d")
    path = out_dir / f"distill_{today}{'_' + tag if tag else ''}.csv"
    columns = ("op", "shape", "dtype", "provider", "metric", "value", "gpu", "torch", "triton",
               "transformers", "liger_kernel", "date", "note")  # fmt: skip
    rows = []
    for r in results:
        shape = "x".join(f"{k}={v}" for k, v in shapes[r["op"]].items())
        base = {"op": r["op"], "shape": shape, "dtype": "bfloat16", "provider": r["arm"], "note": r["note"]}
        if r["arm"] == "peer":
            base["liger_kernel"] = f"peer {r.get('liger_kernel', '0.8.5')}"
        metrics = r["metrics"] or {"full_ms": math.nan}
        rows += [{**base, "metric": k, "value": v} for k, v in metrics.items()]
    if path.exists():
        path.unlink()
    append_csv_rows(path, columns, env, rows)
    return path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmark.distill", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", default=",".join(SHAPES), help="comma-separated, from " + ",".join(SHAPES))
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated, from " + ",".join(ARMS))
    add_peer_path_argument(parser)
    parser.add_argument("--out", default=os.environ.get("OUT") or str(_REPO / "benchmark" / "results"))
    parser.add_argument("--tag", default="", help="CSV name distill_<date>_<tag>.csv (one per subset of ops)")
    parser.add_argument("--tiny", action="store_true", help="small shapes (CPU + interpreter without CUDA)")
    parser.add_argument("--warmup", type=int, default=200, help="do_bench warmup ms")
    # (1 s: several timed passes of these 10-200 ms losses; 100 ms would time one or two)
    parser.add_argument("--rep", type=int, default=1000, help="do_bench rep ms")
    parser.add_argument("--cpu-reps", type=int, default=2, help="timed repetitions per metric on CPU")
    parser.add_argument("--check-tol", type=float, default=2e-2, help="max relative L2 error against eager")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per arm")
    parser.add_argument("--worker", nargs=2, metavar=("OP", "ARM"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    shapes = TINY_SHAPES if args.tiny else SHAPES
    if args.worker:
        op, arm = args.worker
        if arm == "peer":  # ahead of the repository (the working directory, first on sys.path under -m)
            sys.path.insert(0, str(Path(args.peer_path).resolve()))
        print("RESULT " + json.dumps(worker(op, arm, shapes[op], args)), flush=True)
        return 0
    if not torch.cuda.is_available() and not args.tiny:
        print("no CUDA device: only --tiny runs on the CPU", file=sys.stderr)
        return 2
    ops = [o for o in args.ops.split(",") if o]
    arms = [a for a in args.arms.split(",") if a]
    bad = [o for o in ops if o not in SHAPES] + [a for a in arms if a not in ARMS]
    if bad:
        print(f"unknown ops/arms: {bad}", file=sys.stderr)
        return 2
    results = []
    for op in ops:
        for arm in arms:
            print(f"{op} / {arm} ...", flush=True)
            results.append(run_arm(op, arm, args.tiny, args))
    print()
    print_table(results)
    path = write_csv(results, Path(args.out), shapes, args.tag)
    print(f"\nCSV: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
