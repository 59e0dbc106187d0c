"""eval.py's front door: argument ranges in one line, --threads, and --compare on a folder that is
not a run; scoring a cut response as training does; a cap that fits the model; a run's config.json
checked; the summary's eval.py commands reproduce the summary."""
import os
import re
import shlex

import pytest
import torch

import eval as eval_py
from demo import toy


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
    from demo import toy
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

# -----------------------------------------------------------------------------
# scoring as training does, a cap that fits the model, a run's config.json checked where it is read


def test_a_response_cut_before_eos_is_scored_wrong_as_training_scores_it(tiny, examples, monkeypatch):
    """The same right answer, once finished with EOS and once cut at the cap: held-out scoring
    (eval.pass_counts, used by eval.py and train.py) and training's reward both give 1 and 0."""
    import rollout
    import train
    _, processor, _ = tiny
    ex, tok, eos = examples[0], processor.tokenizer, rollout.eos_id(processor)
    body = tok(f"<think>look</think><answer>{ex['answer']}</answer>", add_special_tokens=False)["input_ids"]
    ids, mask = rollout.pad_responses([torch.tensor(body + [eos]), torch.tensor(body)], eos, tok.pad_token_id)
    monkeypatch.setattr(rollout, "sample", lambda *a, **k: (ids, mask))
    out = eval_py.pass_counts(None, processor, [{}, {}], [ex, ex], 1, len(body))
    assert out["correct"].tolist() == [1.0, 0.0] and out["cut"].tolist() == [0.0, 1.0]
    assert train.rewards_of(processor, ids, mask, [ex], torch.tensor([0, 0]))[0].tolist() == [1.0, 0.0]


def test_eval_warns_once_with_the_share_of_responses_cut(tiny, toy_data, tmp_path, capsys):
    """A random model never says EOS within 4 tokens: every row is cut, scored wrong, and said once."""
    res = eval_py.main(["--model", tiny[2], "--data", toy_data[2], "--limit", "2", "--n_samples", "2",
                        "--max_new_tokens", "4", "--threads", "1"])
    printed = capsys.readouterr().out
    assert res["pass@1"] == 0 and res["cut_frac"] == 1.0
    warnings = [line for line in printed.splitlines() if "were cut" in line]
    assert warnings == ["eval.py: warning: 4 of 4 responses (100.0%) were cut at --max_new_tokens 4 before the "
                        "end-of-sequence token and are scored wrong, as training's reward scores them; raise "
                        "--max_new_tokens if answers need more room"]


def test_a_default_cap_fits_the_models_positions_and_a_chosen_one_is_kept(tiny, toy_data, monkeypatch, capsys):
    """The tiny model has 2,048 positions: the 4,096-token default becomes 2,048 minus the longest
    prompt; a cap given as a flag is kept, with a warning."""
    seen = []

    def counts(model, processor, prompts, exs, n, max_new_tokens, *a, **k):
        seen.append((max(len(p["input_ids"]) for p in prompts), max_new_tokens))
        z = torch.zeros(len(prompts))
        return {"correct": z, "cut": z, "length": z + 1, "entropy": z, "texts": [""] * len(prompts) * n}
    monkeypatch.setattr(eval_py, "pass_counts", counts)
    positions = tiny[0].config.get_text_config().max_position_embeddings
    base = ["--model", tiny[2], "--data", toy_data[2], "--limit", "3", "--n_samples", "1", "--threads", "1"]
    eval_py.main(base)
    (longest, cap), = seen
    assert positions == 2048 and cap == positions - longest
    assert f"--max_new_tokens 4096 lowered to {cap}: the model's 2048 positions" in capsys.readouterr().out
    eval_py.main(base + ["--max_new_tokens", "3000"])
    assert seen[1][1] == 3000 and "--max_new_tokens 3000 runs past the model's 2048 positions" in capsys.readouterr().out


def test_a_run_without_an_export_points_at_its_checkpoints(tmp_path):
    (tmp_path / "config.json").write_text('{"model": "m", "eval_data": "e.jsonl"}')
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(SystemExit) as e:
        eval_py.main(["--model", str(tmp_path), "--threads", "1"])
    assert "the run has no final/ export" in e.value.code and "--checkpoint" in e.value.code


@pytest.mark.parametrize("content", ['{"model": "m", "max_new_tokens": "32"}', '{"model": "m", "max_new_tokens": true}',
                                     '{"model": 5}', '{"model": "m", "eval_data": 3}', '{"eval_data": "e.jsonl"}',
                                     '["model"]', '{"model": "toy", garbage', '\udcff'])
def test_a_runs_config_json_that_is_not_what_it_should_be_is_one_line_naming_it(content, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / "step_000001").mkdir(parents=True)
    (run / "config.json").write_bytes(content.encode("utf-8", "surrogateescape"))
    (run / "metrics.jsonl").write_text("")
    with pytest.raises(SystemExit) as e:
        eval_py.main(["--model", str(run), "--checkpoint", str(run / "checkpoints" / "step_000001"), "--threads", "1"])
    msg = e.value.code
    assert isinstance(msg, str) and "\n" not in msg and str(run / "config.json") in msg, msg


def _summary(log):
    """train.py's summary as {(column, key): printed text}; keys as eval.py's --out names them."""
    got = {}
    for line in log[log.index("held-out, no hints"):].splitlines():
        m = re.match(r"^  (pass@\d+)( \w+)?\s+(\S+)\s+(\S+)(?:\s+(\S+) / (\S+))?(?:\s+(\S+))?$", line)
        if m:
            key = m[1] + (f"/{m[2].strip()}" if m[2] else "")
            got.update({("before", key): m[3], ("after", key): m[4]})
            if m[5]:
                blank = "blank_" + key
                got.update({("before", blank): m[5], ("after", blank): m[6]})
            if m[7]:                                          # all-fail at step 0: the start model's
                got[("before", "all_fail" + key[len(m[1]):])] = m[7]
        m = re.match(r"^  (\w+) answers name: (.*)$", line)
        if m:
            for name, before, after in re.findall(r"(\w+) (\S+) -> (\S+)", m[2]):
                got.update({("before", f"answers/{m[1]}/{name}"): before, ("after", f"answers/{m[1]}/{name}"): after})
    return got


@pytest.mark.skipif(not os.path.exists(os.path.join(toy.DEFAULT_DIR, "model", "config.json")),
                    reason="the shipped demo checkpoint is missing")
def test_the_summarys_eval_commands_reproduce_every_number_it_prints(toy_data, tmp_path):
    """A one-step run of the demo model at a high lr and T, so that its numbers are neither 0 nor 1
    and move: each eval.py command the summary prints gives its column's numbers, every one (both
    buckets, pass@1 and pass@4, the blank-image line, the all-fail share, what the answers name)."""
    from test_distributed import run
    log = run(["train.py", "--model", os.path.join(toy.DEFAULT_DIR, "model"), "--train_data", toy_data[1],
               "--eval_data", toy_data[2], "--out_dir", str(tmp_path / "run"), "--steps", "1", "--prompts_per_step",
               "4", "--minibatch_prompts", "2", "--eval_n", "8", "--eval_samples", "4", "--eval_blank", "1",
               "--temperature", "1.5", "--lr", "5e-3", "--warmup_steps", "0", "--threads", "1"])
    printed = _summary(log)
    cats = {k.split("/")[1] for _, k in printed if k.startswith("pass@1/")}
    keys = {k for _, k in printed}
    assert len(cats) >= 2 and {"pass@1", "pass@4", "blank_pass@1", "all_fail"} <= keys, printed
    assert all({f"pass@4/{c}", f"blank_pass@1/{c}", f"all_fail/{c}", f"answers/{c}/target"} <= keys for c in cats)
    assert any(printed[("before", k)] != printed[("after", k)] for _, k in printed)
    assert any(v not in ("0.000", "1.000", "0.00", "1.00") for v in printed.values())
    for column, label in (("after", "final model"), ("before", "start model")):
        line = next(x for x in log.splitlines() if x.strip().startswith(label + ":"))
        cmd = shlex.split(line[line.index("(python ") + len("(python "):line.rindex(")")])
        assert cmd[0] == "eval.py"
        res = eval_py.main(cmd[1:] + ["--threads", "1"])
        for (col, key), text in printed.items():
            if col == column:
                digits = 2 if key.startswith("answers/") else 3
                assert f"{res[key]:.{digits}f}" == text, (column, key, res[key], text)


def test_with_hints_reads_the_context_and_hint_style_asked_for(tiny, toy_data, monkeypatch, capsys):
    """--with_hints scores the tutor's prompt as training builds it (tutor.tutor_prompt) for the
    --tutor_context and --hint_style given: the hint, the hint as prose, the gold answer; both flags
    are refused without --with_hints, where there is no tutor to read them."""
    import data
    import rollout
    import tutor
    model, processor, d = tiny
    exs = data.load_jsonl(toy_data[2], report=lambda s: None)[:2]
    seen = []

    class Stop(Exception):
        pass

    def record(model, processor, prompts, *a, **k):
        seen.append([p["input_ids"] for p in prompts])
        raise Stop
    monkeypatch.setattr(eval_py, "pass_counts", record)
    readings = {}
    for flags, ctx, style in ((["--with_hints"], "hint", "structured"),
                              (["--with_hints", "--hint_style", "text"], "hint", "text"),
                              (["--with_hints", "--tutor_context", "answer"], "answer", "structured")):
        args = eval_py.get_args(["--n_samples", "1", "--max_new_tokens", "8"] + flags)
        args.default_cap = False                                   # what resolve_model sets
        with pytest.raises(Stop):
            eval_py.evaluate(model, processor, exs, args)
        want = [tutor.tutor_prompt(processor, ex, rollout.box_format(model), ctx, style)["input_ids"]
                for ex in exs]
        assert len(seen[-1]) == len(want) == 2
        assert all(torch.equal(torch.as_tensor(a), torch.as_tensor(b)) for a, b in zip(seen[-1], want))
        readings[(ctx, style)] = [torch.as_tensor(a).tolist() for a in seen[-1]]
    assert len({str(v) for v in readings.values()}) == 3          # three different prompts
    for flags in (["--hint_style", "text"], ["--tutor_context", "answer"],
                  ["--with_hints", "--diagnose", "--hint_style", "text"]):
        with pytest.raises(SystemExit):
            eval_py.get_args(flags)
        assert "use them with --with_hints" in capsys.readouterr().err
    for ctx in ("none", "unanswer"):                 # training's controls: no tutor prompt to score
        with pytest.raises(SystemExit):
            eval_py.get_args(["--with_hints", "--tutor_context", ctx])
        assert f"--tutor_context {ctx} is a training control" in capsys.readouterr().err
