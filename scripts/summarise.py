"""Tables and curves of the demo's comparison (scripts/compare.sh), from one compact file per run.

    python scripts/summarise.py --pack runs/compare results/runs   # run dirs -> results/runs/<run>.json
    python scripts/summarise.py results/runs --skip_dev --png results/compare.png

--pack keeps, per run, its settings and every number it logged that a table or figure uses (each
step's training metrics, each held-out evaluation), so results/runs/ is committed and every table
and figure here is recomputed from it. The tables: the development runs with the choice rule's
number (task 5: the mean over the evaluations after step 0 of (hard + pivot pass@1) / 2, with
easy >= 85% throughout; `choose`); per method on the
evaluation seeds, each bucket at the start and the end with the blank-image score (the chance
line), pass@1 and pass@8, the learning curve, entropy, all-fail and mixed shares, format
collapses and what the answers name; and the paired differences per seed with 95% intervals from
the t distribution with seeds - 1 degrees of freedom.
"""
import argparse
import glob
import json
import math
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import metrics  # noqa: E402  (metrics.read_jsonl: the one reader of a metrics file)

MAIN = ("grpo", "ptdpo", "ptdpo_other", "control", "unanswer")
COLOURS = {"grpo": "tab:blue", "ptdpo": "tab:red", "ptdpo_other": "tab:orange", "control": "tab:grey",
           "unanswer": "tab:purple"}
EXTRA = ("tab:green", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "navy")   # other runs: none of the above
TRAIN_KEYS = ("step", "reward", "format", "entropy", "kl", "div", "distilled_frac", "all_fail_frac",
              "all_pass_frac", "mixed_group_frac", "resp_len", "skipped")
SETTINGS = ("algo", "divergence", "ptd_coef", "lr", "warmup_steps", "kl_coef", "tutor_context", "hint_style", "tau",
            "distill_all", "train_data", "seed", "steps", "prompts_per_step", "eval_data", "eval_n", "eval_samples")
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
COLLAPSE = 0.5   # a format collapse: a step where fewer than half the rollouts keep the answer format


def pack(root, out):
    """One compact JSON per finished run directory of root, written to out."""
    os.makedirs(out, exist_ok=True)
    for run in sorted(glob.glob(os.path.join(root, "*"))):
        path = os.path.join(run, "metrics.jsonl")
        if not os.path.exists(path):
            continue
        recs = metrics.read_jsonl(path)
        if not recs or not recs[-1].get("final"):
            print(f"(not packed, not finished: {run})")
            continue
        with open(os.path.join(run, "config.json")) as f:
            cfg = json.load(f)
        rec = {"name": os.path.basename(run), "settings": {k: cfg.get(k) for k in SETTINGS},
               "train": [{k: v for k, v in m.items() if k in TRAIN_KEYS or "groups/" in k}
                         for m in recs if "reward" in m],
               "wall_s": recs[-1].get("wall_s"), "eval_settings": {k: cfg.get(k) for k in EVAL_KEYS},
               "evals": [{k: v for k, v in m.items() if k == "step" or k.startswith("eval_")}
                         for m in recs if "eval_pass1" in m]}
        with open(os.path.join(out, rec["name"] + ".json"), "w") as f:
            json.dump(rec, f, separators=(",", ":"))
    shared_start(out)
    print(f"packed into {out}")


EVAL_KEYS = ("model", "eval_data", "eval_n", "eval_samples", "max_new_tokens", "temperature", "top_p")


def in_repo(value):
    """A setting as a string; the demo's paths from toy/ on, so that two exports of the repository
    (the same committed model and data, other folders) share one step-0 evaluation."""
    text = str(value)
    return text[text.rfind("toy/"):] if "toy/" in text else text


def shared_start(out):
    """Give each packed run that skipped its step-0 evaluation (--eval_start 0) the one of a run of
    the same seed with the same model and evaluation settings, named in 'start_from': that
    evaluation depends on nothing else, so a comparison computes it once per seed."""
    runs = {}
    for path in glob.glob(os.path.join(out, "*.json")):
        with open(path) as f:
            runs[path] = json.load(f)
    key = lambda r: (r["settings"].get("seed"), tuple(in_repo(r.get("eval_settings", {}).get(k)) for k in EVAL_KEYS))
    donors = {key(r): r for r in runs.values() if r["evals"] and r["evals"][0]["step"] == 0}
    for path, r in runs.items():
        if r["evals"] and r["evals"][0]["step"] != 0:
            donor = donors.get(key(r))
            if donor is None:   # its seed's run that makes it has not finished: packed later
                os.remove(path)
                print(f"(not packed yet: {path} has no step-0 evaluation (--eval_start 0) and no finished "
                      f"run of seed {r['settings'].get('seed')} with the same evaluation has one)")
                continue
            r["evals"].insert(0, donor["evals"][0])
            r["start_from"] = donor["name"]
            with open(path, "w") as f:
                json.dump(r, f, separators=(",", ":"))


def load(path):
    with open(path) as f:
        r = json.load(f)
    tr, ev = r["train"], r["evals"]
    tail = tr[-max(1, len(tr) // 5):]
    r.update(start=ev[0], end=ev[-1], mean=lambda key, rs=tr: statistics.mean(m[key] for m in rs),
             tail=tail, curve={m["step"]: m for m in ev})
    r["buckets"] = [b for b in ("easy", "hard", "pivot") if f"eval_pass1/{b}" in ev[0]]
    r["auc_hard"] = statistics.mean(m["eval_pass1/hard"] for m in ev[1:])
    r["auc_pivot"] = statistics.mean(m["eval_pass1/pivot"] for m in ev[1:]) if "pivot" in r["buckets"] else math.nan
    # the choice rule's number: the area under the non-easy curves (hard, and pivot where there is one)
    r["auc"] = r["auc_hard"] if math.isnan(r["auc_pivot"]) else (r["auc_hard"] + r["auc_pivot"]) / 2
    r["min_easy"] = min(m["eval_pass1/easy"] for m in ev[1:])
    r["collapse"] = next((m["step"] for m in tr if m["format"] < COLLAPSE), None)
    return r


def groups_of(root):
    """{method: {seed: run}} from files named <method>_s<seed>.json (other names: one run, seed -1)."""
    out = {}
    for path in sorted(glob.glob(os.path.join(root, "*.json"))):
        name = os.path.basename(path)[:-5]
        method, _, seed = name.rpartition("_s")
        if not (method and seed.isdigit()):
            method, seed = name, "-1"
        out.setdefault(method, {})[int(seed)] = load(path)
    return out


def pct(vals):
    vals = [v for v in vals if v is not None and not math.isnan(v)]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{100 * vals[0]:.1f}"
    return f"{100 * statistics.mean(vals):.1f} ± {100 * statistics.stdev(vals):.1f}"


def num(vals):
    return f"{statistics.mean(vals):.3f}" + (f" ± {statistics.stdev(vals):.3f}" if len(vals) > 1 else "")


ANSWERS5 = ("target", "marked", "other", "absent", "none")   # metrics.ANSWER_CLASSES since task 5
EASY_FLOOR = 0.85   # the task-5 choice rule: easy pass@1 at every evaluation at least this


def dev_table(groups, names):
    """One row per development run (name, seed); for task-5 runs (a pivot bucket) the choice rule's
    number per seed and its mean over the seeds, and whether easy held >= EASY_FLOOR throughout."""
    print("| run | seed | lr | warm-up | tutor | divergence | lambda | kl_coef | hard pass@1 (evaluations) | "
          "pivot pass@1 (evaluations) | rule: area | lowest easy | pivot groups mixed in training |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in names:
        for seed, r in sorted(groups[name].items(), key=lambda kv: kv[0]):
            s = r["settings"]
            curve = lambda b: " / ".join(f"{100 * m[f'eval_pass1/{b}']:.0f}" for m in r["evals"][1:]) \
                if f"eval_pass1/{b}" in r["start"] else "-"
            lam = "-" if s["algo"] == "grpo" else s["ptd_coef"]
            div = "-" if s["algo"] == "grpo" else s["divergence"]
            tut = "-" if s["algo"] == "grpo" else s.get("tutor_context") or "hint"
            print(f"| {name} | {seed} | {s['lr']:g} | {s.get('warmup_steps')} | {tut} | {div} | {lam} | "
                  f"{s['kl_coef']:g} | {curve('hard')} | {curve('pivot')} | {100 * r['auc']:.1f} | "
                  f"{100 * r['min_easy']:.1f} | {mixed_seen(r, 'pivot')} |")


def mixed_seen(r, bucket):
    """'mixed / groups' of a bucket over the run's training steps ('-' for runs before the counts)."""
    if not any(f"groups/{bucket}" in m for m in r["train"]):
        return "-"
    count = lambda key: int(sum(m.get(f"{key}/{bucket}", 0) for m in r["train"]))
    return f"{count('mixed_groups')} / {count('groups')}"


def choose(groups, names, seed=100, seed2=101, top=3):
    """The task-5 rule, per method family: on the tuning seed, among a family's settings whose easy
    pass@1 stays >= EASY_FLOOR at every evaluation, the highest area (its `top` best go to the
    second seed; where none qualifies, the highest areas). The final choice: the highest mean area
    over both seeds among the settings run on both that qualify on both; where none does, the
    highest mean area, flagged."""
    fams = {}
    for name in names:
        fam = name.split("_")[1] if name.count("_") > 1 else name
        fams.setdefault(fam, []).append(name)
    ok = lambda r: r["min_easy"] >= EASY_FLOOR
    print(f"\nChoice rule: the highest area under the hard and pivot curves with easy >= {100 * EASY_FLOOR:.0f}% "
          f"at every evaluation; seed {seed} ranks, its {top} best run on seed {seed2}, the final choice uses both\n")
    print(f"| family | best on {seed} (area, lowest easy) | final (mean area over {seed} and {seed2}) | qualifies on both |")
    print("|---|---|---|---|")
    for fam, fnames in sorted(fams.items()):
        first = [(groups[n][seed], n) for n in fnames if seed in groups[n]]
        ranked = sorted(first, key=lambda rn: (ok(rn[0]), rn[0]["auc"]), reverse=True)
        best = ", ".join(f"{n} ({100 * r['auc']:.1f}, {100 * r['min_easy']:.1f}{'' if ok(r) else ' x'})"
                         for r, n in ranked[:top]) or "-"
        both = [n for n in fnames if seed in groups[n] and seed2 in groups[n]]
        area = lambda n: statistics.mean(groups[n][x]["auc"] for x in (seed, seed2))
        good = [n for n in both if ok(groups[n][seed]) and ok(groups[n][seed2])]
        pick = max(good or both, key=area) if both else None
        final = f"{pick} ({100 * area(pick):.1f})" if pick else "-"
        print(f"| {fam} | {best} | {final} | {'yes' if good else 'no' if both else '-'} |")


def chance_lines(path, n=None):
    """'uniform guess 10%; most common answer per bucket: ...' for a demo held-out split (its first
    n problems), or '' when the file is not there."""
    if not os.path.exists(path):
        return ""
    from collections import Counter
    with open(path) as f:
        recs = [json.loads(line) for line in f][:n]
    by = {}
    for r in recs:
        by.setdefault(r.get("category") or "all", []).append(r["answer"])
    common = ", ".join(f"{b} {100 * Counter(a).most_common(1)[0][1] / len(a):.1f}%" for b, a in sorted(by.items()))
    return f"Chance lines: a uniform guess over the 10 colours 10%; the most common answer per bucket: {common}.\n"


def eval_tables(groups, names, eval_path="toy/data/eval.jsonl"):
    first = next(iter(groups[names[0]].values()))
    steps = [m["step"] for m in first["evals"]]
    print("Held-out pass@1 per bucket (mean ± std over seeds); blank: the same model on white pictures.")
    if "pivot" in first["buckets"]:   # the current demo's split (task 4's runs used task 4's data)
        print(chance_lines(eval_path, first["settings"].get("eval_n") or None))
    else:
        print()
    print("| method | seeds | bucket | start | " + " | ".join(f"step {s}" for s in steps[1:]) +
          " | end pass@8 | end blank | start blank |")
    print("|---|---|---|---|" + "---|" * (len(steps) - 1) + "---|---|---|")
    for name in names:
        rs = list(groups[name].values())
        for b in rs[0]["buckets"]:
            k = f"eval_pass1/{b}"
            cells = [pct([r["curve"].get(s, {}).get(k) for r in rs]) for s in steps[1:]]
            print(f"| {name} | {len(rs)} | {b} | {pct([r['start'][k] for r in rs])} | " + " | ".join(cells) +
                  f" | {pct([r['end'].get(f'eval_pass8/{b}') for r in rs])} | "
                  f"{pct([r['end'].get(f'eval_blank_pass1/{b}') for r in rs])} | "
                  f"{pct([r['start'].get(f'eval_blank_pass1/{b}') for r in rs])} |")
    print("\nTraining: entropy and group shares (mean over the run / over its last 20% of steps); format "
          f"collapses: runs with a step where fewer than {COLLAPSE:.0%} of rollouts kept the answer format.\n")
    classes = ANSWERS5 if "pivot" in first["buckets"] else ("target", "other", "absent", "none")
    last = first["buckets"][-1]   # pivot on task 5, hard on task 4
    print("| method | entropy (last 20%) | all-fail groups | mixed groups | rows distilled | format collapses | "
          f"{last} answers at the end: {' / '.join(classes)} | {last} groups mixed in training, per seed | "
          "wall s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in names:
        rs = list(groups[name].values())
        ent = num([r["mean"]("entropy", r["tail"]) for r in rs])
        af = f"{num([r['mean']('all_fail_frac') for r in rs])} / {num([r['mean']('all_fail_frac', r['tail']) for r in rs])}"
        mx = f"{num([r['mean']('mixed_group_frac') for r in rs])} / {num([r['mean']('mixed_group_frac', r['tail']) for r in rs])}"
        col = [f"s{s}@{r['collapse']}" for s, r in sorted(groups[name].items()) if r["collapse"]]
        ans = " / ".join(pct([r["end"].get(f"eval_answers/{last}/{a}") for r in rs]) for a in classes)
        seen = " ".join(f"s{s}: {mixed_seen(r, last)}" for s, r in sorted(groups[name].items()))
        wall = [r["wall_s"] for r in rs if r.get("wall_s")]
        print(f"| {name} | {ent} | {af} | {mx} | {num([r['mean']('distilled_frac') for r in rs])} | "
              f"{len(col)} {' '.join(col)} | {ans} | {seen} | {num(wall) if wall else '-'} |")


def paired(groups, a, b, value):
    """(mean, half-width of the 95% t interval, n) of value(run_a) - value(run_b) over shared seeds, in points."""
    seeds = sorted(set(groups.get(a, {})) & set(groups.get(b, {})))
    d = [100 * (value(groups[a][s]) - value(groups[b][s])) for s in seeds]
    d = [x for x in d if not math.isnan(x)]        # a measure a run does not have (no step-20 evaluation)
    if len(d) < 2:
        return None
    return statistics.mean(d), T95[len(d) - 1] * statistics.stdev(d) / math.sqrt(len(d)), len(d)


def verdict(groups, abl=()):
    print("\nPaired differences, per evaluation seed (95% interval, t with seeds - 1 degrees of freedom);"
          "\non task 5 the first three rows are the pre-registered comparisons, the others exploratory:\n")
    task5 = all("pivot" in r["buckets"] for g in groups.values() for r in g.values())
    measures = (("pivot at the end", lambda r: r["end"]["eval_pass1/pivot"]),   # the three pre-registered
                ("hard at the end", lambda r: r["end"]["eval_pass1/hard"]),     # (docs/PREREGISTRATION.md)
                ("area: (hard + pivot) / 2, mean over evaluations after step 0", lambda r: r["auc"]),
                ("pivot, mean over evaluations after step 0", lambda r: r["auc_pivot"]),
                ("easy, lowest over the run", lambda r: r["min_easy"])) if task5 else (
                ("hard, mean over evaluations after step 0", lambda r: r["auc_hard"]),
                ("hard at step 20", lambda r: r["curve"].get(20, {}).get("eval_pass1/hard", math.nan)),
                ("hard at the end", lambda r: r["end"]["eval_pass1/hard"]),
                ("easy, lowest over the run", lambda r: r["min_easy"]))
    print("| difference | " + " | ".join(m for m, _ in measures) + " |")
    print("|---|" + "---|" * len(measures))
    for a, b in (("ptdpo", "grpo"), ("ptdpo", "control"), ("ptdpo", "unanswer"), ("ptdpo", "ptdpo_other"),
                 ("unanswer", "control"), ("control", "grpo")) + tuple((a, "ptdpo") for a in abl):
        cells = []
        for _, value in measures:
            p = paired(groups, a, b, value)
            cells.append("-" if p is None else f"{p[0]:+.1f} [{p[0] - p[1]:+.1f}, {p[0] + p[1]:+.1f}] (n={p[2]})")
        if any(c != "-" for c in cells):
            print(f"| {a} - {b} | " + " | ".join(cells) + " |")


def band(ax, runs, get, steps, colour, label=None):
    vals = [[get(r, s) for s in steps] for r in runs]
    cols = list(zip(*vals))
    ax.plot(steps, [statistics.mean(c) for c in cols], color=colour, marker="o" if len(steps) < 10 else None,
            label=label)
    ax.fill_between(steps, [min(c) for c in cols], [max(c) for c in cols], color=colour, alpha=0.15)


def figure(groups, names, png, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    first = next(iter(groups[names[0]].values()))
    esteps = [m["step"] for m in first["evals"]]
    n = min(len(r["train"]) for name in names for r in groups[name].values())
    tsteps = [m["step"] for m in first["train"][:n]]

    def smooth(key, w=5):
        return lambda r, s: statistics.mean(m[key] for m in r["train"][max(0, s - w):s])
    panels = [(f"held-out pass@1, {b}", lambda r, s, b=b: r["curve"][s][f"eval_pass1/{b}"], esteps)
              for b in reversed(first["buckets"])]
    panels += [("all-fail groups (train, 5-step mean)", smooth("all_fail_frac"), tsteps),
              ("mixed groups (train, 5-step mean)", smooth("mixed_group_frac"), tsteps),
              ("policy entropy (train, 5-step mean)", smooth("entropy"), tsteps)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    others = [n for n in names if n not in COLOURS]
    for name in names:
        runs = list(groups[name].values())
        colour = COLOURS.get(name) or EXTRA[others.index(name) % len(EXTRA)]
        for j, (ax, (t, get, steps)) in enumerate(zip(axes, panels)):
            band(ax, runs, get, steps, colour, f"{name} ({len(runs)} seeds)" if j == 0 else None)
            ax.set_title(t, fontsize=10)
            ax.set_xlabel("step")
    for ax, b in zip(axes, reversed(first["buckets"])):   # the chance line of each bucket's panel
        blank = [r["end"].get(f"eval_blank_pass1/{b}") for name in names for r in groups[name].values()]
        if all(v is not None for v in blank):
            ax.axhline(statistics.mean(blank), color="k", ls=":", lw=1, label="blank image (end, mean)")
    axes[0].legend(fontsize=7)
    fig.suptitle(title + " (line: seed mean; band: min-max over seeds)", fontsize=11)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"curves written to {png}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("root", nargs="?", default="results/runs", help="a folder of packed runs (<run>.json)")
    p.add_argument("--pack", nargs=2, metavar=("RUNS", "OUT"), help="pack run directories first, then summarise OUT")
    p.add_argument("--png", default="", help="also draw the curves here (and <png>_ablations.png)")
    p.add_argument("--skip_dev", action="store_true",
                   help="leave out the development runs (dev_*): the confirmation and the ablations alone")
    args = p.parse_args(argv)
    if args.pack:
        pack(*args.pack)
        args.root = args.pack[1]
    groups = groups_of(args.root)
    if args.skip_dev:
        groups = {name: g for name, g in groups.items() if not name.startswith("dev_")}
    if not groups:
        raise SystemExit(f"summarise.py: no packed runs in {args.root}")
    dev = sorted(n for n in groups if n.startswith("dev_"))
    dev5 = [n for n in dev if all("pivot" in r["buckets"] for r in groups[n].values())]
    main_runs = [n for n in MAIN if n in groups]
    abl = sorted(n for n in groups if n.startswith("abl_"))
    if dev:
        print("\nDevelopment seeds, development split (settings chosen here; the rule: docs/RESULTS.md, choose())\n")
        dev_table(groups, dev)
        if dev5:
            choose(groups, dev5)
    for title, names in (("Evaluation seeds, held-out split", main_runs),
                         ("Ablations (PTD-PO with one change), held-out split", ["ptdpo"] * bool(abl) + abl)):
        if names and all(n in groups for n in names):
            print(f"\n{title}\n")
            eval_tables(groups, names)
    if main_runs:
        verdict(groups, abl)   # an ablation pairs with ptdpo on the seeds both ran
    if args.png and main_runs:
        figure(groups, main_runs, args.png, "GRPO vs PTD-PO vs the controls on the demo")
    if args.png and abl:
        figure(groups, ["ptdpo"] + abl, args.png.replace(".png", "_ablations.png"), "PTD-PO ablations")


if __name__ == "__main__":
    main()
