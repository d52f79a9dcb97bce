"""Per-token log-probs of rows of logits and their logits gradient in place, in Triton.

The chunked losses (``liger_kernel.chunked_loss``) need, for each row z (V logits in the lm_head's dtype,
e.g. bf16) and temperature T, the log-probs of a few target ids y_k and, once the loss has given their
coefficients c_k = dL/dlp_k, the gradient over the whole row:

    lse = log sum_j exp(z_j / T)                                  (fp32, one read of the row; T > 0)
    lp_k = z_{y_k} / T - lse
    G_j = (sum_k c_k [j = y_k] - (sum_k c_k) exp(z_j / T - lse)) / T    (one read, one write, in place)

All arithmetic is fp32 (1/T is applied as a multiplication everywhere); the row is never copied to fp32, so a chunk of logits costs its own dtype's
bytes, and G overwrites z in z's dtype (it is rounded once, where the matmuls that take it would round it
anyway). Nothing is kept: the callers hold the logits buffer and lse.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from liger_kernel.ops.cross_entropy import LOG2E, NEG_FLT_MAX, _launch_shape, _lse_step
from liger_kernel.ops.distill_utils import row_launch
from liger_kernel.ops.utils import use_triton


@triton.jit
def _row_lse_kernel(
    Z, stride_z, LSE, SUMS, inv_temperature, n_cols, WITH_SUMS: tl.constexpr,
    WARPS: tl.constexpr, LANES: tl.constexpr, VEC: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    # One program per row, walked block by block with the cross entropy's pass 1 (_lse_step): each thread
    # keeps its own running max m of z and sum d of exp((z - m) / T), one exp per logit and no barrier in
    # the loop; merged once. lse = m / T + log d (T > 0: the max of z is the max of z / T). WITH_SUMS: also
    # the row's sum of z (the losses' logit metrics), from the same read (the step's sum of w_j z_j, w = 1).
    row = tl.program_id(0).to(tl.int64)
    z_row = Z + row * stride_z
    exp2_scale = inv_temperature * LOG2E
    m_w = tl.full((WARPS, LANES), NEG_FLT_MAX, tl.float32)
    d_w = tl.zeros((WARPS, LANES), tl.float32)
    s_w = tl.zeros((WARPS, LANES), tl.float32)
    n_full = (n_cols // BLOCK) * BLOCK
    for start in range(0, n_full, BLOCK):
        m_w, d_w, s_w = _lse_step(
            z_row, start, n_cols, m_w, d_w, s_w, Z, 0.0, exp2_scale,
            False, WITH_SUMS, False, False, WARPS, LANES, VEC, BLOCK, "",
        )  # fmt: skip
    if n_full < n_cols:
        m_w, d_w, s_w = _lse_step(
            z_row, n_full, n_cols, m_w, d_w, s_w, Z, 0.0, exp2_scale,
            False, WITH_SUMS, False, True, WARPS, LANES, VEC, BLOCK, "",
        )  # fmt: skip
    m = tl.max(tl.max(m_w, 1), 0)
    d = tl.sum(tl.sum(d_w * tl.math.exp2(tl.maximum(m_w - m, -1e30) * exp2_scale), 1), 0)
    tl.store(LSE + row, m * inv_temperature + tl.log(d))
    if WITH_SUMS:
        tl.store(SUMS + row, tl.sum(tl.sum(s_w, 1), 0))


@triton.jit
def _logprob_grad_kernel(
    Z, stride_z, LSE, Y1, C1, Y2, C2, inv_temperature, n_cols, TWO_TARGETS: tl.constexpr, BLOCK: tl.constexpr
):
    # One program per row: G over z in place (see the module docstring).
    row = tl.program_id(0).to(tl.int64)
    z_row = Z + row * stride_z
    lse = tl.load(LSE + row)
    y1 = tl.load(Y1 + row)
    c1 = tl.load(C1 + row).to(tl.float32)
    total = c1
    if TWO_TARGETS:
        y2 = tl.load(Y2 + row)
        c2 = tl.load(C2 + row).to(tl.float32)
        total += c2
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < n_cols
        z = tl.load(z_row + cols, mask=mask, other=0.0).to(tl.float32)
        g = tl.where(cols == y1, c1, 0.0) - total * tl.exp(z * inv_temperature - lse)
        if TWO_TARGETS:
            g += tl.where(cols == y2, c2, 0.0)
        tl.store(z_row + cols, (g * inv_temperature).to(Z.dtype.element_ty), mask=mask)


def _uses_kernel(logits: torch.Tensor) -> bool:
    # float64 stays in PyTorch: the kernels accumulate in fp32, the float64 path is the exact one
    return logits.dtype != torch.float64 and use_triton("token_logprobs", logits)


def row_logsumexp(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """logsumexp(logits / temperature) over the last dim of a (rows, V) tensor, fp32 (float64 for float64).
    ``temperature`` > 0."""
    return _row_lse(logits, temperature, with_sums=False)[0]


def row_logsumexp_and_sums(
    logits: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(``row_logsumexp``, each row's sum of the logits, not divided by the temperature), from one read."""
    return _row_lse(logits, temperature, with_sums=True)


def _row_lse(
    logits: torch.Tensor, temperature: float, with_sums: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not _uses_kernel(logits):
        values = logits.float() if logits.dtype != torch.float64 else logits
        lse = torch.logsumexp(values * (1.0 / temperature) if temperature != 1.0 else values, dim=-1)
        return lse, (values.sum(-1) if with_sums else None)
    if logits.stride(-1) != 1:  # the kernel walks a row with unit steps
        logits = logits.contiguous()
    lse = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
    sums = torch.empty_like(lse) if with_sums else None
    if logits.shape[0]:
        block, vec, lanes, warps = _launch_shape(logits.shape[1], logits.element_size())
        _row_lse_kernel[(logits.shape[0],)](
            logits, logits.stride(0), lse, sums if with_sums else lse, 1.0 / temperature, logits.shape[1],
            WITH_SUMS=with_sums, WARPS=warps, LANES=lanes, VEC=vec, BLOCK=block, num_warps=warps,
        )  # fmt: skip
    return lse, sums


def gather_logprobs(
    logits: torch.Tensor, lse: torch.Tensor, target: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """logits[row, target[row]] / temperature - lse[row], in lse's dtype; ``target`` holds valid ids."""
    picked = logits.gather(-1, target.unsqueeze(-1)).squeeze(-1).to(lse.dtype)
    return (picked * (1.0 / temperature) if temperature != 1.0 else picked) - lse


def logprob_grad_(
    logits: torch.Tensor,
    lse: torch.Tensor,
    targets: list[torch.Tensor],
    coeffs: list[torch.Tensor],
    temperature: float = 1.0,
) -> torch.Tensor:
    """Overwrites the (rows, V) ``logits`` (unit stride along V) with G (module docstring) and returns it.

    ``targets``: one or two (rows,) tensors of valid ids; ``coeffs``: their dL/dlp, fp32 (rows,)."""
    if not 1 <= len(targets) <= 2 or len(coeffs) != len(targets):
        raise ValueError(
            f"one or two target sets with one coefficient each, got {len(targets)} and {len(coeffs)}"
        )
    if logits.dim() != 2 or (logits.shape[1] > 1 and logits.stride(1) != 1):
        raise ValueError(
            f"logits must be (rows, V) with a unit stride along V (the gradient is written in place), "
            f"got shape {tuple(logits.shape)} and strides {logits.stride()}"
        )
    if not _uses_kernel(logits):
        work = logits if logits.dtype == torch.float64 else logits.float()
        if temperature != 1.0:
            work = work * (1.0 / temperature)
        grad = work.sub_(lse.unsqueeze(-1)).exp_().mul_(-torch.stack(coeffs).sum(0).unsqueeze(-1))
        for target, coeff in zip(targets, coeffs):
            grad.scatter_add_(-1, target.unsqueeze(-1), coeff.to(grad.dtype).unsqueeze(-1))
        if temperature != 1.0:
            grad.mul_(1.0 / temperature)
        return logits.copy_(grad) if grad is not logits else logits
    if logits.shape[0]:
        block, warps = row_launch(logits.shape[1])
        second = len(targets) == 2
        _logprob_grad_kernel[(logits.shape[0],)](
            logits, logits.stride(0), lse.contiguous(), targets[0].contiguous(), coeffs[0].float().contiguous(),
            targets[-1].contiguous(), coeffs[-1].float().contiguous(),
            1.0 / temperature, logits.shape[1], TWO_TARGETS=second, BLOCK=block, num_warps=warps,
        )  # fmt: skip
    return logits
