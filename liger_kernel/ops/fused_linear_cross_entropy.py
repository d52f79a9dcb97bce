"""Fused linear + cross entropy: loss(x @ W^T + b, target) without ever holding the (N, V) logits.

Forward, over chunks of rows of x (N, H) (chunk logits in x's dtype, reused buffer of chunk x V):
    logits_c  = x_c @ W^T (+ b)                           one matmul into the chunk buffer
    dlogits_c = the cross entropy kernel, run in place on logits_c (ops/cross_entropy.py: online
                logsumexp, softcap, label smoothing, class weight, z-loss, ignore_index), which also
                writes the per-row losses
    dx_c      = dlogits_c @ W                             written into its rows of dx
    dW       += dlogits_c^T @ x_c                         fp32 accumulator with accum_dtype=torch.float32
                                                          (or fp32 weights), else in W's dtype
    db       += sum over rows of dlogits_c (fp32)
The loss reduction and its denominators are those of ``cross_entropy`` (computed from the targets before
the first chunk, so the gradients come out already divided by them).

Reductions "mean" and "sum": all gradients are made in the forward and kept; backward multiplies them by
the incoming scalar in place (a no-op launch when it is exactly 1), or into new tensors when the graph
is retained for another backward (retain_graph=True: each backward then gets its own exact result) or
the backward is traced (torch.compile: a compiled backward cannot tell whether the graph is retained).
Reduction "none": the incoming gradient is one value per row, which the kept dW cannot absorb, so the
forward only computes the losses and the backward recomputes the chunks with each row's gradient
scaled by its incoming value (one more x @ W^T matmul).

Memory beyond the inputs: dx (N x H), dW (V x H; fp32 with fp32 accumulation), one chunk of logits and
two fp32 values per row. ``chunk_size`` (rows per chunk) defaults to ``flce_chunk_rows``: a cost model of
the chunk loop on the device (every chunk after the first re-reads and re-writes all of dW, a fixed cost
per chunk, against the chunk's three matmuls) picks the most chunks that keep the loop within
CHUNK_OVERHEAD_TARGET of one chunk's time, and a memory budget for the chunk's logits caps the rows
(``chunk_budget_bytes``, else $LIGER_FLCE_CHUNK_BUDGET_MIB, else ``default_chunk_budget``: half the
unchunked computation's memory, less dW and dx, and at least 256 MiB).
"""

from __future__ import annotations

import functools
import math
import os

import torch
import triton
import triton.language as tl

from liger_kernel.ops.cross_entropy import (
    TargetCheck,
    check_loss_options,
    cross_entropy_rows,
    loss_scales,
    reduce_loss,
)
from liger_kernel.ops.token_stats import linear_predicted_tokens, token_accuracy
from liger_kernel.ops.utils import (
    cdiv,
    check_floating,
    check_same_device,
    graph_anchor,
    graph_retained,
    liger_op,
    use_triton,
)

# Tuning knob (read at each call): bytes of one chunk of logits when chunk_size is not given.
# Memory against speed. H200 sweep, 8192 x 4096 -> 128256 bf16 (benchmark/sweep_kernels.py): chunks of
# 512/1024/2048/4096 rows took 45.0/43.3/40.1/40.9 ms a full pass. 2048 rows (512 MiB) is 3 ms faster,
# but then an 8192 x 32768 loss holds all its logits at once; 256 MiB keeps a chunk a small share.
CHUNK_LOGITS_BYTES = 256 * 2**20
_SCALE_BLOCK = 4096

# The chunk rule (``flce_chunk_rows``). Tuning knob: how much slower than a single chunk the chunk loop
# may be predicted to run (dW traffic, weight re-reads) in exchange for the memory that more chunks save.
CHUNK_OVERHEAD_TARGET = 0.05
# Environment variable: the memory budget (MiB) for one chunk of logits when the call gives none.
CHUNK_BUDGET_ENV = "LIGER_FLCE_CHUNK_BUDGET_MIB"
# Rates of the reference device, measured on one H200 (benchmark/NOTES.md, ANCHORS.md): bf16 matmul
# 8192^3 at 701 TFLOP/s and a device copy at 4.25 TB/s. Other GPUs: their peaks from the driver's
# properties (``device_rates``) times the H200's measured rates over its datasheet peaks (989 TFLOP/s
# dense bf16, 4.8 TB/s).
REFERENCE_RATES = (701e12, 4.25e12)  # (matmul FLOP/s, HBM bytes/s)
MATMUL_EFFICIENCY = 701 / 989
COPY_EFFICIENCY = 4.25 / 4.8
# Dense bf16 tensor-core FLOP per SM per clock, by compute capability major (Ampere 8, Hopper 9,
# Blackwell 10); unknown majors use Hopper's.
_TENSOR_FLOP_PER_SM_CLOCK = {8: 2048, 9: 4096, 10: 8192}
# CPU (and any device without CUDA properties): a nominal machine of 1 TFLOP/s and 100 GB/s. Only the
# ratio of the two matters to the rule, and on a CPU the chunk is a memory choice more than a speed one.
CPU_RATES = (1e12, 1e11)
# A chunk's rows are the M of its logits and dx matmuls: a multiple of the GEMM's row tile (256 for the
# large Hopper kernels in the profiles: nvjet 256 x 128) leaves no half-empty last tile. Measured on the
# H200 at 8192 x 4096 -> 128256: 1664 rows (6.5 tiles) 41.2 ms a full pass, 1536 rows 39.9 ms, 2048 rows
# 39.0 ms. Chunks of at most a tile round to 64 rows instead.
CHUNK_ROW_TILE = 256
# The chunk's logits buffer has a row stride that is a multiple of this many elements (128 bytes in bf16),
# whatever the vocabulary: with an odd vocabulary (Granite 49159, OLMo 3 100278) rows packed end to end
# start off 16-byte alignment, which the cross entropy kernel needs for vectorized loads and Hopper's GEMMs
# for their fastest kernels (the logits are C of the forward matmul, A of dx's and B of dW's). At most
# 63 unused columns per row.
LOGITS_ROW_ALIGN = 64


def _row_multiple(rows: int) -> int:
    return CHUNK_ROW_TILE if rows >= CHUNK_ROW_TILE else 64 if rows >= 64 else 1


def aligned_rows_buffer(rows: int, cols: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialized (rows, cols) tensor with unit column stride and a row stride of ``cols`` rounded up
    to LOGITS_ROW_ALIGN elements (a view of a wider buffer when ``cols`` is not a multiple of it)."""
    stride = cdiv(cols, LOGITS_ROW_ALIGN) * LOGITS_ROW_ALIGN
    buf = torch.empty((rows, stride), dtype=dtype, device=device)
    return buf if stride == cols else buf[:, :cols]


@triton.jit
def _scale_kernel(X, n, GO, BLOCK: tl.constexpr):
    # X (flat) *= GO[0] in place; every program exits at once when GO[0] is exactly 1.
    go = tl.load(GO).to(tl.float32)
    if go != 1.0:
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(X + offs, (x * go).to(X.dtype.element_ty), mask=mask)


def default_chunk_size(
    n_rows: int, vocab_size: int, element_size: int, budget_bytes: int | None = None
) -> int:
    """Rows per chunk: at most ``budget_bytes`` (default CHUNK_LOGITS_BYTES) of logits at
    ``element_size`` bytes per logit, a multiple of the row tile (CHUNK_ROW_TILE; 64 below it), chunks
    of even size."""
    budget = CHUNK_LOGITS_BYTES if budget_bytes is None else budget_bytes
    budget_rows = max(1, budget // max(1, vocab_size * element_size))
    budget_rows -= budget_rows % _row_multiple(budget_rows)
    n_chunks = cdiv(max(n_rows, 1), budget_rows)
    rows = cdiv(max(n_rows, 1), n_chunks)
    multiple = _row_multiple(rows)
    rows = min(budget_rows, cdiv(rows, multiple) * multiple)
    return max(1, min(rows, n_rows))


def device_rates(device: torch.device | str | None) -> tuple[float, float]:
    """(matmul FLOP/s, memory bytes/s) the chunk rule assumes for ``device``.

    CUDA: the device's peaks from its properties (SMs x SM clock x dense bf16 FLOP per SM clock, memory
    clock x 2 x bus width), times the H200's measured-over-peak efficiencies (MATMUL_EFFICIENCY,
    COPY_EFFICIENCY); REFERENCE_RATES (the H200's measured rates) when the properties cannot be read.
    Approximate for GPUs whose per-SM rate differs from their architecture's data-center part (the
    table is by compute capability major). Other devices: CPU_RATES.
    """
    device = torch.device(device if device is not None else "cpu")
    if device.type != "cuda":
        return CPU_RATES
    index = device.index if device.index is not None else torch.cuda.current_device()
    return _cuda_rates(index)


@functools.cache
def _cuda_rates(index: int) -> tuple[float, float]:
    try:
        from triton.runtime import driver

        props = driver.active.utils.get_device_properties(index)
        major = torch.cuda.get_device_capability(index)[0]
        sms = props["multiprocessor_count"]
        peak_flops = sms * props["sm_clock_rate"] * 1e3 * _TENSOR_FLOP_PER_SM_CLOCK.get(major, 4096)
        peak_bytes = props["mem_clock_rate"] * 1e3 * 2 * props["mem_bus_width"] / 8  # double data rate
    except Exception:  # noqa: BLE001 - a driver without these properties: the reference device's rates
        return REFERENCE_RATES
    if not (peak_flops > 0 and peak_bytes > 0):
        return REFERENCE_RATES
    return peak_flops * MATMUL_EFFICIENCY, peak_bytes * COPY_EFFICIENCY


def resolve_chunk_budget(budget_bytes: int | None = None) -> int | None:
    """The memory budget for one chunk of logits: ``budget_bytes`` if given, else the environment
    variable LIGER_FLCE_CHUNK_BUDGET_MIB (MiB, a positive number), else None (the rule's default)."""
    if budget_bytes is not None:
        if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, int) or budget_bytes < 1:
            raise ValueError(f"chunk_budget_bytes must be a positive int (bytes), got {budget_bytes!r}")
        return budget_bytes
    text = os.environ.get(CHUNK_BUDGET_ENV, "").strip()
    if not text:
        return None
    try:
        mib = float(text)
    except ValueError:
        mib = math.nan
    if not (math.isfinite(mib) and mib > 0):
        raise ValueError(f"{CHUNK_BUDGET_ENV} must be a positive number of MiB, got {text!r}")
    return max(1, int(mib * 2**20))


def chunk_loop_seconds(
    n_rows: int,
    hidden: int,
    vocab: int,
    chunk_rows: int,
    element_size: int,
    accum_size: int,
    rates: tuple[float, float] = REFERENCE_RATES,
) -> float:
    """Predicted seconds of the chunk loop over ``n_rows`` rows in chunks of ``chunk_rows``.

    Per chunk of r rows (e = ``element_size``, a = ``accum_size`` bytes, F, B = ``rates``), each matmul at
    its roofline max(FLOP / F, bytes / B):
        logits = x_c W^T         2rHV FLOP, reads W (VH e) and x_c, writes the logits (rV e)
        cross entropy kernel     reads and writes the logits: 2 rV e / B
        dx_c = dlogits W         2rHV FLOP, reads dlogits and W (VH e) again, writes dx_c
        dW (+)= dlogits^T x_c    2rHV FLOP, reads dlogits and x_c; then its epilogue writes dW (VH a),
                                 and after the first chunk also reads it: 2 VH a / B, not overlapped
                                 with the main loop (NOTES.md: the measured chunk sweeps agree)
    So each chunk after the first costs a fixed 2 VH a bytes besides work proportional to its rows (and
    the W reads, hidden under the matmuls once r > F / B): more chunks, less memory (rV e of logits),
    more time. The bias gradient (V per chunk) is left out."""
    flops, bandwidth = rates
    e, a = element_size, accum_size

    def chunk(r: int, first: bool) -> float:
        mm = 2.0 * r * hidden * vocab / flops
        logits = max(mm, (vocab * hidden + r * hidden + r * vocab) * e / bandwidth)
        ce = 2.0 * r * vocab * e / bandwidth
        dx = max(mm, (r * vocab + vocab * hidden + r * hidden) * e / bandwidth)
        dw = max(mm, (r * vocab + r * hidden) * e / bandwidth)
        dw += (1 if first else 2) * vocab * hidden * a / bandwidth
        return logits + ce + dx + dw

    if n_rows <= 0:
        return 0.0
    rows = max(1, min(chunk_rows, n_rows))
    full, last = divmod(n_rows, rows)
    total = chunk(rows, True) + (full - 1) * chunk(rows, False) if full else 0.0
    if last:
        total += chunk(last, full == 0)
    return total


def flce_chunk_rows(
    n_rows: int,
    hidden: int,
    vocab: int,
    element_size: int,
    accum_size: int,
    device: torch.device | str | None = None,
    budget_bytes: int | None = None,
) -> int:
    """Rows per chunk of the fused loss: the cost rule, capped by the memory budget.

    The cost rule takes the most chunks k (rows: N / k rounded up to a multiple of the row tile, as even as
    that allows) whose ``chunk_loop_seconds`` on ``device``'s rates stays within CHUNK_OVERHEAD_TARGET of a
    single chunk's. The fixed cost of a chunk (dW read and written) against its matmuls is a F / (3 r B)
    of them: it depends on the rows r, dW's bytes a and the device's FLOP-to-byte ratio F / B, not on H
    or V, so on an H200 (F / B = 165) with bf16 dW the rule settles near 2000 rows for any vocabulary
    (fewer below hidden ~2048, where the cross entropy kernel's traffic makes a single chunk slower and
    its 5 % larger). What a row costs in memory does depend on V: ``budget_bytes`` (see
    ``resolve_chunk_budget``; default ``default_chunk_budget``) caps one chunk's logits, through
    ``default_chunk_size``. Always at least one row; non-decreasing in the budget.
    """
    budget = resolve_chunk_budget(budget_bytes)
    if budget is None:
        budget = default_chunk_budget(n_rows, hidden, vocab, element_size, accum_size)
    return min(
        cost_rule_rows(n_rows, hidden, vocab, element_size, accum_size, device_rates(device)),
        default_chunk_size(n_rows, vocab, element_size, budget),
    )


def kept_gradient_bytes(n_rows: int, hidden: int, vocab: int, element_size: int, accum_size: int) -> int:
    """Bytes of what a fused-linear loss keeps besides its chunks: dW (``accum_size`` per element) and dx."""
    return vocab * hidden * accum_size + n_rows * hidden * element_size


def default_chunk_budget(n_rows: int, hidden: int, vocab: int, element_size: int, accum_size: int) -> int:
    """Bytes one chunk of logits may take by default: what keeps the op's peak (dW, dx and the chunk) at
    half the unchunked computation's (all N x V logits, dW and dx in the input's dtype: torch.compile's
    measured peak at 8192 x 4096 -> 128256), and never less than CHUNK_LOGITS_BYTES."""
    unchunked = (n_rows * vocab + vocab * hidden + n_rows * hidden) * element_size
    held = kept_gradient_bytes(n_rows, hidden, vocab, element_size, accum_size)
    return max(CHUNK_LOGITS_BYTES, unchunked // 2 - held)


# The distillation and post-training losses' memory aim (issue 16): their peak at most this fraction of
# the plain computation's, the way TRL computes them without Liger (every token's logits at once).
EAGER_PEAK_FRACTION = 0.25
# What that plain computation holds per logit of each model besides the logits in the model's dtype:
# their fp32 copy and the fp32 log-softmax.
EAGER_FP32_BYTES_PER_LOGIT = 4 + 4


def eager_fraction_budget(
    tokens: int, hidden: int, vocab: int, element_size: int, accum_size: int, models: int = 1
) -> int:
    """Bytes the chunks' buffers may take so that a loss's peak (dW and dx, ``kept_gradient_bytes``, plus
    the chunks) stays at EAGER_PEAK_FRACTION of the plain computation's, which holds ``models`` models'
    tokens x vocab logits at ``element_size`` + EAGER_FP32_BYTES_PER_LOGIT bytes each. Can be negative
    (dW and dx alone exceed it)."""
    plain = tokens * vocab * models * (element_size + EAGER_FP32_BYTES_PER_LOGIT)
    held = kept_gradient_bytes(tokens, hidden, vocab, element_size, accum_size)
    return int(plain * EAGER_PEAK_FRACTION) - held


@functools.lru_cache(maxsize=1024)
def cost_rule_rows(
    n_rows: int, hidden: int, vocab: int, element_size: int, accum_size: int, rates: tuple[float, float]
) -> int:
    """Rows per chunk by the cost rule alone (no memory budget): the most chunks whose predicted
    ``chunk_loop_seconds`` stays within CHUNK_OVERHEAD_TARGET of one chunk's (see ``flce_chunk_rows``)."""
    n = max(n_rows, 1)

    def rows_of(k: int) -> int:
        rows = cdiv(n, k)
        multiple = _row_multiple(rows)
        return min(n, cdiv(rows, multiple) * multiple)

    def seconds(rows: int) -> float:
        return chunk_loop_seconds(n, hidden, vocab, rows, element_size, accum_size, rates)

    allowed = (1 + CHUNK_OVERHEAD_TARGET) * seconds(n)
    rows = n
    for k in range(2, n + 1):  # stops long before n: a chunk of r rows costs ~a F / (3 r B) more
        rows_k = rows_of(k)
        if rows_k >= rows:  # the same chunk after rounding to 64 rows
            continue
        if seconds(rows_k) > allowed:
            break
        rows = rows_k
    return rows


def _addmm_into(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor, first: bool) -> None:
    """acc (+)= a @ b, with acc possibly wider (fp32) than a and b, without an (M, N) temporary on GPU."""
    if acc.dtype == a.dtype:
        if first:
            torch.mm(a, b, out=acc)
        else:
            acc.addmm_(a, b)
        return
    if acc.is_cuda:
        try:  # cuBLAS: low-precision inputs, fp32 output/accumulator (torch >= 2.8)
            if first:
                torch.ops.aten.mm.dtype_out(a, b, acc.dtype, out=acc)
            else:
                torch.ops.aten.addmm.dtype_out(acc, a, b, acc.dtype, out=acc)
            return
        except (AttributeError, RuntimeError, NotImplementedError):
            pass
    if first:
        torch.mm(a.to(acc.dtype), b.to(acc.dtype), out=acc)
    else:
        acc.addmm_(a.to(acc.dtype), b.to(acc.dtype))


def _chunked(
    x: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    bias: torch.Tensor | None,
    ce_weight: torch.Tensor | None,
    scales: torch.Tensor,
    row_scale: torch.Tensor | None,
    ignore_index: int,
    lse_square_scale: float,
    label_smoothing: float,
    softcap: float,
    accum_fp32: bool,
    need_x: bool,
    need_w: bool,
    need_b: bool,
    chunk_size: int,
    chunk_budget: int,
):
    """Runs the chunks (``chunk_size`` rows each, 0: ``flce_chunk_rows`` with a logits budget of
    ``chunk_budget`` bytes, 0: its default); returns per-row ce and z-loss (fp32) and the gradients asked
    for (or None)."""
    n_rows, hidden = x.shape
    vocab = weight.shape[0]
    device = x.device
    ce = torch.empty(n_rows, dtype=torch.float32, device=device)
    zl = torch.empty(n_rows, dtype=torch.float32, device=device)
    write_grad = need_x or need_w or need_b
    grad_x = x.new_empty(x.shape) if need_x else None
    grad_w = None
    if need_w:
        w_dtype = torch.float32 if accum_fp32 else weight.dtype
        grad_w = torch.empty((vocab, weight.shape[1]), dtype=w_dtype, device=device)
        if n_rows == 0:
            grad_w.zero_()
    grad_b = torch.zeros(vocab, dtype=torch.float32, device=device) if need_b else None

    if chunk_size <= 0:  # auto; resolved here, where n_rows is concrete even under torch.compile
        accum_size = 4 if accum_fp32 else weight.element_size()
        chunk_size = flce_chunk_rows(
            n_rows, hidden, vocab, x.element_size(), accum_size, device, chunk_budget or None
        )
    rows = max(1, min(chunk_size, n_rows))
    buf = aligned_rows_buffer(rows, vocab, x.dtype, device)
    w_t = weight.t()
    with torch.autocast(device.type, enabled=False):  # the dtypes are chosen here, not by autocast
        for start in range(0, n_rows, rows):
            end = min(start + rows, n_rows)
            x_c = x[start:end]
            logits = buf[: end - start]
            if bias is None:
                torch.mm(x_c, w_t, out=logits)
            else:
                torch.addmm(bias, x_c, w_t, out=logits)
            cross_entropy_rows(
                logits, logits if write_grad else None, target[start:end], ce_weight, scales,
                None if row_scale is None else row_scale[start:end],
                ignore_index, label_smoothing, lse_square_scale, softcap, ce[start:end], zl[start:end],
            )  # fmt: skip
            if need_x:
                torch.mm(logits, weight, out=grad_x[start:end])
            if need_w:
                _addmm_into(grad_w, logits.t(), x_c, first=start == 0)
            if need_b:
                grad_b += logits.sum(0, dtype=torch.float32)
    if grad_w is not None:
        grad_w = grad_w.to(weight.dtype)
    if grad_b is not None:
        grad_b = grad_b.to(bias.dtype)
    return ce, zl, grad_x, grad_w, grad_b


def _scale_(t: torch.Tensor, grad_output: torch.Tensor) -> None:
    if t.numel() == 0:
        return
    # (The kernel walks t as one flat buffer: a strided t, only ever passed to the op directly, goes
    # through PyTorch.)
    if not use_triton("fused_linear_cross_entropy", t) or not t.is_contiguous():
        t.mul_(grad_output.to(t.dtype) if t.dtype != torch.float32 else grad_output.float())
        return
    n = t.numel()
    _scale_kernel[(cdiv(n, _SCALE_BLOCK),)](t, n, grad_output, BLOCK=_SCALE_BLOCK, num_warps=8)


# --- torch.library registration: opaque to torch.compile, so no graph break --------------------------


def _empty(t: torch.Tensor) -> torch.Tensor:
    return t.new_empty(0)


@liger_op("liger::fused_linear_cross_entropy_forward", mutates_args=())
def fused_linear_cross_entropy_forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    bias: torch.Tensor | None,
    ce_weight: torch.Tensor | None,
    ignore_index: int,
    lse_square_scale: float,
    label_smoothing: float,
    softcap: float,
    reduction: str,
    accum_fp32: bool,
    need_x: bool,
    need_w: bool,
    need_b: bool,
    chunk_size: int,
    chunk_budget: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, z-loss, dx, dW, db) -- each gradient empty when not asked for or reduction="none"."""
    if reduction == "none":
        need_x = need_w = need_b = False
    triton_ok = use_triton("fused_linear_cross_entropy", x)
    scales = loss_scales(target, ce_weight, ignore_index, reduction, weight.shape[0], triton_ok)
    # Only the op's own buffers are written before the check raises (see TargetCheck).
    check = TargetCheck(scales, weight.shape[0], ignore_index)
    ce, zl, gx, gw, gb = _chunked(
        x, weight, target, bias, ce_weight, scales, None, ignore_index, lse_square_scale, label_smoothing,
        softcap, accum_fp32, need_x, need_w, need_b, chunk_size, chunk_budget,
    )  # fmt: skip
    check.finish()
    loss, z = reduce_loss(ce, zl, scales, reduction, torch.float32)
    return (
        loss,
        z,
        gx if gx is not None else _empty(x),
        gw if gw is not None else _empty(weight),
        gb if gb is not None else _empty(weight),
    )


@fused_linear_cross_entropy_forward.register_fake
def _(x, weight, target, bias, ce_weight, ignore_index, lse_square_scale, label_smoothing, softcap,
      reduction, accum_fp32, need_x, need_w, need_b, chunk_size, chunk_budget):  # fmt: skip
    loss = x.new_empty((x.shape[0],) if reduction == "none" else (), dtype=torch.float32)
    grads = reduction != "none"
    return (
        loss,
        torch.empty_like(loss),
        x.new_empty(x.shape) if grads and need_x else _empty(x),
        weight.new_empty(weight.shape) if grads and need_w else _empty(weight),
        x.new_empty((weight.shape[0],), dtype=bias.dtype) if grads and need_b else _empty(weight),
    )


@liger_op("liger::fused_linear_cross_entropy_scale_grads_", mutates_args=("grad_x", "grad_w", "grad_b"))
def fused_linear_cross_entropy_scale_grads_(
    grad_x: torch.Tensor, grad_w: torch.Tensor, grad_b: torch.Tensor, grad_output: torch.Tensor
) -> None:
    """Backward of "mean"/"sum": the kept gradients *= the incoming scalar, in place."""
    for t in (grad_x, grad_w, grad_b):
        _scale_(t, grad_output)


@fused_linear_cross_entropy_scale_grads_.register_fake
def _(grad_x, grad_w, grad_b, grad_output):
    return None


@liger_op("liger::fused_linear_cross_entropy_backward", mutates_args=())
def fused_linear_cross_entropy_backward(
    grad_output: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    bias: torch.Tensor | None,
    ce_weight: torch.Tensor | None,
    ignore_index: int,
    lse_square_scale: float,
    label_smoothing: float,
    softcap: float,
    accum_fp32: bool,
    need_x: bool,
    need_w: bool,
    need_b: bool,
    chunk_size: int,
    chunk_budget: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward of reduction="none": recomputes the chunks with row i's gradient times grad_output[i]."""
    triton_ok = use_triton("fused_linear_cross_entropy", x)
    scales = loss_scales(target, ce_weight, ignore_index, "none", weight.shape[0], triton_ok)
    check = TargetCheck(scales, weight.shape[0], ignore_index)
    _ce, _zl, gx, gw, gb = _chunked(
        x, weight, target, bias, ce_weight, scales, grad_output, ignore_index, lse_square_scale,
        label_smoothing, softcap, accum_fp32, need_x, need_w, need_b, chunk_size, chunk_budget,
    )  # fmt: skip
    check.finish()
    return (
        gx if gx is not None else _empty(x),
        gw if gw is not None else _empty(weight),
        gb if gb is not None else _empty(weight),
    )


@fused_linear_cross_entropy_backward.register_fake
def _(grad_output, x, weight, target, bias, ce_weight, ignore_index, lse_square_scale, label_smoothing,
      softcap, accum_fp32, need_x, need_w, need_b, chunk_size, chunk_budget):  # fmt: skip
    return (
        x.new_empty(x.shape) if need_x else _empty(x),
        weight.new_empty(weight.shape) if need_w else _empty(weight),
        x.new_empty((weight.shape[0],), dtype=bias.dtype) if need_b else _empty(weight),
    )


def _setup_context(ctx, inputs, output):
    x, weight, target, bias, ce_weight = inputs[:5]
    (ignore_index, lse_square_scale, label_smoothing, softcap, reduction, accum_fp32,
     need_x, need_w, need_b, chunk_size, chunk_budget) = inputs[5:]  # fmt: skip
    _loss, z, gx, gw, gb = output
    ctx.mark_non_differentiable(z, gx, gw, gb)
    # Autograd would otherwise hand backward zero-filled gradients for these outputs: for dW a
    # second (V, H) buffer, the whole gap between the measured peak and the gradients' own size.
    ctx.set_materialize_grads(False)
    ctx.reduction = reduction
    ctx.options = (ignore_index, lse_square_scale, label_smoothing, softcap, accum_fp32)
    ctx.needs = (need_x, need_w, need_b)
    ctx.chunk_size = chunk_size
    ctx.chunk_budget = chunk_budget
    ctx.has_bias = bias is not None
    if reduction == "none":
        ctx.save_for_backward(x, weight, target, bias, ce_weight)
    else:
        ctx.save_for_backward(gx, gw, gb)
        # The inputs are not kept: these say what the kept gradients depend on (see first_derivative_only).
        ctx.graph_anchors = tuple(graph_anchor(t) for t in (x, weight, bias) if t is not None)


def _scaled_kept_grads(ctx, grad_loss: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The gradients kept by the forward ("mean"/"sum") times the incoming scalar ``grad_loss``: scaled in
    place (no memory beyond them) unless the graph is kept for another backward (``retain_graph=True``,
    which then gets them unscaled; or traced, see ``graph_retained``) or a torch.func transform runs
    (vmap has no rule for the in-place op); then new tensors."""
    kept = ctx.saved_tensors
    under_func = not torch.compiler.is_compiling() and torch._C._are_functorch_transforms_active()
    if under_func or graph_retained():
        return tuple((t * grad_loss).to(t.dtype) for t in kept)
    fused_linear_cross_entropy_scale_grads_(*kept, grad_loss)
    return kept


def _backward(ctx, grad_loss, _grad_z, _gx, _gw, _gb):
    need_x, need_w, need_b = ctx.needs
    if ctx.reduction == "none":
        x, weight, target, bias, ce_weight = ctx.saved_tensors
        gx, gw, gb = fused_linear_cross_entropy_backward(
            grad_loss,
            x,
            weight,
            target,
            bias,
            ce_weight,
            *ctx.options,
            need_x,
            need_w,
            need_b,
            ctx.chunk_size,
            ctx.chunk_budget,
        )
    else:
        gx, gw, gb = _scaled_kept_grads(ctx, grad_loss)
    return (
        gx if need_x else None,
        gw if need_w else None,
        None,
        gb if need_b and ctx.has_bias else None,
        *([None] * 12),
    )


fused_linear_cross_entropy_forward.register_autograd(_backward, setup_context=_setup_context)


def fused_linear_cross_entropy(
    input: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    bias: torch.Tensor | None = None,
    ignore_index: int = -100,
    lse_square_scale: float = 0.0,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    softcap: float | None = None,
    return_z_loss: bool = False,
    accum_dtype: torch.dtype | None = None,
    *,
    ce_weight: torch.Tensor | None = None,
    chunk_size: int | None = None,
    chunk_budget_bytes: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Cross entropy of ``input @ weight.T + bias`` against ``target``, never materializing the logits.

    ``input`` is (..., H), ``weight`` (V, H), ``bias`` (V,), ``target`` the leading shape of ``input``
    with class indices (or ``ignore_index``), ``ce_weight`` an optional (V,) class weight. Options as in
    ``cross_entropy``; the loss (shape of ``target`` for reduction="none", else a scalar) is fp32
    (as Hugging Face's loss over upcast logits), and ``return_z_loss`` also returns the z-loss (included in the loss; detached).
    ``accum_dtype=torch.float32`` accumulates the weight (and bias) gradient in fp32 across chunks;
    ``chunk_size`` is the number of rows per chunk (default: ``flce_chunk_rows``, the cost rule, whose
    memory budget for one chunk of logits is ``chunk_budget_bytes``, else $LIGER_FLCE_CHUNK_BUDGET_MIB).
    """
    check_floating("input", input)
    check_floating("weight", weight)
    if bias is not None:
        check_floating("bias", bias)
    if ce_weight is not None:
        check_floating("ce_weight", ce_weight)
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"target must hold class indices (an integer tensor), got dtype {target.dtype}")
    check_same_device(input=input, weight=weight, target=target, bias=bias, ce_weight=ce_weight)
    if input.dim() < 1 or weight.dim() != 2 or input.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"input (..., H) and weight (V, H) must share H, got input {tuple(input.shape)} and "
            f"weight {tuple(weight.shape)}"
        )
    vocab, hidden = weight.shape
    if vocab == 0 or hidden == 0:
        raise ValueError(f"weight must be non-empty, got shape {tuple(weight.shape)}")
    device_type = input.device.type
    if device_type != "meta" and torch.is_autocast_enabled(device_type):  # (no autocast for meta)
        # Under autocast the matmuls run in its dtype (as F.linear would); the casts are differentiable,
        # so the gradients come back in the original dtypes.
        amp_dtype = torch.get_autocast_dtype(device_type)
        input, weight = input.to(amp_dtype), weight.to(amp_dtype)
        bias = None if bias is None else bias.to(amp_dtype)
    if input.dtype != weight.dtype:
        raise TypeError(f"input and weight must have one dtype, got {input.dtype} and {weight.dtype}")
    if bias is not None:
        if tuple(bias.shape) != (vocab,):
            raise ValueError(f"bias must have shape ({vocab},), got {tuple(bias.shape)}")
        if bias.dtype != input.dtype:
            raise TypeError(f"bias must have input's dtype {input.dtype}, got {bias.dtype}")
    if ce_weight is not None and tuple(ce_weight.shape) != (vocab,):
        raise ValueError(f"ce_weight must have shape ({vocab},), got {tuple(ce_weight.shape)}")
    if tuple(target.shape) != tuple(input.shape[:-1]):
        raise ValueError(
            f"target must have shape {tuple(input.shape[:-1])} (input's leading dims), got {tuple(target.shape)}"
        )
    check_loss_options(reduction, label_smoothing, softcap, lse_square_scale)
    if accum_dtype is not None and accum_dtype not in (torch.float32, weight.dtype):
        raise ValueError(f"accum_dtype must be None, torch.float32 or weight's dtype, got {accum_dtype}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    budget = resolve_chunk_budget(chunk_budget_bytes)  # validated here, before any work

    x = input.reshape(-1, hidden)
    flat_target = target.reshape(-1)
    grad_on = torch.is_grad_enabled()
    loss, z, *_ = fused_linear_cross_entropy_forward(
        x, weight, flat_target, bias, None if ce_weight is None else ce_weight.contiguous(),
        int(ignore_index), float(lse_square_scale), float(label_smoothing), float(softcap or 0.0), reduction,
        accum_dtype == torch.float32 or weight.dtype == torch.float32,
        grad_on and input.requires_grad, grad_on and weight.requires_grad,
        grad_on and bias is not None and bias.requires_grad, int(chunk_size or 0), int(budget or 0),
    )  # fmt: skip
    if reduction == "none":
        loss, z = loss.view(target.shape), z.view(target.shape)
    return (loss, z) if return_z_loss else loss


def fused_linear_cross_entropy_with_stats(
    _input: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    bias: torch.Tensor | None = None,
    ce_weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    lse_square_scale: float = 0.0,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    softcap: float | None = None,
    return_z_loss: bool = False,
    accum_dtype: torch.dtype | None = None,
    use_token_scaling: bool = False,
    return_token_accuracy: bool = False,
    return_predicted_tokens: bool = False,
    ce_impl: str | None = None,
    ce_mode: str | None = None,
    chunk_mem_const: int = 1,
    *,
    chunk_size: int | None = None,
    chunk_budget_bytes: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """``fused_linear_cross_entropy`` with Liger Kernel 0.8's options and its 4-tuple result
    (loss, z_loss, token_accuracy, predicted_tokens), each of the last three None unless asked for.
    ``ce_impl``, ``ce_mode`` and ``chunk_mem_const`` (kernel choices there) are accepted and ignored;
    ``chunk_size`` is the rows per chunk and ``chunk_budget_bytes`` the memory budget of the default chunk
    (see ``fused_linear_cross_entropy``).

    ``use_token_scaling`` multiplies each token's loss (and z-loss) by its predicted probability of
    the target (detached), at the cost of one more chunked pass without gradients; token accuracy and
    predicted tokens cost one chunked matmul more (see ``liger_kernel.ops.token_stats``).
    """
    opts = dict(
        accum_dtype=accum_dtype,
        ce_weight=ce_weight,
        chunk_size=chunk_size,
        chunk_budget_bytes=chunk_budget_bytes,
    )
    if use_token_scaling:
        with torch.no_grad():  # -log p(target): the loss without smoothing, z-loss or class weights
            nll = fused_linear_cross_entropy(
                _input,
                weight,
                target,
                bias,
                ignore_index,
                softcap=softcap,
                reduction="none",
                chunk_size=chunk_size,
                chunk_budget_bytes=chunk_budget_bytes,
            )
            p_target = torch.exp(-nll.float())
        loss, z_loss = fused_linear_cross_entropy(
            _input, weight, target, bias, ignore_index, lse_square_scale, label_smoothing, "none", softcap, True,
            **opts,
        )  # fmt: skip
        loss, z_loss = _reduce_scaled(
            loss * p_target, z_loss * p_target, target, ce_weight, ignore_index, reduction
        )
    else:
        loss, z_loss = fused_linear_cross_entropy(
            _input, weight, target, bias, ignore_index, lse_square_scale, label_smoothing, reduction, softcap, True,
            **opts,
        )  # fmt: skip
    predicted = accuracy = None
    if return_token_accuracy or return_predicted_tokens:
        x, flat_target = _input.reshape(-1, weight.shape[1]), target.reshape(-1)
        chunk = chunk_size or default_chunk_size(x.shape[0], weight.shape[0], 4)
        predicted = linear_predicted_tokens(x, weight, bias, flat_target, ignore_index, chunk)
        if return_token_accuracy:
            accuracy = token_accuracy(predicted, flat_target, ignore_index, reduction)
    return (
        loss,
        z_loss if return_z_loss else None,
        accuracy,
        predicted if return_predicted_tokens else None,
    )


def _reduce_scaled(loss, z_loss, target, ce_weight, ignore_index, reduction):
    """Per-token loss and z-loss reduced as ``fused_linear_cross_entropy`` reduces them."""
    if reduction == "none":
        return loss, z_loss
    if reduction == "sum":
        return loss.sum(), z_loss.sum()
    valid = target != ignore_index
    count = valid.sum()
    ce_denominator = count if ce_weight is None else (ce_weight[torch.where(valid, target, 0)] * valid).sum()
    return loss.sum() / torch.where(ce_denominator == 0, 1, ce_denominator), z_loss.sum() / count.clamp(min=1)


class LigerFusedLinearCrossEntropyFunction:
    """Liger Kernel 0.8's entry point: ``apply(_input, weight, target, bias=None, ce_weight=None,
    ignore_index=-100, lse_square_scale=0.0, label_smoothing=0.0, reduction="mean", softcap=None,
    return_z_loss=False, accum_dtype=None, use_token_scaling=False, return_token_accuracy=False,
    return_predicted_tokens=False, ce_impl=None, ce_mode=None, chunk_mem_const=1)`` returns the 4-tuple;
    it is ``fused_linear_cross_entropy_with_stats``.
    """

    apply = staticmethod(fused_linear_cross_entropy_with_stats)
