"""Registry of benchmarked ops: for each op, its shapes (full size for the GPU, tiny for ``--smoke``),
the targets its Liger version must meet, its byte/FLOP floor, and one small ``build_*`` function that
sets the op up for a provider.

A build function takes ``impl`` ("eager" or "liger"), the shape's ``dims``, a dtype and a device, and
returns a ``Problem``: the forward callable, its arguments, the tensors the backward differentiates
(inputs and parameters, by name) and fixed output gradients.  The "compile" provider is the "eager"
problem with ``fn`` wrapped in ``torch.compile`` by the runner.  Inputs are drawn after seeding, in the
same order for every provider, so eager and Liger see identical weights and data; Liger modules load
the eager module's state dict.

``liger_kernel`` and ``transformers`` model code are imported inside the functions, so that an op
whose Liger module is not written yet only skips that op, and so that the runner can switch Triton's
interpreter on before anything imports ``triton``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

# Peak rates of one H200 used for the floors (see benchmark/NOTES.md).
HBM_BYTES_PER_S = 4.25e12  # achievable copy bandwidth
MATMUL_FLOP_PER_S = 701e12  # dense bf16 tensor-core rate used as the matmul ceiling

SEED = 1234


@dataclass
class Problem:
    """One op set up for one provider: ``fn(*args)`` is the forward (training mode, grad enabled)."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    wrt: dict[str, torch.Tensor]  # differentiated by the backward, by name (for check messages)
    grad_outputs: tuple[torch.Tensor, ...] | None  # one per output; None for a scalar loss (grad 1)
    keep: list[Any] = field(default_factory=list)  # objects that must stay alive (modules)


@dataclass(frozen=True)
class Goal:
    """``liger <metric> <cmp> <bound>``, where bound is a number or "compile" (compile's value)."""

    metric: str  # "full_ms" or "peak_mib"
    cmp: str  # "<=" or "<"
    bound: float | str

    def describe(self) -> str:
        unit = "ms" if self.metric.endswith("_ms") else "MiB"
        name = "full" if self.metric == "full_ms" else "peak"
        bound = "compile" if self.bound == "compile" else f"{self.bound:g} {unit}"
        return f"{name}{self.cmp}{bound}"

    def met(self, liger: dict[str, float], compile_: dict[str, float]) -> bool | None:
        value = liger.get(self.metric, math.nan)
        bound = compile_.get(self.metric, math.nan) if self.bound == "compile" else float(self.bound)
        if math.isnan(value) or math.isnan(bound):
            return None
        return value <= bound if self.cmp == "<=" else value < bound


@dataclass(frozen=True)
class Shape:
    label: str
    dims: dict[str, int]
    goals: tuple[Goal, ...] = ()


@dataclass(frozen=True)
class OpSpec:
    name: str
    reference: str  # what "eager" runs
    liger: str  # what "liger" runs
    build: Callable[[str, dict[str, int], torch.dtype, torch.device], Problem]
    liger_import: Callable[[], Any]  # raises ImportError/AttributeError while not written yet
    floor: Callable[[dict[str, int], int], tuple[float, float]]  # (bytes, matmul FLOPs) of a full pass
    shapes: tuple[Shape, ...]
    smoke_shapes: tuple[Shape, ...]
    liger_note: str | None = None  # how the liger provider is set up, when it matters
    # Set when the backward cannot be timed alone (the forward already computes the gradient, or
    # overwrites its input with it): bwd_ms is then full_ms - fwd_ms for every provider of the op.
    bwd_from_full: str | None = None

    def floor_ms(self, dims: dict[str, int], elem_bytes: int) -> float:
        nbytes, flops = self.floor(dims, elem_bytes)
        return (nbytes / HBM_BYTES_PER_S + flops / MATMUL_FLOP_PER_S) * 1e3


# ---------------------------------------------------------------------------------------------
# helpers


def _seeded(device: torch.device) -> None:
    torch.manual_seed(SEED)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(SEED)


def _randn(*shape: int, dtype: torch.dtype, device: torch.device, scale: float = 1.0) -> torch.Tensor:
    # Drawn in fp32 then rounded, so every dtype sees the same values up to rounding.
    return (torch.randn(*shape, device=device) * scale).to(dtype)


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().requires_grad_(True)


def _module_problem(module: torch.nn.Module, x: torch.Tensor, dy: torch.Tensor) -> Problem:
    wrt = {"x": x}
    wrt.update({name: p for name, p in module.named_parameters()})
    return Problem(fn=module, args=(x,), wrt=wrt, grad_outputs=(dy,), keep=[module])


def _liger(name: str) -> Any:
    import liger_kernel.transformers as lt

    return getattr(lt, name)


def _load_into(
    liger_module: torch.nn.Module, eager_module: torch.nn.Module, dtype, device
) -> torch.nn.Module:
    liger_module = liger_module.to(device=device, dtype=dtype)
    liger_module.load_state_dict(eager_module.state_dict(), strict=True)
    return liger_module


# ---------------------------------------------------------------------------------------------
# rms_norm


def build_rms_norm(impl: str, dims: dict[str, int], dtype: torch.dtype, device: torch.device) -> Problem:
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    rows, hidden = dims["rows"], dims["hidden"]
    _seeded(device)
    eager = LlamaRMSNorm(hidden, eps=1e-6).to(device=device, dtype=dtype)
    with torch.no_grad():
        eager.weight.copy_(1.0 + 0.1 * torch.randn(hidden, device=device))  # not all ones: test w
    x = _leaf(_randn(rows, hidden, dtype=dtype, device=device))
    dy = _randn(rows, hidden, dtype=dtype, device=device)
    module = eager
    if impl == "liger":
        module = _load_into(_liger("LigerRMSNorm")(hidden, eps=1e-6), eager, dtype, device)
    return _module_problem(module, x, dy)


def _norm_floor(dims: dict[str, int], elem: int) -> tuple[float, float]:
    # forward reads x, writes y; backward reads x and dy, writes dx: 5 passes over rows x hidden.
    return 5.0 * dims["rows"] * dims["hidden"] * elem, 0.0


# ---------------------------------------------------------------------------------------------
# fused_add_rms_norm


class _UnfusedAddRMSNorm(torch.nn.Module):
    """What a Llama decoder layer does between attention and the MLP: ``h = x + residual``, then
    LlamaRMSNorm(h); returns both (the MLP reads the first, the next residual add the second)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        from transformers.models.llama.modeling_llama import LlamaRMSNorm

        self.norm = LlamaRMSNorm(hidden, eps=1e-6)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = x + residual
        return self.norm(h), h


def build_fused_add_rms_norm(
    impl: str, dims: dict[str, int], dtype: torch.dtype, device: torch.device
) -> Problem:
    rows, hidden = dims["rows"], dims["hidden"]
    _seeded(device)
    eager = _UnfusedAddRMSNorm(hidden).to(device=device, dtype=dtype)
    with torch.no_grad():
        eager.norm.weight.copy_(1.0 + 0.1 * torch.randn(hidden, device=device))
    x = _leaf(_randn(rows, hidden, dtype=dtype, device=device))
    residual = _leaf(_randn(rows, hidden, dtype=dtype, device=device))
    dy = _randn(rows, hidden, dtype=dtype, device=device)
    dh = _randn(rows, hidden, dtype=dtype, device=device)
    module = eager
    if impl == "liger":
        module = _liger("LigerFusedAddRMSNorm")(hidden, eps=1e-6).to(device=device, dtype=dtype)
        with torch.no_grad():
            module.weight.copy_(eager.norm.weight)
    wrt = {"x": x, "residual": residual, "weight": next(module.parameters())}
    return Problem(fn=module, args=(x, residual), wrt=wrt, grad_outputs=(dy, dh), keep=[module])


def _add_norm_floor(dims: dict[str, int], elem: int) -> tuple[float, float]:
    # forward reads x and residual, writes y and h; backward reads dy, dh and h, writes dx (= dresidual,
    # one buffer when the dtypes agree): 8 passes over rows x hidden.
    return 8.0 * dims["rows"] * dims["hidden"] * elem, 0.0


# ---------------------------------------------------------------------------------------------
# layer_norm


def build_layer_norm(impl: str, dims: dict[str, int], dtype: torch.dtype, device: torch.device) -> Problem:
    rows, hidden = dims["rows"], dims["hidden"]
    _seeded(device)
    eager = torch.nn.LayerNorm(hidden).to(device=device, dtype=dtype)  # eps=1e-5, with bias
    with torch.no_grad():
        eager.weight.copy_(1.0 + 0.1 * torch.randn(hidden, device=device))
        eager.bias.copy_(0.1 * torch.randn(hidden, device=device))
    x = _leaf(_randn(rows, hidden, dtype=dtype, device=device))
    dy = _randn(rows, hidden, dtype=dtype, device=device)
    module = eager
    if impl == "liger":
        liger = _liger("LigerLayerNorm")(hidden, eps=eager.eps, bias=True)
        module = _load_into(liger, eager, dtype, device)
    return _module_problem(module, x, dy)


# ---------------------------------------------------------------------------------------------
# rope


def _attention_config(config_cls: type, dims: dict[str, int]) -> Any:
    """A config of ``config_cls`` with the attention shape of ``dims`` (what a rotary embedding reads)."""
    return config_cls(
        hidden_size=dims["q_heads"] * dims["head_dim"],
        num_attention_heads=dims["q_heads"],
        num_key_value_heads=dims["kv_heads"],
        head_dim=dims["head_dim"],
        max_position_embeddings=max(dims["seq"], 2048),
    )


def _rope_cos_sin(dims: dict[str, int], dtype: torch.dtype, device: torch.device):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    seq = dims["seq"]
    config = _attention_config(LlamaConfig, dims)
    with torch.device(device):  # (the device= argument is not in every transformers 5.x)
        rotary = LlamaRotaryEmbedding(config)
    rotary = rotary.to(device)
    position_ids = torch.arange(seq, device=device)[None, :]
    probe = torch.empty(1, dtype=dtype, device=device)
    cos, sin = rotary(probe, position_ids)  # (1, seq, head_dim) in dtype
    return cos, sin


def build_rope(impl: str, dims: dict[str, int], dtype: torch.dtype, device: torch.device) -> Problem:
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    bsz, seq, heads, kv_heads, head_dim = (
        dims["bsz"],
        dims["seq"],
        dims["q_heads"],
        dims["kv_heads"],
        dims["head_dim"],
    )
    _seeded(device)
    cos, sin = _rope_cos_sin(dims, dtype, device)
    # Laid out as in a Hugging Face attention layer: the projection's (bsz, seq, heads, head_dim)
    # transposed to (bsz, heads, seq, head_dim), a non-contiguous view.
    q = _leaf(_randn(bsz, seq, heads, head_dim, dtype=dtype, device=device).transpose(1, 2))
    k = _leaf(_randn(bsz, seq, kv_heads, head_dim, dtype=dtype, device=device).transpose(1, 2))
    dq = _randn(bsz, heads, seq, head_dim, dtype=dtype, device=device)
    dk = _randn(bsz, kv_heads, seq, head_dim, dtype=dtype, device=device)
    fn = apply_rotary_pos_emb if impl == "eager" else _liger("liger_rotary_pos_emb")
    return Problem(fn=fn, args=(q, k, cos, sin), wrt={"q": q, "k": k}, grad_outputs=(dq, dk))


def _rope_floor(dims: dict[str, int], elem: int) -> tuple[float, float]:
    qk = dims["bsz"] * dims["seq"] * (dims["q_heads"] + dims["kv_heads"]) * dims["head_dim"] * elem
    cos_sin = 2 * dims["seq"] * dims["head_dim"] * elem
    # forward reads q, k and writes them rotated; backward reads dq, dk and writes them; cos and sin
    # are read once per pass.
    return 4.0 * qk + 2.0 * cos_sin, 0.0


# ---------------------------------------------------------------------------------------------
# swiglu_mlp / geglu_mlp


def build_swiglu_mlp(impl: str, dims: dict[str, int], dtype: torch.dtype, device: torch.device) -> Problem:
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP

    config = LlamaConfig(hidden_size=dims["hidden"], intermediate_size=dims["intermediate"])
    return _mlp_problem(impl, LlamaMLP, "LigerSwiGLUMLP", config, dims, dtype, device)


def build_geglu_mlp(impl: str, dims: dict[str, int], dtype: torch.dtype, device: torch.device) -> Problem:
    from transformers import GemmaConfig
    from transformers.models.gemma.modeling_gemma import GemmaMLP

    config = GemmaConfig(
        hidden_size=dims["hidden"],
        intermediate_size=dims["intermediate"],
        hidden_act="gelu_pytorch_tanh",
        hidden_activation="gelu_pytorch_tanh",
    )
    return _mlp_problem(impl, GemmaMLP, "LigerGEGLUMLP", config, dims, dtype, device)


def _mlp_problem(impl, eager_cls, liger_name, config, dims, dtype, device) -> Problem:
    tokens, hidden = dims["tokens"], dims["hidden"]
    _seeded(device)
    with torch.device(device):  # initialize the (large) weights on the device directly
        eager = eager_cls(config)
    eager = eager.to(dtype=dtype)
    x = _leaf(_randn(tokens, hidden, dtype=dtype, device=device))
    dy = _randn(tokens, hidden, dtype=dtype, device=device)
    module = eager
    if impl == "liger":
        with torch.device(device):
            liger = _liger(liger_name)(config)
        module = _load_into(liger, eager, dtype, device)
        del eager
    return _module_problem(module, x, dy)


def _mlp_floor(dims: dict[str, int], elem: int) -> tuple[float, float]:
    t, h, i = dims["tokens"], dims["hidden"], dims["intermediate"]
    # 3 matmuls forward (gate, up, down), 2 each backward (input grad, weight grad): 9 x 2*t*h*i.
    flops = 9.0 * 2.0 * t * h * i
    # activation kernel, fused: forward reads gate, up and writes act(gate)*up (3 x t*i); backward
    # reads d(act*up), gate, up and writes dgate, dup (5 x t*i).
    return 8.0 * t * i * elem, flops


# ---------------------------------------------------------------------------------------------
# cross_entropy


def build_cross_entropy(impl: str, dims: dict[str, int], dtype: torch.dtype, device: torch.device) -> Problem:
    rows, vocab = dims["rows"], dims["vocab"]
    _seeded(device)
    logits = _leaf(_randn(rows, vocab, dtype=dtype, device=device))
    target = torch.randint(0, vocab, (rows,), device=device)
    if impl == "eager":
        loss = torch.nn.CrossEntropyLoss()
    else:
        cls = _liger("LigerCrossEntropyLoss")
        # In a model the logits are the lm_head's output, an autograd intermediate, and Liger writes
        # the gradient over them; here they are a leaf, so ask for that behaviour explicitly.
        takes_inplace = "inplace" in inspect.signature(cls).parameters
        loss = cls(inplace=True) if takes_inplace else cls()
    return Problem(fn=loss, args=(logits, target), wrt={"logits": logits}, grad_outputs=None, keep=[loss])


def _ce_floor(dims: dict[str, int], elem: int) -> tuple[float, float]:
    # read the logits once (a row's second read, for the gradient, is served from L2 while the
    # ~132 rows in flight fit in it) and write the gradient once.
    return 2.0 * dims["rows"] * dims["vocab"] * elem, 0.0


# ---------------------------------------------------------------------------------------------
# fused_linear_cross_entropy


def flce_eager(x: torch.Tensor, weight: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """What a Hugging Face causal LM does: lm_head (no bias), upcast the logits to fp32, cross-entropy."""
    logits = F.linear(x, weight)
    return F.cross_entropy(logits.float(), target)


def _flce_caller(loss_module: torch.nn.Module) -> Callable[..., torch.Tensor]:
    # Liger Kernel's module takes (lin_weight, _input, target); accept (input, weight, target) too.
    names = list(inspect.signature(loss_module.forward).parameters)
    if names and "weight" in names[0]:
        return lambda x, weight, target: loss_module(weight, x, target)
    return lambda x, weight, target: loss_module(x, weight, target)


def build_fused_linear_cross_entropy(
    impl: str, dims: dict[str, int], dtype: torch.dtype, device: torch.device
) -> Problem:
    tokens, hidden, vocab = dims["tokens"], dims["hidden"], dims["vocab"]
    _seeded(device)
    weight = _leaf(_randn(vocab, hidden, dtype=dtype, device=device, scale=0.02))
    x = _leaf(_randn(tokens, hidden, dtype=dtype, device=device))
    target = torch.randint(0, vocab, (tokens,), device=device)
    keep: list[Any] = []
    if impl == "eager":
        fn = flce_eager
    else:
        loss_module = _liger("LigerFusedLinearCrossEntropyLoss")()
        keep.append(loss_module)
        fn = _flce_caller(loss_module)
    return Problem(
        fn=fn, args=(x, weight, target), wrt={"x": x, "weight": weight}, grad_outputs=None, keep=keep
    )


def _flce_floor(dims: dict[str, int], elem: int) -> tuple[float, float]:
    t, h, v = dims["tokens"], dims["hidden"], dims["vocab"]
    # logits = x W^T forward; d x = dlogits W and dW = dlogits^T x backward: 3 x 2*t*h*v.  The
    # logits' own traffic (chunked, overlapped with the matmuls in the best case) is left out.
    return 0.0, 3.0 * 2.0 * t * h * v


# ---------------------------------------------------------------------------------------------
# the registry

_FULL = "full_ms"
_PEAK = "peak_mib"


# ---------------------------------------------------------------------------------------------
# gpt_oss_glu (issue 20): the gpt-oss experts' clamped gate on the interleaved gate_up output


def build_gpt_oss_glu(impl: str, dims: dict[str, int], dtype: torch.dtype, device: torch.device) -> Problem:
    from types import SimpleNamespace

    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssExperts

    _seeded(device)
    tokens, inter = dims["tokens"], dims["intermediate"]
    x = _leaf(_randn(tokens, 2 * inter, dtype=dtype, device=device, scale=4.0))  # the clamps bind at 7
    dy = _randn(tokens, inter, dtype=dtype, device=device)
    if impl == "eager":  # the model's own code, on an object holding what it reads
        experts = SimpleNamespace(alpha=1.702, limit=7.0)
        return Problem(
            fn=lambda t: GptOssExperts._apply_gate(experts, t), args=(x,), wrt={"x": x}, grad_outputs=(dy,)
        )
    from liger_kernel.ops.gpt_oss_glu import gpt_oss_glu

    return Problem(fn=lambda t: gpt_oss_glu(t, 1.702, 7.0), args=(x,), wrt={"x": x}, grad_outputs=(dy,))


def _gpt_oss_glu_floor(dims: dict[str, int], elem: int) -> tuple[float, float]:
    n = dims["tokens"] * dims["intermediate"] * elem
    # forward reads x (2n) and writes y (n); backward reads dy (n) and x (2n) and writes dx (2n)
    return 8.0 * n, 0.0


# ---------------------------------------------------------------------------------------------
# llama4_rope (issue 20): Llama 4's interleaved-pair RoPE (complex multiplication by freqs_cis)

# Where ``llama4_rope_085`` finds liger-kernel 0.8.5's unpacked wheel (its package directory's parent).
PEER_PATH_ENV = "LIGER_PEER_PATH"
_PEER_DEFAULT = Path(__file__).resolve().parents[1] / ".peer" / "liger085"


def _peer_llama4_rope_function() -> Any:
    """liger-kernel 0.8.5's ``LigerLlama4RopeFunction``, its op module loaded under a private name (it
    imports only torch and triton), so it runs beside this package's ``liger_kernel``."""
    import importlib.util
    import os
    import sys

    root = Path(os.environ.get(PEER_PATH_ENV, _PEER_DEFAULT))
    path = root / "liger_kernel" / "ops" / "llama4_rope.py"
    if not path.exists():
        raise ImportError(f"no liger-kernel 0.8.5 at {root} (set ${PEER_PATH_ENV} to its unpacked wheel)")
    name = "_liger085_llama4_rope"
    if name not in sys.modules:
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name].LigerLlama4RopeFunction


def build_llama4_rope(impl: str, dims: dict[str, int], dtype: torch.dtype, device: torch.device) -> Problem:
    from transformers.models.llama4.modeling_llama4 import (
        Llama4TextConfig,
        Llama4TextRotaryEmbedding,
        apply_rotary_emb,
    )

    bsz, seq, heads, kv_heads, head_dim = (dims[k] for k in ("bsz", "seq", "q_heads", "kv_heads", "head_dim"))
    _seeded(device)
    config = _attention_config(Llama4TextConfig, dims)
    with torch.device(device):
        rotary = Llama4TextRotaryEmbedding(config)
        freqs_cis = rotary(torch.empty(0), torch.arange(seq)[None])  # (1, seq, head_dim / 2) complex64
    # Laid out as in Llama 4's attention: views of the projections, (bsz, seq, heads, head_dim).
    q = _leaf(_randn(bsz, seq, heads, head_dim, dtype=dtype, device=device))
    k = _leaf(_randn(bsz, seq, kv_heads, head_dim, dtype=dtype, device=device))
    dq = _randn(bsz, seq, heads, head_dim, dtype=dtype, device=device)
    dk = _randn(bsz, seq, kv_heads, head_dim, dtype=dtype, device=device)
    if impl == "eager":
        fn = apply_rotary_emb
    elif impl == "peer":
        fn = _peer_llama4_rope_function().apply
    else:
        fn = _liger("liger_llama4_text_rotary_pos_emb")
    return Problem(fn=fn, args=(q, k, freqs_cis), wrt={"q": q, "k": k}, grad_outputs=(dq, dk))


def build_llama4_rope_085(
    impl: str, dims: dict[str, int], dtype: torch.dtype, device: torch.device
) -> Problem:
    return build_llama4_rope("peer" if impl == "liger" else impl, dims, dtype, device)


def _llama4_rope_floor(dims: dict[str, int], elem: int) -> tuple[float, float]:
    qk = dims["bsz"] * dims["seq"] * (dims["q_heads"] + dims["kv_heads"]) * dims["head_dim"] * elem
    table = dims["seq"] * dims["head_dim"] * 4  # head_dim / 2 complex64 values per position
    # forward reads q, k and writes them rotated; backward reads dq, dk and writes them; the table is
    # read once per pass.
    return 4.0 * qk + 2.0 * table, 0.0


_vs_compile = (Goal(_FULL, "<=", "compile"), Goal(_PEAK, "<", "compile"))
# Llama 4 Scout / Maverick attention: 40 query heads over 8 KV heads of 128; batch 4 x 2048 tokens.
_LLAMA4_ROPE_SHAPES = (
    Shape(
        "b4 s2048 hq40 hkv8 d128",
        {"bsz": 4, "seq": 2048, "q_heads": 40, "kv_heads": 8, "head_dim": 128},
        _vs_compile,
    ),
)
_LLAMA4_ROPE_SMOKE = (
    Shape(
        "b2 s6 hq5 hkv1 d24", {"bsz": 2, "seq": 6, "q_heads": 5, "kv_heads": 1, "head_dim": 24}, _vs_compile
    ),
)

# A norm keeps what compile keeps (h and one fp32 per row): its memory can at best tie
_norm_vs_compile = (Goal(_FULL, "<=", "compile"), Goal(_PEAK, "<=", "compile"))

OPS: dict[str, OpSpec] = {
    spec.name: spec
    for spec in (
        OpSpec(
            name="rms_norm",
            reference="transformers LlamaRMSNorm",
            liger="LigerRMSNorm",
            build=build_rms_norm,
            liger_import=lambda: _liger("LigerRMSNorm"),
            floor=_norm_floor,
            shapes=(
                Shape("16384x4096", {"rows": 16384, "hidden": 4096}, (Goal(_FULL, "<=", 0.25),)),
                Shape("16384x8192", {"rows": 16384, "hidden": 8192}, (Goal(_FULL, "<=", 0.45),)),
            ),
            smoke_shapes=(
                Shape("8x64", {"rows": 8, "hidden": 64}, (Goal(_FULL, "<=", 0.25),)),
                Shape("5x200", {"rows": 5, "hidden": 200}, (Goal(_FULL, "<=", 0.45),)),
            ),
        ),
        OpSpec(
            name="fused_add_rms_norm",
            reference="x + residual, then transformers LlamaRMSNorm",
            liger="LigerFusedAddRMSNorm",
            build=build_fused_add_rms_norm,
            liger_import=lambda: _liger("LigerFusedAddRMSNorm"),
            floor=_add_norm_floor,
            shapes=(
                Shape("16384x4096", {"rows": 16384, "hidden": 4096}, _norm_vs_compile),
                Shape("16384x8192", {"rows": 16384, "hidden": 8192}, _norm_vs_compile),
            ),
            smoke_shapes=(
                Shape("8x64", {"rows": 8, "hidden": 64}, _norm_vs_compile),
                Shape("5x200", {"rows": 5, "hidden": 200}, _norm_vs_compile),
            ),
        ),
        OpSpec(
            name="layer_norm",
            reference="torch.nn.LayerNorm",
            liger="LigerLayerNorm",
            build=build_layer_norm,
            liger_import=lambda: _liger("LigerLayerNorm"),
            floor=_norm_floor,
            shapes=(Shape("16384x4096", {"rows": 16384, "hidden": 4096}, (Goal(_FULL, "<=", 0.25),)),),
            smoke_shapes=(Shape("6x96", {"rows": 6, "hidden": 96}, (Goal(_FULL, "<=", 0.25),)),),
        ),
        OpSpec(
            name="rope",
            reference="transformers llama apply_rotary_pos_emb",
            liger="liger_rotary_pos_emb",
            build=build_rope,
            liger_import=lambda: _liger("liger_rotary_pos_emb"),
            floor=_rope_floor,
            shapes=(
                Shape(
                    "b4 s2048 hq32 hkv8 d128",
                    {"bsz": 4, "seq": 2048, "q_heads": 32, "kv_heads": 8, "head_dim": 128},
                    (Goal(_FULL, "<=", 0.15),),
                ),
            ),
            smoke_shapes=(
                Shape(
                    "b2 s6 hq4 hkv2 d16",
                    {"bsz": 2, "seq": 6, "q_heads": 4, "kv_heads": 2, "head_dim": 16},
                    (Goal(_FULL, "<=", 0.15),),
                ),
            ),
        ),
        OpSpec(
            name="swiglu_mlp",
            reference="transformers LlamaMLP",
            liger="LigerSwiGLUMLP",
            build=build_swiglu_mlp,
            liger_import=lambda: _liger("LigerSwiGLUMLP"),
            floor=_mlp_floor,
            shapes=(
                Shape(
                    "T8192 H4096 I14336", {"tokens": 8192, "hidden": 4096, "intermediate": 14336}, _vs_compile
                ),
            ),
            smoke_shapes=(Shape("T8 H32 I96", {"tokens": 8, "hidden": 32, "intermediate": 96}, _vs_compile),),
        ),
        OpSpec(
            name="geglu_mlp",
            reference="transformers GemmaMLP (gelu_pytorch_tanh)",
            liger="LigerGEGLUMLP",
            build=build_geglu_mlp,
            liger_import=lambda: _liger("LigerGEGLUMLP"),
            floor=_mlp_floor,
            shapes=(
                Shape(
                    "T8192 H3072 I24576", {"tokens": 8192, "hidden": 3072, "intermediate": 24576}, _vs_compile
                ),
            ),
            smoke_shapes=(Shape("T8 H24 I80", {"tokens": 8, "hidden": 24, "intermediate": 80}, _vs_compile),),
        ),
        OpSpec(
            name="cross_entropy",
            reference="torch.nn.CrossEntropyLoss",
            liger="LigerCrossEntropyLoss",
            build=build_cross_entropy,
            liger_import=lambda: _liger("LigerCrossEntropyLoss"),
            floor=_ce_floor,
            shapes=(
                Shape(
                    "8192x128256",
                    {"rows": 8192, "vocab": 128256},
                    (Goal(_FULL, "<=", 1.3), Goal(_PEAK, "<", 64)),
                ),
            ),
            smoke_shapes=(
                Shape("8x500", {"rows": 8, "vocab": 500}, (Goal(_FULL, "<=", 1.3), Goal(_PEAK, "<", 64))),
            ),
            liger_note="liger inplace=True (gradient over the logits, as for lm_head output in a model)",
            bwd_from_full="bwd=full-fwd (Liger computes the gradient in the forward, over the logits)",
        ),
        OpSpec(
            name="fused_linear_cross_entropy",
            reference="F.linear -> .float() -> F.cross_entropy",
            liger="LigerFusedLinearCrossEntropyLoss",
            build=build_fused_linear_cross_entropy,
            liger_import=lambda: _liger("LigerFusedLinearCrossEntropyLoss"),
            floor=_flce_floor,
            shapes=(
                Shape(
                    "T8192 H4096 V128256",
                    {"tokens": 8192, "hidden": 4096, "vocab": 128256},
                    (Goal(_FULL, "<=", 40.0), Goal(_FULL, "<", "compile"), Goal(_PEAK, "<=", 1.4 * 1024)),
                ),
            ),
            smoke_shapes=(
                Shape(
                    "T8 H32 V300",
                    {"tokens": 8, "hidden": 32, "vocab": 300},
                    (Goal(_FULL, "<=", 40.0), Goal(_FULL, "<", "compile"), Goal(_PEAK, "<=", 1.4 * 1024)),
                ),
            ),
            bwd_from_full="bwd=full-fwd (Liger computes both gradients in the forward)",
        ),
        OpSpec(
            name="gpt_oss_glu",
            reference="transformers GptOssExperts._apply_gate",
            liger="liger_kernel.ops.gpt_oss_glu.gpt_oss_glu",
            build=build_gpt_oss_glu,
            liger_import=lambda: (
                __import__("liger_kernel.ops.gpt_oss_glu", fromlist=["gpt_oss_glu"]).gpt_oss_glu
            ),
            floor=_gpt_oss_glu_floor,
            # gpt-oss-20b: 4 x 2048 tokens routed to 4 experts each, intermediate 2880
            shapes=(Shape("T32768 I2880", {"tokens": 32768, "intermediate": 2880}, _vs_compile),),
            smoke_shapes=(Shape("T8 I40", {"tokens": 8, "intermediate": 40}, _vs_compile),),
        ),
        OpSpec(
            name="llama4_rope",
            reference="transformers llama4 apply_rotary_emb",
            liger="liger_llama4_text_rotary_pos_emb",
            build=build_llama4_rope,
            liger_import=lambda: _liger("liger_llama4_text_rotary_pos_emb"),
            floor=_llama4_rope_floor,
            shapes=_LLAMA4_ROPE_SHAPES,
            smoke_shapes=_LLAMA4_ROPE_SMOKE,
        ),
        # The same problem with liger-kernel 0.8.5's kernel in the liger column (from $LIGER_PEER_PATH,
        # default .peer/liger085; skipped when it is not there).
        OpSpec(
            name="llama4_rope_085",
            reference="transformers llama4 apply_rotary_emb",
            liger="liger-kernel 0.8.5 LigerLlama4RopeFunction",
            build=build_llama4_rope_085,
            liger_import=_peer_llama4_rope_function,
            floor=_llama4_rope_floor,
            shapes=_LLAMA4_ROPE_SHAPES,
            smoke_shapes=_LLAMA4_ROPE_SMOKE,
            liger_note="liger = liger-kernel 0.8.5 (the reference), not this package",
        ),
    )
}
