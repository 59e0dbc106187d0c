"""The docs' numbers are the committed files' numbers: the README's main-job excerpt is
results/main_job_cpu.txt, the development table it cites (docs/RESULTS.md) results/runs/dev_*.json,
docs/DEMO.md's table of the shipped model toy/model/diagnostics.json, the confirmation's tables
results/runs/<method>_s<seed>.json."""
import json
import os
import re
import statistics

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def read(path):
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


def test_the_main_jobs_excerpt_is_its_committed_output():
    readme, out = read("README.md"), read("results/main_job_cpu.txt").splitlines()
    block = readme.split("```\nstep    0 |", 1)[1].split("```", 1)[0]
    lines = [line for line in ("step    0 |" + block).splitlines() if line.strip() and line.strip() != "..."]
    assert len(lines) > 10
    for line in lines:
        if line.endswith(" ..."):                              # a long line the README cuts short
            assert any(o.startswith(line[:-4]) for o in out), line
        else:
            assert line in out, line


def dev_run(name):
    with open(os.path.join(ROOT, "results", "runs", name + ".json")) as f:
        return json.load(f)


def test_the_development_table_is_the_committed_runs():
    """Each row of the development table the README cites (docs/RESULTS.md: pivot at steps 40 /
    60 / 80, hard at 80, the lowest easy evaluation) against its run file; "the same (101)" is the
    row above on seed 101."""
    names = {"PTD-PO, forward KL lambda 4, warm-up 30 (100)": "dev_fkl_lam4_w30_s100",
             "PTD-PO, JSD lambda 512, warm-up 30 (100)": "dev_jsd_lam512_w30_s100",
             "GRPO lr 1e-4, warm-up 10 (100)": "dev_grpo_lr1e-4_w10_s100",
             "GRPO lr 5e-4, warm-up 30 (100)": "dev_grpo_lr5e-4_w30_s100",
             "un-answer control, forward KL lambda 1, warm-up 30 (100)": "dev_unanswerfkl_lam1_w30_s100"}
    table = read("docs/RESULTS.md").split("| run (seed) |", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    checked, above = 0, None
    for line in table:
        label, *cells = [c.strip() for c in line.strip("|").split("|")]
        name = above.replace("_s100", "_s101") if label == "the same (101)" else names[label]
        above = name
        evals = {m["step"]: m for m in dev_run(name)["evals"]}
        pivot = [round(100 * evals[s]["eval_pass1/pivot"]) for s in (40, 60, 80)]
        hard = round(100 * evals[80]["eval_pass1/hard"])
        easy = min(100 * m["eval_pass1/easy"] for s, m in evals.items() if s > 0)
        assert [int(v) for v in re.split(r"\s*/\s*", cells[0])] == pivot, (label, cells[0], pivot)
        assert int(cells[1]) == hard, (label, cells[1], hard)
        assert abs(float(cells[2]) - easy) < 0.05, (label, cells[2], easy)
        checked += 1
    assert checked == 10, checked


def pct(text):
    return float(text.strip().split("%")[0])


def test_the_demo_docs_shipped_model_is_its_diagnostics():
    """docs/DEMO.md's table of the shipped model, its counterfactual and its probes' end points
    are toy/model/diagnostics.json's numbers (rounded to 0.1 point)."""
    diag = json.loads(read("toy/model/diagnostics.json"))
    demo = read("docs/DEMO.md").split("## The shipped model", 1)[1].split("The build checks", 1)[0]
    rows = [r for r in demo.splitlines() if r.startswith("| ") and "%" in r]
    assert len(rows) == 3
    for row in rows:
        name, student, tutor, failures, blank = [c.strip() for c in row.strip("|").split("|")]
        b = diag["by_bucket"][name.split()[0]]
        assert abs(pct(student) - 100 * b["student"]) < 0.051, (name, student)
        assert abs(pct(tutor) - 100 * b["tutor"]) < 0.051, (name, tutor)
        assert abs(pct(blank) - 100 * b["blank"]) < 0.051, (name, blank)
        if "%" in failures:
            assert abs(pct(failures) - 100 * b["tutor_on_failures"]) < 0.051, (name, failures)
            assert f"({b['student_failures']})" in failures, (name, failures)
    cf = diag["counterfactual"]
    assert f"the other marked shape {100 * cf['follows_hint']:.1f}%" in demo.replace("\n  ", " ")
    probe = diag["probe"]["final"]
    for bucket, word in (("hard", "held-out hard"), ("pivot", "pivot")):
        said = re.search(word + r" [\d.]+% -> [\d.]+% \((?:step )?25\) -> ([\d.]+)% \(80\)", demo.replace("\n  ", " "))
        assert said and abs(float(said.group(1)) - 100 * probe[bucket]) < 0.051, (bucket, said)


def test_the_main_jobs_prose_is_its_committed_output():
    """The paragraph under the README's main-job excerpt: the pivot, hard and easy figures at each
    evaluation and the blank-image line are results/main_job_cpu.txt's."""
    out = read("results/main_job_cpu.txt").splitlines()
    evals = {}
    for line in out:
        m = re.match(r"step\s+(\d+) \|.*held-out pass@1 [\d.]+ \(easy ([\d.]+), hard ([\d.]+), pivot ([\d.]+)\)", line)
        if m:
            evals[int(m.group(1))] = [100 * float(x) for x in m.groups()[1:]]
    table = {r.split()[1]: r.split() for r in out if r.startswith("  pass@1 ") and len(r.split()) > 3}
    for b, i in (("easy", 0), ("hard", 1), ("pivot", 2)):   # the end of the run: the summary table
        evals.setdefault(80, [0.0, 0.0, 0.0])[i] = 100 * float(table[b][3])
    prose = " ".join(read("README.md").split("That is `results/main_job_cpu.txt`", 1)[1]
                     .split("\n\n", 1)[0].split())
    pivot = [evals[s][2] for s in (0, 20, 40, 80)]
    assert (f"The pivot goes from {pivot[0]:.1f}% (blank image: {100 * float(table['pivot'][4]):.1f}%) to "
            f"{pivot[1]:.1f}% at step 20, {pivot[2]:.1f}% at step 40 and {pivot[3]:.1f}% at the end (blank: "
            f"{100 * float(table['pivot'][6]):.1f}%)") in prose, prose
    assert (f"hard from {evals[0][1]:.1f}% to {evals[80][1]:.1f}% (blank {100 * float(table['hard'][4]):.1f} / "
            f"{100 * float(table['hard'][6]):.1f}%)") in prose, prose
    easy = [evals[s][0] for s in (20, 40, 60, 80)]
    assert (f"easy stays at {min(easy):.1f}% or more at every evaluation "
            f"({' / '.join(f'{e:.1f}' for e in easy)}% at steps 20-80)") in prose, prose


CONFIRMATION = {"PTD-PO - GRPO": ("ptdpo", "grpo"), "PTD-PO - no-hint control": ("ptdpo", "control"),
                "PTD-PO - un-answer control": ("ptdpo", "unanswer"),
                "forward KL - the JSD": ("ptdpo", "ptdpo_other")}


def test_the_confirmations_verdict_is_the_committed_runs():
    """The README's confirmatory tables recompute from results/runs/<method>_s<seed>.json: each
    method's means over the 8 pre-registered seeds, each paired difference with its 95% t interval
    (scripts/summarise.py's own computation), and each "met" / "missed" follows from docs/
    PREREGISTRATION.md's rule (the pivot's lower end above +30, the area's above 0)."""
    import sys
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import summarise
    groups = summarise.groups_of(os.path.join(ROOT, "results", "runs"))
    section = read("README.md").split("**Task 5, the confirmation (pre-registered).**", 1)[1]
    section = section.split("\n\n**", 1)[0]
    rows = [[c.strip() for c in r.strip().strip("|").split("|")] for r in section.splitlines()
            if r.startswith("| ") and not r.startswith("| ---")]
    measures = (lambda r: r["end"]["eval_pass1/pivot"], lambda r: r["end"]["eval_pass1/hard"],
                lambda r: r["auc"])
    checked = set()
    for label, *cells in rows:
        if label in CONFIRMATION:
            a, b = CONFIRMATION[label]
            lows = []
            for cell, value in zip(cells, measures):
                mean, half, n = summarise.paired(groups, a, b, value)
                assert n == 8, (label, n)
                assert cell == f"{mean:+.1f} [{mean - half:+.1f}, {mean + half:+.1f}]", (label, cell)
                lows.append(mean - half)
            if b != "ptdpo_other":
                met = lows[0] > 30 and (b != "grpo" or lows[2] > 0)
                assert cells[-1].endswith("**met**" if met else "**missed**"), (label, cells[-1])
            checked.add(label)
        elif label in summarise.MAIN:
            runs = groups[label].values()
            assert len(runs) == 8, label
            for cell, value in zip(cells, (lambda r: r["end"]["eval_pass1/pivot"],
                                           lambda r: r["end"]["eval_pass1/hard"], lambda r: r["min_easy"],
                                           lambda r: r["end"]["eval_blank_pass1/pivot"])):
                assert cell == f"{statistics.mean(100 * value(r) for r in runs):.1f}", (label, cell)
            mixed = [int(summarise.mixed_seen(r, "pivot").split(" / ")[0]) for r in runs]
            said = f"{min(mixed)}-{max(mixed)}" if min(mixed) < max(mixed) else f"{min(mixed)}"
            assert cells[4] == said, (label, cells[4], said)                 # pivot groups mixed, per run
            checked.add(label)
    assert checked == set(CONFIRMATION) | set(summarise.MAIN), checked


ABLATIONS = {"`--tau 0.2`": "tau0.2", "`--distill_all`": "distill_all", "`--divergence rkl`": "rkl",
             "`--tutor_context answer`": "answer_tutor", "`--hint_style text`": "hint_text",
             "hint + a drawn frame": "frame"}


def test_the_ablations_are_the_committed_runs():
    """docs/RESULTS.md's ablation table recomputes from results/runs/abl_<name>_s<seed>.json and
    ptdpo_s<seed>.json: each cell is the paired difference abl - ptdpo over the seeds both ran
    (21-23), with summarise.py's 95% t interval. The README's ablation bullet quotes those cells,
    reverse KL's range and the tutor's readings (results/tutor_readings/, scripts/tutor_readings.sh)."""
    import sys
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import summarise
    groups = summarise.groups_of(os.path.join(ROOT, "results", "runs"))
    section = read("docs/RESULTS.md").split("| ablation of PTD-PO - PTD-PO", 1)[1].split("\n\n", 1)[0]
    rows = [[c.strip() for c in r.strip().strip("|").split("|")] for r in section.splitlines()[2:]]
    measures = (lambda r: r["end"]["eval_pass1/pivot"], lambda r: r["end"]["eval_pass1/hard"],
                lambda r: r["auc"], lambda r: r["min_easy"])
    cell = {}
    for label, *cells in rows:
        name = "abl_" + ABLATIONS[label]
        assert len(cells) == len(measures), (label, cells)
        for i, (said, value) in enumerate(zip(cells, measures)):
            pair = summarise.paired(groups, name, "ptdpo", value)
            assert pair is not None and pair[2] == 3, (label, pair)   # seeds 21-23, both methods
            mean, half, _ = pair
            assert said == f"{mean:+.1f} [{mean - half:+.1f}, {mean + half:+.1f}]", (label, said)
            cell[ABLATIONS[label], i] = said
    assert {r[0] for r in rows} == set(ABLATIONS), rows
    # the means line: pivot / hard at the end, easy's lowest, over seeds 21-23
    means = " ".join(read("docs/RESULTS.md").split("Means at the end, pivot / hard (%)", 1)[1]
                     .split("\n\n", 1)[0].split())
    for label, name in [("ptdpo on the same seeds", "ptdpo")] + [
            (lab, "abl_" + n) for lab, n in (("`--tau 0.2`", "tau0.2"), ("`--distill_all`", "distill_all"),
                                             ("reverse KL", "rkl"), ("the answer", "answer_tutor"),
                                             ("prose", "hint_text"), ("the frame", "frame"))]:
        rs = [groups[name][seed] for seed in (21, 22, 23)]
        m = [100 * statistics.mean(f(r) for r in rs) for f in (measures[0], measures[1], measures[3])]
        assert f"{label} {m[0]:.1f} / {m[1]:.1f}, {m[2]:.1f}" in means, (label, m, means)
    prose = " ".join(read("README.md").split("- **Ablations** (one change", 1)[1].split("\n\n", 1)[0].split())
    assert (f"`--tau 0.2` and `--distill_all` ({cell['tau0.2', 0]}, {cell['distill_all', 0]}; tau 0.2 ends "
            f"hard {cell['tau0.2', 1]})") in prose, prose
    short = lambda c: c.split(" [")[0]
    assert (f"break the student (pivot {short(cell['answer_tutor', 0])}, {short(cell['hint_text', 0])}; "
            f"frame: hard {short(cell['frame', 1])})") in prose, prose
    assert "`--tau 0.2` and `--distill_all`" in prose and "holds with" in prose
    rkl = sorted(100 * r["end"]["eval_pass1/pivot"] for r in groups["abl_rkl"].values())
    blank = statistics.mean(100 * r["start"]["eval_blank_pass1/pivot"] for r in groups["abl_rkl"].values())
    assert f"not on every seed ({rkl[0]:.1f}-{rkl[-1]:.1f}% at the end; blank image {blank:.1f}%)" in prose, prose
    reading = {k: json.loads(read(f"results/tutor_readings/{k}.json")) for k in ("text", "answer", "frame")}
    right = [100 * reading[k][f"pass@1/{b}"] for k in ("text", "answer") for b in ("easy", "hard", "pivot")]
    assert f"the answer right on {min(right):.1f}-{max(right):.1f}%, a guess 10%; the frame, easy " \
           f"{100 * reading['frame']['pass@1/easy']:.1f}%)" in prose, prose


def test_the_tutor_readings_table_is_its_json_files():
    """results/tutor_readings/table.txt is what scripts/tutor_readings.sh's table code prints from
    the committed eval.py outputs beside it, and docs/RESULTS.md shows that table."""
    import subprocess
    import sys
    script = read("scripts/tutor_readings.sh")
    code = script.split("<<'EOF'", 1)[1].split("\n", 1)[1].split("\nEOF", 1)[0]
    out = subprocess.run([sys.executable, "-", os.path.join(ROOT, "results", "tutor_readings")], input=code,
                         capture_output=True, text=True, check=True).stdout
    table = read("results/tutor_readings/table.txt")
    assert out == table
    for name, ctx, style, data in (("student", "hint", "structured", "dev.jsonl"),
                                   ("hint", "hint", "structured", "dev.jsonl"),
                                   ("text", "hint", "text", "dev.jsonl"),
                                   ("answer", "answer", "structured", "dev.jsonl"),
                                   ("frame", "hint", "structured", "dev_framed.jsonl")):
        r = json.loads(read(f"results/tutor_readings/{name}.json"))       # each file is what it says
        assert (r["with_hints"], r["tutor_context"], r["hint_style"]) == (name != "student", ctx, style), name
        assert os.path.basename(r["data"]) == data and (r["problems"], r["samples"]) == (300, 8), name
    rows = table.split("\n\n")[1].strip()
    assert rows.count("\n") == 6 and rows in read("docs/RESULTS.md")
