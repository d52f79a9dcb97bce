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
    # --json - : the JSON alone on standard output, the report on standard error
    args = ["--model", "llama", "--steps", "3", "--batch-size", "2", "--seq-len", "8", "--json", "-"]
    try:
        import matplotlib  # noqa: F401

        args += ["--plot", str(tmp_path / "run.png")]
    except ImportError:
        pass
    proc = _converge(*args, device=device)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = proc.stderr
    assert "RESULT: PASS" in report
    assert "liger_kernel.transformers:apply_liger_kernel_to_llama" in report
    # what a user changed, readably: no private attributes, no chains of "wrapper of"
    assert "_replicate_for_data_parallel" not in report and "wrapper of" in report
    assert "of wrapper of" not in " ".join(report.split())
    start = report.index("liger_testing convergence:")
    assert max(len(line) for line in report[start:].splitlines()) <= 120
    data = json.loads(proc.stdout)
    assert data["schema_version"] == 1 and data["interrupted"] is False
    assert data["passed"] is True and data["first_divergence"] is None
    assert [s["step"] for s in data["steps"]] == [1, 2, 3]
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
    assert "RESULT: DIVERGED at step 1" in proc.stdout  # steps count from 1, as in the progress lines
    data = json.loads(out.read_text())
    assert data["passed"] is False and data["first_divergence"]["step"] == 1
    bad_grads = [n for n, q in data["quantities"].items() if n.startswith("grad/") and q["ratio"][0] > 1]
    assert "grad/model.embed_tokens.weight" in bad_grads, bad_grads


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "no-such-model"], "not registered"),
        (["--patch", "no_such_module:patch"], "cannot import"),
        (["--patch", "_planted_patches:noop_patch", "--undo", "none", "--steps", "1"], "changed nothing"),
    ],
    ids=["unknown-model", "bad-patch-path", "patch-does-nothing"],
)
def test_cli_exits_2_for_runs_it_cannot_judge(args, message, device):
    proc = _converge(*args, "--batch-size", "2", "--seq-len", "8", device=device)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--steps", "0"], "argument --steps: must be at least 1, got 0"),
        (["--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
        (["--seq-len", "1"], "argument --seq-len: must be at least 2, got 1"),
        (["--seq-len", "100000"], "--seq-len 100000: the llama spec's model has 512 positions"),
        (["--top-k", "0"], "argument --top-k: must be at least 1, got 0"),
        (["--noise-factor", "-1"], "argument --noise-factor: must be a finite number > 0, got -1"),
        (["--noise-factor", "nan"], "argument --noise-factor: must be a finite number > 0, got nan"),
        (["--floor-ulps", "-1"], "argument --floor-ulps: must be a finite number >= 0, got -1"),
        (["--lr", "0"], "argument --lr: must be a finite number > 0, got 0"),
        (["--dtype", "int8"], "argument --dtype: unsupported dtype 'int8'"),
        (["--dtype", "fp64"], "argument --dtype: float64 is the reference arm's dtype"),
        (["--device", "cuda:99"], "--device 'cuda:99'"),
    ],
)
def test_cli_rejects_bad_arguments_with_the_flag_name(args, message):
    proc = subprocess.run(
        [sys.executable, "-m", "liger_testing.converge", *args], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    # (a check that needs torch or the model's config comes after the "building ..." line)
    assert any(line.startswith("usage: python -m liger_testing.converge") for line in lines), lines
    assert message in lines[-1], lines[-1]
    assert not proc.stdout


def test_cli_accepts_dtype_aliases_and_answers_help_without_torch():
    code = (
        "import sys\n"
        "from liger_testing.convergence.cli import build_parser, main\n"
        "assert [build_parser().parse_args(['--dtype', a]).dtype for a in ('bf16', 'fp32', 'fp16', 'torch.bfloat16')]"
        " == ['bfloat16', 'float32', 'float16', 'bfloat16']\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "assert 'torch' not in sys.modules, 'help imported torch'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--dtype" in proc.stdout


def test_ctrl_c_reports_the_steps_done_and_exits_130(device):
    import signal

    env = dict(os.environ)
    proc = subprocess.Popen(
        [sys.executable, "-m", "liger_testing.converge", "--device", device, "--model", "llama"]
        + ["--steps", "200", "--batch-size", "1", "--seq-len", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # a shell without job control starts background jobs with SIGINT ignored, and the child would
        # inherit that (Python then installs no KeyboardInterrupt handler): give it the default, as a
        # terminal's foreground process has
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        for line in proc.stderr:  # progress lines go to standard error
            if line.startswith("step "):
                proc.send_signal(signal.SIGINT)
                break
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err
    assert "RESULT: INTERRUPTED after" in out and "of 200 steps" in out


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
