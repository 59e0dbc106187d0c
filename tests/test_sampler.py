"""sampler.py: the exact nucleus sampler against brute force, its per-row random streams, and
the sync-free draw (decode.py's) against the host one (rollout.py's)."""
import pytest
import torch

import sampler


def nucleus(probs, top_p):
    """The exact top-p distribution by brute force (sorted, ties kept together)."""
    keep = torch.tensor([probs[probs > p].sum() < top_p for p in probs])
    q = probs * keep
    return q / q.sum()


@pytest.mark.parametrize("top_p,tries", [(1.0, 8), (0.8, 8), (0.3, 1)])
def test_sampled_frequencies_match_the_exact_top_p_distribution(top_p, tries):
    """50,000 rows with their own keys, the same logits: the empirical distribution is within
    sampling noise of the exact nucleus (tries=1 forces the sorted fallback path often)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(12, generator=g) * 1.5
    logits[3] = logits[7]                                             # a tie, kept or dropped together
    n = 50_000
    keys = torch.arange(n, dtype=torch.long) * 7_919 + 5
    got = sampler.sample_rows(logits.expand(n, -1).contiguous(), keys, step=4, top_p=top_p, tries=tries)
    freq = torch.bincount(got, minlength=12).double() / n
    want = nucleus(torch.softmax(logits.double(), -1), top_p)
    assert (freq[want == 0] == 0).all()
    tv = 0.5 * (freq - want).abs().sum().item()
    assert tv < 0.01, (tv, freq, want)
    chi2 = (n * (freq - want) ** 2 / want.clamp(min=1e-12))[want > 0].sum().item()
    assert chi2 < 40                                                 # df <= 11: p ~ 4e-5


def test_the_sampler_survives_non_finite_logits():
    """A diverged model must reach train.py's divergence stop, not crash the sampler."""
    logits = torch.randn(4, 50)
    logits[0, 3] = float("nan")
    logits[1] = float("nan")
    logits[:, :5] = float("-inf")                     # suppressed tokens stay suppressed
    logits[2, 7] = float("inf")
    got = sampler.sample_rows(logits, torch.arange(4), step=0, top_p=0.9)
    assert ((got >= 5) & (got < 50)).all() and got[2] == 7


def test_row_keys_never_collide_and_uniforms_use_all_key_bits():
    keys = torch.cat([sampler.row_keys(seed, list(range(500)), 8) for seed in (0, 1, 1234, 2 ** 61 + 1234)])
    assert len(set(keys.tolist())) == len(keys)                      # 16,000 streams, all distinct
    a, b = torch.tensor([5, 123456]), torch.tensor([5 + 2 ** 40, 123456 + 2 ** 33])
    assert not torch.equal(sampler.uniforms(a, 7), sampler.uniforms(b, 7))


def test_uniforms_are_keyed_by_row_and_step_only():
    keys = torch.tensor([1, 2, 3, 2 ** 40 + 1])
    a, b = sampler.uniforms(keys, 5), sampler.uniforms(keys[[3, 1]], 5)
    assert torch.equal(a[[3, 1]], b) and ((a >= 0) & (a < 1)).all()
    assert not torch.equal(a, sampler.uniforms(keys, 6)) and len(set(a.tolist())) == 4
    u = sampler.uniforms(torch.arange(100_000), 0)
    assert abs(u.mean().item() - 0.5) < 0.005 and abs(u.var().item() - 1 / 12) < 0.002


@pytest.mark.parametrize("top_p", [1.0, 0.9, 0.5])
def test_sync_free_sampler_draws_what_sample_rows_draws(top_p):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 5000, generator=g) * 3                   # 5 blocks, the last one partial
    banned = torch.tensor([3, 17, 4999])
    keys = torch.arange(64) * 7919 + 11
    want_logits = logits.clone()
    want_logits[:, banned] = float("-inf")
    for step in (0, 9):
        want = sampler.sample_rows(want_logits / 0.8, keys, step, top_p)
        got, unlucky = sampler.choose(logits, keys, torch.tensor([step]), banned, 0.8, top_p)
        assert torch.equal(got, want) and not unlucky.any()
    # with one draw a row often stays without a token: reported, and the others are sample_rows' own
    got, unlucky = sampler.choose(logits, keys, torch.tensor([4]), banned, 1.0, 0.2, tries=1)
    want = sampler.sample_rows(want_logits, keys, 4, 0.2, tries=1)
    assert unlucky.any() and torch.equal(got[~unlucky], want[~unlucky])


def test_sync_free_sampler_survives_non_finite_logits():
    logits = torch.randn(4, 50)
    logits[0, 3], logits[1], logits[2, 7] = float("nan"), float("nan"), float("inf")
    got, _ = sampler.choose(logits, torch.arange(4), torch.tensor([0]), torch.arange(5), 1.0, 0.9)
    assert ((got >= 5) & (got < 50)).all() and got[2] == 7


def test_the_vectorised_draws_are_the_one_at_a_time_draws():
    """choose() makes all its draws at once; a loop over attempts with a per-row nucleus check (the
    sampler before vectorising) must pick the same tokens and report the same rows."""
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(48, 3000, generator=g) * 4
    keys = torch.arange(48) * 104729 + 5
    for top_p, tries in ((0.9, 8), (0.5, 8), (0.2, 2), (0.99, 1)):
        e, bsum, bcdf, Z = cdf = sampler.block_cdf(logits, logits.amax(-1, keepdim=True), 1024)
        want, todo = torch.zeros_like(keys), torch.ones_like(keys, dtype=torch.bool)
        for attempt in range(tries):
            tok = sampler.draw(e, bsum, bcdf, Z, keys, torch.tensor([7]), attempt, 1024)[0][:, 0]
            ok = torch.tensor([bool(sampler.mass_above_row(e[r], tok[r]).double() / Z[r, 0] < top_p)
                               for r in range(len(keys))])
            want = torch.where(todo & ok, tok, want)
            todo &= ~ok
        got, unlucky = sampler.accept(cdf, keys, torch.tensor([7]), top_p, tries, 1024, sync=False)
        assert torch.equal(got, want) and torch.equal(unlucky, todo), top_p
