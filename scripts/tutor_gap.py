"""Where the tutor disagrees with the student on the student's own failed responses (demo task).

For failed rollouts of the shipped demo model on held-out problems, the per-token Top-K JSD
between the student (no hint) and the tutor, averaged over three kinds of token: the shape name
in <think>, the answer colour, and everything else; for the hinted tutor and for the
answer-conditioned one, over all failed rollouts and per bucket (easy / hard; the count of failed
rollouts in brackets).   python scripts/tutor_gap.py [--n 64] > results/tutor_gap.txt"""
import argparse
import itertools
import os
import re
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data  # noqa: E402
import loss  # noqa: E402
import reward  # noqa: E402
import rollout  # noqa: E402
import toy  # noqa: E402
import tutor  # noqa: E402


def token_kinds(tok, ids, mask):
    """(N, R): 1 for a token inside a shape word, 2 inside a colour word, 0 otherwise. Words are
    found in the decoded text, so a word the tokenizer splits counts in each of its pieces."""
    shapes = set(toy.SHAPES)
    word = re.compile(r"[a-z]+")
    kind = torch.zeros_like(ids)
    for r in range(len(ids)):
        pieces = [tok.decode([int(i)]) for i in ids[r][mask[r]]]
        ends = list(itertools.accumulate(len(p) for p in pieces))
        for m in word.finditer("".join(pieces)):
            k = 1 if m.group() in shapes else 2 if m.group() in toy.COLOURS else 0
            for t, end in enumerate(ends):
                if k and end > m.start() and end - len(pieces[t]) < m.end():
                    kind[r, t] = k
    return kind


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=64, help="held-out problems")
    p.add_argument("--group_size", type=int, default=4, help="rollouts per problem")
    a = p.parse_args()
    model_dir, _, eval_path = toy.ensure()
    model, proc = rollout.load_model(model_dir, "float32", "cpu")
    exs = data.load_jsonl(eval_path, report=lambda s: None)[:a.n]
    tok = proc.tokenizer
    prompts = [rollout.encode(proc, e["question"], rollout.open_images(e)) for e in exs]
    ids, mask = rollout.sample(model, proc, prompts, a.group_size, 32, 1.0, seed=0)
    rows = torch.arange(len(exs)).repeat_interleave(a.group_size)
    texts = rollout.decode(proc, ids, mask)
    failed = torch.tensor([reward.reward(t, exs[i]) == 0 for t, i in zip(texts, rows.tolist())]).nonzero().squeeze(-1)
    rp = [prompts[i] for i in rows[failed].tolist()]
    f_ids, f_mask = ids[failed], mask[failed]
    top = rollout.score(model, rp, f_ids, f_mask, topk=100)["topk_ids"]
    kind = token_kinds(tok, f_ids, f_mask)
    print(f"{len(failed)} failed rollouts of {len(ids)} ({a.n} problems x {a.group_size})")
    bucket = [exs[i].get("category") or "all" for i in rows[failed].tolist()]
    print(f"{'tutor':8s} {'bucket':12s} {'shape tokens':>17s} {'colour token':>13s} {'other tokens':>13s}")
    for context in ("hint", "answer"):
        every = torch.ones(len(failed), dtype=torch.bool)
        t = tutor.teach(model, proc, exs, rows[failed], f_ids, f_mask, every, top, topk=100, context=context)
        st = rollout.score(model, rp, f_ids, f_mask, support=t["support_ids"])
        j = loss.topk_jsd(st["support_logp"], t["tutor_logp"], t["support_mask"])
        for b in ["all"] + sorted(set(bucket) - {"all"}):
            sel = torch.tensor([b in ("all", x) for x in bucket]).unsqueeze(1) & f_mask
            cols = [j[(kind == k) & sel].mean().item() for k in (1, 2, 0)]
            name = f"{b} ({int(sel.any(1).sum())})"
            print(f"{context:8s} {name:12s} {cols[0]:17.3f} {cols[1]:13.3f} {cols[2]:13.3f}")


if __name__ == "__main__":
    main()
