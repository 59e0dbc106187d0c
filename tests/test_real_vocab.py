"""Real shapes: the demo model widened to Qwen's 151,936-row lm-head, with a Thinking chat
template (its generation prompt opens <think>). train.py, eval.py and scripts/make_hints.py run
through it, and the Top-K JSD's tail bucket carries real mass, as on real models."""
import json
import math
import os

import pytest
import torch

import data
import loss
import rollout
from demo import tiny_model, toy
import train
from test_tutor import teach
from test_distributed import run

pytestmark = pytest.mark.skipif(not os.path.exists(os.path.join(toy.DEFAULT_DIR, "model", "config.json")),
                                reason="the shipped demo checkpoint is missing")


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("wide"))
    tiny_model.widen(os.path.join(toy.DEFAULT_DIR, "model"), d, thinking=True)
    model, processor = rollout.load_model(d, "float32", "cpu")
    return model, processor, d


def test_the_fixture_has_real_shapes_and_a_thinking_template(wide):
    model, processor, _ = wide
    assert model.get_output_embeddings().weight.shape[0] == tiny_model.REAL_VOCAB
    assert rollout.opens_think(processor)
    text = rollout.prompt_text(processor, "What colour is the circle?")
    assert text.endswith("<think>\n") and rollout.FORMAT_PROMPT_THINKING in text
    assert rollout.FORMAT_PROMPT not in text        # never ask for a block the template opened


def test_format_reward_counts_the_think_block_the_template_opened(wide):
    _, processor, _ = wide
    tok = processor.tokenizer
    good = "The circle is in the top left cell.</think><answer>red</answer>"
    ids, mask = rollout.pad_responses([torch.tensor(tok(t)["input_ids"] + [rollout.eos_id(processor)])
                                       for t in (good, "red")], rollout.eos_id(processor), tok.pad_token_id)
    ex = {"answer": "red", "choices": None}
    correct, fmt, truncated = train.rewards_of(processor, ids, mask, [ex], torch.zeros(2, dtype=torch.long))
    assert correct.tolist() == [1.0, 0.0] and fmt.tolist() == [1.0, 0.0] and not truncated.any()


def test_topk_jsd_tail_carries_real_mass(wide):
    """Student tail mass 1 - sum_S p > 1% at most response positions (the demo's 943-token
    vocabulary never gets there), and the JSD on support + tail is finite and positive."""
    model, processor, _ = wide
    _, train_path, _ = toy.ensure()
    exs = data.load_jsonl(train_path, report=lambda *a: None)[:4]
    prompts = [rollout.encode(processor, ex["question"], rollout.open_images(ex)) for ex in exs]
    ids, mask = rollout.sample(model, processor, prompts, 2, 24, top_p=0.99, seed=0)
    rows = torch.arange(4).repeat_interleave(2)
    rp = [prompts[i] for i in rows.tolist()]
    old = rollout.score(model, rp, ids, mask, topk=100)
    t = teach(model, processor, exs, rows, ids, mask, torch.ones(8, dtype=torch.bool), old["topk_ids"], topk=100)
    st = rollout.score(model, rp, ids, mask, support=t["support_ids"])
    sup_mass = st["support_logp"].masked_fill(~t["support_mask"], -math.inf).logsumexp(-1).exp()   # (N, R)
    tail = (1 - sup_mass)[mask]
    width = t["support_mask"].sum(-1)[mask].float()
    assert 100 <= width.min() and width.max() <= 200
    assert (tail > 0.01).float().mean() > 0.5, tail
    j = loss.topk_jsd(st["support_logp"], t["tutor_logp"], t["support_mask"])[mask]
    assert torch.isfinite(j).all() and (j >= 0).all() and j.max() > 0


def test_train_eval_and_make_hints_run_at_real_vocabulary(wide, tmp_path):
    _, processor, d = wide
    _, train_path, eval_path = toy.ensure()
    common = ["--model", d, "--train_data", train_path, "--eval_data", eval_path, "--prompts_per_step", "4",
              "--minibatch_prompts", "2", "--group_size", "4", "--max_new_tokens", "24", "--eval_n", "4",
              "--eval_samples", "1", "--save_every", "0", "--threads", "1"]
    for algo, steps in (("ptdpo", 2), ("grpo", 1)):
        out = str(tmp_path / algo)
        run(["train.py", *common, "--algo", algo, "--steps", str(steps), "--out_dir", out])
        ms = [json.loads(x) for x in open(os.path.join(out, "metrics.jsonl"))]
        steps_m = [m for m in ms if "reward" in m]
        assert len(steps_m) == steps and all(m["skipped"] == 0 for m in steps_m)
        assert all(math.isfinite(m[k]) for m in steps_m for k in ("entropy", "kl", "div", "reward", "grad_norm"))
        if algo == "ptdpo":
            assert any(m["div"] > 0 and m["distilled_frac"] > 0 for m in steps_m)
    res = str(tmp_path / "eval.json")
    run(["eval.py", "--model", str(tmp_path / "ptdpo"), "--limit", "4", "--n_samples", "2", "--out", res])
    assert json.load(open(res))["problems"] == 4
    src = str(tmp_path / "in.jsonl")
    with open(src, "w") as f:
        for line in list(open(eval_path))[:2]:
            rec = json.loads(line)
            rec.pop("hint")
            rec["image"] = os.path.join(os.path.dirname(eval_path), rec["image"])
            f.write(json.dumps(rec) + "\n")
    log = run(["scripts/make_hints.py", "--model", d, "--data", src, "--out", str(tmp_path / "hints.jsonl"),
               "--max_new_tokens", "16", "--retries", "0", "--allow_outside_images"])
    assert "hint report for 2 examples" in log
