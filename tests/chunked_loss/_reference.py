"""Full-logits implementations of the chunked losses, written from their papers (and from TRL's trainers where a
variant is TRL's), the way TRL computes them without Liger: logits = F.linear(x, W, b) in the input's dtype,
upcast to fp32 (float64 stays float64), log-softmax, then the formula. Run on float64 copies they are the
golden values; run in the test's dtype they are PyTorch's reference for ``assert_close_to_reference``.

Helpers to run a loss and its reference side by side are at the bottom.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from liger_testing import assert_close, assert_close_to_reference, tolerances


def logits_of(x, weight, bias=None):
    if bias is not None and bias.dim() > 1:  # one bias per row (_bias_terms, float64 only)
        return F.linear(x, weight) + bias
    logits = F.linear(x, weight, bias)
    return logits if logits.dtype == torch.float64 else logits.float()


def token_logps(logits, target, ignore_index=-100):
    mask = target != ignore_index
    logp = torch.log_softmax(logits, dim=-1).gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(mask, logp, torch.zeros_like(logp)), mask


def sequence_logps(logits, target, ignore_index=-100, average=False):
    logp, mask = token_logps(logits, target, ignore_index)
    total = logp.sum(-1)
    count = mask.sum(-1)
    return (total / count.clamp(min=1) if average else total), count


# ---- paired preference ----------------------------------------------------------------------------------


def dpo_per_pair(c, r, n_c, n_r, beta, loss_type, eps=0.0, tau=0.05):
    """c, r: chosen/rejected log-ratios against the reference; n_c, n_r: completion token counts."""
    d = beta * (c - r)
    if loss_type == "sigmoid":  # DPO, Rafailov et al. 2023, Eq. 7
        return -F.logsigmoid(d)
    if loss_type == "hinge":  # SLiC (Zhao et al. 2023) on the DPO margin
        return torch.relu(1 - d)
    if loss_type == "ipo":  # IPO (Azar et al. 2023) Eq. 17, per-token normalized as TRL does
        return (c / n_c.clamp(min=1) - r / n_r.clamp(min=1) - 1 / (2 * beta)) ** 2
    if loss_type == "exo_pair":  # EXO (Ji et al. 2024) Eq. 16: KL([q, 1-q] || [1-eps, eps])
        q = torch.sigmoid(d)
        return q * (torch.log(q) - math.log(1 - eps)) + (1 - q) * (torch.log(1 - q) - math.log(eps))
    if loss_type == "nca_pair":  # NCA (Chen et al. 2024)
        return -F.logsigmoid(beta * c) - 0.5 * F.logsigmoid(-beta * c) - 0.5 * F.logsigmoid(-beta * r)
    if loss_type == "robust":  # rDPO (Chowdhury et al. 2024)
        return (-(1 - eps) * F.logsigmoid(d) + eps * F.logsigmoid(-d)) / (1 - 2 * eps)
    if loss_type == "bco_pair":  # TRL's paired BCO
        return -F.logsigmoid(beta * c) - F.logsigmoid(-beta * r)
    if loss_type == "sppo_hard":  # SPPO (Wu et al. 2024) with hard win probabilities, as TRL
        return (c - 1 / (2 * beta)) ** 2 + (r + 1 / (2 * beta)) ** 2
    if loss_type == "apo_zero":  # APO (D'Oosterlinck et al. 2024) Eq. 7
        return (1 - torch.sigmoid(beta * c)) + torch.sigmoid(beta * r)
    if loss_type == "apo_down":  # APO Eq. 8
        return torch.sigmoid(beta * c) + (1 - torch.sigmoid(d))
    if loss_type == "discopop":  # DiscoPOP (Chris Lu et al. 2024) Eq. 5
        m = torch.sigmoid(d / tau)
        return (1 - m) * -F.logsigmoid(d) + m * torch.exp(-d)
    if loss_type == "sigmoid_norm":  # TRL: DPO on per-token averaged log-ratios
        return -F.logsigmoid(beta * (c / n_c.clamp(min=1) - r / n_r.clamp(min=1)))
    raise AssertionError(loss_type)


def preference_reference(
    family, x, weight, target, bias=None, ref_x=None, ref_weight=None, ref_bias=None, *, beta=0.1, alpha=1.0,
    loss_type="sigmoid", label_smoothing=0.0, gamma=0.5, average_log_prob=False, compute_nll_loss=False,
    ignore_index=-100, ref_logps=None,
):  # fmt: skip
    """(loss, chosen_logps, rejected_logps) of DPO / ORPO / CPO / SimPO on a (2B, T, H) batch."""
    n = x.shape[0] // 2
    logits = logits_of(x, weight, bias)
    logps, counts = sequence_logps(logits, target, ignore_index, average_log_prob)
    chosen, rejected = logps[:n], logps[n:]
    eps = label_smoothing
    if family == "dpo":
        if ref_logps is not None:
            ref_c, ref_r = ref_logps
        elif ref_x is not None:
            ref = sequence_logps(
                logits_of(ref_x, ref_weight, ref_bias), target, ignore_index, average_log_prob
            )[0]
            ref_c, ref_r = ref[:n].detach(), ref[n:].detach()
        else:
            ref_c = ref_r = 0.0
        losses = dpo_per_pair(chosen - ref_c, rejected - ref_r, counts[:n], counts[n:], beta, loss_type, eps)
    elif (
        family == "orpo"
    ):  # ORPO (Hong et al. 2024) Eq. 6-7: -log sigma(log odds(chosen) - log odds(rejected))
        log_odds = (chosen - rejected) - (torch.log1p(-torch.exp(chosen)) - torch.log1p(-torch.exp(rejected)))
        losses = -beta * F.logsigmoid(log_odds)
    elif family == "cpo":  # CPO (Xu et al. 2024) Eq. 3, with label smoothing as TRL's CPOTrainer
        d = beta * (chosen - rejected)
        losses = -(1 - eps) * F.logsigmoid(d) - eps * F.logsigmoid(-d)
    elif family == "simpo":  # SimPO (Meng et al. 2024) Eq. 6 on length-normalized log-probs
        d = beta * (chosen - rejected) - gamma
        losses = -(1 - eps) * F.logsigmoid(d) - eps * F.logsigmoid(-d)
    else:
        raise AssertionError(family)
    loss = losses.mean()
    if compute_nll_loss:
        logp, mask = token_logps(logits[:n], target[:n], ignore_index)
        loss = loss + alpha * -logp.sum() / mask.sum().clamp(min=1)
    return loss, chosen, rejected


# ---- GRPO ----------------------------------------------------------------------------------------------


def grpo_reference(
    x, weight, ids, mask, advantages, bias=None, *, ref_logps=None, old_logps=None, beta=0.04, epsilon_low=0.2,
    epsilon_high=0.2, loss_type="dapo", max_completion_length=None, importance_sampling_level="token",
    temperature=1.0, delta=None, num_items_in_batch=None, vllm_is_ratio=None, sapo_pos=1.0, sapo_neg=1.05,
):  # fmt: skip
    """(loss, mean k3, clip ratio) as TRL's GRPOTrainer._compute_loss (one process, no grad accumulation)."""
    logits = logits_of(x, weight, bias) / temperature
    logp = torch.log_softmax(logits, -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    mask = mask.to(logp.dtype)
    adv = advantages.to(logp.dtype)
    adv = adv.unsqueeze(1) if adv.dim() == 1 else adv
    old = logp.detach() if old_logps is None else old_logps.to(logp.dtype)
    log_ratio = logp - old
    if importance_sampling_level == "token":
        log_w = log_ratio
    else:  # GSPO (Zheng et al. 2025): length-normalized sequence ratio
        log_w = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    ratio = torch.exp(log_w)
    low = torch.zeros_like(ratio, dtype=torch.bool)
    high = torch.zeros_like(ratio, dtype=torch.bool)
    if loss_type == "cispo":  # CISPO (MiniMax-M1): clipped, detached IS weight on the log-prob
        per_token = -torch.clamp(ratio, max=epsilon_high).detach() * adv * logp
        high = ratio > epsilon_high
    elif loss_type == "sapo":  # SAPO: soft sigmoid gate, temperature by the sign of the advantage
        tau = torch.where(adv > 0, sapo_pos, sapo_neg)
        per_token = -torch.sigmoid(tau * (ratio - 1)) * 4 / tau * adv
    elif loss_type == "vespo":  # TRL's get_gamma_weights: detached gamma weight of the sequence ratio
        with torch.no_grad():
            seq = (torch.clamp(log_ratio, -20, 20) * mask).sum(-1, keepdim=True)
            if vllm_is_ratio is not None:
                seq = seq + torch.log(vllm_is_ratio).clamp(math.log(1e-8), 20).sum(-1, keepdim=True)
            seq = seq.clamp(math.log(1e-8), 20)
            k = torch.where(adv >= 0, 2.0, 3.0)
            lam = torch.where(adv >= 0, 3.0, 2.0)
            phi = torch.exp(lam + k * seq - lam * torch.exp(seq))
        per_token = -phi * adv * logp
    else:  # PPO clipped surrogate (Schulman et al. 2017), GRPO's Eq. 3
        clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
        unclipped = ratio if delta is None else torch.clamp(ratio, max=delta)
        per_token = -torch.min(unclipped * adv, clipped * adv)
        low, high = ratio < 1 - epsilon_low, ratio > 1 + epsilon_high
    if vllm_is_ratio is not None and loss_type != "vespo":
        per_token = per_token * vllm_is_ratio
    kl = None
    if beta != 0:  # k3 estimator of KL(pi || pi_ref) (Schulman's blog), GRPO Eq. 4
        kl = torch.exp(ref_logps - logp) - (ref_logps - logp) - 1
        per_token = per_token + beta * kl
    if loss_type in ("grpo", "sapo"):
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    elif loss_type == "dr_grpo":
        loss = (per_token * mask).sum() / (per_token.shape[0] * max_completion_length)
    elif loss_type in ("dapo", "cispo", "vespo"):
        norm = mask.sum() if num_items_in_batch is None else torch.tensor(float(num_items_in_batch))
        loss = (per_token * mask).sum() / norm.clamp(min=1.0)
    else:  # luspo, TRL 1.16
        loss = (per_token * mask).sum(-1).mean()
    tokens = mask.sum().clamp(min=1.0)
    is_clipped = (low & (adv < 0)) | (high & (adv > 0))
    if importance_sampling_level == "token":
        clipped_frac = ((is_clipped * mask).sum() / tokens).detach()
    else:  # one ratio per sequence: TRL's global_masked_mean counts sequences
        clipped_frac = is_clipped.to(mask.dtype).mean()
    mean_kl = None if kl is None else ((kl * mask).sum() / tokens).detach()
    return loss, mean_kl, clipped_frac


# ---- KTO and distillation ------------------------------------------------------------------------------


def kto_reference(
    x, weight, target, labels, bias=None, ref_x=None, ref_weight=None, ref_bias=None, *, kl=None, beta=0.1,
    average_log_prob=False, ignore_index=-100,
):  # fmt: skip
    """KTO (Ethayarajh et al. 2024) Eq. 8 with lambda_D = lambda_U = 1, as TRL's KTOTrainer: mean over the batch
    of 1 - sigma(beta (r - z0)) for desirable and 1 - sigma(beta (z0 - r)) for undesirable, r the log-ratio."""
    logps = sequence_logps(logits_of(x, weight, bias), target, ignore_index, average_log_prob)[0]
    if ref_x is not None:
        ref = sequence_logps(logits_of(ref_x, ref_weight, ref_bias), target, ignore_index, average_log_prob)[
            0
        ]
        logps_ratio = logps - ref.detach()
    else:
        logps_ratio = logps
    z0 = 0.0 if kl is None else kl
    sign = torch.where(labels, 1.0, -1.0).to(logps.dtype)
    return (1 - torch.sigmoid(beta * (logps_ratio - z0) * sign)).mean()


def jsd_reference(
    student_x, student_w, teacher_x, teacher_w, labels, student_b=None, teacher_b=None, *, weight_hard_loss=0.5,
    weight_soft_loss=0.5, beta=0.5, ignore_index=-100, temperature=1.0, soft="jsd",
):  # fmt: skip
    """weight_hard * CE(student, labels) + weight_soft * generalized JSD_beta(teacher/T, student/T), both
    averaged over the non-ignored tokens. JSD_beta = beta KL(T || M) + (1 - beta) KL(S || M),
    M = beta T + (1 - beta) S (Agarwal et al. 2024, GKD); beta = 0 is KL(T || S), beta = 1 is KL(S || T)."""
    s_logits = logits_of(student_x, student_w, student_b)
    t_logits = logits_of(teacher_x, teacher_w, teacher_b).detach()
    mask = labels != ignore_index
    count = mask.sum().clamp(min=1)
    hard = F.cross_entropy(s_logits, labels, ignore_index=ignore_index, reduction="sum") / count
    if soft == "cosine":  # cosine distance of the tempered logits (0.8.5's cosine-similarity distillation)
        s_t, t_t = s_logits / temperature, t_logits / temperature
        cos = (s_t * t_t).sum(-1) / (s_t.norm(dim=-1) * t_t.norm(dim=-1))
        soft_loss = (beta * (1 - cos) * mask).sum() / count
        return weight_hard_loss * hard + weight_soft_loss * soft_loss, soft_loss, hard
    s_logp = torch.log_softmax(s_logits / temperature, -1)
    t_logp = torch.log_softmax(t_logits / temperature, -1)
    s_p, t_p = s_logp.exp(), t_logp.exp()
    if beta == 0:
        per_token = (t_p * (t_logp - s_logp)).sum(-1)
    elif beta == 1:
        per_token = (s_p * (s_logp - t_logp)).sum(-1)
    else:
        m_logp = torch.log(beta * t_p + (1 - beta) * s_p)
        per_token = (beta * t_p * (t_logp - m_logp) + (1 - beta) * s_p * (s_logp - m_logp)).sum(-1)
    soft_loss = (per_token * mask).sum() / count
    return weight_hard_loss * hard + weight_soft_loss * soft_loss, soft_loss, hard


# ---- running a loss against its reference --------------------------------------------------------------


def f64(t):
    if t is None or not t.is_floating_point():
        return t
    return t.detach().double().requires_grad_(t.requires_grad)


def same(t):
    if t is None or not t.is_floating_point():
        return t
    return t.detach().clone().requires_grad_(t.requires_grad)


def value_and_grads(fn, tensors, n_grad):
    """fn(*tensors) -> (loss, *extra); returns [loss, *extra, grads of tensors[:n_grad] that require grad]."""
    out = fn(*tensors)
    out = out if isinstance(out, tuple) else (out,)
    wrt = [t for t in tensors[:n_grad] if t is not None and t.requires_grad]
    grads = torch.autograd.grad(out[0], wrt) if wrt else ()
    return [o.detach() if isinstance(o, torch.Tensor) else o for o in out] + list(grads)


def _bias_terms(reference, tensors, n_grad):
    """{index of a bias among tensors[:n_grad]: sum over rows of |dL/dlogits| in float64}: the magnitude of
    the terms its gradient adds up (one per row, each rounded to the dtype where the kernel or PyTorch
    rounds the logits gradient), found by giving each row its own copy of the bias."""
    rows = tensors[0].shape[:-1]
    terms = {}
    for i, t in enumerate(tensors[:n_grad]):
        if t is None or t.dim() != 1 or not t.requires_grad or not t.is_floating_point():
            continue
        per_row = [f64(u) for u in tensors]
        per_row[i] = f64(t).detach().expand(*rows, t.shape[0]).clone().requires_grad_()
        out = reference(*per_row)
        (grad,) = torch.autograd.grad(out[0] if isinstance(out, tuple) else out, per_row[i])
        terms[i] = grad.abs().reshape(-1, t.shape[0]).sum(0)
    return terms


def check_against_reference(ours, reference, tensors, n_grad, msg=""):
    """Loss, extra outputs and the grads of tensors[:n_grad]: ours (in the tensors' dtype) against the
    reference in the same dtype and in float64. A bias gradient (a sum over rows of the logits gradient,
    rounded to the dtype per element) gets its floor from the magnitude of those terms, where the sum
    cancels, instead of from its own size."""
    dtype = next(t.dtype for t in tensors if t is not None and t.is_floating_point())
    actual = value_and_grads(ours, [same(t) for t in tensors], n_grad)
    ref = value_and_grads(reference, [same(t) for t in tensors], n_grad)
    golden = value_and_grads(reference, [f64(t) for t in tensors], n_grad)
    wrt = [i for i, t in enumerate(tensors[:n_grad]) if t is not None and t.requires_grad]
    n_out = len(golden) - len(wrt)
    bias_terms = _bias_terms(reference, tensors, n_grad) if dtype != torch.float32 else {}
    for i, (a, r, g) in enumerate(zip(actual, ref, golden)):
        if g is None:
            assert a is None, f"output {i}: expected None"
            continue
        assert not torch.isnan(a).any(), f"{msg} output {i} has NaN"
        if dtype == torch.float32:
            # torch's CPU kernels accumulate fp32 in fp64 and are sometimes almost exact, while the chunks add one
            # rounding per chunk to the weight gradient: fp32 tolerances against the golden (as the fused linear
            # cross entropy tests).
            tol = tolerances(torch.float32)
            assert_close(a, g.to(a.dtype), atol=tol.atol, rtol=tol.rtol, msg=f"{msg} output {i}")
        else:
            if i >= n_out:
                terms = bias_terms.get(wrt[i - n_out])
            else:
                # A loss (fp32 here) is a mean of per-token terms of order 1 or more (log-probabilities of
                # the tests' logits), however much they cancel (a JSD of close distributions: 2e-3 from
                # terms of 0.3): one rounding of them is eps32 absolute, not relative to the result
                # (seen on the H200, fp16: 7e-8 against a nearly exact reference's 3e-8).
                terms = g.abs().clamp(min=1.0)
            assert_close_to_reference(a, r.to(a.dtype), g, msg=f"{msg} output {i}", terms_scale=terms)
    return actual
