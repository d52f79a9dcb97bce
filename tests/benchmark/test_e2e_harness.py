"""The end-to-end benchmark harness on CPU (tiny preset): it runs, writes a CSV a report can read, and
refuses to merge runs of different shapes. It checks the harness, not the speed."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import torch

_REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def e2e(benchmark_module):
    return benchmark_module("e2e")


def test_tiny_run_writes_a_csv_the_report_reads(e2e, tmp_path, device):
    if device != "cpu":
        pytest.skip("the tiny preset checks the harness on CPU")
    out = tmp_path / "tiny.csv"
    assert e2e.main(["--preset", "tiny", "--arms", "eager,liger", "--steps", "1", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert {r["arm"] for r in rows} == {"eager", "liger"}
    assert {(r["batch"], r["seq"]) for r in rows} == {("2", "32")}
    preset, results, info = e2e.load_csvs([out])
    assert preset == "tiny" and info["batch"] == "2"
    for arm in ("eager", "liger"):
        assert results[arm].values["fwd_bwd_ms"] > 0, results[arm].note
    # both arms start from the same weights and data: the first losses agree
    assert results["eager"].values["fwd_bwd_loss"] == pytest.approx(
        results["liger"].values["fwd_bwd_loss"], rel=1e-4
    )
    assert "liger modules=" in results["liger"].note

    other = tmp_path / "other.csv"
    with out.open() as src, other.open("w", newline="") as dst:
        reader = csv.DictReader(src)
        writer = csv.DictWriter(dst, fieldnames=reader.fieldnames)
        writer.writeheader()
        for row in reader:
            writer.writerow({**row, "batch": "8"})
    with pytest.raises(ValueError, match="differs from the earlier files"):
        e2e.load_csvs([out, other])


_FAKE_PEER = """
import types


def _forward(self, *args, **kwargs):  # the model's own forward, reached through the patch
    return type(self).forward(self, *args, **kwargs)


def apply_liger_kernel_to_llama(model=None, **kwargs):
    model.forward = types.MethodType(_forward, model)
"""


def test_peer_arm_runs_the_release_in_a_child(e2e, tmp_path, device):
    """The liger085 arm imports the release from --peer-path in a child process, patches the model
    through its ``apply_liger_kernel_to_<type>(model=...)``, and its rows carry the release's version.
    A stand-in release whose patch wraps the model's forward."""
    if device != "cpu":
        pytest.skip("the tiny preset checks the harness on CPU")
    peer = tmp_path / "peer"
    (peer / "liger_kernel" / "transformers").mkdir(parents=True)
    (peer / "liger_kernel" / "__init__.py").write_text("")
    (peer / "liger_kernel" / "transformers" / "__init__.py").write_text(_FAKE_PEER)
    (peer / "liger_kernel-0.0.1.dist-info").mkdir()
    out = tmp_path / "peer.csv"
    argv = ["--preset", "tiny", "--arms", "eager,liger085", "--steps", "1", "--out", str(out)]
    assert e2e.main([*argv, "--peer-path", str(peer)]) == 0
    rows = [r for r in csv.DictReader(out.open()) if r["arm"] == "liger085"]
    assert rows and {r["liger_kernel"] for r in rows} == {"peer 0.0.1"}
    _, results, _ = e2e.load_csvs([out])
    peer_arm = results["liger085"]
    assert "liger_kernel 0.0.1" in peer_arm.note and "liger modules=1" in peer_arm.note, peer_arm.note
    assert peer_arm.values["fwd_bwd_loss"] == pytest.approx(results["eager"].values["fwd_bwd_loss"], rel=1e-6)

    # without the release at --peer-path the arm says so and the run goes on
    missing = tmp_path / "missing.csv"
    assert e2e.main([*argv[:-1], str(missing), "--peer-path", str(tmp_path / "none")]) == 0
    _, results, _ = e2e.load_csvs([missing])
    assert "no liger_kernel package" in results["liger085"].note


def test_fsdp2_harness_on_two_cpu_ranks(e2e, tmp_path, device):
    """benchmark.fsdp2_e2e (the 2-GPU run of issue 9) on gloo: both arms, same first loss."""
    if device != "cpu":
        pytest.skip("the tiny preset checks the harness on CPU")
    import os
    import subprocess

    out = tmp_path / "fsdp2.csv"
    env = dict(os.environ, OMP_NUM_THREADS="1", TRITON_INTERPRET="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += [
        "-m",
        "benchmark.fsdp2_e2e",
        "--preset",
        "tiny",
        "--batches",
        "2",
        "--steps",
        "1",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=_REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = list(csv.DictReader(out.open()))
    loss = {r["arm"]: float(r["value"]) for r in rows if r["metric"] == "fwd_bwd_loss"}
    assert set(loss) == {"unpatched", "patched"}
    assert loss["patched"] == pytest.approx(loss["unpatched"], rel=1e-4)
    assert all(r["note"] == "ranks=2" for r in rows)


@pytest.mark.parametrize("preset", ["tiny-qwen3", "tiny-qwen3-moe", "tiny-gemma3-text"])
def test_issue20_presets_build_and_patch_the_model_type_they_name(e2e, preset, device):
    """The tiny twins of qwen3-8b, qwen3-moe-30b-a3b-12l and gemma3-4b-text build the model type the
    GPU presets use, and the liger arm's patch takes (the full run is the llama tiny test's harness)."""
    from liger_kernel.transformers import unpatch
    from liger_kernel.transformers.monkey_patch import apply_liger_kernel

    spec = e2e.PRESETS[preset]
    big = {
        "tiny-qwen3": "qwen3-8b",
        "tiny-qwen3-moe": "qwen3-moe-30b-a3b-12l",
        "tiny-gemma3-text": "gemma3-4b-text",
    }
    assert e2e.PRESETS[big[preset]].model_type == spec.model_type
    model = e2e.build_model(spec, torch.device(device), "eager")
    assert model.config.model_type == spec.model_type
    apply_liger_kernel(spec.model_type, model=model)
    try:
        assert sum(type(m).__module__.startswith("liger_kernel") for m in model.modules()) > 0
    finally:
        unpatch(model)
