"""Gated linear units (SwiGLU, GeGLU), forward and backward, in Triton: one kernel for every activation.

Product, element by element over tensors a and b of one shape (all arithmetic in fp32):
    c = f(a) * b
with f picked by ``activation``:
    "silu":      f(a) = a * s = a / (1 + exp(-a)),    s = sigmoid(a)
    "gelu_tanh": f(a) = a * s = a / (1 + exp(-2u)),   s = sigmoid(2u), u = sqrt(2/pi) (a + 0.044715 a^3)
                 (the same as 0.5 a (1 + tanh(u)), since 1 + tanh(u) = 2 sigmoid(2u), without the
                 cancellation of 1 + tanh(u) for negative a)
    "gelu":      f(a) = 0.5 a (1 + erf(a / sqrt(2)))   (exact GELU)

Gradient implemented, for an upstream gradient dc:
    da = dc * b * f'(a)        db = dc * f(a)
    "silu":      f'(a) = s (1 + a (1 - s))
    "gelu_tanh": f'(a) = s + 2 a s (1 - s) sqrt(2/pi) (1 + 3 * 0.044715 a^2)
    (1 - s is computed as exp(-z) * s where z >= 0: accurate where s rounds to 1)
    "gelu":      f'(a) = 0.5 (1 + erf(a / sqrt(2))) + a exp(-a^2 / 2) / sqrt(2 pi)
Kept for backward: a and b only; f(a) and c are recomputed.

Two levels are exposed, each a ``torch.library`` custom op with its autograd:
  * ``glu(a, b, activation)``: the fused product alone. Its backward writes da and db to fresh buffers.
  * ``glu_mlp(x, ...)``: the whole gated MLP ``down(f(gate(x)) * up(x))`` (Llama's and Gemma's MLP).
    The forward keeps x, a = gate(x) and b = up(x) and drops c once down's input is consumed. The
    backward computes dc = dy @ W_down, then ONE kernel pass reads a, b, dc and writes da over a, db
    over b and c over dc (each element is read before it is overwritten, by the same program): a and b
    are buffers this op created and saved for itself, so nobody else can see them, and the op declares
    the mutation (``mutates_args``) so torch.compile knows. The (tokens x intermediate) memory at the
    backward's peak is then 3 buffers (a, b, dc) instead of the 4-5 of an unfused MLP, and the
    elementwise traffic is 6 passes over one such buffer (3 reads + 3 writes).
    When the graph is retained for another backward (retain_graph=True), or under torch.compile (which
    cannot tell), the backward overwrites copies of a and b instead (two more buffers, only then).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from liger_kernel.ops.utils import (
    as_rows,
    cdiv,
    check_floating,
    check_same_device,
    graph_retained,
    interpreter_enabled,
    liger_op,
    next_power_of_2,
    use_triton,
)

try:  # the backend's libm (CUDA libdevice / ROCm ocml), dispatched when the kernel is compiled
    from triton.language.extra import libdevice as _libdevice
except ImportError:  # pragma: no cover - older Triton
    _libdevice = None

ACTIVATIONS = {"silu": 0, "gelu_tanh": 1, "gelu": 2}
_SILU = tl.constexpr(0)
_GELU_TANH = tl.constexpr(1)

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_CUBIC = 0.044715


@triton.jit
def _exp(x, PRECISE: tl.constexpr):
    """exp in fp32. tl.exp compiles to ex2.approx(x * log2(e)), a few ulps off for |x| of several units:
    invisible once rounded to bf16/fp16, but worse than PyTorch's expf for fp32 results, which get the
    backend's libm instead (PRECISE; never in the interpreter, which has no libdevice)."""
    if PRECISE:
        return _libdevice.exp(x)
    else:
        return tl.exp(x)


@triton.jit
def _div(x, y, PRECISE: tl.constexpr):
    """x / y in fp32: Triton's "/" is div.full.f32 (up to 2 ulps); PRECISE rounds like IEEE (and PyTorch)."""
    if PRECISE:
        return tl.math.div_rn(x, y)
    else:
        return x / y


@triton.jit
def _activation(a, ACT: tl.constexpr, PRECISE: tl.constexpr):
    """f(a) in fp32."""
    if ACT == _SILU:
        # a / (1 + exp(-a)) as PyTorch writes it: one rounding less than a * sigmoid(a).
        return _div(a, 1.0 + _exp(-a, PRECISE), PRECISE)
    elif ACT == _GELU_TANH:
        # The same expression as in _activation_and_derivative: the backward's c matches the forward's.
        return _div(a, 1.0 + _exp(-1.5957691216057308 * a * (1.0 + 0.044715 * (a * a)), PRECISE), PRECISE)
    else:
        return 0.5 * a * (1.0 + tl.math.erf(a * 0.7071067811865476))


@triton.jit
def _one_minus_sigmoid(z, e, s):
    """1 - sigmoid(z) given e = exp(-z) and s = sigmoid(z). For z >= 0 the subtraction would lose the
    digits that matter (s is near 1, and a large a multiplies the result), so use e * s there; for z < 0,
    1 - s is exact enough and e may have overflowed (the minimum keeps inf * 0 out of the unused side)."""
    return tl.where(z >= 0, tl.minimum(e, 1.0) * s, 1.0 - s)


@triton.jit
def _activation_and_derivative(a, ACT: tl.constexpr, PRECISE: tl.constexpr):
    """(f(a), f'(a)) in fp32."""
    if ACT == _SILU:
        e = _exp(-a, PRECISE)
        d = 1.0 + e
        s = _div(1.0, d, PRECISE)
        return _div(a, d, PRECISE), s * (1.0 + a * _one_minus_sigmoid(a, e, s))
    elif ACT == _GELU_TANH:
        a2 = a * a
        u2 = 1.5957691216057308 * a * (1.0 + 0.044715 * a2)  # 2u = 2 sqrt(2/pi) (a + 0.044715 a^3)
        e = _exp(-u2, PRECISE)
        d = 1.0 + e
        s = _div(1.0, d, PRECISE)
        du = 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * a2)
        return _div(a, d, PRECISE), s + 2.0 * a * s * _one_minus_sigmoid(u2, e, s) * du
    else:
        cdf = 0.5 * (1.0 + tl.math.erf(a * 0.7071067811865476))
        pdf = _exp(-0.5 * a * a, PRECISE) * 0.3989422804014327
        return a * cdf, cdf + a * pdf


@triton.jit
def _block_indices(n_cols, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Row and column indices of this program's (BLOCK_M, BLOCK_N) tile. One grid axis (no 65535 limit)
    with the column block varying fastest, so consecutive programs stream along the same rows."""
    pid = tl.program_id(0)
    n_col_blocks = tl.cdiv(n_cols, BLOCK_N)
    rows = (pid // n_col_blocks) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = (pid % n_col_blocks) * BLOCK_N + tl.arange(0, BLOCK_N)
    return rows, cols


@triton.jit
def _glu_forward_kernel(
    A,
    B,
    C,
    stride_a,
    stride_b,
    stride_c,
    n_rows,
    n_cols,
    ACT: tl.constexpr,
    PRECISE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    rows, cols = _block_indices(n_cols, BLOCK_M, BLOCK_N)
    mask = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    rows64 = rows.to(tl.int64)[:, None]

    a = tl.load(A + rows64 * stride_a + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    b = tl.load(B + rows64 * stride_b + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    c = _activation(a, ACT, PRECISE) * b
    tl.store(C + rows64 * stride_c + cols[None, :], c.to(C.dtype.element_ty), mask=mask)


@triton.jit
def _glu_backward_kernel(
    DC,
    A,
    B,
    DA,
    DB,
    C,
    stride_dc,
    stride_a,
    stride_b,
    stride_da,
    stride_db,
    stride_c,
    n_rows,
    n_cols,
    ACT: tl.constexpr,
    PRECISE: tl.constexpr,
    STORE_C: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    # DA may alias A, DB may alias B and C may alias DC: every element is loaded before any store.
    rows, cols = _block_indices(n_cols, BLOCK_M, BLOCK_N)
    mask = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    rows64 = rows.to(tl.int64)[:, None]

    dc = tl.load(DC + rows64 * stride_dc + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    a = tl.load(A + rows64 * stride_a + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    b = tl.load(B + rows64 * stride_b + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    f, df = _activation_and_derivative(a, ACT, PRECISE)
    da = dc * b * df
    db = dc * f
    tl.store(DA + rows64 * stride_da + cols[None, :], da.to(DA.dtype.element_ty), mask=mask)
    tl.store(DB + rows64 * stride_db + cols[None, :], db.to(DB.dtype.element_ty), mask=mask)
    if STORE_C:
        tl.store(C + rows64 * stride_c + cols[None, :], (f * b).to(C.dtype.element_ty), mask=mask)


# Launch knobs (module-level so a sweep can set them): elements per program, widest column block, and
# elements per warp (16 per thread: two 16-byte vectors of bf16 per tensor).
TILE_ELEMENTS = 4096
MAX_BLOCK_N = 1024
ELEMENTS_PER_WARP = 512


def _launch_config(n_rows: int, n_cols: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, warps): about TILE_ELEMENTS per program, several rows when rows are short."""
    block_n = min(next_power_of_2(n_cols), MAX_BLOCK_N)
    block_m = min(next_power_of_2(n_rows), max(1, TILE_ELEMENTS // block_n))
    num_warps = max(1, min(16, block_m * block_n // ELEMENTS_PER_WARP))
    return block_m, block_n, num_warps


def _precise(t: torch.Tensor) -> bool:
    """Accurate exp and division for fp32 results on a compiled kernel (see _exp, _div)."""
    return t.dtype == torch.float32 and _libdevice is not None and not interpreter_enabled()


def _grid(n_rows: int, n_cols: int, block_m: int, block_n: int) -> tuple[int]:
    return (cdiv(n_rows, block_m) * cdiv(n_cols, block_n),)


# --- PyTorch path: same math, for CPU tensors without the interpreter and for float64 -----------------


def _activation_torch(a: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "silu":
        return a / (1.0 + torch.exp(-a))
    if activation == "gelu_tanh":
        return a / (1.0 + torch.exp(-2.0 * _SQRT_2_OVER_PI * a * (1.0 + _GELU_CUBIC * (a * a))))
    return 0.5 * a * (1.0 + torch.erf(a * _INV_SQRT_2))


def _activation_and_derivative_torch(a: torch.Tensor, activation: str) -> tuple[torch.Tensor, torch.Tensor]:
    if activation == "silu":
        e = torch.exp(-a)
        d = 1.0 + e
        s = 1.0 / d
        return a / d, s * (1.0 + a * torch.where(a >= 0, e.clamp(max=1.0) * s, 1.0 - s))
    if activation == "gelu_tanh":
        a2 = a * a
        u2 = 2.0 * _SQRT_2_OVER_PI * a * (1.0 + _GELU_CUBIC * a2)
        e = torch.exp(-u2)
        d = 1.0 + e
        s = 1.0 / d
        du = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_CUBIC * a2)
        return a / d, s + 2.0 * a * s * torch.where(u2 >= 0, e.clamp(max=1.0) * s, 1.0 - s) * du
    cdf = 0.5 * (1.0 + torch.erf(a * _INV_SQRT_2))
    return a * cdf, cdf + a * torch.exp(-0.5 * a * a) * _INV_SQRT_2PI


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _use_kernel(t: torch.Tensor) -> bool:
    # The kernel computes in fp32; float64 keeps its precision on the PyTorch path.
    return t.numel() > 0 and t.dtype != torch.float64 and use_triton("glu", t)


# --- host launchers ----------------------------------------------------------------------------------


def glu_forward_impl(a: torch.Tensor, b: torch.Tensor, activation: str) -> torch.Tensor:
    """c = f(a) * b, shape and dtype of a (a contiguous buffer)."""
    if not _use_kernel(a):
        ct = _compute_dtype(a)
        return (_activation_torch(a.to(ct), activation) * b.to(ct)).to(a.dtype)
    a2, b2 = as_rows(a), as_rows(b)
    n_rows, n_cols = a2.shape
    c = torch.empty((n_rows, n_cols), dtype=a.dtype, device=a.device)
    block_m, block_n, num_warps = _launch_config(n_rows, n_cols)
    _glu_forward_kernel[_grid(n_rows, n_cols, block_m, block_n)](
        a2, b2, c, a2.stride(0), b2.stride(0), c.stride(0), n_rows, n_cols,
        ACT=ACTIVATIONS[activation], PRECISE=_precise(a), BLOCK_M=block_m, BLOCK_N=block_n,
        num_warps=num_warps,
    )  # fmt: skip
    return c.view(a.shape)


def _glu_backward_launch(
    dc2: torch.Tensor,
    a2: torch.Tensor,
    b2: torch.Tensor,
    da2: torch.Tensor,
    db2: torch.Tensor,
    c2: torch.Tensor | None,
    activation: str,
) -> None:
    """One kernel pass over 2-D row views (unit last stride); outputs may alias inputs (see kernel)."""
    n_rows, n_cols = a2.shape
    if not _use_kernel(a2):
        ct = _compute_dtype(a2)
        af, bf, dcf = a2.to(ct), b2.to(ct), dc2.to(ct)
        f, df = _activation_and_derivative_torch(af, activation)
        if c2 is not None:
            c = f * bf
        da2.copy_(dcf * bf * df)
        db2.copy_(dcf * f)
        if c2 is not None:
            c2.copy_(c)
        return
    block_m, block_n, num_warps = _launch_config(n_rows, n_cols)
    store_c = c2 is not None
    c_arg = c2 if store_c else dc2  # never written when STORE_C is off
    _glu_backward_kernel[_grid(n_rows, n_cols, block_m, block_n)](
        dc2, a2, b2, da2, db2, c_arg,
        dc2.stride(0), a2.stride(0), b2.stride(0), da2.stride(0), db2.stride(0), c_arg.stride(0),
        n_rows, n_cols,
        ACT=ACTIVATIONS[activation], PRECISE=_precise(a2), STORE_C=store_c,
        BLOCK_M=block_m, BLOCK_N=block_n, num_warps=num_warps,
    )  # fmt: skip


def glu_backward_impl(
    dc: torch.Tensor, a: torch.Tensor, b: torch.Tensor, activation: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(da, db) in fresh buffers with the shapes and dtypes of a and b."""
    a2, b2, dc2 = as_rows(a), as_rows(b), as_rows(dc)
    da = torch.empty(a2.shape, dtype=a.dtype, device=a.device)
    db = torch.empty(b2.shape, dtype=b.dtype, device=b.device)
    if a2.numel() > 0:
        _glu_backward_launch(dc2, a2, b2, da, db, None, activation)
    return da.view(a.shape), db.view(b.shape)


def _rows_view(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, t.shape[-1])


def glu_mlp_forward_impl(
    x: torch.Tensor,
    gate_weight: torch.Tensor,
    up_weight: torch.Tensor,
    down_weight: torch.Tensor,
    gate_bias: torch.Tensor | None,
    up_bias: torch.Tensor | None,
    down_bias: torch.Tensor | None,
    activation: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, a, b): y = down(f(a) * b) with a = gate(x), b = up(x); a and b are kept for the backward."""
    a = F.linear(x, gate_weight, gate_bias)
    b = F.linear(x, up_weight, up_bias)
    c = glu_forward_impl(a, b, activation)
    y = F.linear(c, down_weight, down_bias)
    return y, a, b


_NEEDS = ("x", "gate_weight", "up_weight", "down_weight", "gate_bias", "up_bias", "down_bias")


def glu_mlp_backward_impl(
    dy: torch.Tensor,
    x: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    gate_weight: torch.Tensor,
    up_weight: torch.Tensor,
    down_weight: torch.Tensor,
    activation: str,
    needs: list[bool],
) -> list[torch.Tensor | None]:
    """Gradients in ``_NEEDS`` order (None where not needed). Overwrites a with da and b with db."""
    need = dict(zip(_NEEDS, needs))
    dy2, x2 = _rows_view(dy), _rows_view(x)
    a2, b2 = a.view(-1, a.shape[-1]), b.view(-1, b.shape[-1])  # contiguous: created by the forward
    if not (a2.is_contiguous() and b2.is_contiguous()):  # overwritten in place, with unit strides
        raise ValueError("glu_mlp_backward: a and b must be contiguous (the forward's own outputs)")
    grads: dict[str, torch.Tensor | None] = dict.fromkeys(_NEEDS)
    need_dab = need["x"] or need["gate_weight"] or need["up_weight"] or need["gate_bias"] or need["up_bias"]

    if need["down_bias"]:
        grads["down_bias"] = dy2.sum(0)
    if need_dab:
        dc = torch.mm(dy2, down_weight)
        # a <- da, b <- db, dc <- c (c only if W_down needs a gradient).
        c = dc if need["down_weight"] else None
        if a2.numel() > 0:
            _glu_backward_launch(dc, a2, b2, a2, b2, c, activation)
    else:
        c = glu_forward_impl(a2, b2, activation) if need["down_weight"] else None
    if need["down_weight"]:
        grads["down_weight"] = torch.mm(dy2.t(), c)
    dc = c = None  # one (tokens x intermediate) buffer less before the remaining matmuls
    if not need_dab:
        return [grads[k] for k in _NEEDS]

    da, db = a2, b2
    if need["gate_weight"]:
        grads["gate_weight"] = torch.mm(da.t(), x2)
    if need["up_weight"]:
        grads["up_weight"] = torch.mm(db.t(), x2)
    if need["gate_bias"]:
        grads["gate_bias"] = da.sum(0)
    if need["up_bias"]:
        grads["up_bias"] = db.sum(0)
    if need["x"]:
        dx = torch.mm(da, gate_weight)
        if dx.is_cuda:
            # cuBLAS adds C to the fp32 accumulator before rounding: no second product buffer, one
            # rounding less than two products and an add.
            dx.addmm_(db, up_weight)
        else:
            # CPU BLAS accumulates the products onto C one by one, measurably less accurate here.
            dx += torch.mm(db, up_weight)
        grads["x"] = dx.view(x.shape)
    return [grads[k] for k in _NEEDS]


# --- torch.library registration: opaque to torch.compile, so no graph break --------------------------


@liger_op("liger::glu_forward", mutates_args=())
def glu_forward(a: torch.Tensor, b: torch.Tensor, activation: str) -> torch.Tensor:
    return glu_forward_impl(a, b, activation)


@glu_forward.register_fake
def _(a, b, activation):
    return a.new_empty(a.shape)


@liger_op("liger::glu_backward", mutates_args=())
def glu_backward(
    dc: torch.Tensor, a: torch.Tensor, b: torch.Tensor, activation: str
) -> tuple[torch.Tensor, torch.Tensor]:
    return glu_backward_impl(dc, a, b, activation)


@glu_backward.register_fake
def _(dc, a, b, activation):
    return a.new_empty(a.shape), b.new_empty(b.shape)


def _glu_setup_context(ctx, inputs, output):
    a, b, activation = inputs
    ctx.save_for_backward(a, b)
    ctx.activation = activation


def _glu_backward(ctx, dc):
    a, b = ctx.saved_tensors
    da, db = glu_backward(dc, a, b, ctx.activation)
    return da, db, None


glu_forward.register_autograd(_glu_backward, setup_context=_glu_setup_context)


@liger_op("liger::glu_mlp_forward", mutates_args=())
def glu_mlp_forward(
    x: torch.Tensor,
    gate_weight: torch.Tensor,
    up_weight: torch.Tensor,
    down_weight: torch.Tensor,
    gate_bias: torch.Tensor | None,
    up_bias: torch.Tensor | None,
    down_bias: torch.Tensor | None,
    activation: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return glu_mlp_forward_impl(
        x, gate_weight, up_weight, down_weight, gate_bias, up_bias, down_bias, activation
    )


@glu_mlp_forward.register_fake
def _(x, gate_weight, up_weight, down_weight, gate_bias, up_bias, down_bias, activation):
    lead = x.shape[:-1]
    inter = gate_weight.shape[0]
    return (
        x.new_empty((*lead, down_weight.shape[0])),
        x.new_empty((*lead, inter)),
        x.new_empty((*lead, inter)),
    )


@liger_op("liger::glu_mlp_backward", mutates_args=("a", "b"))
def glu_mlp_backward(
    dy: torch.Tensor,
    x: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    gate_weight: torch.Tensor,
    up_weight: torch.Tensor,
    down_weight: torch.Tensor,
    activation: str,
    needs: list[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    grads = glu_mlp_backward_impl(dy, x, a, b, gate_weight, up_weight, down_weight, activation, needs)
    # custom ops cannot return None; an empty tensor stands for "not needed".
    return tuple(g if g is not None else x.new_empty(0) for g in grads)


@glu_mlp_backward.register_fake
def _(dy, x, a, b, gate_weight, up_weight, down_weight, activation, needs):
    inter = gate_weight.shape[0]
    out = down_weight.shape[0]
    shapes = (x.shape, gate_weight.shape, up_weight.shape, down_weight.shape, (inter,), (inter,), (out,))
    return tuple(x.new_empty(shape if n else (0,)) for shape, n in zip(shapes, needs))


def _glu_mlp_setup_context(ctx, inputs, output):
    x, gate_weight, up_weight, down_weight, _gb, _ub, _db, activation = inputs
    _y, a, b = output
    # a and b are returned only to be saved: no gradient flows into them, and none is materialized.
    ctx.mark_non_differentiable(a, b)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(x, a, b, gate_weight, up_weight, down_weight)
    ctx.activation = activation


def _glu_mlp_backward_unfused(dy, x, a, b, gate_weight, up_weight, down_weight, activation, needs):
    """The gradients of ``glu_mlp_backward_impl`` without writing over a and b: through the elementwise
    op ``glu_backward`` and matmuls, for torch.func transforms (vmap has no rule for the in-place op)."""
    need = dict(zip(_NEEDS, needs))
    dy2, x2, a2, b2 = _rows_view(dy), _rows_view(x), _rows_view(a), _rows_view(b)
    da, db = glu_backward(torch.mm(dy2, down_weight), a2, b2, activation)
    grads = {
        "x": lambda: (torch.mm(da, gate_weight) + torch.mm(db, up_weight)).view(x.shape),
        "gate_weight": lambda: torch.mm(da.t(), x2),
        "up_weight": lambda: torch.mm(db.t(), x2),
        "down_weight": lambda: torch.mm(dy2.t(), glu_forward(a2, b2, activation)),
        "gate_bias": lambda: da.sum(0),
        "up_bias": lambda: db.sum(0),
        "down_bias": lambda: dy2.sum(0),
    }
    return [grads[k]() if need[k] else None for k in _NEEDS]


def _glu_mlp_backward(ctx, dy, _da, _db):
    needs = list(ctx.needs_input_grad[:7])
    if dy is None or not any(needs):
        return (None,) * 8
    x, a, b, gate_weight, up_weight, down_weight = ctx.saved_tensors
    if not torch.compiler.is_compiling() and torch._C._are_functorch_transforms_active():
        grads = _glu_mlp_backward_unfused(
            dy, x, a, b, gate_weight, up_weight, down_weight, ctx.activation, needs
        )
        return (*grads, None)
    if graph_retained():  # another backward will read a and b: overwrite copies of them
        a, b = a.clone(), b.clone()
    grads = glu_mlp_backward(dy, x, a, b, gate_weight, up_weight, down_weight, ctx.activation, needs)
    return (*(g if n else None for g, n in zip(grads, needs)), None)


glu_mlp_forward.register_autograd(_glu_mlp_backward, setup_context=_glu_mlp_setup_context)


# --- public functions ----------------------------------------------------------------------------------


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")


def glu(a: torch.Tensor, b: torch.Tensor, activation: str = "silu") -> torch.Tensor:
    """``f(a) * b`` fused in one kernel (any leading shape), differentiable in ``a`` and ``b``."""
    _check_activation(activation)
    check_floating("a", a)
    check_floating("b", b)
    check_same_device(a=a, b=b)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dtype != b.dtype:
        raise TypeError(f"a and b must have the same dtype, got {a.dtype} and {b.dtype}")
    if a.dim() == 0:
        raise ValueError("a and b must have at least one dim, got 0-dim tensors")
    return glu_forward(a, b, activation)


def glu_mlp(
    x: torch.Tensor,
    gate_weight: torch.Tensor,
    up_weight: torch.Tensor,
    down_weight: torch.Tensor,
    gate_bias: torch.Tensor | None = None,
    up_bias: torch.Tensor | None = None,
    down_bias: torch.Tensor | None = None,
    activation: str = "silu",
) -> torch.Tensor:
    """``down(f(gate(x)) * up(x))`` with nn.Linear weight layouts, fused and memory-lean (see module doc).

    ``gate_weight`` and ``up_weight`` are (intermediate, hidden), ``down_weight`` is (hidden, intermediate);
    every tensor must have x's dtype and device.
    """
    _check_activation(activation)
    named = {
        "x": x,
        "gate_weight": gate_weight,
        "up_weight": up_weight,
        "down_weight": down_weight,
        "gate_bias": gate_bias,
        "up_bias": up_bias,
        "down_bias": down_bias,
    }
    for name, t in named.items():
        if t is not None:
            check_floating(name, t)
            if t.dtype != x.dtype:
                raise TypeError(f"{name} must have x's dtype {x.dtype}, got {t.dtype}")
    check_same_device(**named)
    if x.dim() == 0:
        raise ValueError("x must have at least one dim, got a 0-dim tensor")
    hidden = x.shape[-1]
    if gate_weight.dim() != 2 or gate_weight.shape[1] != hidden:
        raise ValueError(
            f"gate_weight must have shape (intermediate, {hidden}), got {tuple(gate_weight.shape)}"
        )
    inter = gate_weight.shape[0]
    if up_weight.shape != gate_weight.shape:
        raise ValueError(
            f"up_weight must have shape {tuple(gate_weight.shape)}, got {tuple(up_weight.shape)}"
        )
    if down_weight.dim() != 2 or down_weight.shape[1] != inter:
        raise ValueError(f"down_weight must have shape (out, {inter}), got {tuple(down_weight.shape)}")
    for name, bias, size in (("gate_bias", gate_bias, inter), ("up_bias", up_bias, inter)):
        if bias is not None and tuple(bias.shape) != (size,):
            raise ValueError(f"{name} must have shape ({size},), got {tuple(bias.shape)}")
    if down_bias is not None and tuple(down_bias.shape) != (down_weight.shape[0],):
        raise ValueError(f"down_bias must have shape ({down_weight.shape[0]},), got {tuple(down_bias.shape)}")
    y, _a, _b = glu_mlp_forward(
        x, gate_weight, up_weight, down_weight, gate_bias, up_bias, down_bias, activation
    )
    return y
