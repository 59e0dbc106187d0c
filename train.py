"""
train.py: PTD-PO (and plain GRPO) on FSDP2, one flat loop.

    python train.py                                   # the embedded demo on CPU (a few minutes)
    torchrun --nproc_per_node=2 train.py              # the same on 2 CPU processes (gloo)
    torchrun --nproc_per_node=8 train.py --model Qwen/Qwen3-VL-2B-Thinking \\
        --train_data virl39k_hints.jsonl --eval_data mmk12_test.jsonl --grad_ckpt
                                                      # a real model gets the paper's settings

The method's flags: --algo ptdpo|grpo, --group_size G, --tau, --topk K, --ptd_coef (lambda),
--kl_coef, --divergence jsd|fkl|rkl, --tutor_context hint|answer|none|unanswer, --distill_all;
the rest, and the paper's and the demo's presets, are in config.py (`python train.py --help`).
train_step is the method, read top to bottom, and loss.ptdpo_loss its objective; main() at the
end is the loop; eval.py measures and metrics.py writes.
Left out on purpose: vLLM rollouts, sequence packing, tensor/context parallelism, LoRA.
"""
import argparse
import json
import os
import sys
import time
from dataclasses import dataclass

import torch

import checkpoint
import config
import data
import decode
import eval
import loss
import metrics
import reward
import rollout
import tutor
from distributed import all_max, all_sum, print0, setup

# -----------------------------------------------------------------------------
# one training step


def train_step(step, policy, ref, processor, opt, examples, args, rank, world, fast=None):
    """One PTD-PO step on this rank's share of the prompts. Returns the step's metrics."""
    G = args.group_size
    exs, prompt_ids = my_prompts(examples, step, args.prompts_per_step, args.minibatch_prompts,
                                 args.seed, rank, world)
    images = [rollout.open_images(ex) for ex in exs]
    prompts = [rollout.encode(processor, ex["question"], im) for ex, im in zip(exs, images)]
    row_example = torch.arange(len(exs)).repeat_interleave(G)                  # (N,) row -> example
    row_prompts = [prompts[i] for i in row_example.tolist()]
    t0 = time.time()
    # 1. rollouts: G per prompt, from the policy itself (no grad)
    with eval.waiting(len(prompts) * G, f"step {step + 1} rollouts", rank) as bar:
        ids, mask = rollout.sample(policy, processor, prompts, G, args.max_new_tokens,
                                   args.temperature, args.top_p, args.kv_cache_gb,
                                   seed=args.seed * 100_003 + step, prompt_ids=prompt_ids,
                                   progress=bar, fast=fast)
    # 2. rewards: correctness only
    rewards, well_formed, truncated = rewards_of(processor, ids, mask, exs, row_example)
    # 3. advantages (no value network: the group mean is the baseline)
    adv = loss.group_advantages(rewards, G, scale_by_std=not args.no_std_norm)
    # 4. gate: a PTD group has accuracy < tau and a hint (a tutor with nothing to say cannot
    #    replace the KL anchor); its failed rows (or all, --distill_all) are distilled
    hinted = torch.tensor([tutor.can_teach(ex, args.tutor_context) for ex in exs])
    ptd_group = ((rewards.view(-1, G).mean(1) < args.tau) & hinted).repeat_interleave(G) \
        & (args.algo == "ptdpo")
    distil = ptd_group & ((rewards == 0) | args.distill_all)
    t1 = time.time()
    # 5. old-policy log-probs, entropy and the student's top-K ids (no grad)
    topk = args.topk if args.topk > 0 else policy.get_output_embeddings().weight.shape[0]
    score_kw = dict(temperature=args.temperature, token_budget=args.token_budget,
                    chunk_size=args.chunk_size)
    old = rollout.score(policy, row_prompts, ids, mask, topk=topk if distil.any() else 0,
                        entropy=True, **score_kw)
    batch = Batch(row_prompts, ids, mask, old["logp"].float().cpu(), adv, ptd_group, distil)
    t2 = time.time()
    # 6. reference log-probs for the k3 KL, rows outside PTD groups (no grad)
    if args.kl_coef > 0:
        batch.ref_logp = rollout.score_rows(ref, row_prompts, ids, mask, ~ptd_group,
                                            **score_kw)["logp"].float()
    # 7. the tutor: the same scoring call by the same frozen model, on the tutor's prompts of the
    #    distilled rows; its support is the student's top-K ids united with its own (no grad)
    if args.algo == "ptdpo":
        tutor_prompts = tutor_rows(processor, rollout.box_format(ref), exs, images, row_example,
                                   distil, args.tutor_context, args.hint_style)
        student_topk = old["topk_ids"] if old["topk_ids"] is not None \
            else torch.zeros((*ids.shape, topk), dtype=torch.long)   # none distilled on this rank
        scored = rollout.score_rows(ref, tutor_prompts, ids, mask, distil,
                                    union_with=student_topk.cpu(), topk=topk, **score_kw)
        tutor_targets(batch, scored, student_topk.shape[-1] + topk, args.tutor_context)
    t3 = time.time()
    # 8. the update: loss.ptdpo_loss per micro-batch, one optimiser step per mini-batch
    policy.train()
    stats, same = update(policy, opt, batch, max(G, args.minibatch_prompts * G // world),
                         args.grad_clip, world, score_kw, objective(args))
    policy.eval()
    if fast is not None:   # the generation copy takes the new weights, in place (a collective)
        fast.refresh(policy)
    same.update(peak_memory())
    # the same on every rank
    names = sorted({ex["category"] for ex in examples if ex.get("category")})
    buckets = (names, [ex.get("category") for ex in exs]) if 0 < len(names) <= 8 else None
    return metrics.step_metrics(step, G, rewards, well_formed, truncated, mask, old["entropy"],
                             ptd_group, distil, stats, same, (t0, t1, t2, t3, time.time()),
                             buckets)


def peak_memory():
    """{"peak_mem_gb": the step's peak CUDA memory, the busiest rank's}; {} on a CPU."""
    if not torch.cuda.is_available():
        return {}
    peak = all_max(torch.tensor(torch.cuda.max_memory_allocated() / 2 ** 30)).item()
    torch.cuda.reset_peak_memory_stats()
    return {"peak_mem_gb": peak}


@dataclass
class Batch:
    """The step's rows on this rank (N = prompts x G, prompt-major), as the update reads them.
    ref_logp is None without a KL term; the tutor's fields are None without a tutor (GRPO)."""
    prompts: list                  # (N) encoded student prompt of each row
    ids: torch.Tensor              # (N, R) sampled responses, right-padded
    mask: torch.Tensor             # (N, R) bool, response tokens
    old_logp: torch.Tensor         # (N, R) the rollout policy's log-probs
    adv: torch.Tensor              # (N,) group advantages
    ptd_group: torch.Tensor        # (N,) bool, the row's group is a PTD group
    distil: torch.Tensor           # (N,) bool, the tutor teaches this row
    ref_logp: torch.Tensor = None      # (N, R) the frozen reference's log-probs
    support_ids: torch.Tensor = None   # (N, R, M) union support
    support_mask: torch.Tensor = None  # (N, R, M) bool
    tutor_logp: torch.Tensor = None    # (N, R, M) the tutor's log-probs on the support


def tutor_rows(processor, box_format, exs, images, row_example, distil, context, hint_style):
    """The tutor's encoded prompt of each distilled row (None elsewhere), one per example, on the
    student's own images."""
    prompts, cache = [None] * len(distil), {}
    for r in distil.nonzero().squeeze(-1).tolist():
        i = row_example[r].item()
        if i not in cache:
            cache[i] = tutor.tutor_prompt(processor, exs[i], box_format, context, hint_style,
                                          images[i])
            if cache[i] is None:
                raise ValueError(f"example {exs[i].get('id')} has no hint; gate on tutor.can_teach")
        prompts[r] = cache[i]
    return prompts


def tutor_targets(batch, scored, width, context):
    """The tutor's scores (rollout.score_rows on the distilled rows) into the batch: zeros / False
    on rows not distilled and on padding; the break-the-answer control's target where asked."""
    N, R = batch.ids.shape
    if scored["support_ids"] is None:   # nothing distilled on this rank
        batch.support_ids = torch.zeros((N, R, width), dtype=torch.long)
        batch.support_mask = torch.zeros((N, R, width), dtype=torch.bool)
        batch.tutor_logp = torch.zeros((N, R, width), dtype=torch.float32)
        return
    batch.support_ids = scored["support_ids"]
    batch.support_mask = scored["support_mask"] & batch.mask.unsqueeze(-1)
    batch.tutor_logp = scored["support_logp"].float()
    if context == "unanswer":
        i = batch.distil.nonzero().squeeze(-1)
        batch.tutor_logp[i] = loss.unanswer(batch.tutor_logp[i], batch.support_ids[i],
                                            batch.ids[i], scored["logp"][i].float())


def rewards_of(processor, ids, mask, exs, row_example):
    """Correctness (the reward), format (logged, never gated on) and truncation, per row."""
    texts = rollout.decode(processor, ids, mask)
    correct = torch.tensor([reward.reward(t, exs[i]) for t, i in zip(texts, row_example.tolist())])
    # a response cut at max_new_tokens is not a finished answer: reward 0 (else the policy learns
    # to ramble on after </answer>, which costs nothing under a correctness-only reward). Not in
    # the paper, a choice: such a row then counts as failed, so the tutor distils it too.
    truncated = ~(ids == rollout.eos_id(processor)).any(1)
    correct = torch.where(truncated, torch.zeros_like(correct), correct)
    opened = "<think>\n" if rollout.opens_think(processor) else ""   # Thinking templates open it
    well_formed = torch.tensor([reward.format_reward(opened + t) for t in texts])
    return correct, well_formed, truncated


STATS = ("pg_loss", "kl", "kl_tokens", "div", "div_tokens", "clip_frac_low", "clip_frac_high",
         "clip_frac_dual", "tokens")


def objective(args):
    """loss.ptdpo_loss's settings, from the flags."""
    return dict(kl_coef=args.kl_coef, ptd_coef=args.ptd_coef, divergence=args.divergence,
                clip_low=args.clip_low, clip_high=args.clip_high, dual_clip=args.dual_clip)


def update(policy, opt, batch, rows_per_mb, grad_clip, world, score_kw, objective):
    """Clipped-surrogate updates over the step's mini-batches of rows_per_mb rows (this rank's);
    returns summed metrics. score_kw: temperature, token_budget (it cuts the micro-batches),
    chunk_size, as for rollout.score; objective: loss.ptdpo_loss's settings (objective()).

    Normalisers are global counts (all ranks): n_tok response tokens of the mini-batch (GRPO and
    KL), n_div response tokens of its distilled rows (divergence). So gradients must be summed
    across ranks, not averaged: each rank's loss is multiplied by the world size (gloo lacks the
    reduce op FSDP2's set_gradient_divide_factor needs). A mini-batch whose loss or gradient norm
    is not finite is skipped on every rank, never applied."""
    mask, distil = batch.mask, batch.distil
    stats = dict.fromkeys(STATS, 0.0)
    grad_norm, skipped, n_mb = 0.0, 0, 0
    for start in range(0, len(batch.prompts), rows_per_mb):
        mb_rows = list(range(start, min(len(batch.prompts), start + rows_per_mb)))
        n_tok = max(1.0, all_sum(mask[mb_rows].sum().double()).item())
        n_div = all_sum((mask[mb_rows] & distil[mb_rows].unsqueeze(1)).sum().double()).item()
        lens = [len(batch.prompts[i]["input_ids"]) + batch.ids.shape[1] for i in mb_rows]
        plan = [([mb_rows[j] for j in cut], 1.0)
                for cut in rollout.micro_batches(lens, score_kw["token_budget"])]
        # every rank must run as many backward passes as the busiest one (FSDP collectives):
        # the others add weight-0 passes over one row
        plan += [([mb_rows[0]], 0.0)] * (int(all_max(torch.tensor(len(plan)))) - len(plan))
        opt.zero_grad(set_to_none=True)
        finite = True
        for micro, weight in plan:
            total, parts = microbatch_loss(policy, batch, micro, n_tok, n_div, score_kw, objective)
            finite &= bool(torch.isfinite(total))
            (total * (weight * world)).backward()     # FSDP averages over ranks: undo it
            for k, v in parts.items():
                stats[k] += v * weight
        gn = torch.nn.utils.clip_grad_norm_(policy.parameters(), grad_clip)
        gn = gn.full_tensor() if hasattr(gn, "full_tensor") else gn      # the same on every rank
        n_mb += 1
        if all_sum(torch.tensor(0.0 if finite else 1.0)).item() > 0 or not torch.isfinite(gn):
            opt.zero_grad(set_to_none=True)
            skipped += 1
            print0(f"  non-finite loss or gradient norm ({gn.item()}): optimiser step skipped")
            continue
        opt.step()
        grad_norm += gn.item()
    mean_norm = grad_norm / max(n_mb - skipped, 1)
    return stats, {"grad_norm": mean_norm, "skipped": skipped, "minibatches": n_mb}


def microbatch_loss(policy, batch, micro, n_tok, n_div, score_kw, objective):
    """loss.ptdpo_loss of one micro-batch (`micro`: its rows) under the policy, with grad, divided
    by the global normalisers; and its parts as numbers for the log."""
    dev = next(policy.parameters()).device
    on = lambda t: None if t is None else t[micro].to(dev)            # noqa: E731
    has_tutor = batch.tutor_logp is not None
    out = rollout.score(policy, [batch.prompts[i] for i in micro], batch.ids[micro],
                        batch.mask[micro], support=batch.support_ids[micro] if has_tutor else None,
                        grad=True, **dict(score_kw, token_budget=10 ** 12))   # already cut
    m = on(batch.mask)
    total, parts = loss.ptdpo_loss(
        out["logp"], on(batch.old_logp), on(batch.adv), m, n_tok, on(batch.ptd_group),
        on(batch.distil), ref_logp=on(batch.ref_logp), support_logp=out["support_logp"],
        tutor_logp=on(batch.tutor_logp), support_mask=on(batch.support_mask), n_div=n_div,
        **objective)
    tokens = parts["tokens"].item()
    numbers = {k: parts[k].item() for k in STATS if k in parts}
    for k in ("clip_frac_low", "clip_frac_high", "clip_frac_dual"):
        numbers[k] = parts[k].item() * tokens
    return total, numbers


def my_prompts(examples, step, prompts_per_step, mb, seed, rank, world):
    """This rank's examples and their global prompt ids. Global mini-batch j = prompts
    [j*mb, (j+1)*mb), split evenly across ranks, so every optimiser step sees the same prompts
    whatever the number of ranks."""
    per = mb // world
    ids = [j * mb + rank * per + i for j in range(prompts_per_step // mb) for i in range(per)]
    step_all = data.step_examples(examples, step, prompts_per_step, seed)
    return [step_all[i] for i in ids], ids

# -----------------------------------------------------------------------------
# models


def shard(model, param_dtype):
    """FSDP2 as torchtitan applies it: the vision tower as one unit, each decoder layer, then the
    root. Parameters stay in their loaded dtype (fp32 master for the policy: an AdamW step of lr
    1e-6 is far below half a bf16 ulp of a typical weight); FSDP2 casts them to param_dtype (bf16 on
    CUDA) for compute and reduces gradients in fp32. The lm_head matmul runs in param_dtype too and
    only the softmax in fp32, so log-probs and the JSD carry bf16 rounding noise (--dtype float32
    removes it). One process is a world of one: the same code path, the same precision. FSDP
    averages gradients over ranks; our losses are divided by global token counts, so update()
    multiplies them by the world size to turn that average into the sum the normalisation needs."""
    from torch.distributed.fsdp import (MixedPrecisionPolicy, fully_shard,
                                        register_fsdp_forward_method)
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    inner = model.model
    fully_shard(inner.visual, mp_policy=mp)
    for layer in inner.language_model.layers:
        fully_shard(layer, mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    register_fsdp_forward_method(model, rollout.SCORER)
    return model


def load_models(path, dtype, device, trust_remote_code=False, grad_ckpt=False):
    """The policy (fp32 master) and the frozen reference / tutor (compute dtype), both sharded."""
    from PIL import Image
    policy, processor = rollout.load_model(path, "float32", str(device), trust_remote_code)
    ref, _ = rollout.load_model(path, dtype, str(device), trust_remote_code)
    ref.requires_grad_(False)
    if grad_ckpt:
        # transformers >= 5.24's name, then the older one
        enable = getattr(policy, "activation_checkpointing_enable", None)
        if enable:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            policy.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
    compute = rollout.resolve_dtype(dtype, device)
    policy, ref = shard(policy, compute), shard(ref, compute)
    # FSDP2 initialises lazily in the root's first forward; generate() must not come first
    p0 = rollout.encode(processor, "Hello.", [Image.new("RGB", (64, 64))])
    one = torch.ones(1, 1, dtype=torch.long)
    with torch.no_grad():
        for m in (policy, ref):
            getattr(m, rollout.SCORER)(rollout.collate([p0], 0, one, one.bool(), device),
                                       one.to(device), one.bool().to(device))
            m.reshard()   # the root keeps its parameters unsharded after a forward; the optimiser
            #               must be built on the sharded ones
    return policy, ref, processor

# -----------------------------------------------------------------------------
# run set-up: torchrun, the demo's files, the resume check, config.json, data


def resolve_paths(args):
    """--model toy becomes the demo's model directory and, unless given, its data splits (the
    demo builds them on first use: the one call into it)."""
    if args.model == "toy":
        from demo import toy
        args.model, demo_train, demo_eval = toy.ensure()
        args.train_data = args.train_data or demo_train
        args.eval_data = args.eval_data or demo_eval
    if not args.train_data:
        sys.exit("train.py: --train_data is required with a model other than 'toy'")


def start_run(argv):
    """Arguments, torchrun, the demo's paths (built on rank 0), the resume check, config.json."""
    args = config.get_args(argv)
    rank, world, device = setup(single_process_group=True)
    if args.minibatch_prompts % world:
        sys.exit(f"train.py: --minibatch_prompts {args.minibatch_prompts} is not a multiple of "
                 f"the {world} ranks")
    if args.threads:
        torch.set_num_threads(args.threads)
    problem = None
    if rank == 0:   # the run folder first: a bad one stops the run before anything is built
        problem = run_folder_problem(args)
        if not problem:
            resolve_paths(args)
    box = [vars(args), problem]   # rank 0 may have built the demo; everyone uses its paths
    torch.distributed.broadcast_object_list(box, src=0)
    args, problem = argparse.Namespace(**box[0]), box[1]
    if problem:
        sys.exit(f"train.py: {problem}")
    run_config = {**vars(args), "world_size": world}
    check_resume(args, run_config)
    if not args.resume and checkpoint.clear(args.out_dir):
        print0(f"train.py: a new run in {args.out_dir}: the earlier run's checkpoints and metrics "
               f"are replaced (--resume continues a run instead)")
    torch.manual_seed(args.seed)
    print0("config:\n" + json.dumps(vars(args), indent=1))
    torch.distributed.barrier()   # every rank has read the old config.json before it is replaced
    if rank == 0:
        try:
            metrics.write_config(args.out_dir, run_config)
        except OSError as e:
            sys.exit(f"train.py: cannot write {os.path.join(args.out_dir, 'config.json')}: "
                     f"{checkpoint.os_error(e)}: {checkpoint.fix_for(e)}")
    return args, rank, world, device


def check_resume(args, run_config):
    """--resume: stop when the settings that fix the data order or the algorithm (RESUME_KEYS)
    differ from the run's config.json, unless --allow_config_change."""
    try:
        diff = metrics.config_changes(args.out_dir, run_config, config.RESUME_KEYS) \
            if args.resume else ""
    except ValueError as e:          # a file that is not a JSON object: nothing to check against
        if not args.allow_config_change:
            sys.exit(f"train.py: --resume cannot check the run's settings: {e}; restore the file, "
                     f"or rerun with --allow_config_change")
        print0(f"train.py: --resume cannot check the run's settings: {e}; resuming anyway "
               f"(--allow_config_change)")
        diff = ""
    if diff and not args.allow_config_change:
        sys.exit(f"train.py: --resume with settings that differ from the run's config.json: "
                 f"{diff} (--allow_config_change to resume anyway)")


def run_folder_problem(args):
    """--resume PATH resolved (args.out_dir becomes PATH's run, args.resume its checkpoint folder
    or True) and the run folder checked for writing: None, or one line saying what is wrong."""
    if isinstance(args.resume, str):
        try:
            run, ckpt = checkpoint.resume_target(args.resume)
        except ValueError as e:
            return str(e)
        if args.out_dir and os.path.abspath(args.out_dir) != run:
            return (f"--resume {args.resume} belongs to the run in {run}, not to --out_dir "
                    f"{args.out_dir}: leave --out_dir out (or give --out_dir {run})")
        args.out_dir, args.resume = run, ckpt or True
    return metrics.out_dir_problem(args.out_dir)


def check_full_vocabulary_fits(topk, n_rows, max_new_tokens, policy):
    """--topk -1 keeps (rows x response tokens x 2V) support buffers: refuse what cannot fit."""
    if topk != -1:
        return
    V = policy.get_output_embeddings().weight.shape[0]
    need = n_rows * max_new_tokens * 2 * V * 13         # int64 ids + bool mask + fp32 log-probs
    have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    if need > 0.5 * have:
        sys.exit(f"train.py: --topk -1 (full vocabulary, V = {V}) needs ~{need / 2 ** 30:.1f} GB "
                 f"of host memory per rank for {n_rows} rows x {max_new_tokens} tokens; "
                 f"{have / 2 ** 30:.1f} GB free. Use --topk 100.")


def load_data(args, processor, rank):
    """Training and held-out examples, validated (file:line:field) and length-checked."""
    log = print0 if rank == 0 else (lambda *a: None)

    def load(path, n=0, spoiler_filter=True):
        ex = data.load_jsonl(path, args.strict, report=log, spoiler_filter=spoiler_filter,
                             allow_outside_images=args.allow_outside_images)
        return data.check_lengths(ex[:n] if n else ex, processor, args.max_prompt_tokens,
                                  args.strict, report=log)
    try:   # held-out data never needs hints
        return (load(args.train_data, spoiler_filter=not args.no_spoiler_filter),
                load(args.eval_data, args.eval_n) if args.eval_data else [])
    except data.DataError as e:
        sys.exit(f"train.py: {e}")

# -----------------------------------------------------------------------------
# the loop


def every(interval, step, steps):
    """Whether step (0-based) ends an interval of `interval` steps before the run's last."""
    return bool(interval) and (step + 1) % interval == 0 and step + 1 < steps


def save_checkpoint(out_dir, step, policy, opt, keep, ptd_coef, rank):
    """checkpoint.save; its rotation reads the run's metrics: it keeps the newest checkpoint they
    vouch for."""
    path = os.path.join(out_dir, "metrics.jsonl")
    records = metrics.read_jsonl(path) if rank == 0 and os.path.exists(path) else []
    checkpoint.save(out_dir, step, policy, opt, keep, records, ptd_coef)


def stop_diverged(out_dir, ptd_coef, step, bad, rank):
    """Exit 1 after max_bad_steps non-finite steps in a row, naming the checkpoint to trust."""
    records = metrics.read_jsonl(os.path.join(out_dir, "metrics.jsonl")) if rank == 0 else []
    where = metrics.before_divergence(out_dir, records, ptd_coef) if rank == 0 else ""
    print0(f"train.py: stopped at step {step + 1}: {bad} steps in a row with a non-finite loss or "
           f"gradient (diverged; try a lower --lr). Nothing exported. {where}")
    sys.exit(1)


def main(argv=None):
    args, rank, world, device = start_run(argv)
    policy, ref, processor = load_models(args.model, args.dtype, device, args.trust_remote_code,
                                         args.grad_ckpt)
    check_full_vocabulary_fits(args.topk, args.prompts_per_step // world * args.group_size,
                               args.max_new_tokens, policy)
    opt = torch.optim.AdamW(policy.parameters(), lr=args.lr, weight_decay=args.weight_decay,
                            betas=(0.9, 0.999))
    train_ex, eval_ex = load_data(args, processor, rank)
    chosen = args.resume if isinstance(args.resume, str) else None   # --resume PATH: that one
    start = checkpoint.load(args.out_dir, policy, opt, chosen) if args.resume else 0
    if args.resume and start == 0:
        where = os.path.join(args.out_dir, "checkpoints")
        print0(f"--resume: no valid checkpoint in {where}; starting at step 0")
    # rollouts on CUDA: decode.py's fast loop over a bf16 copy of the (resumed) policy
    fast = decode.for_run(policy, args, device)
    emit = metrics.open_metrics(args, rank, start)
    def held_out(chance=False):   # chance: the blank-image score too (the run's start and end)
        out = eval.heldout(policy, processor, eval_ex, args, rank, world, fast=fast)
        if chance and args.eval_blank:
            out.update(eval.heldout(policy, processor, eval_ex, args, rank, world, fast=fast,
                                    blank=True))
        return out
    def save(step):
        save_checkpoint(args.out_dir, step, policy, opt, args.keep, args.ptd_coef, rank)
    policy.eval()
    first = held_out(chance=True) if eval_ex and start == 0 and args.eval_start else None
    if first:
        emit({"step": 0, **first})
        print0(f"step    0 | {metrics.eval_text(first, args.eval_samples)} "
               f"(no hints, {len(eval_ex)} problems)")
    t_start, bad, collapsed = time.time(), 0, 0
    for step in range(start, args.steps):
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, (step + 1) / max(1, args.warmup_steps))
        m = train_step(step, policy, ref, processor, opt, train_ex, args, rank, world, fast)
        m["lr"] = opt.param_groups[0]["lr"]
        bad = bad + 1 if m["skipped"] else 0
        if eval_ex and every(args.eval_every, step, args.steps):
            m.update(held_out())
        emit(m)
        print0(metrics.log_line(m, args.divergence) +
               (f" | {metrics.eval_text(m, args.eval_samples)}" if "eval_pass1" in m else ""))
        collapsed = metrics.collapse_check(m, collapsed)
        if bad >= args.max_bad_steps:
            stop_diverged(args.out_dir, args.ptd_coef, step, bad, rank)
        if bad == 0 and every(args.save_every, step, args.steps) and not args.no_checkpoints:
            save(step + 1)   # never after a bad step
    last = held_out(chance=True) if eval_ex else {}
    if last:
        emit({"step": args.steps, **last, "final": True, "wall_s": time.time() - t_start})
    if args.steps > start and bad == 0 and not args.no_checkpoints:
        save(args.steps)
    if not args.no_export:
        checkpoint.export_hf(policy, processor, os.path.join(args.out_dir, "final"))
    if last:
        metrics.summary(args, first, last, len(eval_ex), time.time() - t_start, world, device,
                     collapsed)
    torch.distributed.destroy_process_group()
    return last


if __name__ == "__main__":
    main()
