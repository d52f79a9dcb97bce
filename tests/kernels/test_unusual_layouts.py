"""Every op with its tensor arguments in unusual layouts, against eager PyTorch on contiguous copies.

Every argument (and the incoming gradient, "grad_output") is made a view of a leaf, all at once (and
one argument at a time on GPU, where it is cheap): every other element along the last dim or the
first dim (the gaps hold NaN, or an out-of-range class for targets, so a kernel that ignores strides
is caught), transposed (last two dims), at a storage offset, or expanded from size 1 along its first
dim of size > 1 (a kernel that assumes unit strides reads past the buffer). Outputs and gradients with
respect to the leaves (summed over expanded elements) are checked in reference-error mode against
eager PyTorch on contiguous copies of the same values (float32 the reference, float64 the golden).
Zero-size inputs (no rows) are checked for every op as well. The same code runs on CPU (Triton's
interpreter) and on GPU.
"""

from __future__ import annotations

import pytest
import torch
from _op_cases import OP_NAMES, op_case, op_cases, terms_scales

from liger_testing import assert_close, assert_close_to_reference, tolerances

LAYOUTS = ("step2_last", "step2_first", "transposed", "offset", "expanded")
# Filler of the gaps of strided views: never a value the op may read.
_GAP_FLOAT = float("nan")
_GAP_INT = 10**6


def _applies(layout: str, shape: torch.Size) -> bool:
    if layout == "step2_last":
        return len(shape) >= 1 and shape[-1] > 1
    if layout == "step2_first":
        return len(shape) >= 2 and shape[0] > 1
    if layout == "transposed":
        return len(shape) >= 2 and shape[-1] > 1 and shape[-2] > 1
    if layout == "expanded":
        return any(s > 1 for s in shape)
    return len(shape) >= 1  # offset


def _laid_out(values: torch.Tensor, layout: str):
    """(base values, view function): view(base) holds ``values`` (for "expanded", the first slice of
    ``values`` along the expanded dim, repeated) in ``layout``."""
    gap = _GAP_FLOAT if values.is_floating_point() else _GAP_INT
    if layout in ("step2_last", "step2_first"):
        dim = values.dim() - 1 if layout == "step2_last" else 0
        shape = list(values.shape)
        shape[dim] *= 2
        base = torch.full(shape, gap, dtype=values.dtype)
        index = [slice(None)] * values.dim()
        index[dim] = slice(0, None, 2)
        base[tuple(index)] = values
        return base, lambda b: b[tuple(index)]
    if layout == "transposed":
        return values.transpose(-1, -2).contiguous(), lambda b: b.transpose(-1, -2)
    if layout == "offset":
        base = torch.cat([torch.full((3,), gap, dtype=values.dtype), values.reshape(-1)])
        return base, lambda b: b[3:].view(values.shape)
    dim = next(d for d, s in enumerate(values.shape) if s > 1)
    return values.narrow(dim, 0, 1).clone(), lambda b: b.expand(values.shape)


def _leaves_and_args(case, device, unusual: tuple[str, ...], layout: str, dtype: torch.dtype | None):
    """Leaves (the differentiable bases) and the op's arguments; those named in ``unusual`` get
    ``layout`` (where it applies). With ``dtype`` (the eager side) the arguments are contiguous copies
    in that dtype."""
    leaves, args = {}, {}
    for name, values in case.inputs.items():
        laid_out = name in unusual and _applies(layout, values.shape)
        base, view = _laid_out(values, layout) if laid_out else (values, lambda b: b)
        base = base.to(device)
        if dtype is not None and base.is_floating_point():
            base = base.to(dtype)
        if name in case.differentiable:
            base.requires_grad_(True)
            leaves[name] = base
        arg = view(base)
        args[name] = arg.contiguous() if dtype is not None else arg
    return leaves, args


def _one_arg_params():
    out = []
    for case in op_cases():
        shapes = {name: v.shape for name, v in case.inputs.items()}
        shapes["grad_output"] = case.eager(**case.inputs)[0].shape
        for name, shape in shapes.items():
            out += [pytest.param(case.name, name, lay, id=f"{case.name}-{name}-{lay}") for lay in LAYOUTS
                    if _applies(lay, shape)]  # fmt: skip
    return out


def _cotangents(outs, unusual: tuple[str, ...], layout: str):
    g = torch.Generator().manual_seed(1)
    cots = []
    for o in outs:
        values = torch.randn(o.shape, generator=g, dtype=torch.float32)
        if "grad_output" in unusual and _applies(layout, o.shape):
            base, view = _laid_out(values, layout)
            cots.append(view(base.to(o.device)))
        else:
            cots.append(values.to(o.device))
    return cots


def _forward_and_grads(case, device, unusual, layout, dtype=None, *, terms=False):
    """Outputs and gradients of the leaves, of Liger's op (``dtype`` None) or of eager PyTorch on
    contiguous copies in ``dtype``; the incoming gradients are the same values for all three. With
    ``terms`` (float64): the term scales of those outputs and gradients instead (None where the case
    has no stand-in)."""
    leaves, args = _leaves_and_args(case, device, unusual, layout, dtype)
    outs = (case.eager if dtype is not None else case.liger)(**args)
    cots = _cotangents(outs, unusual, layout)
    if dtype is not None:
        cots = [c.contiguous().to(dtype) for c in cots]
    if terms:
        return terms_scales(case, leaves, args, cots)
    grads = torch.autograd.grad(outs, list(leaves.values()), cots)
    return [o.detach() for o in outs], dict(zip(leaves, grads))


def _check(case, device, unusual, layout):
    """In reference-error mode (see liger_testing): Liger's error against the float64 golden may be at
    most twice that of eager PyTorch in float32, plus one rounding of the terms each result sums.

    The floor is relative to the term scale (``case.terms``), not to the result: a bias or weight
    gradient sums over rows (dW = dY^T X rounds like |dY|^T |X|) and the fused loss's dx is a
    difference of larger terms, so where they cancel, one rounding of the terms is many ulps of the
    result, in the kernel and in eager PyTorch alike (which one lands nearer is a coin toss: seen on
    the H200, 3-4x of the reference's error at a few ulps). A real bug (a dropped term, a wrong sign)
    is an error of the order of the terms, still ~1e5 times the floor."""
    actual = _forward_and_grads(case, device, unusual, layout)
    golden = _forward_and_grads(case, device, unusual, layout, torch.float64)
    scales = _forward_and_grads(case, device, unusual, layout, torch.float64, terms=True)
    msg = f"{case.name}: outputs, then gradients"
    if case.fp32_tolerances:
        tol = tolerances(torch.float32)
        expected = _to_float32(golden)
        if scales is None:
            assert_close(actual, expected, atol=tol.atol, rtol=tol.rtol, msg=msg)
            return
        # fp32's atol is a few ulps of an O(1) value, the scale of a cancelled result's terms: here it
        # is taken relative to the largest term of each leaf instead (rtol stays relative to the result).
        for part, a, e, t in _leaves_with_scales(actual, expected, scales):
            atol = tol.atol * max(1.0, float(t.max()) if t is not None and t.numel() else 1.0)
            assert_close(a, e, atol=atol, rtol=tol.rtol, msg=f"{msg}: {part}")
        return
    reference = _forward_and_grads(case, device, unusual, layout, torch.float32)
    assert_close_to_reference(actual, reference, golden, msg=msg, terms_scale=scales)


def _leaves_with_scales(actual, expected, scales):
    """(name, actual, expected, term scale) of each output and gradient."""
    (outs_a, grads_a), (outs_e, grads_e), (outs_t, grads_t) = actual, expected, scales
    for i, (a, e, t) in enumerate(zip(outs_a, outs_e, outs_t)):
        yield f"output {i}", a, e, t
    for name in grads_a:
        yield f"gradient of {name}", grads_a[name], grads_e[name], grads_t[name]


def _to_float32(tree):
    outs, grads = tree
    return [o.float() for o in outs], {k: g.float() for k, g in grads.items()}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op", OP_NAMES)
def test_unusual_layout(op, layout, device):
    """Every argument of the op (and the incoming gradient) in ``layout`` at once."""
    case = op_case(op)
    _check(case, device, (*case.inputs, "grad_output"), layout)


@pytest.mark.gpu  # the same combinations one argument at a time (which argument fails): ~230 cases
@pytest.mark.parametrize(("op", "unusual", "layout"), _one_arg_params())
def test_unusual_layout_one_argument(op, unusual, layout, device):
    _check(op_case(op), device, (unusual,), layout)


@pytest.mark.parametrize("op", OP_NAMES)
def test_zero_rows(op, device):
    case = op_case(op, rows=0)
    if not case.zero_rows_comparable:
        pytest.skip("torch's mean over no rows is NaN, ours 0 (documented)")
    _check(case, device, (), "offset")


def test_ops_called_directly_with_strided_saved_tensors(device):
    """The registered ops are public (torch.ops.liger.*): their backward halves read per-row statistics
    and parameters that the forward made contiguous, but a direct caller may pass any layout."""
    from liger_kernel.ops import fused_linear_cross_entropy as flce_ops
    from liger_kernel.ops import layer_norm as ln_ops
    from liger_kernel.ops import rms_norm as rms_ops

    g = torch.Generator().manual_seed(3)
    x, dy = (torch.randn(6, 24, generator=g).to(device) for _ in range(2))
    w = torch.randn(24, generator=g).to(device)
    stats = torch.rand(6, generator=g).to(device) + 0.5

    def strided(t):
        base, view = _laid_out(t.cpu(), "step2_last")
        return view(base.to(device))

    assert_close(
        rms_ops.rms_norm_backward(dy, x, strided(w), strided(stats), 0.0, "none", True),
        rms_ops.rms_norm_backward(dy, x, w, stats, 0.0, "none", True),
    )
    assert_close(
        ln_ops.layer_norm_backward(dy, x, strided(w), strided(stats - 1), strided(stats), True, True),
        ln_ops.layer_norm_backward(dy, x, w, stats - 1, stats, True, True),
    )
    kept = [dy.t(), strided(w), w[:0]]  # a transposed and a strided gradient, scaled in place
    want = [t * 0.5 for t in kept]
    flce_ops.fused_linear_cross_entropy_scale_grads_(*kept, torch.tensor(0.5, device=device))
    assert_close(kept, want)
