"""Markdown table of a compare.sh directory: final held-out pass@1 (mean +- std over seeds),
end-of-training entropy, distilled fraction, mean JSD, wall time.  python scripts/summarise.py runs/compare"""
import glob
import json
import os
import statistics
import sys


def load(run):
    with open(os.path.join(run, "metrics.jsonl")) as f:
        ms = [json.loads(line) for line in f if line.strip()]
    ev = [m for m in ms if "eval_pass1" in m]
    tr = [m for m in ms if "reward" in m]
    tail = tr[-max(1, len(tr) // 5):]
    return {"pass1_0": ev[0]["eval_pass1"], "pass1": ev[-1]["eval_pass1"],
            "entropy": statistics.mean(m["entropy"] for m in tail),
            "distilled": statistics.mean(m["distilled_frac"] for m in tr),
            "jsd": statistics.mean(next((m[k] for k in ("jsd", "fkl", "rkl") if k in m), 0.0) for m in tr),
            "seconds": sum(m["t_rollout"] + m["t_old"] + m["t_ref_tutor"] + m["t_update"] for m in tr),
            "steps": tr[-1]["step"]}


def fmt(vals, pct=True):
    scale = 100 if pct else 1
    if len(vals) == 1:
        return f"{vals[0] * scale:.1f}" if pct else f"{vals[0]:.3f}"
    return (f"{statistics.mean(vals) * scale:.1f} ± {statistics.stdev(vals) * scale:.1f}" if pct
            else f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}")


def main(root):
    groups = {}
    for run in sorted(glob.glob(os.path.join(root, "*"))):
        if os.path.exists(os.path.join(run, "metrics.jsonl")):
            name = os.path.basename(run).rsplit("_s", 1)[0] if "_s" in os.path.basename(run) and not \
                os.path.basename(run).startswith("abl") else os.path.basename(run)
            groups.setdefault(name, []).append(load(run))
    print("| run | seeds | held-out pass@1 start | held-out pass@1 end | entropy (last 20%) | distilled rows | "
          "divergence | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, rs in groups.items():
        print(f"| {name} | {len(rs)} | {fmt([r['pass1_0'] for r in rs])} | {fmt([r['pass1'] for r in rs])} | "
              f"{fmt([r['entropy'] for r in rs], False)} | {fmt([r['distilled'] for r in rs], False)} | "
              f"{fmt([r['jsd'] for r in rs], False)} | {statistics.mean(r['seconds'] for r in rs):.0f} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/compare")
