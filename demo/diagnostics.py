"""
demo/diagnostics.py: does the demo's model sit in the regime PTD-PO is for? Measured on the task of
demo/toy.py, at the end of every build and on demand.

    diagnose(model, processor, examples)       held-out pass@1 of the student, the tutor, the student
                                               on a blank image and the majority answer, per bucket;
                                               the tutor on the student's failures; the counterfactual
    group_regime(model, processor, examples)   what GRPO sees at step 0: all-fail and mixed groups
    probe(model_dir, ...)                      learnability: supervised training with the answer
    regime_failures(res), check_regime(res)    what the numbers miss of REGIME

    python demo/toy.py --diagnose_only         # the diagnostics and the probe of toy/model as it is
    python eval.py --diagnose                  # diagnose() only, on any data in the demo's format

demo/toy.py's build ends by running them (run_diagnostics, write_diagnostics: toy/model/
diagnostics.json); this file uses toy.py's task (its colours and buckets, the warm start's loss).
"""
import json
import os
import random
import statistics
import sys
import time

import torch

import data
import eval
import reward
import rollout
from demo import toy

# -----------------------------------------------------------------------------
# held-out diagnostics: student, tutor, blank image, the counterfactual, the step-0 groups, the probe


def probe(model_dir, train_examples, eval_examples, steps, batch_size, lr, warmup, seed=0, every=25,
          max_new_tokens=32):
    """Learnability: supervised training on the gold responses of train_examples (student prompt,
    no hint), from the model in model_dir, with a run's own budget (steps x batch_size problems at
    lr, AdamW, linear warm-up then constant, as train.py); held-out pass@1 on eval_examples (one
    sample each at T = 1) every `every` steps, per bucket (`category`). If supervision with the
    answer cannot learn the skill in the budget, neither RL nor distillation will.
    Returns {bucket: {step: pass@1}}."""
    model, processor = rollout.load_model(model_dir, dtype="float32", device="cpu")
    tok = processor.tokenizer
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    rng = random.Random(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    held = [rollout.encode(processor, ex["question"], rollout.open_images(ex)) for ex in eval_examples]

    curve = {}

    def held_out(step):
        model.eval()
        hits = eval.pass_counts(model, processor, held, eval_examples, 1, max_new_tokens, 1.0, seed=seed)["correct"]
        model.train()
        for b, v in eval.by_category(hits.tolist(), eval_examples).items():
            curve.setdefault(b, {})[step] = v

    held_out(0)
    model.train()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / max(1, warmup))
        batch = rng.sample(train_examples, batch_size)
        prompts = [rollout.encode(processor, ex["question"], rollout.open_images(ex)) for ex in batch]
        loss = toy.sft_loss(model, prompts, tok, [ex["record"]["gold_response"] for ex in batch],
                        [ex["answer"] for ex in batch], eos, answer_weight=0.0)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % every == 0 or step + 1 == steps:
            held_out(step + 1)
    return curve


def prompts_of(processor, examples, variant, fmt):
    """Encoded prompts of one diagnostic variant: student (no hint), tutor (the hint), or
    blank (the student's prompt on white images of the same sizes, eval.blank_images)."""
    import tutor
    if variant == "tutor":
        return [tutor.tutor_prompt(processor, ex, fmt) for ex in examples]
    images = [rollout.open_images(ex) for ex in examples]
    if variant == "blank":
        images = [eval.blank_images(ims) for ims in images]
    return [rollout.encode(processor, ex["question"], ims) for ex, ims in zip(examples, images)]


@torch.no_grad()
def diagnose(model, processor, examples, samples=1, temperature=1.0, max_new_tokens=32, seed=0):
    """Held-out pass@1 of the student (no hint), the tutor (the hint's words, the student's
    pixels), the student on a blank image, and the majority-answer baseline: overall and per bucket
    (`category`); the tutor on the problems the student fails, per bucket; what the student's
    answers name per bucket (answer_class); and the counterfactual (below)."""
    from collections import Counter
    fmt = rollout.box_format(model)
    buckets = sorted({ex.get("category") or "all" for ex in examples})
    res = {"by_bucket": {b: {} for b in buckets}}
    hits = {}
    for name in ("student", "tutor", "blank"):
        prompts = prompts_of(processor, examples, name, fmt)
        out = eval.pass_counts(model, processor, prompts, examples, samples, max_new_tokens, temperature, seed=seed)
        hits[name] = out["correct"] / samples
        res[name] = hits[name].mean().item()
        for b, v in eval.by_category(hits[name].tolist(), examples).items():
            res["by_bucket"][b][name] = v
        if name == "student":
            for b in buckets:
                res["by_bucket"][b]["answers"] = answer_shares(
                    [t for i, t in enumerate(out["texts"]) if (examples[i // samples].get("category") or "all") == b],
                    [ex for ex in examples if (ex.get("category") or "all") == b for _ in range(samples)])
    failed = hits["student"] == 0
    for b in buckets:
        sel = torch.tensor([(ex.get("category") or "all") == b for ex in examples]) & failed
        res["by_bucket"][b]["student_failures"] = int(sel.sum())
        res["by_bucket"][b]["tutor_on_failures"] = hits["tutor"][sel].mean().item() if sel.any() else float("nan")
    easy_right = [ex for ex, h in zip(examples, hits["student"].tolist()) if ex.get("category") == "easy" and h == 1]
    res["counterfactual"] = counterfactual(model, processor, easy_right, max_new_tokens, temperature, seed)
    top = Counter(ex["answer"] for ex in examples).most_common(1)[0][1]
    res["majority"] = top / len(examples)
    return res


def swapped(ex):
    """The example with its hint pointing the other way: focus and distractor swapped, steps
    dropped. A tutor that reads the hint's words follows it to the other marked shape."""
    regions = [{**r, "role": "distractor" if r["role"] == "focus" else "focus"} for r in ex["hint"]["regions"]]
    return {**ex, "hint": {"regions": regions, "steps": []}}


@torch.no_grad()
def counterfactual(model, processor, examples, max_new_tokens=32, temperature=1.0, seed=0):
    """Whether the tutor reads the hint or only the question: on easy problems the student gets
    right, the tutor shown the swapped hint (one sample each, T = 1). Returns the share of its
    answers that name the other marked shape (the hint's way), the target (the question's way),
    or anything else. A tutor that ignores the hint's words scores ~0 on the first."""
    if not examples:
        return {"n": 0, "follows_hint": float("nan"), "follows_question": float("nan"), "other": float("nan")}
    fmt = rollout.box_format(model)
    exs = [swapped(ex) for ex in examples]
    prompts = prompts_of(processor, exs, "tutor", fmt)
    out = eval.pass_counts(model, processor, prompts, exs, 1, max_new_tokens, temperature, seed=seed)
    said = [reward.normalize(reward.extract_answer(t) or "") for t in out["texts"]]
    hint_way = [reward.normalize(toy.other_marked(ex["record"])["colour"]) for ex in exs]
    cut = out.get("cut", torch.zeros(len(exs), dtype=torch.bool)).tolist()   # scored wrong, as `correct` is
    follows = sum(s == h and not c for s, h, c in zip(said, hint_way, cut)) / len(exs)
    question = out["correct"].float().mean().item()
    return {"n": len(exs), "follows_hint": follows, "follows_question": question, "other": 1 - follows - question}


def answer_shares(texts, examples):
    """Share of each eval.answer_class among responses (texts[i] answers examples[i])."""
    counts = {c: 0 for c in eval.ANSWER_CLASSES}
    for t, ex in zip(texts, examples):
        counts[eval.answer_class(t, ex["record"])] += 1
    return {c: n / max(1, len(texts)) for c, n in counts.items()}


def answer_position(tok, ids):
    """Index of the first token after '<answer>' in a response's ids (None if there is none)."""
    for j in range(1, len(ids)):
        if tok.decode(ids[:j]).endswith("<answer>"):
            return j if j < len(ids) else None
    return None


@torch.no_grad()
def group_regime(model, processor, examples, group_size=8, temperature=1.0, max_new_tokens=32, seed=0):
    """What GRPO sees at step 0 on training problems, overall and per bucket: the share of groups
    of group_size samples that all fail (no GRPO signal), all pass, or are mixed; the tutor's
    pass@1 on the all-fail problems (what PTD-PO can still teach there); and, on the failed
    rollouts of each non-easy bucket, the student's probability of the tutor's answer at the
    answer token (the tutor's most likely colour): the JSD's gradient on that logit scales with
    it, so a saturated student (~0.001) learns slowly from the paper's divergence."""
    fmt = rollout.box_format(model)
    plain = prompts_of(processor, examples, "student", fmt)
    ids, mask = rollout.sample(model, processor, plain, group_size, max_new_tokens, temperature, seed=seed)
    texts = rollout.decode(processor, ids, mask)
    ok = torch.tensor([reward.reward(t, examples[i // group_size]) for i, t in enumerate(texts)])
    hits = ok.view(len(examples), group_size).sum(1)
    cats = [ex.get("category") or "all" for ex in examples]
    fail = [ex for ex, c in zip(examples, hits.tolist()) if c == 0]
    tutor_hits = {}
    if fail:
        hinted = prompts_of(processor, fail, "tutor", fmt)
        out = eval.pass_counts(model, processor, hinted, fail, group_size, max_new_tokens, temperature, seed=seed + 1)
        tutor_hits = {id(ex): c / group_size for ex, c in zip(fail, out["correct"].tolist())}

    def shares(sel):
        h = hits[sel]
        res = {"n_groups": len(h), "all_fail": (h == 0).float().mean().item(),
               "all_pass": (h == group_size).float().mean().item()}
        res["mixed"] = 1.0 - res["all_fail"] - res["all_pass"]
        t = [tutor_hits[id(examples[i])] for i in sel.nonzero().squeeze(-1).tolist() if id(examples[i]) in tutor_hits]
        res["tutor_on_all_fail"] = sum(t) / len(t) if t else float("nan")
        return res

    res = {"group_size": group_size, **shares(torch.ones(len(examples), dtype=torch.bool)), "by_bucket": {}}
    for b in sorted(set(cats)):
        res["by_bucket"][b] = shares(torch.tensor([c == b for c in cats]))
        if b != "easy":
            res["by_bucket"][b].update(student_p(model, processor, examples, plain, ids, mask, ok, group_size, b))
    return res


def student_p(model, processor, examples, plain, ids, mask, ok, group_size, bucket):
    """On the failed rollouts of one bucket: the median student probability of the tutor's most
    likely colour at the answer token, and how often that colour is the right one."""
    import tutor
    fmt = rollout.box_format(model)
    tok = processor.tokenizer
    colour_ids = torch.tensor([tok(c)["input_ids"][0] for c in sorted(toy.COLOURS)])
    rows, at = [], []
    for i in range(len(ok)):
        if examples[i // group_size].get("category") == bucket and ok[i] == 0:
            j = answer_position(tok, ids[i][mask[i]].tolist())
            if j is not None:
                rows.append(i)
                at.append(j)
    res = {"failed_rows": len(rows), "student_p_tutor_answer": float("nan"), "tutor_top_is_right": float("nan")}
    if rows:
        exs = [examples[i // group_size] for i in rows]
        sub_ids, sub_mask = ids[rows], mask[rows]
        support = colour_ids.expand(len(rows), ids.shape[1], -1)
        pos = (torch.arange(len(rows)), torch.tensor(at))
        s = rollout.score(model, [plain[i // group_size] for i in rows], sub_ids, sub_mask, support=support)
        t = rollout.score(model, [tutor.tutor_prompt(processor, ex, fmt) for ex in exs], sub_ids, sub_mask,
                          support=support)
        top = t["support_logp"][pos].argmax(-1)
        p = s["support_logp"][pos].gather(-1, top[:, None]).exp().squeeze(-1)
        res["student_p_tutor_answer"] = statistics.median(p.tolist())
        right = torch.tensor([sorted(toy.COLOURS).index(ex["answer"]) for ex in exs])
        res["tutor_top_is_right"] = (top == right).float().mean().item()
    return res


def format_diagnostics(res, n):
    line = (f"held-out pass@1 on {n} examples (sampled, T=1): student {res['student']:.3f} | "
            f"tutor (hint in words) {res['tutor']:.3f} | student on blank image {res['blank']:.3f} | "
            f"majority answer {res['majority']:.3f}")
    for b, r in res.get("by_bucket", {}).items():
        line += f"\n  {b:5s}: student {r['student']:.3f} | tutor {r['tutor']:.3f} | blank {r['blank']:.3f}"
        if "tutor_on_failures" in r:
            line += f" | tutor on the student's {r['student_failures']} failures {r['tutor_on_failures']:.3f}"
        if "answers" in r:
            line += "\n         student names: " + " / ".join(f"{c} {v:.2f}" for c, v in r["answers"].items())
    cf = res.get("counterfactual")
    if cf:
        line += (f"\ncounterfactual (easy problems the student gets right, {cf['n']}, the tutor shown the hint with "
                 f"focus and distractor swapped): follows the hint {cf['follows_hint']:.3f} | follows the question "
                 f"{cf['follows_question']:.3f} | other {cf['other']:.3f}")
    g = res.get("groups")
    if g:
        line += (f"\ntraining groups at step 0 ({g['n_groups']} problems x {g['group_size']} samples): "
                 f"all-fail {g['all_fail']:.2f} | mixed {g['mixed']:.2f} | all-pass {g['all_pass']:.2f} | "
                 f"tutor pass@1 on the all-fail problems {g['tutor_on_all_fail']:.3f}")
        for b, r in g["by_bucket"].items():
            line += (f"\n  {b:5s} ({r['n_groups']}): all-fail {r['all_fail']:.2f} | mixed {r['mixed']:.2f} | "
                     f"all-pass {r['all_pass']:.2f} | tutor on all-fail {r['tutor_on_all_fail']:.3f}")
            if "failed_rows" in r:
                line += (f" | {r['failed_rows']} failed rollouts: median student p of the tutor's answer "
                         f"{r['student_p_tutor_answer']:.4f}")
    pr = res.get("probe")
    if pr:
        line += (f"\nlearnability probes (supervised on one bucket's gold responses, {pr['steps']} steps at lr "
                 f"{pr['lr']:g}, that bucket's prompts a step), held-out pass@1:")
        for b, curve in pr["curve"].items():
            line += (f"\n  {b:5s} (x {pr['batch_size'][b]}): "
                     + " -> ".join(f"{v:.3f} ({k})" for k, v in curve.items()))
    return line


# The regime PTD-PO is for, checked on the warm-started model. The student reads the picture on the
# easy bucket; on training problems many groups all fail (GRPO's advantage is zero there) and many
# are mixed (GRPO learns there: the hard bucket); the pivot bucket's groups (almost) all fail, so
# only the tutor can teach it; the tutor, the same weights with the hint's words, solves every
# non-easy bucket, including the problems the student fails; it reads the words (the
# counterfactual: shown a hint that points the other way, it follows); the student is unsure on
# its hard failures, not saturated; and supervision with the answer learns the hard and pivot
# buckets in the main job's budget (the probe).
# The probe's budget: the main job's (config.DEMO, a test checks): its steps, its lr and its
# warm-up, one probe per non-easy bucket with that bucket's prompts a step in the run (16 x its
# share of the training split: 6 hard, 5 pivot). Trained on both buckets at once, as RL must, the
# two pivots interfere (docs/DEMO.md); each probe asks whether its skill is learnable at all.
PROBE = {"steps": 80, "batch": 16, "lr": 5e-4, "warmup": 30}
REGIME = {"easy_student": 0.90, "easy_over_blank": 0.10, "all_fail_min": 0.20, "mixed_min": 0.20,
          "tutor_on_all_fail": 0.90, "tutor_text_min": 0.90, "counterfactual_min": 0.40,
          "pivot_all_fail_min": 0.85, "pivot_mixed_max": 0.05, "student_p_min": 0.02, "probe_min": 0.60}


def regime_failures(res, regime=REGIME):
    """What the diagnostics miss of the regime, as sentences ([] when it is met)."""
    out = []
    by, g = res["by_bucket"], res["groups"]
    easy = by["easy"]
    if easy["student"] < max(regime["easy_student"], easy["blank"] + regime["easy_over_blank"]):
        out.append(f"on the easy bucket the student scores {easy['student']:.3f} (needs >= {regime['easy_student']:.2f} "
                   f"and {regime['easy_over_blank']:.2f} above its blank-image score {easy['blank']:.3f})")
    if not g["all_fail"] >= regime["all_fail_min"]:
        out.append(f"{g['all_fail']:.2f} of the training groups all fail (needs >= {regime['all_fail_min']:.2f})")
    if not g["mixed"] >= regime["mixed_min"]:
        out.append(f"{g['mixed']:.2f} of the training groups are mixed (needs >= {regime['mixed_min']:.2f})")
    if not g["tutor_on_all_fail"] >= regime["tutor_on_all_fail"]:     # nan (no all-fail group) fails too
        out.append(f"the tutor solves {g['tutor_on_all_fail']:.3f} of the all-fail problems, below "
                   f"{regime['tutor_on_all_fail']:.2f}: the hint does not help enough")
    for b in sorted(set(by) - {"easy"}):
        for key, what in (("tutor", "problems"), ("tutor_on_failures", "problems the student fails")):
            if not by[b].get(key, float("nan")) >= regime["tutor_text_min"]:   # nan (no failure) fails too
                out.append(f"the tutor (the hint's words, the student's pixels) solves {by[b].get(key, float('nan')):.3f} "
                           f"of the {b} {what} (needs >= {regime['tutor_text_min']:.2f})")
    cf = res.get("counterfactual", {}).get("follows_hint", float("nan"))
    if not cf >= regime["counterfactual_min"]:
        out.append(f"shown a hint that points to the other marked shape, the tutor follows it {cf:.3f} of the time "
                   f"(needs >= {regime['counterfactual_min']:.2f}): it does not read the hint's words")
    missing = [b for b in toy.BUCKETS if b not in by or (b != "easy" and (
               b not in g["by_bucket"] or (res.get("probe") and b not in res["probe"]["final"])))]
    if missing:
        out.append(f"no diagnostics for the bucket(s) {missing}: every bucket of the task is needed")
    piv = g["by_bucket"].get("pivot", {"all_fail": float("nan"), "mixed": float("nan")})
    if not (piv["all_fail"] >= regime["pivot_all_fail_min"] and piv["mixed"] <= regime["pivot_mixed_max"]):
        out.append(f"the pivot bucket's training groups: all-fail {piv['all_fail']:.2f} (needs >= "
                   f"{regime['pivot_all_fail_min']:.2f}), mixed {piv['mixed']:.2f} (needs <= {regime['pivot_mixed_max']:.2f}): "
                   f"GRPO has a way in there")
    hard = g["by_bucket"].get("hard", {})
    if not hard.get("student_p_tutor_answer", float("nan")) >= regime["student_p_min"]:
        out.append(f"the student is saturated on its hard failures: median probability of the tutor's answer "
                   f"{hard.get('student_p_tutor_answer', float('nan')):.4f} < {regime['student_p_min']}")
    pr = res.get("probe")
    for b, final in (pr or {}).get("final", {}).items():
        if not final >= regime["probe_min"]:
            out.append(f"supervision with the answer reaches {final:.3f} on the {b} bucket in the main job's budget "
                       f"(needs >= {regime['probe_min']:.2f}): the skill is not learnable there")
    return out


def check_regime(res):
    """Exit non-zero (SystemExit) with a plain message when the regime is not met."""
    failures = regime_failures(res)
    if failures:
        raise SystemExit("toy.py: the warm-started model misses the regime PTD-PO is for:\n  - "
                         + "\n  - ".join(failures)
                         + "\nTry another --seed, --steps2, --hard_truth, --pivot_truth or --shares.")


def run_diagnostics(args, model, processor, model_dir, train_path, eval_path):
    """The build's diagnostics: held-out buckets, step-0 groups, the probe; printed and returned."""
    evals = data.load_jsonl(eval_path, report=lambda s: None)[:args.diag_n]
    trains = data.load_jsonl(train_path, report=lambda s: None)
    res = diagnose(model, processor, evals, seed=args.seed)
    res["groups"] = group_regime(model, processor, trains[:args.group_n], seed=args.seed)
    if args.probe_steps:
        t = time.time()
        held = data.load_jsonl(eval_path, report=lambda s: None)
        shares = toy.task_shares(os.path.dirname(train_path))
        res["probe"] = {"steps": args.probe_steps, "prompts_per_step": args.probe_batch, "lr": args.probe_lr,
                        "warmup": args.probe_warmup, "curve": {}, "final": {}, "batch_size": {}, "n_eval": {}}
        for b in sorted({ex["category"] for ex in held} - {"easy"}):
            batch = max(1, round(args.probe_batch * shares.get(b, toy.SHARES[b])))   # the bucket's prompts a step
            pool = [ex for ex in trains if ex["category"] == b]
            if len(pool) < batch:
                raise SystemExit(f"toy.py: the probe of the {b} bucket needs {batch} training problems a step, "
                                 f"{train_path} has {len(pool)}")
            curve = probe(model_dir, pool,
                          [ex for ex in held if ex["category"] == b], args.probe_steps, batch, args.probe_lr,
                          warmup=args.probe_warmup, seed=args.seed)[b]
            res["probe"]["curve"][b], res["probe"]["final"][b] = curve, curve[args.probe_steps]
            res["probe"]["batch_size"][b] = batch
            res["probe"]["n_eval"][b] = sum(ex["category"] == b for ex in held)
        res["probe"]["seconds"] = round(time.time() - t, 1)
    res["n"] = len(evals)
    print(format_diagnostics(res, len(evals)))
    return res


def write_diagnostics(res, args, argv, model_dir, seconds, build_seconds=None):
    """<model_dir>/diagnostics.json: the numbers, whether the regime is met, and how they were made.
    A build (build_seconds given) writes it anew; --diagnose_only --write replaces the numbers and
    the diagnostics' own flags, keeps how the model was built, and says how these were made."""
    path = os.path.join(model_dir, "diagnostics.json")
    failures = regime_failures(res)
    command = " ".join(["python", "demo/toy.py", *(sys.argv[1:] if argv is None else argv)])
    flags = {k: v for k, v in vars(args).items() if k not in ("out_dir", "threads")}
    where = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    now = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    if build_seconds is None:
        with open(path) as f:
            rec = json.load(f)
        mine = {k: v for k, v in flags.items() if k.startswith(("probe_", "diag_", "group_")) or k == "seed"}
        rec.update({**res, "regime": not failures, "failures": failures, "args": {**rec.get("args", {}), **mine},
                    "diagnosed": {"command": command, **where, "seconds": round(seconds, 1), "at": now}})
    else:
        rec = {**res, "regime": not failures, "failures": failures, "command": command, "args": flags, **where,
               "build_seconds": round(build_seconds, 1), "seconds": round(seconds, 1), "built": now,
               "model_sha256": toy.file_sha256(os.path.join(model_dir, "model.safetensors"))}
    with open(path + ".tmp", "w") as f:
        json.dump(rec, f, indent=1)
    os.replace(path + ".tmp", path)


