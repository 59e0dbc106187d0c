"""data.py: each kind of bad record is named by file, line and field; good records go on."""
import json

import pytest
from PIL import Image

import data


def write(tmp_path, records, raw_lines=()):
    Image.new("RGB", (32, 32), (255, 0, 0)).save(tmp_path / "ok.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    path = tmp_path / "d.jsonl"
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        for line in raw_lines:
            f.write(line + "\n")
    return str(path)


GOOD = {"id": "a", "image": "ok.png", "question": "What colour?", "answer": "red",
        "hint": {"steps": ["Find the square."]}}


def test_bad_records_are_named_and_skipped(tmp_path):
    path = write(tmp_path, [
        GOOD,                                                              # line 1
        {**GOOD, "id": "b", "image": "corrupt.png"},                       # line 2
        {**GOOD, "id": "c", "image": "missing.png"},                       # line 3
        {**GOOD, "id": "d", "answer": "  "},                               # line 4
        {**GOOD, "id": "e", "hint": {"steps": ["The answer is red."]}},    # line 5
        {**GOOD, "id": "f", "question": ""},                               # line 6
        {**GOOD, "id": "a"},                                               # line 7 duplicate id
        {**GOOD, "id": "g", "hint": {"regions": [{"box": [0, 0, 99, 5], "label": "x"}]}},  # line 8
        {**GOOD, "id": "h", "hint": None, "hint_text": "Look at the square."},            # line 9
    ], raw_lines=["{not json"])                                            # line 10
    msgs = []
    exs = data.load_jsonl(path, report=msgs.append)
    text = "\n".join(msgs)
    assert f"{path}:2: field 'image': unreadable image" in text
    assert f"{path}:3: field 'image': file not found" in text
    assert f"{path}:4: field 'answer': missing or empty" in text
    assert f"{path}:5: field 'hint': spoiler" in text and "hint dropped, problem kept" in text
    assert f"{path}:6: field 'question': missing or empty" in text
    assert f"{path}:7: field 'id': duplicate" in text
    assert f"{path}:8: field 'hint': hint.regions[0].box" in text
    assert f"{path}:10: invalid JSON" in text
    assert [e["id"] for e in exs] == ["a", "e", "g", "h"]
    assert exs[1]["hint"] is None and exs[0]["hint"] is not None and exs[3]["hint_text"] == "Look at the square."
    assert "4 examples loaded, 6 skipped, 2 hints dropped" in text


def test_strict_stops_at_the_first_problem(tmp_path):
    path = write(tmp_path, [GOOD, {**GOOD, "id": "b", "answer": ""}])
    with pytest.raises(data.DataError, match=r"d.jsonl:2: field 'answer'"):
        data.load_jsonl(path, strict=True, report=lambda s: None)


def test_no_valid_record_is_an_error(tmp_path):
    path = write(tmp_path, [{**GOOD, "answer": ""}])
    with pytest.raises(data.DataError, match="no valid examples"):
        data.load_jsonl(path, report=lambda s: None)


def test_prompt_length_is_exact_and_long_prompts_are_skipped_not_truncated(tiny, examples):
    import rollout
    import train
    model, processor, _ = tiny
    for ex in examples[:3]:
        n = len(rollout.encode(processor, ex["question"], data.open_images(ex))["input_ids"])
        assert train.prompt_length(processor, ex) == n
    long_ex = {**examples[0], "question": "Describe it. " * 400, "where": "x.jsonl:7"}
    kept = train.check_lengths([examples[0], long_ex], processor, 200, strict=False)
    assert kept == [examples[0]]
    with pytest.raises(data.DataError, match=r"x.jsonl:7: field 'question': prompt is \d+ tokens"):
        train.check_lengths([long_ex], processor, 200, strict=True)
