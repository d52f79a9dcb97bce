"""The torch.library registrations behind every kernel, and the direct eager path beside them.

``torch.library.opcheck`` checks each custom op's schema (declared mutations), its fake (meta) function
against the real one, its autograd registration and AOT dispatch with dynamic shapes: what
torch.compile relies on. The other tests check ``LigerOp``'s routing: plain tensors in eager mode run
the Python implementation directly (no dispatcher), anything traced goes through the registered op,
and a direct call still bumps the version of the inputs it mutates.
"""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from liger_kernel.ops import cross_entropy as ce_ops
from liger_kernel.ops import fused_add_rms_norm as add_rms_ops
from liger_kernel.ops import fused_linear_cross_entropy as flce_ops
from liger_kernel.ops import glu as glu_ops
from liger_kernel.ops import gpt_oss_glu as gpt_oss_glu_ops
from liger_kernel.ops import layer_norm as ln_ops
from liger_kernel.ops import llama4_rope as llama4_rope_ops
from liger_kernel.ops import rms_norm as rms_ops
from liger_kernel.ops import rope as rope_ops
from liger_kernel.ops.utils import LigerOp, run_directly
from liger_kernel.transformers.functional import (
    liger_cross_entropy,
    liger_fused_linear_cross_entropy,
    liger_geglu,
    liger_layer_norm,
    liger_llama4_rope,
    liger_rms_norm,
    liger_rope,
    liger_swiglu,
)
from liger_testing import assert_close


def _samples(device):
    g = torch.Generator(device="cpu").manual_seed(0)

    def randn(*shape, grad=False):
        return torch.randn(*shape, generator=g).to(device).requires_grad_(grad)

    x, w, b = randn(6, 16, grad=True), randn(16, grad=True), randn(16, grad=True)
    rstd = torch.rand(6, generator=g).to(device) + 0.5
    mean = randn(6)
    q, k = randn(2, 4, 5, 8, grad=True), randn(2, 2, 5, 8, grad=True)
    cos, sin = randn(1, 5, 8), randn(1, 5, 8)
    q4, k4, freqs = randn(2, 5, 4, 8, grad=True), randn(2, 5, 2, 8, grad=True), randn(1, 5, 4, 2)
    a, bb = randn(6, 24, grad=True), randn(6, 24, grad=True)
    gw, uw, dw = randn(24, 16, grad=True), randn(24, 16, grad=True), randn(16, 24, grad=True)
    logits, target = randn(6, 40), torch.randint(0, 40, (6,), generator=g).to(device)
    fw = randn(40, 16, grad=True)
    flce_opts = (-100, 0.0, 0.0, 0.0)  # ignore_index, lse_square_scale, label_smoothing, softcap
    needs = [True] * 7
    return {
        "rms_norm_forward": (rms_ops.rms_norm_forward, (x, w, 1e-6, 0.0, "llama")),
        "rms_norm_backward": (rms_ops.rms_norm_backward, (randn(6, 16), x, w, rstd, 0.0, "llama", True)),
        "fused_add_rms_norm_forward": (
            add_rms_ops.fused_add_rms_norm_forward,
            (x, randn(6, 16, grad=True), w, 1e-6, 0.0, "llama"),
        ),
        "fused_add_rms_norm_backward": (
            add_rms_ops.fused_add_rms_norm_backward,
            (randn(6, 16), randn(6, 16), x, w, rstd, 0.0, "llama", True),
        ),
        "layer_norm_forward": (ln_ops.layer_norm_forward, (x, w, b, 1e-5)),
        "layer_norm_backward": (ln_ops.layer_norm_backward, (randn(6, 16), x, w, mean, rstd, True, True)),
        "rope_forward": (rope_ops.rope_forward, (q, k, cos, sin)),
        "rope_backward": (rope_ops.rope_backward, (randn(2, 4, 5, 8), randn(2, 2, 5, 8), cos, sin)),
        "llama4_rope_forward": (llama4_rope_ops.llama4_rope_forward, (q4, k4, freqs)),
        "llama4_rope_backward": (
            llama4_rope_ops.llama4_rope_backward,
            (randn(2, 5, 4, 8), randn(2, 5, 2, 8), freqs),
        ),
        "glu_forward": (glu_ops.glu_forward, (a, bb, "silu")),
        "glu_backward": (glu_ops.glu_backward, (randn(6, 24), a, bb, "gelu_tanh")),
        "glu_mlp_forward": (glu_ops.glu_mlp_forward, (x, gw, uw, dw, None, None, None, "silu")),
        "glu_mlp_backward": (
            glu_ops.glu_mlp_backward,
            (randn(6, 16), x, randn(6, 24), randn(6, 24), gw, uw, dw, "silu", needs),
        ),
        "cross_entropy_forward": (
            ce_ops.cross_entropy_forward,
            (logits, target, None, -100, 0.1, 1e-4, 0.0, "mean", True),
        ),
        "cross_entropy_forward_inplace": (
            ce_ops.cross_entropy_forward_inplace,
            (randn(6, 40), target, None, -100, 0.0, 0.0, 0.0, "sum"),
        ),
        "cross_entropy_scale_grad_": (ce_ops.cross_entropy_scale_grad_, (randn(6, 40), randn(6))),
        "fused_linear_cross_entropy_forward": (
            flce_ops.fused_linear_cross_entropy_forward,
            (x, fw, target, None, None, *flce_opts, "mean", False, True, True, False, 4, 0),
        ),
        "fused_linear_cross_entropy_scale_grads_": (
            flce_ops.fused_linear_cross_entropy_scale_grads_,
            (randn(6, 16), randn(40, 16), randn(0), torch.tensor(0.5, device=device)),
        ),
        "fused_linear_cross_entropy_backward": (
            flce_ops.fused_linear_cross_entropy_backward,
            (randn(6), x, fw, target, None, None, *flce_opts, False, True, True, False, 4, 0),
        ),
        "gpt_oss_glu_forward": (gpt_oss_glu_ops.gpt_oss_glu_forward, (a * 4, 1.702, 7.0)),
        "gpt_oss_glu_backward": (gpt_oss_glu_ops.gpt_oss_glu_backward, (randn(6, 12), a * 4, 1.702, 7.0)),
    }


OP_NAMES = sorted(_samples("cpu"))


@pytest.mark.parametrize("name", OP_NAMES)
def test_opcheck(name, device):
    op, args = _samples(device)[name]
    assert isinstance(op, LigerOp)
    if op._function is None:  # backward and in-place ops have no autograd formula of their own
        args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
    utils = DEFAULT_TEST_UTILS
    if name in SAVED_OUTPUT_OPS:
        utils = tuple(u for u in utils if u != "test_aot_dispatch_dynamic")
    torch.library.opcheck(op.op, args, test_utils=utils)


# These forwards return tensors that exist only to be saved for (and reused by) their backward, marked
# non-differentiable. opcheck's AOT test differentiates every output and its partitioner rejects the
# graph ("Node ... was invalid, but is output"); torch.compile itself handles them, with dynamic shapes
# too, which test_compile_dynamic_shapes checks in its place.
SAVED_OUTPUT_OPS = ("glu_mlp_forward", "fused_linear_cross_entropy_forward")
DEFAULT_TEST_UTILS = (
    "test_schema",
    "test_autograd_registration",
    "test_faketensor",
    "test_aot_dispatch_dynamic",
)


def test_compile_dynamic_shapes(device):
    from liger_kernel.ops.fused_linear_cross_entropy import fused_linear_cross_entropy
    from liger_kernel.ops.glu import glu_mlp

    gw, uw = (torch.randn(24, 16, device=device, requires_grad=True) for _ in range(2))
    dw = torch.randn(16, 24, device=device, requires_grad=True)
    w = torch.randn(40, 16, device=device, requires_grad=True)

    def loss(x, t):
        return fused_linear_cross_entropy(glu_mlp(x, gw, uw, dw), w, t)

    compiled = torch.compile(loss, backend="aot_eager", dynamic=True, fullgraph=True)
    for rows in (6, 9):  # a second size reuses the dynamic graph
        x = torch.randn(rows, 16, device=device, requires_grad=True)
        t = torch.randint(0, 40, (rows,), device=device)
        got = torch.autograd.grad(compiled(x, t), (x, gw, w))
        want = torch.autograd.grad(loss(x, t), (x, gw, w))
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b)


def test_every_liger_op_is_covered():
    modules = (
        rms_ops,
        add_rms_ops,
        ln_ops,
        rope_ops,
        glu_ops,
        ce_ops,
        flce_ops,
        gpt_oss_glu_ops,
        llama4_rope_ops,
    )
    registered = {n for m in modules for n, v in vars(m).items() if isinstance(v, LigerOp)}
    assert registered == set(OP_NAMES)


def test_eager_calls_skip_the_dispatcher(device, monkeypatch):
    """Plain tensors in eager mode: the registered op is not called (forward and backward)."""
    called = []
    for op in (rms_ops.rms_norm_forward, rms_ops.rms_norm_backward):
        monkeypatch.setattr(op, "op", lambda *a, _n=op.__name__: called.append(_n))
    x = torch.randn(3, 8, device=device, requires_grad=True)
    w = torch.ones(8, device=device, requires_grad=True)
    y, _rstd = rms_ops.rms_norm_forward(x, w, 1e-6, 0.0, "llama")
    y.sum().backward()
    assert called == [] and x.grad is not None and w.grad is not None


def test_traced_calls_use_the_registered_op(device):
    x = torch.randn(3, 8, device=device)
    assert run_directly(x, torch.nn.Parameter(x), 1e-6, "llama", None)
    with FakeTensorMode() as mode:
        fake = mode.from_tensor(x)
        assert not run_directly(fake)
        y, rstd = rms_ops.rms_norm_forward(
            fake, mode.from_tensor(torch.ones(8, device=device)), 1e-6, 0.0, "llama"
        )
        assert y.shape == (3, 8) and rstd.shape == (3,)


class _Subclass(torch.Tensor):
    pass


def test_tensor_subclasses_use_the_registered_op(device):
    x = torch.randn(3, 8, device=device)
    assert not run_directly(x, x.as_subclass(_Subclass))


def test_vmap_takes_the_registered_op(device):
    """Under torch.func.vmap the registered op runs (through PyTorch's batching fallback, one slice at
    a time); a plain autograd.Function would refuse the transform."""
    x, w = torch.randn(3, 2, 8, device=device), torch.ones(8, device=device)
    got = torch.func.vmap(lambda xi: rms_ops.rms_norm_forward(xi, w, 1e-6, 0.0, "llama")[0])(x)
    want = rms_ops.rms_norm_forward(x, w, 1e-6, 0.0, "llama")[0]
    torch.testing.assert_close(got, want)


def _func_grad_cases(device):
    """(name, loss function of some tensors, those tensors): one per public functional."""
    g = torch.Generator(device="cpu").manual_seed(1)

    def randn(*shape):
        return torch.randn(*shape, generator=g).to(device)

    t = torch.tensor([1, 2, -100, 4], device=device)
    cos, sin = randn(1, 5, 8), randn(1, 5, 8)
    freqs_cis = torch.polar(torch.ones(1, 5, 4, device=device), randn(1, 5, 4))
    return [
        ("rms_norm", lambda x, w: liger_rms_norm(x, w).square().sum(), (randn(4, 16), randn(16))),
        ("layer_norm", lambda x, w, b: liger_layer_norm(x, w, b, 1e-5).square().sum(),
         (randn(4, 16), randn(16), randn(16))),
        ("rope", lambda q, k: sum(o.square().sum() for o in liger_rope(q, k, cos, sin)),
         (randn(2, 4, 5, 8), randn(2, 2, 5, 8))),
        ("llama4_rope", lambda q, k: sum(o.square().sum() for o in liger_llama4_rope(q, k, freqs_cis)),
         (randn(2, 5, 4, 8), randn(2, 5, 2, 8))),
        ("swiglu", lambda a, b: liger_swiglu(a, b).square().sum(), (randn(4, 16), randn(4, 16))),
        ("geglu", lambda a, b: liger_geglu(a, b).square().sum(), (randn(4, 16), randn(4, 16))),
        *[
            (f"cross_entropy_{r}", lambda x, r=r: liger_cross_entropy(x, t, reduction=r).square().sum(),
             (randn(4, 40),))
            for r in ("mean", "sum", "none")
        ],
        ("fused_linear_cross_entropy", lambda x, w: liger_fused_linear_cross_entropy(x, w, t),
         (randn(4, 16), randn(40, 16))),
    ]  # fmt: skip


def test_torch_func_grad(device):
    """torch.func.grad, vjp and jacrev: the ops run through Functions with a separate setup_context
    (which those transforms require), with the same gradients as torch.autograd on the same inputs.
    (vjp's function runs the backward after the transform has returned, on its wrapped tensors.)"""
    for name, loss, inputs in _func_grad_cases(device):
        got = torch.func.grad(loss, argnums=tuple(range(len(inputs))))(*inputs)
        leaves = [x.clone().requires_grad_() for x in inputs]
        want = torch.autograd.grad(loss(*leaves), leaves)
        assert_close(got, want, msg=name)
        value, vjp = torch.func.vjp(loss, *inputs)
        assert_close(vjp(torch.ones_like(value)), want, msg=f"{name} (vjp)")
    x, w = torch.randn(2, 8, device=device), torch.randn(8, device=device)
    jac = torch.func.jacrev(lambda x: liger_rms_norm(x, w))(x)
    xs = x.clone().requires_grad_()
    want = torch.stack([torch.autograd.grad(liger_rms_norm(xs, w).reshape(-1)[i], xs)[0] for i in range(16)])
    assert_close(jac, want.reshape(2, 8, 2, 8))


def test_fx_symbolic_trace_records_the_registered_op(device):
    def f(x, w):
        y, _rstd = rms_ops.rms_norm_forward(x, w, 1e-6, 0.0, "llama")
        return y

    graph = torch.fx.symbolic_trace(f)
    targets = [n.target for n in graph.graph.nodes if n.op == "call_function"]
    assert any("liger.rms_norm_forward" in str(t) for t in targets), targets
    x, w = torch.randn(3, 8, device=device), torch.ones(8, device=device)
    torch.testing.assert_close(graph(x, w), f(x, w))


def test_direct_call_bumps_versions_of_mutated_inputs(device):
    grad = torch.randn(4, 10, device=device)
    before = grad._version
    ce_ops.cross_entropy_scale_grad_(grad, torch.tensor(2.0, device=device))
    assert grad._version > before
