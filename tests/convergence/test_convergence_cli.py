"""``python -m liger_testing.converge``: exit status, report, JSON and plot (run as a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.convergence

HERE = Path(__file__).resolve().parent


def _converge(*args: str, device: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])  # for _planted_patches
    return subprocess.run(
        [sys.executable, "-m", "liger_testing.converge", "--device", device, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def test_cli_passes_with_the_liger_patch_and_writes_json_and_plot(tmp_path, device):
    out = tmp_path / "run.json"
    args = ["--model", "llama", "--steps", "3", "--batch-size", "2", "--seq-len", "8", "--json", str(out)]
    try:
        import matplotlib  # noqa: F401

        args += ["--plot", str(tmp_path / "run.png")]
    except ImportError:
        pass
    proc = _converge(*args, device=device)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "RESULT: PASS" in proc.stdout
    assert "liger_kernel.transformers:apply_liger_kernel_to_llama" in proc.stdout
    data = json.loads(out.read_text())
    assert data["passed"] is True and data["first_divergence"] is None
    assert data["config"]["steps"] == 3 and data["config"]["dtype"] == "float32"
    assert len(data["steps"]) == 3 and set(data["steps"][0]["loss"]) == {"unpatched", "patched", "reference"}
    assert "param/model.norm.weight" in data["quantities"]
    assert set(data["layers"]) >= {"embeddings", "layer 0", "layer 1"}
    if "--plot" in args:
        png = (tmp_path / "run.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_cli_exits_1_when_the_arms_diverge(tmp_path, device):
    out = tmp_path / "bad.json"
    proc = _converge(
        "--model", "llama", "--steps", "2", "--batch-size", "2", "--seq-len", "8",
        "--patch", "_planted_patches:grad_scale_patch", "--undo", "none", "--json", str(out), "--quiet",
        device=device,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "RESULT: DIVERGED at step 0" in proc.stdout
    data = json.loads(out.read_text())
    assert data["passed"] is False and data["first_divergence"]["step"] == 0
    bad_grads = [n for n, q in data["quantities"].items() if n.startswith("grad/") and q["ratio"][0] > 1]
    assert "grad/model.embed_tokens.weight" in bad_grads, bad_grads


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "no-such-model"], "not registered"),
        (["--patch", "no_such_module:patch"], "cannot import"),
        (["--patch", "_planted_patches:noop_patch", "--undo", "none", "--steps", "1"], "changed nothing"),
        (["--steps", "0"], "steps must be at least 1"),
    ],
    ids=["unknown-model", "bad-patch-path", "patch-does-nothing", "zero-steps"],
)
def test_cli_exits_2_for_runs_it_cannot_judge(args, message, device):
    proc = _converge(*args, "--batch-size", "2", "--seq-len", "8", device=device)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr


def test_cli_lists_the_specs():
    proc = subprocess.run(
        [sys.executable, "-m", "liger_testing.converge", "--list"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    for model in ("llama", "mistral", "mixtral", "gemma", "gemma2", "qwen2", "phi3"):
        assert model in proc.stdout


def test_liger_testing_never_imports_liger_kernel():
    code = (
        "import sys\n"
        "import liger_testing, liger_testing.convergence, liger_testing.converge\n"
        "from liger_testing.convergence import get_spec, available_specs\n"
        "[get_spec(m) for m in available_specs()]\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'liger_kernel')\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
