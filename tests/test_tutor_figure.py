"""scripts/tutor_figure.py: it renders one failed rollout of the demo model, and the per-token JSD it
draws is loss.topk_jsd on the student's and the tutor's log-probs, as train.py computes it."""
import os
import sys

import pytest
import torch

import data
import loss
import rollout
from demo import toy
from test_tutor import teach

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
import tutor_figure  # noqa: E402

shipped = pytest.mark.skipif(not os.path.exists(os.path.join(toy.DEFAULT_DIR, "model", "config.json")),
                             reason="the shipped demo checkpoint is missing")


@shipped
def test_figure_draws_the_topk_jsd_of_a_failed_rollout(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "fig.png"
    rows = tutor_figure.main(["--n", "1", "--out", str(out), "--threads", "1"])
    assert out.stat().st_size > 20_000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (row,) = rows
    ex = row["example"]
    # recompute what train.py computes for this rollout, from scratch
    model, processor = rollout.load_model(os.path.join(toy.DEFAULT_DIR, "model"), "float32", "cpu")
    ids = torch.tensor([row["ids"]])
    mask = torch.ones_like(ids, dtype=torch.bool)
    prompt = [rollout.encode(processor, ex["question"], rollout.open_images(ex))]
    old = rollout.score(model, prompt, ids, mask, topk=100)
    t = teach(model, processor, [ex], torch.arange(1), ids, mask, torch.ones(1, dtype=torch.bool),
                    old["topk_ids"], topk=100)
    st = rollout.score(model, prompt, ids, mask, support=t["support_ids"])
    want = loss.topk_jsd(st["support_logp"], t["tutor_logp"], t["support_mask"])[0]
    # the values the figure shades its token boxes with
    _, boxes, marks, _ = tutor_figure.layout(row, processor.tokenizer, show=60, n_mark=3)
    drawn = torch.tensor([b[3] for b in boxes])
    assert len(drawn) == len(want) and torch.allclose(drawn, want, atol=1e-6)
    assert want.max() > 0 and len(marks) == 3
    # the student's most probable token is at least as likely as the one it sampled
    assert (torch.tensor(row["student_p"]) >= old["logp"][0].exp() - 1e-6).all()


def test_a_missing_matplotlib_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(SystemExit, match="pip install matplotlib"):
        tutor_figure.main(["--n", "1"])
