"""
train.py: PTD-PO (and plain GRPO) on FSDP2, one flat loop.

    python train.py                                   # the embedded demo on CPU (a few minutes)
    torchrun --nproc_per_node=2 train.py              # the same on 2 CPU processes (gloo)
    torchrun --nproc_per_node=8 train.py --model Qwen/Qwen3-VL-2B-Thinking \\
        --train_data virl39k_hints.jsonl --eval_data mmk12_test.jsonl --grad_ckpt
                                                      # a real model gets the paper's settings

The method's flags: --algo ptdpo|grpo, --group_size G, --tau, --topk K, --ptd_coef (lambda),
--kl_coef, --divergence jsd|fkl|rkl, --tutor_context hint|answer|none|unanswer, --distill_all; the rest, and
the paper's and the demo's presets, are in config.py (`python train.py --help`). train_step is the
method, read top to bottom; main() at the end is the loop; report.py measures and writes.
Left out on purpose: vLLM rollouts, sequence packing, tensor/context parallelism, LoRA.
"""
import os
import sys
import time

import torch

import checkpoint
import config
import data
import decode
import loss
import report
import reward
import rollout
import tutor
from distributed import all_max, all_sum, print0

# -----------------------------------------------------------------------------
# one training step


def train_step(step, policy, ref, processor, opt, examples, args, rank, world, fast=None):
    """One PTD-PO step on this rank's share of the prompts. Returns the step's metrics."""
    G = args.group_size
    exs, prompt_ids = my_prompts(examples, step, args, rank, world)
    prompts = [rollout.encode(processor, ex["question"], rollout.open_images(ex)) for ex in exs]
    row_example = torch.arange(len(exs)).repeat_interleave(G)                  # (N,) example of each row
    row_prompts = [prompts[i] for i in row_example.tolist()]
    t0 = time.time()
    # 1. rollouts: G per prompt, from the policy itself (no grad)
    with report.waiting(len(prompts) * G, f"step {step + 1} rollouts", rank) as bar:
        ids, mask = rollout.sample(policy, processor, prompts, G, args.max_new_tokens, args.temperature, args.top_p,
                                   args.kv_cache_gb, seed=args.seed * 100_003 + step, prompt_ids=prompt_ids,
                                   progress=bar, fast=fast)
    # 2. rewards: correctness only
    rewards, well_formed, truncated = rewards_of(processor, ids, mask, exs, row_example)
    # 3. advantages (no value network: the group mean is the baseline)
    adv = loss.group_advantages(rewards, G, scale_by_std=not args.no_std_norm)
    # 4. gate: a PTD group has accuracy < tau and a hint (a tutor with nothing to say cannot
    #    replace the KL anchor); its failed rows (or all, --distill_all) are distilled
    hinted = torch.tensor([tutor.can_teach(ex, args.tutor_context) for ex in exs]).repeat_interleave(G)
    ptd_group = (rewards.view(-1, G).mean(1) < args.tau).repeat_interleave(G) & hinted & (args.algo == "ptdpo")
    distil = ptd_group & ((rewards == 0) | args.distill_all)
    t1 = time.time()
    # 5. old-policy log-probs, entropy and the student's top-K ids (no grad)
    topk = args.topk if args.topk > 0 else policy.get_output_embeddings().weight.shape[0]
    score_kw = dict(temperature=args.temperature, token_budget=args.token_budget, chunk_size=args.chunk_size)
    old_scores = rollout.score(policy, row_prompts, ids, mask, topk=topk if distil.any() else 0, entropy=True,
                               **score_kw)
    t2 = time.time()
    # 6. reference log-probs for the k3 KL, rows outside PTD groups (no grad)
    ref_scores = None
    if args.kl_coef > 0:
        ref_logp = rollout.score_rows(ref, row_prompts, ids, mask, ~ptd_group, **score_kw)["logp"]
        ref_scores = {"logp": ref_logp.float(), "wanted": ~ptd_group}
    # 7. the tutor: the same frozen model with the hint in context, on the distilled rows (no grad)
    tutor_scores = None
    if args.algo == "ptdpo":
        tutor_scores = tutor.teach(ref, processor, exs, rows=row_example, response_ids=ids, response_mask=mask,
                                   distil=distil, student_topk=old_scores["topk_ids"], topk=topk,
                                   context=args.tutor_context, hint_style=args.hint_style, **score_kw)
    t3 = time.time()
    # 8. the update: clipped surrogate + kl_coef * k3 KL + ptd_coef * divergence, per mini-batch
    policy.train()
    batch = {"prompts": row_prompts, "ids": ids, "mask": mask, "old_logp": old_scores["logp"].float().cpu(),
             "adv": adv, "distil": distil, "ref": ref_scores, "tutor": tutor_scores}
    stats, same = update(policy, opt, batch, args, world)
    policy.eval()
    if fast is not None:   # the generation copy takes the new weights, in place (every rank: a collective)
        fast.refresh(policy)
    if torch.cuda.is_available():   # the step's peak, the busiest rank's
        same["peak_mem_gb"] = all_max(torch.tensor(torch.cuda.max_memory_allocated() / 2 ** 30)).item()
        torch.cuda.reset_peak_memory_stats()
    return report.step_metrics(step, rewards, well_formed, truncated, mask, old_scores["entropy"], ptd_group, distil,
                               stats, same, (t0, t1, t2, t3, time.time()), args)


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


def update(policy, opt, batch, args, world):
    """Clipped-surrogate updates over the step's mini-batches; returns summed metrics.

    Normalisers are global counts (all ranks): n_tok response tokens of the mini-batch (GRPO and
    KL), n_div response tokens of its distilled rows (divergence). So gradients must be summed
    across ranks, not averaged: each rank's loss is multiplied by the world size (gloo lacks the
    reduce op FSDP2's set_gradient_divide_factor needs). A mini-batch whose loss or gradient norm
    is not finite is skipped on every rank, never applied."""
    prompts, mask, distil = batch["prompts"], batch["mask"], batch["distil"]
    rows_per_mb = max(args.group_size, args.minibatch_prompts * args.group_size // world)
    stats = dict.fromkeys(("pg_loss", "kl", "kl_tokens", "div", "div_tokens", "clip_frac_low", "clip_frac_high",
                           "clip_frac_dual", "tokens"), 0.0)
    grad_norm, skipped, n_mb = 0.0, 0, 0
    for start in range(0, len(prompts), rows_per_mb):
        mb_rows = list(range(start, min(len(prompts), start + rows_per_mb)))
        n_tok = max(1.0, all_sum(mask[mb_rows].sum().double()).item())
        n_div = all_sum((mask[mb_rows] & distil[mb_rows].unsqueeze(1)).sum().double()).item()
        lens = [len(prompts[i]["input_ids"]) + batch["ids"].shape[1] for i in mb_rows]
        plan = [([mb_rows[j] for j in cut], 1.0) for cut in rollout.micro_batches(lens, args.token_budget)]
        # every rank must run as many backward passes as the busiest one (FSDP collectives):
        # the others add weight-0 passes over one row
        plan += [([mb_rows[0]], 0.0)] * (int(all_max(torch.tensor(len(plan)))) - len(plan))
        opt.zero_grad(set_to_none=True)
        finite = True
        for micro, weight in plan:
            total, parts = microbatch_loss(policy, batch, micro, n_tok, n_div, args)
            finite &= bool(torch.isfinite(total))
            (total * (weight * world)).backward()     # FSDP averages over ranks: undo it
            for k, v in parts.items():
                stats[k] += v * weight
        gn = torch.nn.utils.clip_grad_norm_(policy.parameters(), args.grad_clip)
        gn = gn.full_tensor() if hasattr(gn, "full_tensor") else gn      # the same on every rank
        n_mb += 1
        if all_sum(torch.tensor(0.0 if finite else 1.0)).item() > 0 or not torch.isfinite(gn):
            opt.zero_grad(set_to_none=True)
            skipped += 1
            print0(f"  non-finite loss or gradient norm ({gn.item()}): optimiser step skipped")
            continue
        opt.step()
        grad_norm += gn.item()
    return stats, {"grad_norm": grad_norm / max(n_mb - skipped, 1), "skipped": skipped, "minibatches": n_mb}


def microbatch_loss(policy, batch, micro, n_tok, n_div, args):
    """The loss of one micro-batch (`micro`: its rows), divided by the global normalisers; its parts."""
    dev = next(policy.parameters()).device
    ref_scores, tutor_scores, distil = batch["ref"], batch["tutor"], batch["distil"]
    m = batch["mask"][micro].to(dev)
    sup = tutor_scores["support_ids"][micro] if tutor_scores is not None else None
    out = rollout.score(policy, [batch["prompts"][i] for i in micro], batch["ids"][micro], batch["mask"][micro],
                        support=sup, temperature=args.temperature, token_budget=10 ** 12,
                        chunk_size=args.chunk_size, grad=True)
    pg, met = loss.policy_loss(out["logp"], batch["old_logp"][micro].to(dev), batch["adv"][micro].to(dev), m, n_tok,
                               args.clip_low, args.clip_high, args.dual_clip)
    total, parts = pg, {"pg_loss": pg.item(), "tokens": m.sum().item()}
    for k in ("clip_frac_low", "clip_frac_high", "clip_frac_dual"):
        parts[k] = met[k].item() * parts["tokens"]
    if ref_scores is not None:   # k3 KL on rows outside PTD groups: there the tutor is the anchor
        km = m & ref_scores["wanted"][micro].to(dev).unsqueeze(1)
        kl = (loss.k3_kl(out["logp"], ref_scores["logp"][micro].to(dev)) * km).sum()
        total = total + args.kl_coef * kl / n_tok
        parts.update(kl=kl.item(), kl_tokens=km.sum().item())
    if tutor_scores is not None and n_div > 0:   # token mean over the distilled rows, no advantage
        dm = m & distil[micro].to(dev).unsqueeze(1)
        smask = tutor_scores["support_mask"][micro].to(dev) & dm.unsqueeze(-1)
        divergence = loss.DIVERGENCES[args.divergence]
        d = divergence(out["support_logp"], tutor_scores["tutor_logp"][micro].to(dev), smask)   # (b, R)
        div = (d * dm).sum()
        total = total + args.ptd_coef * div / n_div
        parts.update(div=div.item(), div_tokens=dm.sum().item())
    return total, parts


def my_prompts(examples, step, args, rank, world):
    """This rank's examples and their global prompt ids. Global mini-batch j = prompts
    [j*mb, (j+1)*mb), split evenly across ranks, so every optimiser step sees the same prompts
    whatever the number of ranks."""
    mb, per = args.minibatch_prompts, args.minibatch_prompts // world
    ids = [j * mb + rank * per + i for j in range(args.prompts_per_step // mb) for i in range(per)]
    step_all = data.step_examples(examples, step, args.prompts_per_step, args.seed)
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
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    inner = model.model
    fully_shard(inner.visual, mp_policy=mp)
    for layer in inner.language_model.layers:
        fully_shard(layer, mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    register_fsdp_forward_method(model, rollout.SCORER)
    return model


def load_models(args, device):
    """The policy (fp32 master) and the frozen reference / tutor (compute dtype), both sharded."""
    from PIL import Image
    dtype = rollout.resolve_dtype(args.dtype, device)
    policy, processor = rollout.load_model(args.model, "float32", str(device), args.trust_remote_code)
    ref, _ = rollout.load_model(args.model, args.dtype, str(device), args.trust_remote_code)
    ref.requires_grad_(False)
    if args.grad_ckpt:
        enable = getattr(policy, "activation_checkpointing_enable", None)   # transformers >= 5.24's name
        if enable:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    policy, ref = shard(policy, dtype), shard(ref, dtype)
    # FSDP2 initialises lazily in the root's first forward; generate() must not come first
    p0 = rollout.encode(processor, "Hello.", [Image.new("RGB", (64, 64))])
    one = torch.ones(1, 1, dtype=torch.long)
    with torch.no_grad():
        for m in (policy, ref):
            getattr(m, rollout.SCORER)(rollout.collate([p0], 0, one, one.bool(), device), one.to(device),
                                       one.bool().to(device))
            m.reshard()   # the root keeps its parameters unsharded after a forward; the optimiser
            #               must be built on the sharded ones
    return policy, ref, processor

# -----------------------------------------------------------------------------
# the loop


def main(argv=None):
    args, rank, world, device = config.start_run(argv)
    policy, ref, processor = load_models(args, device)
    config.check_full_vocabulary_fits(args, policy, world)
    opt = torch.optim.AdamW(policy.parameters(), lr=args.lr, weight_decay=args.weight_decay, betas=(0.9, 0.999))
    train_ex, eval_ex = config.load_data(args, processor, rank)
    chosen = args.resume if isinstance(args.resume, str) else None     # --resume PATH: that checkpoint
    start = checkpoint.load(args.out_dir, policy, opt, chosen) if args.resume else 0
    if args.resume and start == 0:
        print0(f"--resume: no valid checkpoint in {os.path.join(args.out_dir, 'checkpoints')}; starting at step 0")
    # rollouts on CUDA: decode.py's fast loop over a bf16 copy of the (resumed) policy
    fast = decode.for_run(policy, args, device)
    emit = report.open_metrics(args, rank, start)
    def held_out(chance=False):   # chance: the blank-image score too (the run's start and end)
        out = report.evaluate(policy, processor, eval_ex, args, rank, world, fast=fast)
        if chance and args.eval_blank:
            out.update(report.evaluate(policy, processor, eval_ex, args, rank, world, fast=fast, blank=True))
        return out
    def save(step):   # rotation reads the run's metrics: it keeps the newest checkpoint they vouch for
        path = os.path.join(args.out_dir, "metrics.jsonl")
        records = report.read_jsonl(path) if rank == 0 and os.path.exists(path) else []
        checkpoint.save(args.out_dir, step, policy, opt, args.keep, records, args.ptd_coef)
    policy.eval()
    first = held_out(chance=True) if eval_ex and start == 0 else None
    if first:
        emit({"step": 0, **first})
        print0(f"step    0 | {report.eval_text(first, args.eval_samples)} (no hints, {len(eval_ex)} problems)")
    t_start, bad, collapsed = time.time(), 0, 0
    for step in range(start, args.steps):
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, (step + 1) / max(1, args.warmup_steps))
        m = train_step(step, policy, ref, processor, opt, train_ex, args, rank, world, fast)
        m["lr"] = opt.param_groups[0]["lr"]
        bad = bad + 1 if m["skipped"] else 0
        if eval_ex and args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            m.update(held_out())
        emit(m)
        print0(report.log_line(m, args.divergence) +
               (f" | {report.eval_text(m, args.eval_samples)}" if "eval_pass1" in m else ""))
        collapsed = report.collapse_check(m, collapsed)
        if bad >= args.max_bad_steps:
            records = report.read_jsonl(os.path.join(args.out_dir, "metrics.jsonl")) if rank == 0 else []
            where = checkpoint.before_divergence(args.out_dir, records, args.ptd_coef) if rank == 0 else ""
            print0(f"train.py: stopped at step {step + 1}: {bad} steps in a row with a non-finite loss or "
                   f"gradient (diverged; try a lower --lr). Nothing exported. {where}")
            sys.exit(1)
        if bad == 0 and args.save_every and (step + 1) % args.save_every == 0 and step + 1 < args.steps \
                and not args.no_checkpoints:
            save(step + 1)   # never after a bad step
    last = held_out(chance=True) if eval_ex else {}
    if last:
        emit({"step": args.steps, **last, "final": True})
    if args.steps > start and bad == 0 and not args.no_checkpoints:
        save(args.steps)
    if not args.no_export:
        checkpoint.export_hf(policy, processor, os.path.join(args.out_dir, "final"))
    if last:
        report.summary(args, first, last, len(eval_ex), time.time() - t_start, world, device, collapsed)
    torch.distributed.destroy_process_group()
    return last


if __name__ == "__main__":
    main()
