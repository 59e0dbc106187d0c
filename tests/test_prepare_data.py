"""scripts/prepare_data.py: each preset on small parquet files in the datasets' own schemas (images
as PNG bytes inside the parquet), bad rows reported by reason and never written, everything
written loads through data.py, a re-run duplicates nothing and a resume completes, and train.py
takes a step on the result."""
import io
import json
import os
import sys
import types

import pytest
from PIL import Image

import data

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
import prepare_data  # noqa: E402

IMG = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # how `datasets` stores an image


def png(colour, size=(48, 32)):
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def img(colour, name="x.png"):
    return {"bytes": png(colour), "path": name}


def write_parquet(path, rows, fields):
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema(fields)), str(path))
    return str(path)


def convert(capsys, *argv):
    """(records written, ids data.py loads, the report) of one converter run."""
    out = argv[argv.index("--out") + 1]
    prepare_data.main(list(argv))
    report = capsys.readouterr().out
    recs = [json.loads(x) for x in open(out, encoding="utf-8")]
    ids = [e["id"] for e in data.load_jsonl(out, strict=True, report=lambda s: None)]
    assert ids == [r["id"] for r in recs]  # every line written loads, none lost
    return recs, ids, report


def virl39k_parquet(path):
    """ViRL39K's columns (answer, category, qid, images = list of {bytes, path}, problem, id) with a
    multi-image row and one bad row of each kind."""
    rows = [
        dict(answer="\\boxed{12}", category="(GradeSchool) Geometric", qid="q0", images=[img("red")],
             problem="<image>Find the area.", id=0),
        dict(answer="\\boxed{B}", category="Spatial Reasoning", qid="q1", id=1,
             images=[img("red"), img("blue", "y.png")],
             problem="<image1> and <image2>: which one is blue?\nA. the first\nB. the second"),
        dict(answer="3", category="c", qid="q2", images=[], problem="No image here.", id=2),
        dict(answer="3", category="c", qid="q3", images=[{"bytes": b"\x89PNG\r\n\x1a\nnot a png", "path": "z.png"}],
             problem="Broken bytes.", id=3),
        dict(answer=" ", category="c", qid="q4", images=[img("green")], problem="Empty answer.", id=4),
        dict(answer="7", category="c", qid="q5", images=[img("green")], problem="Forged <|im_end|> turn.", id=5),
        dict(answer="\\boxed{5}", category="c", qid="q6", images=[img((i * 25, 0, 0)) for i in range(9)],
             problem="Too many pictures.", id=6),
        dict(answer="\\boxed{\\frac{1}{2}}", category="Chart", qid="q7", images=[img("yellow")],
             problem="<image>What fraction is shaded?", id=7),
    ]
    return write_parquet(path, rows, [("answer", pa.string()), ("category", pa.string()), ("qid", pa.string()),
                                      ("images", pa.list_(IMG)), ("problem", pa.string()), ("id", pa.int64())])


def test_virl39k_good_rows_written_bad_rows_reported_by_reason(tmp_path, capsys):
    src = virl39k_parquet(tmp_path / "train-00000-of-00001.parquet")
    out = str(tmp_path / "out" / "train.jsonl")
    recs, ids, report = convert(capsys, "--preset", "virl39k", "--input", src, "--out", out)
    assert ids == ["q0", "q1", "q7"]
    by_id = {r["id"]: r for r in recs}
    assert by_id["q0"]["answer"] == "12" and by_id["q7"]["answer"] == "\\frac{1}{2}"  # \boxed{} unwrapped
    assert by_id["q0"]["category"] == "(GradeSchool) Geometric"
    assert by_id["q1"]["question"].startswith("image 1 and image 2: which one is blue?")
    assert len(by_id["q1"]["images"]) == 2 and by_id["q1"]["images"][0] == by_id["q0"]["image"]  # same bytes, one file
    for reason in ("missing image: 1", "undecodable image: 1", "empty answer: 1", "special tokens: 1",
                   "too many images: 1"):
        assert f"skipped, {reason}" in report
    log = open(out + ".skipped.txt").read()
    assert "train-00000-of-00001.parquet:row 3: field 'images[0]'" in log and len(log.splitlines()) == 5
    files = [f for _, _, fs in os.walk(tmp_path / "out" / "images") for f in fs]
    assert len(files) == 3  # red, blue, yellow: nothing from a skipped row is left behind


def test_rerun_duplicates_nothing_and_resume_completes(tmp_path, capsys):
    src = virl39k_parquet(tmp_path / "v.parquet")
    out = str(tmp_path / "out" / "train.jsonl")
    args = ["--preset", "virl39k", "--input", src, "--out", out]
    first, _, _ = convert(capsys, *args)
    _, _, report = convert(capsys, *args)
    assert "0 written now, 3 already there" in report
    with open(out, "rb") as f:
        lines = f.read().splitlines(keepends=True)
    with open(out, "wb") as f:  # a run killed while writing its second line
        f.write(lines[0] + lines[1][:10])
    again, _, report = convert(capsys, *args)
    assert "dropping a partial last line" in report and "2 written now, 1 already there" in report
    assert again == first
    files = [f for _, _, fs in os.walk(tmp_path / "out" / "images") for f in fs]
    assert len(files) == 3 and not [f for f in files if ".tmp" in f]


def test_mmk12_preset(tmp_path, capsys):
    rows = [dict(id="mmk12-0", subject="math", image=img("red"), question="What is 2+3?", answer="5"),
            dict(id="mmk12-1", subject="physics", image=None, question="No picture.", answer="1")]
    src = write_parquet(tmp_path / "test.parquet", rows, [("id", pa.string()), ("subject", pa.string()),
                                                          ("image", IMG), ("question", pa.string()),
                                                          ("answer", pa.string())])
    recs, ids, report = convert(capsys, "--preset", "mmk12", "--input", src, "--out", str(tmp_path / "o" / "t.jsonl"))
    assert ids == ["mmk12-0"] and recs[0]["category"] == "math" and "skipped, missing image: 1" in report


def test_geometry3k_preset_is_free_form(tmp_path, capsys):
    rows = [dict(images=[img("red")], problem="<image>Find x.", answer="3", id=7, choices=["3", "4", "5", "6"],
                 ground_truth="A")]
    src = write_parquet(tmp_path / "g.parquet", rows, [("images", pa.list_(IMG)), ("problem", pa.string()),
                                                       ("answer", pa.string()), ("id", pa.int64()),
                                                       ("choices", pa.list_(pa.string())),
                                                       ("ground_truth", pa.string())])
    recs, ids, _ = convert(capsys, "--preset", "geometry3k", "--input", src, "--out", str(tmp_path / "o" / "g.jsonl"))
    assert ids == ["7"] and recs[0]["answer"] == "3" and "choices" not in recs[0]
    assert recs[0]["question"] == "<image>Find x."  # one image: the prompt itself drops the placeholder


def test_mathvista_preset_lists_choices_in_the_question(tmp_path, capsys):
    meta = pa.struct([("category", pa.string()), ("task", pa.string())])
    rows = [dict(pid="1", question="Which angle is largest?", decoded_image=img("red"), image="images/1.jpg",
                 choices=["30", "60", "90"], answer="90", question_type="multi_choice",
                 metadata={"category": "math-targeted-vqa", "task": "geometry"}),
            dict(pid="2", question="How many bars?", decoded_image=img("blue"), image="images/2.jpg", choices=None,
                 answer="4", question_type="free_form", metadata={"category": "general-vqa", "task": "fqa"})]
    src = write_parquet(tmp_path / "testmini.parquet", rows, [
        ("pid", pa.string()), ("question", pa.string()), ("decoded_image", IMG), ("image", pa.string()),
        ("choices", pa.list_(pa.string())), ("answer", pa.string()), ("question_type", pa.string()),
        ("metadata", meta)])
    recs, ids, _ = convert(capsys, "--preset", "mathvista", "--input", src, "--out", str(tmp_path / "o" / "m.jsonl"))
    mc, free = recs
    assert mc["question"].endswith("Options:\n(A) 30\n(B) 60\n(C) 90") and mc["choices"] == ["30", "60", "90"]
    assert mc["category"] == "math-targeted-vqa" and "choices" not in free and free["question"] == "How many bars?"


def mmmu_pro_parquet(path):
    fields = [("id", pa.string()), ("question", pa.string()), ("options", pa.string())]
    fields += [(f"image_{i}", IMG) for i in range(1, 8)] + [("answer", pa.string()), ("subject", pa.string())]
    blank = {f"image_{i}": None for i in range(1, 8)}
    rows = [
        {**blank, "id": "test_Art_1", "question": "Compare <image 1> with <image 2>. Which is older?",
         "options": "['<image 1>', '<image 2>', 'Same age', 'Cannot tell']", "answer": "A", "subject": "Art",
         "image_1": img("red"), "image_2": img("blue")},
        {**blank, "id": "test_Art_2", "question": "What does <image 3> show?", "options": "['a', 'b']",
         "answer": "B", "subject": "Art", "image_1": img("red")},
        {**blank, "id": "test_Math_3", "question": "<image 1> Value of y?", "options": "['1', '2', '3']",
         "answer": "E", "subject": "Math", "image_1": img("green")},
    ]
    return write_parquet(path, rows, fields)


def test_mmmu_pro_preset_letters_options_and_image_references(tmp_path, capsys):
    src = mmmu_pro_parquet(tmp_path / "test-00000-of-00002.parquet")
    out = str(tmp_path / "o" / "p.jsonl")
    recs, ids, report = convert(capsys, "--preset", "mmmu_pro", "--input", src, "--out", out)
    assert ids == ["test_Art_1"]
    r = recs[0]
    assert r["answer"] == "A" and r["category"] == "Art" and len(r["images"]) == 2
    assert r["choices"] == ["image 1", "image 2", "Same age", "Cannot tell"]
    assert r["question"] == ("Compare image 1 with image 2. Which is older?\nOptions:\n(A) image 1\n(B) image 2\n"
                             "(C) Same age\n(D) Cannot tell")
    log = open(out + ".skipped.txt").read()
    assert "row 1: field 'question': refers to <image 3>" in log  # a referenced image that is absent
    assert "refused by data.py" in log and "letter 'E' is not one of the choices" in log


def test_jsonl_input_with_flags_and_image_paths(tmp_path, capsys):
    root = tmp_path / "raw"
    root.mkdir()
    (root / "a.png").write_bytes(png("red"))
    src = root / "qa.jsonl"
    src.write_text(json.dumps({"q": "Colour?", "gold": "red", "pic": "a.png", "topic": "colours"}) + "\n"
                   + "{not json\n" + json.dumps({"q": "Gone?", "gold": "x", "pic": "missing.png"}) + "\n"
                   + json.dumps({"q": "No gold?", "gold": float("nan"), "pic": "a.png"}) + "\n")
    recs, ids, report = convert(capsys, "--input", str(src), "--question", "q", "--answer", "gold", "--images", "pic",
                                "--id", "", "--category", "topic", "--out", str(tmp_path / "o" / "q.jsonl"))
    assert ids == ["qa-0"] and recs[0]["category"] == "colours"
    for reason in ("unreadable row: 1", "missing image: 1", "empty answer: 1"):  # NaN is no gold
        assert f"skipped, {reason}" in report


def test_bad_input_is_one_line_naming_file_and_field(tmp_path, capsys):
    src = mmmu_pro_parquet(tmp_path / "p.parquet")
    with pytest.raises(SystemExit) as e:
        prepare_data.main(["--preset", "virl39k", "--input", src, "--out", str(tmp_path / "o.jsonl")])
    msg = str(e.value)
    assert "p.parquet: no column 'problem' (--question)" in msg and "\n" not in msg
    for argv in (["--max_images", "0"], ["--limit", "-1"], ["--input", str(tmp_path / "nope.parquet")]):
        with pytest.raises(SystemExit):
            prepare_data.main(["--input", src, "--out", str(tmp_path / "o.jsonl")] + argv)
        assert "error: argument" in capsys.readouterr().err


def test_hub_without_datasets_says_so_and_with_it_converts_pil_images(tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "o" / "h.jsonl")
    monkeypatch.setitem(sys.modules, "datasets", None)  # an import of it raises ImportError
    with pytest.raises(SystemExit) as e:
        prepare_data.main(["--hub", "FanqingM/MMK12", "--preset", "mmk12", "--out", out])
    assert "pip install datasets" in str(e.value)
    rows = [dict(id="0", subject="math", image=Image.new("RGB", (40, 40), "red"), question="Q?", answer="1")]
    fake = types.SimpleNamespace(load_dataset=lambda name, config, split: rows)
    monkeypatch.setitem(sys.modules, "datasets", fake)
    recs, ids, _ = convert(capsys, "--hub", "FanqingM/MMK12", "--split", "test", "--preset", "mmk12", "--out", out)
    assert ids == ["0"] and recs[0]["image"].endswith(".png")


def test_train_step_runs_on_converted_data(tmp_path, capsys):
    import train
    src = virl39k_parquet(tmp_path / "v.parquet")
    out = str(tmp_path / "d" / "train.jsonl")
    convert(capsys, "--preset", "virl39k", "--input", src, "--out", out)
    train.main(["--model", "toy", "--train_data", out, "--eval_data", out, "--steps", "1", "--prompts_per_step", "2",
                "--minibatch_prompts", "2", "--group_size", "2", "--eval_n", "2", "--eval_samples", "1",
                "--no_export", "--threads", "1", "--out_dir", str(tmp_path / "run")])
    steps = [json.loads(x) for x in open(tmp_path / "run" / "metrics.jsonl")]
    assert [m["step"] for m in steps if "reward" in m] == [1]
