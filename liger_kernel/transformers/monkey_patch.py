"""Patch Hugging Face models with Liger kernels: one table of what to replace, one mechanism to do it.

``MODEL_SPECS`` (the table, in ``model_specs``; its names are importable from here too) has one
entry per supported ``config.model_type``: the modeling module and, for each option of
``apply_liger_kernel_to_<model_type>``, the targets that option replaces (``Function``, ``Norm``,
``GatedMLP``, ``Method``, the causal-LM forward and loss function). This module applies them.

Two ways to apply, one bookkeeping:

* classes (``model=None``): the targets are set on the modeling module / classes, so models built
  afterwards use Liger; undone by ``revert_liger_kernel_to_<model_type>()`` / ``unpatch(model_type)``,
  or scoped with ``with liger_patched(model_type, ...):``. Each patched attribute remembers its original
  and who holds the patch (the plain apply call, each open ``liger_patched`` context, each patched
  instance); it is restored when the last holder lets go, so patching twice is harmless and nested
  scopes compose. A model built inside the scope keeps its Liger modules after the scope ends, but its
  forward and RoPE function revert with the classes: train inside the scope.
* an instance (``model=...``): submodules whose class is a target get their ``__class__`` swapped to
  the replacement in place (parameters, dtype, device and state-dict keys unchanged; attributes the
  replacement needs are added and removed again by ``unpatch(model)``); the causal-LM forward and loss
  function are set on the instance, so ``type(model)`` and the saved ``architectures`` stay Hugging
  Face's. RoPE is the exception: the attention layers call ``apply_rotary_pos_emb`` as a module
  global, so ``rope=True`` patches the modeling module (every model of that type in the process) until
  ``unpatch(model)`` (or ``unpatch(model_type)``).

Copies: the replacement classes are registered in ``patched_classes`` under names that encode what they
replace, and an instance-patched model's forward (``_BoundForward``) pickles as (model type, model), so
deep copies, ``nn.DataParallel`` replicas and pickles of a patched model are patched models of their own.
What instance patching changed is recorded in the model's ``__dict__`` (``_InstanceRecord``), so it is
copied and pickled with the model too: ``unpatch(copy)`` undoes the copy, and only the copy.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import inspect
import logging
import types
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from liger_kernel.transformers import patched_classes
from liger_kernel.transformers.model.causal_lm import is_liger_forward, liger_causal_lm_forward
from liger_kernel.transformers.model.loss_utils import liger_for_causal_lm_loss
from liger_kernel.transformers.model_specs import (  # noqa: F401 (the replacement makers stay importable from here)
    _GEMMA_NORM,
    MODEL_SPECS,
    CausalLMForward,
    Function,
    GatedMLP,
    LossFunction,
    Method,
    ModelSpec,
    Norm,
    _experts_apply_gate,
    _fused_gate_up_mlp_forward,
    _rope,
    _say_once,
)

logger = logging.getLogger(__name__)


def describe(model_type: str) -> dict[str, list[str]]:
    """What each option of ``apply_liger_kernel_to_<model_type>`` replaces, in words.

    A type the installed transformers lacks is described all the same, each line saying so.
    """
    spec = _spec(model_type)
    prefix = "" if spec.available() else f"(unavailable: {spec.unavailable_reason()}) "
    return _describe(spec, prefix)


def _describe(spec: ModelSpec, prefix: str = "") -> dict[str, list[str]]:
    out = {}
    for option in spec.option_defaults():
        lines = []
        for target in spec.targets(option):
            text = (
                target.describe(spec)
                if isinstance(target, (CausalLMForward, LossFunction))
                else target.describe()
            )
            lines.append(f"{prefix}{spec.module_of(target).rsplit('.', 1)[-1]}: {text}")
        out[option] = lines
    return out


def _spec(model_type: str) -> ModelSpec:
    try:
        return MODEL_SPECS[model_type]
    except KeyError:
        raise ValueError(
            f"Liger Kernel does not support model type {model_type!r}; supported model types: "
            f"{', '.join(sorted(MODEL_SPECS))}"
        ) from None


# ----------------------------------------------------------------------------------------------------
# The mechanism: patched attributes with their originals and holders
# ----------------------------------------------------------------------------------------------------


class _Missing(enum.Enum):
    """The value of an attribute that was absent (an enum member: it stays itself through copy and pickle,
    which instance records go through)."""

    MISSING = "missing"


_MISSING = _Missing.MISSING


@dataclass
class _Patched:
    owner: Any  # a module or a class
    attr: str
    raw_original: Any  # owner.__dict__[attr] before patching, or _MISSING when it was inherited/absent
    holders: set = field(default_factory=set)
    replacement: Any = None  # what patching set owner.attr to


# (id(owner), attr) -> _Patched. Owners are modeling modules and their classes, alive for the process.
_PATCHED: dict[tuple[int, str], _Patched] = {}
# (id(owner), attr, id(original)) -> replacement, so a replacement class keeps one identity.
_REPLACEMENTS: dict[tuple[int, str, int], Any] = {}
_CLASS_HOLDER = "apply_liger_kernel_to_<model_type>()"


_pickle_name = patched_classes.pickle_name
_subclass = patched_classes.make_patched_class


def _method_subclass(original_cls: type, target: Method) -> type:
    """The subclass of ``original_cls`` with ``target.method`` replaced (instance patching of a Method)."""
    method = _replacement(original_cls, target.method, target.make)
    key = (id(original_cls), f"subclass:{target.method}", id(method))
    if key not in _REPLACEMENTS:
        _REPLACEMENTS[key] = _subclass(original_cls, original_cls, {target.method: method}, target.method)
    return _REPLACEMENTS[key]


def patched_class_by_name(ref: str) -> type:
    """The replacement class that ``_pickle_name`` named ``ref``, made now if this process has not patched
    (unpickling a saved patched model); AttributeError when no table entry makes such a class."""
    parts = ref.split("___")
    if len(parts) in (2, 3):
        module, cls_name, method = parts[0].replace("__", "."), parts[1], (parts[2:] or [None])[0]
        for spec in MODEL_SPECS.values():
            if module not in spec.modules():
                continue
            for option in spec.option_defaults():
                for target in spec.targets(option):
                    if spec.module_of(target) != module:
                        continue
                    modeling = spec.modeling_of(target)
                    if method is None and isinstance(target, (Norm, GatedMLP)) and target.name == cls_name:
                        return _replacement(modeling, cls_name, target.make)
                    if isinstance(target, Method) and (target.cls, target.method) == (cls_name, method):
                        return _method_subclass(getattr(modeling, cls_name), target)
    raise AttributeError(f"module {patched_classes.__name__!r} has no attribute {ref!r}")


def _original(owner: Any, attr: str) -> Any:
    """The value ``owner.attr`` had before Liger patched it (the current value if it is not patched)."""
    patched = _PATCHED.get((id(owner), attr))
    if patched is None:
        return getattr(owner, attr, None)
    if patched.raw_original is _MISSING:  # inherited (or absent): look past the owner itself
        for base in getattr(owner, "__mro__", ())[1:]:
            if attr in base.__dict__:
                return getattr(base, attr)
        return None
    raw = patched.raw_original
    return raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw


def _replacement(owner: Any, attr: str, make: Callable[[Any], Any]) -> Any:
    original = _original(owner, attr)
    key = (id(owner), attr, id(original))
    if key not in _REPLACEMENTS:
        _REPLACEMENTS[key] = make(original)
    return _REPLACEMENTS[key]


def _hold(owner: Any, attr: str, make: Callable[[Any], Any], holder: Any) -> None:
    """Set ``owner.attr`` to its Liger replacement (once) and record ``holder`` as one of its users."""
    key = (id(owner), attr)
    patched = _PATCHED.get(key)
    if patched is not None and owner.__dict__.get(attr, _MISSING) is not patched.replacement:
        # Set again behind our back since it was patched (importlib.reload of the modeling module, as
        # Liger Kernel 0.8's tests revert, or another library's patch): the value now there is the
        # original to wrap and restore; the holders still want the patch.
        del _PATCHED[key]
        holders, patched = patched.holders, None
        logger.debug("liger_kernel: %s.%s was replaced since patched; patching it again", owner, attr)
    else:
        holders = set()
    if patched is None:
        replacement = _replacement(owner, attr, make)
        raw = owner.__dict__.get(attr, _MISSING)
        patched = _PATCHED[key] = _Patched(owner, attr, raw, holders, replacement)
        setattr(owner, attr, replacement)
        logger.debug("liger_kernel: patched %s.%s", getattr(owner, "__name__", owner), attr)
    patched.holders.add(holder)


def _restore(patched: _Patched) -> None:
    if patched.raw_original is _MISSING:
        delattr(patched.owner, patched.attr)
    else:
        setattr(patched.owner, patched.attr, patched.raw_original)
    del _PATCHED[(id(patched.owner), patched.attr)]
    logger.debug(
        "liger_kernel: restored %s.%s", getattr(patched.owner, "__name__", patched.owner), patched.attr
    )


def _release(holder: Any) -> None:
    """Drop ``holder`` from every patch; restore the ones nobody holds any more."""
    for patched in list(_PATCHED.values()):
        patched.holders.discard(holder)
        if not patched.holders:
            _restore(patched)


def _owners(spec: ModelSpec) -> set[int]:
    owners = set()
    for name in spec.modules():
        modeling = spec.modeling_module(name)
        if modeling is not None:
            owners |= {id(modeling)} | {id(obj) for obj in vars(modeling).values() if isinstance(obj, type)}
    return owners


def _skipped(spec: ModelSpec, modeling: types.ModuleType, target: Function | Norm | GatedMLP) -> bool:
    """Whether ``target`` is left alone: the modeling module lacks it (said at warning level, or debug
    for a name only some releases have), or it is an alias of a class another target patches."""
    if not hasattr(modeling, target.name):
        level = logging.DEBUG if getattr(target, "absent_ok", False) else logging.WARNING
        logger.log(level, "liger_kernel: %s has no %s; not patched", spec.module_of(target), target.name)
        return True
    alias_of = getattr(target, "alias_of", None)
    return alias_of is not None and _original(modeling, alias_of) is _original(modeling, target.name)


def _class_patches(spec: ModelSpec, option: str) -> Iterator[tuple[Any, str, Callable[[Any], Any]]]:
    """(owner, attribute, make) for every attribute that ``option`` sets in class mode."""
    modeling = spec.modeling()
    for target in spec.targets(option):
        if isinstance(target, (Function, Norm, GatedMLP, Method)):
            home = spec.modeling_of(target)  # (a text decoder's module, for Mistral 3)
            if home is None:
                continue
        if isinstance(target, (Function, Norm, GatedMLP)):
            if _skipped(spec, home, target):
                continue
            yield home, target.name, target.replace if isinstance(target, Function) else target.make
        elif isinstance(target, Method):
            cls = getattr(home, target.cls, None)
            if cls is None or not hasattr(cls, target.method):
                logger.warning(
                    "liger_kernel: %s has no %s.%s; not patched",
                    spec.module_of(target),
                    target.cls,
                    target.method,
                )
                continue
            yield cls, target.method, target.make
        elif isinstance(target, CausalLMForward):
            yield getattr(modeling, spec.causal_lm), "forward", _forward_maker(spec)
        elif isinstance(target, LossFunction):
            yield (
                getattr(modeling, spec.causal_lm),
                "_loss_function",
                lambda _: staticmethod(liger_for_causal_lm_loss),
            )


def _forward_maker(spec: ModelSpec) -> Callable[[Callable], Callable]:
    def make(original: Callable) -> Callable:
        aux = spec.forward.load_balancing_loss
        return liger_causal_lm_forward(
            original,
            logit_softcap_attr=spec.forward.logit_softcap_attr,
            load_balancing_loss=getattr(spec.modeling(), aux) if aux else None,
            logits_divisor_attr=spec.forward.logits_divisor_attr,
            base_takes_labels=spec.forward.base_takes_labels,
            decoder=spec.forward.decoder,
            multimodal_args=spec.forward.multimodal_args,
        )

    return make


def causal_lm_forward(model_type: str) -> Callable:
    """The fused-loss forward that patching sets on ``model_type``'s causal-LM class (and, bound, on an
    instance): one function object per model type and original forward."""
    spec = _spec(model_type)
    return _replacement(getattr(spec.modeling(), spec.causal_lm), "forward", _forward_maker(spec))


def _check_options(spec: ModelSpec, options: dict[str, bool]) -> None:
    unknown = set(options) - set(spec.option_defaults())
    if unknown:
        raise TypeError(
            f"apply_liger_kernel_to_{spec.model_type}() got unexpected options {sorted(unknown)}; "
            f"its options are {list(spec.option_defaults())}"
        )
    if options.get("cross_entropy") and options.get("fused_linear_cross_entropy"):
        raise ValueError(
            "cross_entropy and fused_linear_cross_entropy cannot both be True: the fused loss never "
            "materializes the logits that cross_entropy would be applied to; choose one"
        )


def _apply_to_classes(spec: ModelSpec, options: dict[str, bool], holder: Any) -> None:
    for option, enabled in options.items():
        if enabled:
            for owner, attr, make in _class_patches(spec, option):
                _hold(owner, attr, make, holder)


# ----------------------------------------------------------------------------------------------------
# Instance patching
# ----------------------------------------------------------------------------------------------------


@dataclass
class _InstanceRecord:
    """What ``apply(model=...)`` changed on one model, kept in the model's ``__dict__`` under
    ``_RECORD_ATTR``: a deep copy or a pickle of the model carries a record that names its own
    submodules (copy and pickle map them as they map the model's), so the copy can be unpatched too."""

    swapped: list = field(default_factory=list)  # (module, original class, names of attributes added)
    attrs: list = field(default_factory=list)  # (name, previous value or _MISSING) set on the model
    holder: Any = None  # holds the module-level patches (RoPE) that this model uses


_RECORD_ATTR = "_liger_instance_patch"
# The models whose record this process tracks (patched here, or a copy that apply/unpatch has met), each
# with a finalizer that lets go of its module-level patches when the model is collected.
_INSTANCES: weakref.WeakSet = weakref.WeakSet()


def _instance_record(model: nn.Module, create: bool = False) -> _InstanceRecord | None:
    record = model.__dict__.get(_RECORD_ATTR)
    if record is None and create:
        record = model.__dict__[_RECORD_ATTR] = _InstanceRecord()
    if record is not None and model not in _INSTANCES:
        # First seen here: patched just now, or a copy / a loaded model, whose module-level patches are
        # held by its original (if this process has it), so it starts with a holder of its own.
        record.holder = object()
        _INSTANCES.add(model)
        # A model dropped without unpatch() lets go of its module-level patches (RoPE) when collected.
        weakref.finalize(model, _release, record.holder)
    return record


def _swap_class(module: nn.Module, new_cls: type, constructor_args: Callable | None) -> list[str]:
    """Make ``module`` an instance of ``new_cls`` in place; returns the attributes that had to be added."""
    added: list[str] = []
    if not issubclass(new_cls, type(module)):
        # An unrelated class (LigerRMSNorm for LlamaRMSNorm): build one on the meta device to learn the
        # plain attributes its forward needs, and check it holds the same parameters.
        args, kwargs = constructor_args(module)
        with torch.device("meta"):
            fresh = new_cls(*args, **kwargs)
        ours = {n: tuple(p.shape) for n, p in module.named_parameters()}
        theirs = {n: tuple(p.shape) for n, p in fresh.named_parameters()}
        if ours != theirs:
            raise RuntimeError(
                f"liger_kernel: cannot patch {type(module).__name__} in place: its parameters {ours} differ "
                f"from {new_cls.__name__}'s {theirs}"
            )
        for name, value in fresh.__dict__.items():
            if name not in module.__dict__:
                module.__dict__[name] = value
                added.append(name)
    module.__class__ = new_cls
    return added


def _check_model_type(spec: ModelSpec, model: nn.Module) -> None:
    """A model of another type would get nothing patched on it but this type's module-level RoPE,
    process-wide: refuse it before anything is changed."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type != spec.model_type:
        hint = (
            f"; use apply_liger_kernel_to_{model_type}(model=...)"
            if model_type in MODEL_SPECS
            else f" (supported model types: {', '.join(sorted(MODEL_SPECS))})"
        )
        raise ValueError(
            f"apply_liger_kernel_to_{spec.model_type}(model=...) got a {type(model).__name__} whose "
            f"config.model_type is {model_type!r}, not {spec.model_type!r}{hint}"
        )


def _apply_to_instance(spec: ModelSpec, model: nn.Module, options: dict[str, bool]) -> None:
    _check_model_type(spec, model)
    spec.modeling()  # (unavailable: a clear error before anything is changed)
    record = _instance_record(model, create=True)
    # the modeling modules whose classes this model is built of (Mistral 3: its text decoder's one)
    used = {type(m).__module__ for m in model.modules()}
    for option, enabled in options.items():
        if not enabled:
            continue
        for target in spec.targets(option):
            if isinstance(target, Function):
                # Called as a module global by the attention layers: there is no per-instance hook.
                modeling = spec.modeling_of(target)
                if spec.module_of(target) in used and hasattr(modeling, target.name):
                    _hold(modeling, target.name, target.replace, record.holder)
            elif isinstance(target, (Norm, GatedMLP, Method)):
                _swap_submodules(spec, model, target, record)
            elif isinstance(target, CausalLMForward):
                _set_instance_attr(spec, model, "forward", record)
            elif isinstance(target, LossFunction):
                _set_instance_attr(spec, model, "_loss_function", record)


def _swap_submodules(spec: ModelSpec, model: nn.Module, target: Any, record: _InstanceRecord) -> None:
    modeling = spec.modeling_of(target)
    if modeling is None:
        return
    if isinstance(target, Method):
        original_cls = getattr(modeling, target.cls, None)
        if original_cls is None or not hasattr(original_cls, target.method):
            logger.warning(
                "liger_kernel: %s has no %s.%s; not patched",
                spec.module_of(target),
                target.cls,
                target.method,
            )
            return
        new_cls = _method_subclass(original_cls, target)
        constructor_args = None
    else:
        if _skipped(spec, modeling, target):
            return
        original_cls = _original(modeling, target.name)
        new_cls = _replacement(modeling, target.name, target.make)
        constructor_args = target.constructor_args
    for module in model.modules():
        if type(module) is not original_cls:  # exact: already swapped (or built patched) modules are skipped
            continue
        reason = None if isinstance(target, Method) else target.why_not(module)
        if reason is not None:
            _say_once(type(module).__name__, reason)
            continue
        added = _swap_class(module, new_cls, constructor_args)
        record.swapped.append((module, original_cls, added))


def _set_instance_attr(spec: ModelSpec, model: nn.Module, name: str, record: _InstanceRecord) -> None:
    causal_lm = getattr(spec.modeling(), spec.causal_lm)
    if not isinstance(model, causal_lm):
        logger.debug(
            "liger_kernel: %s is not a %s; its loss is not patched", type(model).__name__, spec.causal_lm
        )
        return
    if name == "forward":
        current = model.__dict__.get("forward", type(model).forward)
        if is_liger_forward(current):
            return
        if type(model).forward is not _original(causal_lm, "forward") and not is_liger_forward(
            type(model).forward
        ):
            logger.warning(
                "liger_kernel: %s overrides forward; the fused linear cross entropy is not applied to it",
                type(model).__name__,
            )
            return
        value = _BoundForward(spec.model_type, model)
        _set_attr(model, "_replicate_for_data_parallel", functools.partial(_replicate_rebound, model), record)
    else:
        if model.__dict__.get(name) is liger_for_causal_lm_loss:
            return
        value = liger_for_causal_lm_loss
    _set_attr(model, name, value, record)


def _set_attr(model: nn.Module, name: str, value: Any, record: _InstanceRecord) -> None:
    record.attrs.append((name, model.__dict__.get(name, _MISSING)))
    model.__dict__[name] = value


class _BoundForward:
    """The fused-loss forward of one instance-patched model, kept in the model's ``__dict__``.

    It stands for a bound method (``__func__``, ``__self__``, calling it calls ``__func__(model, ...)``,
    ``inspect.signature`` gives the original forward's), but pickles and deep-copies as (model type,
    model): the loaded or copied model gets the forward made from the table, bound to itself. A bound
    method would pickle as ``getattr(model, "forward")``, which, while the model is being unpickled, is
    the class's unpatched forward.
    """

    def __init__(self, model_type: str, model: nn.Module, func: Callable | None = None) -> None:
        if func is None:
            func = causal_lm_forward(model_type)
        self.model_type = model_type
        self.__func__ = func
        self.__self__ = model

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__func__(self.__self__, *args, **kwargs)

    @property
    def __wrapped__(self) -> Callable:
        # What inspect.getsource reads (through inspect.unwrap): the forward's own source, as for a method.
        return self.__func__

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(types.MethodType(self.__func__, self.__self__))

    def __reduce__(self) -> tuple:
        return (_BoundForward, (self.model_type, self.__self__))

    def rebound(self, model: nn.Module) -> _BoundForward:
        return _BoundForward(self.model_type, model, self.__func__)


def _replicate_rebound(self: nn.Module) -> nn.Module:
    """``nn.DataParallel`` builds its replicas from a copy of the model's ``__dict__``, which holds the
    patched forward bound to this model (the replica on another GPU would run this one): the replica
    gets the forward, and this hook, bound to itself. (A partial of this function, not a bound method,
    is what the model holds: it pickles and deep-copies with the model.)"""
    replica = type(self)._replicate_for_data_parallel(self)
    replica.__dict__.pop(_RECORD_ATTR, None)  # the shallow copy's record names this model's submodules
    forward = replica.__dict__.get("forward")
    if isinstance(forward, _BoundForward) and forward.__self__ is self:
        replica.__dict__["forward"] = forward.rebound(replica)
    if "_replicate_for_data_parallel" in replica.__dict__:
        replica.__dict__["_replicate_for_data_parallel"] = functools.partial(_replicate_rebound, replica)
    return replica


def _unpatch_instance(model: nn.Module) -> None:
    record = _instance_record(model)
    if record is None:
        return
    del model.__dict__[_RECORD_ATTR]
    _INSTANCES.discard(model)
    for module, original_cls, added in reversed(record.swapped):
        module.__class__ = original_cls
        for name in added:
            module.__dict__.pop(name, None)
    for name, previous in reversed(record.attrs):
        if previous is _MISSING:
            model.__dict__.pop(name, None)
        else:
            model.__dict__[name] = previous
    _release(record.holder)


# ----------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------


def apply_liger_kernel(model_type: str, model: nn.Module | None = None, **options: bool) -> None:
    """Apply Liger kernels to ``model_type``'s classes (``model=None``) or to one model in place.

    Options not given take the model type's defaults (see ``describe(model_type)``).
    """
    spec = _spec(model_type)
    _check_options(spec, options)
    options = {**spec.option_defaults(), **options}
    _check_options(spec, options)
    if model is None:
        _apply_to_classes(spec, options, _CLASS_HOLDER)
    else:
        _apply_to_instance(spec, model, options)


def unpatch(target: str | nn.Module | None = None) -> None:
    """Undo Liger patches, restoring the original attributes exactly.

    ``target`` a model type: restore that type's modeling module and classes (every holder let go;
    instances patched in place keep their swapped submodules). A model: undo ``apply(model=...)`` on it
    (and its hold on module-level patches), or on the model it was deep-copied or unpickled from. None:
    every class-level patch and every model patched in place in this process (a copy that has not been
    passed to ``apply``/``unpatch`` yet keeps its patch).
    """
    if target is None:
        for model in list(_INSTANCES):
            _unpatch_instance(model)
        for patched in list(_PATCHED.values()):
            _restore(patched)
    elif isinstance(target, str):
        owners = _owners(_spec(target))
        for patched in list(_PATCHED.values()):
            if id(patched.owner) in owners:
                _restore(patched)
    else:
        _unpatch_instance(target)


@contextlib.contextmanager
def liger_patched(model_type: str, model: nn.Module | None = None, **options: bool) -> Iterator[None]:
    """``with liger_patched("llama", swiglu=False): ...`` applies Liger for the block and undoes it after.

    Without ``model``, models built in the block use Liger (run their training in the block too: the
    forward and RoPE revert at exit). With ``model``, that model is patched in place for the block.
    """
    spec = _spec(model_type)
    _check_options(spec, options)
    options = {**spec.option_defaults(), **options}
    _check_options(spec, options)
    if model is not None:
        already = _instance_record(model) is not None
        _apply_to_instance(spec, model, options)
        try:
            yield
        finally:
            if not already:
                _unpatch_instance(model)
        return
    holder = object()
    try:
        _apply_to_classes(spec, options, holder)
        yield
    finally:
        _release(holder)


# Options Liger Kernel 0.8's functions do not have: keyword-only, after ``model``, so that a positional
# call written for the reference binds as there.
KEYWORD_ONLY_OPTIONS = ("fused_add_rms_norm",)


def _make_apply(model_type: str) -> Callable[..., None]:
    spec = MODEL_SPECS[model_type]
    params = [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation="bool")
        for name, default in spec.option_defaults().items()
        if name not in KEYWORD_ONLY_OPTIONS
    ]
    params.append(inspect.Parameter("model", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None))
    params += [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation="bool")
        for name, default in spec.option_defaults().items()
        if name in KEYWORD_ONLY_OPTIONS
    ]
    signature = inspect.Signature(params, return_annotation=None)

    def apply(*args: Any, **kwargs: Any) -> None:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        options = dict(bound.arguments)
        model = options.pop("model")
        apply_liger_kernel(model_type, model=model, **options)

    lines = [
        f"Apply Liger kernels to {spec.doc_name} models ({spec.module}).",
        "",
        "Before a model is built (``model=None``) the modeling module's classes and functions are patched;",
        "with ``model=`` that model is patched in place. Undo with ``revert_liger_kernel_to_"
        f"{model_type}()`` / ``unpatch(model)``. Options:",
    ]
    for option, replaced in _describe(spec).items():  # (no availability check at import)
        lines.append(f"    {option} (default {spec.option_defaults()[option]}): " + "; ".join(replaced))
    lines.append("cross_entropy and fused_linear_cross_entropy cannot both be True.")
    apply.__signature__ = signature
    apply.__name__ = apply.__qualname__ = f"apply_liger_kernel_to_{model_type}"
    apply.__doc__ = "\n".join(lines)
    apply.__module__ = __name__
    return apply


def _make_revert(model_type: str) -> Callable[[], None]:
    def revert() -> None:
        unpatch(model_type)

    revert.__name__ = revert.__qualname__ = f"revert_liger_kernel_to_{model_type}"
    revert.__doc__ = f"Restore {MODEL_SPECS[model_type].module} exactly as it was before Liger patched it."
    revert.__module__ = __name__
    return revert


apply_liger_kernel_to_llama = _make_apply("llama")
apply_liger_kernel_to_mistral = _make_apply("mistral")
apply_liger_kernel_to_mixtral = _make_apply("mixtral")
apply_liger_kernel_to_gemma = _make_apply("gemma")
apply_liger_kernel_to_gemma2 = _make_apply("gemma2")
apply_liger_kernel_to_qwen2 = _make_apply("qwen2")
apply_liger_kernel_to_phi3 = _make_apply("phi3")

revert_liger_kernel_to_llama = _make_revert("llama")
revert_liger_kernel_to_mistral = _make_revert("mistral")
revert_liger_kernel_to_mixtral = _make_revert("mixtral")
revert_liger_kernel_to_gemma = _make_revert("gemma")
revert_liger_kernel_to_gemma2 = _make_revert("gemma2")
revert_liger_kernel_to_qwen2 = _make_revert("qwen2")
revert_liger_kernel_to_phi3 = _make_revert("phi3")

MODEL_TYPE_TO_APPLY_LIGER_FN: dict[str, Callable[..., None]] = {
    "llama": apply_liger_kernel_to_llama,
    "mistral": apply_liger_kernel_to_mistral,
    "mixtral": apply_liger_kernel_to_mixtral,
    "gemma": apply_liger_kernel_to_gemma,
    "gemma2": apply_liger_kernel_to_gemma2,
    "qwen2": apply_liger_kernel_to_qwen2,
    "phi3": apply_liger_kernel_to_phi3,
}
# The model types added since: the same functions, made from the table under the same names. A type
# the installed transformers lacks gets them too (calling one says it is unavailable).
for _model_type in [t for t in MODEL_SPECS if t not in MODEL_TYPE_TO_APPLY_LIGER_FN]:
    globals()[f"apply_liger_kernel_to_{_model_type}"] = _make_apply(_model_type)
    globals()[f"revert_liger_kernel_to_{_model_type}"] = _make_revert(_model_type)
    MODEL_TYPE_TO_APPLY_LIGER_FN[_model_type] = globals()[f"apply_liger_kernel_to_{_model_type}"]
assert set(MODEL_TYPE_TO_APPLY_LIGER_FN) == set(MODEL_SPECS)


def _apply_liger_kernel_to_instance(model: nn.Module, **kwargs: Any) -> None:
    """Patch ``model`` in place with the function for ``model.config.model_type``.

    This is what Hugging Face's Trainer calls with ``use_liger_kernel=True`` (``liger_kernel_config``
    as kwargs). Keyword arguments the model type's function does not take are dropped (logged at debug
    level), since the Trainer passes one config for every model type.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    spec = MODEL_SPECS.get(model_type)
    if spec is None or not spec.available():
        # As the reference library does: the Trainer goes on training the model as it is.
        reason = (
            spec.unavailable_reason()
            if spec is not None
            else f"Liger Kernel does not support model type {model_type!r}"
        )
        supported = ", ".join(sorted(t for t, s in MODEL_SPECS.items() if s.available()))
        logger.warning(
            "liger_kernel: %s (%s); the model is not patched. Supported model types: %s",
            reason,
            type(model).__name__,
            supported,
        )
        return
    apply_fn = MODEL_TYPE_TO_APPLY_LIGER_FN[model_type]
    accepted = set(inspect.signature(apply_fn).parameters) - {"model"}
    dropped = sorted(set(kwargs) - accepted)
    if dropped:
        # (the table may hold any callable: a framework's own function, a test's Mock without __name__)
        name = getattr(apply_fn, "__name__", f"apply_liger_kernel_to_{model_type}")
        logger.debug("liger_kernel: %s does not take %s; ignored", name, dropped)
    apply_fn(model=model, **{k: v for k, v in kwargs.items() if k in accepted})


__all__ = [
    "MODEL_SPECS",
    "MODEL_TYPE_TO_APPLY_LIGER_FN",
    "apply_liger_kernel",
    "causal_lm_forward",
    "describe",
    "liger_patched",
    "unpatch",
    "_apply_liger_kernel_to_instance",
    *(f"apply_liger_kernel_to_{t}" for t in MODEL_SPECS),
    *(f"revert_liger_kernel_to_{t}" for t in MODEL_SPECS),
]


def _apply_liger_kernel(model_type: str, **kwargs: Any) -> None:
    """Patch the classes of ``model_type``'s modeling module before a model is built (Liger Kernel
    0.8's entry point, what ``AutoLigerKernelForCausalLM`` calls): keyword arguments the model type's
    function does not take are dropped; an empty or unsupported model type is logged and left alone."""
    if not model_type or model_type not in MODEL_TYPE_TO_APPLY_LIGER_FN:
        logger.info("liger_kernel: no Liger kernels for model type %r; nothing patched", model_type)
        return
    apply_fn = MODEL_TYPE_TO_APPLY_LIGER_FN[model_type]
    accepted = set(inspect.signature(apply_fn).parameters) - {"model"}
    apply_fn(**{k: v for k, v in kwargs.items() if k in accepted})
