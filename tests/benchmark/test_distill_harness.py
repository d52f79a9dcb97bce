"""benchmark/distill.py: its eager arms compute the same losses as ours (so the timings compare like with
like), its check reference runs in fp32, and one worker runs end to end on tiny shapes."""

import argparse

import pytest
import torch


def test_eager_arms_match_ours(benchmark_module, device):
    distill = benchmark_module("distill")
    small = {"rows": 4, "vocab": 40, "tokens": 4, "student_hidden": 8, "teacher_hidden": 12}
    for op, tiny in distill.TINY_SHAPES.items():
        dims = {k: small[k] for k in tiny}
        eager = distill.build(op, "eager", dims, torch.float32, device)
        ours = distill.build(op, "ours", dims, torch.float32, device)
        want = eager.fn(*eager.args)
        got = ours.fn(*ours.args)
        torch.testing.assert_close(got.float(), want.float(), rtol=1e-4, atol=1e-6, msg=op)


def test_check_reference_is_fp32(benchmark_module, device):
    distill = benchmark_module("distill")
    problem = distill._in_fp32(
        distill.build("jsd", "eager", distill.TINY_SHAPES["jsd"], torch.bfloat16, device)
    )
    assert all(t.dtype == torch.float32 for t in problem.wrt.values())
    assert problem.wrt["input"] is problem.args[0] and problem.args[0].requires_grad


@pytest.mark.parametrize("arm", ["ours"])
def test_worker_measures_and_checks(benchmark_module, arm):
    distill = benchmark_module("distill")
    args = argparse.Namespace(peer_path="", warmup=1, rep=1, cpu_reps=1, check_tol=2e-2)
    result = distill.worker("tvd", arm, {"rows": 3, "vocab": 40}, args)
    assert result["note"].startswith("check=ok"), result["note"]
    assert result["metrics"]["full_ms"] > 0
