"""The patch table: for each supported ``config.model_type``, what each option replaces.

``MODEL_SPECS`` has one ``ModelSpec`` per model type. An entry names the modeling module and, for each
option of ``apply_liger_kernel_to_<model_type>``, the targets that option replaces:

* ``Function(name)``: a function of the modeling module (``apply_rotary_pos_emb`` -> Liger RoPE);
* ``Norm(name, ...)``: the module's RMSNorm class -> a ``LigerRMSNorm`` subclass with the entry's
  ``offset`` / ``casting_mode`` / ``init_fn``. Every instance of the class is replaced, so models whose
  attention normalizes q and k with the same class (QK-norm: Qwen3, Gemma 3, OLMo 2/3) get Liger there
  too, in the same casting mode;
* ``GatedMLP(name, liger)``: an MLP class with gate_proj/up_proj/down_proj -> a subclass of
  ``LigerSwiGLUMLP`` / ``LigerGEGLUMLP``, used only when the config's activation is the one the
  kernel computes (otherwise the original class is built, with a warning);
* ``Method(cls, method, make)``: one method of a modeling class, replaced by ``make(original)``
  (Phi-3's fused gate_up MLP forward, the MoE experts' gate).
* ``DecoderLayer(cls, ...)`` (option ``fused_add_rms_norm``): the decoder layer's forward -> one generic
  forward (``_fused_add_norm_layer_forward``) whose residual add after attention and the norm that add
  feeds run as one ``fused_add_rms_norm`` kernel, in the casting mode of the entry's ``Norm``.
Each target lives in the entry's modeling module unless it names another (``module=``): Mistral 3's
entry takes the targets of the ``mistral`` and ``ministral3`` entries, in their modules.
A config that a replacement does not compute (another activation, a partial rotary embedding, a norm
with a bias) keeps the model's code for that part, and ``_say_once`` says so once per process.
The loss options are the same for every model: ``fused_linear_cross_entropy`` wraps
``XForCausalLM.forward`` (``model/causal_lm.py``), ``cross_entropy`` sets the class's loss function to
``liger_for_causal_lm_loss`` (Hugging Face's ``loss_function`` property returns ``_loss_function``).

A model type whose modeling module the installed transformers lacks stays in the table and is reported
as unavailable (``ModelSpec.available()``); nothing here imports a modeling module until a patch is
applied. How the table is applied (class and instance patching, undo) is ``monkey_patch``'s business.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import inspect
import logging
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from liger_kernel.transformers.patched_classes import make_patched_class as _subclass

logger = logging.getLogger(__name__)

_SILU = ("silu", "swish")

# What the fallbacks below have said already: each says once per process what keeps the model's code.
_SAID: set[tuple[str, str]] = set()


def _say_once(part: str, reason: str) -> None:
    """Warn once per process that ``part`` keeps the model's own code, and why. Not while torch.compile
    traces (a log call would break the graph; the eager run of the same model says it)."""
    if torch.compiler.is_compiling() or (part, reason) in _SAID:
        return
    _SAID.add((part, reason))
    logger.warning("liger_kernel: %s keeps the model's own code: %s", part, reason)


def _liger(name: str) -> Any:
    """A public object of ``liger_kernel.transformers`` (imported when a patch is applied, not before)."""
    return getattr(importlib.import_module("liger_kernel.transformers"), name)


def _functional(name: str) -> Callable:
    return getattr(importlib.import_module("liger_kernel.transformers.functional"), name)


# ----------------------------------------------------------------------------------------------------
# Replacements that need the original they stand in for
# ----------------------------------------------------------------------------------------------------


def _rope(original: Callable) -> Callable:
    """``apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1)`` computed by the Liger kernel.

    Keeps Hugging Face's signature (Liger's function has ``position_ids`` in fifth place). Partial
    rotary embeddings (cos narrower than the head, Phi-3 with ``partial_rotary_factor < 1``) go to
    the original function.
    """

    liger_rotary_pos_emb = _liger("liger_rotary_pos_emb")

    def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
        if cos.shape[-1] != q.shape[-1]:
            _say_once(
                f"{original.__module__}.apply_rotary_pos_emb",
                f"partial rotary embedding (cos/sin of width {cos.shape[-1]} for heads of {q.shape[-1]})",
            )
            return original(q, k, cos, sin, unsqueeze_dim)
        return liger_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=unsqueeze_dim)

    apply_rotary_pos_emb.__doc__ = original.__doc__
    return apply_rotary_pos_emb


def _rope_in_input_dtype(original: Callable) -> Callable:
    """OLMo 2/3's ``apply_rotary_pos_emb``: fp32 cos/sin tables, result cast back to q's and k's dtypes
    (the kernel's output has the promoted dtype, fp32, and is rounded once more, as the model does)."""
    rope = _rope(original)

    def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
        q_embed, k_embed = rope(q, k, cos, sin, unsqueeze_dim)
        return q_embed.to(q.dtype), k_embed.to(k.dtype)

    apply_rotary_pos_emb.__doc__ = original.__doc__
    return apply_rotary_pos_emb


def _half_table_rope(original: Callable) -> Callable:
    """gpt-oss's ``apply_rotary_pos_emb``: rotate-half RoPE whose cos/sin tables hold one half (the
    model rotates ``first * cos - second * sin``, ``second * cos + first * sin``); the Liger kernel
    gets the tables repeated to the full head, which is the same rotation."""
    liger_rotary_pos_emb = _liger("liger_rotary_pos_emb")

    def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
        if 2 * cos.shape[-1] != q.shape[-1]:
            _say_once(
                f"{original.__module__}.apply_rotary_pos_emb",
                f"partial rotary embedding (half tables of width {cos.shape[-1]} for heads of {q.shape[-1]})",
            )
            return original(q, k, cos, sin, unsqueeze_dim)
        cos, sin = torch.cat((cos, cos), dim=-1), torch.cat((sin, sin), dim=-1)
        return liger_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=unsqueeze_dim)

    apply_rotary_pos_emb.__doc__ = original.__doc__
    return apply_rotary_pos_emb


def _llama4_rope(original: Callable) -> Callable:
    """Llama 4's ``apply_rotary_emb(xq, xk, freqs_cis)`` (interleaved pairs times a complex table) computed
    by the Liger kernel; a table that does not cover the whole head goes to the original."""
    liger_rope = _liger("liger_llama4_text_rotary_pos_emb")

    def apply_rotary_emb(xq, xk, freqs_cis):
        if not freqs_cis.is_complex() or 2 * freqs_cis.shape[-1] != xq.shape[-1]:
            return original(xq, xk, freqs_cis)
        return liger_rope(xq, xk, freqs_cis)

    apply_rotary_emb.__doc__ = original.__doc__
    return apply_rotary_emb


def _llama4_experts_forward(original: Callable) -> Callable:
    """Llama 4's ``Llama4TextExperts.forward``: the same batched matmuls over the fused (experts, hidden,
    2 * intermediate) ``gate_up_proj``, with ``liger_swiglu`` on the gate | up halves in place of
    ``up * act_fn(gate)`` (its own loop, not transformers' experts implementations)."""
    liger_swiglu = _functional("liger_swiglu")
    # The activation modules of transformers' ACT2FN that compute SiLU ("silu", "swish"); looked up now,
    # since torch.compile cannot trace an import.
    activations = importlib.import_module("transformers.activations")
    silu_modules = (nn.SiLU, getattr(activations, "SiLUActivation", nn.SiLU))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if not isinstance(self.act_fn, silu_modules):
            return original(self, hidden_states)
        hidden_states = hidden_states.view(self.gate_up_proj.shape[0], -1, self.hidden_size)
        gate, up = torch.bmm(hidden_states, self.gate_up_proj).chunk(2, dim=-1)
        next_states = torch.bmm(liger_swiglu(gate, up), self.down_proj)
        return next_states.view(-1, self.hidden_size)

    return forward


def _gpt_oss_apply_gate(original: Callable) -> Callable:
    """gpt-oss's experts gate (clamped, interleaved gate_up) computed by ``gpt_oss_glu``."""
    gpt_oss_glu = importlib.import_module("liger_kernel.ops.gpt_oss_glu").gpt_oss_glu

    def _apply_gate(self, gate_up: torch.Tensor) -> torch.Tensor:
        return gpt_oss_glu(gate_up, self.alpha, self.limit)

    return _apply_gate


def _act_of(config: Any, attr: str) -> Any:
    return getattr(config, attr, None)


def _silu_or_say(module: nn.Module, part: str) -> bool:
    """Whether ``module``'s config asks for SiLU (what ``liger_swiglu`` computes); else say so once."""
    act = _act_of(getattr(module, "config", None), "hidden_act")
    if act in _SILU:
        return True
    _say_once(f"{type(module).__name__}.{part}", f"config.hidden_act is {act!r}; liger_swiglu computes silu")
    return False


def _fused_gate_up_mlp_forward(original: Callable) -> Callable:
    """An MLP with one ``gate_up_proj`` (halves gate | up: Phi-3, GLM-4) with ``liger_swiglu`` on the halves."""
    liger_swiglu = _functional("liger_swiglu")

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if not _silu_or_say(self, "forward"):
            return original(self, hidden_states)
        gate, up = self.gate_up_proj(hidden_states).chunk(2, dim=-1)
        return self.down_proj(liger_swiglu(gate, up))

    return forward


def _experts_apply_gate(original: Callable) -> Callable:
    """MoE experts' gate ``act(gate) * up`` on the (tokens, 2 * intermediate) gate_up output (Mixtral,
    Qwen3-MoE: every experts class that transformers' ``use_experts_implementation`` decorates).

    transformers 5.x stores the experts as fused 3-D parameters (``gate_up_proj``, ``down_proj``) and
    runs them through the implementation chosen by ``config._experts_implementation``; the grouped_mm
    and batched_mm implementations (grouped_mm is the default) call ``self._apply_gate`` -- the one
    place where SwiGLU is a drop-in. The "eager" implementation inlines ``act_fn(gate) * up`` in its
    loop and is left as it is.
    """
    liger_swiglu = _functional("liger_swiglu")

    def _apply_gate(self, gate_up_out: torch.Tensor) -> torch.Tensor:
        if not _silu_or_say(self, "_apply_gate"):
            return original(self, gate_up_out)
        gate, up = gate_up_out.chunk(2, dim=-1)
        return liger_swiglu(gate, up)

    return _apply_gate


# ----------------------------------------------------------------------------------------------------
# Targets: what one option replaces
# ----------------------------------------------------------------------------------------------------


class _KernelizedFunctionStandIn:
    """Calls ``fn`` in place of a module-level function that the ``kernels`` package turned into an
    ``nn.Module`` instance (transformers decorates ``apply_rotary_pos_emb`` with
    ``use_kernel_forward_from_hub``; with ``kernels`` installed, as transformers >= 5.25 requires, the
    decorated function becomes an instance of a generated ``Func`` module class).

    Why not a plain function: every attention layer decorated with ``use_kernelized_func`` keeps a
    private ``Func`` wrapper, and unpickling a model rebuilds each wrapper as
    ``type(<the modeling module's global>)()``. With a plain function in that global this is
    ``function()``, a TypeError, so ``torch.load`` of any whole-model pickle of that model type failed
    while the patch was on. Called with no argument, this class returns a fresh wrapper of the
    original ``Func`` class instead, so the rebuilt wrappers are exactly Hugging Face's.
    """

    wrapped_type: type = type(None)

    def __new__(cls, fn: Callable | None = None) -> Any:
        if fn is None:  # kernels rebuilding a layer's private wrapper after unpickling
            return cls.wrapped_type()
        return super().__new__(cls)

    def __init__(self, fn: Callable) -> None:
        self.fn = fn
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


def _stand_in_for_kernelized(original: nn.Module, fn: Callable) -> _KernelizedFunctionStandIn:
    stand_in_type = type(
        f"Liger{type(original).__name__}StandIn",
        (_KernelizedFunctionStandIn,),
        {"wrapped_type": type(original), "__module__": __name__},
    )
    return stand_in_type(fn)


@dataclass(frozen=True)
class Function:
    """A function of the modeling module, replaced by ``make(original)`` (see :meth:`replace`)."""

    name: str
    make: Callable[[Callable], Callable] = _rope
    liger: str = "liger_rotary_pos_emb"
    module: str | None = None  # the modeling module defining it, when not the entry's (see ModelSpec)

    def describe(self) -> str:
        return f"function {self.name} -> {self.liger}"

    def replace(self, original: Any) -> Any:
        """``make(original)``; behind a :class:`_KernelizedFunctionStandIn` when transformers' ``kernels``
        integration made the original an ``nn.Module`` instance."""
        replacement = self.make(original)
        if isinstance(original, nn.Module):
            return _stand_in_for_kernelized(original, replacement)
        return replacement


@dataclass(frozen=True)
class Norm:
    """The modeling module's RMSNorm class, replaced by a ``LigerRMSNorm`` subclass."""

    name: str
    offset: float = 0.0
    casting_mode: str = "llama"
    init_fn: str = "ones"
    # "input": the original rounds its output to the input's dtype even when the weight's dtype is wider
    # (OLMo 2/3: ``(w * n).to(input_dtype)``), so the replacement casts its result to x's dtype too.
    output_dtype: str = "promoted"
    # A norm without weight (Llama 4's QK-norm), built as ``cls(eps)``: LigerRMSNorm without weight.
    weightless: bool = False
    # The class exists only in some transformers releases (renamed in others): absent, nothing is said.
    absent_ok: bool = False
    # This name is another release's name of the class ``alias_of`` names: where the installed module
    # binds both to one class, only ``alias_of`` is patched (one replacement class, which pickles).
    alias_of: str | None = None
    module: str | None = None

    def describe(self) -> str:
        cast = ", output in x's dtype" if self.output_dtype == "input" else ""
        if self.weightless:
            return f"class {self.name} -> LigerRMSNorm without weight (casting_mode={self.casting_mode!r})"
        return (
            f"class {self.name} -> LigerRMSNorm(offset={self.offset}, casting_mode={self.casting_mode!r}, "
            f"init_fn={self.init_fn!r}{cast})"
        )

    def make(self, original: type) -> type:
        if self.weightless:
            return self._make_weightless(original)
        liger_rms_norm = _liger("LigerRMSNorm")
        spec = self

        def __init__(
            self, hidden_size: int | None = None, eps: float = 1e-6, *, dim: int | None = None
        ) -> None:
            # Some releases build the norm by keyword under another name (Gemma 3 in transformers
            # 5.17: Gemma3RMSNorm(dim=..., eps=...)).
            if (hidden_size is None) == (dim is None):
                raise TypeError(f"{type(self).__name__}() takes the size as hidden_size or dim (exactly one)")
            liger_rms_norm.__init__(
                self,
                hidden_size if dim is None else dim,
                eps=eps,
                offset=spec.offset,
                casting_mode=spec.casting_mode,
                init_fn=spec.init_fn,
            )

        namespace: dict[str, Any] = {"__init__": __init__}
        if self.output_dtype == "input":

            def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
                return liger_rms_norm.forward(self, hidden_states).to(hidden_states.dtype)

            namespace["forward"] = forward
        return _subclass(original, liger_rms_norm, namespace)

    def _make_weightless(self, original: type) -> type:
        liger_rms_norm = _liger("LigerRMSNorm")
        rms_norm = _functional("liger_rms_norm")  # looked up now: torch.compile cannot trace an import
        casting_mode = self.casting_mode

        def __init__(self, eps: float = 1e-6) -> None:
            # hidden_size only sizes a weight, and there is none
            liger_rms_norm.__init__(self, 1, eps=eps, casting_mode=casting_mode, elementwise_affine=False)

        def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
            # no self.weight: a module patched in place has no such attribute
            return rms_norm(hidden_states, None, self.variance_epsilon, 0.0, casting_mode)

        def extra_repr(self) -> str:
            return f"eps={self.variance_epsilon}"

        namespace = {"__init__": __init__, "forward": forward, "extra_repr": extra_repr}
        return _subclass(original, liger_rms_norm, namespace)

    @staticmethod
    def eps_of(module: nn.Module) -> float:
        """A Hugging Face norm's epsilon (``variance_epsilon`` in most, ``eps`` in some and in older 5.x)."""
        return getattr(module, "variance_epsilon", getattr(module, "eps", 1e-6))

    def constructor_args(self, module: nn.Module) -> tuple[tuple, dict]:
        eps = self.eps_of(module)
        if self.weightless:
            return (), {"eps": eps}
        return (module.weight.shape[0],), {"eps": eps}

    def why_not(self, module: nn.Module) -> str | None:
        """None when ``module`` can become the Liger norm in place, else why not (a norm with a bias)."""
        names = sorted(name for name, _ in module.named_parameters(recurse=False))
        expected = [] if self.weightless else ["weight"]
        if names == expected:
            return None
        return f"its parameters are {names}; the Liger norm has {'no parameter' if self.weightless else 'a weight only'}"


@dataclass(frozen=True)
class GatedMLP:
    """An MLP class with gate_proj/up_proj/down_proj, replaced by a subclass of a Liger MLP.

    Used for a config only when the Liger MLP accepts it (its activation, read from ``config.act_attr``
    like the Hugging Face class does, is one the kernel computes); otherwise the original class is built
    (class patching) or the module is left alone (instance patching), with a warning.
    """

    name: str
    liger: str
    act_attr: str = "hidden_act"
    module: str | None = None

    def describe(self) -> str:
        return f"class {self.name} -> {self.liger} (activation from config.{self.act_attr})"

    def unsupported_reason(self, config: Any) -> str | None:
        """None when the Liger MLP can stand in for this config, else why not."""
        try:
            with torch.device("meta"):  # builds no real weights; the Liger class validates the config
                _liger(self.liger)(config)
        except (ValueError, TypeError, AttributeError) as exc:
            return str(exc)
        return None

    def make(self, original: type) -> type:
        liger_mlp = _liger(self.liger)
        spec = self

        def __new__(cls, config=None, *args, **kwargs):
            # copy.copy, copy.deepcopy and nn.DataParallel's replicas call cls.__new__(cls)
            # without arguments and then fill in __dict__: nothing to decide then.
            if config is None:
                return nn.Module.__new__(cls)
            reason = spec.unsupported_reason(config)
            if reason is not None:
                _say_once(original.__name__, reason)
                return original(config, *args, **kwargs)
            return nn.Module.__new__(cls)

        return _subclass(original, liger_mlp, {"__new__": __new__})

    @staticmethod
    def constructor_args(module: nn.Module) -> tuple[tuple, dict]:
        # MLPs built with their own width (MoE models' dense or shared-expert MLPs) keep it; Llama 4's
        # does not store it, its gate_proj says it
        width = getattr(module, "intermediate_size", None)
        if width is None and isinstance(getattr(module, "gate_proj", None), nn.Linear):
            width = module.gate_proj.out_features
        return (module.config,), {"intermediate_size": width}

    def why_not(self, module: nn.Module) -> str | None:
        """None when ``module`` can become the Liger MLP in place, else why not."""
        return self.unsupported_reason(getattr(module, "config", None))


@dataclass(frozen=True)
class Method:
    """One method of a modeling class, replaced by ``make(original)`` (``description`` says with what)."""

    cls: str
    method: str
    make: Callable[[Callable], Callable]
    description: str
    module: str | None = None

    def describe(self) -> str:
        return f"method {self.cls}.{self.method} -> {self.description}"


@dataclass(frozen=True)
class DecoderLayer:
    """A pre-norm decoder layer whose residual add after attention feeds a norm (``norm``), patched by
    ``fused_add_rms_norm``: its forward is replaced by the generic one below, which runs the layer as

        residual = x; h = input_layernorm(x); a = self_attn(hidden_states=h, **the layer's arguments)[0]
        a = after_attention(a); y, residual = fused_add_rms_norm(a, residual, norm)  # residual = a + x
        m = mlp(y) (its first element if a tuple, in residual's shape); m = after_mlp(m); return residual + m

    ``after_attention`` / ``after_mlp``: attributes of the layer applied, in order, to the branch's output
    before its residual add (a module is called, a number multiplies): Phi-3's residual dropouts, the
    sandwich norms of Gemma 2/3 and GLM-4, Granite's residual multiplier. ``mlp``: the attribute holding
    the MLP (Llama 4's ``feed_forward``, dense or MoE; its MoE returns a tuple of flattened tokens and
    router scores). The add after the MLP stays
    unfused: it feeds the next layer's input norm across the layer boundary (see docs/fused_add_rms_norm.md).
    """

    cls: str
    norm: str = "post_attention_layernorm"
    after_attention: tuple[str, ...] = ()
    after_mlp: tuple[str, ...] = ()
    mlp: str = "mlp"

    def target(self, norm: Norm) -> Method:
        """The ``Method`` target (the layer's forward) for the model type whose norms are ``norm``."""
        return _decoder_layer_method(self, norm)


@functools.cache
def _decoder_layer_method(layer: DecoderLayer, norm: Norm) -> Method:
    steps = ", ".join(
        f"{branch} -> {' -> '.join(attrs)}"
        for branch, attrs in (("attention", layer.after_attention), ("MLP", layer.after_mlp))
        if attrs
    )
    return Method(
        layer.cls,
        "forward",
        functools.partial(_fused_add_norm_layer_forward, layer=layer, norm=norm),
        f"residual add after attention + {layer.norm} as one liger fused_add_rms_norm "
        f"(offset={norm.offset}, casting_mode={norm.casting_mode!r}){f'; {steps}' if steps else ''}",
    )


def _then(layer_module: nn.Module, attrs: tuple[str, ...], hidden_states: torch.Tensor) -> torch.Tensor:
    for attr in attrs:
        step = getattr(layer_module, attr)
        hidden_states = hidden_states * step if isinstance(step, (int, float)) else step(hidden_states)
    return hidden_states


def _fused_add_norm_layer_forward(original: Callable, layer: DecoderLayer, norm: Norm) -> Callable:
    """The forward of ``DecoderLayer`` (see there). The layer's other arguments, passed by keyword or
    position (named by the original's signature), all go to ``self_attn`` by keyword, as every
    supported layer passes them. The norm module's weight and eps are read at each call, so it may be
    Hugging Face's class or its Liger replacement (option ``rms_norm``)."""
    fused_add_rms_norm = importlib.import_module("liger_kernel.ops.fused_add_rms_norm").fused_add_rms_norm
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    positional = [p.name for p in inspect.signature(original).parameters.values() if p.kind in kinds][2:]

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if len(args) > len(positional):
            raise TypeError(f"{type(self).__name__}.forward() got {len(args) + 1} positional arguments")
        kwargs.update(zip(positional, args))
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states = self.self_attn(hidden_states=hidden_states, **kwargs)[0]
        hidden_states = _then(self, layer.after_attention, hidden_states)
        norm_module = getattr(self, layer.norm)
        eps = Norm.eps_of(norm_module)
        hidden_states, residual = fused_add_rms_norm(
            hidden_states, residual, norm_module.weight, eps, norm.offset, norm.casting_mode
        )
        if norm.output_dtype == "input":
            hidden_states = hidden_states.to(residual.dtype)
        hidden_states = getattr(self, layer.mlp)(hidden_states)
        if isinstance(hidden_states, tuple):  # MoE blocks that also return router scores (gpt-oss, Llama 4)
            hidden_states = hidden_states[0]
        if hidden_states.shape != residual.shape:  # Llama 4's MoE returns (tokens, hidden)
            hidden_states = hidden_states.view(residual.shape)
        hidden_states = _then(self, layer.after_mlp, hidden_states)
        return residual + hidden_states

    forward.__doc__ = original.__doc__
    return forward


@dataclass(frozen=True)
class CausalLMForward:
    """``XForCausalLM.forward`` -> the shared forward computing the fused linear cross entropy."""

    logit_softcap_attr: str | None = None
    load_balancing_loss: str | None = None  # name of the modeling module's MoE aux-loss function
    logits_divisor_attr: str | None = None  # config attribute the logits are divided by (Granite)
    base_takes_labels: bool = False  # the base model's forward takes ``labels`` (Gemma 3's multimodal mask)
    # Dotted attribute path of the model returning the last hidden states, where it is not
    # ``base_model_prefix`` (Llama 4: ``model`` in Llama4ForCausalLM, ``language_model.model`` in the
    # image-text model, whose ``language_model`` is a whole causal LM with the lm_head).
    decoder: str | None = None
    # Arguments only the original's multimodal path reads (images): when one is given, the original
    # forward runs (logits materialized, its loss); otherwise they are dropped before the decoder.
    multimodal_args: tuple[str, ...] = ()

    def describe(self, spec: ModelSpec) -> str:
        extras = []
        if self.logit_softcap_attr:
            extras.append(f"soft-cap from config.{self.logit_softcap_attr}")
        if self.logits_divisor_attr:
            extras.append(f"logits divided by config.{self.logits_divisor_attr}")
        if self.load_balancing_loss:
            extras.append(f"plus {self.load_balancing_loss} aux loss")
        if self.decoder:
            extras.append(f"hidden states from self.{self.decoder}")
        if self.multimodal_args:
            extras.append(f"batches with {'/'.join(self.multimodal_args)} run the original")
        suffix = f" ({', '.join(extras)})" if extras else ""
        return f"method {spec.causal_lm}.forward -> liger_causal_lm_forward{suffix}"


@dataclass(frozen=True)
class LossFunction:
    """The class's ``loss_function`` (through ``_loss_function``) -> ``liger_for_causal_lm_loss``."""

    def describe(self, spec: ModelSpec) -> str:
        return f"{spec.causal_lm}.loss_function -> liger_for_causal_lm_loss (liger_cross_entropy)"


@dataclass(frozen=True)
class ModelSpec:
    """Everything that differs between supported models.

    ``rope=None``: the model's rotary embedding is not one the Liger kernel computes (GLM-4 rotates
    interleaved pairs of a partial rotary dim), so there is no ``rope`` option and the model's own code
    runs. ``mlp`` may be several targets (Qwen3-MoE: the dense MLP class and the experts' gate), and so
    may ``rope`` and ``rms_norm``: a model whose text decoder is another model type's (Mistral 3's is
    Mistral's or Ministral 3's, built from ``config.text_config``) takes that entry's targets, each
    naming its own modeling ``module`` (see :func:`_text_decoder_of`).
    """

    model_type: str
    module: str
    causal_lm: str
    rms_norm: Norm | tuple[Norm, ...]
    mlp_option: str  # "swiglu" or "geglu"
    mlp: GatedMLP | Method | tuple[GatedMLP | Method, ...]
    rope: Function | tuple[Function, ...] | None = Function("apply_rotary_pos_emb")
    forward: CausalLMForward = CausalLMForward()
    doc_name: str = ""
    loss: LossFunction = field(default_factory=LossFunction)
    # None: no residual add of the layer feeds a norm (OLMo 2/3 normalize each branch's output before its
    # add, and the sum feeds attention or the MLP directly), so no fused_add_rms_norm option.
    # fused_add_default: whether the option is on by default.
    # A tuple of targets: a text-decoder entry's (Mistral 3), the layers of its decoder types.
    decoder_layer: DecoderLayer | tuple[Method, ...] | None = None
    fused_add_default: bool = True
    # The transformers releases the entry is for (README's table): every 5.x release has the modeling
    # modules of the types below; CI tests 5.25 (CPU), the GPU machine 5.17.
    transformers: str = ">=5.0,<6"

    def option_defaults(self) -> dict[str, bool]:
        options = {"rope": True} if self.rope is not None else {}
        return {
            **options,
            "cross_entropy": False,
            "fused_linear_cross_entropy": True,
            "rms_norm": True,
            self.mlp_option: True,
            **({"fused_add_rms_norm": self.fused_add_default} if self.decoder_layer is not None else {}),
        }

    def targets(self, option: str) -> tuple:
        if option == "fused_add_rms_norm" and isinstance(self.decoder_layer, tuple):
            return self.decoder_layer
        if option == "fused_add_rms_norm" and self.decoder_layer is not None:
            # the layer's norms are the model's RMSNorm with a weight (not a weightless QK-norm)
            norms = self.rms_norm if isinstance(self.rms_norm, tuple) else (self.rms_norm,)
            return (self.decoder_layer.target(next(n for n in norms if not n.weightless)),)
        targets = {
            "rope": self.rope,
            "rms_norm": self.rms_norm,
            self.mlp_option: self.mlp,
            "fused_linear_cross_entropy": self.forward,
            "cross_entropy": self.loss,
        }[option]
        return targets if isinstance(targets, tuple) else (targets,)

    def module_of(self, target: Any) -> str:
        """The name of the modeling module that defines ``target`` (the entry's own, unless it says)."""
        return getattr(target, "module", None) or self.module

    def modeling_of(self, target: Any) -> types.ModuleType | None:
        """The modeling module defining ``target``; None when the installed transformers lacks it (a text
        decoder type newer than the release: its targets are skipped, the others apply)."""
        return self.modeling_module(self.module_of(target))

    def modeling_module(self, name: str) -> types.ModuleType | None:
        """One of :meth:`modules`, imported; None when the installed transformers lacks it."""
        if name == self.module:
            return self.modeling()
        if not _module_exists(name):
            logger.debug("liger_kernel: %s is not in the installed transformers; skipped", name)
            return None
        return importlib.import_module(name)

    def modules(self) -> list[str]:
        """Every modeling module the entry's targets live in, its own first."""
        names = [self.module]
        for option in self.option_defaults():
            for target in self.targets(option):
                if self.module_of(target) not in names:
                    names.append(self.module_of(target))
        return names

    def available(self) -> bool:
        """Whether the installed transformers has this model type's modeling module."""
        return _module_exists(self.module)

    def unavailable_reason(self) -> str:
        import transformers

        return (
            f"model type {self.model_type!r} is not available in the installed transformers "
            f"{transformers.__version__} (it has no {self.module})"
        )

    def modeling(self) -> types.ModuleType:
        if not self.available():
            raise ValueError(f"Liger Kernel cannot patch {self.unavailable_reason()}")
        return importlib.import_module(self.module)


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # the parent package (transformers.models.<type>) is missing
        return False


def _tf(name: str) -> str:
    return f"transformers.models.{name}.modeling_{name}"


# ----------------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------------

_GEMMA_NORM = {"offset": 1.0, "casting_mode": "gemma", "init_fn": "zeros"}
# OLMo 2/3: fp32 (w * n), rounded once to the input's dtype
_OLMO_NORM = {"casting_mode": "none", "output_dtype": "input"}


# Llama 4 (text decoder of both model types; the vision tower is untouched): its RMSNorm rounds like
# Llama's; the QK-norm is the same norm without weight (Llama4TextWeightlessRMSNorm in transformers 5.25,
# with Llama4TextL2Norm kept as an alias; Llama4TextL2Norm alone in 5.17); the dense and shared-expert
# MLPs are Llama4TextMLP, the routed experts batched matmuls over a fused gate_up_proj.
_LLAMA4 = dict(
    rms_norm=(
        Norm("Llama4TextRMSNorm"),
        Norm("Llama4TextWeightlessRMSNorm", weightless=True, absent_ok=True),
        Norm("Llama4TextL2Norm", weightless=True, absent_ok=True, alias_of="Llama4TextWeightlessRMSNorm"),
    ),
    mlp_option="swiglu",
    mlp=(
        GatedMLP("Llama4TextMLP", "LigerSwiGLUMLP"),
        Method(
            "Llama4TextExperts",
            "forward",
            _llama4_experts_forward,
            "the same batched matmuls with liger_swiglu on the gate_up halves (when act_fn is SiLU)",
        ),
    ),
    rope=Function("apply_rotary_emb", make=_llama4_rope, liger="liger_llama4_text_rotary_pos_emb"),
    decoder_layer=DecoderLayer("Llama4TextDecoderLayer", mlp="feed_forward"),
)


def _gemma_sandwich(cls: str) -> DecoderLayer:
    """Gemma 2/3: each branch's output is normalized before its residual add (post_attention_layernorm,
    post_feedforward_layernorm), and the add after attention feeds pre_feedforward_layernorm."""
    return DecoderLayer(
        cls,
        norm="pre_feedforward_layernorm",
        after_attention=("post_attention_layernorm",),
        after_mlp=("post_feedforward_layernorm",),
    )


def _experts_gate(cls: str) -> Method:
    return Method(
        cls,
        "_apply_gate",
        _experts_apply_gate,
        "liger_swiglu on the gate_up halves (grouped_mm / batched_mm experts; eager experts unchanged)",
    )


MODEL_SPECS: dict[str, ModelSpec] = {
    spec.model_type: spec
    for spec in (
        ModelSpec(
            "llama",
            _tf("llama"),
            "LlamaForCausalLM",
            rms_norm=Norm("LlamaRMSNorm"),
            mlp_option="swiglu",
            mlp=GatedMLP("LlamaMLP", "LigerSwiGLUMLP"),
            doc_name="Llama (2, 3, 3.x)",
            decoder_layer=DecoderLayer("LlamaDecoderLayer"),
        ),
        ModelSpec(
            "mistral",
            _tf("mistral"),
            "MistralForCausalLM",
            rms_norm=Norm("MistralRMSNorm"),
            mlp_option="swiglu",
            mlp=GatedMLP("MistralMLP", "LigerSwiGLUMLP"),
            doc_name="Mistral",
            decoder_layer=DecoderLayer("MistralDecoderLayer"),
        ),
        ModelSpec(
            "mixtral",
            _tf("mixtral"),
            "MixtralForCausalLM",
            rms_norm=Norm("MixtralRMSNorm"),
            mlp_option="swiglu",
            mlp=_experts_gate("MixtralExperts"),
            forward=CausalLMForward(load_balancing_loss="load_balancing_loss_func"),
            doc_name="Mixtral",
            decoder_layer=DecoderLayer("MixtralDecoderLayer"),
        ),
        ModelSpec(
            "gemma",
            _tf("gemma"),
            "GemmaForCausalLM",
            rms_norm=Norm("GemmaRMSNorm", **_GEMMA_NORM),
            mlp_option="geglu",
            mlp=GatedMLP("GemmaMLP", "LigerGEGLUMLP", "hidden_act"),
            doc_name="Gemma",
            decoder_layer=DecoderLayer("GemmaDecoderLayer"),
        ),
        ModelSpec(
            "gemma2",
            _tf("gemma2"),
            "Gemma2ForCausalLM",
            rms_norm=Norm("Gemma2RMSNorm", **_GEMMA_NORM),
            mlp_option="geglu",
            mlp=GatedMLP("Gemma2MLP", "LigerGEGLUMLP", "hidden_activation"),
            forward=CausalLMForward(logit_softcap_attr="final_logit_softcapping"),
            doc_name="Gemma 2",
            decoder_layer=_gemma_sandwich("Gemma2DecoderLayer"),
        ),
        ModelSpec(
            "qwen2",
            _tf("qwen2"),
            "Qwen2ForCausalLM",
            rms_norm=Norm("Qwen2RMSNorm"),
            mlp_option="swiglu",
            mlp=GatedMLP("Qwen2MLP", "LigerSwiGLUMLP"),
            doc_name="Qwen2 (and Qwen2.5)",
            decoder_layer=DecoderLayer("Qwen2DecoderLayer"),
        ),
        ModelSpec(
            "phi3",
            _tf("phi3"),
            "Phi3ForCausalLM",
            rms_norm=Norm("Phi3RMSNorm"),
            mlp_option="swiglu",
            mlp=Method(
                "Phi3MLP",
                "forward",
                _fused_gate_up_mlp_forward,
                "liger_swiglu on the two halves of gate_up_proj (when config.hidden_act is silu)",
            ),
            doc_name="Phi-3 (and Phi-3.5)",
            decoder_layer=DecoderLayer(
                "Phi3DecoderLayer",
                after_attention=("resid_attn_dropout",),
                after_mlp=("resid_mlp_dropout",),
            ),
        ),
        ModelSpec(
            "qwen3",
            _tf("qwen3"),
            "Qwen3ForCausalLM",
            rms_norm=Norm("Qwen3RMSNorm"),
            mlp_option="swiglu",
            mlp=GatedMLP("Qwen3MLP", "LigerSwiGLUMLP"),
            doc_name="Qwen3 (dense; QK-norm over head_dim)",
            decoder_layer=DecoderLayer("Qwen3DecoderLayer"),
        ),
        ModelSpec(
            "qwen3_moe",
            _tf("qwen3_moe"),
            "Qwen3MoeForCausalLM",
            rms_norm=Norm("Qwen3MoeRMSNorm"),
            mlp_option="swiglu",
            mlp=(GatedMLP("Qwen3MoeMLP", "LigerSwiGLUMLP"), _experts_gate("Qwen3MoeExperts")),
            forward=CausalLMForward(load_balancing_loss="load_balancing_loss_func"),
            doc_name="Qwen3-MoE",
            decoder_layer=DecoderLayer("Qwen3MoeDecoderLayer"),
        ),
        ModelSpec(
            "gemma3_text",
            _tf("gemma3"),
            "Gemma3ForCausalLM",
            rms_norm=Norm("Gemma3RMSNorm", **_GEMMA_NORM),
            mlp_option="geglu",
            mlp=GatedMLP("Gemma3MLP", "LigerGEGLUMLP", "hidden_activation"),
            forward=CausalLMForward(logit_softcap_attr="final_logit_softcapping"),
            doc_name="Gemma 3 (text-only causal LM)",
            decoder_layer=_gemma_sandwich("Gemma3DecoderLayer"),
        ),
        # The text decoder of Gemma3ForConditionalGeneration: the same modeling module and classes (its
        # multimodal projector's Gemma3RMSNorm too); the SigLIP vision tower is another module, untouched.
        ModelSpec(
            "gemma3",
            _tf("gemma3"),
            "Gemma3ForConditionalGeneration",
            rms_norm=Norm("Gemma3RMSNorm", **_GEMMA_NORM),
            mlp_option="geglu",
            mlp=GatedMLP("Gemma3MLP", "LigerGEGLUMLP", "hidden_activation"),
            forward=CausalLMForward(base_takes_labels=True),  # this forward has no final soft-cap
            doc_name="Gemma 3 (image-text; the text decoder)",
            decoder_layer=_gemma_sandwich("Gemma3DecoderLayer"),
        ),
        ModelSpec(
            "olmo2",
            _tf("olmo2"),
            "Olmo2ForCausalLM",
            rms_norm=Norm("Olmo2RMSNorm", **_OLMO_NORM),
            mlp_option="swiglu",
            mlp=GatedMLP("Olmo2MLP", "LigerSwiGLUMLP"),
            rope=Function("apply_rotary_pos_emb", make=_rope_in_input_dtype),
            doc_name="OLMo 2 (norms after attention and MLP; QK-norm over all heads)",
        ),
        ModelSpec(
            "olmo3",
            _tf("olmo3"),
            "Olmo3ForCausalLM",
            rms_norm=Norm("Olmo3RMSNorm", **_OLMO_NORM),
            mlp_option="swiglu",
            mlp=GatedMLP("Olmo3MLP", "LigerSwiGLUMLP"),
            rope=Function("apply_rotary_pos_emb", make=_rope_in_input_dtype),
            doc_name="OLMo 3",
        ),
        ModelSpec(
            "glm4",
            _tf("glm4"),
            "Glm4ForCausalLM",
            rms_norm=Norm("Glm4RMSNorm"),
            mlp_option="swiglu",
            mlp=Method(
                "Glm4MLP",
                "forward",
                _fused_gate_up_mlp_forward,
                "liger_swiglu on the two halves of gate_up_proj (when config.hidden_act is silu)",
            ),
            rope=None,  # interleaved pairs over a partial rotary dim: the model's own code
            doc_name="GLM-4",
            decoder_layer=DecoderLayer(
                "Glm4DecoderLayer",
                after_attention=("post_self_attn_layernorm",),
                after_mlp=("post_mlp_layernorm",),
            ),
        ),
        ModelSpec(
            "granite",
            _tf("granite"),
            "GraniteForCausalLM",
            rms_norm=Norm("GraniteRMSNorm"),
            mlp_option="swiglu",
            mlp=GatedMLP("GraniteMLP", "LigerSwiGLUMLP"),
            # embedding and residual multipliers live in the base model, which runs unchanged
            forward=CausalLMForward(logits_divisor_attr="logits_scaling"),
            doc_name="Granite (3.x)",
            decoder_layer=DecoderLayer(
                "GraniteDecoderLayer",
                after_attention=("residual_multiplier",),
                after_mlp=("residual_multiplier",),
            ),
        ),
        ModelSpec(
            "smollm3",
            _tf("smollm3"),
            "SmolLM3ForCausalLM",
            rms_norm=Norm("SmolLM3RMSNorm"),
            mlp_option="swiglu",
            mlp=GatedMLP("SmolLM3MLP", "LigerSwiGLUMLP"),
            doc_name="SmolLM3 (RoPE skipped on its NoPE layers, as the model does)",
            decoder_layer=DecoderLayer("SmolLM3DecoderLayer"),
        ),
        # Multi-head latent attention: its q_a/kv_a norms are DeepseekV3RMSNorm too. The rotary embedding is
        # patched where the model rotates halves (config.rope_interleave=False); the default interleaved
        # path (apply_rotary_pos_emb_interleave) keeps the model's code.
        ModelSpec(
            "deepseek_v3",
            _tf("deepseek_v3"),
            "DeepseekV3ForCausalLM",
            rms_norm=Norm("DeepseekV3RMSNorm"),
            mlp_option="swiglu",
            # dense layers and the shared experts are DeepseekV3MLP (the latter with their own width)
            mlp=(GatedMLP("DeepseekV3MLP", "LigerSwiGLUMLP"), _experts_gate("DeepseekV3Experts")),
            doc_name="DeepSeek-V3",
            decoder_layer=DecoderLayer("DeepseekV3DecoderLayer"),
        ),
        ModelSpec(
            "gpt_oss",
            _tf("gpt_oss"),
            "GptOssForCausalLM",
            rms_norm=Norm("GptOssRMSNorm", **_OLMO_NORM),
            mlp_option="swiglu",
            mlp=Method(
                "GptOssExperts",
                "_apply_gate",
                _gpt_oss_apply_gate,
                "gpt_oss_glu (clamped gate and up, gate * sigmoid(alpha * gate) * (up + 1); "
                "grouped_mm / batched_mm experts)",
            ),
            rope=Function("apply_rotary_pos_emb", make=_half_table_rope),
            forward=CausalLMForward(load_balancing_loss="load_balancing_loss_func"),
            doc_name="gpt-oss (attention sinks run in the model's attention)",
            decoder_layer=DecoderLayer("GptOssDecoderLayer"),
        ),
        ModelSpec(
            "llama4_text",
            _tf("llama4"),
            "Llama4ForCausalLM",
            forward=CausalLMForward(decoder="model"),  # base_model_prefix names no attribute there
            doc_name="Llama 4 (text-only causal LM)",
            **_LLAMA4,
        ),
        ModelSpec(
            "llama4",
            _tf("llama4"),
            "Llama4ForConditionalGeneration",
            forward=CausalLMForward(
                decoder="language_model.model",
                multimodal_args=("pixel_values", "vision_feature_select_strategy", "mm_encoder_outputs"),
            ),
            doc_name="Llama 4 (image-text; the text decoder)",
            **_LLAMA4,
        ),
        ModelSpec(
            "ministral",
            _tf("ministral"),
            "MinistralForCausalLM",
            rms_norm=Norm("MinistralRMSNorm"),
            mlp_option="swiglu",
            mlp=GatedMLP("MinistralMLP", "LigerSwiGLUMLP"),
            doc_name="Ministral",
            decoder_layer=DecoderLayer("MinistralDecoderLayer"),
        ),
        # Llama 4's position-dependent query scaling (after RoPE) stays in the model's attention
        ModelSpec(
            "ministral3",
            _tf("ministral3"),
            "Ministral3ForCausalLM",
            rms_norm=Norm("Ministral3RMSNorm"),
            mlp_option="swiglu",
            mlp=GatedMLP("Ministral3MLP", "LigerSwiGLUMLP"),
            decoder_layer=DecoderLayer("Ministral3DecoderLayer"),
            doc_name="Ministral 3",
        ),
    )
}


def _text_decoder_of(model_type: str, causal_lm: str, decoders: tuple[str, ...], doc_name: str) -> ModelSpec:
    """The entry of an image-text model whose text decoder is a model of one of the ``decoders`` types
    (whichever its ``config.text_config.model_type`` names): their ``rope``, ``rms_norm`` and MLP
    targets, each in its own modeling module, and the fused loss on ``causal_lm``; the vision tower and
    the multimodal projector keep their code. Class patching patches every decoder's classes; instance
    patching swaps the modules the model has (and RoPE only in the modules the model uses). The decoder
    layers' fused add + norm (``fused_add_rms_norm``) comes along from each decoder type that has one."""
    specs = [MODEL_SPECS[d] for d in decoders]
    mlp_options = {s.mlp_option for s in specs}
    if len(mlp_options) != 1:
        raise ValueError(
            f"{model_type}: the text decoders {decoders} have different MLP options {mlp_options}"
        )

    def in_own_module(option: str) -> tuple:
        return tuple(
            dataclasses.replace(t, module=s.module_of(t))
            for s in specs
            if option != "fused_add_rms_norm" or s.decoder_layer is not None
            for t in s.targets(s.mlp_option if option == "mlp" else option)
            if t is not None
        )

    return ModelSpec(
        model_type,
        _tf(model_type),
        causal_lm,
        rms_norm=in_own_module("rms_norm"),
        mlp_option=mlp_options.pop(),
        mlp=in_own_module("mlp"),
        rope=in_own_module("rope") or None,
        doc_name=doc_name,
        decoder_layer=in_own_module("fused_add_rms_norm") or None,
    )


# Mistral 3 (Mistral Small 3.1, Ministral 3, Magistral): a Pixtral vision tower and the text decoder of
# MistralModel or Ministral3Model.
MODEL_SPECS["mistral3"] = _text_decoder_of(
    "mistral3",
    "Mistral3ForConditionalGeneration",
    ("mistral", "ministral3"),
    "Mistral 3 (image-text; the text decoder, Mistral or Ministral 3)",
)
