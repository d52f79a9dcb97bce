"""One full pass of a Liger MLP, the Hugging Face MLP it replaces and that MLP in float64, over the same
weights: shared by the SwiGLU and GeGLU tests."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from liger_testing import assert_close_to_reference


def forward_backward(module: torch.nn.Module, x: torch.Tensor, grad_out: torch.Tensor) -> dict:
    """Output, input gradient and every parameter gradient (by name) of one full pass."""
    xi = x.detach().clone().requires_grad_()
    y = module(xi)
    y.backward(grad_out.to(y.dtype))
    return {"y": y.detach(), "dx": xi.grad, **{name: p.grad for name, p in module.named_parameters()}}


def run_mlp(
    hf_mlp: Callable[[object], torch.nn.Module],
    liger_mlp: Callable[[object], torch.nn.Module],
    config,
    x: torch.Tensor,
    dtype: torch.dtype,
    init_seed: int | None = None,
    grad_seed: int = 11,
) -> dict:
    """Liger, same-dtype Hugging Face and float64 Hugging Face passes over the same weights."""
    if init_seed is not None:  # Hypothesis replays an example: its weights must be the same again
        torch.manual_seed(init_seed)
    golden = hf_mlp(config).to(device=x.device, dtype=torch.float64)
    reference = hf_mlp(config).to(device=x.device, dtype=dtype)
    liger = liger_mlp(config).to(device=x.device, dtype=dtype)
    reference.load_state_dict(golden.state_dict())
    liger.load_state_dict(golden.state_dict())
    gen = torch.Generator().manual_seed(grad_seed)
    grad_out = torch.randn((*x.shape[:-1], config.hidden_size), generator=gen, dtype=torch.float64)
    grad_out = grad_out.to(x.device)
    return {
        "liger": forward_backward(liger, x, grad_out),
        "reference": forward_backward(reference, x, grad_out),
        "golden": forward_backward(golden, x.double(), grad_out),
    }


def assert_mlp_close(r: dict, dtype: torch.dtype) -> None:
    """Reference-error mode with a floor of two roundings instead of one: every gradient of the MLP is a
    sum of products whose factors (da, db, c) both sides round differently but equally well, and over
    the few tokens of a CPU test the kernel's sum now and then lands just past 2x a lucky reference."""
    assert_close_to_reference(r["liger"], r["reference"], r["golden"], floor=2 * torch.finfo(dtype).eps)


# --- the fused product alone: c = f(a) * b ------------------------------------------------------------


def run_product(liger_fn: Callable, eager_fn: Callable, a: torch.Tensor, b: torch.Tensor) -> dict:
    """c, da, db of the kernel, of eager PyTorch in a's dtype and of eager PyTorch in float64, for one
    seeded upstream gradient (kept as ``r["grad"]``)."""
    gen = torch.Generator().manual_seed(5)
    grad = torch.randn(a.shape, generator=gen, dtype=torch.float64).to(a.device)
    out = {"grad": grad}
    for name, fn, dtype in (("liger", liger_fn, a.dtype), ("reference", eager_fn, a.dtype),
                            ("golden", eager_fn, torch.float64)):  # fmt: skip
        ai = a.detach().to(dtype).requires_grad_()
        bi = b.detach().to(dtype).requires_grad_()
        c = fn(ai, bi)
        c.backward(grad.to(dtype))
        out[name] = {"c": c.detach(), "da": ai.grad, "db": bi.grad}
    return out


# Roundings in the kernel's fp32 formula for da = dc * b * f'(a) (liger_kernel/ops/glu.py,
# _activation_and_derivative), counting the rounding of the upstream gradient to the input dtype:
#   silu       e, 1 + e, 1 / d, 1 - s (or e * s), a * (.), 1 + (.), s * (.), dc * b, * f'       + dc: 10
#   gelu_tanh  a^2, 0.0447 a^2, 1 + ., 1.596 a, u2, e, d, s, 0.134 a^2, 1 + ., 0.798 (.), 2 a, * s,
#              1 - s, * (.), * du, s + ., dc * b, * f'                                        + dc: 20
#   gelu       a / sqrt 2, erf (2 ulps), 1 + ., -a^2 / 2, exp, * 0.399, a * pdf, cdf + ., dc * b, * f'
#                                                                                              + dc: 13
DA_ROUNDINGS = {"silu": 10, "gelu_tanh": 20, "gelu": 13}


def derivative_terms(a: torch.Tensor, activation: str) -> torch.Tensor:
    """|terms| f'(a) is the sum of, in float64: f' cancels (silu' has a zero near a = -1.28, gelu's near
    -0.75), so one rounding of the terms is many ulps of f' there."""
    a = a.detach().double()
    if activation == "silu":
        s = torch.sigmoid(a)
        return s + (a * s * (1 - s)).abs()
    if activation == "gelu_tanh":
        u2 = 2 * math.sqrt(2 / math.pi) * (a + 0.044715 * a**3)
        s = torch.sigmoid(u2)
        du = math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * a**2)
        return s + (2 * a * s * (1 - s) * du).abs()
    cdf = 0.5 * (1 + torch.erf(a / math.sqrt(2)))
    return cdf + (a * torch.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)).abs()


def assert_product_close(r: dict, a: torch.Tensor, b: torch.Tensor, activation: str) -> None:
    """Reference-error mode for c, da and db. In fp32, da's floor comes from its formula: DA_ROUNDINGS
    roundings of the terms f' sums, times |dc * b|. PyTorch's eager da can be nearly exact where the kernel's
    formula rounds a few times more, and twice a tiny error plus one ulp does not cover that. (In bf16 and
    fp16 the fp32 roundings are far below the one rounding of the result that the default floor allows.)"""
    assert_close_to_reference(
        *({k: r[arm][k] for k in ("c", "db")} for arm in ("liger", "reference", "golden"))
    )
    if a.dtype == torch.float32:
        terms = (r["grad"] * b.detach().double()).abs() * derivative_terms(a, activation)
        kwargs = {"roundings": DA_ROUNDINGS[activation], "terms_scale": terms}
    else:
        kwargs = {}
    assert_close_to_reference(r["liger"]["da"], r["reference"]["da"], r["golden"]["da"], msg="da", **kwargs)
