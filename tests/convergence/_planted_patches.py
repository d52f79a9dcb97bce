"""Patches written in plain PyTorch for the convergence runner's own tests: planted bugs and correct ones.

Each ``*_patch(model=...)`` patches a Llama-like model in place, the way a real patch does: it swaps
the class of matching submodules for a subclass (parameters, names and state-dict keys unchanged) and
is a no-op for modules it already swapped, so the runner can apply it before every patched step. None
of them touches anything outside the model, except ``global_rope_patch`` (paired with
``global_rope_undo``), which replaces the modeling module's ``apply_rotary_pos_emb`` like Liger's RoPE
option does.

Planted bugs (each must make the run fail):
* ``eps_rmsnorm_patch``: RMSNorm with ``eps`` 10x too large;
* ``grad_scale_patch``: RMSNorm whose backward scales the input gradient by 1.01;
* ``bf16_silu_patch``: the MLP's SiLU computed through a bfloat16 intermediate.
Correct patches (each must pass):
* ``manual_rmsnorm_patch``: RMSNorm through an ``autograd.Function`` with a hand-written backward;
* ``global_rope_patch`` + ``global_rope_undo``: RoPE re-implemented, set on the modeling module.
Invalid patches (each must be refused as a setup error): ``noop_patch`` (changes nothing),
``global_rope_patch`` without undo (the unpatched arm would run it), ``new_parameter_patch``.
"""

from __future__ import annotations

import importlib

import torch
from torch import nn

_SWAPPED: dict[tuple[type, str], type] = {}


def _swap(model: nn.Module, class_suffix: str, tag: str, forward) -> int:
    """Swap every submodule whose class name ends with ``class_suffix`` to a subclass with ``forward``."""
    n = 0
    for module in model.modules():
        cls = type(module)
        if getattr(cls, "_planted", None) is not None or not cls.__name__.endswith(class_suffix):
            continue
        key = (cls, tag)
        if key not in _SWAPPED:
            _SWAPPED[key] = type(f"{tag}{cls.__name__}", (cls,), {"forward": forward, "_planted": tag})
        module.__class__ = _SWAPPED[key]
        n += 1
    return n


def _rms_norm(self, x: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = x.dtype
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return self.weight * h.to(dtype)


# --- planted bugs ----------------------------------------------------------------------------------


def _eps_forward(self, x):
    return _rms_norm(self, x, 10.0 * self.variance_epsilon)


def eps_rmsnorm_patch(model: nn.Module) -> None:
    _swap(model, "RMSNorm", "Eps10x", _eps_forward)


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * 1.01


def _grad_scale_forward(self, x):
    return _rms_norm(self, _ScaleGrad.apply(x), self.variance_epsilon)


def grad_scale_patch(model: nn.Module) -> None:
    _swap(model, "RMSNorm", "GradScale", _grad_scale_forward)


def _bf16_silu_forward(self, x):
    gate = self.gate_proj(x)
    act = nn.functional.silu(gate.to(torch.bfloat16)).to(gate.dtype)  # a kernel keeping bf16 intermediates
    return self.down_proj(act * self.up_proj(x))


def bf16_silu_patch(model: nn.Module) -> None:
    _swap(model, "MLP", "Bf16Silu", _bf16_silu_forward)


# --- correct patches --------------------------------------------------------------------------------


class _RMSNormFunction(torch.autograd.Function):
    """y = w * x / rms(x), rms = sqrt(mean(x^2) + eps); backward written out by hand."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        h = x.to(torch.float32)
        rstd = torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
        xhat = h * rstd
        ctx.save_for_backward(h, weight, rstd)
        return weight * xhat.to(x.dtype)

    @staticmethod
    def backward(ctx, dy):
        h, weight, rstd = ctx.saved_tensors
        xhat = h * rstd
        g = dy.to(torch.float32) * weight.to(torch.float32)
        # dx = rstd * (g - xhat * mean(g * xhat))
        dx = rstd * (g - xhat * (g * xhat).mean(-1, keepdim=True))
        dw = (dy.to(torch.float32) * xhat).reshape(-1, xhat.shape[-1]).sum(0)
        return dx.to(dy.dtype), dw.to(weight.dtype), None


def _manual_forward(self, x):
    return _RMSNormFunction.apply(x, self.weight, self.variance_epsilon)


def manual_rmsnorm_patch(model: nn.Module) -> None:
    _swap(model, "RMSNorm", "Manual", _manual_forward)


_LLAMA = "transformers.models.llama.modeling_llama"
_ROPE_ORIGINAL: dict[str, object] = {}


def _rope(q, k, cos, sin, unsqueeze_dim=1):
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)

    def rotate(x):
        half = x.shape[-1] // 2
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    return q * cos + rotate(q) * sin, k * cos + rotate(k) * sin


def global_rope_patch(model: nn.Module) -> None:
    modeling = importlib.import_module(_LLAMA)
    if modeling.apply_rotary_pos_emb is not _rope:
        _ROPE_ORIGINAL.setdefault("fn", modeling.apply_rotary_pos_emb)
        modeling.apply_rotary_pos_emb = _rope


def global_rope_undo() -> None:
    if "fn" in _ROPE_ORIGINAL:
        importlib.import_module(_LLAMA).apply_rotary_pos_emb = _ROPE_ORIGINAL.pop("fn")


# --- invalid patches ----------------------------------------------------------------------------------


def noop_patch(model: nn.Module) -> None:
    pass


def new_parameter_patch(model: nn.Module) -> None:
    manual_rmsnorm_patch(model)
    for module in model.modules():
        if type(module).__name__.endswith("RMSNorm"):
            module.weight = nn.Parameter(module.weight.detach().clone())
