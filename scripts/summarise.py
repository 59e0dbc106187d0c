"""Tables and curves of a compare.sh directory: held-out pass@1 / pass@8 per bucket at the start
and the end (mean ± std over seeds), the paired differences the verdict rests on, entropy and
all-fail share over training, and the figures.
    python scripts/summarise.py runs/compare --png results/compare.png"""
import argparse
import glob
import math
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import report  # noqa: E402  (the one reader of metrics.jsonl)

MAIN = ("grpo", "ptdpo", "ptdpo_jsd", "control")
COLOURS = {"grpo": "tab:blue", "ptdpo": "tab:red", "ptdpo_jsd": "tab:orange", "control": "tab:grey"}


def load(run):
    ms = report.read_jsonl(os.path.join(run, "metrics.jsonl"))
    ev = [m for m in ms if "eval_pass1" in m]
    tr = [m for m in ms if "reward" in m]
    tail = tr[-max(1, len(tr) // 5):]
    div = next((k for k in ("jsd", "fkl", "rkl") if tr and k in tr[0]), None)
    return {"ev": ev, "tr": tr, "start": ev[0], "end": ev[-1], "steps": tr[-1]["step"] if tr else 0,
            "entropy": statistics.mean(m["entropy"] for m in tail),
            "all_fail": statistics.mean(m["all_fail_frac"] for m in tr),
            "all_fail_end": statistics.mean(m["all_fail_frac"] for m in tail),
            "distilled": statistics.mean(m["distilled_frac"] for m in tr),
            "div": statistics.mean(m[div] for m in tr) if div else 0.0,
            "seconds": sum(m["t_rollout"] + m["t_old"] + m["t_ref_tutor"] + m["t_update"] for m in tr)}


def groups_of(root):
    """{method: {seed: run}} from directories named <method>_s<seed> (or <name>: one run, seed -1)."""
    out = {}
    for run in sorted(glob.glob(os.path.join(root, "*"))):
        if not os.path.exists(os.path.join(run, "metrics.jsonl")):
            continue
        method, _, seed = os.path.basename(run).rpartition("_s")
        if not (method and seed.isdigit()):
            method, seed = os.path.basename(run), "-1"
        r = load(run)
        if r["tr"] and r["end"].get("final"):      # finished runs only (the last record is the final eval)
            out.setdefault(method, {})[int(seed)] = r
        else:
            print(f"(skipped, not finished: {run})")
    return out


def ms(vals, pct=True):
    k = 100 if pct else 1
    if len(vals) == 1:
        return f"{vals[0] * k:.1f}" if pct else f"{vals[0]:.3f}"
    m, s = statistics.mean(vals) * k, statistics.stdev(vals) * k
    return f"{m:.1f} ± {s:.1f}" if pct else f"{m:.3f} ± {s:.3f}"


def table(groups, names):
    keys = [("end", "eval_pass1", "pass@1"), ("end", "eval_pass1/easy", "easy"), ("end", "eval_pass1/hard", "hard"),
            ("end", "eval_pass8/hard", "hard pass@8")]
    print("| run | seeds | steps | start pass@1 (easy / hard) | end pass@1 | end easy | end hard | end hard pass@8 | "
          "entropy (last 20%) | all-fail groups (mean / last 20%) | rows distilled | divergence | train s |")
    print("|" + "---|" * 13)
    for name in names:
        rs = list(groups[name].values())
        st = rs[0]["start"]
        cells = [ms([r[w].get(k, float("nan")) for r in rs]) for w, k, _ in keys]
        print(f"| {name} | {len(rs)} | {rs[0]['steps']} | {100 * st['eval_pass1']:.1f} ({100 * st.get('eval_pass1/easy', math.nan):.1f}"
              f" / {100 * st.get('eval_pass1/hard', math.nan):.1f}) | " + " | ".join(cells)
              + f" | {ms([r['entropy'] for r in rs], False)} | {ms([r['all_fail'] for r in rs], False)} / "
              f"{ms([r['all_fail_end'] for r in rs], False)} | {ms([r['distilled'] for r in rs], False)} | "
              f"{ms([r['div'] for r in rs], False)} | {statistics.mean(r['seconds'] for r in rs):.0f} |")


def paired(groups, a, b, key):
    """Mean, standard error and n of (a - b) over the seeds both ran, in points."""
    seeds = sorted(set(groups.get(a, {})) & set(groups.get(b, {})))
    d = [100 * (groups[a][s]["end"][key] - groups[b][s]["end"][key]) for s in seeds]
    if len(d) < 2:
        return None
    return statistics.mean(d), statistics.stdev(d) / math.sqrt(len(d)), len(d)


def verdict(groups):
    for a, b in (("ptdpo", "grpo"), ("ptdpo", "control"), ("ptdpo", "ptdpo_jsd"), ("ptdpo_jsd", "grpo"),
                 ("control", "grpo")):
        for key in ("eval_pass1/hard", "eval_pass1/easy", "eval_pass1"):
            p = paired(groups, a, b, key)
            if p:
                m, se, n = p
                print(f"{a} - {b}, {key.replace('eval_', '')}: {m:+.1f} points (SE {se:.1f}, {n} seeds; "
                      f"{'> 2 SE' if abs(m) > 2 * se else 'within 2 SE'})")


def band(ax, runs, key, colour, label):
    steps = [m["step"] for m in runs[0]["ev"]]
    vals = [[m.get(key, math.nan) for m in r["ev"]] for r in runs if len(r["ev"]) == len(steps)]
    cols = list(zip(*vals))
    ax.plot(steps, [statistics.mean(c) for c in cols], color=colour, marker="o", label=label)
    ax.fill_between(steps, [min(c) for c in cols], [max(c) for c in cols], color=colour, alpha=0.15)


def train_band(ax, runs, key, colour, window=10):
    n = min(len(r["tr"]) for r in runs)
    smooth = [[statistics.mean(m[key] for m in r["tr"][max(0, i - window + 1):i + 1]) for i in range(n)] for r in runs]
    cols = list(zip(*smooth))
    steps = [m["step"] for m in runs[0]["tr"][:n]]
    ax.plot(steps, [statistics.mean(c) for c in cols], color=colour)
    ax.fill_between(steps, [min(c) for c in cols], [max(c) for c in cols], color=colour, alpha=0.15)


def figure(groups, names, png, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = [("eval_pass1", "held-out pass@1, all"), ("eval_pass1/easy", "held-out pass@1, easy"),
              ("eval_pass1/hard", "held-out pass@1, hard"), ("all_fail_frac", "all-fail groups (train, 10-step mean)"),
              ("entropy", "policy entropy (train, 10-step mean)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    palette = plt.get_cmap("tab10")
    for i, name in enumerate(names):
        runs = list(groups[name].values())
        colour = COLOURS.get(name, palette(i))
        label = f"{name} ({len(runs)} seeds)"
        for ax, (key, t) in zip(axes, panels):
            (band(ax, runs, key, colour, label) if key.startswith("eval") else train_band(ax, runs, key, colour))
            ax.set_title(t, fontsize=10)
            ax.set_xlabel("step")
    axes[0].legend(fontsize=8)
    fig.suptitle(title + " (line: seed mean; band: min-max over seeds)", fontsize=11)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"curves written to {png}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("root", nargs="?", default="runs/compare")
    p.add_argument("--png", default="", help="also draw the curves here (and <png>_ablations.png)")
    args = p.parse_args()
    groups = groups_of(args.root)
    if not groups:
        raise SystemExit(f"summarise.py: no runs with metrics in {args.root}")
    dev = sorted(n for n in groups if n.startswith("dev_"))
    main_runs = [n for n in MAIN if n in groups]
    abl = sorted(n for n in groups if n.startswith("abl_"))
    for title, names in (("Development seed (settings chosen here)", dev), ("Evaluation seeds", main_runs),
                         ("Ablations (PTD-PO with one change)", abl)):
        if names:
            print(f"\n{title}\n")
            table(groups, names)
    print()
    verdict(groups)
    if args.png and main_runs:
        figure(groups, main_runs, args.png, "GRPO vs PTD-PO (fkl; JSD) vs no-hint control on the demo")
    if args.png and abl:
        figure(groups, ["ptdpo"] * ("ptdpo" in groups) + abl, args.png.replace(".png", "_ablations.png"),
               "PTD-PO ablations")


if __name__ == "__main__":
    main()
