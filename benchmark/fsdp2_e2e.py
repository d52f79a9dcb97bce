"""FSDP2 training throughput and peak memory per GPU, unpatched against patched, in one run.

    torchrun --nproc-per-node 2 -m benchmark.fsdp2_e2e --preset llama3-8b --batches 2,4,8 \
        [--optimizer] [--out benchmark/results/fsdp2_<preset>_<date>.csv]

Every rank builds the preset's Llama model with random weights from one seed (bf16, directly on its
GPU), patches it for the ``patched`` arm (``apply_liger_kernel_to_llama(model=model)``, before
sharding), then shards it with ``fully_shard``: one FSDP group per decoder layer plus the root, which
keeps embeddings, final norm and lm_head (the fused loss reads ``lm_head.weight`` in the root's
forward). For each per-rank batch in ``--batches`` (ascending) it times ``--steps`` steps of
``model(input_ids, labels).loss.backward()`` (kind ``fwd_bwd``), or with ``--optimizer`` whole training
steps with AdamW (kind ``train_step``; the optimizer state is allocated in the first batch's warm-up, so
every batch's peak includes it), after ``--warmup`` steps, and records per arm and batch:
    <kind>_ms           median step time (rank 0's clock; every step ends with the ranks' collectives);
    <kind>_tokens_per_s global tokens (ranks x batch x seq) / step time;
    <kind>_peak_gib     the largest ``max_memory_allocated`` over the ranks, per GPU;
    <kind>_loss         first step's loss, averaged over ranks (sanity: the arms agree).
The first batch that runs out of memory on any rank ends that arm (the ranks agree through an
all-reduce of the outcome of each step, so none is left waiting in a collective) and is recorded
with note "OOM". Without CUDA it runs on gloo with Triton's interpreter (``--preset tiny`` only): a
check of the harness, not a measurement.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports liger_kernel
os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast stays off (device notes)

import torch.distributed as dist  # noqa: E402
from torch.distributed.fsdp import fully_shard  # noqa: E402

from benchmark.e2e import PRESETS, build_model, write_rows  # noqa: E402
from benchmark.run import _REPO, _short, _sync, environment  # noqa: E402

ARMS = ("unpatched", "patched")


class _Oom(Exception):
    pass


def _agree(ok: bool, device: torch.device) -> bool:
    """True on every rank only if ``ok`` on every rank."""
    flag = torch.tensor([1.0 if ok else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() == 1.0)


def _max_over_ranks(value: float, device: torch.device) -> float:
    t = torch.tensor([value], device=device, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def _mean_over_ranks(value: float, device: torch.device) -> float:
    t = torch.tensor([value], device=device, dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def shard(model: torch.nn.Module) -> None:
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)


def _step(model, optimizer, ids) -> float:
    """One step; raises _Oom on every rank if any rank ran out of memory."""
    ok, loss_value = True, math.nan
    try:
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        loss_value = float(loss.detach())
        del loss
    except torch.cuda.OutOfMemoryError:
        ok = False
    if not _agree(ok, ids.device):
        model.zero_grad(set_to_none=True)
        raise _Oom
    return loss_value


def measure(model, optimizer, ids, args, prefix: str, values: dict[str, float]) -> None:
    device = ids.device
    for i in range(max(args.warmup, 1)):
        model.zero_grad(set_to_none=True)
        loss = _step(model, optimizer, ids)
        if i == 0:
            values[f"{prefix}_loss"] = _mean_over_ranks(loss, device)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.steps):
        model.zero_grad(set_to_none=True)
        dist.barrier()
        _sync(device)
        start = time.perf_counter()
        _step(model, optimizer, ids)
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    ms = _max_over_ranks(statistics.median(times), device)
    values[f"{prefix}_ms"] = ms
    values[f"{prefix}_tokens_per_s"] = dist.get_world_size() * ids.numel() / (ms / 1e3)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        values[f"{prefix}_peak_gib"] = _max_over_ranks(peak, device)


def run_arm(
    arm: str, args: argparse.Namespace, device: torch.device
) -> list[tuple[int, dict[str, float], str]]:
    preset = PRESETS[args.preset]
    model = build_model(preset, device, args.attn)
    if arm == "patched":
        from liger_kernel.transformers import apply_liger_kernel_to_llama

        apply_liger_kernel_to_llama(model=model)
    shard(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5) if args.optimizer else None
    out = []
    try:
        for batch in args.batches:
            values: dict[str, float] = {}
            g = torch.Generator(device="cpu").manual_seed(4321 + dist.get_rank())
            ids = torch.randint(0, preset.config["vocab_size"], (batch, args.seq), generator=g).to(device)
            note = f"ranks={dist.get_world_size()}"
            try:
                measure(model, optimizer, ids, args, "train_step" if optimizer else "fwd_bwd", values)
            except _Oom:
                out.append((batch, values, note + "; OOM"))
                break
            out.append((batch, values, note))
            del ids
    finally:
        del model, optimizer
        if arm == "patched":
            from liger_kernel.transformers import unpatch

            unpatch()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.fsdp2_e2e", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="llama3-8b")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument(
        "--batches", default=None, help="per-rank batch sizes, ascending (default: the preset's)"
    )
    parser.add_argument("--seq", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--optimizer", action="store_true")
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument("--liger-version", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    args.batches = sorted(int(b) for b in (args.batches or str(preset.batch)).split(","))
    args.seq = args.seq or preset.seq
    args.warmup = preset.warmup if args.warmup is None else args.warmup
    args.steps = preset.steps if args.steps is None else args.steps
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if any(a not in ARMS for a in arms):
        print(f"unknown arms {arms} (known: {','.join(ARMS)})", file=sys.stderr)
        return 2

    on_gpu = torch.cuda.is_available()
    if not on_gpu and args.preset != "tiny":
        print("no CUDA device: only --preset tiny runs on CPU", file=sys.stderr)
        return 2
    if on_gpu:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if on_gpu else "gloo", timeout=_dt.timedelta(minutes=10))
    device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
    rank0 = dist.get_rank() == 0
    try:
        env = environment(device, args.liger_version)
        today = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d")
        out = Path(args.out or _REPO / "benchmark" / "results" / f"fsdp2_{args.preset}_{today}.csv")
        if rank0:
            print(f"{env['gpu']} x {dist.get_world_size()}; preset {args.preset}; batches per rank {args.batches}; "
                  f"seq {args.seq}; writing {out}", flush=True)  # fmt: skip
        for arm in arms:
            try:
                results = run_arm(arm, args, device)
            except Exception as exc:  # a failed arm is recorded; the next one still runs
                results = [(args.batches[0], {}, f"error: {_short(exc)}")]
            for batch, values, note in results:
                if rank0:
                    kind = "train_step" if args.optimizer else "fwd_bwd"
                    names = [f"{kind}_{m}" for m in ("ms", "tokens_per_s", "peak_gib", "loss")]
                    rows = [
                        {"arm": arm, "preset": args.preset, "batch": batch, "seq": args.seq, "metric": m,
                         "value": values.get(m, math.nan), "note": note}
                        for m in names
                    ]  # fmt: skip
                    write_rows(out, env, rows)
                    got = "  ".join(f"{k}={v:.4g}" for k, v in values.items())
                    print(f"{arm:10s} batch {batch}: {got}  {note}", flush=True)
        # No rank tears gloo down while another still talks to it (as tests/scale/_fsdp2_worker.py).
        # Not in `finally`: after an exception on one rank the others would wait here forever.
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    status = main()
    # Leave without the interpreter's teardown: a gloo worker thread, which FSDP2 keeps alive past
    # destroy_process_group(), can free a collective's tensor while the interpreter finalises and abort
    # the rank after its work is done (the mechanism is in examples/train_fsdp2.py).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
