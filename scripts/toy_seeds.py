"""
Rebuild the demo (`python demo/toy.py`) on several seeds and print whether each reaches the regime
PTD-PO is for. Builds run one at a time, each on one thread in its own out_dir, so the
seconds are comparable and each build is the exact command a user would run.

    python scripts/toy_seeds.py                          # seeds 0-4 under a temporary folder
    python scripts/toy_seeds.py --seeds 0 1 --out /tmp/seeds -- --steps 800   # extra demo/toy.py args

Exit status 1 when any seed misses the regime. The weights column is the first 12 hex digits of
model.safetensors' sha256: equal digits on the same seed mean a bit-identical rebuild.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from checkpoint import sha256  # noqa: E402


def build(seed, out_dir, extra):
    """One `python demo/toy.py` build on one thread; returns its diagnostics plus wall seconds."""
    cmd = [sys.executable, os.path.join(ROOT, "demo", "toy.py"), "--out_dir", out_dir, "--seed", str(seed),
           "--threads", "1", "--no_check", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.time()
    with open(os.path.join(out_dir + ".log"), "w") as log:
        subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    seconds = time.time() - t0
    model_dir = os.path.join(out_dir, "model")
    with open(os.path.join(model_dir, "diagnostics.json")) as f:
        res = json.load(f)
    return {**res, "wall": seconds, "weights": sha256(os.path.join(model_dir, "model.safetensors"))[:12]}


def main(argv=None):
    p = argparse.ArgumentParser(description="Rebuild the demo on several seeds; print the regime table.")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--out", default=None, help="folder for the builds (default: a temporary folder)")
    p.add_argument("extra", nargs="*", help="extra demo/toy.py arguments, after --")
    args = p.parse_args(argv)
    out = args.out or tempfile.mkdtemp(prefix="toy_seeds_")
    os.makedirs(out, exist_ok=True)
    sys.path.insert(0, ROOT)
    from demo import diagnostics
    print(f"builds under {out}; demo/toy.py {' '.join(args.extra)}", flush=True)
    print("| seed | easy: student / tutor / blank | hard: student / tutor / blank | all-fail / mixed groups at step 0 "
          "| tutor on all-fail | student p of the tutor's answer | probe | regime? | seconds | weights |", flush=True)
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    missed = 0
    for seed in args.seeds:
        r = build(seed, os.path.join(out, f"seed{seed}"), args.extra)
        fails = diagnostics.regime_failures(r)
        missed += bool(fails)
        e, h, g = r["by_bucket"]["easy"], r["by_bucket"]["hard"], r["groups"]
        probe = r.get("probe", {}).get("final", float("nan"))
        print(f"| {seed} | {e['student']:.1%} / {e['tutor']:.1%} / {e['blank']:.1%} | {h['student']:.1%} / "
              f"{h['tutor']:.1%} / {h['blank']:.1%} | {g['all_fail']:.1%} / {g['mixed']:.1%} | "
              f"{g['tutor_on_all_fail']:.1%} | {g['student_p_tutor_answer']:.3f} | {probe:.1%} | "
              f"{'yes' if not fails else 'no'} | {r['wall']:.0f} | {r['weights']} |", flush=True)
    R = diagnostics.REGIME
    print(f"{len(args.seeds) - missed} of {len(args.seeds)} seeds reach the regime (diagnostics.REGIME: easy student >= "
          f"{R['easy_student']:.0%} and blank + {R['easy_over_blank']:.0%}; all-fail and mixed groups >= "
          f"{R['all_fail_min']:.0%} / {R['mixed_min']:.0%}; tutor >= {R['tutor_on_all_fail']:.0%} on the all-fail "
          f"problems; student p >= {R['student_p_min']}; probe >= {R['probe_min']:.0%}; {r['n']} held-out problems, "
          f"{g['n_groups']} training groups of {g['group_size']})")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
