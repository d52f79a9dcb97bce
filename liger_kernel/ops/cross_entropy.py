"""Cross entropy over hard labels, forward and backward, in Triton (the gradient is made in the forward).

Forward, for each row x (length V) with target t != ignore_index (all arithmetic in fp32):
    z    = softcap * tanh(x / softcap)            (z = x without softcap)
    lse  = logsumexp(z)                           (online: one pass, a running max and sum per thread)
    ce   = (1 - eps) * w_t * (lse - z_t) + eps / V * sum_j w_j * (lse - z_j)
    zl   = lse_square_scale * lse^2               (z-loss)
w is the class weight (all ones without one), eps the label smoothing: torch.nn.functional.cross_entropy's
formula. Rows whose target is ignore_index give 0. Reductions, with W = sum of w_t over the rows that are
not ignored (their count without a class weight) and n = their count:
    "none": ce + zl per row;   "sum": sum(ce) + sum(zl);   "mean": sum(ce) / W + sum(zl) / n
(the z-loss is not weighted by class; a denominator of 0 -- every target ignored -- counts as 1, so
the loss is 0 and the gradient 0 where torch gives NaN).

Gradient (per row, c = 1/W and c_z = 1/n for "mean", both 1 otherwise), with p = softmax(z):
    dz_j = c * ((1 - eps) * w_t * (p_j - [j == t]) + eps / V * (p_j * sum(w) - w_j)) + c_z * 2 * s * lse * p_j
    dx_j = dz_j * (1 - (z_j / softcap)^2)         (only with softcap)
The kernel writes dx in its second pass over the row, over the logits themselves when the caller allows
it (see ``cross_entropy``), so a forward + backward costs one read of the logits for the logsumexp, a
second read served from L2 (one program per SM holds 132 rows in flight, the second pass walks the row
backwards, starting with what the first pass read last, and eviction hints keep the first pass's lines)
and one write. Loads are 16 bytes per thread; rows that start off that alignment (an odd vocabulary)
have their first few columns handled apart so that the rest starts aligned. Nothing else is kept for
backward: the backward multiplies the stored gradient by the incoming gradient (a scalar, or one value
per row for reduction="none"), and leaves rows whose incoming gradient is exactly 1 alone, so the usual
``loss.backward()`` costs one tiny launch.

Kept for backward: the gradient (N x V, logits' dtype). Where it is written (``cross_entropy``'s inplace):
over the logits when they are an intermediate of autograd (default), never over a leaf or a view of one
(a tensor the caller made and may use again) unless inplace=True, always into a fresh buffer with
inplace=False. After an overwrite the logits hold the gradient; an op that had saved them for its own
backward (tanh, exp, softmax...) makes backward raise autograd's "modified by an inplace operation"
error (use inplace=False there). The backward scales the stored gradient in place, unless the graph is
retained for another backward (retain_graph=True): then each backward gets a new, scaled copy. Under
torch.compile the backward always scales a copy: a compiled backward cannot know whether the graph is
retained, and an in-place scale Inductor may apply to the kept buffer itself breaks a second backward.

Bad targets (outside [0, V) and not ignore_index) raise IndexError, and the logits are left untouched:
the tiny kernel that computes the denominators also counts them. On a GPU the host waits for that count
only after the row kernel is queued behind it, and the row kernel writes nothing when the count is not
zero, so the check never leaves the GPU idle (``TargetCheck``); on the CPU it is read before the row
kernel runs. ``CHECK_TARGETS = False`` skips it (it is skipped while a CUDA graph is being captured);
unchecked bad rows give a NaN loss and gradient rather than a plausible wrong value.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import triton
import triton.language as tl

from liger_kernel.ops.token_stats import predicted_tokens, token_accuracy
from liger_kernel.ops.utils import (
    check_floating,
    check_same_device,
    first_derivative_only,
    graph_anchor,
    graph_retained,
    liger_op,
    multiprocessor_count,
    next_power_of_2,
    no_forward_mode_message,
    use_triton,
)

REDUCTIONS = ("mean", "sum", "none")

# Tuning knobs (read at each call, so a sweep can set them): the largest block along V one program
# loads at once, and warps per program. Each program walks one row block by block.
# H200 sweep run 8 (benchmark/results/sweep_ce_run8_20261129_h200.txt), the per-thread pass 1: blocks
# of 32768 x 32 warps, one program per row (so one per SM: 1024 threads, 54 registers) were best,
# 1.29 ms full pass at 8192 x 128256 bf16; the earlier 4096 x 8 gave 1.56.
BLOCK_MAX = 32768
NUM_WARPS = 32
# Programs per SM of a persistent grid (0: one program per row). With one 1024-thread program per SM
# either way, the two are within 3 % (see benchmark/NOTES.md).
PROGRAMS_PER_SM = 0
# L2 eviction hints: keep pass 1's reads (pass 2 reads them again), drop pass 2's reads and writes.
# Sweep run 9: DRAM reads 2.72 -> 2.16 GB (pass 2 from L2), full pass 1.29 -> 1.26 ms.
L2_HINTS = True
# Whether to raise on targets outside [0, V) (see the module docstring and TargetCheck).
CHECK_TARGETS = True
# Whether rows that start off 16-byte alignment (a row stride that is not a multiple of one load: an
# odd vocabulary) have their first columns peeled off so that the rest loads 16 bytes at a time (see the
# kernel). Off: such rows load an element at a time (measured ~2x slower per byte on the H200 at OLMo
# 3's 100278 against OLMo 2's 100352, sweep_ce_20261205_h200.csv).
PEEL_UNALIGNED_ROWS = True


@triton.jit
def _tanh(x):
    # (libdevice's tanh is not available in Triton's interpreter.) |x| >= 0.55: from exp, exact limits
    # at +-inf (exp overflowing to inf gives 1), about 1 ulp. Smaller |x|, where that formula cancels:
    # the Taylor series to x^19 (truncation < 1e-8 relative at 0.55).
    ax = tl.abs(x)
    big = 1.0 - 2.0 / (tl.exp(2.0 * ax) + 1.0)  # on |x|: the quotient stays <= 0.5, no cancellation
    big = tl.where(x < 0, -big, big)
    x2 = x * x
    p = -443861162.0 / 1856156927625.0
    p = p * x2 + 6404582.0 / 10854718875.0
    p = p * x2 - 929569.0 / 638512875.0
    p = p * x2 + 21844.0 / 6081075.0
    p = p * x2 - 1382.0 / 155925.0
    p = p * x2 + 62.0 / 2835.0
    p = p * x2 - 17.0 / 315.0
    p = p * x2 + 2.0 / 15.0
    p = p * x2 - 1.0 / 3.0
    small = x + x * x2 * p
    return tl.where(ax < 0.55, small, big)


@triton.jit
def _loss_scales_kernel(
    Y,
    stride_y,
    CW,
    SCALES,
    n_rows,
    n_cols,
    ignore_index,
    MEAN: tl.constexpr,
    HAS_WEIGHT: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    # One program. SCALES = [scale of ce, scale of z-loss, sum of class weights, number of bad targets].
    count = 0.0
    weight_of_targets = 0.0
    bad = 0.0
    for start in range(0, n_rows, BLOCK_R):
        rows = start + tl.arange(0, BLOCK_R)
        row_mask = rows < n_rows
        t = tl.load(Y + rows.to(tl.int64) * stride_y, mask=row_mask, other=ignore_index).to(tl.int64)
        valid = row_mask & (t != ignore_index)
        in_range = (t >= 0) & (t < n_cols)
        count += tl.sum(valid.to(tl.float32), 0)
        bad += tl.sum((valid & ~in_range).to(tl.float32), 0)
        if HAS_WEIGHT:
            ok = valid & in_range
            w_t = tl.load(CW + tl.where(ok, t, 0), mask=ok, other=0.0).to(tl.float32)
            weight_of_targets += tl.sum(w_t, 0)
    weight_sum = n_cols * 1.0
    if HAS_WEIGHT:
        weight_sum = 0.0
        for start in range(0, n_cols, BLOCK_V):
            cols = start + tl.arange(0, BLOCK_V)
            weight_sum += tl.sum(tl.load(CW + cols, mask=cols < n_cols, other=0.0).to(tl.float32), 0)
    ce_scale = 1.0
    z_scale = 1.0
    if MEAN:
        denom = count
        if HAS_WEIGHT:
            denom = weight_of_targets
        ce_scale = 1.0 / tl.where(denom == 0.0, 1.0, denom)
        z_scale = 1.0 / tl.maximum(count, 1.0)
    tl.store(SCALES + 0, ce_scale)
    tl.store(SCALES + 1, z_scale)
    tl.store(SCALES + 2, weight_sum)
    tl.store(SCALES + 3, bad)


# exp(x) = exp2(x * LOG2E), as tl.exp computes it; written out so that pass 2 can fold its - log(d)
# into the same fused multiply-add.
LOG2E = tl.constexpr(1.4426950408889634)
# The empty state of an online logsumexp: max -FLT_MAX rather than -inf (-inf - -inf is NaN), sum 0.
NEG_FLT_MAX = tl.constexpr(-3.4028234663852886e38)


@triton.jit
def _load_logits(
    x_row, cols, n_cols, softcap, HAS_SOFTCAP: tl.constexpr, MASKED: tl.constexpr, EVICT: tl.constexpr
):
    """Logits at ``cols`` in fp32, softcapped; 0 past the row's end when MASKED (pass 1 makes those
    -inf; pass 2 does not store them)."""
    if MASKED:
        z = tl.load(x_row + cols, mask=cols < n_cols, other=0.0, eviction_policy=EVICT).to(tl.float32)
    else:
        z = tl.load(x_row + cols, eviction_policy=EVICT).to(tl.float32)
    if HAS_SOFTCAP:
        z = softcap * _tanh(z / softcap)
    return z


@triton.jit
def _load_weight(CW, cols, n_cols, MASKED: tl.constexpr):
    """Class weights at ``cols`` in fp32; 0 past the row's end when MASKED."""
    if MASKED:
        w = tl.load(CW + cols, mask=cols < n_cols, other=0.0)
    else:
        w = tl.load(CW + cols)
    return w.to(tl.float32)


@triton.jit
def _lse_step(
    x_row, start, n_cols, m, d, wz, CW, softcap, exp2_scale,
    HAS_WEIGHT: tl.constexpr, HAS_SMOOTHING: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
    MASKED: tl.constexpr, WARPS: tl.constexpr, LANES: tl.constexpr, VEC: tl.constexpr,
    BLOCK: tl.constexpr, EVICT: tl.constexpr,
):  # fmt: skip
    """One block of pass 1, seen as a (BLOCK // (WARPS * LANES * VEC), WARPS, LANES, VEC) tile, VEC being
    the elements of one 16-byte load: in the compiler's layout of the load (each lane loads VEC
    contiguous elements, a warp LANES x VEC) index 1 is the warp, index 2 the lane, and indices 0 and 3
    the registers of a thread. Each thread keeps its own running max m, sum d of exp2((z - m) *
    exp2_scale) and sum wz of w_j z_j ((WARPS, LANES) tensors, one value per thread), so the loop reduces
    within threads only: no shuffle, no barrier, and the warps stream independently. The caller merges
    them once per row. exp2_scale is LOG2E here (d sums exp(z - m)); LOG2E / T gives exp((z - m) / T), a
    temperature's (``token_logprobs``: T > 0 keeps the max of z the max of z / T)."""
    cols = start + tl.arange(0, BLOCK)
    shape: tl.constexpr = (BLOCK // (WARPS * LANES * VEC), WARPS, LANES, VEC)
    z0 = tl.reshape(_load_logits(x_row, cols, n_cols, softcap, HAS_SOFTCAP, MASKED, EVICT), shape)
    z = z0
    if MASKED:  # past the row's end: 0 in the sum of w_j z_j, -inf in the logsumexp
        z = tl.where(tl.reshape(cols < n_cols, shape), z0, float("-inf"))
    m_new = tl.maximum(m, tl.max(tl.max(z, 3), 0))
    e = tl.math.exp2((z - m_new[None, :, :, None]) * exp2_scale)
    # (The clamp keeps -FLT_MAX - m_new from overflowing in the multiply: exp2 of it is 0 either way.)
    d = d * tl.math.exp2(tl.maximum(m - m_new, -1e30) * exp2_scale) + tl.sum(tl.sum(e, 3), 0)
    if HAS_SMOOTHING:
        if HAS_WEIGHT:
            z0 = z0 * tl.reshape(_load_weight(CW, cols, n_cols, MASKED), shape)
        wz += tl.sum(tl.sum(z0, 3), 0)
    return m_new, d, wz


@triton.jit
def _lse_head(
    x_row, head, m, d, wz, CW, softcap,
    HAS_WEIGHT: tl.constexpr, HAS_SMOOTHING: tl.constexpr, HAS_SOFTCAP: tl.constexpr, VEC: tl.constexpr,
):  # fmt: skip
    """Pass 1's first ``head`` (< VEC) columns of a row, peeled off so that the blocks after them start
    16-byte aligned: merged into the row's (m, d, wz) after the blocks."""
    cols = tl.arange(0, VEC)
    in_head = cols < head
    z0 = _load_logits(x_row, cols, head, softcap, HAS_SOFTCAP, True, "")
    z = tl.where(in_head, z0, float("-inf"))
    m_new = tl.maximum(m, tl.max(z, 0))
    d = d * tl.math.exp2(tl.maximum(m - m_new, -1e30) * LOG2E) + tl.sum(tl.math.exp2((z - m_new) * LOG2E), 0)
    if HAS_SMOOTHING:
        if HAS_WEIGHT:
            z0 = z0 * _load_weight(CW, cols, head, True)
        wz += tl.sum(z0, 0)
    return m_new, d, wz


@triton.jit
def _grad_step(
    x_row, g_row, start, n_cols, m, log_d2, coef_p, coef_w, CW, softcap,
    HAS_WEIGHT: tl.constexpr, HAS_SMOOTHING: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
    MASKED: tl.constexpr, BLOCK: tl.constexpr, EVICT: tl.constexpr,
):  # fmt: skip
    """One block of pass 2: the gradient without the target's term (the caller fixes that column)."""
    cols = start + tl.arange(0, BLOCK)
    z = _load_logits(x_row, cols, n_cols, softcap, HAS_SOFTCAP, MASKED, EVICT)
    grad = coef_p * tl.math.exp2((z - m) * LOG2E - log_d2)
    if HAS_SMOOTHING:
        if HAS_WEIGHT:
            grad -= coef_w * _load_weight(CW, cols, n_cols, MASKED)
        else:
            grad -= coef_w
    if HAS_SOFTCAP:
        zc = z / softcap
        grad = grad * (1.0 - zc * zc)
    if MASKED:
        tl.store(g_row + cols, grad.to(g_row.dtype.element_ty), mask=cols < n_cols, eviction_policy=EVICT)
    else:
        tl.store(g_row + cols, grad.to(g_row.dtype.element_ty), eviction_policy=EVICT)


@triton.jit
def _cross_entropy_kernel(
    X,
    stride_x,
    G,
    stride_g,
    Y,
    stride_y,
    CW,
    ROW_SCALE,
    stride_rs,
    SCALES,
    LOSS,
    ZLOSS,
    n_rows,
    n_cols,
    n_programs,
    ignore_index,
    label_smoothing,
    lse_square_scale,
    softcap,
    HAS_WEIGHT: tl.constexpr,
    HAS_SMOOTHING: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr,
    HAS_ROW_SCALE: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
    WARPS: tl.constexpr,
    LANES: tl.constexpr,
    VEC: tl.constexpr,
    BLOCK: tl.constexpr,
    EVICT1: tl.constexpr,
    EVICT2: tl.constexpr,
    SKIP_IF_BAD: tl.constexpr,
    PEEL: tl.constexpr,
):
    # Persistent grid when n_programs < n_rows: program p takes rows p, p + n_programs, ... so that
    # only n_programs rows are in flight at once and pass 2 re-reads each row from L2.
    # Full blocks are walked without masks; the last, partial block (if any) with them. With PEEL (rows
    # that start off 16-byte alignment: a row stride that is not a multiple of VEC) each row's first
    # `head` columns are taken apart (_lse_head, a masked _grad_step), so that the blocks start aligned
    # and load VEC elements at a time; the compiler cannot vectorize a row it cannot prove aligned.
    n_todo = n_rows
    if SKIP_IF_BAD:  # the host raises on bad targets: leave everything untouched (see TargetCheck)
        n_todo = tl.where(tl.load(SCALES + 3) > 0, 0, n_rows)
    for row_i in range(tl.program_id(0), n_todo, n_programs):
        row = row_i + tl.zeros((), dtype=tl.int64)  # int64 row offsets (N * V may pass 2^31)
        x_row = X + row * stride_x
        g_row = G + row * stride_g
        t = tl.load(Y + row * stride_y).to(tl.int64)
        # The row from column `head` on (all of it without PEEL), and its class weights.
        head = row * 0  # int64, as in the PEEL branch
        x_body = x_row
        g_body = g_row
        if PEEL:  # columns before the first aligned one; stride_g = stride_x modulo VEC and n_cols >= VEC
            head = (VEC - (row * stride_x) % VEC) % VEC
            x_body = X + tl.multiple_of(row * stride_x + head, VEC)
            g_body = G + tl.multiple_of(row * stride_g + head, VEC)
        cw_body = CW + head
        n_body = (n_cols - head).to(tl.int32)  # as n_cols (and so the column loops' counters)
        n_full = (n_body // BLOCK) * BLOCK

        if t == ignore_index:
            tl.store(LOSS + row, 0.0)
            tl.store(ZLOSS + row, 0.0)
            if WRITE_GRAD:
                zeros = tl.zeros((BLOCK,), dtype=tl.float32).to(G.dtype.element_ty)
                for start in range(0, n_cols, BLOCK):
                    cols = start + tl.arange(0, BLOCK)
                    tl.store(g_row + cols, zeros, mask=cols < n_cols)
        else:
            valid = (t >= 0) & (t < n_cols)
            t_safe = tl.where(valid, t, 0)

            # Pass 1: online logsumexp per thread (see _lse_step), merged once per row.
            m_w = tl.full((WARPS, LANES), NEG_FLT_MAX, tl.float32)
            d_w = tl.zeros((WARPS, LANES), tl.float32)
            wz_w = tl.zeros((WARPS, LANES), tl.float32)
            for start in range(0, n_full, BLOCK):
                m_w, d_w, wz_w = _lse_step(
                    x_body, start, n_body, m_w, d_w, wz_w, cw_body, softcap, LOG2E,
                    HAS_WEIGHT, HAS_SMOOTHING, HAS_SOFTCAP, False, WARPS, LANES, VEC, BLOCK, EVICT1,
                )  # fmt: skip
            if n_full < n_body:
                m_w, d_w, wz_w = _lse_step(
                    x_body, n_full, n_body, m_w, d_w, wz_w, cw_body, softcap, LOG2E,
                    HAS_WEIGHT, HAS_SMOOTHING, HAS_SOFTCAP, True, WARPS, LANES, VEC, BLOCK, EVICT1,
                )  # fmt: skip
            m = tl.max(tl.max(m_w, 1), 0)
            d = tl.sum(tl.sum(d_w * tl.math.exp2(tl.maximum(m_w - m, -1e30) * LOG2E), 1), 0)
            sum_wz = tl.sum(tl.sum(wz_w, 1), 0)
            if PEEL:
                m, d, sum_wz = _lse_head(
                    x_row, head, m, d, sum_wz, CW, softcap, HAS_WEIGHT, HAS_SMOOTHING, HAS_SOFTCAP, VEC
                )
            # lse = m + log_d; keeping the two apart leaves z - m exact in z - lse (as torch's log_softmax).
            log_d = tl.log(d)
            lse = m + log_d

            z_t = tl.load(x_row + t_safe).to(tl.float32)
            if HAS_SOFTCAP:
                z_t = softcap * _tanh(z_t / softcap)
            w_t = 1.0
            if HAS_WEIGHT:
                w_t = tl.load(CW + t_safe).to(tl.float32)
            weight_sum = tl.load(SCALES + 2)
            smooth_per_class = label_smoothing / n_cols

            ce = (1.0 - label_smoothing) * w_t * ((m - z_t) + log_d)
            if HAS_SMOOTHING:
                ce += smooth_per_class * (weight_sum * log_d + (weight_sum * m - sum_wz))
            zl = 0.0
            if HAS_Z:
                zl = lse_square_scale * lse * lse
            # An unchecked bad target poisons its row instead of giving a plausible wrong value.
            ce = tl.where(valid, ce, float("nan"))
            tl.store(LOSS + row, ce)
            tl.store(ZLOSS + row, zl)

            if WRITE_GRAD:
                ce_scale = tl.load(SCALES + 0)
                z_scale = tl.load(SCALES + 1)
                if HAS_ROW_SCALE:
                    rs = tl.load(ROW_SCALE + row * stride_rs).to(tl.float32)
                    ce_scale = ce_scale * rs
                    z_scale = z_scale * rs
                coef_t = ce_scale * (1.0 - label_smoothing) * w_t
                coef_p = coef_t
                if HAS_SMOOTHING:
                    coef_p += ce_scale * smooth_per_class * weight_sum
                if HAS_Z:
                    coef_p += z_scale * 2.0 * lse_square_scale * lse
                coef_p = tl.where(valid, coef_p, float("nan"))
                coef_w = ce_scale * smooth_per_class
                log_d2 = log_d * LOG2E

                # Pass 2, backwards over the row: the blocks pass 1 read last are the likeliest in L2.
                if n_full < n_body:
                    _grad_step(
                        x_body, g_body, n_full, n_body, m, log_d2, coef_p, coef_w, cw_body, softcap,
                        HAS_WEIGHT, HAS_SMOOTHING, HAS_SOFTCAP, True, BLOCK, EVICT2,
                    )  # fmt: skip
                for i in range(0, n_full // BLOCK):
                    _grad_step(
                        x_body, g_body, n_full - BLOCK - i * BLOCK, n_body, m, log_d2, coef_p, coef_w, cw_body,
                        softcap, HAS_WEIGHT, HAS_SMOOTHING, HAS_SOFTCAP, False, BLOCK, EVICT2,
                    )  # fmt: skip
                if PEEL:
                    _grad_step(
                        x_row, g_row, 0, head, m, log_d2, coef_p, coef_w, CW, softcap,
                        HAS_WEIGHT, HAS_SMOOTHING, HAS_SOFTCAP, True, VEC, EVICT2,
                    )  # fmt: skip
                # The target's column, written over (after a barrier: another thread stored it above)
                # with the -coef_t term that pass 2 left out of every column.
                grad_t = coef_p * tl.math.exp2((z_t - m) * LOG2E - log_d2) - coef_t
                if HAS_SMOOTHING:
                    grad_t -= coef_w * w_t
                if HAS_SOFTCAP:
                    zc_t = z_t / softcap
                    grad_t = grad_t * (1.0 - zc_t * zc_t)
                tl.debug_barrier()
                tl.store(g_row + t_safe, grad_t.to(G.dtype.element_ty))


@triton.jit
def _scale_rows_kernel(G, stride_g, GO, stride_go, n_cols, BLOCK: tl.constexpr):
    # Multiplies row `row` of G in place by GO[row * stride_go] (stride 0: one scalar for all rows).
    row = tl.program_id(0).to(tl.int64)
    go = tl.load(GO + row * stride_go).to(tl.float32)
    if go != 1.0:
        g_row = G + row * stride_g
        for start in range(0, n_cols, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            mask = cols < n_cols
            g = tl.load(g_row + cols, mask=mask, other=0.0).to(tl.float32)
            tl.store(g_row + cols, (g * go).to(G.dtype.element_ty), mask=mask)


# --- host side ---------------------------------------------------------------------------------------


def _launch_shape(n_cols: int, element_size: int) -> tuple[int, int, int, int]:
    """(block, vec, lanes, warps) of a row kernel: the block (BLOCK_MAX counts 2-byte elements, so
    4-byte logits get half as many: the same bytes in flight) and the (rows, warps, lanes, vec) view of
    it in pass 1 (see _lse_step): 16-byte loads, and blocks smaller than NUM_WARPS warps' loads on
    fewer warps (and lanes), so that the program's warps are exactly the view's."""
    # At least 16 elements: tiny rows gain nothing from smaller blocks.
    block_max = next_power_of_2(max(16, BLOCK_MAX * 2 // element_size))
    block = min(next_power_of_2(max(n_cols, 16)), block_max)
    vec = min(block, max(1, 16 // element_size))
    lanes = min(32, block // vec)
    warps = min(NUM_WARPS, block // (vec * lanes))
    return block, vec, lanes, warps


def _should_check_targets(device: torch.device) -> bool:
    if not CHECK_TARGETS:
        return False
    # A sync is illegal while a CUDA graph is captured; the kernel then marks bad rows with NaN.
    return not (device.type == "cuda" and torch.cuda.is_current_stream_capturing())


class TargetOutOfBoundsError(IndexError, AssertionError):
    """A target outside [0, classes) that is not ignore_index. An IndexError, and an AssertionError
    too, since Liger Kernel 0.8 asserts on it ("... out of bounds") and its users catch that."""


def _raise_bad_targets(n_bad: int, n_cols: int, ignore_index: int) -> None:
    raise TargetOutOfBoundsError(
        f"target has {n_bad} value(s) out of bounds: outside [0, {n_cols}) and not ignore_index={ignore_index}"
    )


class TargetCheck:
    """Raise IndexError on the bad targets ``loss_scales`` counted, without leaving the GPU idle.

    A host sync right after the count would stall the host until the GPU has drained everything queued
    before it (the whole forward, in training), and leave the GPU idle while the host then launches the
    next kernel. Instead the count is copied to pinned memory behind an event, the caller queues its
    kernels (which write nothing the caller owns when the count is not zero: ``pending`` says whether
    they must check it), and ``finish`` waits for the event -- by then the GPU has work queued behind
    it -- and raises. On the CPU the count is read at once (no stall to avoid) and ``pending`` is False.
    """

    def __init__(self, scales: torch.Tensor, n_cols: int, ignore_index: int) -> None:
        self.n_cols, self.ignore_index = n_cols, ignore_index
        self.pending = False
        if not _should_check_targets(scales.device):
            return
        if scales.device.type != "cuda":
            n_bad = int(scales[3].item())
            if n_bad:
                _raise_bad_targets(n_bad, n_cols, ignore_index)
            return
        self.count = torch.empty(1, dtype=torch.float32, pin_memory=True)
        self.count.copy_(scales[3:], non_blocking=True)
        self.ready = torch.cuda.Event()
        self.ready.record()
        self.pending = True

    def finish(self) -> None:
        if not self.pending:
            return
        self.pending = False
        self.ready.synchronize()
        n_bad = int(self.count.item())
        if n_bad:
            _raise_bad_targets(n_bad, self.n_cols, self.ignore_index)


def _loss_scales_torch(
    target: torch.Tensor, weight: torch.Tensor | None, ignore_index: int, reduction: str, n_cols: int
) -> torch.Tensor:
    valid = target != ignore_index
    in_range = (target >= 0) & (target < n_cols)
    count = valid.sum().float()
    bad = (valid & ~in_range).sum().float()
    weight_sum = count.new_tensor(float(n_cols)) if weight is None else weight.float().sum()
    one = count.new_ones(())
    ce_scale, z_scale = one, one
    if reduction == "mean":
        denom = count
        if weight is not None:
            ok = valid & in_range
            denom = (weight.float()[torch.where(ok, target, 0)] * ok).sum()
        ce_scale = 1.0 / torch.where(denom == 0, one, denom)
        z_scale = 1.0 / count.clamp(min=1.0)
    return torch.stack([ce_scale, z_scale, weight_sum, bad])


def loss_scales(
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
    reduction: str,
    n_cols: int,
    triton_ok: bool,
) -> torch.Tensor:
    """fp32 [scale of ce, scale of z-loss, sum of class weights, number of bad targets] (``TargetCheck``
    raises on the last)."""
    if triton_ok and target.numel() > 0:
        weight = weight.contiguous() if weight is not None else None  # the kernel reads it with unit stride
        scales = torch.empty(4, dtype=torch.float32, device=target.device)
        _loss_scales_kernel[(1,)](
            target, target.stride(0), weight if weight is not None else scales, scales,
            target.shape[0], n_cols, ignore_index,
            MEAN=reduction == "mean", HAS_WEIGHT=weight is not None, BLOCK_R=1024, BLOCK_V=4096, num_warps=4,
        )  # fmt: skip
    else:
        scales = _loss_scales_torch(target, weight, ignore_index, reduction, n_cols)
    return scales


def _cross_entropy_rows_torch(
    logits, grad, target, weight, scales, row_scale, ignore_index, label_smoothing, lse_square_scale, softcap
):
    """The kernel's math in PyTorch: per-row ce and z-loss; writes the gradient into ``grad`` if given."""
    n_cols = logits.shape[1]
    x = logits.float()
    z = softcap * torch.tanh(x / softcap) if softcap else x
    logp = torch.log_softmax(z, dim=1)
    lse = torch.logsumexp(z, dim=1)
    valid = target != ignore_index
    in_range = (target >= 0) & (target < n_cols)
    t = torch.where(in_range, target, 0).long()
    logp_t = logp.gather(1, t[:, None]).squeeze(1)
    w = weight.float() if weight is not None else None
    w_t = w[t] if w is not None else torch.ones_like(lse)
    weight_sum = scales[2]
    ce = -(1.0 - label_smoothing) * w_t * logp_t
    if label_smoothing:
        ce = ce - label_smoothing / n_cols * ((logp * w).sum(1) if w is not None else logp.sum(1))
    zl = lse_square_scale * lse * lse
    nan = torch.full_like(ce, float("nan"))
    ce = torch.where(valid, torch.where(in_range, ce, nan), torch.zeros_like(ce))
    zl = torch.where(valid, zl, torch.zeros_like(zl))
    if grad is not None:
        ce_scale, z_scale = scales[0], scales[1]
        rs = row_scale.float() if row_scale is not None else torch.ones_like(lse)
        coef_t = ce_scale * rs * (1.0 - label_smoothing) * w_t
        coef_p = coef_t + ce_scale * rs * (label_smoothing / n_cols) * weight_sum
        coef_p = coef_p + z_scale * rs * 2.0 * lse_square_scale * lse
        coef_p = torch.where(in_range, coef_p, torch.full_like(coef_p, float("nan")))
        g = coef_p[:, None] * torch.exp(logp)
        g.scatter_add_(1, t[:, None], -coef_t[:, None])
        if label_smoothing:
            coef_w = (ce_scale * rs * label_smoothing / n_cols)[:, None]
            g = g - coef_w * (w[None, :] if w is not None else 1.0)
        if softcap:
            g = g * (1.0 - (z / softcap) ** 2)
        g = torch.where(valid[:, None], g, torch.zeros_like(g))
        grad.copy_(g)
    return ce, zl


def cross_entropy_rows(
    logits: torch.Tensor,
    grad: torch.Tensor | None,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    scales: torch.Tensor,
    row_scale: torch.Tensor | None,
    ignore_index: int,
    label_smoothing: float,
    lse_square_scale: float,
    softcap: float,
    ce: torch.Tensor | None = None,
    zl: torch.Tensor | None = None,
    skip_if_bad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row ce and z-loss (fp32) of 2-D ``logits``; writes the gradient into ``grad`` (may be ``logits``).

    ``scales`` comes from ``loss_scales``; ``row_scale`` (optional, one value per row) multiplies the
    gradient of each row. ``softcap`` 0 means none. ``ce`` and ``zl`` (optional, fp32, contiguous) receive
    the per-row values. With ``skip_if_bad`` the kernel writes nothing (neither the gradient nor ce, zl)
    when ``scales`` counts bad targets (see ``TargetCheck``). Used by the fused linear cross entropy too.
    """
    n_rows, n_cols = logits.shape
    if logits.stride(1) != 1 and n_cols > 1:  # the kernel reads (and may overwrite) rows with unit stride
        if grad is logits:
            raise ValueError("logits to be overwritten with the gradient must have unit stride along classes")
        logits = logits.contiguous()
    if grad is not None and grad is not logits and grad.stride(1) != 1 and n_cols > 1:
        raise ValueError("grad must have unit stride along classes")
    weight = weight.contiguous() if weight is not None else None
    if n_rows == 0 or not use_triton("cross_entropy", logits):
        ce_t, zl_t = _cross_entropy_rows_torch(
            logits, grad, target, weight, scales, row_scale, ignore_index, label_smoothing,
            lse_square_scale, softcap,
        )  # fmt: skip
        if ce is None:
            return ce_t, zl_t
        ce.copy_(ce_t)
        zl.copy_(zl_t)
        return ce, zl
    if ce is None:
        ce = torch.empty(n_rows, dtype=torch.float32, device=logits.device)
        zl = torch.empty(n_rows, dtype=torch.float32, device=logits.device)
    write_grad = grad is not None
    g = grad if write_grad else logits
    block, vec, lanes, warps = _launch_shape(n_cols, logits.element_size())
    # Peel each row's unaligned head when rows start off 16-byte alignment (an odd vocabulary: Granite's
    # 49159, OLMo 3's 100278) and the gradient rows are off by as much (the same stride modulo vec).
    stride_x, stride_g = logits.stride(0), g.stride(0)
    peel = PEEL_UNALIGNED_ROWS and vec > 1 and n_rows > 1 and n_cols >= vec
    peel = peel and stride_x % vec != 0 and stride_x % vec == stride_g % vec
    evict = ("evict_last", "evict_first") if L2_HINTS else ("", "")
    n_programs = n_rows
    if PROGRAMS_PER_SM > 0:
        n_programs = min(n_rows, PROGRAMS_PER_SM * multiprocessor_count(logits.device))
    _cross_entropy_kernel[(n_programs,)](
        logits, logits.stride(0), g, g.stride(0), target, target.stride(0),
        weight if weight is not None else scales,
        row_scale if row_scale is not None else scales, row_scale.stride(0) if row_scale is not None else 0,
        scales, ce, zl, n_rows, n_cols, n_programs, ignore_index, label_smoothing, lse_square_scale, softcap,
        HAS_WEIGHT=weight is not None, HAS_SMOOTHING=label_smoothing > 0, HAS_Z=lse_square_scale != 0,
        HAS_SOFTCAP=softcap > 0, HAS_ROW_SCALE=row_scale is not None, WRITE_GRAD=write_grad,
        WARPS=warps, LANES=lanes, VEC=vec, BLOCK=block, EVICT1=evict[0], EVICT2=evict[1],
        SKIP_IF_BAD=skip_if_bad, PEEL=peel, num_warps=warps,
    )  # fmt: skip
    return ce, zl


def reduce_loss(
    ce: torch.Tensor, zl: torch.Tensor, scales: torch.Tensor, reduction: str, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, z-loss) from the per-row values, as the reduction asks; the loss includes the z-loss."""
    if reduction == "none":
        return (ce + zl).to(dtype), zl.to(dtype)
    ce_sum, z_sum = ce.sum(), zl.sum()
    if reduction == "mean":
        ce_sum, z_sum = ce_sum * scales[0], z_sum * scales[1]
    return (ce_sum + z_sum).to(dtype), z_sum.to(dtype)


def _forward_impl(
    logits, grad, target, weight, ignore_index, label_smoothing, lse_square_scale, softcap, reduction
):
    triton_ok = use_triton("cross_entropy", logits)
    scales = loss_scales(target, weight, ignore_index, reduction, logits.shape[1], triton_ok)
    check = TargetCheck(scales, logits.shape[1], ignore_index)
    ce, zl = cross_entropy_rows(
        logits, grad, target, weight, scales, None, ignore_index, label_smoothing, lse_square_scale, softcap,
        skip_if_bad=check.pending,
    )  # fmt: skip
    # The reduction's launches go ahead of the wait: the fewer host steps after it, the less the GPU idles
    # once the row kernel is done (on bad targets the reduced values are discarded with the raise).
    loss = reduce_loss(ce, zl, scales, reduction, logits.dtype)
    check.finish()
    return loss


def scale_rows_(grad: torch.Tensor, grad_output: torch.Tensor) -> None:
    """grad (2-D) *= grad_output (a scalar, or one value per row), in place; rows times 1 are skipped."""
    n_rows, n_cols = grad.shape
    if n_rows == 0 or n_cols == 0:
        return
    if not use_triton("cross_entropy", grad):
        go = grad_output.float().reshape(-1, 1) if grad_output.dim() else grad_output.float()
        grad.copy_(grad.float() * go)
        return
    go = grad_output.reshape(-1)
    stride_go = go.stride(0) if grad_output.dim() else 0
    block, _vec, _lanes, warps = _launch_shape(n_cols, grad.element_size())
    _scale_rows_kernel[(n_rows,)](grad, grad.stride(0), go, stride_go, n_cols, BLOCK=block, num_warps=warps)


# --- torch.library registration: opaque to torch.compile, so no graph break --------------------------


def _loss_like(logits: torch.Tensor, reduction: str) -> torch.Tensor:
    return logits.new_empty((logits.shape[0],) if reduction == "none" else ())


@liger_op("liger::cross_entropy_forward", mutates_args=())
def cross_entropy_forward(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
    label_smoothing: float,
    lse_square_scale: float,
    softcap: float,
    reduction: str,
    compute_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, z-loss, gradient in a new buffer -- empty when not ``compute_grad``); logits untouched."""
    grad = torch.empty_like(logits, memory_format=torch.contiguous_format) if compute_grad else None
    loss, z = _forward_impl(
        logits, grad, target, weight, ignore_index, label_smoothing, lse_square_scale, softcap, reduction
    )
    return loss, z, grad if grad is not None else logits.new_empty(0)


@cross_entropy_forward.register_fake
def _(
    logits, target, weight, ignore_index, label_smoothing, lse_square_scale, softcap, reduction, compute_grad
):
    grad = (
        torch.empty_like(logits, memory_format=torch.contiguous_format)
        if compute_grad
        else logits.new_empty(0)
    )
    return _loss_like(logits, reduction), _loss_like(logits, reduction), grad


@liger_op("liger::cross_entropy_forward_inplace", mutates_args=("logits",))
def cross_entropy_forward_inplace(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
    label_smoothing: float,
    lse_square_scale: float,
    softcap: float,
    reduction: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, z-loss); overwrites ``logits`` (rows with unit stride) with the gradient of the loss."""
    return _forward_impl(
        logits, logits, target, weight, ignore_index, label_smoothing, lse_square_scale, softcap, reduction
    )


@cross_entropy_forward_inplace.register_fake
def _(logits, target, weight, ignore_index, label_smoothing, lse_square_scale, softcap, reduction):
    return _loss_like(logits, reduction), _loss_like(logits, reduction)


@liger_op("liger::cross_entropy_scale_grad_", mutates_args=("grad",))
def cross_entropy_scale_grad_(grad: torch.Tensor, grad_output: torch.Tensor) -> None:
    """Backward: grad *= grad_output in place (scalar, or per row for reduction="none")."""
    scale_rows_(grad, grad_output)


@cross_entropy_scale_grad_.register_fake
def _(grad, grad_output):
    return None


class _CrossEntropyFunction(torch.autograd.Function):
    """Autograd around the ops above: a custom op that mutates an input cannot have its own autograd."""

    @staticmethod
    def forward(
        ctx,
        logits,
        target,
        weight,
        ignore_index,
        label_smoothing,
        lse_square_scale,
        softcap,
        reduction,
        inplace,
    ):
        args = (target, weight, ignore_index, label_smoothing, lse_square_scale, softcap, reduction)
        if inplace:
            loss, z = cross_entropy_forward_inplace(logits, *args)
            grad = logits
        else:
            loss, z, grad = cross_entropy_forward(logits, *args, True)
        ctx.save_for_backward(grad)
        ctx.graph_anchors = (graph_anchor(logits),)
        ctx.mark_non_differentiable(z)
        return loss, z

    @staticmethod
    @first_derivative_only("liger::cross_entropy")
    def backward(ctx, grad_loss, _grad_z):
        (grad,) = ctx.saved_tensors
        if graph_retained():  # another backward may read the kept gradient (retained graph, or traced)
            scale = grad_loss.reshape(-1, 1) if grad_loss.dim() else grad_loss
            return (grad * scale).to(grad.dtype), None, None, None, None, None, None, None, None
        cross_entropy_scale_grad_(grad, grad_loss)
        return grad, None, None, None, None, None, None, None, None


class _CrossEntropyGradTransformFunction(torch.autograd.Function):
    """The same under torch.func.grad / jacrev, which need a separate setup_context and no mutation of
    inputs: the gradient goes to a fresh buffer (an extra, non-differentiable output) and the backward
    scales a copy of it."""

    generate_vmap_rule = True  # vmap of grad (per-sample gradients): see _grad_transform_function

    @staticmethod
    def forward(logits, target, weight, ignore_index, label_smoothing, lse_square_scale, softcap, reduction):
        args = (target, weight, ignore_index, label_smoothing, lse_square_scale, softcap, reduction)
        return cross_entropy_forward(logits, *args, True)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _loss, z, grad = output
        ctx.save_for_backward(grad)
        ctx.graph_anchors = (graph_anchor(inputs[0]),)
        ctx.mark_non_differentiable(z, grad)

    @staticmethod
    def jvp(ctx, *tangents):
        raise RuntimeError(no_forward_mode_message("liger::cross_entropy"))

    @staticmethod
    @first_derivative_only("liger::cross_entropy")
    def backward(ctx, grad_loss, _grad_z, _grad_grad):
        (grad,) = ctx.saved_tensors
        scale = grad_loss.reshape(-1, 1) if grad_loss.dim() else grad_loss
        return (grad * scale).to(grad.dtype), None, None, None, None, None, None, None


def check_loss_options(
    reduction: str, label_smoothing: float, softcap: float | None, lse_square_scale: float
) -> None:
    """Clear errors for the options the cross-entropy losses share (functions and modules alike)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    if softcap is not None and not softcap > 0:
        raise ValueError(f"softcap must be positive (or None), got {softcap}")
    if lse_square_scale < 0:
        raise ValueError(f"lse_square_scale must be non-negative, got {lse_square_scale}")


def _may_overwrite(logits: torch.Tensor) -> bool:
    """Whether the gradient may be written over ``logits``: only over an intermediate of autograd.

    A leaf (or a view of one) is a tensor the caller made and may use again, e.g. logits optimized
    directly: overwriting it would make their next step silently wrong, so it gets a fresh buffer.
    """
    root = logits._base if logits._base is not None else logits
    return not root.is_leaf


def _check_inputs(
    logits, target, weight, ignore_index, label_smoothing, lse_square_scale, softcap, reduction
):
    check_floating("input", logits)
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(
            f"target must hold class indices (an integer tensor), got dtype {target.dtype}; "
            "class probabilities (soft labels) are not supported"
        )
    if weight is not None:
        check_floating("weight", weight)
    check_same_device(input=logits, target=target, weight=weight)
    check_loss_options(reduction, label_smoothing, softcap, lse_square_scale)


def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    lse_square_scale: float = 0.0,
    softcap: float | None = None,
    return_z_loss: bool = False,
    inplace: bool | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Cross entropy of ``input`` logits against class indices ``target`` (shapes as in torch).

    ``input`` is (C,), (N, C) or (N, C, d1, ...), ``target`` (), (N,) or (N, d1, ...). Returns the loss
    (shape of ``target`` for reduction="none", else a scalar, in ``input``'s dtype), and with
    ``return_z_loss`` also the z-loss part (already included in the loss; returned detached, for logging).

    Where the gradient goes (it is computed in the forward) when one is needed:
      ``inplace=None`` (default): over ``input`` when it is an intermediate of autograd (the output of
        an ``lm_head``, an upcast copy...), so the pass needs almost no memory; read ``input`` before
        the call (or pass a copy) if you need its values afterwards. A leaf tensor, or a view of one --
        a tensor the caller made and may use again, e.g. logits optimized directly -- is never
        overwritten: its gradient gets a fresh buffer.
      ``inplace=True``: over ``input`` even when it is a leaf (the caller will not read it again).
      ``inplace=False``: always into a fresh buffer (one more ``input``-sized tensor until backward).
    ``input`` is overwritten only when it has unit stride along classes and non-overlapping rows
    (otherwise a contiguous copy is made and that is overwritten). Without a gradient (no_grad, or
    ``requires_grad`` false) ``input`` is only read.
    """
    _check_inputs(input, target, weight, ignore_index, label_smoothing, lse_square_scale, softcap, reduction)
    if input.dim() == 0:
        raise ValueError("input must have a class dim, got a 0-d tensor")
    n_classes = input.shape[0] if input.dim() == 1 else input.shape[1]
    expected = () if input.dim() == 1 else (input.shape[0], *input.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"target must have shape {expected} for input of shape {tuple(input.shape)}, got {tuple(target.shape)}"
        )
    if n_classes == 0:
        raise ValueError("input must have at least one class")
    if weight is not None and tuple(weight.shape) != (n_classes,):
        raise ValueError(f"weight must have shape ({n_classes},), got {tuple(weight.shape)}")

    if input.dim() == 1:
        logits = input.unsqueeze(0)
    elif input.dim() == 2:
        logits = input
    else:
        logits = input.movedim(1, -1).reshape(-1, n_classes)
    flat_target = target.reshape(-1)
    n_rows = logits.shape[0]
    # The kernel needs unit stride along classes and rows that do not overlap.
    if logits.stride(1) != 1 or (n_rows > 1 and logits.stride(0) < n_classes):
        logits = logits.contiguous()
    if weight is not None:
        weight = weight.contiguous()

    args = (
        flat_target, weight, int(ignore_index), float(label_smoothing), float(lse_square_scale),
        float(softcap or 0.0), reduction,
    )  # fmt: skip
    # Under any torch.func transform (grad, jacrev, vmap of grad...) the Function without mutation.
    under_func = not torch.compiler.is_compiling() and torch._C._are_functorch_transforms_active()
    if torch.is_grad_enabled() and logits.requires_grad and under_func:
        loss, z, _grad = _CrossEntropyGradTransformFunction.apply(logits, *args)
    elif torch.is_grad_enabled() and logits.requires_grad:
        overwrite = _may_overwrite(logits) if inplace is None else bool(inplace)
        loss, z = _CrossEntropyFunction.apply(logits, *args, overwrite)
    else:
        loss, z, _ = cross_entropy_forward(logits, *args, False)
    if reduction == "none":
        loss, z = loss.view(target.shape), z.view(target.shape)
    return (loss, z) if return_z_loss else loss


def cross_entropy_with_stats(
    _input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    lse_square_scale: float = 0.0,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    softcap: float | None = None,
    return_z_loss: bool = False,
    return_token_accuracy: bool = False,
    return_predicted_tokens: bool = False,
    inplace: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """``cross_entropy`` returning (loss, z_loss, token_accuracy, predicted_tokens), each of the last
    three None unless asked for (see ``liger_kernel.ops.token_stats``), as Liger Kernel 0.8 does."""
    predicted = None
    if return_token_accuracy or return_predicted_tokens:  # before the gradient overwrites _input
        check_floating("input", _input)
        rows = _input.unsqueeze(0) if _input.dim() == 1 else _input.movedim(1, -1)
        predicted = predicted_tokens(rows.reshape(-1, rows.shape[-1]), target.reshape(-1), ignore_index)
    loss, z_loss = cross_entropy(
        _input, target, weight, ignore_index, reduction, label_smoothing, lse_square_scale, softcap,
        return_z_loss=True, inplace=inplace,
    )  # fmt: skip
    accuracy = None
    if return_token_accuracy:
        accuracy = token_accuracy(predicted, target.reshape(-1), ignore_index, reduction)
    return (
        loss,
        z_loss if return_z_loss else None,
        accuracy,
        predicted if return_predicted_tokens else None,
    )


class LigerCrossEntropyFunction:
    """Liger Kernel 0.8's entry point: ``apply(_input, target, weight, ignore_index=-100,
    lse_square_scale=0.0, label_smoothing=0.0, reduction="mean", softcap=None, return_z_loss=False,
    return_token_accuracy=False, return_predicted_tokens=False)`` returns the 4-tuple of
    ``cross_entropy_with_stats``. Like the reference it writes the gradient over ``_input`` even when
    that is a leaf (``inplace=True``).
    """

    apply = staticmethod(functools.partial(cross_entropy_with_stats, inplace=True))


class _RowKernelLaunch:
    """``liger_cross_entropy_kernel[grid](X_ptr=..., Y_ptr=..., loss_ptr=..., ...)``: Liger Kernel 0.8's
    raw row-kernel launch (keyword arguments as there), run through ``cross_entropy``.

    As there, each row of ``X_ptr`` (rows, n_cols) is overwritten with the gradient of the loss and
    ``loss_ptr`` gets the per-row loss, divided for reduction="mean" by ``sum_non_ignore_weight`` (class
    weights) or ``n_non_ignore``; ``z_loss_ptr``, ``token_accuracy_ptr`` and ``predicted_tokens_ptr`` are
    filled when their ``RETURN_*`` flag is set. The grid and launch options (BLOCK_SIZE, num_warps...)
    are ignored. With class weights, a z-loss and reduction="mean" (two divisors) it raises.
    """

    def __getitem__(self, grid: Any) -> Callable[..., None]:
        return self._launch

    @staticmethod
    def _launch(
        *, X_ptr, Y_ptr, weight_ptr, loss_ptr, z_loss_ptr, n_cols, n_non_ignore, sum_non_ignore_weight,
        ignore_index, lse_square_scale, label_smoothing, reduction, softcap, RETURN_Z_LOSS, HAS_WEIGHT,
        HAS_SOFTCAPPING, HAS_GRADIENTS=True, token_accuracy_ptr=None, predicted_tokens_ptr=None,
        RETURN_TOKEN_ACCURACY=False, RETURN_PREDICTED_TOKENS=False, **_launch_options,
    ) -> None:  # fmt: skip
        weight = weight_ptr if HAS_WEIGHT else None
        if weight is not None and lse_square_scale and reduction == "mean":
            raise NotImplementedError(
                "liger_cross_entropy_kernel: class weights with a z-loss and mean reduction"
            )
        logits = X_ptr.view(-1, n_cols)
        target = Y_ptr.view(-1)
        predicted = predicted_tokens(logits, target, ignore_index)
        with torch.enable_grad():
            x = logits.detach().clone().requires_grad_(bool(HAS_GRADIENTS))
            loss, z_loss = cross_entropy(
                x, target, weight, ignore_index, "none", label_smoothing, lse_square_scale,
                softcap if HAS_SOFTCAPPING else None, return_z_loss=True, inplace=False,
            )  # fmt: skip
            divisor = float(sum_non_ignore_weight if weight is not None else n_non_ignore)
            if reduction == "mean":
                loss, z_loss = loss / max(divisor, 1.0), z_loss / max(float(n_non_ignore), 1.0)
            if HAS_GRADIENTS:
                (grad,) = torch.autograd.grad(loss.sum(), x)
                logits.copy_(grad)
        loss_ptr.view(-1).copy_(loss.detach())
        if RETURN_Z_LOSS:
            z_loss_ptr.view(-1).copy_(z_loss)
        if RETURN_TOKEN_ACCURACY:
            token_accuracy_ptr.view(-1).copy_(token_accuracy(predicted, target, ignore_index, "none"))
        if RETURN_PREDICTED_TOKENS:
            predicted_tokens_ptr.view(-1).copy_(predicted)


liger_cross_entropy_kernel = _RowKernelLaunch()
