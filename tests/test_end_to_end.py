"""The README's commands, shortened: the demo through train.py and eval.py, and hints.py."""
import json
import os

import pytest

from demo import toy
from test_distributed import run

pytestmark = pytest.mark.skipif(not os.path.exists(os.path.join(toy.DEFAULT_DIR, "model", "config.json")),
                                reason="the shipped demo checkpoint is missing")


def test_demo_train_then_eval(tmp_path):
    out = str(tmp_path / "demo")
    log = run(["train.py", "--steps", "2", "--prompts_per_step", "4", "--minibatch_prompts", "2",
               "--eval_n", "8", "--eval_samples", "1", "--out_dir", out, "--threads", "1"])
    assert "held-out pass@1" in log and "before" in log and "after 2 steps" in log
    lines = [json.loads(x) for x in open(os.path.join(out, "metrics.jsonl"))]
    steps = [m for m in lines if "reward" in m]
    assert [m["step"] for m in steps] == [1, 2]
    for m in steps:
        for k in ("reward", "entropy", "kl", "div", "distilled_frac", "clip_frac_low", "t_rollout",
                  "tok_per_s", "all_fail_frac", "all_pass_frac"):
            assert k in m
        assert "groups fail/pass" in log
    first, last = lines[0], lines[-1]                        # step 0 and the end: per bucket, the chance line
    for m in (first, last):
        assert {"eval_pass1/easy", "eval_pass1/hard", "eval_blank_pass1/hard", "eval_answers/hard/absent"} <= set(m)
    assert first["step"] == 0 and last["final"] and "blank image (before / after)" in log
    # --eval_start 0: no step-0 evaluation (a comparison computes it once), the summary says "-"
    out0 = str(tmp_path / "no_start")
    log0 = run(["train.py", "--steps", "1", "--prompts_per_step", "2", "--minibatch_prompts", "2",
                "--eval_n", "4", "--eval_samples", "1", "--eval_start", "0", "--out_dir", out0,
                "--threads", "1", "--no_export"])
    evals = [m for m in map(json.loads, open(os.path.join(out0, "metrics.jsonl"))) if "eval_pass1" in m]
    assert [m["step"] for m in evals] == [1] and "before" in log0 and "(no hints" not in log0
    assert os.path.exists(os.path.join(out, "final", "model.safetensors"))
    # the summary's eval command runs as printed
    printed = next(x for x in log.splitlines() if "python eval.py" in x)
    cmd = printed[printed.index("(python ") + len("(python "):printed.rindex(")")].split()
    assert run(cmd + ["--limit", "4", "--threads", "1"])
    res_path = str(tmp_path / "eval.json")
    log = run(["eval.py", "--model", out, "--limit", "8", "--n_samples", "2", "--k", "1", "2", "--out", res_path])
    res = json.load(open(res_path))
    assert res["problems"] == 8 and 0 <= res["pass@1"] <= res["pass@2"] <= 1
    hinted = str(tmp_path / "hinted.json")
    run(["eval.py", "--model", out, "--limit", "8", "--n_samples", "2", "--with_hints", "--out", hinted])
    assert json.load(open(hinted))["with_hints"] is True
    log = run(["eval.py", "--compare", out, out, "--png", str(tmp_path / "c.png")])
    assert "pass@1 end" in log


def held_out_copy(path, n, keep_hint=True, category=None):
    """The first n held-out demo problems (of one bucket if category is given) as a new JSONL file
    beside a link to their images."""
    _, _, eval_path = toy.ensure()
    src = os.path.dirname(eval_path)
    with open(eval_path) as f, open(path, "w") as g:
        recs = [json.loads(line) for line in f]
        for rec in [r for r in recs if category in (None, r["category"])][:n]:
            link = os.path.join(os.path.dirname(path), "demo_images")
            if not os.path.exists(link):
                os.symlink(src, link)
            rec["image"] = os.path.join("demo_images", rec["image"])
            if not keep_hint:
                rec.pop("hint")
            g.write(json.dumps(rec) + "\n")
    return path


def test_hint_generation_command_finishes_and_reports(tmp_path):
    src = held_out_copy(tmp_path / "in.jsonl", 3, keep_hint=False)
    out = tmp_path / "out.jsonl"
    log = run(["scripts/make_hints.py", "--model", toy.DEFAULT_DIR + "/model", "--data", str(src), "--out", str(out),
               "--max_new_tokens", "24", "--retries", "1"])
    assert "hint report for 3 examples" in log
    # resumable: a second run has nothing left to do for ids already written
    log2 = run(["scripts/make_hints.py", "--model", toy.DEFAULT_DIR + "/model", "--data", str(src), "--out", str(out),
                "--max_new_tokens", "8", "--retries", "0"])
    written = sum(1 for _ in open(out)) if out.exists() else 0
    assert f"{written} already in" in log2


def train_and_eval(tmp_path, data, name, *flags):
    """8 steps of RL on 8 problems, evaluated on the same 8 (8 samples each) before and after."""
    out = str(tmp_path / name)
    run(["train.py", "--train_data", str(data), "--eval_data", str(data), "--steps", "8", "--prompts_per_step", "8",
         "--minibatch_prompts", "4", "--lr", "5e-4", "--warmup_steps", "2", "--eval_n", "8", "--eval_samples", "8",
         "--eval_every", "0", "--out_dir", out, "--threads", "1", "--no_export", *flags])
    ev = [json.loads(x) for x in open(os.path.join(out, "metrics.jsonl"))]
    return [m["eval_pass1"] for m in ev if "eval_pass1" in m]


def test_grpo_learns_where_its_groups_are_mixed(tmp_path):
    """Easy problems sampled at T = 2 (the student right about 40% of the time): mixed groups, and
    GRPO raises pass@1 (the loop really optimises)."""
    easy = held_out_copy(tmp_path / "easy.jsonl", 8, category="easy")
    ev = train_and_eval(tmp_path, easy, "grpo", "--algo", "grpo", "--temperature", "2.0")
    assert 0.1 < ev[0] < 0.9 and ev[-1] >= ev[0] + 0.15, ev


def test_only_the_hinted_tutor_teaches_problems_every_rollout_fails(tmp_path):
    """The mechanism on 8 hard problems the student never solves: sampled with top_p 0.5, only its
    most likely answer (the framed shape's colour, ~85%) is ever drawn, so every group all fails,
    while its full distribution (what the divergence reads) still puts ~8% on the right colour.
    GRPO has no signal and stays at 0; the tutor without the hint (the control) anchors the
    student to the frozen model, whose most likely answer is wrong (at most one problem in eight
    tips over); PTD-PO with the hinted tutor lifts pass@1 at least 25 points above both."""
    hard = held_out_copy(tmp_path / "hard.jsonl", 8, category="hard")
    cold = ("--top_p", "0.5")
    grpo = train_and_eval(tmp_path, hard, "grpo", "--algo", "grpo", *cold)
    control = train_and_eval(tmp_path, hard, "control", "--algo", "ptdpo", "--tutor_context", "none", *cold)
    ptdpo = train_and_eval(tmp_path, hard, "ptdpo", "--algo", "ptdpo", *cold)
    assert grpo[0] == control[0] == ptdpo[0] <= 0.02, (grpo, control, ptdpo)
    assert grpo[-1] == 0.0 and control[-1] <= 0.125, (grpo, control)
    assert ptdpo[-1] >= max(grpo[-1], control[-1]) + 0.25, (grpo, control, ptdpo)
