"""demo/toy.py: a deterministic task, clean hints, a frame only where the hint points, and a
shipped checkpoint whose diagnostics meet the regime (docs/DEMO.md)."""
import json
import os
import random

import numpy as np
import pytest
import torch

import data
import eval as eval_py
import hints
import reward
import rollout
from demo import diagnostics, toy


def test_task_generation_is_deterministic(tmp_path):
    a = toy.write_split(str(tmp_path / "a"), "train", 20, seed=3, shares=SHARES)
    b = toy.write_split(str(tmp_path / "b"), "train", 20, seed=3, shares=SHARES)
    assert open(a).read() == open(b).read()
    for i in range(20):
        pa = np.array(open_png(tmp_path / "a" / "images" / f"train_{i:05d}.png"))
        pb = np.array(open_png(tmp_path / "b" / "images" / f"train_{i:05d}.png"))
        assert (pa == pb).all()
    c = toy.write_split(str(tmp_path / "c"), "train", 20, seed=4, shares=SHARES)
    assert open(a).read().replace("/a/", "/") != open(c).read()


SHARES = {"easy": 0.2, "hard": 0.5, "pivot": 0.3}


def open_png(p):
    from PIL import Image
    return Image.open(p).convert("RGB")


def test_buckets_interleave_in_proportion_and_are_labelled(tmp_path):
    path = toy.write_split(str(tmp_path), "train", 50, seed=0, shares=SHARES)
    exs = data.load_jsonl(path, report=lambda s: None)
    cats = [ex["category"] for ex in exs]
    assert [cats.count(b) for b in ("easy", "hard", "pivot")] == [10, 25, 15]
    for n in (5, 10, 25, 33):                                # every prefix holds each in proportion
        for b, share in SHARES.items():
            assert abs(cats[:n].count(b) - share * n) <= 1
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
        assert ex["target"] == (ex["framed"] if kind in ("frame", "border") else ex["shaded"])
        assert (kind == "tint") == (bucket == "hard") and (kind == "border") == (bucket == "pivot")
        assert "frame" not in ex["hint"]                     # words only: the tutor sees these pixels
        focus, distractor = ex["hint"]["regions"]
        tx, ty = ex["scene"][ex["target"]]["cell"]
        assert focus["role"] == "focus" and focus["box"] == [tx * side, ty * side, (tx + 1) * side, (ty + 1) * side]
        other = ex["shaded"] if ex["target"] == ex["framed"] else ex["framed"]
        assert distractor["role"] == "distractor" and distractor["box"] == ex["scene"][other]["box"]


def test_the_warm_start_plants_the_misreadings_only_on_unhinted_hard_and_pivot_prompts():
    """Hinted prompts and easy prompts always get the gold response; an un-hinted hard or pivot
    prompt gets the other marked shape's colour except on a share hard_truth / pivot_truth."""
    rng, ex_rng = random.Random(0), random.Random(1)
    wrong = {"hard": [], "pivot": []}
    for _ in range(6000):
        bucket = ex_rng.choice(sorted(toy.BUCKETS))
        _, rec = toy.make_example(ex_rng, bucket)
        ex = {"category": bucket, "record": rec}
        hinted, shown = toy.warm_target(ex, rng, hint_share=0.5, hard_truth=0.1, pivot_truth=0.02)
        if hinted or bucket == "easy":
            assert shown == rec["gold_response"]
        else:
            other = toy.other_marked(rec)["colour"]
            assert other != rec["answer"]
            assert shown in (rec["gold_response"], toy.response(toy.QUESTIONS[rec["kind"]][1], other))
            wrong[bucket].append(shown != rec["gold_response"])
    for b, share in (("hard", 0.9), ("pivot", 0.98)):
        got = sum(wrong[b]) / len(wrong[b])
        assert len(wrong[b]) > 800 and abs(got - share) < 0.03, (b, got)


def test_answer_classes_name_target_marked_other_absent_and_none():
    rng = random.Random(3)
    rec = next(r for _, r in iter(lambda: toy.make_example(rng, "pivot"), None) if len(r["scene"]) >= 3)
    in_picture = {o["colour"] for o in rec["scene"]}
    marked = toy.other_marked(rec)["colour"]
    other = next(c for c in sorted(in_picture) if c not in (rec["answer"], marked))
    absent = next(c for c in sorted(toy.COLOURS) if c not in in_picture)
    say = lambda c: toy.response("on the tinted background", c)
    assert eval_py.answer_class(say(rec["answer"]), rec) == "target"
    assert eval_py.answer_class(say(rec["answer"].upper()), rec) == "target"
    assert eval_py.answer_class(say(marked), rec) == "marked"
    assert eval_py.answer_class(say(other), rec) == "other"
    assert eval_py.answer_class(say(absent), rec) == "absent"
    assert eval_py.answer_class("<think>I read the shape", rec) == "none"
    shares = diagnostics.answer_shares([say(rec["answer"]), say(marked), say(other), say(other), "nothing"],
                               [{"record": rec}] * 5)
    assert shares == {"target": 0.2, "marked": 0.2, "other": 0.4, "absent": 0.0, "none": 0.2}
    plain = {k: v for k, v in rec.items() if k not in ("framed", "shaded")}   # a record with no marks
    assert eval_py.answer_class(say(marked), plain) == "other"


def test_the_probe_budget_is_the_main_jobs():
    """The learnability probes train with the demo run's own budget: its steps, its lr, its warm-up,
    and, per bucket, that bucket's prompts a step in the run (prompts per step x its share)."""
    import config
    assert diagnostics.PROBE["steps"] == config.DEMO["steps"] and diagnostics.PROBE["lr"] == config.DEMO["lr"]
    assert diagnostics.PROBE["warmup"] == config.DEMO["warmup_steps"]
    assert diagnostics.PROBE["batch"] == config.DEMO["prompts_per_step"]


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
        assert reward.find_spoiler(hints.hint_words(h), ex["answer"]) is None
        assert reward.find_spoiler(hints.render_hint(h, img.size), ex["answer"]) is None
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
    assert diagnostics.regime_failures(shipped) == [] and shipped["regime"] is True
    # (the shipped model was built as `python toy.py`, before the demo moved to demo/)
    assert shipped["command"].startswith(("python toy.py", "python demo/toy.py"))
    assert shipped["args"]["seed"] == 0 and shipped["torch"]
    assert shipped["probe"]["steps"] == diagnostics.PROBE["steps"] and shipped["probe"]["lr"] == diagnostics.PROBE["lr"]
    assert shipped["probe"]["warmup"] == diagnostics.PROBE["warmup"]
    # built with the committed warm start's values (the bare `python demo/toy.py` rebuilds it)
    assert all(shipped["args"][k] == v for k, v in toy.WARM.items() if k in shipped["args"]), shipped["args"]
    assert shipped["model_sha256"] == sha256(os.path.join(model_dir, "model.safetensors"))   # the build's own
    model, processor = rollout.load_model(model_dir, "float32", "cpu")
    exs = data.load_jsonl(eval_path, report=lambda s: None)[:150]
    res = diagnostics.diagnose(model, processor, exs, seed=0)
    for b in ("easy", "hard", "pivot"):                      # 50 problems a bucket: ~7 points of noise
        for k in ("student", "tutor", "blank"):
            assert abs(res["by_bucket"][b][k] - shipped["by_bucket"][b][k]) <= 0.15, (b, k, res, shipped)
    assert res["counterfactual"]["follows_hint"] >= 0.25, res["counterfactual"]   # it reads the hint's words
    trains = data.load_jsonl(train_path, report=lambda s: None)[:60]
    g = diagnostics.group_regime(model, processor, trains, seed=0)
    assert g["all_fail"] >= 0.1 and g["mixed"] >= 0.1 and g["tutor_on_all_fail"] >= 0.8, g
    hard, pivot = g["by_bucket"]["hard"], g["by_bucket"]["pivot"]
    assert hard["student_p_tutor_answer"] >= 0.01 and hard["tutor_top_is_right"] >= 0.8, g
    assert pivot["all_fail"] >= 0.8 and pivot["tutor_top_is_right"] >= 0.8, g


def sha256(path):
    import hashlib
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_the_swapped_hint_points_to_the_other_marked_shape():
    rng = random.Random(4)
    for bucket in ("easy", "hard", "pivot") * 10:
        _, rec = toy.make_example(rng, bucket)
        ex = {"hint": rec["hint"], "record": rec}
        sw = diagnostics.swapped(ex)["hint"]
        assert sw["steps"] == [] and hints.validate_hint(sw)
        focus = next(r for r in sw["regions"] if r["role"] == "focus")
        other = toy.other_marked(rec)
        assert focus["box"] == other["box"]                  # the focus is now the distractor's shape
        assert focus["label"] == rec["hint"]["regions"][1]["label"]
        assert ex["hint"]["regions"][0]["role"] == "focus"   # the example itself is untouched


def regime(easy_student=0.97, easy_blank=0.1, all_fail=0.45, mixed=0.25, tutor_on_all_fail=0.95, student_p=0.08,
           probe=0.7, tutor_text=0.95, tutor_fail=0.93, follows=0.6, pivot_fail=0.97, pivot_mixed=0.03):
    bucket = {"student": 0.1, "tutor": tutor_text, "blank": 0.1, "tutor_on_failures": tutor_fail}
    return {"by_bucket": {"easy": {"student": easy_student, "tutor": 0.99, "blank": easy_blank},
                          "hard": dict(bucket), "pivot": dict(bucket)},
            "counterfactual": {"n": 100, "follows_hint": follows, "follows_question": 1 - follows, "other": 0.0},
            "groups": {"all_fail": all_fail, "all_pass": 1 - all_fail - mixed, "mixed": mixed,
                       "tutor_on_all_fail": tutor_on_all_fail, "n_groups": 192, "group_size": 8,
                       "by_bucket": {"hard": {"all_fail": 0.3, "mixed": 0.5, "student_p_tutor_answer": student_p},
                                     "pivot": {"all_fail": pivot_fail, "mixed": pivot_mixed,
                                               "student_p_tutor_answer": 0.001}}},
            "probe": {"final": {"hard": probe, "pivot": 0.9}, "steps": 60, "batch_size": 8, "lr": 5e-4}}


def no_pivot(res):
    res["by_bucket"].pop("pivot")
    res["groups"]["by_bucket"].pop("pivot")
    res["probe"]["final"].pop("pivot")
    return res


def one_bucket(res, bucket, **values):
    res["by_bucket"][bucket].update(values)
    return res


def test_regime_check_names_what_is_missed():
    assert diagnostics.regime_failures(regime()) == []
    diagnostics.check_regime(regime())                               # met: returns quietly
    misses = {"blind student": regime(easy_student=0.15, easy_blank=0.1),
              "easy not mastered": regime(easy_student=0.85),
              "too few all-fail groups": regime(all_fail=0.1),
              "too few mixed groups": regime(mixed=0.1),
              "useless hint": regime(tutor_on_all_fail=0.5),
              "no all-fail group to teach": regime(tutor_on_all_fail=float("nan")),
              "saturated student": regime(student_p=0.001),
              "no failed hard rollout": regime(student_p=float("nan")),
              "not learnable in the budget": regime(probe=0.3),
              "the tutor cannot read the words": regime(tutor_text=0.5),
              "the tutor fails where the student fails": regime(tutor_fail=0.7),
              "no failure to measure the tutor on": regime(tutor_fail=float("nan")),
              "the tutor ignores the hint": regime(follows=0.05),
              "GRPO has a way into the pivot": regime(pivot_mixed=0.2),
              "the pivot is not all-fail": regime(pivot_fail=0.6),
              "no pivot bucket at all": no_pivot(regime()),
              "the tutor cannot read the pivot's words": one_bucket(regime(), "pivot", tutor=0.3),
              "the tutor fails the pivot where the student fails": one_bucket(regime(), "pivot", tutor_on_failures=0.5),
              "the pivot is not learnable": {**regime(), "probe": {**regime()["probe"], "final": {"hard": 0.9,
                                                                                                  "pivot": 0.2}}}}
    for name, res in misses.items():
        assert diagnostics.regime_failures(res), name
        with pytest.raises(SystemExit) as e:
            diagnostics.check_regime(res)
        assert e.value.code not in (0, None) and "regime PTD-PO is for" in str(e.value.code), name


def test_toy_build_exits_nonzero_when_the_regime_is_missed(tmp_path):
    """A 1-step warm start cannot read pictures: the build must say so and exit non-zero,
    after writing its diagnostics (the probe included)."""
    argv = ["--out_dir", str(tmp_path), "--steps", "1", "--steps2", "1", "--n_train", "16", "--n_eval", "9",
            "--n_warm", "16", "--batch_size", "4", "--diag_n", "9", "--group_n", "4", "--probe_steps", "2",
            "--probe_batch", "2",
            "--threads", "1"]
    with pytest.raises(SystemExit) as e:
        toy.main(argv)
    assert e.value.code not in (0, None)
    with open(tmp_path / "model" / "diagnostics.json") as f:
        diag = json.load(f)
    assert diag["regime"] is False and diag["failures"] and diag["args"]["seed"] == 0 and diag["n"] == 9
    assert diag["command"] == "python demo/toy.py " + " ".join(argv)
    assert diag["model_sha256"] == sha256(tmp_path / "model" / "model.safetensors")
    assert set(diag["probe"]["curve"]) == {"hard", "pivot"} and diag["probe"]["n_eval"] == {"hard": 3, "pivot": 3}
    assert set(diag["probe"]["curve"]["pivot"]) == {"0", "2"}
    toy.main(argv + ["--no_check"])                          # the same build, told not to check
    # new diagnostics of that model: the numbers and the probe's flags replaced, the build's record kept
    again = argv[:-2] + ["--probe_steps", "3", "--probe_warmup", "2", "--diagnose_only", "--write"]
    with open(tmp_path / "model" / "diagnostics.json") as f:
        diag = json.load(f)                                  # the --no_check build's record
    toy.main(again)
    with open(tmp_path / "model" / "diagnostics.json") as f:
        new = json.load(f)
    assert new["command"] == diag["command"] and new["built"] == diag["built"]       # how it was built
    assert new["diagnosed"]["command"] == "python demo/toy.py " + " ".join(again)    # how these were made
    assert set(new["probe"]["curve"]["hard"]) == {"0", "3"} and new["probe"]["warmup"] == 2
    assert new["args"]["probe_steps"] == 3 and new["args"]["steps"] == 1 and new["regime"] is False


def test_the_build_is_bitwise_deterministic(tmp_path):
    """Two builds with the same flags write the same weights, byte for byte (both warm-start
    phases), so the shipped model rebuilds from the committed code (its sha256 is recorded in
    diagnostics.json and checked above)."""
    argv = ["--steps", "2", "--steps2", "2", "--n_train", "12", "--n_eval", "6", "--n_warm", "24", "--batch_size", "4",
            "--probe_steps", "0", "--diag_n", "3", "--group_n", "3", "--threads", "1", "--no_check"]
    for d in ("a", "b"):
        toy.main(["--out_dir", str(tmp_path / d)] + argv)
    a, b = (sha256(tmp_path / d / "model" / "model.safetensors") for d in ("a", "b"))
    assert a == b
    toy.main(["--out_dir", str(tmp_path / "c"), "--seed", "1"] + argv)
    assert sha256(tmp_path / "c" / "model" / "model.safetensors") != a


def test_phase_2_from_a_saved_phase_1_is_the_full_builds_model(tmp_path):
    """--start_from a saved phase 1 gives the full build's weights byte for byte (phase 2 has its own
    random streams): how the shipped model was made, and what a full rebuild reproduces."""
    argv = ["--steps", "2", "--steps2", "2", "--n_train", "12", "--n_eval", "6", "--n_warm", "24", "--batch_size", "4",
            "--probe_steps", "0", "--diag_n", "3", "--group_n", "3", "--threads", "1", "--no_check"]
    toy.main(["--out_dir", str(tmp_path / "full"), "--save_phase1", str(tmp_path / "p1")] + argv)
    toy.main(["--out_dir", str(tmp_path / "two"), "--start_from", str(tmp_path / "p1")] + argv[:1] + ["0"] + argv[2:])
    assert sha256(tmp_path / "two" / "model" / "model.safetensors") == sha256(
        tmp_path / "full" / "model" / "model.safetensors")


def test_data_left_by_an_older_task_is_redrawn(tmp_path):
    data_dir = tmp_path / "data"
    toy.build_data(str(data_dir), n_train=4, n_eval=4, n_warm=4)
    assert toy.data_is_current(str(data_dir))
    (data_dir / "task.json").write_text('{"version": 1}')
    assert not toy.data_is_current(str(data_dir))
    (data_dir / "task.json").unlink()
    assert not toy.data_is_current(str(data_dir))


def test_write_framed_copies_a_split_with_every_hint_asking_for_the_frame(toy_data):
    """The "frame" ablation's data: the same records in the same order, each hint with "frame": true
    and nothing else changed; the tutor then draws the frame (tutor.tutor_images)."""
    src = toy_data[1]
    dst = os.path.join(os.path.dirname(src), "framed_test.jsonl")
    toy.write_framed(src, dst)
    before = [json.loads(line) for line in open(src)]
    after = [json.loads(line) for line in open(dst)]
    os.remove(dst)
    assert len(after) == len(before) > 0 and any(r.get("hint") for r in before)
    for a, b in zip(after, before):
        if b.get("hint"):
            assert a["hint"] == {**b["hint"], "frame": True} and "frame" not in b["hint"]
            a = {**a, "hint": b["hint"]}
        assert a == b
