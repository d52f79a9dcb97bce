"""assert_modules_equivalent: passes for a faithful rewrite of a module, names the parameter a planted bug
breaks, and refuses comparisons that mean nothing (different parameter names or values)."""

import pytest
import torch
import torch.nn.functional as F

from liger_testing import assert_modules_equivalent


class Mlp(torch.nn.Module):
    """The reference: gate/up/down projections with SiLU, as Hugging Face's LlamaMLP."""

    def __init__(self, hidden=12, inner=20):
        super().__init__()
        self.gate_proj = torch.nn.Linear(hidden, inner, bias=False)
        self.up_proj = torch.nn.Linear(hidden, inner, bias=False)
        self.down_proj = torch.nn.Linear(inner, hidden)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class _ScaledGrad(torch.autograd.Function):
    """Identity forward; the backward scales the gradient (a planted bug in a fused backward)."""

    @staticmethod
    def forward(ctx, w, scale):
        ctx.scale = scale
        return w.view_as(w)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


class RewrittenMlp(Mlp):
    """The same math written differently (one matmul for gate and up, sigmoid by hand); ``up_grad_scale``
    plants a bug in the up projection's weight gradient only."""

    def __init__(self, *args, up_grad_scale=1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.up_grad_scale = up_grad_scale

    def forward(self, x):
        up_w = _ScaledGrad.apply(self.up_proj.weight, self.up_grad_scale)
        gate, up = (x @ torch.cat([self.gate_proj.weight, up_w]).T).chunk(2, dim=-1)
        return (gate * torch.sigmoid(gate) * up) @ self.down_proj.weight.T + self.down_proj.bias


def pair(**kwargs):
    torch.manual_seed(0)
    reference = Mlp()
    candidate = RewrittenMlp(**kwargs)
    candidate.load_state_dict(reference.state_dict())
    return reference, candidate


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_faithful_rewrite_passes(dtype):
    reference, candidate = pair()
    x = torch.randn(3, 5, 12, requires_grad=True)
    assert_modules_equivalent(reference, candidate, x, dtype=dtype)
    assert reference.gate_proj.weight.dtype == torch.float32 and reference.gate_proj.weight.grad is None


def test_planted_gradient_bug_is_named_with_both_errors():
    reference, candidate = pair(up_grad_scale=1.01)
    x = torch.randn(4, 12, requires_grad=True)
    with pytest.raises(AssertionError) as info:
        assert_modules_equivalent(reference, candidate, x, dtype=torch.float32)
    text = str(info.value)
    assert "param:up_proj.weight" in text
    failing = [line for line in text.splitlines() if "candidate " in line and line.rstrip().endswith("FAIL")]
    assert len(failing) == 1 and "up_proj.weight" in failing[0], text
    assert "candidate" in failing[0] and "reference" in failing[0]
    # The other parameters and the output are listed too, as passing.
    assert "param:down_proj.bias" in text and "output" in text


def test_parameter_names_and_values_must_match():
    reference = Mlp()
    other = torch.nn.Sequential(torch.nn.Linear(12, 12))
    with pytest.raises(AssertionError, match="parameter names differ"):
        assert_modules_equivalent(reference, other, torch.randn(2, 12))
    candidate = RewrittenMlp()  # its own random weights
    with pytest.raises(AssertionError, match="parameters differ before the run"):
        assert_modules_equivalent(reference, candidate, torch.randn(2, 12))
