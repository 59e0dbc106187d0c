"""scripts/summarise.py: packing keeps what the tables need and skips unfinished runs; the tables'
means and the paired 95% t intervals equal a hand computation."""
import json
import math
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
import summarise  # noqa: E402

HARD = {("grpo", 1): (0.50, 0.90), ("grpo", 2): (0.60, 0.70), ("grpo", 3): (0.40, 0.95),
        ("ptdpo", 1): (0.80, 0.97), ("ptdpo", 2): (0.90, 0.99), ("ptdpo", 3): (0.70, 0.96)}


def write_run(root, name, algo, seed, hard, finished=True, start=True):
    d = root / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"algo": algo, "divergence": "jsd", "ptd_coef": 32.0, "lr": 5e-4,
                                               "kl_coef": 0.01, "seed": seed, "steps": 4, "eval_n": 8}))
    recs = [{"step": 0, "eval_pass1": 0.5, "eval_pass1/easy": 1.0, "eval_pass1/hard": 0.1,
             "eval_blank_pass1/hard": 0.12}]
    for step in range(1, 5):
        recs.append({"step": step, "reward": 0.5, "format": 0.2 if (algo == "grpo" and seed == 2 and step == 3)
                     else 1.0, "entropy": 0.01 * step, "kl": 0.0, "distilled_frac": 0.3, "all_fail_frac": 0.2,
                     "all_pass_frac": 0.5, "mixed_group_frac": 0.3, "resp_len": 20.0, "skipped": 0,
                     "t_rollout": 1.0})
        if step == 2:
            recs[-1].update({"eval_pass1": 0.7, "eval_pass1/easy": 0.9, "eval_pass1/hard": hard[0]})
    if finished:
        recs.append({"step": 4, "eval_pass1": 0.9, "eval_pass1/easy": 0.95, "eval_pass1/hard": hard[1],
                     "eval_blank_pass1/hard": 0.11, "final": True})
    if not start:   # --eval_start 0
        recs.pop(0)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_a_run_without_its_step_0_evaluation_takes_its_seeds_shared_one(tmp_path, capsys):
    """--eval_start 0 runs get the step-0 evaluation of the run of the same seed that made it
    (named in start_from); a run whose seed has none yet waits, unpacked, and says so."""
    runs, out = tmp_path / "runs", tmp_path / "packed"
    runs.mkdir()
    write_run(runs, "grpo_s1", "grpo", 1, (0.5, 0.9))
    write_run(runs, "ptdpo_s1", "ptdpo", 1, (0.8, 0.97), start=False)
    summarise.pack(str(runs), str(out))
    ptd, grpo = (json.load(open(out / f"{n}_s1.json")) for n in ("ptdpo", "grpo"))
    assert ptd["start_from"] == "grpo_s1" and ptd["evals"][0] == grpo["evals"][0]
    assert [e["step"] for e in ptd["evals"]] == [0, 2, 4] and "start_from" not in grpo
    write_run(runs, "ptdpo_s2", "ptdpo", 2, (0.8, 0.97), start=False)     # seed 2's donor not finished
    summarise.pack(str(runs), str(out))
    assert not (out / "ptdpo_s2.json").exists() and "seed 2" in capsys.readouterr().out
    write_run(runs, "grpo_s2", "grpo", 2, (0.5, 0.9))
    summarise.pack(str(runs), str(out))
    assert json.load(open(out / "ptdpo_s2.json"))["start_from"] == "grpo_s2"


def test_pack_and_tables_match_a_hand_computation(tmp_path, capsys):
    runs, out = tmp_path / "runs", tmp_path / "packed"
    runs.mkdir()
    for (method, seed), hard in HARD.items():
        write_run(runs, f"{method}_s{seed}", method, seed, hard)
    write_run(runs, "ptdpo_s4", "ptdpo", 4, (0.0, 0.0), finished=False)     # cut short: not packed
    summarise.main(["--pack", str(runs), str(out)])
    text = capsys.readouterr().out
    assert sorted(os.listdir(out)) == sorted(f"{m}_s{s}.json" for m, s in HARD)
    packed = json.load(open(out / "grpo_s1.json"))
    assert packed["settings"]["kl_coef"] == 0.01 and "t_rollout" not in packed["train"][0]
    assert [e["step"] for e in packed["evals"]] == [0, 2, 4]
    # the evaluation table: mean ± std over seeds, in points
    end = [HARD["ptdpo", s][1] * 100 for s in (1, 2, 3)]
    assert f"| ptdpo | 3 | hard | 10.0 ± 0.0 | 80.0 ± 10.0 | {statistics.mean(end):.1f} ± {statistics.stdev(end):.1f} |" \
        in text
    assert "| grpo | " in text and "1 s2@3 |" in text                       # the format collapse, named
    # the paired difference at the end, ptdpo - grpo, with t(2) = 4.303
    d = [100 * (HARD["ptdpo", s][1] - HARD["grpo", s][1]) for s in (1, 2, 3)]
    m, h = statistics.mean(d), 4.303 * statistics.stdev(d) / math.sqrt(3)
    row = next(line for line in text.splitlines() if line.startswith("| ptdpo - grpo |"))
    assert f"{m:+.1f} [{m - h:+.1f}, {m + h:+.1f}] (n=3)" in row, row
    assert row.split(" | ")[2] == "-"                                      # no step-20 evaluation: no figure


def test_an_ablation_pairs_with_ptdpo_on_the_seeds_both_ran(tmp_path, capsys):
    runs, out = tmp_path / "runs", tmp_path / "packed"
    runs.mkdir()
    for (method, seed), hard in HARD.items():
        write_run(runs, f"{method}_s{seed}", method, seed, hard)
    abl = {1: (0.6, 0.90), 2: (0.7, 0.80)}                                  # seeds 1 and 2 only
    for seed, hard in abl.items():
        write_run(runs, f"abl_tau0.2_s{seed}", "ptdpo", seed, hard)
    summarise.main(["--pack", str(runs), str(out)])
    text = capsys.readouterr().out
    d = [100 * (abl[s][1] - HARD["ptdpo", s][1]) for s in (1, 2)]
    m, h = statistics.mean(d), 12.706 * statistics.stdev(d) / math.sqrt(2)   # t(1)
    row = next(line for line in text.splitlines() if line.startswith("| abl_tau0.2 - ptdpo |"))
    assert f"{m:+.1f} [{m - h:+.1f}, {m + h:+.1f}] (n=2)" in row, row
    assert "Ablations (PTD-PO with one change)" in text


def test_the_committed_confirmation_file_is_the_committed_runs(capsys):
    """results/task5_confirmation.txt, under its '#' header, is summarise.py's output on the
    committed runs less the development ones (the confirmation and the ablations)."""
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results")
    summarise.main([os.path.join(root, "runs"), "--skip_dev"])
    with open(os.path.join(root, "task5_confirmation.txt")) as f:
        committed = [line for line in f.read().splitlines() if not line.startswith("# ")]
    out = capsys.readouterr().out.splitlines()
    row = [line for line in out if line.startswith("| ptdpo - grpo |")]
    assert len(row) == 1 and row[0].count("(n=8)") == 5, row                # all 8 seeds, every measure
    assert committed == out


def test_two_exports_of_the_repository_share_a_step_0_evaluation(tmp_path):
    """A run from another export (its model and data under another folder, the same toy/ inside)
    takes the step-0 evaluation of the same seed's run; another model does not."""
    runs, out = tmp_path / "runs", tmp_path / "packed"
    runs.mkdir()
    write_run(runs, "grpo_s1", "grpo", 1, (0.5, 0.9))
    write_run(runs, "abl_rkl_s1", "ptdpo", 1, (0.8, 0.97), start=False)
    write_run(runs, "abl_tau0.2_s1", "ptdpo", 1, (0.8, 0.97), start=False)
    for name, model in (("grpo_s1", "/x/eval5/toy/model"), ("abl_rkl_s1", "/y/abl5/toy/model"),
                        ("abl_tau0.2_s1", "/y/abl5/other/model")):
        cfg = json.loads((runs / name / "config.json").read_text())
        (runs / name / "config.json").write_text(json.dumps({**cfg, "model": model}))
    summarise.pack(str(runs), str(out))
    assert json.load(open(out / "abl_rkl_s1.json"))["start_from"] == "grpo_s1"
    assert not (out / "abl_tau0.2_s1.json").exists()
