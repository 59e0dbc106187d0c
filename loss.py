"""
loss.py: the PTD-PO objective as small pure functions on tensors.

    L = L_GRPO + kl_coef * L_KL * (1 - g) + ptd_coef * L_PTD

- group_advantages: GRPO's group-normalised advantage (no value network: group baseline).
- policy_loss:      PPO clipped surrogate with "clip higher" and dual clip, summed and divided
                    by a caller-given token count so that micro-batches and ranks add up to
                    the token mean of the whole mini-batch.
- k3_kl:            the low-variance KL(policy || reference) estimator (Schulman, "Approximating
                    KL divergence", 2020).
- topk_jsd:         Jensen-Shannon divergence on a sparse support plus one tail bucket per side.
                    The tutor side is constant; the student gets the true gradient. (The paper's
                    public code, github.com/XszNeverSleep/PTD-PO, verl/trainer/core_algos.py at
                    397ea11, compute_topk_kl with kl_direction "jsd_kl", detaches the student's
                    weights p inside KL(student || M); with the tutor detached too, the student's
                    gradient then cancels exactly: tests/test_loss.py reproduces that computation.)
- unanswer:         the break-the-answer control's target (no hint, the rollout's own tokens off).
- ptdpo_loss:       the whole objective of a micro-batch from the pieces above: what train.py calls.
- union_support:    student top-K ids union tutor top-K ids, deduplicated, padded, masked.
- head_logprobs:    log-probs at the sampled token and at a support, entropy and top-K ids,
                    from final hidden states and the lm_head weight, chunked over positions so
                    that nothing of size (tokens x V) lives until the backward pass.

Only torch is imported: copy this file anywhere. Left out on purpose: sequence-level
importance ratios (GSPO), entropy bonuses, value losses.

Benchmark (memory and time against a full-vocabulary JSD): python scripts/bench.py loss
"""
import math

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

# -----------------------------------------------------------------------------
# GRPO


def group_advantages(rewards, group_size, eps=1e-6, scale_by_std=True):
    """A_i = (r_i - mean(r_group)) / (std(r_group) + eps), one scalar per response.

    rewards: (N,) laid out as N // group_size consecutive groups. A group whose rewards are
    all equal gets exactly 0. scale_by_std=False is Dr. GRPO (Liu et al. 2025): mean-centred only.
    The std is the unbiased one (torch default), as in the paper's EasyR1/verl code.
    """
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 for a group baseline, got {group_size}")
    if rewards.ndim != 1 or rewards.numel() % group_size != 0:
        raise ValueError(f"rewards must be 1-D with a multiple of group_size={group_size} "
                         f"elements, got shape {tuple(rewards.shape)}")
    r = rewards if rewards.is_floating_point() else rewards.float()
    r = r.view(-1, group_size)                                      # (groups, G)
    centred = r - r.mean(dim=1, keepdim=True)
    if scale_by_std:
        centred = centred / (r.std(dim=1, keepdim=True) + eps)
    # a constant group has centred == 0 up to rounding; make it exactly 0
    constant = (r == r[:, :1]).all(dim=1, keepdim=True)
    return torch.where(constant, torch.zeros_like(centred), centred).view(-1)


def policy_loss(logp, old_logp, advantages, mask, normaliser,
                clip_low=0.2, clip_high=0.3, dual_clip=3.0):
    """PPO clipped surrogate, token level, with asymmetric clip and dual clip.

    logp, old_logp, mask: (B, T); advantages: (B,) broadcast over tokens.
    ratio = exp(logp - old_logp)
    per-token loss = -min(ratio * A, clip(ratio, 1 - clip_low, 1 + clip_high) * A)
    and for A < 0 it is further capped at -dual_clip * A (Ye et al. 2020, dual-clip PPO).
    Returns (sum of per-token losses over mask) / normaliser, and metrics. Pass the number of
    response tokens of the whole global mini-batch as normaliser: then summing the losses of
    every micro-batch on every rank gives the token mean of the mini-batch exactly.
    """
    mask = mask.to(logp.dtype)
    adv = advantages.to(logp.dtype).unsqueeze(-1)                   # (B, 1)
    log_ratio = (logp - old_logp).clamp(-20.0, 20.0)
    ratio = torch.exp(log_ratio)                                    # (B, T)
    loss1 = -adv * ratio
    loss2 = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    clipped = torch.maximum(loss1, loss2)
    loss3 = -adv * dual_clip
    per_token = torch.where(adv < 0, torch.minimum(clipped, loss3), clipped)
    loss = (per_token * mask).sum() / normaliser
    with torch.no_grad():
        n = mask.sum().clamp(min=1)
        share = lambda hit: (hit.to(mask.dtype) * mask).sum() / n     # noqa: E731
        metrics = {
            "clip_frac_low": share((ratio < 1.0 - clip_low) & (adv < 0)),
            "clip_frac_high": share((ratio > 1.0 + clip_high) & (adv > 0)),
            "clip_frac_dual": (((loss3 < clipped) & (adv < 0)).to(mask.dtype) * mask).sum() / n,
            "ratio_mean": (ratio * mask).sum() / n,
        }
    return loss, metrics


def k3_kl(logp, ref_logp, clamp=10.0):
    """k3 estimator of KL(policy || ref) per token: exp(ref - logp) - (ref - logp) - 1 >= 0.

    Unbiased for the KL when tokens are sampled from the policy, and never negative. Shapes: any,
    same. For stability the log ratio d = ref - logp is clamped at +-20 and the value at `clamp`
    (10), as verl's "low_var_kl" does (tests/test_loss.py checks it against verl's formula).
    """
    d = (ref_logp - logp).clamp(-20.0, 20.0)
    return (torch.exp(d) - d - 1.0).clamp(max=clamp)

# -----------------------------------------------------------------------------
# divergences on a sparse support + tail bucket


def _with_tail(logp, mask):
    """Append a tail bucket log(1 - sum_S p) to log-probs on a support. (..., M) -> (..., M+1)

    Padding slots (mask False) become -inf. The tail is log(-expm1(logsumexp)), accurate both
    when the support holds almost all the mass (tail near 0) and when it holds almost none;
    log sum_S p is capped at -1e-12, so a support that covers the whole vocabulary gets a tail
    of 1e-12 on both sides (which adds nothing) instead of log 0 and an infinite gradient.
    """
    if mask is not None:
        logp = logp.masked_fill(~mask, float("-inf"))
    empty = torch.isneginf(logp).all(dim=-1, keepdim=True)          # (..., 1)
    lse = torch.logsumexp(logp.masked_fill(empty, 0.0), dim=-1, keepdim=True)
    lse = torch.where(empty, torch.full_like(lse, float("-inf")), lse).clamp(max=-1e-12)
    # each branch gets inputs inside its own domain, so the branch torch.where discards cannot
    # produce an inf whose zero-weighted gradient would become NaN
    small = lse > -math.log(2.0)
    tail = torch.where(small,   # tail small: expm1 exact; tail large: log1p exact
                       torch.log(-torch.expm1(lse.clamp(min=-math.log(2.0)))),
                       torch.log1p(-torch.exp(lse.clamp(max=-math.log(2.0)))))
    return torch.cat([logp, tail], dim=-1)


def _kl(logp_a, logp_b):
    """KL(A || B) over the last dim from log-probs; terms with a = 0 are exactly 0 (no NaN)."""
    pa = logp_a.exp()
    live = pa > 0
    zero = torch.zeros_like(logp_a)
    diff = torch.where(live, logp_a, zero) - torch.where(live, logp_b, zero)
    return (pa * diff).sum(dim=-1)


def _log_mixture(p, q, beta):
    """log(beta * e^p + (1 - beta) * e^q), safe where both are -inf (gradient 0, not NaN)."""
    both = torch.isneginf(p) & torch.isneginf(q)
    zero = torch.zeros_like(p)
    pp, qq = torch.where(both, zero, p), torch.where(both, zero, q)
    m = torch.logaddexp(pp + math.log(beta), qq + math.log1p(-beta))
    return torch.where(both, torch.full_like(m, float("-inf")), m)


def topk_jsd(student_logp, tutor_logp, mask, beta=0.5):
    """Generalised Jensen-Shannon divergence on support + tail, per position.

    student_logp, tutor_logp: (..., M) log-probs normalised over the FULL vocabulary, at the
    same support ids; mask: (..., M) bool, False for padding slots (union_support returns it).
    The mask is required: a padded support repeats its pad id, and a repeated id counted twice
    is a wrong distribution with no error. Pass None only when the M ids are all distinct
    (e.g. the whole vocabulary). Returns (...,):
        JSD_beta = beta * KL(P || M) + (1 - beta) * KL(Q || M),  M = beta * P + (1 - beta) * Q
    with P the student and Q the tutor, each extended by its tail bucket 1 - sum_S p. This is
    the JSD of a coarse-grained pair, so it is <= the full-vocabulary JSD (data processing
    inequality) and equal to it when both tails are empty. beta = 0.5 is the paper's JSD, <= ln 2.
    The tutor is detached; gradients flow into student_logp at the support and via the tail.
    """
    student_logp, tutor_logp = _upcast(student_logp), _upcast(tutor_logp)   # bf16 in: fp32 math
    p = _with_tail(student_logp, mask)                              # (..., M+1)
    q = _with_tail(tutor_logp.detach(), mask)                       # (..., M+1)
    if beta <= 0.0:
        return _kl(q, p)
    if beta >= 1.0:
        return _kl(p, q)
    m = _log_mixture(p, q, beta)
    return beta * _kl(p, m) + (1.0 - beta) * _kl(q, m)


def topk_forward_kl(student_logp, tutor_logp, mask):
    """KL(tutor || student) on support + tail, per position (mode covering). (..., M) -> (...)
    mask as for topk_jsd (required)."""
    tutor, student = _upcast(tutor_logp).detach(), _upcast(student_logp)
    return _kl(_with_tail(tutor, mask), _with_tail(student, mask))


def topk_reverse_kl(student_logp, tutor_logp, mask):
    """KL(student || tutor) on support + tail, per position (mode seeking). (..., M) -> (...)
    mask as for topk_jsd (required)."""
    tutor, student = _upcast(tutor_logp).detach(), _upcast(student_logp)
    return _kl(_with_tail(student, mask), _with_tail(tutor, mask))


DIVERGENCES = {"jsd": topk_jsd, "fkl": topk_forward_kl, "rkl": topk_reverse_kl}


UNSURE = 0.99   # the break-the-answer control breaks the tokens the frozen model gave less


def unanswer(logp, support_ids, response_ids, sampled_logp):
    """The break-the-answer control's target (--tutor_context unanswer): the frozen model's logp
    (N, R, M) on support_ids, with the sampled token (response_ids (N, R), its log-prob
    sampled_logp (N, R)) set to -30 and the rest renormalised (divided by 1 - p_sampled), at
    positions where p_sampled < UNSURE; unchanged elsewhere. (A sampled token outside the support
    keeps its mass in the tail: rare at K = 100.)"""
    unsure = (sampled_logp < torch.log(torch.tensor(UNSURE))).unsqueeze(-1)      # (N, R, 1)
    is_sampled = support_ids == response_ids.unsqueeze(-1)                        # (N, R, M)
    rest = logp - torch.log1p(-sampled_logp.exp().clamp(max=1 - 1e-6)).unsqueeze(-1)
    broken = torch.where(is_sampled, torch.full_like(logp, -30.0), rest)
    return torch.where(unsure, broken, logp)

# -----------------------------------------------------------------------------
# the whole objective


def ptdpo_loss(logp, old_logp, adv, mask, n_tok, ptd_group, distil, ref_logp=None, kl_coef=0.0,
               support_logp=None, tutor_logp=None, support_mask=None, n_div=0.0, ptd_coef=0.0,
               divergence="jsd", clip_low=0.2, clip_high=0.3, dual_clip=3.0):
    """The PTD-PO loss of a micro-batch: L = L_GRPO + kl_coef * L_KL * (1 - g) + ptd_coef * L_PTD.

    logp, old_logp, mask: (B, T) the policy's and the rollout policy's log-probs of the sampled
    tokens, response mask; adv: (B,) group advantages; ptd_group: (B,) bool, g: the row's group
    is a PTD group (accuracy < tau, with a hint); distil: (B,) bool, the rows the tutor teaches.
    ref_logp: (B, T) the frozen reference's log-probs, or None for no KL term.
    support_logp, tutor_logp, support_mask: (B, T, M) the policy's and the tutor's log-probs on
    the union support and its mask, or None for no distillation term.
    - L_GRPO: policy_loss, divided by n_tok;
    - L_KL: k3_kl summed over the tokens of rows OUTSIDE PTD groups, divided by n_tok: in a PTD
      group the tutor is the anchor, so the KL is switched off there;
    - L_PTD: DIVERGENCES[divergence](student, tutor) summed over the tokens of the distilled rows,
      divided by n_div, with no advantage (the paper's eq. for the gated Top-K JSD).
    n_tok, n_div: the response tokens, and those of distilled rows, of the whole global
    mini-batch (all micro-batches, all ranks): the sums of every micro-batch's loss are then
    exact token means. Returns (loss, parts): parts holds tensors (pg_loss, tokens, the clip
    fractions; kl, kl_tokens; div, div_tokens) for the log.
    """
    pg, met = policy_loss(logp, old_logp, adv, mask, n_tok, clip_low, clip_high, dual_clip)
    total, parts = pg, {"pg_loss": pg, "tokens": mask.sum(), **met}
    if ref_logp is not None:
        km = mask & ~ptd_group.unsqueeze(1)                               # (B, T)
        kl = (k3_kl(logp, ref_logp) * km).sum()
        total = total + kl_coef * kl / n_tok
        parts.update(kl=kl, kl_tokens=km.sum())
    if tutor_logp is not None and n_div > 0:
        dm = mask & distil.unsqueeze(1)                                   # (B, T)
        d = DIVERGENCES[divergence](support_logp, tutor_logp, support_mask & dm.unsqueeze(-1))
        div = (d * dm).sum()                                              # d: (B, T)
        total = total + ptd_coef * div / n_div
        parts.update(div=div, div_tokens=dm.sum())
    return total, parts

# -----------------------------------------------------------------------------
# the tutor's support


def union_support(student_ids, tutor_ids, pad_id=0):
    """Per position, the deduplicated union of two id sets, padded to a fixed width.

    student_ids: (..., K1), tutor_ids: (..., K2) long. Returns ids (..., K1 + K2) and mask
    (..., K1 + K2) bool; real ids first in ascending order, padding slots hold pad_id and
    mask False. Width K1 + K2 is the worst case (disjoint sets), so no id is ever dropped.
    """
    ids = torch.cat([student_ids, tutor_ids], dim=-1)
    ids, _ = ids.sort(dim=-1)
    dup = torch.zeros_like(ids, dtype=torch.bool)
    dup[..., 1:] = ids[..., 1:] == ids[..., :-1]
    # push duplicates to the end: sort by (is_dup, id)
    key = ids + dup.long() * (ids.max() + 1 if ids.numel() else 1)
    key, order = key.sort(dim=-1)
    mask = ~dup.gather(-1, order)
    ids = torch.where(mask, ids.gather(-1, order), torch.full_like(ids, pad_id))
    return ids, mask

# -----------------------------------------------------------------------------
# memory-lean log-probs from hidden states


def _upcast(x):
    """bf16/fp16 logits -> fp32 for the softmax; fp32 and fp64 stay as they are."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def _logits(h, weight, temperature):
    """logits = h @ W^T / temperature in fp32 (bf16 matmul, fp32 softmax). (n, D) -> (n, V)"""
    logits = _upcast(h @ weight.t())
    return logits / temperature if temperature != 1.0 else logits   # T = 1: no copy of (n, V)


def _head_chunk(h, weight, targets, support, temperature):
    """One chunk with grad: the sampled token's log-prob and the support's (recomputed in the
    backward pass)."""
    logits = _logits(h, weight, temperature)                        # (n, V)
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)             # (n, 1)
    tok = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse.squeeze(-1)
    sup = logits.gather(-1, support) - lse if support is not None else None
    return tok, sup


@torch.no_grad()
def _head_chunk_nograd(h, weight, targets, support, union_with, topk, temperature, entropy):
    """One chunk without grad: everything a no-grad pass needs from ONE vocabulary-sized matmul."""
    logits = _logits(h, weight, temperature)                        # (n, V)
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)             # (n, 1)
    out = {"logp": logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse.squeeze(-1)}
    if entropy:   # H = lse - sum p * logit, without materialising log p
        out["entropy"] = lse.squeeze(-1) - (torch.softmax(logits, -1) * logits).sum(-1)
    if topk:
        out["topk_ids"] = logits.topk(min(topk, logits.shape[-1]), dim=-1).indices   # (n, K)
        if union_with is not None:
            support, out["support_mask"] = union_support(union_with, out["topk_ids"])
            out["support_ids"] = support
    if support is not None:
        out["support_logp"] = logits.gather(-1, support) - lse
    return out


def head_logprobs(hidden, weight, targets, support=None, union_with=None, topk=0, temperature=1.0,
                  chunk_size=256, entropy=False):
    """Log-probs of the sampled tokens (and on a support), entropy and top-K ids, chunked.

    hidden: (N, D) final hidden states at the positions that predict `targets`; weight: (V, D)
    the lm_head weight; targets: (N,) long.
    support: (N, M) ids to score, or None. union_with: (N, K1) ids (the student's top-K): the
    support becomes union_with united with this model's own top-`topk` ids, per position
    (the tutor's side of Top-K JSD), built chunk by chunk so no (N, V) tensor is ever held.
    Returns dict: logp (N,); support_logp (N, M) or None; support_ids, support_mask (N, M) when
    union_with is given; entropy (N,) when asked and topk_ids (N, topk) when topk > 0.
    Cost: without grad, one (chunk x V) matmul per chunk serves every output. With grad (the
    update), only logp and support_logp, and each chunk's logits are recomputed in the backward
    pass (activation checkpointing): peak memory O(chunk_size * V), values and gradients equal
    to full logits. Entropy and top-K are no-grad quantities: ask for them in no-grad passes.
    """
    need_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    if need_grad and (entropy or topk or union_with is not None):
        raise ValueError("head_logprobs: entropy / topk / union_with belong to no-grad passes")
    outs = {}
    for s in range(0, hidden.shape[0], chunk_size):
        h, t = hidden[s:s + chunk_size], targets[s:s + chunk_size]
        sup = support[s:s + chunk_size] if support is not None else None
        if need_grad:
            tok, sp = checkpoint(_head_chunk, h, weight, t, sup, temperature, use_reentrant=False)
            part = {"logp": tok, "support_logp": sp}
        else:
            uw = union_with[s:s + chunk_size] if union_with is not None else None
            part = _head_chunk_nograd(h, weight, t, sup, uw, topk, temperature, entropy)
        for k, v in part.items():
            if v is not None:
                outs.setdefault(k, []).append(v)
    keys = ("logp", "support_logp", "support_ids", "support_mask", "entropy", "topk_ids")
    res = dict.fromkeys(keys)
    res.update({k: torch.cat(v) for k, v in outs.items()})
    if res["logp"] is None:
        res["logp"] = hidden.new_zeros(0)
    return res


def full_logprobs(hidden, weight, targets, temperature=1.0):
    """The plain reference for head_logprobs: full (N, V) log-softmax. (N, D) -> (N, V), (N,)"""
    lp = F.log_softmax(_upcast(hidden @ weight.t()) / temperature, dim=-1)
    return lp, lp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
