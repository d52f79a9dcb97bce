"""The example scripts run as documented, with their small defaults (smoke test: exit code and output)."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys

import pytest
import torch

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def _run(cmd: list[str], device: str) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", NCCL_NVLS_ENABLE="0")
    if device == "cpu":
        env["TRITON_INTERPRET"] = "1"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_train_trainer_example(device):
    out = _run([sys.executable, str(EXAMPLES / "train_trainer.py"), "--steps", "2"], device)
    assert "trained 2 steps" in out and "LigerLlamaRMSNorm" in out


def test_train_fsdp2_example_under_torchrun(device):
    if device == "cuda" and torch.cuda.device_count() < 2:
        pytest.skip("needs 2 GPUs")
    with socket.socket() as s:  # a free port: torchrun's static rendezvous does not take port 0
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}"]
    out = _run([*torchrun, str(EXAMPLES / "train_fsdp2.py"), "--steps", "2"], device)
    assert "step 2/2" in out
