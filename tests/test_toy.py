"""toy.py: a deterministic task, clean hints, a frame only where the hint points, and a
shipped checkpoint whose diagnostics meet the regime (docs/DEMO.md)."""
import json
import os
import random

import numpy as np
import pytest
import torch

import data
import expert_hints
import hints
import report
import rollout
import toy


def test_task_generation_is_deterministic(tmp_path):
    a = toy.write_split(str(tmp_path / "a"), "train", 20, seed=3, hard_share=0.6)
    b = toy.write_split(str(tmp_path / "b"), "train", 20, seed=3, hard_share=0.6)
    assert open(a).read() == open(b).read()
    for i in range(20):
        pa = np.array(open_png(tmp_path / "a" / "images" / f"train_{i:05d}.png"))
        pb = np.array(open_png(tmp_path / "b" / "images" / f"train_{i:05d}.png"))
        assert (pa == pb).all()
    c = toy.write_split(str(tmp_path / "c"), "train", 20, seed=4, hard_share=0.6)
    assert open(a).read().replace("/a/", "/") != open(c).read()


def open_png(p):
    from PIL import Image
    return Image.open(p).convert("RGB")


def test_buckets_interleave_in_proportion_and_are_labelled(tmp_path):
    path = toy.write_split(str(tmp_path), "train", 50, seed=0, hard_share=0.6)
    exs = data.load_jsonl(path, report=lambda s: None)
    cats = [ex["category"] for ex in exs]
    assert cats.count("hard") == 30 and cats.count("easy") == 20
    for n in (5, 10, 25):                                    # every prefix holds both in proportion
        assert abs(cats[:n].count("hard") - 0.6 * n) <= 1
    for ex in exs:
        scene = ex["record"]["scene"]
        lo, hi = toy.N_SHAPES
        assert lo <= len(scene) <= hi and all(0 <= c < toy.GRID for o in scene for c in o["cell"])
        assert ex["record"]["kind"] in toy.BUCKETS[ex["category"]]


def test_scenes_never_repeat_a_colour_or_shape_and_the_response_ends_with_the_target_colour():
    rng = random.Random(0)
    for _ in range(500):
        bucket = rng.choice(sorted(toy.BUCKETS))
        img, ex = toy.make_example(rng, bucket)
        colours = [o["colour"] for o in ex["scene"]]
        shapes = [o["shape"] for o in ex["scene"]]
        assert len(set(colours)) == len(colours) and len(set(shapes)) == len(shapes)
        assert img.size == (toy.SIZE, toy.SIZE) and ex["category"] == bucket
        target = ex["scene"][ex["target"]]
        assert ex["answer"] == target["colour"]
        assert ex["gold_response"].endswith(f"<answer>{target['colour']}</answer>")
    assert len(toy.COLOURS) >= 8                             # a blind guess pays <= 1/8


def test_one_cell_is_framed_another_shaded_and_the_question_picks_one():
    """Every picture frames one shape's cell in grey and shades another's. "frame" asks for the
    framed shape; "shade" and the hard "tint" for the shaded one; the other marked shape is the
    hint's distractor, and the hint's focus box is the target's cell."""
    rng = random.Random(2)
    side = toy.SIZE // toy.GRID
    for _ in range(200):
        bucket = rng.choice(sorted(toy.BUCKETS))
        img, ex = toy.make_example(rng, bucket)
        px = np.array(img)
        for i, o in enumerate(ex["scene"]):
            ox, oy = o["cell"]
            top_edge = px[oy * side, ox * side:(ox + 1) * side]
            corner = px[oy * side + 1, ox * side + 1]         # no shape reaches the cell's corner
            assert (top_edge == np.array(toy.MARK)).all() == (i == ex["framed"])
            assert (corner == np.array(toy.SHADE)).all() == (i == ex["shaded"])
        kind = ex["kind"]
        assert ex["question"] == toy.QUESTIONS[kind][0]
        assert ex["target"] == (ex["framed"] if kind == "frame" else ex["shaded"])
        assert (kind == "tint") == (bucket == "hard")
        focus, distractor = ex["hint"]["regions"]
        tx, ty = ex["scene"][ex["target"]]["cell"]
        assert focus["role"] == "focus" and focus["box"] == [tx * side, ty * side, (tx + 1) * side, (ty + 1) * side]
        other = ex["shaded"] if ex["target"] == ex["framed"] else ex["framed"]
        assert distractor["role"] == "distractor" and distractor["box"] == ex["scene"][other]["box"]


def test_the_warm_start_plants_the_misconception_only_on_unhinted_hard_prompts():
    """Hinted prompts and easy prompts always get the gold response; an un-hinted hard prompt
    gets the framed shape's colour except on a share hard_truth of draws."""
    rng, ex_rng = random.Random(0), random.Random(1)
    wrong = {"hard": [], "easy": []}
    for _ in range(4000):
        bucket = ex_rng.choice(sorted(toy.BUCKETS))
        _, rec = toy.make_example(ex_rng, bucket)
        ex = {"category": bucket, "record": rec}
        hinted, shown = toy.warm_target(ex, rng, hint_share=0.5, hard_truth=0.1)
        if hinted or bucket == "easy":
            assert shown == rec["gold_response"]
        else:
            framed = rec["scene"][rec["framed"]]["colour"]
            assert shown in (rec["gold_response"], toy.response(toy.QUESTIONS["tint"][1], framed))
            wrong["hard"].append(shown != rec["gold_response"])
    share = sum(wrong["hard"]) / len(wrong["hard"])
    assert len(wrong["hard"]) > 800 and abs(share - 0.9) < 0.03, share


def test_answer_classes_name_target_other_absent_and_none():
    _, rec = toy.make_example(random.Random(3), "hard")
    in_picture = {o["colour"] for o in rec["scene"]}
    other = next(c for c in sorted(in_picture) if c != rec["answer"])
    absent = next(c for c in sorted(toy.COLOURS) if c not in in_picture)
    say = lambda c: toy.response("on the tinted background", c)
    assert report.answer_class(say(rec["answer"]), rec) == "target"
    assert report.answer_class(say(rec["answer"].upper()), rec) == "target"
    assert report.answer_class(say(other), rec) == "other"
    assert report.answer_class(say(absent), rec) == "absent"
    assert report.answer_class("<think>I read the shape", rec) == "none"
    shares = toy.answer_shares([say(rec["answer"]), say(other), say(other), "nothing"], [{"record": rec}] * 4)
    assert shares == {"target": 0.25, "other": 0.5, "absent": 0.0, "none": 0.25}


def test_the_probe_budget_is_the_main_jobs():
    """The learnability probe trains with the demo run's own budget: its steps, its hard prompts
    per step (prompts per step x the hard share) and its lr."""
    import config
    assert toy.PROBE["steps"] == config.DEMO["steps"] and toy.PROBE["lr"] == config.DEMO["lr"]
    assert toy.PROBE["warmup"] == config.DEMO["warmup_steps"]
    assert toy.PROBE["batch"] == round(config.DEMO["prompts_per_step"] * 0.5)   # the train split is half hard


def test_each_scene_draws_its_shapes_in_their_colours_inside_their_cells():
    rng = random.Random(5)
    for _ in range(50):
        img, ex = toy.make_example(rng, "hard")
        px = np.array(img)
        for o in ex["scene"]:
            x1, y1, x2, y2 = o["box"]
            patch = px[y1:y2, x1:x2].reshape(-1, 3)
            assert (np.abs(patch - np.array(toy.COLOURS[o["colour"]])).sum(1) == 0).mean() > 0.2, o


def test_every_hint_of_1000_examples_is_spoiler_free_and_valid():
    rng = random.Random(0)
    for _ in range(1000):
        img, ex = toy.make_example(rng, rng.choice(sorted(toy.BUCKETS)))
        h = hints.validate_hint(ex["hint"], img.size)
        assert expert_hints.find_spoiler(hints.hint_words(h), ex["answer"]) is None
        assert expert_hints.find_spoiler(hints.render_hint(h, img.size), ex["answer"]) is None
        assert ex["answer"] in toy.COLOURS and ex["answer"] in ex["gold_response"]


def test_framed_copy_differs_only_around_the_focus_region():
    rng = random.Random(1)
    for _ in range(50):
        img, ex = toy.make_example(rng, rng.choice(sorted(toy.BUCKETS)))
        framed = np.array(hints.draw_focus(img, ex["hint"])).astype(int)
        diff = np.abs(framed - np.array(img).astype(int)).sum(-1) > 0
        x1, y1, x2, y2 = [int(v) for v in ex["hint"]["regions"][0]["box"]]
        ring = np.zeros_like(diff)
        ring[y1:y2, x1:x2] = True
        ring[y1 + 3:y2 - 3, x1 + 3:x2 - 3] = False            # the 3 px frame only
        assert diff.any() and not (diff & ~ring).any()


@pytest.mark.skipif(not os.path.exists(os.path.join(toy.DEFAULT_DIR, "model", "diagnostics.json")),
                    reason="the shipped demo checkpoint is missing")
def test_shipped_checkpoint_loads_and_matches_its_diagnostics():
    model_dir, train_path, eval_path = toy.ensure()
    with open(os.path.join(model_dir, "diagnostics.json")) as f:
        shipped = json.load(f)
    # the recorded numbers meet the regime, and say how they were made
    assert toy.regime_failures(shipped) == [] and shipped["regime"] is True
    assert shipped["command"].startswith("python toy.py") and shipped["args"]["seed"] == 0 and shipped["torch"]
    assert shipped["probe"]["steps"] == toy.PROBE["steps"] and shipped["probe"]["lr"] == toy.PROBE["lr"]
    assert shipped["probe"]["warmup"] == toy.PROBE["warmup"]
    model, processor = rollout.load_model(model_dir, "float32", "cpu")
    exs = data.load_jsonl(eval_path, report=lambda s: None)[:120]
    res = toy.diagnose(model, processor, exs, seed=0)
    for b in ("easy", "hard"):                               # 60 problems a bucket: ~6 points of noise
        for k in ("student", "tutor", "blank"):
            assert abs(res["by_bucket"][b][k] - shipped["by_bucket"][b][k]) <= 0.15, (b, k, res, shipped)
    trains = data.load_jsonl(train_path, report=lambda s: None)[:48]
    g = toy.group_regime(model, processor, trains, seed=0)
    assert g["all_fail"] >= 0.1 and g["mixed"] >= 0.1 and g["tutor_on_all_fail"] >= 0.8, g
    assert g["student_p_tutor_answer"] >= 0.01 and g["tutor_top_is_right"] >= 0.8, g


def regime(easy_student=0.97, easy_blank=0.1, all_fail=0.3, mixed=0.4, tutor_on_all_fail=0.95, student_p=0.08,
           probe=0.7):
    return {"by_bucket": {"easy": {"student": easy_student, "tutor": 0.99, "blank": easy_blank},
                          "hard": {"student": 0.1, "tutor": 0.95, "blank": 0.1}},
            "groups": {"all_fail": all_fail, "all_pass": 1 - all_fail - mixed, "mixed": mixed,
                       "tutor_on_all_fail": tutor_on_all_fail, "n_groups": 128, "group_size": 8,
                       "student_p_tutor_answer": student_p, "failed_hard_rows": 100},
            "probe": {"final": probe, "steps": 100, "batch_size": 8, "lr": 5e-4, "curve": {0: 0.1, 100: probe}}}


def test_regime_check_names_what_is_missed():
    assert toy.regime_failures(regime()) == []
    toy.check_regime(regime())                               # met: returns quietly
    misses = {"blind student": regime(easy_student=0.15, easy_blank=0.1),
              "easy not mastered": regime(easy_student=0.85),
              "too few all-fail groups": regime(all_fail=0.1),
              "too few mixed groups": regime(mixed=0.1),
              "useless hint": regime(tutor_on_all_fail=0.5),
              "no all-fail group to teach": regime(tutor_on_all_fail=float("nan")),
              "saturated student": regime(student_p=0.001),
              "no failed hard rollout": regime(student_p=float("nan")),
              "not learnable in the budget": regime(probe=0.3)}
    for name, res in misses.items():
        assert toy.regime_failures(res), name
        with pytest.raises(SystemExit) as e:
            toy.check_regime(res)
        assert e.value.code not in (0, None) and "regime PTD-PO is for" in str(e.value.code), name


def test_toy_build_exits_nonzero_when_the_regime_is_missed(tmp_path):
    """A 1-step warm start cannot read pictures: the build must say so and exit non-zero,
    after writing its diagnostics (the probe included)."""
    argv = ["--out_dir", str(tmp_path), "--steps", "1", "--n_train", "16", "--n_eval", "8", "--n_warm", "16",
            "--diag_n", "8", "--group_n", "4", "--probe_steps", "2", "--probe_batch", "2", "--threads", "1"]
    with pytest.raises(SystemExit) as e:
        toy.main(argv)
    assert e.value.code not in (0, None)
    with open(tmp_path / "model" / "diagnostics.json") as f:
        diag = json.load(f)
    assert diag["regime"] is False and diag["failures"] and diag["args"]["seed"] == 0 and diag["n"] == 8
    assert diag["command"] == "python toy.py " + " ".join(argv)
    assert set(diag["probe"]["curve"]) == {"0", "2"} and diag["probe"]["n_eval"] == 4
    toy.main(argv + ["--no_check"])                          # the same build, told not to check
    # new diagnostics of that model: the numbers and the probe's flags replaced, the build's record kept
    again = argv[:-2] + ["--probe_steps", "3", "--probe_warmup", "2", "--diagnose_only", "--write"]
    with open(tmp_path / "model" / "diagnostics.json") as f:
        diag = json.load(f)                                  # the --no_check build's record
    toy.main(again)
    with open(tmp_path / "model" / "diagnostics.json") as f:
        new = json.load(f)
    assert new["command"] == diag["command"] and new["built"] == diag["built"]       # how it was built
    assert new["diagnosed"]["command"] == "python toy.py " + " ".join(again)         # how these were made
    assert set(new["probe"]["curve"]) == {"0", "3"} and new["probe"]["warmup"] == 2
    assert new["args"]["probe_steps"] == 3 and new["args"]["steps"] == 1 and new["regime"] is False


def test_data_left_by_an_older_task_is_redrawn(tmp_path):
    data_dir = tmp_path / "data"
    toy.build_data(str(data_dir), n_train=4, n_eval=4, n_warm=4)
    assert toy.data_is_current(str(data_dir))
    (data_dir / "task.json").write_text('{"version": 1}')
    assert not toy.data_is_current(str(data_dir))
    (data_dir / "task.json").unlink()
    assert not toy.data_is_current(str(data_dir))
