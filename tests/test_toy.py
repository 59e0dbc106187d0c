"""toy.py: a deterministic task, clean hints, a frame only where the hint points, and a
shipped checkpoint whose diagnostics match the README."""
import json
import os
import random

import numpy as np
import pytest
import torch

import data
import hints
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
        lo, hi = toy.BUCKETS[ex["category"]]
        assert lo <= len(scene) <= hi and all(0 <= c < toy.GRID for o in scene for c in o["cell"])


def test_scenes_never_repeat_a_colour_or_shape_and_the_response_names_the_cell_first():
    rng = random.Random(0)
    for _ in range(500):
        bucket = rng.choice(sorted(toy.BUCKETS))
        img, ex = toy.make_example(rng, bucket)
        colours = [o["colour"] for o in ex["scene"]]
        shapes = [o["shape"] for o in ex["scene"]]
        assert len(set(colours)) == len(colours) and len(set(shapes)) == len(shapes)
        assert img.size == (toy.SIZE, toy.SIZE) and ex["category"] == bucket
        target = ex["scene"][0]
        gold = ex["gold_response"]
        assert gold.index(f"The {target['shape']} is") < gold.index(f"<answer>{target['colour']}</answer>")
        assert ex["answer"] == target["colour"]
    assert len(toy.COLOURS) >= 8                             # a blind guess pays <= 1/8


def test_the_grey_frame_marks_the_target_on_easy_and_the_other_shape_on_hard():
    """Every picture frames one cell in grey. easy: the framed shape is asked for; hard: two
    shapes, and the question asks for the one outside the frame (the framed one, a wrong answer
    of another colour, is the hint's distractor)."""
    rng = random.Random(2)
    for _ in range(200):
        bucket = rng.choice(sorted(toy.BUCKETS))
        img, ex = toy.make_example(rng, bucket)
        px = np.array(img)
        framed = ex["scene"][ex["framed"]]
        cx, cy = framed["cell"]
        side = toy.SIZE // toy.GRID
        ring = px[cy * side, cx * side:(cx + 1) * side]      # the framed cell's top edge
        assert (ring == np.array(toy.MARK)).all()
        others = [o for o in ex["scene"] if o is not framed]  # no other cell is framed
        for o in others:
            ox, oy = o["cell"]
            assert not (px[oy * side, ox * side:(ox + 1) * side] == np.array(toy.MARK)).all()
        if bucket == "easy":
            assert ex["framed"] == 0 and ex["question"] == "What colour is the shape in the frame?"
        else:
            assert ex["framed"] == 1 and len(ex["scene"]) == 2
            assert ex["question"] == "What colour is the shape outside the frame?"
            assert framed["colour"] != ex["answer"] and ex["hint"]["regions"][1]["role"] == "distractor"
            assert ex["hint"]["regions"][1]["box"] == framed["box"]


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
        assert hints.find_spoiler(hints.hint_words(h), ex["answer"]) is None
        assert hints.find_spoiler(hints.render_hint(h, img.size), ex["answer"]) is None
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
def test_shipped_checkpoint_loads_and_matches_its_diagnostics(tmp_path):
    model_dir, train_path, eval_path = toy.ensure()
    with open(os.path.join(model_dir, "diagnostics.json")) as f:
        shipped = json.load(f)
    # the recorded numbers meet the regime, and say how they were made
    assert toy.regime_failures(shipped) == [] and shipped["regime"] is True
    assert shipped["command"].startswith("python toy.py") and shipped["seed"] == 0 and shipped["torch"]
    model, processor = rollout.load_model(model_dir, "float32", "cpu")
    exs = data.load_jsonl(eval_path, report=lambda s: None)[:120]
    res = toy.diagnose(model, processor, exs, seed=0, tmp_dir=str(tmp_path))
    for b in ("easy", "hard"):                               # 60 problems a bucket: ~6 points of noise
        for k in ("student", "tutor", "blank"):
            assert abs(res["by_bucket"][b][k] - shipped["by_bucket"][b][k]) <= 0.15, (b, k, res, shipped)
    trains = data.load_jsonl(train_path, report=lambda s: None)[:48]
    g = toy.group_regime(model, processor, trains, seed=0)
    assert 0.15 <= g["all_fail"] <= 0.75 and g["tutor_on_all_fail"] >= 0.75, g


def regime(easy_student=0.75, easy_blank=0.1, all_fail=0.45, tutor_on_all_fail=0.95):
    return {"by_bucket": {"easy": {"student": easy_student, "tutor": 0.99, "blank": easy_blank},
                          "hard": {"student": 0.1, "tutor": 0.95, "blank": 0.1}},
            "groups": {"all_fail": all_fail, "all_pass": 0.2, "mixed": 0.8 - all_fail,
                       "tutor_on_all_fail": tutor_on_all_fail, "n_groups": 128, "group_size": 8}}


def test_regime_check_names_what_is_missed():
    assert toy.regime_failures(regime()) == []
    toy.check_regime(regime())                               # met: returns quietly
    misses = {"blind student": regime(easy_student=0.15, easy_blank=0.1),
              "too few all-fail groups": regime(all_fail=0.1),
              "all fail everywhere": regime(all_fail=0.9),
              "useless hint": regime(tutor_on_all_fail=0.5),
              "no all-fail group to teach": regime(tutor_on_all_fail=float("nan"))}
    for name, res in misses.items():
        assert toy.regime_failures(res), name
        with pytest.raises(SystemExit) as e:
            toy.check_regime(res)
        assert e.value.code not in (0, None) and "regime PTD-PO is for" in str(e.value.code), name


def test_toy_build_exits_nonzero_when_the_regime_is_missed(tmp_path):
    """A 1-step warm start cannot read pictures: the build must say so and exit non-zero,
    after writing its diagnostics."""
    argv = ["--out_dir", str(tmp_path), "--steps", "1", "--n_train", "16", "--n_eval", "8", "--diag_n", "8",
            "--group_n", "4", "--threads", "1"]
    with pytest.raises(SystemExit) as e:
        toy.main(argv)
    assert e.value.code not in (0, None)
    with open(tmp_path / "model" / "diagnostics.json") as f:
        diag = json.load(f)
    assert diag["regime"] is False and diag["seed"] == 0 and diag["n"] == 8
    assert diag["command"] == "python toy.py " + " ".join(argv)
    toy.main(argv + ["--no_check"])                          # the same build, told not to check


def test_data_left_by_an_older_task_is_redrawn(tmp_path):
    data_dir = tmp_path / "data"
    toy.build_data(str(data_dir), n_train=4, n_eval=4)
    assert toy.data_is_current(str(data_dir))
    (data_dir / "task.json").write_text('{"version": 1}')
    assert not toy.data_is_current(str(data_dir))
    (data_dir / "task.json").unlink()
    assert not toy.data_is_current(str(data_dir))


def colour_entropy(model_dir, train_path, n=8):
    """Mean entropy of the answer token's distribution renormalised over the ten colours, on the
    first n training examples' gold responses."""
    model, processor = rollout.load_model(model_dir, "float32", "cpu")
    tok = processor.tokenizer
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    exs = data.load_jsonl(train_path, report=lambda s: None)[:n]
    colour_ids = torch.tensor([tok(c)["input_ids"][0] for c in sorted(toy.COLOURS)])
    resp, _, first = zip(*[toy.grounded_tokens(tok, ex, eos) for ex in exs])
    ids, mask = rollout.pad_responses(list(resp), eos, tok.pad_token_id)
    prompts = [rollout.encode(processor, ex["question"], data.open_images(ex)) for ex in exs]
    out = rollout.score(model, prompts, ids, mask, support=colour_ids.expand(*ids.shape, -1))
    logp = out["support_logp"][torch.arange(n), torch.tensor(first)].log_softmax(-1)
    return -(logp.exp() * logp).sum(-1).mean().item()


def test_answer_smoothing_makes_the_warm_started_student_less_sure_of_its_colour(tmp_path):
    """Two warm starts from the same random weights on the same batches, one with the smoothing
    term: the smoothed one spreads its answer over the colours more."""
    train_path, _ = toy.build_data(str(tmp_path / "data"), n_train=16, n_eval=2)
    entropy = {}
    for w in (0.0, 1.0):
        model_dir = str(tmp_path / f"model{w}")
        toy.build_model(model_dir)
        toy.warm_start(model_dir, train_path, steps=4, batch_size=4, lr=2e-2, warmup=1, threads=1,
                       answer_smoothing=w)
        entropy[w] = colour_entropy(model_dir, train_path)
    assert entropy[1.0] > entropy[0.0] + 0.01, entropy
