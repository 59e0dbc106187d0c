"""toy.py: a deterministic task, clean hints, a frame only where the hint points, and a
shipped checkpoint whose diagnostics match the README."""
import json
import os
import random

import numpy as np
import pytest

import data
import hints
import rollout
import toy


def test_task_generation_is_deterministic(tmp_path):
    a = toy.write_split(str(tmp_path / "a"), "train", 20, seed=3, min_objects=1, max_objects=4)
    b = toy.write_split(str(tmp_path / "b"), "train", 20, seed=3, min_objects=1, max_objects=4)
    assert open(a).read() == open(b).read()
    for i in range(20):
        pa = np.array(open_png(tmp_path / "a" / "images" / f"train_{i:05d}.png"))
        pb = np.array(open_png(tmp_path / "b" / "images" / f"train_{i:05d}.png"))
        assert (pa == pb).all()
    c = toy.write_split(str(tmp_path / "c"), "train", 20, seed=4, min_objects=1, max_objects=4)
    assert open(a).read().replace("/a/", "/") != open(c).read()


def open_png(p):
    from PIL import Image
    return Image.open(p).convert("RGB")


def test_every_hint_of_1000_examples_is_spoiler_free_and_valid():
    rng = random.Random(0)
    for _ in range(1000):
        img, ex = toy.make_example(rng, rng.randint(1, 4))
        h = hints.validate_hint(ex["hint"], img.size)
        assert hints.find_spoiler(hints.hint_words(h), ex["answer"]) is None
        assert hints.find_spoiler(hints.render_hint(h, img.size), ex["answer"]) is None
        assert ex["answer"] in toy.COLOURS and ex["answer"] in ex["gold_response"]


def test_framed_copy_differs_only_around_the_focus_region():
    rng = random.Random(1)
    for _ in range(50):
        img, ex = toy.make_example(rng, 4)
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
    model_dir, _, eval_path = toy.ensure()
    with open(os.path.join(model_dir, "diagnostics.json")) as f:
        shipped = json.load(f)
    # the recorded numbers (400 held-out problems) meet the regime, and say how they were made
    assert toy.regime_failures(shipped) == [] and shipped["regime"] is True
    assert shipped["command"].startswith("python toy.py") and shipped["seed"] == 0 and shipped["torch"]
    model, processor = rollout.load_model(model_dir, "float32", "cpu")
    exs = data.load_jsonl(eval_path, report=lambda s: None)[:150]
    res = toy.diagnose(model, processor, exs, seed=0, tmp_dir=str(tmp_path))
    for k in ("student", "tutor", "blank"):
        assert abs(res[k] - shipped[k]) <= 0.1, (k, res[k], shipped[k])
    # on 150 problems, sampling noise is ~4 points: the regime with half its margins
    assert res["student"] >= res["blank"] + 0.05 and res["student"] <= 0.65
    assert res["tutor"] >= res["student"] + 0.2


def test_regime_check_names_what_is_missed():
    ok = {"student": 0.30, "tutor": 0.95, "blank": 0.15}
    assert toy.regime_failures(ok) == []
    toy.check_regime(ok)                                     # met: returns quietly
    misses = {"blind student": {"student": 0.152, "tutor": 0.195, "blank": 0.152},
              "student too good": {"student": 0.70, "tutor": 1.00, "blank": 0.15},
              "useless hint": {"student": 0.30, "tutor": 0.50, "blank": 0.15},
              "narrow miss": {"student": 0.23, "tutor": 0.785, "blank": 0.133}}
    for name, res in misses.items():
        assert toy.regime_failures(res), name
        with pytest.raises(SystemExit) as e:
            toy.check_regime(res)
        assert e.value.code not in (0, None) and "teaching regime" in str(e.value.code), name


def test_toy_build_exits_nonzero_when_the_regime_is_missed(tmp_path):
    """A 1-step warm start cannot read pictures: the build must say so and exit non-zero,
    after writing its diagnostics."""
    argv = ["--out_dir", str(tmp_path), "--steps", "1", "--n_train", "16", "--n_eval", "8", "--diag_n", "8",
            "--threads", "1"]
    with pytest.raises(SystemExit) as e:
        toy.main(argv)
    assert e.value.code not in (0, None)
    with open(tmp_path / "model" / "diagnostics.json") as f:
        diag = json.load(f)
    assert diag["regime"] is False and diag["seed"] == 0 and diag["n"] == 8
    assert diag["command"] == "python toy.py " + " ".join(argv)
    toy.main(argv + ["--no_check"])                          # the same build, told not to check
