"""Helpers shared by every kernel: where to run, how to size blocks, how to check inputs.

Kernels run as compiled Triton on a GPU, through Triton's interpreter on CPU tensors when
``TRITON_INTERPRET=1`` was set before ``liger_kernel`` was imported, and otherwise (a CPU tensor with
the interpreter off) through a plain PyTorch path with the same math, so that a patched model still
runs on a machine without a GPU.
"""

from __future__ import annotations

import functools
import inspect
import os
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch

_TRUE = ("1", "true", "yes", "on")


def interpreter_enabled() -> bool:
    """Whether Triton's interpreter is on (it must be switched on before kernels are decorated)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in _TRUE


_warned_fallback: set[str] = set()


def use_triton(op_name: str, tensor: torch.Tensor) -> bool:
    """True when ``tensor`` can go through the Triton kernel; otherwise warn once and use PyTorch."""
    if tensor.device.type != "cpu" or interpreter_enabled():
        return True
    if op_name not in _warned_fallback:
        _warned_fallback.add(op_name)
        warnings.warn(
            f"liger_kernel: {op_name} got CPU tensors and Triton's interpreter is off "
            "(set TRITON_INTERPRET=1 before importing liger_kernel to run the Triton kernel on CPU); "
            "running the equivalent PyTorch code instead.",
            RuntimeWarning,
            stacklevel=3,
        )
    return False


@functools.cache
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def multiprocessor_count(device: torch.device) -> int:
    """Number of SMs of a CUDA device; a small stand-in for the interpreter (each program costs ~1 ms)."""
    if device.type == "cuda":
        return _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    return 4


def cdiv(a: int, b: int) -> int:
    """Ceiling of a / b for positive ints (host side: ``triton.cdiv`` is a jit wrapper, slower to call)."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1)."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def row_block_size(n_cols: int, max_block: int = 65536) -> int:
    """The power of two that holds a whole row of ``n_cols`` elements."""
    block = next_power_of_2(n_cols)
    if block > max_block:
        raise ValueError(
            f"rows of {n_cols} elements exceed the largest block this kernel supports ({max_block})"
        )
    return block


def warps_for_row(block: int) -> int:
    """Warps for a program that reduces one row of ``block`` elements (≈16 bytes per thread per load)."""
    if block >= 32768:
        return 32
    if block >= 8192:
        return 16
    if block >= 2048:
        return 8
    return 4


def as_rows(x: torch.Tensor) -> torch.Tensor:
    """View ``x`` as (rows, last dim) with a unit stride along the last dim, copying only if needed."""
    rows = x.reshape(-1, x.shape[-1])
    if rows.stride(-1) != 1 or (rows.shape[0] > 1 and rows.stride(0) < rows.shape[1]):
        rows = rows.contiguous()
    return rows


def check_floating(name: str, tensor: torch.Tensor) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {tensor.dtype}")


def check_same_device(**tensors: torch.Tensor | None) -> None:
    present = {name: t for name, t in tensors.items() if t is not None}
    devices = {t.device for t in present.values()}
    if len(devices) > 1:
        where = ", ".join(f"{name} on {t.device}" for name, t in present.items())
        raise ValueError(f"all tensors must be on one device, got {where}")


# Launch settings of the row-norm kernels (RMSNorm, LayerNorm). Swept on the H200 at 16384 x 4096 and
# 16384 x 8192 bf16 (benchmark/sweep_rms_norm.py, benchmark/sweep_kernels.py; results in
# benchmark/results/): the forward wants one row of up to 2K elements per program (several small rows
# packed together); the backward wants one persistent program per SM walking tiles of ~16K elements
# (1, 2, 4, 8 and 16 programs per SM tried: more only add dw shares to sum).
NORM_BACKWARD_PROGRAMS_PER_SM = 1


def norm_forward_config(block_n: int) -> tuple[int, int]:
    """(rows per program, warps) of a row-norm forward whose rows fit a block of ``block_n``."""
    rows = max(1, min(16, 2048 // block_n))
    return rows, warps_for_row(block_n * rows)


def norm_backward_config(block_n: int) -> tuple[int, int]:
    """(rows per loop step, warps) of a row-norm backward: tiles of about 16K elements."""
    rows = max(1, min(16, 16384 // block_n))
    return rows, warps_for_row(block_n * rows)


def norm_backward_programs(n_row_blocks: int, device: torch.device) -> int:
    """Persistent-grid size of a row-norm backward (each program adds one row of weight-grad shares)."""
    return max(1, min(n_row_blocks, NORM_BACKWARD_PROGRAMS_PER_SM * multiprocessor_count(device)))


# --- custom ops with a direct eager path ----------------------------------------------------------------

_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)
_is_functorch_wrapped = torch._C._functorch.is_functorch_wrapped_tensor


def run_directly(*args: Any) -> bool:
    """Whether an op called with ``args`` may skip torch.library's dispatcher and run its Python
    implementation directly.

    True when every tensor among ``args`` is a plain tensor (or Parameter) in eager mode. False while
    torch.compile or export traces (the custom op keeps the Triton kernels opaque to them), under any
    dispatch mode (fake tensors, functionalization, make_fx) or torch.func transform (vmap...), and for
    tensor subclasses (DTensor...) and other tensor-likes (torch.fx Proxies), which all need the
    registered op. The dispatcher's Python layers cost ~10 us per call on a fast
    host and several times that on a slow one, often more than the kernel they launch
    (benchmark/NOTES.md).
    """
    if torch.compiler.is_compiling():  # first: under dynamo nothing below is traced
        return False
    if torch._C._len_torch_dispatch_stack() != 0 or torch._C._are_functorch_transforms_active():
        return False
    # Tensor subclasses and tensor-likes (fx Proxies...) override torch functions: the registered op
    # is what they know how to handle. So do torch.func's wrappers, which pass for plain tensors and
    # outlive their transform (vjp's function runs the backward on them after vjp returned).
    # Meta tensors (shape inference, deferred initialization) go through the registered fake function.
    return all(
        type(a) in _PLAIN_TENSORS and not _is_functorch_wrapped(a) and not a.is_meta
        if isinstance(a, torch.Tensor)
        else not hasattr(a, "__torch_function__")
        for a in args
    )


def not_differentiable_twice_message(name: str) -> str:
    """Why a gradient of a gradient through the op ``name`` raises, and what to do instead."""
    return (
        f"liger_kernel: {name}'s backward is a Triton kernel that is not itself differentiable, so a "
        "gradient of a gradient through it cannot be computed (backward with create_graph=True followed "
        "by another backward or grad, a gradient penalty, torch.func.hessian, jacrev of jacrev...). "
        "Compute such second derivatives with the equivalent PyTorch op (the unpatched Hugging Face "
        "module, torch.nn.functional...); first derivatives through Liger's kernels are exact."
    )


_keep_graph = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", None)


def graph_retained() -> bool:
    """Inside a backward: whether autograd may run this backward again (retain_graph=True, or
    create_graph). A backward that would scale what its forward kept in place must then leave it alone.
    Traced (torch.compile, make_fx): True. The compiled backward is one graph for every later call, and
    the mutation of a kept tensor it declares is kept in it: Inductor may write it (or reuse the kept
    buffer) in place, and a second backward through a retained graph then reads a clobbered gradient.
    Out of place costs one gradient-sized buffer, in compiled graphs only.
    (False on a torch without the query: the in-place path, whose second backward autograd refuses.)"""
    if torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack():
        return True
    if _keep_graph is None:
        return False
    return _keep_graph()


def graph_anchor(t: torch.Tensor) -> torch.Tensor | None:
    """An empty tensor whose grad_fn leads to ``t``'s (None when ``t`` needs no gradient), holding no
    storage. A Function whose backward keeps no input (gradients computed in the forward) records one
    as ``ctx.graph_anchors``: ``first_derivative_only`` then knows the inputs its results depend on.
    (A zero-size copy of a zero-size view: no kernel, and the view's backward keeps only its geometry.)"""
    if not t.requires_grad or torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack():
        return None
    if type(t) not in _PLAIN_TENSORS:  # subclasses (DTensor...) need not support as_strided
        return None
    with torch.enable_grad():  # a Function's forward and setup_context run without grad mode
        return t.as_strided((0,), (1,)).clone()


class _RaiseOnBackward(torch.autograd.Function):
    """Under torch.func transforms: views of ``tensors[:n_outputs]`` whose backward raises ``message``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(message: str, n_outputs: int, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(t.view_as(t) for t in tensors[:n_outputs])

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Any) -> None:
        ctx.message = inputs[0]

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> Any:
        raise RuntimeError(ctx.message)


def no_forward_mode_message(name: str) -> str:
    """Why forward-mode AD through the op ``name`` raises, and what to do instead."""
    return (
        f"liger_kernel: {name} has no forward-mode derivative (torch.func.jvp, jacfwd, hessian): Liger's "
        "kernels implement reverse mode only. Use torch.func.vjp / jacrev / grad, or the equivalent "
        "PyTorch op for forward mode."
    )


def _delay_error(outputs: Any, message: str, depends_on: list[torch.Tensor]) -> Any:
    """``outputs`` (a tensor or a tuple with tensors and None) as aliases whose grad_fn raises ``message``
    when reached (``torch.autograd.function.once_differentiable`` with a message that says why). The
    grad_fn has edges to ``depends_on`` (the Function's inputs and incoming gradients), so that any
    later gradient with respect to what they depend on reaches it and raises."""
    single = not isinstance(outputs, tuple)
    outs = (outputs,) if single else outputs
    present = [i for i, o in enumerate(outs) if isinstance(o, torch.Tensor) and o.is_floating_point()]
    if not present or not depends_on:  # nothing they depend on needs a gradient: none can reach them
        return outputs
    if torch._C._are_functorch_transforms_active():  # DelayedError reads .data, which vmap forbids
        aliases = _RaiseOnBackward.apply(message, len(present), *[outs[i] for i in present], *depends_on)
    else:
        err_fn = torch._C._functions.DelayedError(message, len(present) + len(depends_on))
        aliases = err_fn(*[outs[i] for i in present], *depends_on)
    aliases = aliases if isinstance(aliases, tuple) else (aliases,)
    new = list(outs)
    for i, alias in zip(present, aliases):
        new[i] = alias
    return new[0] if single else tuple(new)


def first_derivative_only(name: str, backward: Callable[..., Any] | None = None) -> Callable[..., Any]:
    """``backward`` of an autograd Function whose math is not differentiable (Triton kernels, gradients
    kept from the forward): when the graph of the backward is being recorded (create_graph=True, and
    always under torch.func.grad), it runs without recording and its results carry a grad_fn that
    raises ``not_differentiable_twice_message(name)`` if a later gradient reaches it. Without this, a
    term of a second derivative that flows through the kernel would silently be left out.
    Without ``backward``, a decorator."""
    if backward is None:
        return functools.partial(first_derivative_only, name)
    message = not_differentiable_twice_message(name)

    @functools.wraps(backward)
    def wrapped(ctx: Any, *grads: Any) -> Any:
        if not torch.is_grad_enabled():
            return backward(ctx, *grads)
        # Unpacked before backward runs: a backward that scales a kept gradient in place bumps its version.
        kept = [*ctx.saved_tensors, *grads, *getattr(ctx, "graph_anchors", ())]
        depends_on = [t for t in kept if isinstance(t, torch.Tensor) and t.requires_grad]
        with torch.no_grad():
            outputs = backward(ctx, *grads)
        return _delay_error(outputs, message, depends_on)

    return wrapped


def _no_derivative_context(ctx: Any, inputs: tuple, output: Any) -> None:
    # The outputs stay differentiable (their backward raises, see no_backward in
    # _grad_transform_function): marked non-differentiable, a transform differentiating them again
    # would silently count their contribution as 0.
    pass


def _grad_transform_function(
    name: str,
    forward: Callable[..., Any],
    setup_context: Callable[..., Any],
    backward: Callable[..., Any] | None,
) -> type[torch.autograd.Function]:
    """A Function in the form torch.func transforms need (forward without ctx, a separate setup_context):
    they run its forward on the tensors beneath their wrappers (``forward`` routes those again: plain
    tensors reach the Triton kernels, vmap's batched ones the registered op). ``generate_vmap_rule``:
    under vmap of grad (per-sample gradients) the forward, setup_context and backward are vmapped as
    they are; the custom ops inside take PyTorch's batching fallback, one sample at a time."""

    def no_backward(ctx: Any, *grads: Any) -> Any:
        raise RuntimeError(not_differentiable_twice_message(name))

    def no_jvp(ctx: Any, *tangents: Any) -> Any:
        raise RuntimeError(no_forward_mode_message(name))

    attrs = {
        "forward": staticmethod(forward),
        "setup_context": staticmethod(setup_context),
        "backward": staticmethod(backward if backward is not None else no_backward),
        "jvp": staticmethod(no_jvp),
        "generate_vmap_rule": True,
    }
    return type(f"{name.split('::')[-1]}_grad_transform", (torch.autograd.Function,), attrs)


def grad_transform_active() -> bool:
    """Whether the innermost active torch.func transform is grad (also behind vjp, jacrev, hessian)."""
    if torch.compiler.is_compiling() or not torch._C._are_functorch_transforms_active():
        return False
    from torch._functorch.pyfunctorch import retrieve_current_functorch_interpreter

    return retrieve_current_functorch_interpreter().key() == torch._C._functorch.TransformType.Grad


class LigerOp:
    """A Python function registered as the custom op ``name`` and called directly where that is safe.

    ``op(*args)`` runs the registered op (``self.op``, a ``torch.library`` CustomOpDef) while tracing and
    for tensor subclasses; otherwise (``run_directly(*args)``) the function itself, through
    a plain ``torch.autograd.Function`` made from the same ``setup_context`` and ``backward`` once
    ``register_autograd`` was called. Under torch.func.grad, vjp or jacrev (the innermost transform a
    grad) it runs through a Function in the form those transforms need (``_grad_transform_function``).
    Inputs named in ``mutates_args`` get their version counters bumped after a direct call, as the
    registered op does, so autograd still detects the mutation. Call with positional arguments only.
    """

    def __init__(self, name: str, fn: Callable[..., Any], mutates_args: Iterable[str] = ()) -> None:
        mutates_args = tuple(mutates_args)
        self.name = name
        self.fn = fn
        self.op = torch.library.custom_op(name, fn, mutates_args=mutates_args)
        params = list(inspect.signature(fn).parameters)
        self._mutated = tuple(params.index(a) for a in mutates_args)
        self._function: type[torch.autograd.Function] | None = None
        # Under torch.func.grad (see register_autograd) an op without a derivative of its own (the
        # backward ops) runs through a Function too, whose backward raises (not_differentiable_twice_message).
        self._grad_transform_function = _grad_transform_function(name, self, _no_derivative_context, None)
        functools.update_wrapper(self, fn)

    def register_fake(self, fake: Callable[..., Any]) -> Callable[..., Any]:
        return self.op.register_fake(fake)

    def register_autograd(self, backward: Callable[..., Any], *, setup_context: Callable[..., Any]) -> None:
        backward = first_derivative_only(self.name, backward)
        self.op.register_autograd(backward, setup_context=setup_context)
        fn = self.fn

        # The forward takes ctx and calls setup_context itself: a Function with a separate
        # setup_context binds its arguments through inspect.signature on every call (~20 us).
        def forward(ctx: Any, *args: Any) -> Any:
            out = fn(*args)
            setup_context(ctx, args, out)
            return out

        attrs = {"forward": staticmethod(forward), "backward": staticmethod(backward)}
        self._function = type(f"{fn.__name__}_function", (torch.autograd.Function,), attrs)
        # torch.func.grad (and jacrev, hessian...) accept only Functions with a separate setup_context,
        # and the registered op's own autograd is not one: under those transforms, this one runs.
        self._grad_transform_function = _grad_transform_function(self.name, self, setup_context, backward)

    def __call__(self, *args: Any) -> Any:
        if not self._mutated and grad_transform_active():
            return self._grad_transform_function.apply(*args)
        if not run_directly(*args):
            return self.op(*args)
        out = self._function.apply(*args) if self._function is not None else self.fn(*args)
        for i in self._mutated:
            torch.autograd.graph.increment_version(args[i])
        return out


def liger_op(name: str, *, mutates_args: Iterable[str] = ()) -> Callable[[Callable[..., Any]], LigerOp]:
    """Decorator form of ``LigerOp``: ``@liger_op("liger::rms_norm_forward")``."""
    return lambda fn: LigerOp(name, fn, mutates_args)


def is_hip() -> bool:
    """Whether torch was built for ROCm (AMD GPUs); Liger Kernel 0.8's name."""
    return torch.version.hip is not None
