"""The dW-update GEMM prototype (``benchmark/proto_dw_gemm.py``) computes dW (+)= g^T x, so that its
GPU timings are of a correct kernel. Ragged shapes exercise every mask; an even K the unmasked loop."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def proto(benchmark_module):
    return benchmark_module("proto_dw_gemm")


@pytest.mark.parametrize("m, n, k", [(96, 64, 40), (130, 70, 128)])
def test_dw_update_matches_the_fp32_product(proto, device, m, n, k):
    # fp32 on CPU (the interpreter's bf16 arithmetic is not the GPU's), bf16 on a GPU.
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    err = proto.check(m, n, k, dtype, device, block_m=32, block_n=32, block_k=16, num_warps=4)
    # In units of eps * (sum of |terms|): a sum of k + 1 terms in fp32 is off by at most (k + 1) * eps/2
    # of that, and the output's rounding by eps/2 more. A wrong tile or k-step is ~1e5 units off.
    assert err <= (k + 2) / 2


def test_dw_update_names_bad_shapes(proto, device):
    g, x = torch.zeros(8, 16, device=device), torch.zeros(8, 4, device=device)
    with pytest.raises(ValueError, match="dw"):
        proto.dw_update(g, x, torch.zeros(4, 16, device=device), accumulate=True)
