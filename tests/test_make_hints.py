"""make_hints.py fails in one line (no traceback) on bad data, a damaged --out file and bad
arguments, and takes 'toy' for the demo model."""
import json

import pytest
from PIL import Image

import data
import make_hints
import rollout


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
    import toy
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
