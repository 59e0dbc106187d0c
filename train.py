"""
train.py: PTD-PO (and plain GRPO) on FSDP2, one flat loop.

    python train.py                                   # the embedded demo on CPU (~2 min on 2 cores)
    torchrun --nproc_per_node=2 train.py              # the same on 2 CPU processes (gloo)
    torchrun --nproc_per_node=8 train.py --model Qwen/Qwen3-VL-2B-Thinking \\
        --train_data virl39k_hints.jsonl --eval_data mmk12_test.jsonl --lr 1e-6 --ptd_coef 0.05 \\
        --prompts_per_step 384 --minibatch_prompts 128 --max_new_tokens 4096 --grad_ckpt

One step: sample G rollouts per prompt -> rewards -> group advantages -> gate (PTD groups:
accuracy < tau; distilled rows: failed and hinted) -> old-policy scores with the student's
top-K ids -> reference log-probs (k3 KL) for rows outside PTD groups -> tutor log-probs on the
union support for distilled rows -> clipped-surrogate updates in mini-batches, plus
kl_coef * KL and ptd_coef * Top-K JSD -> log, evaluate, checkpoint.

Loss normalisation: every term is a sum over tokens divided by a global count (all response
tokens of the mini-batch for GRPO and KL; the distilled rows' tokens for JSD), so gradients
must be summed across ranks, not averaged: each rank's loss is multiplied by the world size.
Left out on purpose: vLLM rollouts, sequence packing, tensor/context parallelism, LoRA.
"""
import argparse
import json
import os
import random
import shutil
import sys
import time
import warnings

import torch
import torch.distributed as dist

import data
import loss
import reward
import rollout
import tutor

# -----------------------------------------------------------------------------
# config


def get_args(argv=None):
    p = argparse.ArgumentParser(description="PTD-PO / GRPO training for Qwen-VL models (FSDP2).")
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default="toy", help="hub id, local directory, or 'toy' (the embedded demo)")
    g.add_argument("--train_data", default=None, help="training JSONL (default: the demo's train split)")
    g.add_argument("--eval_data", default=None, help="held-out JSONL (default: the demo's eval split)")
    g.add_argument("--strict", action="store_true", help="stop at the first bad data record instead of skipping it")
    g.add_argument("--max_prompt_tokens", type=int, default=4096, help="longer prompts are reported and skipped")
    g.add_argument("--trust_remote_code", action="store_true", help="allow model code from the hub (off by default)")
    g = p.add_argument_group("algorithm")
    g.add_argument("--algo", default="ptdpo", choices=["ptdpo", "grpo"], help="ptdpo adds the tutor's Top-K JSD")
    g.add_argument("--group_size", type=int, default=8, help="G: rollouts per prompt")
    g.add_argument("--kl_coef", type=float, default=0.01, help="k3 KL to the frozen reference (0 disables the pass)")
    g.add_argument("--ptd_coef", type=float, default=2.0,
                   help="lambda: weight of the distillation term (paper: 0.05 for 2B/8B, 0.5 for 4B)")
    g.add_argument("--tau", type=float, default=1.0, help="a group with accuracy < tau is a PTD group")
    g.add_argument("--topk", type=int, default=100, help="K of the Top-K JSD support (-1: full vocabulary)")
    g.add_argument("--distill_all", action="store_true", help="distil every rollout of a PTD group, not only failed ones")
    g.add_argument("--divergence", default="jsd", choices=["jsd", "fkl", "rkl"], help="distillation divergence")
    g.add_argument("--tutor_context", default="hint", choices=["hint", "answer"],
                   help="what the tutor reads: the hint, or the gold answer (leaky baseline)")
    g.add_argument("--clip_low", type=float, default=0.2, help="PPO clip below 1")
    g.add_argument("--clip_high", type=float, default=0.3, help="PPO clip above 1 (clip higher)")
    g.add_argument("--dual_clip", type=float, default=3.0, help="dual clip for negative advantages")
    g.add_argument("--no_std_norm", action="store_true", help="Dr. GRPO: do not divide advantages by the group std")
    g = p.add_argument_group("sampling")
    g.add_argument("--temperature", type=float, default=1.0, help="rollout temperature")
    g.add_argument("--top_p", type=float, default=0.99, help="rollout nucleus")
    g.add_argument("--max_new_tokens", type=int, default=32, help="response length cap")
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, default=60, help="training steps (one rollout batch each)")
    g.add_argument("--prompts_per_step", type=int, default=16, help="prompts per step, all ranks together")
    g.add_argument("--minibatch_prompts", type=int, default=8, help="prompts per optimiser step, all ranks together")
    g.add_argument("--lr", type=float, default=5e-4, help="AdamW learning rate (demo: 5e-4; real models: 1e-6)")
    g.add_argument("--warmup_steps", type=int, default=10,
                   help="linear warm-up, then constant (Adam's first steps move every weight by ~lr)")
    g.add_argument("--weight_decay", type=float, default=0.01, help="AdamW weight decay")
    g.add_argument("--grad_clip", type=float, default=1.0, help="gradient-norm clip")
    g = p.add_argument_group("system")
    g.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU) | float32 | bfloat16")
    g.add_argument("--grad_ckpt", action="store_true", help="activation checkpointing in the decoder")
    g.add_argument("--token_budget", type=int, default=16384, help="padded tokens per micro-batch")
    g.add_argument("--chunk_size", type=int, default=256, help="positions per lm_head chunk")
    g.add_argument("--seed", type=int, default=0, help="seed for data order and sampling")
    g.add_argument("--threads", type=int, default=0, help="torch CPU threads per process (0: default)")
    g = p.add_argument_group("logging, evaluation, checkpoints")
    g.add_argument("--out_dir", default="runs/demo", help="run directory: config, metrics.jsonl, checkpoints")
    g.add_argument("--eval_every", type=int, default=20, help="held-out evaluation interval in steps (0: start/end)")
    g.add_argument("--eval_n", type=int, default=200, help="held-out problems per evaluation (0: all)")
    g.add_argument("--eval_samples", type=int, default=2, help="samples per held-out problem (pass@1 = mean)")
    g.add_argument("--save_every", type=int, default=20, help="checkpoint interval in steps (0: only at the end)")
    g.add_argument("--keep", type=int, default=2, help="checkpoints kept")
    g.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in out_dir")
    g.add_argument("--no_export", action="store_true", help="skip the final Hugging Face export")
    g.add_argument("--wandb", default="", help="wandb project name (optional; needs `pip install wandb`)")
    return p.parse_args(argv)

# -----------------------------------------------------------------------------
# distributed


def setup_distributed():
    """torchrun's environment -> (rank, world, device); plain `python` gives (0, 1, cpu/cuda:0)."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None)
    return rank, world, device


def print0(*a, **k):
    if int(os.environ.get("RANK", 0)) == 0:
        print(*a, **k, flush=True)


def all_max(t):
    if dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def all_sum(t):
    """Sum a tensor over ranks (a no-op in one process)."""
    if dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t)
    return t


def shard(model, device, dtype):
    """FSDP2 as torchtitan applies it: the vision tower as one unit, each decoder layer, then the
    root. bf16 parameters with fp32 gradient reduction on CUDA. FSDP averages gradients over
    ranks; our losses are already divided by global token counts, so update() multiplies them
    by the world size to turn that average into the sum the normalisation needs."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method
    if not dist.is_initialized():
        return model
    mp = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32) if device.type == "cuda" else None
    kw = {"mp_policy": mp} if mp else {}
    inner = model.model
    fully_shard(inner.visual, **kw)
    for layer in inner.language_model.layers:
        fully_shard(layer, **kw)
    fully_shard(model, **kw)
    register_fsdp_forward_method(model, "ptd_score")
    return model

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


def prompt_length(processor, ex):
    """Prompt tokens of an example without decoding pixels: text tokens + image tokens."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize
    ip = processor.image_processor
    factor = ip.patch_size * ip.merge_size
    n = len(processor.tokenizer(rollout.prompt_text(processor, ex["question"]))["input_ids"])
    for w, h in ex.get("image_sizes", [ex["image_size"]] * len(ex["images"])):
        rh, rw = smart_resize(h, w, factor, ip.size["shortest_edge"], ip.size["longest_edge"])
        n += (rh // factor) * (rw // factor) - 1
    return n


def check_lengths(examples, processor, limit, strict):
    """Prompts over the limit are reported and dropped, never truncated (that would cut image tokens)."""
    keep = []
    for ex in examples:
        n = prompt_length(processor, ex)
        if n > limit:
            msg = f"data: {ex['where']}: field 'question': prompt is {n} tokens, over --max_prompt_tokens {limit}"
            if strict:
                raise data.DataError(msg)
            print0(msg + "; skipped")
            continue
        keep.append(ex)
    return keep


def step_examples(examples, step, n, seed):
    """The n prompts of a step: a seeded shuffle per epoch, so position = step * n resumes exactly."""
    order, start = [], step * n
    epoch = start // len(examples)
    while len(order) < (start % len(examples)) + n:
        idx = list(range(len(examples)))
        random.Random(seed * 1_000_003 + epoch).shuffle(idx)
        order += idx
        epoch += 1
    first = start % len(examples)
    return [examples[i] for i in order[first:first + n]]

# -----------------------------------------------------------------------------
# checkpoints


def save_checkpoint(out_dir, step, model, opt, keep):
    """torch.distributed.checkpoint into step_N.tmp, then rename and point `latest` at it: a kill
    at any moment leaves the previous checkpoint intact."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict
    ck = os.path.join(out_dir, "checkpoints")
    final, tmp = os.path.join(ck, f"step_{step:06d}"), os.path.join(ck, f"step_{step:06d}.tmp")
    if int(os.environ.get("RANK", 0)) == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp, exist_ok=True)
    barrier()
    msd, osd = get_state_dict(model, opt)
    with warnings.catch_warnings():  # one process without a process group is a supported case
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=tmp)
    torch.save({"step": step, "rng": torch.get_rng_state()}, os.path.join(tmp, f"extra_rank{os.environ.get('RANK', 0)}.pt"))
    barrier()
    if int(os.environ.get("RANK", 0)) == 0:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        with open(os.path.join(ck, "latest.tmp"), "w") as f:
            f.write(os.path.basename(final))
        os.replace(os.path.join(ck, "latest.tmp"), os.path.join(ck, "latest"))
        old = sorted(d for d in os.listdir(ck) if d.startswith("step_") and not d.endswith(".tmp"))
        for d in old[:-keep]:
            shutil.rmtree(os.path.join(ck, d), ignore_errors=True)
    barrier()


def check_checkpoint_metadata(path):
    """DCP stores its .metadata with pickle. Before dcp.load reads it, check that it names only
    DCP's own metadata classes, torch dtypes/layouts/sizes and paths: a tampered checkpoint
    cannot run code on load. (DCP reads the tensors themselves with weights_only=True.)"""
    import pickle

    class Strict(pickle.Unpickler):
        def find_class(self, module, name):
            ok = (module.startswith("torch.distributed.checkpoint.")
                  or (module == "torch" and (name == "Size" or isinstance(
                      getattr(torch, name, None), (torch.dtype, torch.layout, torch.memory_format))))
                  or (module == "torch.serialization" and name == "_get_layout")
                  or (module == "pathlib" and name in ("PosixPath", "PurePosixPath", "WindowsPath"))
                  or (module == "collections" and name == "OrderedDict")
                  or (module == "builtins" and name in ("set", "frozenset", "slice", "complex")))
            if not ok:
                raise pickle.UnpicklingError(f"{path}: checkpoint metadata names {module}.{name}; refusing to load")
            return super().find_class(module, name)

    with open(os.path.join(path, ".metadata"), "rb") as f:
        Strict(f).load()


def load_checkpoint(out_dir, model, opt):
    """Restore model, optimiser and RNG from `latest`; returns the step to continue from (0: none)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    latest = os.path.join(out_dir, "checkpoints", "latest")
    if not os.path.exists(latest):
        return 0
    path = os.path.join(out_dir, "checkpoints", open(latest).read().strip())
    check_checkpoint_metadata(path)
    msd, osd = get_state_dict(model, opt)
    state = {"model": msd, "optim": osd}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(state, checkpoint_id=path)
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    extra = torch.load(os.path.join(path, f"extra_rank{os.environ.get('RANK', 0)}.pt"), weights_only=True)
    torch.set_rng_state(extra["rng"])
    print0(f"resumed from {path} at step {extra['step']}")
    return extra["step"]


def export_hf(model, processor, out):
    """Full weights gathered to rank 0 and written with save_pretrained (safetensors + processor)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if int(os.environ.get("RANK", 0)) == 0:
        model.save_pretrained(out, state_dict=sd)
        rollout.save_processor(processor, out)
    barrier()


def barrier():
    if dist.is_initialized():
        dist.barrier()

# -----------------------------------------------------------------------------
# evaluation (held out, no hints)


@torch.no_grad()
def evaluate(model, processor, examples, args, rank, world, seed=1234):
    """Held-out pass@1 (mean over samples) and mean entropy, no hints, split across ranks."""
    idx = list(range(rank, len(examples), world))
    mine = [examples[i] for i in idx]
    prompts = [rollout.encode(processor, ex["question"], data.open_images(ex)) for ex in mine]
    ids, mask = rollout.sample(model, processor, prompts, args.eval_samples, args.max_new_tokens, args.temperature,
                               args.top_p, args.token_budget, seed=seed, prompt_ids=idx)
    texts = processor.tokenizer.batch_decode([r[m] for r, m in zip(ids, mask)], skip_special_tokens=True)
    hits = sum(reward.reward(t, mine[i // args.eval_samples]) for i, t in enumerate(texts))
    tot = all_sum(torch.tensor([hits, float(len(texts)), float(mask.sum())], dtype=torch.float64))
    return {"eval_pass1": (tot[0] / tot[1].clamp(min=1)).item(), "eval_len": (tot[2] / tot[1].clamp(min=1)).item()}

# -----------------------------------------------------------------------------
# one training step


def update(policy, opt, prompts, ids, mask, old, adv, ref, distil, teach, args, world):
    """Clipped-surrogate updates over the step's mini-batches; returns summed metrics.

    Normalisers are global counts (all ranks): n_tok response tokens of the mini-batch (GRPO and
    KL), n_jsd response tokens of its distilled rows (JSD). A mini-batch whose loss or gradient
    norm is not finite is skipped on every rank, never applied."""
    G, n_rows = args.group_size, len(prompts)
    rows_per_mb = max(G, args.minibatch_prompts * G // world)
    div = loss.DIVERGENCES[args.divergence]
    stats = dict.fromkeys(("pg_loss", "kl", "kl_tokens", "jsd", "jsd_tokens", "clip_frac_low", "clip_frac_high",
                           "clip_frac_dual", "tokens", "grad_norm", "skipped", "minibatches"), 0.0)
    for start in range(0, n_rows, rows_per_mb):
        rows = list(range(start, min(n_rows, start + rows_per_mb)))
        n_tok = max(1.0, all_sum(mask[rows].sum().double()).item())
        n_jsd = all_sum((mask[rows] & distil[rows].unsqueeze(1)).sum().double()).item()
        lens = [len(prompts[i]["input_ids"]) + ids.shape[1] for i in rows]
        plan = [([rows[j] for j in mb], 1.0) for mb in rollout.micro_batches(lens, args.token_budget)]
        # every rank must run as many backward passes as the busiest one (FSDP collectives):
        # the others add weight-0 passes over one row
        n_mb = int(all_max(torch.tensor(len(plan))))
        plan += [([rows[0]], 0.0)] * (n_mb - len(plan))
        opt.zero_grad(set_to_none=True)
        finite = True
        for mb, weight in plan:
            dev = next(policy.parameters()).device
            m = mask[mb].to(dev)
            sup = teach["support_ids"][mb] if teach is not None else None
            out = rollout.score(policy, [prompts[i] for i in mb], ids[mb], mask[mb], support=sup,
                                temperature=args.temperature, token_budget=10 ** 12,
                                chunk_size=args.chunk_size, grad=True)
            pg, met = loss.policy_loss(out["logp"], old[mb].to(dev), adv[mb].to(dev), m, n_tok,
                                       args.clip_low, args.clip_high, args.dual_clip)
            total, parts = pg, {"pg_loss": pg.item(), "tokens": m.sum().item()}
            if ref is not None:   # k3 KL on rows outside PTD groups: there the tutor is the anchor
                km = m & ref["rows"][mb].to(dev).unsqueeze(1)
                kl = (loss.k3_kl(out["logp"], ref["logp"][mb].to(dev)) * km).sum()
                total = total + args.kl_coef * kl / n_tok
                parts.update(kl=kl.item(), kl_tokens=km.sum().item())
            if teach is not None and n_jsd > 0:   # token mean over the distilled rows, no advantage
                dm = m & distil[mb].to(dev).unsqueeze(1)
                smask = teach["support_mask"][mb].to(dev) & dm.unsqueeze(-1)
                d = div(out["support_logp"], teach["tutor_logp"][mb].to(dev), smask)        # (b, R)
                jsd = (d * dm).sum()
                total = total + args.ptd_coef * jsd / n_jsd
                parts.update(jsd=jsd.item(), jsd_tokens=dm.sum().item())
            finite &= bool(torch.isfinite(total))
            (total * (weight * world)).backward()     # FSDP averages over ranks: undo it
            if weight:
                for k, v in parts.items():
                    stats[k] += v
                for k in ("clip_frac_low", "clip_frac_high", "clip_frac_dual"):
                    stats[k] += met[k].item() * parts["tokens"]
        gn = torch.nn.utils.clip_grad_norm_(policy.parameters(), args.grad_clip)
        gn = gn.full_tensor() if hasattr(gn, "full_tensor") else gn
        bad = all_sum(torch.tensor(0.0 if finite else 1.0)).item() > 0 or not torch.isfinite(gn)
        stats["minibatches"] += 1
        if bad:
            opt.zero_grad(set_to_none=True)
            stats["skipped"] += 1
            print0(f"  non-finite loss or gradient norm ({gn.item()}): optimiser step skipped")
            continue
        opt.step()
        stats["grad_norm"] += gn.item()
    return stats


def train_step(step, policy, ref, processor, opt, examples, args, rank, world):
    """One PTD-PO step on this rank's share of the prompts. Returns the step's metrics."""
    G = args.group_size
    # global mini-batch j = prompts [j*mb, (j+1)*mb), split evenly across ranks, so every
    # optimiser step sees the same prompts whatever the number of ranks
    mb, per = args.minibatch_prompts, args.minibatch_prompts // world
    mine = [j * mb + rank * per + i for j in range(args.prompts_per_step // mb) for i in range(per)]
    step_all = step_examples(examples, step, args.prompts_per_step, args.seed)
    exs = [step_all[i] for i in mine]
    prompts = [rollout.encode(processor, ex["question"], data.open_images(ex)) for ex in exs]
    rows = torch.arange(len(exs)).repeat_interleave(G)                         # (N,) example of each row
    t0 = time.time()
    # 1. rollouts (no grad, shards gathered once)
    ids, mask = rollout.sample(policy, processor, prompts, G, args.max_new_tokens, args.temperature, args.top_p,
                               args.token_budget, seed=args.seed * 100_003 + step, prompt_ids=mine)
    texts = processor.tokenizer.batch_decode([r[m] for r, m in zip(ids, mask)], skip_special_tokens=True)
    # 2. rewards: correctness only; the format reward is logged, never gated on
    rewards = torch.tensor([reward.reward(t, exs[i]) for t, i in zip(texts, rows.tolist())])
    # a response cut at max_new_tokens is not a finished answer: reward 0 (else the policy learns
    # to ramble on after </answer>, which costs nothing under a correctness-only reward)
    truncated = ~(ids == processor.tokenizer.convert_tokens_to_ids("<|im_end|>")).any(1)
    rewards = torch.where(truncated, torch.zeros_like(rewards), rewards)
    fmt = torch.tensor([reward.format_reward(t) for t in texts])
    # 3. advantages (no value network: the group mean is the baseline)
    adv = loss.group_advantages(rewards, G, scale_by_std=not args.no_std_norm)
    # 4. gate: PTD groups have accuracy < tau; distilled rows are their failed (or all) rows
    ptd_group = (rewards.view(-1, G).mean(1) < args.tau).repeat_interleave(G) & (args.algo == "ptdpo")
    distil = ptd_group & ((rewards == 0) | args.distill_all)
    row_prompts = [prompts[i] for i in rows.tolist()]
    t1 = time.time()
    # 5. old-policy log-probs, entropy and the student's top-K ids
    topk = args.topk if args.topk > 0 else len(processor.tokenizer)
    with rollout.gathered(policy):
        old = rollout.score(policy, row_prompts, ids, mask, topk=topk if distil.any() else 0,
                            temperature=args.temperature, token_budget=args.token_budget, chunk_size=args.chunk_size)
    # 6. reference log-probs for the k3 KL, rows outside PTD groups
    ref_out, kl_rows = None, ~ptd_group
    t2 = time.time()
    if args.kl_coef > 0:
        sel = kl_rows.nonzero().squeeze(-1)
        ref_logp = torch.zeros_like(old["logp"])
        with rollout.gathered(ref):
            if len(sel):
                ref_logp[sel] = rollout.score(ref, [row_prompts[i] for i in sel.tolist()], ids[sel], mask[sel],
                                              temperature=args.temperature, token_budget=args.token_budget,
                                              chunk_size=args.chunk_size)["logp"]
        ref_out = {"logp": ref_logp, "rows": kl_rows}
    # 7. the tutor: the same frozen model with the hint, on the distilled rows' responses
    teach = None
    if args.algo == "ptdpo":
        sel = distil.nonzero().squeeze(-1)
        R, K = ids.shape[1], old["topk_ids"].shape[-1] if old["topk_ids"] is not None else topk
        teach = {"support_ids": torch.zeros((len(ids), R, K + topk), dtype=torch.long),
                 "support_mask": torch.zeros((len(ids), R, K + topk), dtype=torch.bool),
                 "tutor_logp": torch.zeros((len(ids), R, K + topk), dtype=torch.float32)}
        with rollout.gathered(ref):
            if len(sel):
                t = tutor.teach(ref, processor, exs, rows[sel], ids[sel], mask[sel], old["topk_ids"][sel].cpu(), topk,
                                args.tutor_context, args.temperature, args.token_budget,
                                args.chunk_size)
                for k in ("support_ids", "support_mask", "tutor_logp"):
                    teach[k][sel] = t[k]
                distil[sel] &= t["taught"]               # no hint: no distillation for that row
    t3 = time.time()
    # 8. the update
    policy.train()
    stats = update(policy, opt, row_prompts, ids, mask, old["logp"].cpu(), adv, ref_out, distil, teach, args, world)
    policy.eval()
    t4 = time.time()
    # 9. metrics, summed over ranks
    m = mask.float()
    local = {"reward": rewards.sum(), "format": fmt.sum(), "rows": float(len(ids)), "len": m.sum(),
             "entropy": (old["entropy"].cpu() * m).sum(), "distilled": distil.float().sum(),
             "ptd_groups": ptd_group.float().sum() / G, "groups": float(len(exs)), "truncated": truncated.float().sum(),
             "mixed_groups": ((rewards.view(-1, G).std(1) > 0).float().sum()), **stats}
    keys = sorted(local)
    tot = dict(zip(keys, all_sum(torch.tensor([float(local[k]) for k in keys], dtype=torch.float64)).tolist()))
    gen_tokens = tot["len"]
    return {"step": step + 1, "reward": tot["reward"] / tot["rows"], "format": tot["format"] / tot["rows"],
            "entropy": tot["entropy"] / max(tot["len"], 1), "kl": tot["kl"] / max(tot["kl_tokens"], 1),
            "jsd": tot["jsd"] / max(tot["jsd_tokens"], 1), "distilled_frac": tot["distilled"] / tot["rows"],
            "ptd_group_frac": tot["ptd_groups"] / tot["groups"], "mixed_group_frac": tot["mixed_groups"] / tot["groups"],
            "clip_frac_low": tot["clip_frac_low"] / max(tot["tokens"], 1),
            "clip_frac_high": tot["clip_frac_high"] / max(tot["tokens"], 1),
            "clip_frac_dual": tot["clip_frac_dual"] / max(tot["tokens"], 1),
            "grad_norm": tot["grad_norm"] / max(tot["minibatches"] - tot["skipped"], 1) / world,
            "skipped": tot["skipped"] / world, "resp_len": tot["len"] / tot["rows"],
            "truncated_frac": tot["truncated"] / tot["rows"],
            "t_rollout": t1 - t0, "t_old": t2 - t1, "t_ref_tutor": t3 - t2, "t_update": t4 - t3,
            "tok_per_s": gen_tokens / max(t4 - t0, 1e-9)}


def log_line(m):
    return (f"step {m['step']:4d} | reward {m['reward']:.3f} | entropy {m['entropy']:.3f} | kl {m['kl']:.4f} | "
            f"jsd {m['jsd']:.4f} | distilled {m['distilled_frac']:.2f} | clip {m['clip_frac_low']:.3f}/"
            f"{m['clip_frac_high']:.3f} | len {m['resp_len']:.1f} | time {m['t_rollout']:.1f}/"
            f"{m['t_old'] + m['t_ref_tutor']:.1f}/{m['t_update']:.1f}s | {m['tok_per_s']:.0f} tok/s")


def main(argv=None):
    args = get_args(argv)
    rank, world, device = setup_distributed()
    if args.threads:
        torch.set_num_threads(args.threads)
    if rank == 0:
        resolve_paths(args)
    if dist.is_initialized():  # rank 0 may have built the demo; everyone uses its paths
        box = [vars(args)]
        dist.broadcast_object_list(box, src=0)
        args = argparse.Namespace(**box[0])
    if args.minibatch_prompts % world or args.prompts_per_step % args.minibatch_prompts:
        sys.exit(f"train.py: --minibatch_prompts must be a multiple of the {world} ranks and divide --prompts_per_step")
    torch.manual_seed(args.seed)
    os.makedirs(args.out_dir, exist_ok=True)
    print0("config:\n" + json.dumps(vars(args), indent=1))
    if rank == 0:
        with open(os.path.join(args.out_dir, "config.json"), "w") as f:
            json.dump({**vars(args), "world_size": world}, f, indent=1)
    # models: the policy and the frozen reference (also the tutor), both sharded
    policy, processor = rollout.load_model(args.model, args.dtype, str(device), args.trust_remote_code)
    ref, _ = rollout.load_model(args.model, args.dtype, str(device), args.trust_remote_code)
    ref.requires_grad_(False)
    if args.grad_ckpt:
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    dtype = rollout.resolve_dtype(args.dtype, device)
    policy, ref = shard(policy, device, dtype), shard(ref, device, dtype)
    opt = torch.optim.AdamW(policy.parameters(), lr=args.lr, weight_decay=args.weight_decay, betas=(0.9, 0.999))
    # data: validated at start, problems named by file, line and field
    log = print0 if rank == 0 else (lambda *a: None)
    train_ex = check_lengths(data.load_jsonl(args.train_data, args.strict, report=log), processor,
                             args.max_prompt_tokens, args.strict)
    eval_ex = data.load_jsonl(args.eval_data, args.strict, report=log) if args.eval_data else []
    eval_ex = eval_ex[:args.eval_n] if args.eval_n else eval_ex
    if dist.is_initialized():
        # FSDP2 initialises lazily in the root's first forward; generate() must not come first
        p0 = rollout.encode(processor, train_ex[0]["question"], data.open_images(train_ex[0]))
        one = torch.ones(1, 1, dtype=torch.long)
        for m in (policy, ref):
            with torch.no_grad():
                rollout.score(m, [p0], one, one.bool())
    start = load_checkpoint(args.out_dir, policy, opt) if args.resume else 0
    wb = None
    if args.wandb and rank == 0:
        try:
            import wandb
        except ImportError:
            sys.exit("train.py: --wandb needs the wandb package: pip install wandb")
        wb = wandb.init(project=args.wandb, config=vars(args), resume="allow")
    metrics_path = os.path.join(args.out_dir, "metrics.jsonl")
    if rank == 0 and not args.resume and os.path.exists(metrics_path):
        os.remove(metrics_path)

    def emit(rec):
        if rank == 0:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            if wb:
                wb.log(rec, step=rec["step"])

    policy.eval()
    first = None
    if eval_ex and start == 0:
        first = evaluate(policy, processor, eval_ex, args, rank, world)
        emit({"step": 0, **first})
        print0(f"step    0 | held-out pass@1 {first['eval_pass1']:.3f} (no hints, {len(eval_ex)} problems)")
    t_start = time.time()
    for step in range(start, args.steps):
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, (step + 1) / max(1, args.warmup_steps))
        m = train_step(step, policy, ref, processor, opt, train_ex, args, rank, world)
        m["lr"] = opt.param_groups[0]["lr"]
        if eval_ex and args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            m.update(evaluate(policy, processor, eval_ex, args, rank, world))
        emit(m)
        print0(log_line(m) + (f" | held-out pass@1 {m['eval_pass1']:.3f}" if "eval_pass1" in m else ""))
        if args.save_every and (step + 1) % args.save_every == 0 and step + 1 < args.steps:
            save_checkpoint(args.out_dir, step + 1, policy, opt, args.keep)
    last = evaluate(policy, processor, eval_ex, args, rank, world) if eval_ex else {}
    if last:
        emit({"step": args.steps, **last, "final": True})
    if args.steps > start:
        save_checkpoint(args.out_dir, args.steps, policy, opt, args.keep)
    if not args.no_export:
        export_hf(policy, processor, os.path.join(args.out_dir, "final"))
    if rank == 0 and last:
        before = f"{first['eval_pass1']:.3f}" if first else "(resumed)"
        print0(f"\nheld-out pass@1 (no hints, {len(eval_ex)} problems x {args.eval_samples} samples, T={args.temperature})")
        print0(f"  before training: {before}\n  after {args.steps} steps: {last['eval_pass1']:.3f}"
               f"\n  training time: {time.time() - t_start:.0f}s on {world} process(es), {device.type}")
        if not args.no_export:
            print0(f"  final model: {os.path.join(args.out_dir, 'final')} (python eval.py --model that)")
    if dist.is_initialized():
        dist.destroy_process_group()
    return last


if __name__ == "__main__":
    main()
