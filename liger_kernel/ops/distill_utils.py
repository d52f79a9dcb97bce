"""Host-side pieces the distillation losses share (KL divergence, JSD, TVD, fused linear JSD).

Each of those kernels computes a row's loss and its gradient in one pass over the rows, already scaled
by the reduction's 1 / denominator, and keeps the gradient for backward; backward multiplies it by the
incoming gradient. The denominator of a token mean stays on the device (no host sync): a one-element
fp32 tensor the kernels read.
"""

from __future__ import annotations

import torch

from liger_kernel.ops.cross_entropy import cross_entropy_scale_grad_
from liger_kernel.ops.utils import graph_retained, next_power_of_2, warps_for_row

REDUCTIONS = ("batchmean", "sum", "mean", "none")

# Tuning knob (read at each call, so tests can make rows span several blocks): the largest block along
# V one program loads at once, in elements.
BLOCK_MAX = 8192


def row_launch(n_cols: int) -> tuple[int, int]:
    """(block, warps) of a row kernel that walks rows of ``n_cols`` elements block by block."""
    block = min(next_power_of_2(max(n_cols, 16)), BLOCK_MAX)
    return block, warps_for_row(block)


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def check_probabilities_pair(first: str, a: torch.Tensor, second: str, b: torch.Tensor) -> None:
    """Both floating-point, one device, one shape (errors name the arguments)."""
    for name, t in ((first, a), (second, b)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if a.device != b.device:
        raise ValueError(f"{first} and {second} must be on one device, got {a.device} and {b.device}")
    if a.shape != b.shape:
        raise ValueError(
            f"{first} and {second} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.dim() == 0 or a.shape[-1] == 0:
        raise ValueError(f"{first} must have a non-empty last (vocabulary) dim, got shape {tuple(a.shape)}")


def check_labels(labels: torch.Tensor | None, n_rows: int, device: torch.device, name: str) -> None:
    """``labels`` (or None) holds one integer per row (token) of the inputs."""
    if labels is None:
        return
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got dtype {labels.dtype}")
    if labels.numel() != n_rows:
        raise ValueError(f"{name} must hold one label per row ({n_rows}), got shape {tuple(labels.shape)}")
    if labels.device != device:
        raise ValueError(f"{name} must be on the inputs' device {device}, got {labels.device}")


def token_scale(
    labels: torch.Tensor | None, ignore_index: int, n_rows: int, device: torch.device
) -> torch.Tensor:
    """fp32 (1,): 1 / the number of rows whose label is not ``ignore_index`` (all rows without labels),
    a count of 0 counting as 1 (so every row ignored gives a loss of 0 and zero gradients, not NaN)."""
    if labels is None:
        return torch.full((1,), 1.0 / max(n_rows, 1), dtype=torch.float32, device=device)
    count = (labels.reshape(-1) != ignore_index).sum(dtype=torch.float32).clamp(min=1.0)
    return count.reciprocal().reshape(1)


def scale_grad(grad: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
    """Backward of a loss whose gradient ``grad`` (rows, V) was made in the forward: ``grad`` times the
    incoming gradient -- in place for a scalar (a no-op launch when it is exactly 1), a new tensor for
    one value per element (reduction="none"), when another backward will read ``grad`` again
    (``graph_retained``: retain_graph=True, or traced), or under a torch.func transform (vmap of grad:
    per-sample gradients), where the in-place op has no batching rule."""
    in_place = not graph_retained() and not torch._C._are_functorch_transforms_active()
    if grad_output.dim() == 0 and in_place:
        cross_entropy_scale_grad_(grad, grad_output)
        return grad
    scale = grad_output.reshape(grad.shape) if grad_output.dim() else grad_output
    return (grad.float() * scale.float()).to(grad.dtype)


def saved_grads_fake(
    a: torch.Tensor, b: torch.Tensor, need_a: bool, need_b: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fake (meta) gradients of a forward op that returns (loss, dL/da, dL/db), each empty unless needed."""
    grad_a, grad_b = grad_buffers(a, b, need_a, need_b)
    return (
        grad_a if grad_a is not None else a.new_empty(0),
        grad_b if grad_b is not None else b.new_empty(0),
    )


def register_saved_grads_autograd(op, needs_at: slice, n_inputs: int) -> None:
    """Autograd of a forward op (a ``LigerOp``) with ``n_inputs`` arguments that returns (loss, dL/da,
    dL/db) for its first two inputs a and b, whether each is wanted being the booleans at ``needs_at``
    among its arguments: backward scales the kept gradients by the incoming gradient (``scale_grad``)."""

    def setup_context(ctx, inputs, output):
        _loss, grad_a, grad_b = output
        ctx.mark_non_differentiable(grad_a, grad_b)
        # Autograd would otherwise hand backward zero-filled gradients for these outputs.
        ctx.set_materialize_grads(False)
        ctx.needs = inputs[needs_at]
        ctx.save_for_backward(grad_a, grad_b)

    def backward(ctx, grad_loss, _grad_a, _grad_b):
        grad_a, grad_b = ctx.saved_tensors
        need_a, need_b = ctx.needs
        return (
            scale_grad(grad_a, grad_loss) if need_a else None,
            scale_grad(grad_b, grad_loss) if need_b else None,
            *([None] * (n_inputs - 2)),
        )

    op.register_autograd(backward, setup_context=setup_context)


def loss_buffer(x: torch.Tensor, elementwise: bool) -> torch.Tensor:
    """Where a row kernel writes its loss: one value per element (x's dtype) or one fp32 per row."""
    if elementwise:
        return torch.empty_like(x, memory_format=torch.contiguous_format)
    return torch.empty(x.shape[0], dtype=torch.float32, device=x.device)


def grad_buffers(
    a: torch.Tensor, b: torch.Tensor, need_a: bool, need_b: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Buffers for dL/da and dL/db (contiguous, their inputs' dtypes), None where not needed."""
    return (
        torch.empty_like(a, memory_format=torch.contiguous_format) if need_a else None,
        torch.empty_like(b, memory_format=torch.contiguous_format) if need_b else None,
    )
