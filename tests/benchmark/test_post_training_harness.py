"""benchmark/post_training.py on CPU: its eager arms (the loss as TRL computes it without Liger) and our
chunked losses give the same loss and gradients on the benchmark's own inputs, so the timed arms compute
the same thing; and the child-process arm reports n/a without a 0.8.5 checkout."""

import argparse

import torch

from liger_testing import assert_close


def test_eager_arms_match_ours(benchmark_module):
    bench = benchmark_module("post_training")
    ours = bench.chunked_fns()
    device = torch.device("cpu")
    for workload, eager in (("dpo", bench.eager_dpo), ("grpo", bench.eager_grpo)):
        results = []
        for fn in (eager, ours[workload]):
            problem = bench.build(workload, fn, bench.TINY, device)
            results.append(bench._first_pass(problem))
        # bf16 inputs: the same bf16 logits, then fp32 math in a different order
        assert_close(results[1], results[0], atol=2e-2, rtol=2e-2, msg=workload)


def test_peer_arm_is_na_without_a_checkout(benchmark_module, tmp_path):
    bench = benchmark_module("post_training")
    args = argparse.Namespace(peer_path=str(tmp_path / "missing"), tiny=True)
    result = bench.run_child(args, bench.TINY, ["dpo"])
    assert result["dpo"]["note"].startswith("n/a")
