"""eval.py's front door: argument ranges in one line, --threads, and --compare on a folder that is
not a run."""
import pytest
import torch

import eval as eval_py


@pytest.mark.parametrize("flag,value", [("--n_samples", "0"), ("--limit", "-1"), ("--temperature", "-1"),
                                        ("--top_p", "0"), ("--top_p", "1.5"), ("--max_new_tokens", "0"),
                                        ("--kv_cache_gb", "0"), ("--threads", "-1"), ("--seed", "-1")])
def test_bad_arguments_are_refused_naming_the_flag(flag, value, capsys):
    with pytest.raises(SystemExit) as e:
        eval_py.get_args([flag, value])
    assert e.value.code == 2 and f"argument {flag}" in capsys.readouterr().err


def test_k_above_n_samples_is_refused(capsys):
    with pytest.raises(SystemExit):
        eval_py.get_args(["--n_samples", "2", "--k", "4"])
    assert "--k values must be in 1..2" in capsys.readouterr().err


def test_threads_sets_torch_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(eval_py, "setup", lambda: (_ for _ in ()).throw(SystemExit("stop after threads")))
    try:
        with pytest.raises(SystemExit, match="stop after threads"):
            eval_py.main(["--threads", "1"])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_compare_with_a_missing_run_is_one_line(tmp_path):
    with pytest.raises(SystemExit) as e:
        eval_py.main(["--compare", str(tmp_path / "no_such_run"), "--png", str(tmp_path / "c.png")])
    assert isinstance(e.value.code, str) and "no_such_run is not a run directory" in e.value.code
    assert "\n" not in e.value.code


def test_the_response_cap_defaults_to_the_runs_own_then_by_model(tmp_path):
    """A real model gets room for its answers (4,096 new tokens), the demo model 32, a run directory
    the cap it trained with; a flag always wins."""
    import json
    import toy
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "m", "eval_data": "e.jsonl", "max_new_tokens": 512}))
    (run / "metrics.jsonl").write_text("")
    cases = [(["--model", "some/model", "--data", "d.jsonl"], 4096), (["--model", "toy"], 32),
             (["--model", str(run)], 512), (["--model", str(run), "--max_new_tokens", "64"], 64),
             (["--model", toy.DEFAULT_DIR + "/model", "--data", "d.jsonl"], 32)]
    for argv, want in cases:
        args = eval_py.get_args(argv)
        eval_py.resolve_model(args)
        assert args.max_new_tokens == want, argv


def test_a_missing_model_path_is_named_not_a_missing_data_flag(tmp_path):
    missing = str(tmp_path / "no_such_model")
    for argv in (["--model", missing], ["--model", missing, "--data", str(tmp_path / "d.jsonl")]):
        with pytest.raises(SystemExit) as e:
            eval_py.main(argv + ["--threads", "1"])
        assert isinstance(e.value.code, str) and missing in e.value.code and "no such" in e.value.code, argv
        assert "--data is required" not in e.value.code and "\n" not in e.value.code


def test_diagnose_classes_the_demos_answers_per_bucket(tiny, toy_data, tmp_path, capsys):
    """eval.py --diagnose on demo problems: per bucket, what the student's answers name (the
    target's colour, another shape's, a colour absent from the picture, none), shares summing to 1."""
    import json
    _, _, model_dir = tiny
    out = tmp_path / "diag.json"
    eval_py.main(["--model", model_dir, "--data", toy_data[2], "--diagnose", "--limit", "6", "--n_samples", "2",
                  "--max_new_tokens", "24",
                  "--threads", "1", "--out", str(out)])
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    for bucket, r in res["by_bucket"].items():
        assert set(r["answers"]) == {"target", "marked", "other", "absent", "none"}
        assert abs(sum(r["answers"].values()) - 1) < 1e-9
        assert f"{bucket:5s}: student" in printed
    assert printed.count("student names: target") == len(res["by_bucket"])
