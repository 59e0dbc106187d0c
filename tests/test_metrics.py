"""metrics.py without a model: the step's regime metrics and log line, the held-out text, the
collapse warning, metrics.jsonl on a full disk."""
import os

import pytest
import torch

import loss
import metrics
import train


def test_step_metrics_count_all_fail_all_pass_and_mixed_groups():
    G, R = 4, 3
    rewards = torch.tensor([0., 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0])      # fail, pass, mixed, fail
    N = len(rewards)
    zeros = torch.zeros(N, dtype=torch.bool)
    stats = dict.fromkeys(train.STATS, 0.0)
    m = metrics.step_metrics(0, G, rewards, rewards, zeros, torch.ones(N, R, dtype=torch.bool), torch.zeros(N, R),
                             zeros, zeros, stats, {}, (0, 1, 2, 3, 4))
    assert "div" in m and not set(m) & set(loss.DIVERGENCES)                  # one key, whichever divergence
    assert m["all_fail_frac"] == 0.5 and m["all_pass_frac"] == 0.25 and m["mixed_group_frac"] == 0.25
    assert "groups fail/pass 0.50/0.25" in metrics.log_line({**m, "div": 0.0}, "jsd")
    assert not any(k.startswith("groups/") for k in m)
    # with categories: the counts per category (fail, pass, mixed, fail -> a, b, a, b)
    m = metrics.step_metrics(0, G, rewards, rewards, zeros, torch.ones(N, R, dtype=torch.bool), torch.zeros(N, R),
                             zeros, zeros, stats, {}, (0, 1, 2, 3, 4), (["a", "b", "c"], ["a", "b", "a", "b"]))
    assert (m["groups/a"], m["mixed_groups/a"], m["all_fail_groups/a"]) == (2, 1, 1)
    assert (m["groups/b"], m["mixed_groups/b"], m["all_fail_groups/b"]) == (2, 0, 1)
    assert (m["groups/c"], m["mixed_groups/c"], m["all_fail_groups/c"]) == (0, 0, 0)


def test_eval_text_shows_each_bucket():
    m = {"eval_pass1": 0.4, "eval_pass1/easy": 0.7, "eval_pass1/hard": 0.1, "eval_pass8": 0.6,
         "eval_pass8/easy": 0.9, "eval_pass8/hard": 0.3}
    assert metrics.eval_text(m, 8) == ("held-out pass@1 0.400 (easy 0.700, hard 0.100) | "
                                      "pass@8 0.600 (easy 0.900, hard 0.300)")
    assert metrics.eval_text({"eval_pass1": 0.25}, 1) == "held-out pass@1 0.250"


def test_a_collapsed_policy_is_warned_about_once_after_three_steps(capsys):
    count = 0
    for _ in range(5):
        count = metrics.collapse_check({"reward": 0.0, "entropy": 0.0}, count)
    assert count == 5 and capsys.readouterr().out.count("WARNING: the policy has collapsed") == 1
    assert metrics.collapse_check({"reward": 0.1, "entropy": 0.0}, count) == 0
    assert metrics.collapse_check({"reward": 0.0, "entropy": 0.2}, 2) == 0


def test_a_full_disk_while_writing_metrics_is_one_line_and_the_file_is_kept(tmp_path, monkeypatch):
    import argparse
    import builtins
    import errno
    import json
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n')
    real = builtins.open

    def full(file, mode="r", *a, **k):
        if str(file).startswith(str(tmp_path)) and any(c in mode for c in "wa"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(file, mode, *a, **k)
    monkeypatch.setattr(builtins, "open", full)
    args = argparse.Namespace(out_dir=str(tmp_path), wandb="")
    with pytest.raises(SystemExit) as e:                  # a resume at step 1 rewrites the file first
        metrics.open_metrics(args, 0, 1)
    assert e.value.code.startswith(f"train.py: cannot rewrite {path}: No space left on device (errno 28);")
    monkeypatch.setattr(builtins, "open", real)
    emit = metrics.open_metrics(args, 0, 1)
    monkeypatch.setattr(builtins, "open", full)
    with pytest.raises(SystemExit) as e:
        emit({"step": 2})
    assert e.value.code.startswith(f"train.py: cannot append to {path}: No space left on device (errno 28);")
    monkeypatch.setattr(builtins, "open", real)
    assert [json.loads(x) for x in path.read_text().splitlines()] == [{"step": 1}] and os.listdir(tmp_path) == [
        "metrics.jsonl"]
