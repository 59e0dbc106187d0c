"""
eval.py: benchmarks (pass@1, pass@k, per category, length, entropy) and run comparisons.

    python eval.py                                 # the demo model on the demo's held-out split
    python eval.py --model runs/demo --data eval.jsonl --n_samples 8 --k 1 4 8
    python eval.py --model runs/demo --with_hints  # the hinted tutor instead: the hint gain
    python eval.py --with_hints --hint_style text  # the tutor reading another context (also
                                                   # --tutor_context answer), as train.py builds it
    python eval.py --diagnose                      # demo diagnostics: student / tutor / blank /
                                                   # majority
    python eval.py --compare runs/grpo runs/ptdpo --png curves.png
    torchrun --nproc_per_node=8 eval.py --model ... --data ...   # questions split across ranks

--model takes a model directory or hub id, a run directory (its final/ export), or with
--checkpoint a run's torch.distributed.checkpoint step directory. Hints are never shown unless
--with_hints. Rule-based answer matching only (reward.is_correct); no LLM judge. A response cut at
--max_new_tokens is scored wrong, as training's reward scores it. train.py's summary prints the
command (with --blank: the white-image chance line) that reproduces each of its columns.

It also holds the held-out evaluation a training run makes (train.py calls it; metrics.py writes
what it measures):
    m.update(heldout(policy, ...))        # held-out pass@1 / pass@n, per category, no hints
pass_counts is the held-out sampler-and-grader that train.py, eval.py and the demo's diagnostics
share: it is where the reward meets the sampler, so rollout.py does not import reward.py.
"""
import argparse
import json
import math
import os
import sys

import torch
from tqdm import tqdm

import checkpoint
import config
import data
import decode
import metrics
import reward
import rollout
import tutor
from config import NONNEG, POS, add_flags, ranged
from distributed import all_max, all_sum, print0, setup
from metrics import ANSWER_CLASSES, EVAL_SEED


def get_args(argv=None):
    p = argparse.ArgumentParser(description="Evaluate a model, or compare training runs.")
    p.add_argument("--model", default="toy",
                   help="model dir / hub id / run dir, or 'toy' (the demo model)")
    p.add_argument("--checkpoint", default="",
                   help="a run's checkpoints/step_N directory to load into --model")
    p.add_argument("--data", default="",
                   help="benchmark JSONL (default: the demo's held-out split)")
    p.add_argument("--limit", type=NONNEG, default=0,
                   help="evaluate the first N problems only (0: all)")
    p.add_argument("--n_samples", type=POS, default=4, help="samples per problem")
    p.add_argument("--k", type=POS, nargs="+", default=[1],
                   help="pass@k values to report (k <= n_samples)")
    p.add_argument("--temperature", type=ranged(float, 0), default=1.0,
                   help="sampling temperature (0: greedy)")
    add_flags(p, "--top_p")
    p.add_argument("--max_new_tokens", type=POS, default=None,
                   help="response length cap (default: a run directory's own; the demo model 32; "
                        "else 4096; a default is capped at the model's positions minus the longest "
                        "prompt)")
    p.add_argument("--with_hints", action="store_true",
                   help="evaluate the hinted tutor (hint in context)")
    add_flags(p, "--tutor_context", "--hint_style")   # what the tutor reads, with --with_hints
    p.add_argument("--blank", action="store_true",
                   help="also score the same prompts on white images of the same sizes: the chance "
                        "line of a model that does not read the picture (train.py's summary prints "
                        "it beside each pass@1)")
    p.add_argument("--diagnose", action="store_true",
                   help="demo diagnostics: student, tutor, blank image, majority")
    add_flags(p, "--token_budget", "--kv_cache_gb", "--plain_generate", "--no_compile",
              "--no_cuda_graphs", "--max_prompt_tokens", "--dtype", "--seed", "--threads",
              seed=1234)
    p.add_argument("--out", default="", help="write the results as JSON here")
    p.add_argument("--compare", nargs="+", default=None,
                   help="run directories whose metrics.jsonl to compare")
    p.add_argument("--png", default="compare.png", help="where --compare draws its curves")
    add_flags(p, "--trust_remote_code", "--allow_outside_images")
    args = p.parse_args(argv)
    if any(k > args.n_samples for k in args.k):
        p.error(f"--k values must be in 1..{args.n_samples} (--n_samples)")
    if args.blank and args.with_hints:
        p.error("--blank scores the student's prompts on white images: not with --with_hints")
    if (args.tutor_context, args.hint_style) != ("hint", "structured"):
        if not args.with_hints or args.diagnose:
            p.error("--tutor_context and --hint_style choose what the tutor reads: use them with "
                    "--with_hints (not --diagnose, which reads the hint)")
        if args.tutor_context in ("none", "unanswer"):
            p.error(f"--tutor_context {args.tutor_context} is a training control (the student's own "
                    "prompt, scored as training scores it): evaluate the student without --with_hints")
    return args


def pass_at_k(n, c, k):
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


def resolve_model(args):
    # a default cap is fitted to the model (cap_new_tokens)
    args.default_cap = args.max_new_tokens is None
    if args.model == "toy":
        from demo import toy   # the demo, built on first use
        args.model, _, demo_eval = toy.ensure()
        args.data = args.data or demo_eval
    elif os.path.exists(os.path.join(args.model, "config.json")) and os.path.exists(
            os.path.join(args.model, "metrics.jsonl")):  # a run directory: its export and eval data
        run_cfg = run_config(args.model)
        args.data = args.data or run_cfg.get("eval_data") or ""
        args.max_new_tokens = args.max_new_tokens or run_cfg.get("max_new_tokens")
        args.run, args.model = args.model, (run_cfg["model"] if args.checkpoint
                                            else os.path.join(args.model, "final"))
    if args.max_new_tokens is None:   # a real model's answers need room; the demo's are ~20 tokens
        args.max_new_tokens = 32 if config.is_demo(args.model) else 4096
    # name the path first: it is the likelier slip
    if not args.data and not os.path.exists(args.model):
        sys.exit(f"eval.py: --model {args.model}: no such file or directory (a hub id needs --data "
                 f"too)")
    if not args.data:
        sys.exit("eval.py: --data is required with a model other than 'toy'")


# what eval.py reads from a run's config.json, and what each value must be
RUN_KEYS = {"model": (lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string"),
            "eval_data": (lambda v: v is None or isinstance(v, str), "a string or null"),
            "max_new_tokens": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                               "a whole number >= 1")}


def run_config(run):
    """A run directory's config.json, checked where it is read: one line naming the file and the key
    for a file that is not a JSON object or a value of the wrong type (it would fail far later)."""
    path = os.path.join(run, "config.json")
    try:
        cfg = metrics.read_config(run)
    except ValueError as e:
        sys.exit(f"eval.py: --model {run}: {e}; fix or restore the file")
    for key, (ok, want) in RUN_KEYS.items():
        if key in cfg and not ok(cfg[key]):
            sys.exit(f"eval.py: --model {run}: {path}: '{key}' is {json.dumps(cfg[key])[:60]}, "
                     f"expected {want}; fix the file or pass the value as a flag")
    if "model" not in cfg:
        sys.exit(f"eval.py: --model {run}: {path} names no 'model'; fix or restore the file")
    return cfg


def cap_new_tokens(args, model, longest, rank=0):
    """A default response cap that fits the model: its positions minus the longest prompt (a
    4,096-token default on a model of 2,048 positions would run every row past the end). A cap the
    user chose is kept, with a warning when it cannot fit."""
    positions = getattr(model.config.get_text_config(), "max_position_embeddings", None)
    if not positions:
        return
    room = positions - longest
    if room < 1:
        sys.exit(f"eval.py: the longest prompt has {longest} tokens, as many as the model's "
                 f"{positions} positions: lower --max_prompt_tokens")
    if args.max_new_tokens > room and rank == 0:
        print(f"eval.py: --max_new_tokens {args.max_new_tokens} " + (
            f"lowered to {room}: the model's {positions} positions minus the longest prompt "
            f"({longest} tokens)"
            if args.default_cap else f"runs past the model's {positions} positions after the "
                                     f"longest prompt ({longest} tokens; {room} fit)"), flush=True)
    if args.default_cap:
        args.max_new_tokens = min(args.max_new_tokens, room)


def load(args, device):
    run = getattr(args, "run", None)
    if run and not args.checkpoint and not os.path.isdir(args.model):
        sys.exit(f"eval.py: --model {run}: the run has no final/ export (trained with --no_export, "
                 f"or stopped); evaluate a checkpoint with --checkpoint "
                 f"{os.path.join(run, 'checkpoints', 'step_N')}")
    model, processor = rollout.load_model(args.model, args.dtype, str(device),
                                          args.trust_remote_code)
    if args.checkpoint:
        try:
            checkpoint.load_weights(args.checkpoint, model)
        except RuntimeError as e:
            sys.exit(f"eval.py: {e}")
    return model, processor


def evaluate(model, processor, examples, args, rank=0, world=1, fast=None, blank=False):
    """Per-problem sums over the samples, over ranks: correct, cut (at the cap), length, entropy,
    and what the answers name where the records list the picture's objects (answer_class).
    blank: the student's prompts on white images of the same sizes (no entropy pass). fast: a
    decode.FastSampler (decode.for_run: on CUDA unless --plain_generate), as in train.py."""
    fmt = rollout.box_format(model)
    mine = list(range(rank, len(examples), world))
    prompts = []
    for i in mine:
        ex = examples[i]
        p = tutor.tutor_prompt(processor, ex, fmt, args.tutor_context, args.hint_style) \
            if args.with_hints else None
        if p is None:
            images = rollout.open_images(ex)
            p = rollout.encode(processor, ex["question"], blank_images(images) if blank else images)
        prompts.append(p)
    if not blank:
        longest = max((len(p["input_ids"]) for p in prompts), default=0)
        cap_new_tokens(args, model, int(all_max(torch.tensor(longest))), rank)
    res = pass_counts(model, processor, prompts, [examples[i] for i in mine], args.n_samples,
                      args.max_new_tokens, args.temperature, seed=args.seed, entropy=not blank,
                      token_budget=args.token_budget, top_p=args.top_p,
                      kv_cache_gb=args.kv_cache_gb, prompt_ids=mine, fast=fast)
    scene = any("scene" in ex["record"] for ex in examples)
    out = {k: torch.zeros(len(examples), dtype=torch.float64)
           for k in ("correct", "cut", "length", "entropy")}
    classes = torch.zeros(len(examples), len(ANSWER_CLASSES), dtype=torch.float64)
    for j, i in enumerate(mine):
        for k in out:
            out[k][i] = res[k][j] if k in res else 0.0
    for r, text in enumerate(res["texts"]):
        i = mine[r // args.n_samples]
        if scene:
            classes[i, ANSWER_CLASSES.index(answer_class(text, examples[i]["record"]))] += 1
    out = {k: all_sum(v) for k, v in out.items()}
    if scene:
        out["classes"] = all_sum(classes)
    return out


def summarise(examples, counts, args, blank=None):
    """pass@k overall and per category (pass@n per category is train.py's "any of the n right"),
    the share of problems whose samples all failed, length, entropy, the share of responses cut,
    what the answers name per category, and with
    blank (evaluate's counts on white images) the blank-image pass@1: every number of train.py's
    summary, under the same names with "/category"."""
    n, N, correct = args.n_samples, len(examples), counts["correct"]
    res = {"problems": N, "samples": n, "pass@1": correct.sum().item() / (n * N),
           "resp_len": counts["length"].sum().item() / (n * N),
           "entropy": counts["entropy"].sum().item() / max(counts["length"].sum().item(), 1),
           "cut_frac": counts["cut"].sum().item() / (n * N), "with_hints": args.with_hints,
           "tutor_context": args.tutor_context, "hint_style": args.hint_style,
           "temperature": args.temperature, "top_p": args.top_p,
           "max_new_tokens": args.max_new_tokens, "seed": args.seed}
    cats = sorted({ex["category"] for ex in examples if ex.get("category")})
    # no sample right: GRPO has no signal there
    res["all_fail"] = sum(c == 0 for c in correct.tolist()) / N
    for c in cats:
        sel = [x for x, ex in zip(correct.tolist(), examples) if ex.get("category") == c]
        res[f"all_fail/{c}"] = sum(x == 0 for x in sel) / len(sel)
    for k in args.k:
        res[f"pass@{k}"] = sum(pass_at_k(n, int(c), k) for c in correct.tolist()) / N
        for c in cats:
            sel = [int(x) for x, ex in zip(correct.tolist(), examples) if ex.get("category") == c]
            res[f"pass@{k}/{c}"] = sum(pass_at_k(n, x, k) for x in sel) / len(sel)
    if blank is not None:
        res["blank_pass@1"] = blank["correct"].sum().item() / (n * N)
        for c in cats:
            sel = torch.tensor([ex.get("category") == c for ex in examples])
            res[f"blank_pass@1/{c}"] = blank["correct"][sel].sum().item() / (n * sel.sum().item())
    if "classes" in counts:
        for c in cats:
            sel = torch.tensor([ex.get("category") == c for ex in examples])
            shares = counts["classes"][sel].sum(0) / (n * sel.sum().item())
            res.update({f"answers/{c}/{name}": v
                        for name, v in zip(ANSWER_CLASSES, shares.tolist())})
    by = by_category((correct / n).tolist(), examples)
    if len(by) > 1:
        res["by_category"] = by
    return res


def warn_cut(res, rank=0):
    """Once: how many responses hit the cap before EOS (scored wrong, as in training)."""
    if res["cut_frac"] > 0 and rank == 0:
        total = res["problems"] * res["samples"]
        print(f"eval.py: warning: {round(res['cut_frac'] * total)} of {total} responses "
              f"({res['cut_frac']:.1%}) were cut at --max_new_tokens {res['max_new_tokens']} "
              f"before the end-of-sequence token and are scored wrong, as training's reward scores "
              f"them; raise --max_new_tokens if answers need more room", flush=True)


def print_table(res):
    keys = [k for k in res if k.startswith(("pass@", "blank_pass@", "all_fail", "answers/"))] + [
        "resp_len", "entropy", "cut_frac"]
    tutor_note = (f" (tutor, reading: {res['tutor_context']}, {res['hint_style']})"
                  if res["with_hints"] else "")
    print(f"{res['problems']} problems x {res['samples']} samples{tutor_note}, "
          f"T={res['temperature']}, top_p={res['top_p']}, max_new_tokens={res['max_new_tokens']}, "
          f"seed={res['seed']}")
    for k in keys:
        name = k.replace("blank_pass@", "blank image pass@").replace("/", " ")
        print(f"  {name:24s} {res[k]:.4f}")

# -----------------------------------------------------------------------------
# held-out evaluation during training (pass_counts: eval.py's and the demo's too)


def waiting(total, desc, rank):
    """A tqdm bar on rank 0 (counting this rank's rows) for the waits of a real model: a step's
    rollouts or a held-out evaluation can take minutes. It appears only after 5 s, so the demo's
    one-line-per-step log stays clean."""
    return tqdm(total=total, desc=desc, unit="rows", leave=False, delay=5, disable=rank != 0)


@torch.no_grad()
def pass_counts(model, processor, prompts, examples, n_samples, max_new_tokens, temperature=1.0,
                seed=0, entropy=False, token_budget=16384, **sample_kw):
    """pass counts of n_samples responses per prompt (prompts[i] asks examples[i]).
    Returns dict of (B,) tensors: correct (0..n_samples), cut (responses cut at max_new_tokens),
    length (tokens, summed over samples), and entropy (summed over tokens) when asked; plus the
    texts. A response cut before EOS is scored wrong, as training's reward scores it
    (train.rewards_of): an unfinished answer is not an answer. sample_kw: top_p, kv_cache_gb,
    prompt_ids, progress, fast, as for rollout.sample()."""
    ids, mask = rollout.sample(model, processor, prompts, n_samples, max_new_tokens, temperature,
                               seed=seed, **sample_kw)
    texts = rollout.decode(processor, ids, mask)
    hits = torch.tensor([reward.reward(t, examples[i // n_samples]) for i, t in enumerate(texts)],
                        dtype=torch.float)
    cut = ~(ids == rollout.eos_id(processor)).any(1)
    hits = torch.where(cut, torch.zeros_like(hits), hits)
    B, R = len(prompts), mask.shape[1]
    out = {"correct": hits.view(B, n_samples).sum(1), "cut": cut.view(B, n_samples).sum(1).double(),
           "length": mask.view(B, n_samples, R).sum((1, 2)).double(), "texts": texts}
    if entropy:
        ent = rollout.score(model, [p for p in prompts for _ in range(n_samples)], ids, mask,
                            token_budget=token_budget,
                            temperature=temperature if temperature > 0 else 1.0,
                            entropy=True)["entropy"]
        ent = ent if ent is not None else torch.zeros(mask.shape)        # no prompts on this rank
        out["entropy"] = (ent * mask).view(B, n_samples, R).sum((1, 2)).double()
    return out


def blank_images(images):
    """White pictures of the same sizes: what a model that does not read the picture sees."""
    from PIL import Image
    return [Image.new("RGB", im.size, (255, 255, 255)) for im in images]


def heldout(model, processor, examples, args, rank, world, seed=EVAL_SEED, fast=None,
            blank=False):
    """Held-out pass@1 (the mean over n = --eval_samples samples), pass@n (any of the n right) and
    mean response length, no hints, split across ranks; the same per `category` when the data
    has categories (the demo's buckets: eval_pass1/easy, eval_pass8/hard, ...), and what the
    answers name where the records list the picture's objects (answer_class). blank=True scores
    the same prompts on white images of the same sizes instead (eval_blank_pass1...): the chance
    line of a model that does not read the picture."""
    idx = list(range(rank, len(examples), world))
    mine = [examples[i] for i in idx]
    images = [rollout.open_images(ex) for ex in mine]
    if blank:
        images = [blank_images(ims) for ims in images]
    prompts = [rollout.encode(processor, ex["question"], ims) for ex, ims in zip(mine, images)]
    n = args.eval_samples
    with waiting(len(prompts) * n, "held-out evaluation" + (" (blank images)" if blank else ""),
                 rank) as bar:
        res = pass_counts(model, processor, prompts, mine, n, args.max_new_tokens, args.temperature,
                          seed=seed, top_p=args.top_p, kv_cache_gb=args.kv_cache_gb, prompt_ids=idx,
                          progress=bar, fast=fast)
    # the same on every rank: the categories, and whether the records list the picture's objects
    cats = sorted({ex["category"] for ex in examples if ex.get("category")})
    groups = [""] + cats
    scene = any("scene" in ex["record"] for ex in examples)
    # per group: correct, problems, any correct, length, then the answer classes' counts
    sums = torch.zeros(len(groups), 4 + len(ANSWER_CLASSES), dtype=torch.float64)
    classes = torch.zeros(len(mine), len(ANSWER_CLASSES), dtype=torch.float64)
    if scene:
        for i, t in enumerate(res["texts"]):
            classes[i // n, ANSWER_CLASSES.index(answer_class(t, mine[i // n]["record"]))] += 1
    for j, c in enumerate(groups):
        sel = torch.tensor([not c or ex.get("category") == c for ex in mine], dtype=torch.bool)
        sums[j, :4] = torch.tensor([res["correct"][sel].sum().item(), sel.sum().item(),
                                    (res["correct"][sel] > 0).sum().item(),
                                    res["length"][sel].sum().item()])
        sums[j, 4:] = classes[sel].sum(0)
    sums = all_sum(sums)
    out, head = {}, "eval_blank_pass" if blank else "eval_pass"
    for j, c in enumerate(groups):
        tail = f"/{c}" if c else ""
        problems = max(sums[j, 1].item(), 1.0)
        out[f"{head}1{tail}"] = sums[j, 0].item() / (problems * n)
        if n > 1 and not blank:
            out[f"{head}{n}{tail}"] = sums[j, 2].item() / problems
        if scene and not blank and c:
            for k, name in enumerate(ANSWER_CLASSES):
                out[f"eval_answers/{c}/{name}"] = sums[j, 4 + k].item() / (problems * n)
    if not blank:
        out["eval_len"] = sums[0, 3].item() / (max(sums[0, 1].item(), 1.0) * n)
    return out


def by_category(values, examples):
    """{category: mean of values over its examples}, sorted; examples without one count as "all".
    The one per-category mean of eval.py and the demo's diagnostics (train.py's held-out evaluation
    sums across ranks first, above)."""
    cats = {}
    for v, ex in zip(values, examples):
        cats.setdefault(ex.get("category") or "all", []).append(float(v))
    return {c: sum(v) / len(v) for c, v in sorted(cats.items())}


def answer_class(text, record):
    """What a response names, for a problem whose record lists the picture's objects (the demo's
    `scene`, each with its colour, and which of them are marked: `framed`, `shaded`): 'target' (the
    right answer), 'marked' (the colour of the marked shape the question does not ask for: the
    misreading the demo plants), 'other' (any other shape's colour in the picture), 'absent' (a
    colour not in the picture) or 'none' (no answer). A student that reads the picture says
    'target', 'marked' or 'other'; one that guesses says 'absent' most of the time."""
    said = reward.extract_answer(text)
    said = reward.normalize(said) if said else ""
    if not said:
        return "none"
    if said == reward.normalize(record["answer"]):
        return "target"
    marked = [record[k] for k in ("framed", "shaded") if isinstance(record.get(k), int)]
    if said in {reward.normalize(record["scene"][i]["colour"]) for i in marked}:
        return "marked"
    if said in {reward.normalize(o["colour"]) for o in record["scene"]}:
        return "other"
    return "absent"

# -----------------------------------------------------------------------------
# comparing runs


def read_metrics(run):
    """A run's metrics, one record per step (a later record of a step replaces an earlier one)."""
    by_step = {}
    for r in metrics.read_jsonl(os.path.join(run, "metrics.jsonl")):
        by_step[(r["step"], "reward" in r, bool(r.get("final")))] = r
    return [by_step[k] for k in sorted(by_step, key=lambda k: (k[0], k[2], k[1]))]


def compare(runs, png):
    """A summary table of several runs and one PNG with their curves."""
    for run in runs:
        if not os.path.isfile(os.path.join(run, "metrics.jsonl")):
            sys.exit(f"eval.py: --compare: {run} is not a run directory (no metrics.jsonl in it)")
    rows = []
    for run in runs:
        ms = read_metrics(run)
        ev = [m for m in ms if "eval_pass1" in m]
        tr = [m for m in ms if "reward" in m]
        tail = tr[-max(1, len(tr) // 5):] if tr else []
        rows.append({"run": run, "steps": tr[-1]["step"] if tr else 0,
                     "pass1_start": ev[0]["eval_pass1"] if ev else float("nan"),
                     "pass1_end": ev[-1]["eval_pass1"] if ev else float("nan"),
                     "entropy_end": sum(m["entropy"] for m in tail) / max(len(tail), 1),
                     "div_mean": sum(metrics.divergence_of(m) for m in tr) / max(len(tr), 1),
                     "distilled_frac": sum(m["distilled_frac"] for m in tr) / max(len(tr), 1),
                     "seconds": sum(m["t_rollout"] + m["t_old"] + m["t_ref_tutor"] + m["t_update"]
                                    for m in tr)})
    print(f"{'run':40s} {'steps':>5s} {'pass@1 0':>9s} {'pass@1 end':>10s} {'entropy':>8s} "
          f"{'jsd':>8s} {'distilled':>9s} {'time s':>7s}")
    for r in rows:
        print(f"{r['run'][-40:]:40s} {r['steps']:5d} {r['pass1_start']:9.3f} "
              f"{r['pass1_end']:10.3f} {r['entropy_end']:8.3f} {r['div_mean']:8.4f} "
              f"{r['distilled_frac']:9.2f} {r['seconds']:7.0f}")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("eval.py: no PNG drawn: --compare draws with matplotlib (pip install matplotlib)")
        return rows
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.5))
    for run in runs:
        ms = read_metrics(run)
        label = os.path.basename(os.path.normpath(run))
        ev = [m for m in ms if "eval_pass1" in m]
        tr = [m for m in ms if "reward" in m]
        axes[0].plot([m["step"] for m in ev], [m["eval_pass1"] for m in ev], marker="o",
                     label=label)
        for ax, key in zip(axes[1:], ("reward", "entropy", "div")):
            ax.plot([m["step"] for m in tr],
                    [metrics.divergence_of(m) if key == "div" else m[key] for m in tr],
                    label=label, alpha=0.8)
    titles = ("held-out pass@1 (no hints)", "train reward", "policy entropy",
              "distillation divergence")
    for ax, title in zip(axes, titles):
        ax.set_title(title)
        ax.set_xlabel("step")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"curves written to {png}")
    return rows


def main(argv=None):
    args = get_args(argv)
    if args.compare:
        return compare(args.compare, args.png)
    if args.threads:
        torch.set_num_threads(args.threads)
    rank, world, device = setup()
    resolve_model(args)
    model, processor = load(args, device)
    log = print0 if rank == 0 else (lambda *a: None)
    try:
        examples = data.load_jsonl(args.data, report=log,
                                   allow_outside_images=args.allow_outside_images)
        examples = examples[:args.limit] if args.limit else examples
        examples = data.check_lengths(examples, processor, args.max_prompt_tokens, report=log)
    except data.DataError as e:
        sys.exit(f"eval.py: {e}")
    if args.diagnose:
        from demo import diagnostics
        res = diagnostics.diagnose(model, processor, examples, samples=args.n_samples,
                                   temperature=args.temperature,
                                   max_new_tokens=args.max_new_tokens, seed=args.seed)
        print0(diagnostics.format_diagnostics(res, len(examples)))
    else:
        fast = decode.for_run(model, args, device)   # the train loop's fast sampler on CUDA
        counts = evaluate(model, processor, examples, args, rank, world, fast)
        blank = (evaluate(model, processor, examples, args, rank, world, fast, blank=True)
                 if args.blank else None)
        res = summarise(examples, counts, args, blank)
        warn_cut(res, rank)
        if rank == 0:
            print_table(res)
    if args.out and rank == 0:
        try:
            with open(args.out, "w") as f:
                json.dump({**res, "model": args.model, "data": args.data}, f, indent=1)
        except OSError as e:
            sys.exit(f"eval.py: cannot write --out {args.out}: {e.strerror or e} "
                     f"(errno {e.errno}); the results are printed above")
    return res


if __name__ == "__main__":
    main()
