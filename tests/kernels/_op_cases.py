"""Every public Liger op as a small case: named inputs, the Liger call and an eager PyTorch equivalent.

Shared by the tests that check all ops alike (unusual layouts, meta tensors, second derivatives,
per-sample gradients). Inputs are CPU float32 values (int64 for targets) with ``rows`` leading rows
(0 for zero-size inputs); each test moves them to its device and lays them out as it needs. Both calls
take the inputs by name and return a tuple of tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from _distill_check import jsd_per_row, kept_mean, log_probs

from liger_kernel.ops.geglu import geglu_mlp
from liger_kernel.ops.gpt_oss_glu import gpt_oss_glu
from liger_kernel.ops.swiglu import swiglu_mlp
from liger_kernel.transformers.functional import (
    liger_cross_entropy,
    liger_fused_add_rms_norm,
    liger_fused_linear_cross_entropy,
    liger_fused_linear_jsd,
    liger_geglu,
    liger_jsd,
    liger_kl_div,
    liger_layer_norm,
    liger_llama4_rope,
    liger_rms_norm,
    liger_rope,
    liger_swiglu,
    liger_tvd,
)

EPS = 1e-6
IGNORE = -100
SMOOTHING = 0.1


@dataclass
class OpCase:
    name: str
    inputs: dict[str, torch.Tensor]
    differentiable: tuple[str, ...]
    liger: Callable[..., tuple[torch.Tensor, ...]]
    eager: Callable[..., tuple[torch.Tensor, ...]]
    # torch's "mean" over zero rows is NaN where ours is 0 (documented): such cases skip zero-size.
    zero_rows_comparable: bool = True
    # Checked with float32 tolerances against the float64 golden instead of reference-error mode: the
    # fused loss's weight gradient sums cancelling terms, where torch's CPU matmul (the float32
    # reference) is almost exact (as in test_fused_linear_cross_entropy).
    fp32_tolerances: bool = False
    # The magnitude of the terms each result sums, for floors of sums that cancel (see terms_scales):
    # a float64 stand-in for the op whose outputs hold the outputs' term scale and whose vector-Jacobian
    # product with |cotangent| gives, up to sign, each gradient's term scale. None: the result itself.
    terms: Callable[..., tuple[torch.Tensor, ...]] | None = None


def terms_scales(case: OpCase, leaves: dict, args: dict, cotangents) -> tuple[list, dict] | None:
    """Term scales (outputs, then gradients by leaf name) of ``case`` at float64 ``args`` (views of the
    float64 ``leaves``), for ``assert_close_to_reference(terms_scale=...)``: a gradient that sums over
    tokens (a bias or weight gradient) rounds like its terms, eps * sum_t |term_t|, however much they
    cancel; gradients of leaves that are expanded sum the copies' scales, as autograd sums the copies."""
    if case.terms is None:
        return None
    outs = case.terms(**args)
    grads = torch.autograd.grad(outs, list(leaves.values()), [c.abs() for c in cotangents], allow_unused=True)
    # abs: the stand-in takes |arg|, whose derivative sign(arg) is the same for every copy of an element.
    return [o.detach().abs() for o in outs], {
        k: None if g is None else g.abs() for k, g in zip(leaves, grads)
    }


def _mlp_terms(act: Callable[[torch.Tensor], torch.Tensor]):
    """y = down(act(g) * u), g = x Wg^T + bg, u = x Wu^T + bu: the same products on absolute values, with
    the elementwise factors |act'(g) u| and |act(g)| of the true values (detached), so that the stand-in's
    gradients are |dy|^T |h| for the down weight, sum_t |dg_t| for the gate bias, and so on."""

    def terms(x, gate_weight, up_weight, down_weight, gate_bias, up_bias, down_bias):
        with torch.enable_grad():
            g = F.linear(x, gate_weight, gate_bias).detach().requires_grad_(True)
            a = act(g)
            (da,) = torch.autograd.grad(a.sum(), g)
        u = F.linear(x, up_weight, up_bias).detach()
        a = a.detach()
        g_abs = F.linear(x.abs(), gate_weight.abs(), gate_bias.abs())
        u_abs = F.linear(x.abs(), up_weight.abs(), up_bias.abs())
        h_abs = (a * u).abs() + (g_abs - g_abs.detach()) * (da * u).abs() + (u_abs - u_abs.detach()) * a.abs()
        return (F.linear(h_abs, down_weight.abs(), down_bias.abs()),)

    return terms


def _fused_linear_cross_entropy_terms(reduction: str):
    """Logits z = x W^T + b, loss_t = (1 - s) w_y (-log p_y) + s / V sum_v w_v (-log p_v): dz_tv =
    (1 - s) w_y (p_v - [v = y]) + s / V (sum_u w_u p_v - w_v), whose terms are taken in absolute value;
    dx, dW and db are then sums of |dz| times |W|, |x| and 1 (a difference of larger terms: the
    result may cancel to far below one rounding of its terms)."""

    def terms(input, weight, target, bias, ce_weight):
        z = F.linear(input, weight, bias).detach()
        p = z.softmax(-1)
        kept = target != IGNORE
        y = torch.where(kept, target, 0)
        onehot = F.one_hot(y, z.shape[-1]).to(z.dtype)
        w_y = ce_weight[y].unsqueeze(-1)
        dz_terms = (1 - SMOOTHING) * w_y * (p + onehot) + SMOOTHING / z.shape[-1] * (
            ce_weight.sum() * p + ce_weight
        )
        dz_terms = dz_terms * kept.unsqueeze(-1)
        if reduction == "mean":
            dz_terms = dz_terms / ce_weight[y][kept].sum()
        z_abs = F.linear(input.abs(), weight.abs(), bias.abs())
        per_row = ((z_abs - z_abs.detach()) * dz_terms).sum(-1)
        loss = F.cross_entropy(z, target, ce_weight, reduction=reduction, label_smoothing=SMOOTHING)
        return (loss + (per_row.sum() if reduction == "mean" else per_row),)

    return terms


def _rotate(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos.unsqueeze(1) + rotated * sin.unsqueeze(1)


def _rotate_pairs(x, cos, sin):
    """Llama 4's RoPE: (x[2i], x[2i+1]) times cos_i + i sin_i, in real arithmetic (any dtype, layout)."""
    pairs = x.unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    c, s = cos.unsqueeze(2), sin.unsqueeze(2)
    return torch.stack((even * c - odd * s, even * s + odd * c), dim=-1).flatten(-2)


GPT_OSS_ALPHA, GPT_OSS_LIMIT = 1.702, 2.5
JSD_BETA = 0.3


def _gpt_oss_gate(x):
    """gpt-oss's clamped GLU on interleaved (gate, up) pairs, as its experts compute it."""
    gate = x[..., 0::2].clamp(max=GPT_OSS_LIMIT)
    up = x[..., 1::2].clamp(-GPT_OSS_LIMIT, GPT_OSS_LIMIT)
    return gate * torch.sigmoid(gate * GPT_OSS_ALPHA) * (up + 1)


def _jsd(log_q, log_p, labels):
    """Generalized JSD with weight JSD_BETA, mean over the rows whose label is kept (_distill_check's)."""
    return kept_mean(jsd_per_row(log_q, log_p, JSD_BETA), labels, IGNORE)


def _jsd_terms(input, target, labels):
    """The JSD with each summand p log p, p log m, q log q, q log m in absolute value: the loss sums and
    cancels them (a mean of row sums of order 0.1 from terms of order 1)."""
    q, p = input.exp(), target.exp()
    log_m = torch.log(JSD_BETA * p + (1 - JSD_BETA) * q)
    per_row = JSD_BETA * (p * (target.abs() + log_m.abs())).sum(-1)
    per_row = per_row + (1 - JSD_BETA) * (q * (input.abs() + log_m.abs())).sum(-1)
    return (kept_mean(per_row, labels, IGNORE),)


def _targets(g: torch.Generator, rows: int, vocab: int) -> torch.Tensor:
    t = torch.randint(0, vocab, (rows,), generator=g)
    if rows > 2:
        t[1] = IGNORE
    return t


def op_cases(rows: int = 5, seed: int = 0) -> list[OpCase]:
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    hidden, inter, vocab = 24, 20, 40
    cases = [
        OpCase(
            "rms_norm",
            {"x": randn(rows, hidden), "w": randn(hidden)},
            ("x", "w"),
            lambda x, w: (liger_rms_norm(x, w, EPS, 0.0, "none"),),
            lambda x, w: (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * w,),
        ),
        OpCase(
            "fused_add_rms_norm",
            {"x": randn(rows, hidden), "residual": randn(rows, hidden), "w": randn(hidden)},
            ("x", "residual", "w"),
            lambda x, residual, w: liger_fused_add_rms_norm(x, residual, w, EPS, 0.0, "none"),
            lambda x, residual, w: (
                (x + residual) * torch.rsqrt((x + residual).pow(2).mean(-1, keepdim=True) + EPS) * w,
                x + residual,
            ),
        ),
        OpCase(
            "layer_norm",
            {"x": randn(rows, hidden), "w": randn(hidden), "b": randn(hidden)},
            ("x", "w", "b"),
            lambda x, w, b: (liger_layer_norm(x, w, b, EPS),),
            lambda x, w, b: (F.layer_norm(x, (hidden,), w, b, EPS),),
        ),
        OpCase(
            "rope",
            {
                "q": randn(2, 3, rows, 8),
                "k": randn(2, 1, rows, 8),
                "cos": randn(1, rows, 8),
                "sin": randn(2, rows, 8),
            },
            ("q", "k"),
            lambda q, k, cos, sin: liger_rope(q, k, cos, sin),
            lambda q, k, cos, sin: (_rotate(q, cos, sin), _rotate(k, cos, sin)),
        ),
        OpCase(
            "llama4_rope",  # q, k (bsz, seq, heads, head_dim); the complex table made from cos and sin
            {
                "q": randn(2, rows, 3, 8),
                "k": randn(2, rows, 1, 8),
                "cos": randn(1, rows, 4),
                "sin": randn(1, rows, 4),
            },
            ("q", "k"),
            lambda q, k, cos, sin: liger_llama4_rope(q, k, torch.complex(cos, sin)),
            lambda q, k, cos, sin: (_rotate_pairs(q, cos, sin), _rotate_pairs(k, cos, sin)),
        ),
        OpCase(
            "swiglu",
            {"a": randn(rows, hidden), "b": randn(rows, hidden)},
            ("a", "b"),
            lambda a, b: (liger_swiglu(a, b),),
            lambda a, b: (F.silu(a) * b,),
        ),
        OpCase(
            "geglu",
            {"a": randn(rows, hidden), "b": randn(rows, hidden)},
            ("a", "b"),
            lambda a, b: (liger_geglu(a, b),),
            lambda a, b: (F.gelu(a, approximate="tanh") * b,),
        ),
        OpCase(
            "gpt_oss_glu",  # interleaved (gate, up) pairs; +-4 sigma values reach past a limit of 2.5
            {"x": 2 * randn(rows, 2 * hidden)},
            ("x",),
            lambda x: (gpt_oss_glu(x, GPT_OSS_ALPHA, GPT_OSS_LIMIT),),
            lambda x: (_gpt_oss_gate(x),),
        ),
        # Distillation losses on log-probabilities (student "input", teacher "target"), per-row mean.
        OpCase(
            "kl_div",
            {
                "input": log_probs(randn(rows, vocab), torch.float32),
                "target": log_probs(randn(rows, vocab), torch.float32),
            },
            ("input", "target"),
            lambda input, target: (liger_kl_div(input, target, reduction="batchmean", log_target=True),),
            lambda input, target: (F.kl_div(input, target, reduction="batchmean", log_target=True),),
            zero_rows_comparable=False,
        ),
        OpCase(
            "jsd",
            {
                "input": log_probs(randn(rows, vocab), torch.float32),
                "target": log_probs(randn(rows, vocab), torch.float32),
                "labels": _targets(g, rows, vocab),
            },
            ("input", "target"),
            lambda input, target, labels: (liger_jsd(input, target, labels, beta=JSD_BETA),),
            lambda input, target, labels: (_jsd(input, target, labels),),
            zero_rows_comparable=False,
            terms=_jsd_terms,
        ),
        OpCase(
            "tvd",
            {"input": randn(rows, vocab).softmax(-1), "target": randn(rows, vocab).softmax(-1)},
            ("input", "target"),
            lambda input, target: (liger_tvd(input, target, reduction="batchmean"),),
            lambda input, target: (0.5 * (input - target).abs().sum() / input.shape[0],),
            zero_rows_comparable=False,
        ),
        OpCase(
            "fused_linear_jsd",  # the student's and the teacher's lm_head inside the loss
            {
                "student_input": randn(rows, hidden),
                "student_weight": randn(vocab, hidden) / hidden**0.5,
                "teacher_input": randn(rows, inter),
                "teacher_weight": randn(vocab, inter) / inter**0.5,
                "labels": _targets(g, rows, vocab),
            },
            ("student_input", "student_weight"),
            lambda student_input, student_weight, teacher_input, teacher_weight, labels: (
                liger_fused_linear_jsd(
                    student_input, student_weight, teacher_input, teacher_weight, labels, JSD_BETA
                ),
            ),
            lambda student_input, student_weight, teacher_input, teacher_weight, labels: (
                _jsd(
                    torch.log_softmax(F.linear(student_input, student_weight), -1),
                    torch.log_softmax(F.linear(teacher_input, teacher_weight), -1),
                    labels,
                ),
            ),
            zero_rows_comparable=False,
            fp32_tolerances=True,  # dW sums over rows (see fused_linear_cross_entropy below)
        ),
    ]
    # nn.Linear's scale (1 / sqrt(fan_in)): outputs and gradients of order 1, as in a model.
    mlp_inputs = {
        "x": randn(rows, hidden),
        "gate_weight": randn(inter, hidden) / hidden**0.5,
        "up_weight": randn(inter, hidden) / hidden**0.5,
        "down_weight": randn(hidden, inter) / inter**0.5,
        "gate_bias": randn(inter),
        "up_bias": randn(inter),
        "down_bias": randn(hidden),
    }
    for name, liger_mlp, act in (
        ("swiglu_mlp", swiglu_mlp, F.silu),
        ("geglu_mlp", geglu_mlp, lambda a: F.gelu(a, approximate="tanh")),
    ):
        cases.append(
            OpCase(
                name,
                {k: v.clone() for k, v in mlp_inputs.items()},
                tuple(mlp_inputs),
                lambda x, gate_weight, up_weight, down_weight, gate_bias, up_bias, down_bias, f=liger_mlp: (
                    f(x, gate_weight, up_weight, down_weight, gate_bias, up_bias, down_bias),
                ),
                lambda x, gate_weight, up_weight, down_weight, gate_bias, up_bias, down_bias, act=act: (
                    F.linear(
                        act(F.linear(x, gate_weight, gate_bias)) * F.linear(x, up_weight, up_bias),
                        down_weight,
                        down_bias,
                    ),
                ),
                terms=_mlp_terms(act),
            )
        )
    for reduction in ("mean", "none"):
        cases.append(
            OpCase(
                f"cross_entropy_{reduction}",
                {
                    "input": randn(rows, vocab),
                    "target": _targets(g, rows, vocab),
                    "weight": randn(vocab).abs(),
                },
                ("input",),
                lambda input, target, weight, r=reduction: (
                    liger_cross_entropy(input, target, weight, reduction=r, label_smoothing=SMOOTHING),
                ),
                lambda input, target, weight, r=reduction: (
                    F.cross_entropy(input, target, weight, reduction=r, label_smoothing=SMOOTHING),
                ),
                zero_rows_comparable=reduction != "mean",
            )
        )
        cases.append(
            OpCase(
                f"fused_linear_cross_entropy_{reduction}",
                {
                    "input": randn(rows, hidden),
                    "weight": randn(vocab, hidden),
                    "target": _targets(g, rows, vocab),
                    "bias": randn(vocab),
                    "ce_weight": randn(vocab).abs(),
                },
                ("input", "weight", "bias"),
                lambda input, weight, target, bias, ce_weight, r=reduction: (
                    liger_fused_linear_cross_entropy(
                        input,
                        weight,
                        target,
                        bias,
                        label_smoothing=SMOOTHING,
                        reduction=r,
                        ce_weight=ce_weight,
                    ),
                ),
                lambda input, weight, target, bias, ce_weight, r=reduction: (
                    F.cross_entropy(
                        F.linear(input, weight, bias),
                        target,
                        ce_weight,
                        reduction=r,
                        label_smoothing=SMOOTHING,
                    ),
                ),
                zero_rows_comparable=reduction != "mean",
                fp32_tolerances=True,
                terms=_fused_linear_cross_entropy_terms(reduction),
            )
        )
    return cases


OP_NAMES = [c.name for c in op_cases()]


def op_case(name: str, rows: int = 5, seed: int = 0) -> OpCase:
    return next(c for c in op_cases(rows, seed) if c.name == name)
