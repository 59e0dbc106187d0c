"""The README's snippet for using the Top-K JSD and the tutor in another loop runs as printed, and
computes what train.py computes (the tutor pass's support and log-probs, rollout.score's student side)."""
import os
import re

import pytest
import torch

import rollout
from demo import toy
from test_tutor import teach

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
pytestmark = pytest.mark.skipif(not os.path.exists(os.path.join(toy.DEFAULT_DIR, "model", "config.json")),
                                reason="the shipped demo checkpoint is missing")


def snippet():
    text = open(README, encoding="utf-8").read()
    section = text.split("### Using the Top-K JSD and the tutor in another training loop", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_snippet_runs_and_matches_the_training_loop():
    ns = {}
    exec(compile(snippet(), "README.md (snippet)", "exec"), ns)
    l_ptd, policy, frozen = ns["l_ptd"], ns["policy"], ns["frozen"]
    assert torch.isfinite(l_ptd) and l_ptd > 0
    assert all(p.grad is None for p in frozen.parameters())                 # the tutor is never trained
    assert sum(p.grad.abs().sum() for p in policy.parameters() if p.grad is not None) > 0
    # the same numbers through the project's own path: the tutor pass and rollout.score
    ids, mask, G, K, T = ns["ids"], ns["mask"], ns["G"], ns["K"], ns["T"]
    student_topk = torch.zeros(mask.shape + (K,), dtype=torch.long)
    student_topk[mask] = ns["old"]["topk_ids"]
    taught = teach(frozen, ns["processor"], [ns["ex"]], torch.zeros(G, dtype=torch.long), ids, mask,
                         torch.ones(G, dtype=torch.bool), student_topk, topk=K, temperature=T)
    teacher = ns["teacher"]
    assert torch.equal(taught["support_ids"][mask], teacher["support_ids"])
    assert torch.equal(taught["support_mask"][mask], teacher["support_mask"])
    assert torch.allclose(taught["tutor_logp"][mask], teacher["support_logp"], atol=1e-5)
    with torch.no_grad():
        scored = rollout.score(policy, [ns["student_prompt"]] * G, ids, mask, support=taught["support_ids"],
                               temperature=T)
    assert torch.allclose(scored["support_logp"][mask], ns["student"]["support_logp"].detach(), atol=1e-5)
