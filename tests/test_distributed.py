"""train.py under torchrun on gloo: FSDP2 equals one process; resume is exact; sampling is safe."""
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(args, nproc=1, timeout=600):
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_port", str(29500 + os.getpid() % 1000)] + args
    else:
        cmd = [sys.executable] + args
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return res.stdout


def train_args(model_dir, train_path, eval_path, out_dir, steps=1, extra=()):
    return ["train.py", "--model", model_dir, "--train_data", train_path, "--eval_data", eval_path,
            "--out_dir", out_dir, "--steps", str(steps), "--prompts_per_step", "4", "--minibatch_prompts", "2",
            "--group_size", "4", "--max_new_tokens", "6", "--eval_n", "4", "--eval_samples", "1",
            "--topk", "5", "--lr", "1e-3", "--save_every", "0", "--threads", "1", *extra]


def metrics(out_dir):
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def weights(out_dir):
    return load_file(os.path.join(out_dir, "final", "model.safetensors"))


SAME = ("reward", "entropy", "kl", "div", "distilled_frac", "resp_len", "clip_frac_low", "clip_frac_high", "grad_norm")


def varied_lengths(train_path):
    """The training file with questions of three different lengths (so prompts are padded)."""
    out = os.path.join(os.path.dirname(train_path), "train_varied.jsonl")
    with open(train_path) as f, open(out, "w") as g:
        for i, line in enumerate(f):
            rec = json.loads(line)
            rec["question"] = "Look at the picture. " * (i % 3) + rec["question"]
            g.write(json.dumps(rec) + "\n")
    return out


def test_two_process_fsdp_step_equals_one_process(tiny, toy_data, tmp_path):
    _, train_path, eval_path = toy_data
    train_path = varied_lengths(train_path)          # unequal prompt lengths: padding differs per rank
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    run(train_args(tiny[2], train_path, eval_path, one))
    run(train_args(tiny[2], train_path, eval_path, two), nproc=2)
    m1, m2 = metrics(one)[1], metrics(two)[1]
    for k in SAME:
        assert m1[k] == pytest.approx(m2[k], rel=1e-4, abs=1e-6), k
    assert m1["distilled_frac"] > 0 and m1["div"] > 0          # the tutor term was really exercised
    assert m1["skipped"] == 0 and m2["skipped"] == 0
    w1, w2, w0 = weights(one), weights(two), load_file(os.path.join(tiny[2], "model.safetensors"))
    moved = 0
    for k in w1:
        assert torch.allclose(w1[k], w2[k], atol=1e-6, rtol=1e-5), k
        moved += int(not torch.equal(w1[k], w0[k]))
    assert moved > 10


def test_resume_is_exact(tiny, toy_data, tmp_path):
    _, train_path, eval_path = toy_data
    full, half = str(tmp_path / "full"), str(tmp_path / "half")
    run(train_args(tiny[2], train_path, eval_path, full, steps=4))
    run(train_args(tiny[2], train_path, eval_path, half, steps=2))
    out = run(train_args(tiny[2], train_path, eval_path, half, steps=4, extra=["--resume"]))
    assert "resumed from" in out
    a = {m["step"]: m for m in metrics(full) if "reward" in m}
    b = {m["step"]: m for m in metrics(half) if "reward" in m}
    assert sorted(b) == [1, 2, 3, 4]
    for step in (3, 4):
        for k in SAME:
            assert a[step][k] == b[step][k], (step, k)
    wa, wb = weights(full), weights(half)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_fsdp_sampling_with_ranks_stopping_at_different_lengths(tiny, toy_data, tmp_path):
    out = str(tmp_path / "tokens")
    run(["tests/fsdp_sample_worker.py", tiny[2], toy_data[1], out], nproc=2, timeout=300)
    lengths = []
    for r in (0, 1):
        got = torch.load(f"{out}.rank{r}", weights_only=True)
        assert torch.equal(got["ids"], got["ref_ids"]) and torch.equal(got["mask"], got["ref_mask"])
        lengths.append(got["ids"].shape[1])
    assert lengths[0] < lengths[1]
