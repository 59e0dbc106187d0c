"""scripts/make_hints.py fails in one line (no traceback) on bad data, a damaged --out file and bad
arguments, and takes 'toy' for the demo model."""
import json
import os
import sys

import pytest
from PIL import Image

import data
import rollout

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
import make_hints  # noqa: E402


def _exit_message(argv):
    with pytest.raises(SystemExit) as e:
        make_hints.main(argv)
    return e.value.code


def test_a_data_file_data_py_refuses_is_one_line(tmp_path):
    out = str(tmp_path / "out.jsonl")
    msg = _exit_message(["--model", "toy", "--data", str(tmp_path / "missing.jsonl"), "--out", out])
    assert isinstance(msg, str) and msg.startswith("make_hints.py: data file not found") and "\n" not in msg
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "question": "q"\n')
    msg = _exit_message(["--model", "toy", "--data", str(bad), "--out", out])
    assert isinstance(msg, str) and "bad.jsonl" in msg and "\n" not in msg


def test_a_malformed_complete_line_in_out_is_named(tmp_path):
    out = tmp_path / "hints.jsonl"
    out.write_text('{"id": "a", "hint": {}}\n[1, 2]\n{"id": "c", "hint": {}}\n')
    with pytest.raises(data.DataError, match=r"hints.jsonl:2: not a record with an id"):
        make_hints.finished_ids(str(out))
    out.write_text('{"id": "a"}\nnot json at all\n')
    with pytest.raises(data.DataError, match=r"hints.jsonl:2:"):
        make_hints.finished_ids(str(out))


def test_model_toy_is_the_demo_model(tmp_path, monkeypatch):
    from demo import toy
    monkeypatch.setattr(toy, "ensure", lambda: (str(tmp_path / "demo_model"), "train", "eval"))
    seen = []

    def fake_load(path, **kw):
        seen.append(path)
        raise SystemExit("stop here")
    monkeypatch.setattr(rollout, "load_model", fake_load)
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    (tmp_path / "d.jsonl").write_text(json.dumps({"id": 1, "image": "a.png", "question": "q?", "answer": "red"}) + "\n")
    monkeypatch.chdir(tmp_path)      # a folder named toy/ here must not be taken for the model
    (tmp_path / "toy").mkdir()
    with pytest.raises(SystemExit, match="stop here"):
        make_hints.main(["--model", "toy", "--data", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "o.jsonl")])
    assert seen == [str(tmp_path / "demo_model")]


@pytest.mark.parametrize("flag,value", [("--batch_size", "0"), ("--max_new_tokens", "0"), ("--retries", "-1"),
                                        ("--temperature", "-1"), ("--temperature", "nan"), ("--seed", "-1")])
def test_bad_arguments_are_refused_naming_the_flag(flag, value, capsys):
    code = _exit_message(["--model", "toy", "--data", "d.jsonl", "--out", "o.jsonl", flag, value])
    assert code == 2 and f"argument {flag}" in capsys.readouterr().err


def test_a_problem_whose_hint_is_rejected_is_kept_without_one(tmp_path, monkeypatch, capsys):
    """Two problems: the expert's reply for one is a valid hint, for the other it names the answer
    (the zero-spoiler filter rejects it). Both are written; only the first has a hint."""
    for name in ("a", "b"):
        Image.new("RGB", (64, 64)).save(tmp_path / f"{name}.png")
    recs = [{"id": "a", "image": "a.png", "question": "What colour is the shape?", "answer": "red"},
            {"id": "b", "image": "b.png", "question": "What colour is the shape?", "answer": "blue",
             "hint": {"regions": [], "steps": ["an old hint, replaced"]}}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    good = json.dumps({"regions": [{"box": [0, 0, 32, 32], "label": "the shape", "role": "focus"}],
                       "steps": ["Find the shape.", "Name the colour of its fill."]})
    leak = json.dumps({"regions": [], "steps": ["The answer is blue.", "Say blue."]})
    monkeypatch.setattr(rollout, "load_model", lambda *a, **k: (None, None))
    monkeypatch.setattr(rollout, "opens_think", lambda processor: False)
    monkeypatch.setattr(rollout, "generate_text",
                        lambda model, processor, images, prompts, **kw: [good if "answer is: red" in p else leak for p in prompts])
    out = tmp_path / "out.jsonl"
    assert make_hints.main(["--model", "x", "--data", str(tmp_path / "d.jsonl"), "--out", str(out), "--retries", "1"]) == 0
    written = {r["id"]: r for r in map(json.loads, open(out))}
    log = capsys.readouterr().out
    assert set(written) == {"a", "b"} and "1  accepted" in log and "spoiler" in log
    assert written["a"]["hint"]["steps"][0] == "Find the shape." and "hint" not in written["b"]
    assert data.load_jsonl(str(out), report=lambda s: None)[1]["answer"] == "blue"   # still a training problem
