"""
train.py: PTD-PO (and plain GRPO) on FSDP2, one flat loop.

    python train.py                                   # the embedded demo on CPU (a few minutes)
    torchrun --nproc_per_node=2 train.py              # the same on 2 CPU processes (gloo)
    torchrun --nproc_per_node=8 train.py --model Qwen/Qwen3-VL-2B-Thinking \\
        --train_data virl39k_hints.jsonl --eval_data mmk12_test.jsonl --grad_ckpt
                                                      # a real model gets the paper's settings (PAPER)

One step (train_step reads like it): sample G rollouts per prompt -> rewards -> group advantages
-> gate (PTD groups: accuracy < tau and a hint to teach with; distilled rows: their failed
rollouts) -> old-policy scores with the student's top-K ids -> reference log-probs (k3 KL) for
rows outside PTD groups -> tutor log-probs on the union support for distilled rows ->
clipped-surrogate updates in mini-batches, plus kl_coef * KL and ptd_coef * Top-K JSD -> log,
evaluate, checkpoint.

Precision: the policy's parameters, gradients and AdamW state are fp32 (the master copy, also
what checkpoints and the export hold); forward and backward run in --dtype (bf16 on CUDA) through
FSDP2's MixedPrecisionPolicy, with fp32 gradient reduction. An AdamW step of lr 1e-6 is far below
half a bf16 ulp of a typical weight, so bf16 master weights would mostly not move at all. The
frozen reference (also the tutor) is held in --dtype. The lm_head matmul runs in --dtype too
(bf16 on CUDA) and only the softmax in fp32: a choice for memory and speed, so per-token
log-probs and the JSD carry bf16 rounding noise (--dtype float32 removes it). One process is a
world of one: the same FSDP2 code path, so the same precision.

Loss normalisation: every term is a sum over tokens divided by a global count (all response
tokens of the mini-batch for GRPO and KL; the distilled rows' tokens for the divergence), so
gradients must be summed across ranks, not averaged: each rank's loss is multiplied by the
world size (gloo lacks the reduce op FSDP2's set_gradient_divide_factor needs).
Left out on purpose: vLLM rollouts, sequence packing, tensor/context parallelism, LoRA.
"""
import argparse
import json
import os
import sys
import time

import torch
from tqdm import tqdm

import checkpoint
import data
import decode
import loss
import reward
import rollout
import tutor
from distributed import all_max, all_sum, print0, setup

# -----------------------------------------------------------------------------
# config

# changing one of these between a checkpoint and --resume changes the data order or the algorithm
RESUME_KEYS = ("world_size", "model", "train_data", "algo", "group_size", "prompts_per_step", "minibatch_prompts",
               "seed", "tau", "topk", "distill_all", "divergence", "tutor_context", "kl_coef", "ptd_coef", "temperature",
               "top_p", "max_new_tokens", "no_std_norm", "clip_low", "clip_high", "dual_clip", "hint_style",
               "no_spoiler_filter")


ranged, POS, NONNEG, PROB = data.ranged, data.POS, data.NONNEG, data.PROB   # argument ranges, shared

# Defaults that depend on the model. A real model gets the paper's settings (Qwen3-VL-2B/8B:
# lambda 0.05, lr 1e-6 constant, 384 prompts per step in mini-batches of 128, 4,096 new tokens,
# ~2 epochs of ViRL39K); the embedded demo (--model toy, a 1M-parameter model on a 96 px task)
# gets its own, chosen on a development seed (README, Results), among them forward KL instead of the
# paper's JSD: the demo's student is confidently wrong on its hard bucket, where the JSD's gradient
# vanishes (README, Results). A flag given on the command line always wins.
PAPER = {"ptd_coef": 0.05, "lr": 1e-6, "warmup_steps": 0, "max_new_tokens": 4096, "prompts_per_step": 384,
         "minibatch_prompts": 128, "steps": 200, "eval_samples": 1, "divergence": "jsd"}
DEMO = {"ptd_coef": 2.0, "lr": 5e-4, "warmup_steps": 10, "max_new_tokens": 32, "prompts_per_step": 16,
        "minibatch_prompts": 8, "steps": 100, "eval_samples": 8, "divergence": "fkl"}


def get_args(argv=None):
    p = argparse.ArgumentParser(description="PTD-PO / GRPO training for Qwen-VL models (FSDP2).")
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default="toy", help="hub id, local directory, or 'toy' (the embedded demo)")
    g.add_argument("--train_data", default=None, help="training JSONL (default: the demo's train split)")
    g.add_argument("--eval_data", default=None, help="held-out JSONL (default: the demo's eval split)")
    g.add_argument("--strict", action="store_true",
                   help="stop at the first bad data record instead of skipping it")
    g.add_argument("--max_prompt_tokens", type=POS, default=4096,
                   help="longer prompts are reported and skipped")
    g.add_argument("--trust_remote_code", action="store_true",
                   help="allow model code from the hub (off by default)")
    g.add_argument("--allow_outside_images", action="store_true",
                   help="allow absolute or ../ image paths (default: only inside the data file's folder)")
    g = p.add_argument_group("algorithm")
    g.add_argument("--algo", default="ptdpo", choices=["ptdpo", "grpo"],
                   help="ptdpo adds the tutor's Top-K JSD")
    g.add_argument("--group_size", type=ranged(int, 2), default=8, help="G: rollouts per prompt (>= 2)")
    g.add_argument("--kl_coef", type=ranged(float, 0), default=0.01,
                   help="k3 KL to the reference (0: no pass)")
    g.add_argument("--ptd_coef", type=ranged(float, 0), default=None,
                   help="lambda: weight of the distillation term (default: 0.05, the paper's 2B/8B value; "
                        "the demo's own for --model toy; paper 4B: 0.5)")
    g.add_argument("--tau", type=PROB, default=1.0, help="a group with accuracy < tau is a PTD group")
    g.add_argument("--topk", type=ranged(int, -1), default=100,
                   help="K of the Top-K JSD support (-1: the full vocabulary, an ablation: N x R x 2V memory)")
    g.add_argument("--distill_all", action="store_true",
                   help="distil every rollout of a PTD group, not only failed ones")
    g.add_argument("--divergence", default=None, choices=["jsd", "fkl", "rkl"],
                   help="distillation divergence: the paper's Top-K JSD, forward KL(tutor||student) or reverse "
                        "KL (default: jsd; the demo's own for --model toy: fkl)")
    g.add_argument("--tutor_context", default="hint", choices=["hint", "answer", "none"],
                   help="what the tutor reads: the hint; the gold answer (leaky baseline); or none (the "
                        "control: the frozen model on the student's own prompt, same gate and rows)")
    g.add_argument("--hint_style", default="structured", choices=["structured", "text"],
                   help="how the tutor reads a hint: regions with boxes and numbered steps, or the same hint as "
                        "one paragraph of prose (the paper's structured vs unstructured ablation)")
    g.add_argument("--no_spoiler_filter", action="store_true",
                   help="keep training hints that leak the answer (the paper's ablation of the zero-spoiler "
                        "filter; make hints with make_hints.py --no_spoiler_filter)")
    g.add_argument("--clip_low", type=ranged(float, 0, 0.999), default=0.2, help="PPO clip below 1")
    g.add_argument("--clip_high", type=ranged(float, 0), default=0.3, help="PPO clip above 1 (clip higher)")
    g.add_argument("--dual_clip", type=ranged(float, 1, open_lo=True), default=3.0, help="dual clip, A < 0")
    g.add_argument("--no_std_norm", action="store_true",
                   help="Dr. GRPO: do not divide advantages by the group std")
    g = p.add_argument_group("sampling")
    g.add_argument("--temperature", type=ranged(float, 0, open_lo=True), default=1.0,
                   help="rollout temperature")
    g.add_argument("--top_p", type=PROB, default=0.99, help="rollout nucleus")
    g.add_argument("--max_new_tokens", type=POS, default=None, help="response length cap (default 4096; demo 32)")
    g.add_argument("--kv_cache_gb", type=ranged(float, 0, open_lo=True), default=32.0,
                   help="KV-cache memory per generate() call; it sets the rows per call (see README)")
    g.add_argument("--plain_generate", action="store_true",
                   help="sample with HF generate() on CUDA too (the reference path; default: decode.py's)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=NONNEG, default=None,
                   help="training steps, one rollout batch each (default 200: ~2 epochs of ViRL39K; demo 60)")
    g.add_argument("--prompts_per_step", type=POS, default=None,
                   help="prompts per step, all ranks together (default 384; demo 16)")
    g.add_argument("--minibatch_prompts", type=POS, default=None,
                   help="prompts per optimiser step, all ranks together (default 128; demo 8)")
    g.add_argument("--lr", type=ranged(float, 0, open_lo=True), default=None,
                   help="AdamW learning rate (default 1e-6, the paper's; demo 5e-4)")
    g.add_argument("--warmup_steps", type=NONNEG, default=None,
                   help="linear warm-up, then constant (default 0, the paper's; demo 10)")
    g.add_argument("--weight_decay", type=ranged(float, 0), default=0.01, help="AdamW weight decay")
    g.add_argument("--grad_clip", type=ranged(float, 0, open_lo=True), default=1.0, help="gradient-norm clip")
    g.add_argument("--max_bad_steps", type=POS, default=3,
                   help="stop (exit 1, no export) after this many steps in a row with a non-finite loss")
    g = p.add_argument_group("system")
    g.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="compute dtype: auto (bf16 on CUDA, fp32 on CPU); master weights are always fp32")
    g.add_argument("--grad_ckpt", action="store_true", help="activation checkpointing in the decoder")
    g.add_argument("--token_budget", type=POS, default=16384, help="padded tokens per scoring micro-batch")
    g.add_argument("--chunk_size", type=POS, default=256, help="positions per lm_head chunk")
    g.add_argument("--seed", type=NONNEG, default=0, help="seed for data order and sampling")
    g.add_argument("--threads", type=NONNEG, default=0, help="torch CPU threads per process (0: default)")
    g = p.add_argument_group("logging, evaluation, checkpoints")
    g.add_argument("--out_dir", default="runs/demo", help="run directory: config, metrics.jsonl, checkpoints")
    g.add_argument("--eval_every", type=NONNEG, default=20,
                   help="held-out evaluation interval (0: start/end)")
    g.add_argument("--eval_n", type=NONNEG, default=200, help="held-out problems per evaluation (0: all)")
    g.add_argument("--eval_samples", type=POS, default=None,
                   help="samples per held-out problem: pass@1 = their mean, pass@n = any right (default 1; demo 8)")
    g.add_argument("--save_every", type=NONNEG, default=20,
                   help="checkpoint interval in steps (0: only at the end)")
    g.add_argument("--keep", type=POS, default=2, help="checkpoints kept (the newest is never deleted)")
    g.add_argument("--resume", action="store_true",
                   help="continue from the newest valid checkpoint in out_dir")
    g.add_argument("--allow_config_change", action="store_true",
                   help="resume even if the data order or algorithm settings differ from the saved config.json")
    g.add_argument("--no_export", action="store_true", help="skip the final Hugging Face export")
    g.add_argument("--wandb", default="", help="wandb project name (optional; needs `pip install wandb`)")
    args = p.parse_args(argv)
    demo_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "toy", "model")
    is_demo = args.model == "toy" or os.path.abspath(args.model) == demo_dir   # the shipped model by its path too
    preset = DEMO if is_demo else PAPER
    for k, v in preset.items():   # what the user did not set comes from the preset
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.topk == 0:
        p.error("argument --topk: 0 is not allowed (>= 1, or -1 for the full vocabulary)")
    if args.prompts_per_step % args.minibatch_prompts:
        p.error("argument --minibatch_prompts: must divide --prompts_per_step")
    return args


# -----------------------------------------------------------------------------
# models


def shard(model, param_dtype):
    """FSDP2 as torchtitan applies it: the vision tower as one unit, each decoder layer, then the
    root. Parameters stay in their loaded dtype (fp32 master for the policy); FSDP2 casts them to
    param_dtype for compute and reduces gradients in fp32. FSDP averages gradients over ranks;
    our losses are divided by global token counts, so update() multiplies them by the world size
    to turn that average into the sum the normalisation needs."""
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


def check_full_vocabulary_fits(args, policy, world):
    """--topk -1 keeps (rows x response tokens x 2V) support buffers: refuse what cannot fit."""
    if args.topk != -1:
        return
    V = policy.get_output_embeddings().weight.shape[0]
    n_rows = args.prompts_per_step // world * args.group_size
    need = n_rows * args.max_new_tokens * 2 * V * 13         # int64 ids + bool mask + fp32 log-probs
    have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    if need > 0.5 * have:
        sys.exit(f"train.py: --topk -1 (full vocabulary, V = {V}) needs ~{need / 2 ** 30:.1f} GB of host "
                 f"memory per rank for {n_rows} rows x {args.max_new_tokens} tokens; {have / 2 ** 30:.1f} GB "
                 f"free. Use --topk 100.")

# -----------------------------------------------------------------------------
# data


def resolve_paths(args):
    if args.model == "toy":
        import toy
        args.model, demo_train, demo_eval = toy.ensure()
        args.train_data = args.train_data or demo_train
        args.eval_data = args.eval_data or demo_eval
    if not args.train_data:
        sys.exit("train.py: --train_data is required with a model other than 'toy'")


def my_prompts(examples, step, args, rank, world):
    """This rank's examples and their global prompt ids. Global mini-batch j = prompts
    [j*mb, (j+1)*mb), split evenly across ranks, so every optimiser step sees the same prompts
    whatever the number of ranks."""
    mb, per = args.minibatch_prompts, args.minibatch_prompts // world
    ids = [j * mb + rank * per + i for j in range(args.prompts_per_step // mb) for i in range(per)]
    step_all = data.step_examples(examples, step, args.prompts_per_step, args.seed)
    return [step_all[i] for i in ids], ids

def waiting(total, desc, rank):
    """A tqdm bar on rank 0 (counting this rank's rows) for the waits of a real model: a step's
    rollouts or a held-out evaluation can take minutes. It appears only after 5 s, so the demo's
    one-line-per-step log stays clean."""
    return tqdm(total=total, desc=desc, unit="rows", leave=False, delay=5, disable=rank != 0)

# -----------------------------------------------------------------------------
# one training step


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


def reference_logp(ref, row_prompts, ids, mask, wanted, args):
    """The frozen reference's log-probs on the rows where `wanted` (N,) is True (zeros elsewhere),
    for the k3 KL."""
    out = torch.zeros(ids.shape)
    sel = wanted.nonzero().squeeze(-1)   # may be empty here and not on another rank: score anyway
    out[sel] = rollout.score(ref, [row_prompts[i] for i in sel.tolist()], ids[sel], mask[sel],
                             temperature=args.temperature, token_budget=args.token_budget,
                             chunk_size=args.chunk_size)["logp"].float().cpu()
    return out


def microbatch_loss(policy, prompts, ids, mask, micro, old_logp, adv, ref_scores, distil, tutor_scores, n_tok, n_div,
                    args):
    """The loss of one micro-batch (`micro`: its row indices), already divided by the global
    normalisers, and its parts."""
    dev = next(policy.parameters()).device
    m = mask[micro].to(dev)
    sup = tutor_scores["support_ids"][micro] if tutor_scores is not None else None
    out = rollout.score(policy, [prompts[i] for i in micro], ids[micro], mask[micro], support=sup,
                        temperature=args.temperature, token_budget=10 ** 12, chunk_size=args.chunk_size, grad=True)
    pg, met = loss.policy_loss(out["logp"], old_logp[micro].to(dev), adv[micro].to(dev), m, n_tok,
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


def update(policy, opt, prompts, ids, mask, old_logp, adv, ref_scores, distil, tutor_scores, args, world):
    """Clipped-surrogate updates over the step's mini-batches; returns summed metrics.

    Normalisers are global counts (all ranks): n_tok response tokens of the mini-batch (GRPO and
    KL), n_div response tokens of its distilled rows (divergence). A mini-batch whose loss or
    gradient norm is not finite is skipped on every rank, never applied."""
    rows_per_mb = max(args.group_size, args.minibatch_prompts * args.group_size // world)
    stats = dict.fromkeys(("pg_loss", "kl", "kl_tokens", "div", "div_tokens", "clip_frac_low", "clip_frac_high",
                           "clip_frac_dual", "tokens"), 0.0)
    grad_norm, skipped, n_mb = 0.0, 0, 0
    for start in range(0, len(prompts), rows_per_mb):
        mb_rows = list(range(start, min(len(prompts), start + rows_per_mb)))
        n_tok = max(1.0, all_sum(mask[mb_rows].sum().double()).item())
        n_div = all_sum((mask[mb_rows] & distil[mb_rows].unsqueeze(1)).sum().double()).item()
        lens = [len(prompts[i]["input_ids"]) + ids.shape[1] for i in mb_rows]
        plan = [([mb_rows[j] for j in cut], 1.0) for cut in rollout.micro_batches(lens, args.token_budget)]
        # every rank must run as many backward passes as the busiest one (FSDP collectives):
        # the others add weight-0 passes over one row
        plan += [([mb_rows[0]], 0.0)] * (int(all_max(torch.tensor(len(plan)))) - len(plan))
        opt.zero_grad(set_to_none=True)
        finite = True
        for micro, weight in plan:
            total, parts = microbatch_loss(policy, prompts, ids, mask, micro, old_logp, adv, ref_scores, distil,
                                           tutor_scores, n_tok, n_div, args)
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


def step_metrics(step, rewards, well_formed, truncated, mask, entropy, ptd_group, distil, stats, same, times,
                 args):
    """The step's numbers, summed over ranks (`same`: values already equal on every rank)."""
    G, m = args.group_size, mask.float()
    local = {"reward": rewards.sum(), "format": well_formed.sum(), "rows": float(len(rewards)), "len": m.sum(),
             "entropy": (entropy.cpu() * m).sum(), "distilled": distil.float().sum(),
             "ptd_groups": ptd_group.float().sum() / G, "groups": float(len(rewards) // G),
             "truncated": truncated.float().sum(), "mixed_groups": (rewards.view(-1, G).std(1) > 0).float().sum(),
             # all-fail groups: GRPO's advantage is zero, only the tutor has a signal there
             "all_fail_groups": (rewards.view(-1, G).sum(1) == 0).float().sum(),
             "all_pass_groups": (rewards.view(-1, G).sum(1) == G).float().sum(), **stats}
    keys = sorted(local)
    tot = dict(zip(keys, all_sum(torch.tensor([float(local[k]) for k in keys], dtype=torch.float64)).tolist()))
    t0, t1, t2, t3, t4 = times
    return {"step": step + 1, "reward": tot["reward"] / tot["rows"], "format": tot["format"] / tot["rows"],
            "entropy": tot["entropy"] / max(tot["len"], 1), "kl": tot["kl"] / max(tot["kl_tokens"], 1),
            args.divergence: tot["div"] / max(tot["div_tokens"], 1),
            "distilled_frac": tot["distilled"] / tot["rows"], "ptd_group_frac": tot["ptd_groups"] / tot["groups"],
            "mixed_group_frac": tot["mixed_groups"] / tot["groups"],
            "all_fail_frac": tot["all_fail_groups"] / tot["groups"], "all_pass_frac": tot["all_pass_groups"] / tot["groups"],
            **{k: tot[k] / max(tot["tokens"], 1) for k in ("clip_frac_low", "clip_frac_high", "clip_frac_dual")},
            **same, "resp_len": tot["len"] / tot["rows"], "truncated_frac": tot["truncated"] / tot["rows"],
            "t_rollout": t1 - t0, "t_old": t2 - t1, "t_ref_tutor": t3 - t2, "t_update": t4 - t3,
            "tok_per_s": tot["len"] / max(t4 - t0, 1e-9)}


def train_step(step, policy, ref, processor, opt, examples, args, rank, world, fast=None):
    """One PTD-PO step on this rank's share of the prompts. Returns the step's metrics."""
    G = args.group_size
    exs, prompt_ids = my_prompts(examples, step, args, rank, world)
    prompts = [rollout.encode(processor, ex["question"], data.open_images(ex)) for ex in exs]
    row_example = torch.arange(len(exs)).repeat_interleave(G)                  # (N,) example of each row
    row_prompts = [prompts[i] for i in row_example.tolist()]
    t0 = time.time()
    # 1. rollouts: G per prompt, from the policy itself (no grad)
    with waiting(len(prompts) * G, f"step {step + 1} rollouts", rank) as bar:
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
    old_scores = rollout.score(policy, row_prompts, ids, mask, topk=topk if distil.any() else 0, entropy=True,
                               temperature=args.temperature, token_budget=args.token_budget,
                               chunk_size=args.chunk_size)
    t2 = time.time()
    # 6. reference log-probs for the k3 KL, rows outside PTD groups (no grad)
    ref_scores = None
    if args.kl_coef > 0:
        ref_scores = {"logp": reference_logp(ref, row_prompts, ids, mask, ~ptd_group, args), "wanted": ~ptd_group}
    # 7. the tutor: the same frozen model with the hint in context, on the distilled rows (no grad)
    tutor_scores = None
    if args.algo == "ptdpo":
        tutor_scores = tutor.teach(ref, processor, exs, rows=row_example, response_ids=ids, response_mask=mask,
                                   distil=distil, student_topk=old_scores["topk_ids"], topk=topk,
                                   context=args.tutor_context, temperature=args.temperature,
                                   token_budget=args.token_budget, chunk_size=args.chunk_size,
                                   hint_style=args.hint_style)
    t3 = time.time()
    # 8. the update: clipped surrogate + kl_coef * k3 KL + ptd_coef * divergence, per mini-batch
    policy.train()
    old_logp = old_scores["logp"].float().cpu()
    stats, same = update(policy, opt, row_prompts, ids, mask, old_logp, adv, ref_scores, distil, tutor_scores,
                         args, world)
    policy.eval()
    if fast is not None:   # the generation copy takes the new weights, in place (every rank: a collective)
        fast.refresh(policy)
    if torch.cuda.is_available():   # the step's peak, the busiest rank's
        same["peak_mem_gb"] = all_max(torch.tensor(torch.cuda.max_memory_allocated() / 2 ** 30)).item()
        torch.cuda.reset_peak_memory_stats()
    return step_metrics(step, rewards, well_formed, truncated, mask, old_scores["entropy"], ptd_group, distil, stats,
                        same, (t0, t1, t2, t3, time.time()), args)

# -----------------------------------------------------------------------------
# evaluation, logging


def evaluate(model, processor, examples, args, rank, world, seed=2 ** 61 + 1234, fast=None):
    """Held-out pass@1 (the mean over n = --eval_samples samples), pass@n (any of the n right) and
    mean response length, no hints, split across ranks; the same per `category` when the data
    has categories (the demo's buckets: eval_pass1/easy, eval_pass8/hard, ...)."""
    idx = list(range(rank, len(examples), world))
    mine = [examples[i] for i in idx]
    prompts = [rollout.encode(processor, ex["question"], data.open_images(ex)) for ex in mine]
    n = args.eval_samples
    with waiting(len(prompts) * n, "held-out evaluation", rank) as bar:
        res = rollout.evaluate(model, processor, prompts, mine, n, args.max_new_tokens, args.temperature,
                               args.top_p, args.kv_cache_gb, seed=seed, prompt_ids=idx, progress=bar, fast=fast)
    cats = sorted({ex["category"] for ex in examples if ex.get("category")})   # the same on every rank
    groups = [""] + cats
    sums = torch.zeros(len(groups), 4, dtype=torch.float64)     # correct, problems, any correct, length
    for j, c in enumerate(groups):
        sel = torch.tensor([not c or ex.get("category") == c for ex in mine], dtype=torch.bool)
        sums[j] = torch.tensor([res["correct"][sel].sum().item(), sel.sum().item(),
                                (res["correct"][sel] > 0).sum().item(), res["length"][sel].sum().item()])
    sums = all_sum(sums)
    out = {}
    for j, c in enumerate(groups):
        tail = f"/{c}" if c else ""
        problems = max(sums[j, 1].item(), 1.0)
        out[f"eval_pass1{tail}"] = sums[j, 0].item() / (problems * n)
        if n > 1:
            out[f"eval_pass{n}{tail}"] = sums[j, 2].item() / problems
    out["eval_len"] = sums[0, 3].item() / (max(sums[0, 1].item(), 1.0) * n)
    return out


def eval_text(m, n):
    """'held-out pass@1 0.412 (easy 0.700, hard 0.125) | pass@8 0.800 (...)' from a metrics record."""
    parts = []
    for k in ["1"] + ([str(n)] if n > 1 else []):
        cats = sorted(key.split("/", 1)[1] for key in m if key.startswith(f"eval_pass{k}/"))
        by = ", ".join(f"{c} {m[f'eval_pass{k}/{c}']:.3f}" for c in cats)
        parts.append(f"pass@{k} {m[f'eval_pass{k}']:.3f}" + (f" ({by})" if by else ""))
    return "held-out " + " | ".join(parts)


def log_line(m, div):
    return (f"step {m['step']:4d} | reward {m['reward']:.3f} | groups fail/pass {m['all_fail_frac']:.2f}/"
            f"{m['all_pass_frac']:.2f} | entropy {m['entropy']:.3f} | kl {m['kl']:.4f} | "
            f"{div} {m[div]:.4f} | distilled {m['distilled_frac']:.2f} | clip {m['clip_frac_low']:.3f}/"
            f"{m['clip_frac_high']:.3f} | len {m['resp_len']:.1f} | time {m['t_rollout']:.1f}/"
            f"{m['t_old'] + m['t_ref_tutor']:.1f}/{m['t_update']:.1f}s | {m['tok_per_s']:.0f} tok/s")


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
    if rank == 0 and os.path.exists(path):
        keep = [json.dumps(r) + "\n" for r in read_jsonl(path) if start and r.get("step", 0) <= start
                and not r.get("final")]
        with open(path + ".tmp", "w") as f:
            f.writelines(keep)
        os.replace(path + ".tmp", path)
    wb = None
    if args.wandb and rank == 0:
        try:
            import wandb
        except ImportError:
            sys.exit("train.py: --wandb needs the wandb package: pip install wandb")
        wb = wandb.init(project=args.wandb, config=vars(args), resume="allow")

    def emit(rec):
        if rank == 0:
            with open(path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            if wb:
                wb.log(rec, step=rec["step"])
    return emit

# -----------------------------------------------------------------------------
# main


def load_data(args, processor, rank):
    """Training and held-out examples, validated (file:line:field) and length-checked."""
    log = print0 if rank == 0 else (lambda *a: None)

    def load(path, n=0, spoiler_filter=True):
        ex = data.load_jsonl(path, args.strict, report=log, allow_outside_images=args.allow_outside_images,
                             spoiler_filter=spoiler_filter)
        return data.check_lengths(ex[:n] if n else ex, processor, args.max_prompt_tokens, args.strict, report=log)
    try:
        return (load(args.train_data, spoiler_filter=not args.no_spoiler_filter),   # held-out data never needs hints
                load(args.eval_data, args.eval_n) if args.eval_data else [])
    except data.DataError as e:
        sys.exit(f"train.py: {e}")


def start_run(argv):
    """Arguments, torchrun, the demo's paths (built on rank 0), the resume check, config.json."""
    args = get_args(argv)
    rank, world, device = setup(single_process_group=True)
    if args.minibatch_prompts % world:
        sys.exit(f"train.py: --minibatch_prompts {args.minibatch_prompts} is not a multiple of the {world} ranks")
    if args.threads:
        torch.set_num_threads(args.threads)
    if rank == 0:
        resolve_paths(args)
    box = [vars(args)]   # rank 0 may have built the demo; everyone uses its paths
    torch.distributed.broadcast_object_list(box, src=0)
    args = argparse.Namespace(**box[0])
    config = {**vars(args), "world_size": world}
    diff = checkpoint.config_changes(args.out_dir, config, RESUME_KEYS) if args.resume else ""
    if diff and not args.allow_config_change:
        sys.exit(f"train.py: --resume with settings that differ from the run's config.json: {diff} "
                 f"(--allow_config_change to resume anyway)")
    if not args.resume and checkpoint.clear(args.out_dir):
        print0(f"train.py: a new run in {args.out_dir}: the earlier run's checkpoints and metrics are replaced "
               f"(--resume continues a run instead)")
    torch.manual_seed(args.seed)
    os.makedirs(args.out_dir, exist_ok=True)
    print0("config:\n" + json.dumps(vars(args), indent=1))
    if rank == 0:
        with open(os.path.join(args.out_dir, "config.json"), "w") as f:
            json.dump(config, f, indent=1)
    return args, rank, world, device


COLLAPSE_STEPS = 3   # steps in a row with reward 0 and entropy ~0 before the loud warning


def collapse_check(m, count):
    """Count steps in a row where the policy has collapsed without a non-finite number (reward 0,
    entropy ~0: it emits one fixed wrong response). We warn and keep going rather than stop: the
    divergence stop is for numbers that broke, and the summary says what the export holds."""
    count = count + 1 if m["reward"] == 0 and m["entropy"] < 1e-3 else 0
    if count == COLLAPSE_STEPS:
        print0(f"WARNING: the policy has collapsed: reward 0 and entropy {m['entropy']:.1e} for {count} steps in a "
               f"row (every rollout is the same wrong response). It will not recover; lower --lr and rerun.")
    return count


def summary(args, first, last, n_eval, seconds, world, device, collapsed):
    n = args.eval_samples
    print0(f"\nheld-out, no hints: {n_eval} problems x {n} samples, T={args.temperature}, top_p={args.top_p}")
    print0(f"  {'':16s} {'before':>8s} {'after ' + str(args.steps) + ' steps':>16s}")
    for key in sorted(last, key=lambda k: (k.split('/')[0] != 'eval_pass1', k)):
        if key.startswith("eval_pass"):
            name = key.replace("eval_pass", "pass@").replace("/", " ")
            before = f"{first[key]:.3f}" if first and key in first else "-"
            print0(f"  {name:16s} {before:>8s} {last[key]:>16.3f}")
    print0(f"  training time: {seconds:.0f}s on {world} process(es), {device.type}")
    if not args.no_export:
        final = os.path.join(args.out_dir, "final")
        print0(f"  final model: {final}  (python eval.py --model {final} --data {args.eval_data} "
               f"--n_samples {n} --top_p {args.top_p} --max_new_tokens {args.max_new_tokens})")
        if collapsed >= COLLAPSE_STEPS:
            print0("  WARNING: that export is of a collapsed policy (reward 0, entropy ~0 at the end)")


def main(argv=None):
    args, rank, world, device = start_run(argv)
    policy, ref, processor = load_models(args, device)
    check_full_vocabulary_fits(args, policy, world)
    opt = torch.optim.AdamW(policy.parameters(), lr=args.lr, weight_decay=args.weight_decay, betas=(0.9, 0.999))
    train_ex, eval_ex = load_data(args, processor, rank)
    start = checkpoint.load(args.out_dir, policy, opt) if args.resume else 0
    if args.resume and start == 0:
        print0(f"--resume: no valid checkpoint in {os.path.join(args.out_dir, 'checkpoints')}; starting at step 0")
    # rollouts on CUDA: decode.py's fast loop over a bf16 copy of the (resumed) policy
    fast = None if device.type != "cuda" or args.plain_generate else \
        decode.FastSampler(policy, rollout.resolve_dtype(args.dtype, device))
    emit = open_metrics(args, rank, start)
    policy.eval()
    first = None
    if eval_ex and start == 0:
        first = evaluate(policy, processor, eval_ex, args, rank, world, fast=fast)
        emit({"step": 0, **first})
        print0(f"step    0 | {eval_text(first, args.eval_samples)} (no hints, {len(eval_ex)} problems)")
    t_start, bad, collapsed = time.time(), 0, 0
    for step in range(start, args.steps):
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, (step + 1) / max(1, args.warmup_steps))
        m = train_step(step, policy, ref, processor, opt, train_ex, args, rank, world, fast)
        m["lr"] = opt.param_groups[0]["lr"]
        bad = bad + 1 if m["skipped"] else 0
        if eval_ex and args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            m.update(evaluate(policy, processor, eval_ex, args, rank, world, fast=fast))
        emit(m)
        print0(log_line(m, args.divergence) + (f" | {eval_text(m, args.eval_samples)}" if "eval_pass1" in m else ""))
        collapsed = collapse_check(m, collapsed)
        if bad >= args.max_bad_steps:
            where = checkpoint.before_divergence(args.out_dir, read_jsonl(os.path.join(args.out_dir, "metrics.jsonl")),
                                                 args.ptd_coef) if rank == 0 else ""
            print0(f"train.py: stopped at step {step + 1}: {bad} steps in a row with a non-finite loss or "
                   f"gradient (diverged; try a lower --lr). Nothing exported. {where}")
            sys.exit(1)
        if bad == 0 and args.save_every and (step + 1) % args.save_every == 0 and step + 1 < args.steps:
            checkpoint.save(args.out_dir, step + 1, policy, opt, args.keep)   # never after a bad step
    last = evaluate(policy, processor, eval_ex, args, rank, world, fast=fast) if eval_ex else {}
    if last:
        emit({"step": args.steps, **last, "final": True})
    if args.steps > start and bad == 0:
        checkpoint.save(args.out_dir, args.steps, policy, opt, args.keep)
    if not args.no_export:
        checkpoint.export_hf(policy, processor, os.path.join(args.out_dir, "final"))
    if last:
        summary(args, first, last, len(eval_ex), time.time() - t_start, world, device, collapsed)
    torch.distributed.destroy_process_group()
    return last


if __name__ == "__main__":
    main()
