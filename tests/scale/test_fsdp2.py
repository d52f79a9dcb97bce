"""FSDP2 (``torch.distributed.fsdp.fully_shard``) training of a Liger-patched tiny llama on 2 ranks.

What this covers: the patched RMSNorm, fused SwiGLU MLP, RoPE and fused linear cross entropy run on
parameters gathered by FSDP2 (per-layer groups resharded after forward; the root group with
embeddings, final norm and lm_head), gradients are reduce-scattered, and after 3 AdamW steps the
per-step global loss and every (gathered) parameter equal single-process training of the same
patched model on the concatenated global batch, in float32 within liger_testing's tolerances.
On CPU: 2 processes on gloo with Triton's interpreter; on CUDA: NCCL, one process per GPU (skipped
with fewer than 2 GPUs).

Memory (``test_fsdp2_kernels_keep_no_gathered_weight``): between forward and backward, every saved
tensor of a sharded weight's full shape is FSDP's own all-gather buffer (storage freed by the reshard,
so the kernels pin no gathered weight between forward and backward; a ``.contiguous()`` or transposed
copy kept by a wrapper would be caught), the only live full-size tensor is the lm_head weight gradient
the fused linear cross entropy computes in the forward (by design), and after backward nothing that
autograd saved (our custom ops' contexts included) is still alive.

Not covered: mixed precision (MixedPrecisionPolicy), CPU offload, tensor/sequence parallelism, more
than 2 ranks, activation checkpointing, and sharding lm_head as its own FSDP group (the fused loss
reads ``lm_head.weight`` without calling the module, so lm_head must stay in the group of the module
whose forward runs the loss: the root here).
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
from collections import Counter

import _fsdp2_worker as W
import pytest
import torch

from liger_testing import assert_close

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory, device):
    if device == "cuda" and torch.cuda.device_count() < WORLD:
        pytest.skip(f"FSDP2 on CUDA needs {WORLD} GPUs")
    out = tmp_path_factory.mktemp("fsdp2") / "rank0.pt"
    env = dict(os.environ, WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    env.update(NCCL_NVLS_ENABLE="0", OMP_NUM_THREADS="1", LIGER_TEST_DEVICE=device)
    if device == "cpu":
        env["TRITON_INTERPRET"] = "1"  # in the children's env before they import liger_kernel
    worker = pathlib.Path(W.__file__)
    procs = [
        subprocess.Popen(
            [sys.executable, str(worker), str(out)],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(WORLD)
    ]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=300)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for r, p in enumerate(procs):
        assert p.returncode == 0, f"rank {r} exited with {p.returncode}:\n{logs[r][-4000:]}"
    return torch.load(out)


def _single_process_reference(device: str):
    """The same patched model, unsharded, on the concatenation of the ranks' batches."""
    model = W.build_patched_llama(device)
    opt = W.make_optimizer(model.parameters())
    losses = []
    for step in range(W.STEPS):
        parts = W.batches(WORLD, step, device)
        ids, mask, labels = (torch.cat(t) for t in zip(*parts))
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses, {n: p.detach().cpu() for n, p in model.named_parameters()}


def test_fsdp2_training_matches_single_process(fsdp_run, device):
    losses, params = _single_process_reference(device)
    assert_close(torch.tensor(fsdp_run["losses"]), torch.tensor(losses), msg="per-step global loss")
    assert_close(fsdp_run["params"], params, msg="parameters after 3 AdamW steps")
    # the steps did train: parameters moved away from the initial weights
    init = {n: p.detach().cpu() for n, p in W.build_patched_llama(device).named_parameters()}
    assert all(not torch.equal(fsdp_run["params"][n], init[n]) for n in init)


def test_fsdp2_kernels_keep_no_gathered_weight(fsdp_run):
    saved = fsdp_run["saved"]
    hidden, inter = 32, 48
    assert saved["live_copy_of_weight"] == [], "a full copy of a gathered weight was kept for backward"
    freed = Counter(saved["freed_alias"])
    # per layer: LigerSwiGLUMLP saves gate/up (48, 32) and down (32, 48), LigerRMSNorm two (32,) weights,
    # all as FSDP's gathered tensors (freed after forward, re-gathered for backward)
    assert freed[(inter, hidden)] >= 2 * 2 and freed[(hidden, inter)] >= 2 and freed[(hidden,)] >= 2 * 2
    # the root group stays gathered: the final norm's weight, saved as the parameter itself
    assert saved["live_alias"] == [(hidden,)]
    # the only live full-size tensor: the fused linear cross entropy's lm_head gradient, computed in the
    # forward (what that kernel trades for never materialising the logits)
    assert saved["live_other"] == [(96, hidden)]
    assert saved["alive_after_backward"] == 0, "autograd still holds saved tensors after backward"
