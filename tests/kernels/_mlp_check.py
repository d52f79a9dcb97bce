"""One full pass of a Liger MLP, the Hugging Face MLP it replaces and that MLP in float64, over the same
weights: shared by the SwiGLU and GeGLU tests."""

from __future__ import annotations

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
