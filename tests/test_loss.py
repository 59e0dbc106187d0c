"""loss.py against brute-force full-vocabulary references and hand-computed cases."""
import math

import pytest
import torch

import loss



@pytest.fixture(autouse=True)
def float64():
    """Exactness claims are checked in float64; restored afterwards for the other test files."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def brute_jsd(s_logits, t_logits, beta=0.5):
    """The direct formula on the full vocabulary, differentiated by autograd."""
    p, q = s_logits.softmax(-1), t_logits.softmax(-1).detach()
    m = beta * p + (1 - beta) * q
    kl = lambda a, b: (a * (a.log() - b.log())).sum(-1)
    return beta * kl(p, m) + (1 - beta) * kl(q, m)


def support_of(s_logits, t_logits, k):
    ids, mask = loss.union_support(s_logits.topk(k, -1).indices, t_logits.topk(k, -1).indices)
    return ids, mask


def test_topk_jsd_equals_full_jsd_on_full_support_value_and_gradient():
    g = torch.Generator().manual_seed(0)
    V = 50
    s = (torch.randn(4, 7, V, generator=g) * 4).requires_grad_()
    t = torch.randn(4, 7, V, generator=g) * 4
    s.data[..., 0] -= 40.0  # some tiny probabilities (~1e-18)
    ref = brute_jsd(s, t)
    (g_ref,) = torch.autograd.grad(ref.sum(), s)
    ids = torch.arange(V).expand(4, 7, V)
    ours = loss.topk_jsd(s.log_softmax(-1).gather(-1, ids), t.log_softmax(-1).gather(-1, ids), None)
    (g_ours,) = torch.autograd.grad(ours.sum(), s)
    assert torch.allclose(ours, ref, atol=1e-10, rtol=0)
    assert torch.allclose(g_ours, g_ref, atol=1e-10, rtol=0)
    assert g_ref.abs().max() > 1e-3  # the comparison is not between two zeros


@pytest.mark.parametrize("beta", [0.2, 0.5, 0.8])
def test_topk_jsd_never_exceeds_full_jsd(beta):
    g = torch.Generator().manual_seed(1)
    for scale in (0.5, 2.0, 6.0):
        s = torch.randn(200, 300, generator=g) * scale
        t = torch.randn(200, 300, generator=g) * scale
        ids, mask = support_of(s, t, 5)
        ours = loss.topk_jsd(s.log_softmax(-1).gather(-1, ids), t.log_softmax(-1).gather(-1, ids), mask, beta)
        full = brute_jsd(s, t, beta)
        assert (ours <= full + 1e-12).all()
        assert (ours >= -1e-12).all()
        assert (ours > 0).any()


def test_topk_jsd_zero_symmetric_bounded():
    g = torch.Generator().manual_seed(2)
    s = torch.randn(100, 64, generator=g) * 5
    t = torch.randn(100, 64, generator=g) * 5
    ids, mask = support_of(s, t, 4)
    ps, pt = s.log_softmax(-1).gather(-1, ids), t.log_softmax(-1).gather(-1, ids)
    assert loss.topk_jsd(ps, ps, mask).abs().max() < 1e-12
    assert torch.allclose(loss.topk_jsd(ps, pt, mask), loss.topk_jsd(pt, ps, mask), atol=1e-12)
    # disjoint point masses reach ln 2 and never go past it
    far = torch.full((1, 2), -1000.0)
    far[0, 0] = 0.0
    near = far.flip(-1)
    jsd = loss.topk_jsd(far.log_softmax(-1), near.log_softmax(-1), None)
    assert abs(jsd.item() - math.log(2)) < 1e-9
    assert (loss.topk_jsd(ps, pt, mask) <= math.log(2) + 1e-12).all()


def test_student_gradient_is_nonzero_and_descends():
    g = torch.Generator().manual_seed(3)
    s = (torch.randn(8, 100, generator=g) * 3).requires_grad_()
    t = torch.randn(8, 100, generator=g) * 3
    ids, mask = support_of(s.detach(), t, 10)
    def jsd(logits):
        return loss.topk_jsd(logits.log_softmax(-1).gather(-1, ids), t.log_softmax(-1).gather(-1, ids), mask).sum()
    before = jsd(s)
    (grad,) = torch.autograd.grad(before, s)
    assert grad.abs().max() > 1e-3
    after = jsd(s.detach() - 0.1 * grad)
    assert after < before - 1e-4


def release_jsd(s_logits, t_logits, ids):
    """The paper's public code (github.com/XszNeverSleep/PTD-PO, verl/trainer/core_algos.py at
    397ea11, compute_topk_kl, kl_direction "jsd_kl"), restated: the student's top-K support plus a tail,
    the tutor detached, and the student's weights p detached inside KL(student || M). (There a
    tutor id outside the tutor's stored top-K gets a guessed share; here it gets its exact value,
    which changes nothing below.)"""
    lp_s = s_logits.log_softmax(-1).gather(-1, ids)
    lp_t = t_logits.log_softmax(-1).gather(-1, ids).detach()
    p_s, p_t = lp_s.exp(), lp_t.exp()
    tail_s, tail_t = (1 - p_s.sum(-1)).clamp(min=1e-8), (1 - p_t.sum(-1)).clamp(min=1e-8)
    log_m, log_m_tail = (0.5 * (p_s + p_t)).log(), (0.5 * (tail_s + tail_t)).log()
    kl_s = (p_s.detach() * (lp_s - log_m)).sum(-1) + tail_s.detach() * (tail_s.log() - log_m_tail)
    kl_t = (p_t * (lp_t - log_m)).sum(-1) + tail_t * (tail_t.log() - log_m_tail)
    return 0.5 * (kl_s + kl_t)


def test_the_release_stop_gradient_leaves_the_student_no_gradient():
    """Same value as topk_jsd on the same support, but d/dp of p.detach() * (log p - log m) plus
    q * (-log m) is 1 - (p + q) / (2m) = 0: the distillation term moves nothing."""
    g = torch.Generator().manual_seed(9)
    s = (torch.randn(8, 100, generator=g) * 3).requires_grad_()
    t = torch.randn(8, 100, generator=g) * 3
    ids = s.detach().topk(10, -1).indices
    theirs = release_jsd(s, t, ids)
    ours = loss.topk_jsd(s.log_softmax(-1).gather(-1, ids), t.log_softmax(-1).gather(-1, ids), None)
    assert torch.allclose(theirs, ours, atol=1e-10)               # the value is the JSD ...
    (g_theirs,) = torch.autograd.grad(theirs.sum(), s)
    (g_ours,) = torch.autograd.grad(ours.sum(), s)
    full = brute_jsd(s, t)
    assert g_theirs.abs().max() < 1e-12                            # ... its gradient is zero
    assert g_ours.abs().max() > 1e-2 and (g_ours * torch.autograd.grad(full.sum(), s)[0]).sum() > 0


def test_the_mask_is_required_and_a_padded_support_without_it_is_wrong():
    g = torch.Generator().manual_seed(10)
    s, t = torch.randn(4, 50, generator=g) * 3, torch.randn(4, 50, generator=g) * 3
    ids, mask = support_of(s, t, 5)                                 # padding slots hold id 0
    ps, pt = s.log_softmax(-1).gather(-1, ids), t.log_softmax(-1).gather(-1, ids)
    for fn in loss.DIVERGENCES.values():
        with pytest.raises(TypeError):
            fn(ps, pt)
    assert not torch.allclose(loss.topk_jsd(ps, pt, None), loss.topk_jsd(ps, pt, mask))


def test_padding_slots_change_nothing_and_extreme_inputs_stay_finite():
    g = torch.Generator().manual_seed(4)
    s = torch.randn(6, 40, generator=g).log_softmax(-1)
    t = torch.randn(6, 40, generator=g).log_softmax(-1)
    ids = torch.stack([torch.randperm(40, generator=g)[:5] for _ in range(6)])
    base = loss.topk_jsd(s.gather(-1, ids), t.gather(-1, ids), None)
    # append 3 padding slots holding garbage
    pad_ids = torch.cat([ids, ids[:, :3]], -1)
    mask = torch.cat([torch.ones(6, 5, dtype=torch.bool), torch.zeros(6, 3, dtype=torch.bool)], -1)
    for fn in loss.DIVERGENCES.values():
        padded = fn(s.gather(-1, pad_ids), t.gather(-1, pad_ids), mask)
        assert torch.allclose(padded, fn(s.gather(-1, ids), t.gather(-1, ids), None), atol=1e-12)
    assert torch.allclose(loss.topk_jsd(s.gather(-1, pad_ids), t.gather(-1, pad_ids), mask), base, atol=1e-12)
    # -inf log-probs, an empty support, tail mass ~0 and ~1, in float32 too
    for dtype in (torch.float64, torch.float32):
        x = torch.tensor([[0.0, float("-inf"), -80.0],       # all mass on the support
                          [-50.0, -60.0, float("-inf")],      # tail ~1
                          [float("-inf")] * 3,                # nothing on the support
                          [-0.7, -0.7, float("-inf")],
                          [-1e-8, -40.0, float("-inf")]], dtype=dtype).requires_grad_()  # tail ~1e-8
        y = torch.tensor([[-1e-30, float("-inf"), float("-inf")],
                          [float("-inf")] * 3,
                          [-0.1, -3.0, -4.0],
                          [-0.7, -0.7, float("-inf")],
                          [-0.5, -1.5, -3.0]], dtype=dtype)
        m = torch.tensor([[True, True, True]] * 3 + [[True, True, False]] + [[True, True, True]])
        for name, fn in loss.DIVERGENCES.items():
            for mm in (None, m, torch.zeros_like(m)):
                out = fn(x, y, mm)
                (gx,) = torch.autograd.grad(out.sum(), x)
                assert not torch.isnan(out).any() and not torch.isnan(gx).any()
                if name == "jsd":  # a KL is truly infinite when the student has 0 where the tutor has mass
                    assert torch.isfinite(out).all() and torch.isfinite(gx).all()


def test_forward_and_reverse_kl_match_brute_force_on_full_support():
    g = torch.Generator().manual_seed(5)
    s = torch.randn(5, 30, generator=g).log_softmax(-1)
    t = torch.randn(5, 30, generator=g).log_softmax(-1)
    fkl = (t.exp() * (t - s)).sum(-1)
    rkl = (s.exp() * (s - t)).sum(-1)
    assert torch.allclose(loss.topk_forward_kl(s, t, None), fkl, atol=1e-10)
    assert torch.allclose(loss.topk_reverse_kl(s, t, None), rkl, atol=1e-10)


def test_union_support_holds_both_sets_without_duplicates():
    g = torch.Generator().manual_seed(6)
    a = torch.stack([torch.randperm(20, generator=g)[:6] for _ in range(50)])
    b = torch.stack([torch.randperm(20, generator=g)[:6] for _ in range(50)])
    ids, mask = loss.union_support(a, b, pad_id=0)
    assert ids.shape == (50, 12)
    for i in range(50):
        want = set(a[i].tolist()) | set(b[i].tolist())
        got = ids[i][mask[i]].tolist()
        assert sorted(got) == sorted(want) and len(got) == len(set(got))
        assert mask[i].sum() == len(want)
        assert mask[i][:len(want)].all() and not mask[i][len(want):].any()
        assert (ids[i][~mask[i]] == 0).all()


def test_head_logprobs_chunked_equals_full_logits_values_and_gradients():
    g = torch.Generator().manual_seed(7)
    N, D, V = 37, 16, 300
    h = torch.randn(N, D, generator=g, requires_grad=True)
    w = torch.randn(V, D, generator=g, requires_grad=True)
    tgt = torch.randint(0, V, (N,), generator=g)
    sup = torch.randint(0, V, (N, 9), generator=g)
    lp, tok = loss.full_logprobs(h, w, tgt, temperature=0.7)
    with torch.no_grad():   # a no-grad pass: entropy, top-K and the union support from one matmul
        ng = loss.head_logprobs(h, w, tgt, sup, topk=5, temperature=0.7, chunk_size=8, entropy=True)
        un = loss.head_logprobs(h, w, tgt, union_with=sup, topk=5, temperature=0.7, chunk_size=8)
    assert torch.allclose(ng["logp"], tok, atol=1e-12)
    assert torch.allclose(ng["support_logp"], lp.gather(-1, sup), atol=1e-12)
    assert torch.allclose(ng["entropy"], -(lp.exp() * lp).sum(-1), atol=1e-10)
    assert torch.equal(ng["topk_ids"], lp.topk(5, -1).indices)
    want_ids, want_mask = loss.union_support(sup, lp.topk(5, -1).indices)
    assert torch.equal(un["support_ids"], want_ids) and torch.equal(un["support_mask"], want_mask)
    assert torch.allclose(un["support_logp"], lp.gather(-1, want_ids), atol=1e-12)
    out = loss.head_logprobs(h, w, tgt, sup, temperature=0.7, chunk_size=8)
    assert out["entropy"] is None and out["topk_ids"] is None
    assert torch.allclose(out["logp"], tok, atol=1e-12)
    c = torch.randn(N, generator=g), torch.randn(N, 9, generator=g)
    ga = torch.autograd.grad((out["logp"] * c[0]).sum() + (out["support_logp"] * c[1]).sum(), (h, w))
    gb = torch.autograd.grad((tok * c[0]).sum() + (lp.gather(-1, sup) * c[1]).sum(), (h, w))
    for x, y in zip(ga, gb):
        assert torch.allclose(x, y, atol=1e-10)
    with pytest.raises(ValueError, match="no-grad"):
        loss.head_logprobs(h, w, tgt, topk=5)


def test_head_logprobs_one_vocabulary_matmul_per_chunk():
    """No-grad passes: one (chunk x V) matmul per chunk whatever they return. With grad: the
    forward plus one recompute in backward (activation checkpointing), nothing else."""
    from torch.utils.flop_counter import FlopCounterMode
    g = torch.Generator().manual_seed(0)
    N, D, V, chunk = 32, 8, 500, 8
    h = torch.randn(N, D, generator=g, requires_grad=True)
    w = torch.randn(V, D, generator=g, requires_grad=True)
    tgt = torch.randint(0, V, (N,), generator=g)
    one = 2 * N * D * V                     # flops of all chunks' logits once
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        loss.head_logprobs(h, w, tgt, union_with=torch.randint(0, V, (N, 4), generator=g), topk=4,
                           chunk_size=chunk, entropy=True)
    assert fc.get_total_flops() == one
    with FlopCounterMode(display=False) as fc:
        loss.head_logprobs(h, w, tgt, chunk_size=chunk)["logp"].sum().backward()
    assert fc.get_total_flops() == 4 * one   # forward, recompute, grad wrt h, grad wrt W


def test_divergences_upcast_bf16_inputs():
    g = torch.Generator().manual_seed(3)
    s = torch.log_softmax(torch.randn(64, 50, generator=g) * 3, -1)[:, :20]
    t = torch.log_softmax(torch.randn(64, 50, generator=g) * 3, -1)[:, :20]
    for div in loss.DIVERGENCES.values():
        ref = div(s.double(), t.double(), None)
        got = div(s.bfloat16(), t.bfloat16(), None)
        assert got.dtype == torch.float32
        # only the inputs' own bf16 rounding remains (~0.4% per log-prob), not bf16 arithmetic
        assert ((got.double() - ref).abs() / ref.abs().clamp(min=1e-3)).max() < 0.05


def test_group_advantages_by_hand():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    a = loss.group_advantages(r, 4)
    std = math.sqrt(0.25)  # unbiased std of [1,0,0,0] = sqrt(0.75*0.25*4/3) = 0.5
    assert torch.allclose(a[:4], torch.tensor([0.75, -0.25, -0.25, -0.25]) / (std + 1e-6))
    assert torch.equal(a[4:], torch.zeros(4))  # constant group: exactly zero
    assert torch.allclose(loss.group_advantages(r, 4, scale_by_std=False)[:4],
                          torch.tensor([0.75, -0.25, -0.25, -0.25]))
    assert not torch.isnan(loss.group_advantages(torch.full((6,), 0.3), 3)).any()
    with pytest.raises(ValueError, match="group_size"):
        loss.group_advantages(torch.ones(4), 1)
    with pytest.raises(ValueError, match="multiple"):
        loss.group_advantages(torch.ones(5), 2)


def test_policy_loss_clip_branches_by_hand():
    def one(ratio, adv):
        logp = torch.tensor([[math.log(ratio)]], requires_grad=True)
        out, m = loss.policy_loss(logp, torch.zeros(1, 1), torch.tensor([adv]), torch.ones(1, 1), 1.0)
        (g,) = torch.autograd.grad(out, logp)
        return out.item(), g.item(), m
    # inside the clip range: -ratio * A, gradient -ratio * A
    v, g, _ = one(1.1, 2.0); assert v == pytest.approx(-2.2) and g == pytest.approx(-2.2)
    # positive advantage above 1 + clip_high (1.3): clipped, no gradient
    v, g, m = one(1.5, 2.0); assert v == pytest.approx(-2.6) and g == 0.0 and m["clip_frac_high"] == 1
    # positive advantage above 1 + clip_low but below 1 + clip_high: not clipped (clip higher)
    v, g, _ = one(1.25, 1.0); assert v == pytest.approx(-1.25) and g != 0.0
    # negative advantage below 1 - clip_low: clipped at 0.8
    v, g, m = one(0.5, -1.0); assert v == pytest.approx(0.8) and g == 0.0 and m["clip_frac_low"] == 1
    # negative advantage, huge ratio: dual clip caps the loss at 3 * |A|
    v, g, m = one(10.0, -1.0); assert v == pytest.approx(3.0) and g == 0.0 and m["clip_frac_dual"] == 1
    # negative advantage, ratio 2: -A * ratio = 2 < 3, gradient flows
    v, g, _ = one(2.0, -1.0); assert v == pytest.approx(2.0) and g == pytest.approx(2.0)


def test_policy_loss_micro_batches_with_global_normaliser_equal_one_pass():
    g = torch.Generator().manual_seed(8)
    logp = (torch.randn(6, 10, generator=g) * 0.2).requires_grad_()
    old = torch.randn(6, 10, generator=g) * 0.2
    adv = torch.randn(6, generator=g)
    mask = torch.rand(6, 10, generator=g) > 0.3
    n = mask.sum()
    whole, _ = loss.policy_loss(logp, old, adv, mask, n)
    (g_whole,) = torch.autograd.grad(whole, logp)
    parts = sum(loss.policy_loss(logp[s], old[s], adv[s], mask[s], n)[0] for s in (slice(0, 2), slice(2, 6)))
    (g_parts,) = torch.autograd.grad(parts, logp)
    assert torch.allclose(whole, parts, atol=1e-12) and torch.allclose(g_whole, g_parts, atol=1e-12)
    token_mean = loss.policy_loss(logp, old, adv, mask, 1.0)[0] / n
    assert torch.allclose(whole, token_mean)


def test_k3_kl_by_hand():
    lp = torch.tensor([0.0, -1.0, -2.0])
    ref = torch.tensor([0.0, -2.0, -1.0])
    d = ref - lp
    assert torch.allclose(loss.k3_kl(lp, ref), d.exp() - d - 1)
    assert loss.k3_kl(lp, ref)[0] == 0 and (loss.k3_kl(lp, ref) >= 0).all()
    assert torch.isfinite(loss.k3_kl(torch.tensor([0.0]), torch.tensor([-1e9]))).all()


def verl_low_var_kl(logp, ref_logp):
    """verl's kl_penalty(..., "low_var_kl") (verl/trainer/ppo/core_algos.py), written out."""
    kl = (ref_logp - logp).clamp(min=-20, max=20)
    return (torch.exp(kl) - kl - 1).clamp(min=-10, max=10)


def test_k3_kl_equals_verls_low_var_kl_everywhere_including_its_clamps():
    g = torch.Generator().manual_seed(7)
    lp = torch.randn(4000, generator=g) * 12          # log ratios far past +-10 and +-20
    ref = torch.randn(4000, generator=g) * 12
    assert ((ref - lp).abs() > 20).any() and ((ref - lp) < -10).any()
    assert torch.equal(loss.k3_kl(lp, ref), verl_low_var_kl(lp, ref))
    lp.requires_grad_()
    (ours,) = torch.autograd.grad(loss.k3_kl(lp, ref).sum(), lp)
    (verl,) = torch.autograd.grad(verl_low_var_kl(lp, ref).sum(), lp)
    assert torch.equal(ours, verl)


def test_ptdpo_loss_by_hand_on_two_rows_of_three_tokens():
    """Row 0: a PTD group's failed rollout, distilled, 2 response tokens; row 1: outside PTD
    groups, 3 tokens. The policy has not moved (ratio 1), so the clipped surrogate is -A per token;
    the KL counts row 1 only, the divergence row 0 only; each term is a global token mean."""
    ln2 = math.log(2.0)
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, -1.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    adv = torch.tensor([-1.0, 1.0])
    ptd_group, distil = torch.tensor([True, False]), torch.tensor([True, False])
    # ref - logp: row 1 gives k3 = 0, 1 - ln 2, ln 2 - 1/2 (sum 1/2); row 0's 5 and 7 must not count
    ref = torch.tensor([[4.0, 5.0, 0.0], [-1.0, -1.0 + ln2, -1.0 - ln2]])
    # support: one real id (student 1/2, tutor 3/4; the tails 1/2 and 1/4) and one padding slot
    student = torch.tensor([math.log(0.5), -9.0]).expand(2, 3, 2).clone()
    tutor = torch.tensor([math.log(0.75), -1.0]).expand(2, 3, 2).clone()
    smask = torch.tensor([True, False]).expand(2, 3, 2).clone()
    total, parts = loss.ptdpo_loss(logp, logp.detach(), adv, mask, 5.0, ptd_group, distil, ref_logp=ref,
                                   kl_coef=0.1, support_logp=student, tutor_logp=tutor, support_mask=smask,
                                   n_div=2.0, ptd_coef=2.0)
    kl = lambda a, b: sum(x * math.log(x / y) for x, y in zip(a, b))
    p, q = (0.5, 0.5), (0.75, 0.25)
    m = tuple((x + y) / 2 for x, y in zip(p, q))
    jsd = 0.5 * kl(p, m) + 0.5 * kl(q, m)
    pg = (2 * 1.0 + 3 * -1.0) / 5                                    # -A per token, token mean
    assert abs(parts["pg_loss"].item() - pg) < 1e-12
    assert abs(parts["kl"].item() - 0.5) < 1e-12 and parts["kl_tokens"].item() == 3
    assert abs(parts["div"].item() - 2 * jsd) < 1e-12 and parts["div_tokens"].item() == 2
    assert abs(total.item() - (pg + 0.1 * 0.5 / 5 + 2.0 * 2 * jsd / 2)) < 1e-12
    # grpo (no reference, no tutor) is the clipped surrogate alone
    alone, parts = loss.ptdpo_loss(logp, logp.detach(), adv, mask, 5.0, ptd_group, distil)
    assert abs(alone.item() - pg) < 1e-12 and set(parts) >= {"pg_loss", "tokens"} and "kl" not in parts
