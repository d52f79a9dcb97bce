"""What autograd and torch.func may ask of every op beyond a first gradient: nothing silently wrong.

* Second derivatives (a gradient penalty: backward with create_graph=True, then another gradient)
  raise an error that says why, whether or not other terms are differentiable, on the Triton and the
  PyTorch fallback paths alike; they never return a gradient that silently leaves our term out.
* Per-sample gradients (``vmap(grad(loss))``) match a loop of ``torch.func.grad`` over the samples.
* Meta tensors: outputs and gradients have eager PyTorch's shapes and dtypes.
* A backward run several times through one graph (``retain_graph=True``) gives each time the gradient
  of that backward, for the ops that keep gradients from their forward.
"""

from __future__ import annotations

import pytest
import torch
from _op_cases import OP_NAMES, op_case, terms_scales

from liger_kernel.ops.utils import interpreter_enabled
from liger_testing import assert_close, tolerances

NOT_TWICE = "not itself differentiable"


def _inputs(case, device, *, grad: bool = True):
    out = {}
    for name, values in case.inputs.items():
        t = values.to(device)
        out[name] = t.requires_grad_() if grad and name in case.differentiable else t
    return out


def _loss(outs) -> torch.Tensor:
    """Depends on the outputs non-linearly, so that the gradient flowing into the op depends on its inputs."""
    return sum(o.float().pow(2).sum() for o in outs)


@pytest.fixture(params=["kernel", "fallback"])
def path(request, device, monkeypatch):
    """The Triton kernels (compiled, or the interpreter on CPU) or, on CPU, the PyTorch fallback."""
    if request.param == "fallback":
        if device != "cpu":
            pytest.skip("the PyTorch fallback runs on CPU tensors only")
        monkeypatch.setenv("TRITON_INTERPRET", "0")  # read at each call (use_triton)
    elif device == "cpu" and not interpreter_enabled():
        pytest.skip("Triton's interpreter is off")
    return request.param


@pytest.mark.parametrize("with_other_terms", [True, False], ids=["mixed", "pure"])
@pytest.mark.parametrize("op", OP_NAMES)
def test_second_derivative_raises(op, with_other_terms, path, device):
    """grad(grad(f(a) + a ** 3, a, create_graph=True).pow(2).sum(), a) reaches our backward: it must
    raise (the old behaviour returned the a ** 3 term alone, or autograd's "does not require grad")."""
    case = op_case(op, rows=3)
    inputs = _inputs(case, device)
    leaves = [inputs[n] for n in case.differentiable]
    loss = _loss(case.liger(**inputs))
    if with_other_terms:
        loss = loss + sum(t.pow(3).sum() for t in leaves)
    grads = torch.autograd.grad(loss, leaves, create_graph=True)
    penalty = sum(g.pow(2).sum() for g in grads)
    with pytest.raises(RuntimeError, match=NOT_TWICE):
        torch.autograd.grad(penalty, leaves)


def test_create_graph_alone_is_fine(device):
    """create_graph=True without a second differentiation through the op (e.g. a penalty on another
    part of the model) still returns the exact first derivative."""
    case = op_case("rms_norm", rows=3)
    inputs = _inputs(case, device)
    x = inputs["x"]
    (g,) = torch.autograd.grad(_loss(case.liger(**inputs)), x, create_graph=True)
    (want,) = torch.autograd.grad(_loss(case.eager(**inputs)), x)
    assert_close(g.detach(), want, atol=1e-5, rtol=1e-5)
    extra = torch.randn(3, device=device, requires_grad=True)
    (d_extra,) = torch.autograd.grad((g.detach().sum() * extra).sum(), extra)
    assert_close(d_extra, g.detach().sum().expand(3))


@pytest.mark.parametrize("op", ["rms_norm", "cross_entropy_mean", "fused_linear_cross_entropy_mean"])
def test_second_derivative_under_torch_func_raises(op, device):
    case = op_case(op, rows=3)
    first = case.differentiable[0]
    inputs = _inputs(case, device, grad=False)

    def loss(t):
        return _loss(case.liger(**{**inputs, first: t})) + t.pow(3).sum()

    with pytest.raises(RuntimeError, match=NOT_TWICE):
        torch.func.jacrev(torch.func.jacrev(loss))(inputs[first])
    with pytest.raises(RuntimeError, match="no forward-mode derivative"):
        torch.func.hessian(loss)(inputs[first])


def _per_sample_terms(case, device):
    """Term scales of the gradients of ``_loss`` (incoming gradient 2 * out) for one sample, in float64."""
    leaves = {n: v.to(device, torch.float64).requires_grad_() for n, v in case.inputs.items()
              if n in case.differentiable}  # fmt: skip
    args = {n: leaves.get(n, v.to(device, torch.float64) if v.is_floating_point() else v.to(device))
            for n, v in case.inputs.items()}  # fmt: skip
    outs = case.eager(**args)
    found = terms_scales(case, leaves, args, [2 * o.detach() for o in outs])
    return None if found is None else found[1]


@pytest.mark.parametrize("op", OP_NAMES)
def test_per_sample_gradients(op, device):
    """vmap(grad(loss)) over a batch of 2 samples (every input batched) against grad per sample."""
    samples = [op_case(op, rows=3, seed=s) for s in (1, 2)]
    names = list(samples[0].inputs)
    diff = [names.index(n) for n in samples[0].differentiable]
    liger = samples[0].liger

    def loss(*args):
        return _loss(liger(**dict(zip(names, args))))

    grad_fn = torch.func.grad(loss, argnums=tuple(diff))
    stacked = [torch.stack([s.inputs[n] for s in samples]).to(device) for n in names]
    got = torch.func.vmap(grad_fn)(*stacked)
    per_sample = [grad_fn(*[s.inputs[n].to(device) for n in names]) for s in samples]
    want = tuple(torch.stack(gs) for gs in zip(*per_sample))
    scales = [_per_sample_terms(s, device) for s in samples]
    if scales[0] is None:
        assert_close(got, want)
    else:
        # vmap and the loop may sum a weight or bias gradient over rows in different orders (a batched
        # matmul against single ones): each rounds like its terms, eps * sum_t |term_t|, which is many
        # ulps of a sum that cancels (seen on the H200: 3.8e-5 relative at a small element). fp32's
        # atol (a few ulps of an O(1) value) is therefore taken relative to the leaf's largest term.
        tol = tolerances(torch.float32)
        for i, name in enumerate(samples[0].differentiable):
            largest_term = max(float(sc[name].max()) for sc in scales)
            atol = tol.atol * max(1.0, largest_term)
            assert_close(got[i], want[i], atol=atol, rtol=tol.rtol, msg=f"gradient of {name}")
    # and the per-sample gradient is the eager one
    eager_inputs = _inputs(samples[0], device)
    eager = torch.autograd.grad(
        _loss(samples[0].eager(**eager_inputs)), [eager_inputs[n] for n in samples[0].differentiable]
    )
    assert_close(tuple(g[0] for g in got), eager, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("op", OP_NAMES)
def test_meta_tensors(op):
    """On device="meta" (shape inference, deferred initialization) every op and its gradients have eager
    PyTorch's shapes and dtypes."""
    case = op_case(op)
    results = []
    for fn in (case.liger, case.eager):
        inputs = _inputs(case, "meta")
        outs = fn(**inputs)
        grads = torch.autograd.grad(_loss(outs), [inputs[n] for n in case.differentiable])
        results.append([(t.device.type, t.shape, t.dtype) for t in (*outs, *grads)])
    assert results[0] == results[1]


@pytest.mark.parametrize(
    "op", ["cross_entropy_mean", "cross_entropy_none", "fused_linear_cross_entropy_mean", "swiglu_mlp"]
)
def test_backward_through_one_graph_several_times(op, path, device):
    """Ops that keep (and scale, or overwrite) gradients from their forward: with retain_graph=True each
    backward gets its own gradient; the sum over three of them, scaled 1, 3 and 0.5, is 4.5 times one."""
    case = op_case(op)
    inputs = _inputs(case, device)
    leaves = [inputs[n] for n in case.differentiable]
    if op.startswith("cross_entropy"):  # an intermediate: overwritten in place by the default
        inputs["input"] = inputs["input"] * 1.0
    loss = _loss(case.liger(**inputs)) if op == "swiglu_mlp" else case.liger(**inputs)[0].sum()
    once = torch.autograd.grad(loss, leaves, retain_graph=True)
    once = [g.clone() for g in once]
    for scale in (1.0, 3.0, 0.5):
        (loss * scale).backward(retain_graph=scale != 0.5)
    for leaf, g in zip(leaves, once):
        # Scaling the incoming gradient changes the roundings of the matmuls behind it: float32
        # tolerances relative to the gradient's scale.
        scale = g.abs().max().item()
        assert_close(leaf.grad, 4.5 * g, atol=1e-6 * scale, rtol=1e-5)


@pytest.mark.parametrize("op", ["fused_linear_cross_entropy_mean", "swiglu_mlp"])
def test_compiled_backward_through_one_graph_twice(op, device):
    """The same under torch.compile (Inductor, C++ on CPU): a compiled backward cannot tell whether the
    graph is retained, so it scales (or overwrites) copies of what the forward kept."""
    case = op_case(op)
    inputs = _inputs(case, device)
    leaves = [inputs[n] for n in case.differentiable]

    def loss_of(**kwargs):
        outs = case.liger(**kwargs)
        return _loss(outs) if op == "swiglu_mlp" else outs[0].sum() * 3

    loss = torch.compile(loss_of, fullgraph=True, backend="inductor")(**inputs)
    first = torch.autograd.grad(loss, leaves, retain_graph=True)
    second = torch.autograd.grad(loss, leaves)
    expected = torch.autograd.grad(loss_of(**inputs), leaves)
    for f, s, e in zip(first, second, expected):
        scale = e.abs().max().item()
        assert_close((f, s), (e, e), atol=1e-6 * scale, rtol=1e-5)
