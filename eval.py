"""
eval.py: benchmarks (pass@1, pass@k, per category, length, entropy) and run comparisons.

    python eval.py                                       # the demo model on the demo's held-out split
    python eval.py --model runs/demo --data eval.jsonl --n_samples 8 --k 1 4 8
    python eval.py --model runs/demo --with_hints        # the hinted tutor instead: the hint gain
    python eval.py --diagnose                            # demo diagnostics: student / tutor / blank / majority
    python eval.py --compare runs/grpo runs/ptdpo --png curves.png
    torchrun --nproc_per_node=8 eval.py --model ... --data ...   # questions split across ranks

--model takes a model directory or hub id, a run directory (its final/ export), or with
--checkpoint a run's torch.distributed.checkpoint step directory. Hints are never shown unless
--with_hints. Rule-based answer matching only (reward.is_correct); no LLM judge.
"""
import argparse
import json
import math
import os
import sys

import torch

import checkpoint
import config
import data
import decode
import report
import rollout
import tutor
from config import NONNEG, POS, add_flags, ranged
from distributed import all_sum, print0, setup


def get_args(argv=None):
    p = argparse.ArgumentParser(description="Evaluate a model, or compare training runs.")
    p.add_argument("--model", default="toy", help="model dir / hub id / run dir, or 'toy' (the demo model)")
    p.add_argument("--checkpoint", default="",
                   help="a run's checkpoints/step_N directory to load into --model")
    p.add_argument("--data", default="", help="benchmark JSONL (default: the demo's held-out split)")
    p.add_argument("--limit", type=NONNEG, default=0, help="evaluate the first N problems only (0: all)")
    p.add_argument("--n_samples", type=POS, default=4, help="samples per problem")
    p.add_argument("--k", type=POS, nargs="+", default=[1], help="pass@k values to report (k <= n_samples)")
    p.add_argument("--temperature", type=ranged(float, 0), default=1.0, help="sampling temperature (0: greedy)")
    add_flags(p, "--top_p")
    p.add_argument("--max_new_tokens", type=POS, default=None,
                   help="response length cap (default: a run directory's own; the demo model 32; else 4096)")
    p.add_argument("--with_hints", action="store_true", help="evaluate the hinted tutor (hint in context)")
    p.add_argument("--diagnose", action="store_true",
                   help="demo diagnostics: student, tutor, blank image, majority")
    add_flags(p, "--token_budget", "--kv_cache_gb", "--plain_generate", "--no_compile", "--no_cuda_graphs",
              "--max_prompt_tokens", "--dtype", "--seed", "--threads", seed=1234)
    p.add_argument("--out", default="", help="write the results as JSON here")
    p.add_argument("--compare", nargs="+", default=None,
                   help="run directories whose metrics.jsonl to compare")
    p.add_argument("--png", default="compare.png", help="where --compare draws its curves")
    add_flags(p, "--trust_remote_code", "--allow_outside_images")
    args = p.parse_args(argv)
    if any(k > args.n_samples for k in args.k):
        p.error(f"--k values must be in 1..{args.n_samples} (--n_samples)")
    return args


def pass_at_k(n, c, k):
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


def resolve_model(args):
    if args.model == "toy":
        args.model, _, demo_eval = config.demo_paths()
        args.data = args.data or demo_eval
    elif os.path.exists(os.path.join(args.model, "config.json")) and os.path.exists(
            os.path.join(args.model, "metrics.jsonl")):      # a run directory: its export and eval data
        with open(os.path.join(args.model, "config.json")) as f:
            run_cfg = json.load(f)
        args.data = args.data or run_cfg.get("eval_data") or ""
        args.max_new_tokens = args.max_new_tokens or run_cfg.get("max_new_tokens")
        args.model = run_cfg["model"] if args.checkpoint else os.path.join(args.model, "final")
    if args.max_new_tokens is None:   # a real model's answers need room; the demo's are ~20 tokens
        args.max_new_tokens = 32 if config.is_demo(args.model) else 4096
    if not args.data and not os.path.exists(args.model):   # name the path first: it is the likelier slip
        sys.exit(f"eval.py: --model {args.model}: no such file or directory (a hub id needs --data too)")
    if not args.data:
        sys.exit("eval.py: --data is required with a model other than 'toy'")


def load(args, device):
    model, processor = rollout.load_model(args.model, args.dtype, str(device), args.trust_remote_code)
    if args.checkpoint:
        try:
            checkpoint.load_weights(args.checkpoint, model)
        except RuntimeError as e:
            sys.exit(f"eval.py: {e}")
    return model, processor


def evaluate(model, processor, examples, args, rank=0, world=1, fast=None):
    """Per-problem correct counts, lengths and entropies; summed over ranks. fast: a decode.FastSampler
    (decode.for_run: on CUDA unless --plain_generate), as in train.py."""
    fmt = rollout.box_format(model)
    mine = list(range(rank, len(examples), world))
    prompts = []
    for i in mine:
        ex = examples[i]
        p = tutor.tutor_prompt(processor, ex, fmt) if args.with_hints else None
        prompts.append(p or rollout.encode(processor, ex["question"], rollout.open_images(ex)))
    res = report.pass_counts(model, processor, prompts, [examples[i] for i in mine], args.n_samples,
                             args.max_new_tokens, args.temperature, seed=args.seed, entropy=True,
                             token_budget=args.token_budget, top_p=args.top_p, kv_cache_gb=args.kv_cache_gb,
                             prompt_ids=mine, fast=fast)
    correct, length, entropy = (torch.zeros(len(examples), dtype=torch.float64) for _ in range(3))
    for j, i in enumerate(mine):
        correct[i], length[i], entropy[i] = res["correct"][j], res["length"][j], res["entropy"][j]
    return all_sum(correct), all_sum(length), all_sum(entropy)


def summarise(examples, correct, length, entropy, args):
    n = args.n_samples
    res = {"problems": len(examples), "samples": n, "pass@1": correct.sum().item() / (n * len(examples)),
           "resp_len": length.sum().item() / (n * len(examples)),
           "entropy": entropy.sum().item() / max(length.sum().item(), 1), "with_hints": args.with_hints,
           "temperature": args.temperature, "top_p": args.top_p}
    for k in args.k:
        if k <= n:
            res[f"pass@{k}"] = sum(pass_at_k(n, int(c), k) for c in correct.tolist()) / len(examples)
    cats = report.by_category((correct / n).tolist(), examples)
    if len(cats) > 1:
        res["by_category"] = cats
    return res


def print_table(res):
    keys = [k for k in res if k.startswith("pass@")] + ["resp_len", "entropy"]
    tutor_note = " (tutor, with hints)" if res["with_hints"] else ""
    print(f"{res['problems']} problems x {res['samples']} samples{tutor_note}, T={res['temperature']}, "
          f"top_p={res['top_p']}")
    for k in keys:
        print(f"  {k:10s} {res[k]:.4f}")
    for cat, v in res.get("by_category", {}).items():
        print(f"  pass@1 [{cat}] {v:.4f}")

# -----------------------------------------------------------------------------
# comparing runs


def read_metrics(run):
    """A run's metrics, one record per step (a later record of a step replaces an earlier one)."""
    by_step = {}
    for r in report.read_jsonl(os.path.join(run, "metrics.jsonl")):
        by_step[(r["step"], "reward" in r, bool(r.get("final")))] = r
    return [by_step[k] for k in sorted(by_step, key=lambda k: (k[0], k[2], k[1]))]


def divergence(m):
    """The distillation term of a step, whichever divergence the run used."""
    return next((m[k] for k in ("jsd", "fkl", "rkl") if k in m), 0.0)


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
                     "jsd_mean": sum(divergence(m) for m in tr) / max(len(tr), 1),
                     "distilled_frac": sum(m["distilled_frac"] for m in tr) / max(len(tr), 1),
                     "seconds": sum(m["t_rollout"] + m["t_old"] + m["t_ref_tutor"] + m["t_update"] for m in tr)})
    print(f"{'run':40s} {'steps':>5s} {'pass@1 0':>9s} {'pass@1 end':>10s} {'entropy':>8s} {'jsd':>8s} "
          f"{'distilled':>9s} {'time s':>7s}")
    for r in rows:
        print(f"{r['run'][-40:]:40s} {r['steps']:5d} {r['pass1_start']:9.3f} {r['pass1_end']:10.3f} "
              f"{r['entropy_end']:8.3f} {r['jsd_mean']:8.4f} {r['distilled_frac']:9.2f} {r['seconds']:7.0f}")
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
        axes[0].plot([m["step"] for m in ev], [m["eval_pass1"] for m in ev], marker="o", label=label)
        for ax, key in zip(axes[1:], ("reward", "entropy", "jsd")):
            ax.plot([m["step"] for m in tr], [divergence(m) if key == "jsd" else m[key] for m in tr],
                    label=label, alpha=0.8)
    titles = ("held-out pass@1 (no hints)", "train reward", "policy entropy", "distillation divergence")
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
        examples = data.load_jsonl(args.data, report=log, allow_outside_images=args.allow_outside_images)
        examples = examples[:args.limit] if args.limit else examples
        examples = data.check_lengths(examples, processor, args.max_prompt_tokens, report=log)
    except data.DataError as e:
        sys.exit(f"eval.py: {e}")
    if args.diagnose:
        import toy
        res = toy.diagnose(model, processor, examples, samples=args.n_samples, temperature=args.temperature,
                           max_new_tokens=args.max_new_tokens, seed=args.seed)
        print0(toy.format_diagnostics(res, len(examples)))
    else:
        fast = decode.for_run(model, args, device)   # the train loop's fast sampler on CUDA
        res = summarise(examples, *evaluate(model, processor, examples, args, rank, world, fast), args)
        if rank == 0:
            print_table(res)
    if args.out and rank == 0:
        with open(args.out, "w") as f:
            json.dump({**res, "model": args.model, "data": args.data}, f, indent=1)
    return res


if __name__ == "__main__":
    main()
