"""Train a patched and an unpatched tiny model side by side and judge whether they stay together.

Three arms start from identical weights and see identical batches, each with its own AdamW (same
hyper-parameters), in one process, in lockstep:

* ``unpatched``: the model as Hugging Face (or the spec) builds it, in the run's dtype;
* ``patched``: the same weights in the same dtype, with the patch applied to this instance;
* ``reference``: the unpatched model in float64, started from the unpatched arm's weights (so it
  computes the same thing with much smaller rounding error).

Each step records per arm the loss and the gradient norm, and, matched by parameter NAME, for every
parameter and its gradient the largest absolute difference patched vs unpatched (``diff``) and
unpatched vs reference (``noise``: the run dtype's own rounding noise, grown through training exactly
as the patched arm's differences grow), and the unpatched arm's largest magnitude (``scale``). Only
these numbers are kept, never copies of the weights. After the last step the three arms are evaluated
on a held-back batch: logits, top-k log-probabilities (at the unpatched arm's top-k tokens) and loss.

Judging (``tolerance="measured"``, the default): a quantity is within tolerance when
``diff <= noise_factor * band + floor``: the patched arm may differ from the unpatched one by a
multiple of what the dtype's rounding alone does to the unpatched arm (``band``: this step's noise,
or the largest noise seen so far relative to the quantity's scale, if larger), plus a floor of a few
float32 ulps or one rounding of the run dtype (see :class:`_Judge`). The reference arm computes in
float64 throughout, also where the model's code upcasts to float32 (:class:`_Float64Everywhere`).
``tolerance="fixed"`` checks ``|patched - unpatched| <= atol + rtol * |unpatched|`` elementwise with
``liger_testing.tolerances(dtype)`` instead (strict: it does not grow with training).

Patching: before every patched-arm step (and its evaluation) the runner calls
``patch(model=patched_model, **patch_kwargs)`` and afterwards ``undo()``. Patches that work on the
instance (swapping module classes) stay on the patched model; anything they set process-wide (a
modeling module's function, a class attribute) is set only while the patched arm runs. Before every
unpatched and reference step the runner checks that those arms are really unpatched: every module has
the class and instance attributes it was built with, and the modeling modules' globals and classes are
exactly as they were before the first patch. It also checks that the patch changed something, kept the
patched model's parameter objects and names, and that ``undo`` restored everything.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import os
import re
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from liger_testing.convergence.data import load_dataset
from liger_testing.convergence.defaults import DEFAULT_FLOOR_ULPS, DEFAULT_NOISE_FACTOR, canonical_dtype_name
from liger_testing.convergence.specs import ModelSpec, get_spec, resolve_callable
from liger_testing.tolerances import machine_eps, tolerances

__all__ = [
    "RunConfig",
    "ConvergenceResult",
    "ConvergenceSetupError",
    "Series",
    "StepRecord",
    "run_convergence",
    "DEFAULT_NOISE_FACTOR",
    "DEFAULT_FLOOR_ULPS",
]

ARMS = ("unpatched", "patched", "reference")


class ConvergenceSetupError(RuntimeError):
    """The comparison cannot be trusted: the arms are not what they should be (nothing was judged)."""


def parse_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    return getattr(torch, canonical_dtype_name(dtype))


@dataclass
class RunConfig:
    """Everything a convergence run depends on; defaults give the CLI's CPU run.

    ``batch_size`` / ``seq_len`` None: 2 x 16 on CPU (the Triton interpreter costs about 1 ms per
    program instance), 8 x 128 on a GPU. ``patch`` / ``undo`` / ``patch_kwargs`` None: the spec's.
    ``judge_params`` None: parameters are judged in float32 and only recorded in bfloat16 / float16,
    where AdamW's sign-like first updates flip parameters whose gradient is within rounding of zero by
    a full ``2 * lr`` in whichever arm the rounding happened to cross zero (not a kernel property; the
    gradients, losses and logits that drive those updates are judged).
    ``progress``: called with each :class:`StepRecord` as the run goes.
    """

    model: str = "llama"
    steps: int = 30
    dtype: torch.dtype | str = torch.float32
    device: str = "auto"
    seed: int = 0
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int | None = None
    seq_len: int | None = None
    tolerance: str = "measured"
    noise_factor: float = DEFAULT_NOISE_FACTOR
    floor_ulps: float = DEFAULT_FLOOR_ULPS
    top_k: int = 5
    judge_params: bool | None = None
    patch: str | Callable[..., Any] | None = None
    undo: str | Callable[..., Any] | None = None
    patch_kwargs: Mapping[str, Any] | None = None
    progress: Callable[[StepRecord], None] | None = None

    def resolved(self) -> RunConfig:
        """A copy with dtype, device, batch size and sequence length made concrete (and checked)."""
        out = copy.copy(self)
        out.dtype = parse_dtype(self.dtype)
        if out.dtype == torch.float64:
            raise ValueError("dtype float64 is the reference arm's dtype; run float32, bfloat16 or float16")
        device = (self.device or "auto").strip()
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        out.device = str(torch.device(device))
        on_gpu = torch.device(out.device).type != "cpu"
        out.batch_size = self.batch_size or (8 if on_gpu else 2)
        out.seq_len = self.seq_len or (128 if on_gpu else 16)
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.tolerance not in ("measured", "fixed"):
            raise ValueError(f"tolerance must be 'measured' or 'fixed', got {self.tolerance!r}")
        if not (self.noise_factor > 0 and self.floor_ulps >= 0):
            raise ValueError(
                f"noise_factor must be > 0 and floor_ulps >= 0, got {self.noise_factor}, {self.floor_ulps}"
            )
        if self.top_k < 1:
            raise ValueError(f"top_k must be positive, got {self.top_k}")
        if self.judge_params is None:
            out.judge_params = out.dtype == torch.float32
        return out

    def judged(self, quantity: str) -> bool:
        """Whether ``quantity`` counts for the verdict (parameters only when ``judge_params``)."""
        return bool(self.judge_params) or not quantity.startswith("param/")

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "steps": self.steps,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": self.device,
            "seed": self.seed,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "batch_size": self.batch_size,
            "seq_len": self.seq_len,
            "tolerance": self.tolerance,
            "noise_factor": self.noise_factor,
            "floor_ulps": self.floor_ulps,
            "top_k": self.top_k,
            "judge_params": self.judge_params,
        }


@dataclass
class Series:
    """One compared quantity over the steps (one entry per step; eval quantities have one entry).

    ``diff`` / ``noise`` / ``scale`` are largest absolute values (of patched - unpatched, unpatched -
    reference, unpatched); ``diff_l2`` / ``noise_l2`` the same differences' L2 norms, for information.
    ``param/`` quantities leave out the elements whose gradient sign the gradient check has not pinned
    (see ``_unpinned``).
    """

    diff: list[float] = field(default_factory=list)
    noise: list[float] = field(default_factory=list)
    scale: list[float] = field(default_factory=list)
    allowed: list[float] = field(default_factory=list)  # the band diff is judged against
    ratio: list[float] = field(
        default_factory=list
    )  # diff / allowed (fixed mode: elementwise max); > 1 fails
    diff_l2: list[float] = field(default_factory=list)
    noise_l2: list[float] = field(default_factory=list)

    _FIELDS = ("diff", "noise", "scale", "allowed", "ratio", "diff_l2", "noise_l2")

    def append(self, *values: float) -> None:
        """Append one step: values in the order of ``_FIELDS``."""
        for name, value in zip(self._FIELDS, values, strict=True):
            getattr(self, name).append(float(value))

    def rel(self) -> list[float]:
        """diff / scale per step: the largest difference relative to the largest magnitude."""
        return [d / s if s else (0.0 if d == 0 else math.inf) for d, s in zip(self.diff, self.scale)]

    def to_dict(self) -> dict[str, list[float]]:
        return {**{name: getattr(self, name) for name in self._FIELDS}, "rel": self.rel()}


@dataclass
class StepRecord:
    """What one step measured (also handed to ``RunConfig.progress``)."""

    step: int
    steps: int
    loss: dict[str, float]
    grad_norm: dict[str, float]
    worst_quantity: str
    worst_ratio: float
    seconds: float


@dataclass
class ConvergenceResult:
    """The outcome of :func:`run_convergence` (see :mod:`liger_testing.convergence.report` for output)."""

    config: RunConfig
    spec: ModelSpec
    patch_ref: str
    undo_ref: str
    patch_changes: list[str]
    steps: list[StepRecord]
    quantities: dict[str, Series]  # "loss", "grad_norm", "grad/<param>", "param/<param>"
    eval: dict[str, Series]  # "eval/logits", "eval/top<k>_logprobs", "eval/loss"
    top1_agreement: float
    seconds: float
    versions: dict[str, str]
    # Ctrl-C during training: the steps done so far, no evaluation, and no verdict of PASS.
    interrupted: bool = False

    @property
    def passed(self) -> bool:
        return not self.interrupted and self.first_divergence() is None

    def first_divergence(self) -> dict[str, Any] | None:
        """The first step with a quantity beyond tolerance, and the worst such quantity at that step."""
        for step in range(len(self.steps)):
            worst = None
            for name, series in self.quantities.items():
                if not self.config.judged(name):
                    continue
                ratio = series.ratio[step]
                if not ratio <= 1.0 and (worst is None or _worse(ratio, worst[1])):
                    worst = (name, ratio)
            if worst is not None:
                return self._point(worst[0], self.quantities[worst[0]], step)
        for name, series in self.eval.items():
            if not series.ratio[0] <= 1.0:
                return {**self._point(name, series, 0), "step": "eval"}
        return None

    def worst(self, n: int = 5, judged_only: bool = True) -> list[dict[str, Any]]:
        """The ``n`` quantities with the largest ratio over the run (each at its worst step)."""
        rows = []
        for name, series in [*self.quantities.items(), *self.eval.items()]:
            if (judged_only and not self.config.judged(name)) or not series.ratio:
                continue
            step = max(range(len(series.ratio)), key=lambda i: _sort_key(series.ratio[i]))
            row = self._point(name, series, step)
            if name.startswith("eval/"):
                row["step"] = "eval"
            rows.append(row)
        rows.sort(key=lambda r: _sort_key(r["ratio"]), reverse=True)
        return rows[:n]

    @staticmethod
    def _point(name: str, series: Series, step: int) -> dict[str, Any]:
        return {
            "quantity": name,
            "layer": layer_of(name),
            "step": step,
            "diff": series.diff[step],
            "noise": series.noise[step],
            "scale": series.scale[step],
            "allowed": series.allowed[step],
            "ratio": series.ratio[step],
        }

    def assert_converged(self) -> None:
        """Raise ``AssertionError`` with the report when the arms diverged."""
        if not self.passed:
            from liger_testing.convergence.report import format_report

            raise AssertionError(format_report(self))

    def to_dict(self) -> dict[str, Any]:
        from liger_testing.convergence.report import result_to_dict

        return result_to_dict(self)


def _sort_key(ratio: float) -> float:
    return math.inf if math.isnan(ratio) else ratio


def _worse(a: float, b: float) -> bool:
    return _sort_key(a) > _sort_key(b)


_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks)\.(\d+)\.")


def layer_of(quantity: str) -> str:
    """The layer a quantity belongs to: ``layer N``, ``embeddings``, ``lm_head``, ``final norm`` or itself."""
    name = quantity.split("/", 1)[1] if quantity.startswith(("grad/", "param/")) else None
    if name is None:
        return quantity
    match = _LAYER.search(name)
    if match:
        return f"layer {match.group(1)}"
    if "embed" in name or name.endswith("wte.weight"):
        return "embeddings"
    if "lm_head" in name or "output" in name.split(".")[0]:
        return "lm_head"
    if "norm" in name:
        return "final norm"
    return name.rsplit(".", 1)[0]


# ----------------------------------------------------------------------------------------------------
# Checking that the unpatched arms are unpatched
# ----------------------------------------------------------------------------------------------------


def _watched_modules(model: nn.Module) -> list[types.ModuleType]:
    """The Python modules defining the model's classes (not torch's own): where patches land."""
    names = {type(m).__module__ for m in model.modules()}
    return [
        sys.modules[name] for name in sorted(names) if name in sys.modules and name.split(".")[0] != "torch"
    ]


def _globals_snapshot(modules: Iterable[types.ModuleType]) -> dict[tuple[str, str, str], Any]:
    """Every global of the modules, and every attribute of the classes they define, by identity."""
    snap: dict[tuple[str, str, str], Any] = {}
    for module in modules:
        for name, value in list(vars(module).items()):
            snap[(module.__name__, "", name)] = value
            if isinstance(value, type) and value.__module__ == module.__name__:
                for attr, member in list(vars(value).items()):
                    snap[(module.__name__, name, attr)] = member
    return snap


def _globals_diff(before: Mapping, after: Mapping) -> list[str]:
    out = []
    for key in sorted(before.keys() | after.keys()):
        old, new = before.get(key, _ABSENT), after.get(key, _ABSENT)
        if old is not new:
            module, cls, attr = key
            where = f"{module}.{cls + '.' if cls else ''}{attr}"
            out.append(f"{where}: {_short(old)} -> {_short(new)}")
    return out


_ABSENT = object()


def _short(obj: Any) -> str:
    """A readable name: ``module.qualname`` for functions and classes (a function defined inside
    another one reads as if defined in its module), ``wrapper of <innermost>`` for a chain of
    ``functools.wraps`` wrappers, else the type's name."""
    if obj is _ABSENT:
        return "<absent>"
    func = getattr(obj, "__func__", obj)
    if getattr(func, "__wrapped__", None) is not None:
        return f"wrapper of {_short(inspect.unwrap(func))}"
    # Liger's causal-LM forward names what it wraps under its own attribute (no __wrapped__, so that
    # inspect.getsource reads the wrapper): duck-typed, this package imports nothing from liger_kernel.
    if getattr(func, "__liger_original__", None) is not None:
        return f"wrapper of {_short(inspect.unwrap(func.__liger_original__))}"
    name = getattr(obj, "__qualname__", None) or getattr(getattr(obj, "__func__", None), "__qualname__", None)
    module = getattr(obj, "__module__", None)
    if name:
        name = name.rsplit("<locals>.", 1)[-1]
        return f"{module}.{name}" if module else name
    return type(obj).__name__


def _instance_snapshot(model: nn.Module) -> dict[str, tuple[type, dict[str, Any]]]:
    """Per submodule: its class and the callables set on the instance itself (forward overrides...)."""
    snap = {}
    for name, module in model.named_modules():
        own = {
            key: value
            for key, value in vars(module).items()
            if callable(value) and not isinstance(value, (nn.Module, type))
        }
        snap[name or "<model>"] = (type(module), own)
    return snap


def _instance_diff(before: Mapping, after: Mapping) -> list[str]:
    out = []
    for name in sorted(before.keys() | after.keys()):
        if name not in before or name not in after:
            out.append(f"{name}: module {'added' if name not in before else 'removed'}")
            continue
        (cls0, own0), (cls1, own1) = before[name], after[name]
        if cls0 is not cls1:
            out.append(f"{name}: {cls0.__name__} -> {cls1.__name__} ({cls1.__module__})")
        for key in sorted(own0.keys() | own1.keys()):
            if own0.get(key, _ABSENT) is not own1.get(key, _ABSENT):
                out.append(
                    f"{name}.{key} (instance): {_short(own0.get(key, _ABSENT))} -> {_short(own1.get(key, _ABSENT))}"
                )
    return out


def _in(obj: Any, package: str) -> bool:
    """Whether a class or function was defined in ``package`` (or a module under it)."""
    module = getattr(obj, "__module__", None) if isinstance(obj, (type, types.FunctionType)) else None
    return isinstance(module, str) and (module == package or module.startswith(package + "."))


def _summarize_changes(changes: list[str]) -> list[str]:
    """What a user changed, for people: private attributes (``_replicate_for_data_parallel``, the
    patch's own bookkeeping) left out, and 'model.layers.N.x: A -> B' lines that differ only in N
    collapsed into one."""
    counts: dict[str, int] = {}
    for line in changes:
        where = line.split(":", 1)[0].split(" ", 1)[0]
        if where.rsplit(".", 1)[-1].startswith("_"):
            continue
        key = re.sub(r"\.\d+\.", ".N.", line, count=1)
        counts[key] = counts.get(key, 0) + 1
    return [f"{key}{f'  (x{n})' if n > 1 else ''}" for key, n in counts.items()]


# ----------------------------------------------------------------------------------------------------
# Arms
# ----------------------------------------------------------------------------------------------------


@dataclass
class _Arm:
    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer | None = None
    params: dict[str, nn.Parameter] = field(default_factory=dict)
    instance: dict = field(default_factory=dict)

    def refresh_params(self) -> None:
        self.params = dict(self.model.named_parameters())

    def make_optimizer(self, lr: float, weight_decay: float) -> None:
        self.refresh_params()
        # foreach=False: the same per-parameter arithmetic for every dtype and device.
        self.optimizer = torch.optim.AdamW(
            self.params.values(), lr=lr, weight_decay=weight_decay, foreach=False
        )


class _Float64Everywhere(TorchFunctionMode):
    """Keep float64 tensors in float64 where model code asks for float32 (the reference arm only).

    Hugging Face models upcast to float32 for numerically sensitive steps (RMSNorm's variance, the
    attention softmax, the loss: ``x.to(torch.float32)``, ``x.float()``, ``softmax(..., dtype=float32)``).
    On float64 tensors those are downcasts that would make the reference only as accurate as float32
    there, and its rounding there would be correlated with the float32 arm's, hiding part of the noise.
    Under this mode they keep float64, so the reference is the model's math in float64 throughout.
    Every float32 request becomes float64, whatever it applies to (``position_ids.float()`` in the
    rotary embedding, ``torch.zeros(..., dtype=torch.float32)`` in Mixtral's router loss), and tensors
    made without a dtype are float64 (the caller sets the default dtype), so that no float32 operand
    ever meets a float64 one.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.float:
            return args[0].double()
        if func is torch.Tensor.to:
            args = tuple(torch.float64 if a is torch.float32 else a for a in args)
        if kwargs.get("dtype") is torch.float32:
            kwargs = {**kwargs, "dtype": torch.float64}
        return func(*args, **kwargs)


@contextlib.contextmanager
def float64_throughout():
    """float64 as the default dtype and every float32 request widened (``_Float64Everywhere``)."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with _Float64Everywhere():
            yield
    finally:
        torch.set_default_dtype(default)


def _arm_precision(arm: _Arm):
    """The reference arm runs in float64 throughout; the others as they are."""
    return float64_throughout() if arm.name == "reference" else contextlib.nullcontext()


def _forward_backward(arm: _Arm, input_ids: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One training forward and backward; returns (loss, gradient norm) as float64 0-d tensors."""
    with _arm_precision(arm):
        return _forward_backward_impl(arm, input_ids, seed)


def _forward_backward_impl(
    arm: _Arm, input_ids: torch.Tensor, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)  # the same random stream in every arm (nothing random in the built-ins)
    arm.model.train()
    assert arm.optimizer is not None
    arm.optimizer.zero_grad(set_to_none=True)
    out = arm.model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=input_ids)
    loss = out.loss
    if loss is None:
        raise ConvergenceSetupError(f"the {arm.name} model returned no loss for labels=input_ids")
    loss.backward()
    squares = [p.grad.detach().double().pow(2).sum() for p in arm.params.values() if p.grad is not None]
    norm = torch.stack(squares).sum().sqrt() if squares else torch.zeros((), dtype=torch.float64)
    return loss.detach().double(), norm


@torch.no_grad()
def _eval_logits(arm: _Arm, input_ids: torch.Tensor) -> torch.Tensor:
    arm.model.eval()
    with _arm_precision(arm):
        out = arm.model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
    if getattr(out, "logits", None) is None:
        raise ConvergenceSetupError(f"the {arm.name} model returned no logits in eval mode")
    return out.logits.detach().double()


class _Judge:
    """Turns (patched, unpatched, reference) values into one :class:`Series` entry (7 numbers).

    Measured mode: ``allowed = noise_factor * band + floor`` where ``band`` is the larger of this step's
    noise and the largest noise seen so far for the quantity relative to its scale, times its scale now
    (a dtype's noise does not go away as training goes on; a step where the unpatched arm happens to
    round like the float64 one must not make the band vanish), and ``floor = max(floor_ulps *
    eps(float32), eps(dtype)) * scale``: a few float32 ulps (what float32 accumulations legitimately
    differ by) or one rounding of the run dtype, whichever is larger, for quantities whose noise is
    nearly zero.
    """

    def __init__(self, config: RunConfig) -> None:
        self.measured = config.tolerance == "measured"
        self.factor = config.noise_factor
        self.floor_rel = max(config.floor_ulps * machine_eps(torch.float32), machine_eps(config.dtype))
        self.tol = tolerances(config.dtype)
        self.envelope: dict[str, torch.Tensor] = {}  # quantity -> largest noise / scale so far

    def stats(self, name: str, p: torch.Tensor, u: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """A float64 tensor (diff, noise, scale, allowed, ratio, diff_l2, noise_l2) on the values' device."""
        p, u, r = p.detach().double(), u.detach().double(), r.detach().double()
        err = (p - u).abs()
        diff = _nanmax(err)
        noise = _nanmax((u - r).abs())
        scale = _nanmax(u.abs())
        if self.measured:
            rel = torch.where(scale > 0, noise / scale, torch.zeros_like(noise))
            if name in self.envelope:
                rel = torch.maximum(self.envelope[name], rel)
            self.envelope[name] = rel
            band = torch.maximum(noise, rel * scale)
            allowed = self.factor * band + self.floor_rel * scale
            ratio = torch.where(allowed > 0, diff / allowed, torch.where(diff > 0, math.inf, 0.0))
        else:
            bound = self.tol.atol + self.tol.rtol * u.abs()
            allowed = self.tol.atol + self.tol.rtol * scale
            ratio = _nanmax(err / bound)
        diff_l2 = (p - u).norm()
        noise_l2 = (u - r).norm()
        values = [diff, noise, scale, allowed, torch.as_tensor(ratio, dtype=torch.float64), diff_l2, noise_l2]
        return torch.stack([v.to(diff.device) for v in values])


def _unpinned(
    patched: torch.Tensor, unpatched: torch.Tensor, reference: torch.Tensor, allowed: torch.Tensor
) -> torch.Tensor:
    """The elements whose gradient the gradient check leaves free to have either sign: those whose
    float64 gradient is no larger than the difference the check accepts (``allowed``), where the
    patched and unpatched gradients differ (where they are equal, so are the updates).

    AdamW's update there is not determined by any gradient the check accepts: its early updates are
    about ``lr * g / (|g| + eps)``, so a gradient within rounding of zero moves the parameter by up to
    ``2 * lr`` in whichever arm its rounding lands on the other side, and by ``lr / eps`` times the
    rounding difference where ``|g| < eps`` (float32 too: one lm_head element of qwen3_moe's tiny model
    has a gradient of 1e-9 at step 1, and a 5e-11 rounding difference moved it by 4e-6, 70 times the
    parameter's own float32 noise). The runner leaves such elements out of the ``param/`` comparison
    from that step on; their gradients are judged as every other element's are.
    """
    free = reference.detach().abs() <= allowed.to(reference.device, torch.float64)
    return free & (patched.detach() != unpatched.detach())


def _nanmax(x: torch.Tensor) -> torch.Tensor:
    """max of x, NaN when any element is NaN (so a NaN is never mistaken for agreement)."""
    if x.numel() == 0:
        return torch.zeros((), dtype=torch.float64, device=x.device)
    m = x.max()
    return torch.where(torch.isnan(x).any(), torch.full_like(m, math.nan), m)


def _versions() -> dict[str, str]:
    import importlib.metadata
    import platform

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for dist in ("transformers", "triton", "liger-kernel"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name()
    out["TRITON_INTERPRET"] = os.environ.get("TRITON_INTERPRET", "")
    return out


def _ref_name(ref: Any) -> str:
    if ref is None:
        return "none"
    if isinstance(ref, str):
        return ref
    return f"{getattr(ref, '__module__', '?')}:{getattr(ref, '__qualname__', repr(ref))}"


def _prepare_interpreter(device: str) -> None:
    """On CPU, switch Triton's interpreter on before Triton is imported (building a model imports it).

    Triton decides at import time whether its own ``@triton.jit`` helpers (``tl.sum``...) are
    interpreted, so the variable must be set before the first ``import triton`` in the process, not
    just before the patch's kernels are defined. An explicit ``TRITON_INTERPRET`` is left alone.
    """
    if torch.device(device).type != "cpu" or "TRITON_INTERPRET" in os.environ:
        return
    os.environ["TRITON_INTERPRET"] = "1"
    if "triton" in sys.modules:
        import warnings

        warnings.warn(
            "liger_testing.convergence: triton was imported before TRITON_INTERPRET=1 could be set, so Triton "
            "kernels of the patch cannot run on this CPU; set TRITON_INTERPRET=1 in the environment (the "
            "liger_testing pytest plugin and `python -m liger_testing.converge` do)",
            RuntimeWarning,
            stacklevel=4,
        )


def _call_undo(undo: Callable[..., Any] | None) -> None:
    if undo is not None:
        undo()


class _Run:
    def __init__(self, config: RunConfig, spec: ModelSpec) -> None:
        self.config = config
        self.spec = spec
        self.patch_ref = config.patch if config.patch is not None else spec.patch
        self.undo_ref = config.undo if config.undo is not None else spec.undo
        if isinstance(self.undo_ref, str) and self.undo_ref.strip().lower() == "none":
            self.undo_ref = None
        if self.patch_ref is None:
            raise ConvergenceSetupError(f"spec {spec.name!r} has no patch and none was given")
        self.patch_kwargs = dict(spec.patch_kwargs if config.patch_kwargs is None else config.patch_kwargs)
        self.judge = _Judge(config)
        self.quantities: dict[str, Series] = {}
        self.records: list[StepRecord] = []
        self.changes: list[str] = []
        # parameter name -> elements whose gradient sign the gradient check has not pinned at some step
        # (see _unpinned); kept as one bool per element, on the parameters' device
        self.unpinned: dict[str, torch.Tensor] = {}

    def truncate(self) -> None:
        """Drop what an interrupted step recorded: every series keeps exactly the completed steps."""
        done = len(self.records)
        for series in self.quantities.values():
            for name in Series._FIELDS:
                del getattr(series, name)[done:]

    # -- setup -------------------------------------------------------------------------------------

    def build(self) -> None:
        cfg = self.config
        _prepare_interpreter(cfg.device)
        dataset = load_dataset()
        self.batches = [
            b.to(cfg.device) for b in dataset.train_batches(cfg.steps, cfg.batch_size, cfg.seq_len, cfg.seed)
        ]
        self.eval_ids = dataset.eval_batch(cfg.batch_size, cfg.seq_len, cfg.seed).to(cfg.device)

        torch.manual_seed(cfg.seed)
        base = self.spec.make_model(self.spec.make_config(dataset.vocab_size))
        # The watched modules and their pristine state, before the first patch.
        self.watched = _watched_modules(base)
        self.pristine = _globals_snapshot(self.watched)
        self._check_not_prepatched(base)
        unpatched = base.to(device=cfg.device, dtype=cfg.dtype)
        self.arms = {
            "unpatched": _Arm("unpatched", unpatched),
            "patched": _Arm("patched", copy.deepcopy(unpatched)),
            "reference": _Arm("reference", copy.deepcopy(unpatched).to(torch.float64)),
        }
        for arm in self.arms.values():
            arm.instance = _instance_snapshot(arm.model)
            arm.refresh_params()
        names = [set(arm.params) for arm in self.arms.values()]
        if not names[0] == names[1] == names[2]:
            raise ConvergenceSetupError("the arms' parameter names differ after copying the model")
        for name, p in self.arms["unpatched"].params.items():
            if not p.dtype.is_floating_point:
                raise ConvergenceSetupError(f"parameter {name} is not floating point ({p.dtype})")

        self.patch = resolve_callable(self.patch_ref, "patch")
        self.undo = resolve_callable(self.undo_ref, "undo")
        self._first_patch()
        for arm in self.arms.values():
            arm.make_optimizer(cfg.lr, cfg.weight_decay)

    def _check_not_prepatched(self, base: nn.Module) -> None:
        """The freshly built model and its modeling modules hold nothing from the patch's package."""
        ref = self.patch_ref
        module = ref.split(":")[0] if isinstance(ref, str) else getattr(ref, "__module__", None)
        package = (module or "").split(".")[0]
        if not package or package in ("__main__", "builtins", type(base).__module__.split(".")[0]):
            return  # (a patch living in the model's own package cannot be told apart this way)
        found = sorted(
            {
                f"{name or '<model>'}: {type(m).__qualname__}"
                for name, m in base.named_modules()
                if _in(type(m), package)
            }
            | {".".join(filter(None, key)) for key, value in self.pristine.items() if _in(value, package)}
        )
        if found:
            raise ConvergenceSetupError(
                f"the unpatched model already uses objects from {package} (a patch is still applied in this "
                "process; undo it before the run):\n  " + "\n  ".join(found[:20])
            )

    def _first_patch(self) -> None:
        patched = self.arms["patched"]
        names_before = list(patched.params)
        try:
            self.patch(model=patched.model, **self.patch_kwargs)
            instance_changes = _instance_diff(patched.instance, _instance_snapshot(patched.model))
            global_changes = _globals_diff(self.pristine, _globals_snapshot(self.watched))
        finally:
            _call_undo(self.undo)
        self.changes = _summarize_changes(instance_changes + global_changes)
        if not self.changes:
            raise ConvergenceSetupError(
                f"the patch {_ref_name(self.patch_ref)} changed nothing in the {self.spec.name} model (no module "
                f"class, instance attribute or modeling-module global): comparing would prove nothing"
            )
        patched.refresh_params()
        if list(patched.params) != names_before:
            raise ConvergenceSetupError(
                "the patch renamed, added or removed parameters; parameters are compared by name, so a patch "
                "must keep them (swap module classes in place, reuse the Parameter objects)"
            )
        self._check_undone()

    # -- checks ------------------------------------------------------------------------------------

    def _check_undone(self) -> None:
        left = _globals_diff(self.pristine, _globals_snapshot(self.watched))
        if left:
            raise ConvergenceSetupError(
                f"after undo ({_ref_name(self.undo_ref)}) the modeling modules are still changed, so the unpatched "
                "arms would run patched code:\n  " + "\n  ".join(left)
            )

    def _check_unpatched(self, arm: _Arm) -> None:
        changed = _instance_diff(arm.instance, _instance_snapshot(arm.model))
        if changed:
            raise ConvergenceSetupError(
                f"the {arm.name} arm is not unpatched any more:\n  " + "\n  ".join(changed)
            )
        self._check_undone()

    def _enter_patched(self) -> None:
        arm = self.arms["patched"]
        ids = {name: id(p) for name, p in arm.params.items()}
        try:
            self.patch(model=arm.model, **self.patch_kwargs)
        except BaseException:
            _call_undo(self.undo)
            raise
        now = dict(arm.model.named_parameters())
        if {name: id(p) for name, p in now.items()} != ids:
            _call_undo(self.undo)
            raise ConvergenceSetupError(
                "applying the patch again replaced parameters of the patched model; the patch must be a no-op "
                "for an already patched model and keep its parameter objects"
            )

    # -- the loop ----------------------------------------------------------------------------------

    def _record(self, name: str, values: list[float]) -> None:
        self.quantities.setdefault(name, Series()).append(*values)

    def step(self, step: int, input_ids: torch.Tensor) -> None:
        t0 = time.perf_counter()
        seed = self.config.seed * 1_000_003 + step
        losses: dict[str, torch.Tensor] = {}
        norms: dict[str, torch.Tensor] = {}
        for name in ("reference", "unpatched"):
            self._check_unpatched(self.arms[name])
            losses[name], norms[name] = _forward_backward(self.arms[name], input_ids, seed)
        self._enter_patched()
        try:
            losses["patched"], norms["patched"] = _forward_backward(self.arms["patched"], input_ids, seed)
        finally:
            _call_undo(self.undo)
        self._check_undone()

        p, u, r = (self.arms[a] for a in ("patched", "unpatched", "reference"))
        names = ["loss", "grad_norm"]
        stats = [
            self.judge.stats("loss", losses["patched"], losses["unpatched"], losses["reference"]),
            self.judge.stats("grad_norm", norms["patched"], norms["unpatched"], norms["reference"]),
        ]
        for pname in u.params:
            grads = [arm.params[pname].grad for arm in (p, u, r)]
            if any(g is None for g in grads):
                if not all(g is None for g in grads):
                    raise ConvergenceSetupError(
                        f"parameter {pname} has a gradient in some arms only: {grads}"
                    )
                continue
            names.append(f"grad/{pname}")
            stats.append(self.judge.stats(names[-1], *grads))
            unpinned = _unpinned(*grads, allowed=stats[-1][3])
            self.unpinned[pname] = unpinned | self.unpinned[pname] if pname in self.unpinned else unpinned
        for arm in (p, u, r):
            assert arm.optimizer is not None
            arm.optimizer.step()
        with torch.no_grad():
            for pname in u.params:
                names.append(f"param/{pname}")
                values = [arm.params[pname] for arm in (p, u, r)]
                if pname in self.unpinned:  # those elements count as equal in every arm
                    values = [v.masked_fill(self.unpinned[pname], 0.0) for v in values]
                stats.append(self.judge.stats(names[-1], *values))
        values = torch.stack(stats).cpu().tolist()  # one device sync per step
        for name, row in zip(names, values):
            self._record(name, row)
        worst_name, worst_row = max(
            ((n, row) for n, row in zip(names, values) if self.config.judged(n)),
            key=lambda item: _sort_key(item[1][4]),
        )
        record = StepRecord(
            step=step,
            steps=self.config.steps,
            loss={a: float(v) for a, v in zip(losses, torch.stack(list(losses.values())).cpu().tolist())},
            grad_norm={a: float(v) for a, v in zip(norms, torch.stack(list(norms.values())).cpu().tolist())},
            worst_quantity=worst_name,
            worst_ratio=worst_row[4],
            seconds=time.perf_counter() - t0,
        )
        self.records.append(record)
        if self.config.progress is not None:
            self.config.progress(record)

    def evaluate(self) -> tuple[dict[str, Series], float]:
        logits = {}
        for name in ("reference", "unpatched"):
            self._check_unpatched(self.arms[name])
            logits[name] = _eval_logits(self.arms[name], self.eval_ids)
        self._enter_patched()
        try:
            logits["patched"] = _eval_logits(self.arms["patched"], self.eval_ids)
        finally:
            _call_undo(self.undo)
        self._check_undone()

        k = min(self.config.top_k, logits["unpatched"].shape[-1])
        logprobs = {a: torch.log_softmax(v, dim=-1) for a, v in logits.items()}
        top = logprobs["unpatched"].topk(k, dim=-1).indices
        top_lp = {a: v.gather(-1, top) for a, v in logprobs.items()}
        targets = self.eval_ids[:, 1:]
        eval_loss = {a: -v[:, :-1].gather(-1, targets[..., None]).mean() for a, v in logprobs.items()}
        names = ["eval/logits", f"eval/top{k}_logprobs", "eval/loss"]
        stats = [
            self.judge.stats(names[0], logits["patched"], logits["unpatched"], logits["reference"]),
            self.judge.stats(names[1], top_lp["patched"], top_lp["unpatched"], top_lp["reference"]),
            self.judge.stats(names[2], eval_loss["patched"], eval_loss["unpatched"], eval_loss["reference"]),
        ]
        values = torch.stack(stats).cpu().tolist()
        out = {}
        for name, row in zip(names, values):
            out[name] = Series()
            out[name].append(*row)
        agree = (logits["patched"].argmax(-1) == logits["unpatched"].argmax(-1)).double().mean().item()
        return out, agree


@contextlib.contextmanager
def _ctrl_c_requests_stop() -> Iterator[threading.Event]:
    """While a run is in progress, the first Ctrl-C (SIGINT) sets the returned event and the loop stops after
    the step in progress; a second one raises KeyboardInterrupt at once. A KeyboardInterrupt raised wherever
    the signal lands can be lost: C code inside torch that probes an argument clears the pending exception
    or reports it as a TypeError. Only in the main thread, and only over Python's default handler (a handler
    the caller installed is left alone)."""
    stop = threading.Event()
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield stop
        return

    def request_stop(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, request_stop)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def run_convergence(config: RunConfig | None = None, **overrides: Any) -> ConvergenceResult:
    """Run the patched / unpatched / float64-reference arms in lockstep and return the measurements.

    ``run_convergence(model="llama", steps=10)`` or ``run_convergence(RunConfig(...))``; keyword
    arguments override fields of ``config``. Raises :class:`ConvergenceSetupError` when the arms are
    not what they must be (patch did nothing, undo left changes, the unpatched arm got patched).
    """
    base = config if config is not None else RunConfig()
    unknown = set(overrides) - set(inspect.signature(RunConfig).parameters)
    if unknown:
        raise TypeError(f"run_convergence() got unknown options {sorted(unknown)}")
    cfg = copy.copy(base)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    cfg = cfg.resolved()
    spec = get_spec(cfg.model)
    t0 = time.perf_counter()
    with _ctrl_c_requests_stop() as stop_requested:
        run = _Run(cfg, spec)
        run.build()
        interrupted = stop_requested.is_set()
        try:
            for step, input_ids in enumerate(run.batches):
                if interrupted:
                    break
                run.step(step, input_ids)
                interrupted = stop_requested.is_set()
        except KeyboardInterrupt:  # a second Ctrl-C, or SIGINT under another handler: mid-step
            interrupted = True
            run.truncate()
        # report the steps done so far, marked interrupted
        eval_series, agreement = ({}, math.nan) if interrupted else run.evaluate()
    return ConvergenceResult(
        config=cfg,
        spec=spec,
        patch_ref=_ref_name(run.patch_ref),
        undo_ref=_ref_name(run.undo_ref),
        patch_changes=run.changes,
        steps=run.records,
        quantities=run.quantities,
        eval=eval_series,
        top1_agreement=agreement,
        seconds=time.perf_counter() - t0,
        versions=_versions(),
        interrupted=interrupted,
    )
