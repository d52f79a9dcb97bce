"""gpt-oss's clamped GLU against the model's own ``GptOssExperts._apply_gate``.

Reference-error mode: the kernel's error against the same code in float64 (on the same rounded inputs)
may be at most twice the error of that code run in the kernel's dtype, for the output and the gradient
of the interleaved gate_up. Values reach past the clamp limit on both sides, and some sit exactly on it
(where ``torch.clamp`` passes the gradient), so the clamp's zero gradient is checked too.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from liger_kernel.ops.gpt_oss_glu import gpt_oss_glu
from liger_testing import assert_close_to_reference
from liger_testing import strategies as lst

GptOssExperts = pytest.importorskip("transformers.models.gpt_oss.modeling_gpt_oss").GptOssExperts


def model_gate(gate_up: torch.Tensor, alpha: float, limit: float) -> torch.Tensor:
    """The model's own code (its ``_apply_gate`` reads only ``self.alpha`` and ``self.limit``)."""
    return GptOssExperts._apply_gate(SimpleNamespace(alpha=alpha, limit=limit), gate_up)


def _run(fn, x: torch.Tensor, dy: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    leaf = x.to(dtype).detach().requires_grad_()
    y = fn(leaf)
    y.backward(dy.to(dtype))
    return y.detach(), leaf.grad


def _check(x: torch.Tensor, dtype: torch.dtype, alpha: float, limit: float) -> None:
    x = x.to(dtype)  # the inputs all three arms see
    dy = torch.randn((*x.shape[:-1], x.shape[-1] // 2), generator=torch.Generator().manual_seed(3)).to(
        x.device
    )
    ours = _run(lambda t: gpt_oss_glu(t, alpha, limit), x, dy, dtype)
    reference = _run(lambda t: model_gate(t, alpha, limit), x, dy, dtype)
    golden = _run(lambda t: model_gate(t, alpha, limit), x.double(), dy.to(dtype).double(), torch.float64)
    assert ours[0].dtype == dtype and ours[1].shape == x.shape
    assert_close_to_reference(ours, reference, golden, msg=f"gpt_oss_glu {dtype}")


# Values in [-12, 12] with the default limit 7: both clamps bind often; widths hit one column block's
# edge (BLOCK_N up to 1024 pairs) and several row blocks.
@given(
    lead=lst.shapes(min_dims=1, max_dims=2, min_side=1, max_side=6),
    pairs=lst.dims(min_value=1, max_value=80),
    dtype=lst.dtypes(),
    alpha=st.sampled_from([1.702, 1.0]),
    limit=st.sampled_from([7.0, 2.5]),
    data=st.data(),
)
def test_matches_the_model_code(device, lead, pairs, dtype, alpha, limit, data):
    x = data.draw(lst.tensors((*lead, 2 * pairs), dtype, device=device, low=-12.0, high=12.0))
    _check(x, dtype, alpha, limit)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_values_on_and_past_the_limit(device, dtype):
    """The gradient passes at g == limit and u == +-limit (torch.clamp's rule) and is 0 past them."""
    limit = 7.0
    g = torch.tensor([limit, limit + 1, -20.0, 0.5, 3.0])
    u = torch.tensor([-limit, limit, limit + 0.5, -limit - 2, 0.25])
    x = torch.stack((g, u), dim=-1).reshape(1, -1).to(device)
    _check(x, dtype, 1.702, limit)
    _, dx = _run(lambda t: gpt_oss_glu(t, 1.702, limit), x, torch.ones(1, 5, device=device), dtype)
    dg, du = dx[0, 0::2], dx[0, 1::2]
    assert dg[0] != 0 and dg[1] == 0  # on the limit: passes; past it: clamped
    assert du[0] != 0 and du[1] != 0 and du[2] == 0 and du[3] == 0


def test_several_tiles(device):
    """More pairs than one column block (1024) and rows than one row block."""
    x = (torch.randn(9, 2 * 1100) * 5).to(device)
    _check(x, torch.float32, 1.702, 7.0)


def test_bad_input():
    with pytest.raises(ValueError, match="last dim must be even"):
        gpt_oss_glu(torch.zeros(2, 5))
    with pytest.raises(TypeError, match="gate_up must be a floating-point tensor"):
        gpt_oss_glu(torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="limit must be positive"):
        gpt_oss_glu(torch.zeros(2, 4), limit=0.0)
