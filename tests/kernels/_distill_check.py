"""The float64 math of the distillation losses (written from their definitions, not from any module),
and one check that a Liger loss matches it as well as PyTorch eager in the same dtype does: shared by
the KL divergence, JSD, TVD and fused linear JSD tests."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

import liger_kernel.ops.cross_entropy as ce_ops
import liger_kernel.ops.distill_utils as distill_utils
from liger_testing import assert_close, assert_close_to_reference, tolerances


def kept_mean(per_row: torch.Tensor, labels: torch.Tensor | None, ignore_index: int = -100) -> torch.Tensor:
    """Mean of per-row values over the rows whose label is not ignore_index (0 when none is kept)."""
    if labels is None:
        return per_row.mean()
    keep = labels != ignore_index
    return (per_row * keep).sum() / keep.sum().clamp(min=1)


def jsd_per_row(log_q: torch.Tensor, log_p: torch.Tensor, beta: float) -> torch.Tensor:
    """Generalized JSD per row: KL(P||Q) at beta 0, KL(Q||P) at 1, else beta KL(P||M) + (1-beta) KL(Q||M)."""
    q, p = log_q.exp(), log_p.exp()
    if beta == 0:
        return (p * (log_p - log_q)).sum(-1)
    if beta == 1:
        return (q * (log_q - log_p)).sum(-1)
    log_m = (beta * p + (1 - beta) * q).log()
    return beta * (p * (log_p - log_m)).sum(-1) + (1 - beta) * (q * (log_q - log_m)).sum(-1)


def log_probs(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """log_softmax of ``values`` over the last dim, computed in fp32 and rounded to ``dtype``."""
    return torch.log_softmax(values.float(), dim=-1).to(dtype)


def full_pass(
    fn: Callable[..., torch.Tensor], inputs: dict, grad_names: tuple, grad_out: torch.Tensor, dtype
):
    """{"loss", "d<name>"...}: ``fn(**inputs)`` with the named inputs as fresh leaves cast to ``dtype``
    (the others as given), and its gradients for ``grad_out``."""
    leaves = {}
    for name, value in inputs.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            value = value.detach().to(dtype).requires_grad_(name in grad_names)
        leaves[name] = value
    loss = fn(**leaves)
    grads = torch.autograd.grad(loss, [leaves[n] for n in grad_names], grad_out.to(loss.dtype))
    return {"loss": loss.detach(), **{f"d{n}": g for n, g in zip(grad_names, grads)}}


def check(
    liger_fn,
    math_fn,
    inputs: dict,
    grad_names: tuple,
    dtype: torch.dtype,
    reference_fn=None,
    grad_seed: int = 0,
) -> dict:
    """Liger's loss and gradients in ``dtype`` against ``math_fn`` in float64, as close as PyTorch eager in
    ``dtype`` (``reference_fn``, default ``math_fn`` itself) is: reference-error mode. ``inputs`` hold
    values exactly representable in ``dtype``. Returns Liger's results."""
    with torch.no_grad():
        doubles = {
            k: v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
            for k, v in inputs.items()
        }
        loss_shape = math_fn(**doubles).shape
    device = next(v for v in inputs.values() if isinstance(v, torch.Tensor)).device
    gen = torch.Generator().manual_seed(grad_seed)
    grad_out = torch.randn(loss_shape, generator=gen, dtype=torch.float64).to(device)
    golden = full_pass(math_fn, inputs, grad_names, grad_out, torch.float64)
    reference = full_pass(reference_fn or math_fn, inputs, grad_names, grad_out, dtype)
    actual = full_pass(liger_fn, inputs, grad_names, grad_out, dtype)
    assert actual["loss"].shape == golden["loss"].shape
    for name in grad_names:
        assert actual[f"d{name}"].dtype == dtype
    if dtype == torch.float32:
        # torch's CPU kernels accumulate fp32 in fp64 and its log_softmax is almost exact there, while
        # a kernel in fp32 (as torch's CUDA kernels) is off by an ulp or two of the O(1) terms a
        # divergence cancels down to (p - q, sum p log(p / m)): fp32 tolerances against the math, as
        # test_cross_entropy.py does for the same reason -- or, where the conditioning amplifies fp32
        # rounding past those (sharp temperatures, long sums into dW), no more than twice torch's own
        # fp32 error (reference-error mode).
        tol = tolerances(torch.float32)
        for key in golden:
            try:
                assert_close(actual[key], golden[key].to(dtype), atol=tol.atol, rtol=tol.rtol, msg=key)
            except AssertionError:
                assert_close_to_reference(actual[key], reference[key], golden[key], msg=key)
    else:
        for key in golden:
            if bool((torch.isfinite(golden[key]) & ~torch.isfinite(reference[key])).any()):
                # Eager in fp16/bf16 underflows to 0 * log 0 = NaN where the math is finite: its error
                # says nothing there, so the kernel is held to one rounding of the input dtype instead.
                tol = tolerances(dtype)
                assert_close(
                    actual[key], golden[key].to(actual[key].dtype), atol=tol.atol, rtol=tol.rtol, msg=key
                )
            else:
                assert_close_to_reference(actual[key], reference[key], golden[key], msg=key)
    return actual


@contextlib.contextmanager
def block_max(value: int):
    """Smaller blocks make the kernels walk each row in several blocks (the distillation kernels' and
    the cross entropy's pass 1, which the log-prob losses' logsumexp shares)."""
    saved = distill_utils.BLOCK_MAX, ce_ops.BLOCK_MAX
    distill_utils.BLOCK_MAX = ce_ops.BLOCK_MAX = value
    try:
        yield
    finally:
        distill_utils.BLOCK_MAX, ce_ops.BLOCK_MAX = saved
