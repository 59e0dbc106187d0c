"""
sampler.py: exact nucleus sampling with a random stream per row, shared by rollout.py and decode.py.

    keys = row_keys(seed, prompt_ids, G)          # a 62-bit key per (seed, prompt, response)
    tok = sample_rows(logits, keys, step, top_p)  # one token per row (host path: HF generate())
    tok, unlucky = choose(logits, keys, step, banned, T, top_p)   # the same draws, no host sync
                                                                  # (decode.py's captured steps)

Why not torch.multinomial: a row's token must depend only on (its key, tokens so far), never on
its batch mates, the micro-batch cut or the rank, so that a data-parallel run samples exactly what
one process would. Why not a sort: at V = 152k a sort per row per step costs ~9x a greedy step
(scripts/bench.py rollout); inverse-CDF draws on block sums cost a few passes over (B, V).
Left out on purpose: top-k, min-p, repetition penalties (any of them would make the samples
differ from softmax(logits / T) restricted to the nucleus, i.e. off-policy).
"""
import torch
import torch.nn.functional as F

# A counter-based random stream: the uniform number of (row key, tokens generated so far,
# attempt) is a hash, so a row's draws depend on nothing else (not its batch mates, not the
# micro-batch cut, not the rank) and a whole batch gets its numbers in a few integer ops.
_M32 = 0xFFFFFFFF


def _hash32(x):
    """A 32-bit integer mix (int64 tensors holding values < 2**32; products stay < 2**63)."""
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M32
    return (x >> 16) ^ x


def _chain(words, salt):
    """Hash a sequence of 32-bit tensors / ints into one 32-bit tensor, starting from salt."""
    h = _hash32(torch.full_like(words[0], salt))
    for w in words:
        h = _hash32(h ^ (w & _M32))
    return h


def uniforms(keys, step, attempt=0):
    """(B,) float64 uniforms in [0, 1), 53 random bits each, from 64 bits of state: two
    independently salted hash chains over (key low, key high, step, attempt). step may be a
    (1,) tensor on the keys' device (decode.py's captured steps read it there); keys (B, 1) and
    attempt an (A,) tensor give every attempt's uniform at once, (B, A)."""
    steps = step.expand_as(keys) if torch.is_tensor(step) else torch.full_like(keys, step)
    tries = attempt if torch.is_tensor(attempt) else torch.full_like(keys, attempt)
    words = [keys & _M32, (keys >> 32) & _M32, steps, tries]
    hi, lo = _chain(words, 0x243F6A88), _chain(words, 0x13198A2E)
    return ((hi >> 5) * 67108864 + (lo >> 6)).double() / 2.0 ** 53


def row_keys(seed, prompt_ids, group_size):
    """A 62-bit key per (seed, prompt, response): a hash, so that no arithmetic coincidence
    between seeds, steps and prompt ids can make two rows share a random stream."""
    seed = torch.tensor(seed % 2 ** 62, dtype=torch.long)
    pid = torch.tensor(prompt_ids, dtype=torch.long).repeat_interleave(group_size)
    g = torch.arange(group_size, dtype=torch.long).repeat(len(prompt_ids))
    words = [seed & _M32, (seed >> 32) & _M32, pid & _M32, (pid >> 32) & _M32, g]
    words = [w.expand_as(pid) for w in words]
    return ((_chain(words, 0xA4093822) & 0x3FFFFFFF) << 32) | _chain(words, 0x299F31D0)




def sample_rows(logits, keys, step, top_p=1.0, tries=8, block=1024):
    """One token per row, exactly from softmax(logits) restricted to the top-p nucleus.

    logits: (B, V) fp32 (temperature applied, banned tokens -inf); keys: (B,) int64 row keys;
    step: tokens generated so far. The nucleus is the smallest set of most probable tokens
    whose mass reaches top_p: token v is in it iff the mass of tokens strictly more probable
    than v is < top_p. Draws and their acceptance: see accept(). Rows still unlucky after
    `tries` draws take the exact sorted path (1e-16 of rows at 0.99).
    "Exactly" means up to fp32 rounding: a block is chosen with its fp32 (pairwise) sum, ~1e-7
    relative to the block's mass, and a token within its block by fp64 running sums, so each
    token's probability is right to ~1e-7 of itself, as for the fp32 softmax score() computes."""
    top = logits.amax(-1, keepdim=True)
    if not torch.isfinite(top).all():   # a diverged model (NaN / inf logits): sample something
        logits = torch.nan_to_num(logits, nan=0.0, posinf=1e30)  # valid, so train.py's divergence
        top = logits.amax(-1, keepdim=True)                      # stop is what ends the run
    cdf = block_cdf(logits, top, block)
    choice, todo = accept(cdf, keys, step, top_p, tries, block, sync=True)
    e, _, _, Z = cdf
    for r in todo.nonzero().squeeze(-1).tolist():                   # the exact, sorted fallback
        ps = e[r].sort(descending=True).values
        above = ps.double().cumsum(0) - ps
        last = int((above / Z[r] < top_p).sum()) - 1                # last kept in sorted order
        keep = e[r] >= ps[max(last, 0)]                             # ties with it are kept too
        c = (e[r] * keep).double().cumsum(0)
        u = uniforms(keys[r:r + 1], step, tries) * c[-1]
        choice[r] = torch.searchsorted(c, u, right=True).clamp(max=len(c) - 1)[0]
    return choice


def choose(logits, keys, step, banned, temperature, top_p, tries=8, block=1024):
    """RowSampler + sample_rows with no host sync (decode.py compiles and captures it): the same
    draws, but every row makes all `tries` of them and gets the exact nucleus check. Returns
    tokens (R,) and the rows left without one (R,) bool (the caller re-runs those elsewhere)."""
    logits = logits.index_fill(1, banned, float("-inf"))
    if temperature <= 0:
        return logits.argmax(-1), torch.zeros_like(keys, dtype=torch.bool)
    if temperature != 1.0:
        logits = logits / temperature
    # NaN / +inf (a diverged model) become valid logits, as in sample_rows; finite rows untouched
    logits = torch.nan_to_num(logits, nan=0.0, posinf=1e30, neginf=float("-inf"))
    return accept(block_cdf(logits, logits.amax(-1, keepdim=True), block), keys, step, top_p,
                  tries, block, sync=False)


def accept(cdf, keys, step, top_p, tries, block, sync):
    """Draw from the full softmax and accept a draw if it is in the nucleus, else draw again with
    the next uniform: accepted draws follow the renormalised nucleus exactly. A token with
    p_v > 1 - top_p is in it without looking (the mass above it is < 1 - p_v); a rarer one needs
    one pass over its row to check. A draw is rejected with probability <= 1 - top_p.
    sync=True (the host path): only rows that drew a rare token pay the check, and the loop stops
    once every row has a token. sync=False: all `tries` draws of every row at once, each checked,
    the first accepted one kept, so the host never has to look (same tokens). Returns tokens (B,)
    and the rows without one (B,)."""
    e, bsum, bcdf, Z = cdf
    if not sync:
        attempts = torch.arange(tries if top_p < 1.0 else 1, device=e.device)
        tok, p = draw(e, bsum, bcdf, Z, keys, step, attempts, block)   # (B, A)
        if top_p >= 1.0:
            return tok[:, 0], torch.zeros_like(keys, dtype=torch.bool)
        ok = ((1.0 - p) < top_p) | (mass_above(e, tok).double() / Z < top_p)      # (B, A)
        first = ok.to(torch.uint8).argmax(-1, keepdim=True)         # the first accepted draw
        todo = ~ok.any(-1)
        return torch.where(todo, 0, tok.gather(-1, first).squeeze(-1)), todo
    choice, todo = torch.zeros_like(keys), torch.ones_like(keys, dtype=torch.bool)
    for attempt in range(tries if top_p < 1.0 else 1):
        tok, p = (x.squeeze(-1) for x in draw(e, bsum, bcdf, Z, keys, step, attempt, block))
        ok = (1.0 - p) < top_p if top_p < 1.0 else torch.ones_like(todo)   # surely in the nucleus
        for r in (todo & ~ok).nonzero().squeeze(-1).tolist():      # the rare rows: one pass each
            ok[r] = mass_above_row(e[r], tok[r]).double() / Z[r, 0] < top_p
        choice = torch.where(todo & ok, tok, choice)
        todo = todo & ~ok
        if not todo.any():
            break
    return choice, todo


def block_cdf(logits, top, block):
    """What every draw reads: e = exp(logits - top) (B, V), its fp32 block sums (B, nb), their
    fp64 running sums (B, nb) and the total Z (B, 1)."""
    B, V = logits.shape
    e = (logits - top).exp_()                                      # (B, V) unnormalised, max 1
    full = V - V % block
    bsum = e[:, :full].view(B, -1, block).sum(-1)                   # (B, nb) fp32, pairwise
    if full < V:
        bsum = torch.cat([bsum, e[:, full:].sum(-1, keepdim=True)], 1)
    bcdf = bsum.double().cumsum(-1)                                 # (B, nb)
    return e, bsum, bcdf, bcdf[:, -1:]


def draw(e, bsum, bcdf, Z, keys, step, attempt, block):
    """Draws per row from the full softmax by inverse CDF: the block from the block sums, then the
    token inside it. attempt: an int or an (A,) tensor of attempts. Returns the tokens (B, A) and
    their probabilities (B, A) fp64."""
    V = e.shape[1]
    u = uniforms(keys.unsqueeze(-1), step, attempt) * Z             # (B, A) in [0, Z)
    blk = torch.searchsorted(bcdf, u, right=True).clamp(max=bsum.shape[1] - 1)       # (B, A)
    before = torch.where(blk > 0, bcdf.gather(-1, (blk - 1).clamp(min=0)), torch.zeros_like(u))
    offs = torch.arange(block, device=e.device)
    idx = blk.unsqueeze(-1) * block + offs                          # (B, A, block)
    vals = e.gather(-1, idx.clamp(max=V - 1).flatten(1)).view(idx.shape)
    vals = torch.where(idx < V, vals, torch.zeros((), device=e.device))
    cum = vals.double().cumsum(-1)                                  # (B, A, block), exact in fp64
    # where u falls inside the block, rescaled from the fp32 block sum to the exact in-block
    # total: each token then gets its share of its block, to fp64 precision
    t = ((u - before) / bsum.gather(-1, blk).double()).unsqueeze(-1) * cum[..., -1:]
    j = torch.searchsorted(cum, t, right=True)                      # (B, A, 1)
    last = torch.where(vals > 0, offs, -1).amax(-1, keepdim=True)   # fp64 round-off guard
    tok = blk * block + torch.minimum(j, last).squeeze(-1)          # (B, A)
    return tok, e.gather(-1, tok).double() / Z


def mass_above(e, tok):
    """Unnormalised mass of the tokens strictly more probable than tok, per row and draw: tok (B, A)
    -> (B, A) fp32. One pass over the rows per draw: a single (B, A, V) comparison measured ~2x
    slower on a CPU (it writes its temporary out)."""
    t = e.gather(-1, tok)                                           # (B, A)
    return torch.stack([torch.where(e > t[:, a:a + 1], e, 0.0).sum(-1)
                        for a in range(tok.shape[1])], -1)


def mass_above_row(row, tok):
    """mass_above of one row (V,), the same sum: a threshold reads the row once where the where()
    above writes two (B, V) temporaries (~8x faster on a CPU at V = 152k). Its threshold is a host
    number, so only the host path (sync=True) can use it."""
    return F.threshold(row, float(row[tok]), 0.0).sum()


class RowSampler:
    """A logits processor that samples each row from its own random stream (see sample_rows).

    generate() runs with do_sample=False and this processor returns scores that leave only the
    chosen token. The counter is the number of tokens generated so far, never the padded input
    width, so left padding (which depends on the batch mates) cannot shift a row's stream."""

    def __init__(self, row_keys, temperature, top_p, banned, prompt_width):
        self.keys = torch.as_tensor(row_keys, dtype=torch.long)
        self.temperature, self.top_p = temperature, top_p
        self.banned, self.width = banned, prompt_width

    def __call__(self, input_ids, scores):
        scores = scores.float()
        scores[:, self.banned] = float("-inf")
        step = input_ids.shape[1] - self.width
        if self.temperature <= 0:
            choice = scores.argmax(-1)
        else:
            logits = scores / self.temperature if self.temperature != 1.0 else scores
            choice = sample_rows(logits, self.keys.to(scores.device), step, self.top_p)
        # in place: no copy
        return scores.fill_(float("-inf")).scatter_(-1, choice.unsqueeze(-1), 0.0)

