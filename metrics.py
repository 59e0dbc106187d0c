"""
metrics.py: a run's records: a step's numbers and its log line, the run folder's config.json and
metrics.jsonl, and what the run prints when it stops or ends.

    m = step_metrics(...)                 # a step's numbers, summed over ranks
    emit = open_metrics(args, rank, start); emit(m); print0(log_line(m, args.divergence))
    read_jsonl(path)                      # the one reader of a metrics file (eval.py, scripts/ too)
    out_dir_problem(out_dir)              # can the run folder be written, before anything changes
    write_config(out_dir, cfg), read_config(run_dir), config_changes(out_dir, cfg, keys)
    collapse_check(m, count)              # a collapsed policy, said loudly
    before_divergence(out_dir, records, ptd_coef)   # after a divergence stop: which checkpoint
    summary(args, first, last, ...)       # the before / after table and its eval.py commands

train.py calls them; eval.py reads runs back with them (--compare, a run directory's config.json).
The held-out numbers are measured in eval.py (eval.heldout); here they are only printed. The rule
for a step that left the run's usual range is checkpoint.py's, since its rotation keeps the newest
checkpoint the metrics vouch for. Left out on purpose: dashboards (wandb is optional), per-token
traces.
"""
import contextlib
import json
import os
import shlex
import sys

import torch

import checkpoint
import loss
from distributed import all_sum, print0

# -----------------------------------------------------------------------------
# a step's numbers and its log line


def step_metrics(step, G, rewards, well_formed, truncated, mask, entropy, ptd_group, distil, stats,
                 same, times, buckets=None):
    """The step's numbers, summed over ranks (`same`: values already equal on every rank). G: the
    group size. One key per quantity: "div" is the distillation divergence, whichever one the run's
    --divergence names (config.json says which). buckets: (names, each group's name) where the
    data has categories: then the step's group counts per category too ("groups/<c>",
    "mixed_groups/<c>", "all_fail_groups/<c>"; counts, so that a run's totals are their sums)."""
    m = mask.float()
    per_group = rewards.view(-1, G).sum(1)
    split = {}
    for c in (buckets[0] if buckets else ()):
        mine = torch.tensor([b == c for b in buckets[1]], dtype=torch.bool)
        split.update({f"groups/{c}": mine.float().sum(),
                      f"mixed_groups/{c}": (mine & (per_group > 0) & (per_group < G)).float().sum(),
                      f"all_fail_groups/{c}": (mine & (per_group == 0)).float().sum()})
    local = {"reward": rewards.sum(), "format": well_formed.sum(), "rows": float(len(rewards)),
             "len": m.sum(), "entropy": (entropy.cpu() * m).sum(),
             "distilled": distil.float().sum(),
             "ptd_groups": ptd_group.float().sum() / G, "groups": float(len(rewards) // G),
             "truncated": truncated.float().sum(),
             "mixed_groups": (rewards.view(-1, G).std(1) > 0).float().sum(),
             # all-fail groups: GRPO's advantage is zero, only the tutor has a signal there
             "all_fail_groups": (rewards.view(-1, G).sum(1) == 0).float().sum(),
             "all_pass_groups": (rewards.view(-1, G).sum(1) == G).float().sum(), **split, **stats}
    keys = sorted(local)
    tot = dict(zip(keys, all_sum(torch.tensor([float(local[k]) for k in keys],
                                              dtype=torch.float64)).tolist()))
    t0, t1, t2, t3, t4 = times
    return {"step": step + 1, "reward": tot["reward"] / tot["rows"],
            "format": tot["format"] / tot["rows"],
            "entropy": tot["entropy"] / max(tot["len"], 1),
            "kl": tot["kl"] / max(tot["kl_tokens"], 1),
            "div": tot["div"] / max(tot["div_tokens"], 1),
            "distilled_frac": tot["distilled"] / tot["rows"],
            "ptd_group_frac": tot["ptd_groups"] / tot["groups"],
            "mixed_group_frac": tot["mixed_groups"] / tot["groups"],
            "all_fail_frac": tot["all_fail_groups"] / tot["groups"],
            "all_pass_frac": tot["all_pass_groups"] / tot["groups"],
            **{k: tot[k] / max(tot["tokens"], 1)
               for k in ("clip_frac_low", "clip_frac_high", "clip_frac_dual")},
            **same, "resp_len": tot["len"] / tot["rows"],
            "truncated_frac": tot["truncated"] / tot["rows"],
            "t_rollout": t1 - t0, "t_old": t2 - t1, "t_ref_tutor": t3 - t2, "t_update": t4 - t3,
            "tok_per_s": tot["len"] / max(t4 - t0, 1e-9), **{k: tot[k] for k in split}}


# what the demo's held-out answers name (eval.answer_class), in the order they are logged
ANSWER_CLASSES = ("target", "marked", "other", "absent", "none")


def eval_text(m, n):
    """'held-out pass@1 0.412 (easy 0.700, hard 0.125) | pass@8 0.800 (...)' from a metrics
    record."""
    parts = []
    for k in ["1"] + ([str(n)] if n > 1 else []):
        cats = sorted(key.split("/", 1)[1] for key in m if key.startswith(f"eval_pass{k}/"))
        by = ", ".join(f"{c} {m[f'eval_pass{k}/{c}']:.3f}" for c in cats)
        parts.append(f"pass@{k} {m[f'eval_pass{k}']:.3f}" + (f" ({by})" if by else ""))
    if "eval_blank_pass1" in m:   # the chance line
        cats = sorted(key.split("/", 1)[1] for key in m if key.startswith("eval_blank_pass1/"))
        by = ", ".join(f"{c} {m[f'eval_blank_pass1/{c}']:.3f}" for c in cats)
        parts.append(f"blank image pass@1 {m['eval_blank_pass1']:.3f}" + (f" ({by})" if by else ""))
    cats = sorted({key.split("/")[1] for key in m if key.startswith("eval_answers/")})
    if cats:
        parts.append(f"answers {'/'.join(ANSWER_CLASSES)}: " + ", ".join(
            f"{c} " + "/".join(f"{m[f'eval_answers/{c}/{a}']:.2f}" for a in ANSWER_CLASSES)
            for c in cats))
    return "held-out " + " | ".join(parts)


def divergence_of(m):
    """The distillation divergence of a step's record: "div", or in a run logged before that key
    the one named by the divergence (loss.DIVERGENCES' names); 0 when there is none."""
    if "div" in m:
        return m["div"]
    return next((m[k] for k in loss.DIVERGENCES if k in m), 0.0)


def log_line(m, div):
    """One line per step; div: the divergence's name (--divergence), the label of m["div"]."""
    return (f"step {m['step']:4d} | reward {m['reward']:.3f} | "
            f"groups fail/pass {m['all_fail_frac']:.2f}/{m['all_pass_frac']:.2f} | "
            f"entropy {m['entropy']:.3f} | kl {m['kl']:.4f} | {div} {m['div']:.4f} | "
            f"distilled {m['distilled_frac']:.2f} | "
            f"clip {m['clip_frac_low']:.3f}/{m['clip_frac_high']:.3f} | len {m['resp_len']:.1f} | "
            f"time {m['t_rollout']:.1f}/{m['t_old'] + m['t_ref_tutor']:.1f}/{m['t_update']:.1f}s | "
            f"{m['tok_per_s']:.0f} tok/s")

# -----------------------------------------------------------------------------
# the run folder: a folder that cannot be written, config.json, metrics.jsonl


def out_dir_problem(out_dir):
    """None if out_dir is, or can be made, a folder this process can write in; else one line naming
    the path and what to do. It writes and removes a 64 kB probe file, so that a full or read-only
    disk is found before a run deletes, loads or rewrites anything."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        return (f"--out_dir {out_dir} is a file, not a folder: choose another --out_dir, or move "
                f"the file away")
    probe = os.path.join(out_dir, f".write_probe.{os.getpid()}")
    try:
        os.makedirs(out_dir, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(bytes(1 << 16))
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        return (f"cannot write in --out_dir {out_dir}: {checkpoint.os_error(e)}: "
                f"{checkpoint.fix_for(e)} (nothing in it was changed)")
    finally:
        with contextlib.suppress(OSError):
            os.remove(probe)
    return None


def read_config(run_dir):
    """The run's config.json as a dict ({} when there is none), or ValueError in one line naming
    the file: unreadable, not JSON, or JSON but not an object."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        return {}
    try:
        with open(path, "rb") as f:
            saved = json.loads(f.read().decode("utf-8"))
    except OSError as e:
        raise ValueError(f"{path}: cannot be read: {checkpoint.os_error(e)}") from None
    except ValueError as e:            # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{path}: not valid JSON ({' '.join(str(e).split())[:120]})") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{path}: not a JSON object (a {type(saved).__name__}), so the run's "
                         f"settings are unknown")
    return saved


def write_config(out_dir, config):
    """config.json, atomically: a reader never sees half a file, and a failed write (a full disk)
    leaves the old file as it was and no config.json.tmp. OSError for the caller to report."""
    path = os.path.join(out_dir, "config.json")
    try:
        with open(path + ".tmp", "w") as f:
            json.dump(config, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + ".tmp", path)
    except OSError:
        with contextlib.suppress(OSError):
            os.remove(path + ".tmp")
        raise


def config_changes(out_dir, config, keys):
    """The keys whose value in config differs from the run's saved config.json, as one string
    ("group_size 8 -> 4, seed 0 -> 1"); "" when none differ or nothing was saved. ValueError (one
    line) when the file cannot be read as a JSON object: a resume must not pass unchecked."""
    saved = read_config(out_dir)
    changed = [k for k in keys if k in saved and saved[k] != config.get(k)]
    return ", ".join(f"{k} {saved[k]!r} -> {config.get(k)!r}" for k in changed)


def read_jsonl(path):
    """The records of a metrics file; a line a crash cut short is skipped, not fatal."""
    recs = []
    with open(path) as f:
        for line in f:
            try:
                recs.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return recs


def open_metrics(args, rank, start):
    """An `emit(record)` that appends to metrics.jsonl (and wandb). On resume, records after the
    checkpoint's step are dropped first, so a crash never leaves a step twice in the file."""
    path = os.path.join(args.out_dir, "metrics.jsonl")

    # a full disk: one line, and the file as it was (a cut last line is skipped on reading)
    def stop(e, what):
        sys.exit(f"train.py: cannot {what} {path}: {e.strerror or e} (errno {e.errno}); the run's "
                 f"checkpoints are as they were: free space there (or fix the folder), then rerun "
                 f"with --resume")
    if rank == 0 and os.path.exists(path):
        keep = [json.dumps(r) + "\n" for r in read_jsonl(path)
                if start and r.get("step", 0) <= start and not r.get("final")]
        try:
            with open(path + ".tmp", "w") as f:
                f.writelines(keep)
            os.replace(path + ".tmp", path)
        except OSError as e:
            if os.path.exists(path + ".tmp"):
                os.remove(path + ".tmp")
            stop(e, "rewrite")
    wb = None
    if args.wandb and rank == 0:
        try:
            import wandb
        except ImportError:
            sys.exit("train.py: --wandb needs the wandb package: pip install wandb")
        wb = wandb.init(project=args.wandb, config=vars(args), resume="allow")

    def emit(rec):
        if rank == 0:
            try:
                with open(path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
            except OSError as e:
                stop(e, "append to")
            if wb:
                wb.log(rec, step=rec["step"])
    return emit

# -----------------------------------------------------------------------------
# when the run stops or ends


COLLAPSE_STEPS = 3   # steps in a row with reward 0 and entropy ~0 before the loud warning


def collapse_check(m, count):
    """Count steps in a row where the policy has collapsed without a non-finite number (reward 0,
    entropy ~0: it emits one fixed wrong response). We warn and keep going rather than stop: the
    divergence stop is for numbers that broke, and the summary says what the export holds."""
    count = count + 1 if m["reward"] == 0 and m["entropy"] < 1e-3 else 0
    if count == COLLAPSE_STEPS:
        print0(f"WARNING: the policy has collapsed: reward 0 and entropy {m['entropy']:.1e} for "
               f"{count} steps in a row (every rollout is the same wrong response). It will not "
               f"recover; lower --lr and rerun.")
    return count


def before_divergence(out_dir, records, ptd_coef):
    """One line for the divergence stop: the newest kept checkpoint from before the run's numbers
    left their usual range (step_N holds the weights step N+1 starts from, so it is vouched for
    only when step N+1 was still in range), or why there is none."""
    k, why = checkpoint.left_usual_range(records, ptd_coef)
    kept = [(checkpoint.step_of(p), p) for p in checkpoint.checkpoints(out_dir)]
    rule = f"the usual range, from this run's own metrics: {checkpoint.RANGE_RULE}"
    if k is None:
        return (f"No step left the usual range ({rule}), so the checkpoints were checked for "
                f"finite numbers only: treat them as suspect and start over with a lower --lr.")
    good = [(n, p) for n, p in kept if n + 1 < k]
    # oldest first
    suspect = ", ".join(os.path.basename(p) for n, p in reversed(kept) if n + 1 >= k)
    if not good:
        held = (f" ({suspect} holds weights that step or a later one trained on)" if suspect
                else "")
        return (f"The run left its usual range first at step {k} ({why}; {rule}), and no kept "
                f"checkpoint is from before it{held}: start over with a lower --lr.")
    n, p = good[0]
    later = (f" ({suspect}, trained on after that, will be set aside, not deleted)" if suspect
             else "")
    return (f"The run left its usual range first at step {k} ({why}; {rule}). The newest "
            f"checkpoint from before that is {p} (step {n + 1} trained on its weights within "
            f"range); to continue from it, rerun with --resume {p} and a lower --lr{later}.")


# the held-out sampling seed (the summary's eval.py command passes it as --seed)
EVAL_SEED = 2 ** 61 + 1234


def summary(args, first, last, n_eval, seconds, world, device, collapsed):
    """The run's before / after table, with the blank-image score beside each pass@1 (the chance
    line: the same model shown a white picture) and the share of problems all of whose samples
    failed at step 0 (1 - pass@n before training: the groups where GRPO has no signal); for the
    demo, what the answers name."""
    n = args.eval_samples
    print0(f"\nheld-out, no hints: {n_eval} problems x {n} samples, T={args.temperature}, "
           f"top_p={args.top_p}")
    blank = any(k.startswith("eval_blank_pass1") for k in last)
    fails = n > 1 and first is not None
    print0(f"  {'':16s} {'before':>8s} {'after ' + str(args.steps) + ' steps':>16s}"
           + (f" {'blank image (before / after)':>30s}" if blank else "")
           + (f" {'all-fail at step 0':>19s}" if fails else ""))
    for key in sorted(last, key=lambda k: (k.split('/')[0] != 'eval_pass1', k)):
        if key.startswith("eval_pass"):
            name = key.replace("eval_pass", "pass@").replace("/", " ")
            before = f"{first[key]:.3f}" if first and key in first else "-"
            chance = key.replace("eval_pass", "eval_blank_pass")
            row = f"  {name:16s} {before:>8s} {last[key]:>16.3f}"
            if chance in last:
                row += f" {(first or {}).get(chance, float('nan')):>22.3f} / {last[chance]:.3f}"
            at_n = key.replace("eval_pass1", f"eval_pass{n}")
            if fails and key.startswith("eval_pass1") and at_n in first:
                row += f" {1 - first[at_n]:>19.3f}"
            print0(row)
    cats = sorted({k.split("/")[1] for k in last if k.startswith("eval_answers/")})
    for c in cats:
        shares = " / ".join(
            f"{name} {(first or {}).get(f'eval_answers/{c}/{name}', float('nan')):.2f} -> "
            f"{last[f'eval_answers/{c}/{name}']:.2f}" for name in ANSWER_CLASSES)
        print0(f"  {c} answers name: {shares}")
    print0(f"  training time: {seconds:.0f}s on {world} process(es), {device.type}")
    if not args.no_export:
        final = os.path.join(args.out_dir, "final")
        print0(f"  final model: {final}  (python {eval_command(args, final, blank)})")
        if collapsed >= COLLAPSE_STEPS:
            print0("  WARNING: that export is of a collapsed policy (reward 0, entropy ~0 at the "
                   "end)")
    if first:
        print0(f"  start model: {args.model}  (python {eval_command(args, args.model, blank)})")


def eval_command(args, model, blank):
    """The eval.py command that reproduces the summary's column of `model`: the same problems
    (--limit, --max_prompt_tokens), seed, samples and k, cap and sampler, and the blank-image line.
    tests/test_eval.py runs it on a tiny run and compares every number."""
    n = args.eval_samples
    q = shlex.quote
    cmd = (f"eval.py --model {q(model)} --data {q(args.eval_data)}"
           f"{f' --limit {args.eval_n}' if args.eval_n else ''} "
           f"--max_prompt_tokens {args.max_prompt_tokens} --n_samples {n} "
           f"--k 1{f' {n}' if n > 1 else ''} "
           f"--seed {EVAL_SEED} --temperature {args.temperature} --top_p {args.top_p} "
           f"--max_new_tokens {args.max_new_tokens}{' --blank' if blank else ''}")
    if args.kv_cache_gb != 32.0:  # the rows per generate() call: the same batches, the same numbers
        cmd += f" --kv_cache_gb {args.kv_cache_gb}"
    if args.dtype != "auto":
        cmd += f" --dtype {args.dtype}"
    for flag in ("allow_outside_images", "trust_remote_code", "plain_generate", "no_compile",
                 "no_cuda_graphs"):
        cmd += f" --{flag}" if getattr(args, flag, False) else ""
    return cmd

