"""
config.py: the flags, the presets and a run's set-up, shared by train.py, eval.py and make_hints.py.

    args = get_args(argv)                       # train.py's flags, the preset filled in
    args, rank, world, device = start_run(argv) # + torchrun, the demo's paths, the resume check, config.json
    train_ex, eval_ex = load_data(args, processor, rank)

A flag that more than one entry point takes is defined once, in FLAGS; each entry point adds it with
add_flags (an entry point may change its default, e.g. eval.py's --seed). PAPER and DEMO are the
defaults that depend on the model; a flag given on the command line always wins.
Left out on purpose: config files and overrides (argparse is the whole config; the run logs it).
"""
import argparse
import json
import math
import os
import sys

import torch

import checkpoint
import data
from distributed import print0, setup

# changing one of these between a checkpoint and --resume changes the data order or the algorithm
RESUME_KEYS = ("world_size", "model", "train_data", "algo", "group_size", "prompts_per_step", "minibatch_prompts",
               "seed", "tau", "topk", "distill_all", "divergence", "tutor_context", "kl_coef", "ptd_coef", "temperature",
               "top_p", "max_new_tokens", "no_std_norm", "clip_low", "clip_high", "dual_clip", "hint_style",
               "no_spoiler_filter")

# Defaults that depend on the model. A real model gets the paper's settings (Qwen3-VL-2B/8B:
# lambda 0.05, lr 1e-6 constant, 384 prompts per step in mini-batches of 128, 4,096 new tokens,
# ~2 epochs of ViRL39K); the embedded demo (--model toy, a 1M-parameter model on a 96 px task)
# gets its own: the paper's JSD at lambda 128 with 10 warm-up steps, chosen on a development seed
# and split among lambda 32 / 64 / 128 and warm-up 10 / 30 (docs/RESULTS.md; lambda is large
# because the tiny model's lr is 500x the paper's and the JSD's pull on a logit scales with the
# student's own probability there, ~0.0005 on the pivot bucket at the start). A flag given on the
# command line always wins.
PAPER = {"ptd_coef": 0.05, "lr": 1e-6, "warmup_steps": 0, "max_new_tokens": 4096, "prompts_per_step": 384,
         "minibatch_prompts": 128, "steps": 200, "eval_samples": 1, "divergence": "jsd", "eval_blank": 0}
DEMO = {"ptd_coef": 128.0, "lr": 5e-4, "warmup_steps": 10, "max_new_tokens": 32, "prompts_per_step": 16,
        "minibatch_prompts": 8, "steps": 80, "eval_samples": 8, "divergence": "jsd", "eval_blank": 1}

DEMO_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "toy", "model")

# -----------------------------------------------------------------------------
# argument ranges and the shared flags


def ranged(kind, lo=None, hi=None, open_lo=False):
    """An argparse type that also checks a range, so a bad value is one line naming the flag."""
    def parse(text):
        v = kind(text)
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"{text} is not a finite number")
        if (lo is not None and (v <= lo if open_lo else v < lo)) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"{text} is outside {'(' if open_lo else '['}{lo}, {hi or 'inf'}]")
        return v
    parse.__name__ = kind.__name__
    return parse


POS, NONNEG, PROB = ranged(int, 1), ranged(int, 0), ranged(float, 0, 1, open_lo=True)

FLAGS = {
    "--max_prompt_tokens": dict(type=POS, default=4096, help="longer prompts are reported and skipped"),
    "--trust_remote_code": dict(action="store_true", help="allow model code from the hub (off by default)"),
    "--allow_outside_images": dict(action="store_true",
                                   help="allow absolute or ../ image paths (default: only inside the data file's "
                                        "folder)"),
    "--no_spoiler_filter": dict(action="store_true",
                                help="keep hints that leak the answer (the paper's ablation of the zero-spoiler "
                                     "filter; make hints with make_hints.py --no_spoiler_filter, train on them with "
                                     "train.py --no_spoiler_filter)"),
    "--top_p": dict(type=PROB, default=0.99, help="nucleus (0.99 everywhere: one pass@1 definition)"),
    "--kv_cache_gb": dict(type=ranged(float, 0, open_lo=True), default=32.0,
                          help="KV-cache memory per generate() call; it sets the rows per call (docs/ENGINEERING.md)"),
    "--token_budget": dict(type=POS, default=16384, help="padded tokens per scoring micro-batch"),
    "--dtype": dict(default="auto", choices=["auto", "float32", "bfloat16"],
                    help="compute dtype: auto (bf16 on CUDA, fp32 on CPU)"),
    "--plain_generate": dict(action="store_true",
                             help="sample with HF generate() on CUDA too (the reference path; default: decode.py's)"),
    "--no_compile": dict(action="store_true", help="decode.py's steps without torch.compile (bisecting a GPU run)"),
    "--no_cuda_graphs": dict(action="store_true",
                             help="decode.py's steps run eagerly, no CUDA graphs captured (bisecting a GPU run)"),
    "--seed": dict(type=NONNEG, default=0, help="seed for data order and sampling"),
    "--threads": dict(type=NONNEG, default=0, help="torch CPU threads per process (0: default)"),
}


def add_flags(group, *names, **defaults):
    """Add shared flags from FLAGS to a parser or group; defaults={dest: value} changes a default."""
    for name in names:
        spec = dict(FLAGS[name])
        if name[2:] in defaults:
            spec["default"] = defaults[name[2:]]
        group.add_argument(name, **spec)

# -----------------------------------------------------------------------------
# train.py's flags


def _model_and_data(p):
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default="toy", help="hub id, local directory, or 'toy' (the embedded demo)")
    g.add_argument("--train_data", default=None, help="training JSONL (default: the demo's train split)")
    g.add_argument("--eval_data", default=None, help="held-out JSONL (default: the demo's eval split)")
    g.add_argument("--strict", action="store_true",
                   help="stop at the first bad data record instead of skipping it")
    add_flags(g, "--max_prompt_tokens", "--trust_remote_code", "--allow_outside_images")


def _algorithm(p):
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
                        "KL (default: jsd, the paper's and the demo's)")
    g.add_argument("--tutor_context", default="hint", choices=["hint", "answer", "none", "unanswer"],
                   help="what the tutor reads: the hint; the gold answer (leaky baseline); none (a control: the "
                        "frozen model on the student's own prompt, same gate and rows); unanswer (a control: the "
                        "same, with the rollout's own unsure tokens removed and the rest renormalised)")
    g.add_argument("--hint_style", default="structured", choices=["structured", "text"],
                   help="how the tutor reads a hint: regions with boxes and numbered steps, or the same hint as "
                        "one paragraph of prose (the paper's structured vs unstructured ablation)")
    add_flags(g, "--no_spoiler_filter")
    g.add_argument("--clip_low", type=ranged(float, 0, 0.999), default=0.2, help="PPO clip below 1")
    g.add_argument("--clip_high", type=ranged(float, 0), default=0.3, help="PPO clip above 1 (clip higher)")
    g.add_argument("--dual_clip", type=ranged(float, 1, open_lo=True), default=3.0, help="dual clip, A < 0")
    g.add_argument("--no_std_norm", action="store_true",
                   help="Dr. GRPO: do not divide advantages by the group std")


def _sampling_and_optimisation(p):
    g = p.add_argument_group("sampling")
    g.add_argument("--temperature", type=ranged(float, 0, open_lo=True), default=1.0,
                   help="rollout temperature")
    add_flags(g, "--top_p")
    g.add_argument("--max_new_tokens", type=POS, default=None, help="response length cap (default 4096; demo 32)")
    add_flags(g, "--kv_cache_gb", "--plain_generate", "--no_compile", "--no_cuda_graphs")
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


def _system_and_logging(p):
    g = p.add_argument_group("system")
    add_flags(g, "--dtype")
    g.add_argument("--grad_ckpt", action="store_true", help="activation checkpointing in the decoder")
    add_flags(g, "--token_budget")
    g.add_argument("--chunk_size", type=POS, default=256, help="positions per lm_head chunk")
    add_flags(g, "--seed", "--threads")
    g = p.add_argument_group("logging, evaluation, checkpoints")
    g.add_argument("--out_dir", default=None,
                   help="run directory: config, metrics.jsonl, checkpoints (default runs/demo; with --resume PATH, "
                        "PATH's run)")
    g.add_argument("--eval_every", type=NONNEG, default=20,
                   help="held-out evaluation interval (0: start/end)")
    g.add_argument("--eval_n", type=NONNEG, default=200, help="held-out problems per evaluation (0: all)")
    g.add_argument("--eval_samples", type=POS, default=None,
                   help="samples per held-out problem: pass@1 = their mean, pass@n = any right (default 1; demo 8)")
    g.add_argument("--eval_blank", type=int, choices=[0, 1], default=None,
                   help="1: at the start and the end, also score the held-out prompts on white images of the same "
                        "sizes, the chance line printed beside each pass@1 (default 0; demo 1)")
    g.add_argument("--save_every", type=NONNEG, default=20,
                   help="checkpoint interval in steps (0: only at the end)")
    g.add_argument("--keep", type=POS, default=2,
                   help="checkpoints kept (the newest is never deleted, nor the newest known good: the steps after it "
                        "stayed in the usual range the divergence stop uses)")
    g.add_argument("--resume", nargs="?", const=True, default=False, metavar="PATH",
                   help="continue from the newest valid checkpoint in out_dir; with PATH, from that checkpoint "
                        "folder (run/checkpoints/step_N; the run's later ones are set aside) or run folder")
    g.add_argument("--allow_config_change", action="store_true",
                   help="resume even if the data order or algorithm settings differ from the saved config.json")
    g.add_argument("--no_export", action="store_true", help="skip the final Hugging Face export")
    g.add_argument("--no_checkpoints", action="store_true",
                   help="save no checkpoint, not even the last (timing runs: a 2B save is ~21 GB)")
    g.add_argument("--wandb", default="", help="wandb project name (optional; needs `pip install wandb`)")


def get_args(argv=None):
    """train.py's arguments; what the user did not set comes from PAPER or DEMO."""
    p = argparse.ArgumentParser(description="PTD-PO / GRPO training for Qwen-VL models (FSDP2).")
    for add in (_model_and_data, _algorithm, _sampling_and_optimisation, _system_and_logging):
        add(p)
    args = p.parse_args(argv)
    preset = DEMO if is_demo(args.model) else PAPER
    for k, v in preset.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if not isinstance(args.resume, str):     # --resume PATH: PATH's run (start_run)
        args.out_dir = args.out_dir or "runs/demo"
    if args.topk == 0:
        p.error("argument --topk: 0 is not allowed (>= 1, or -1 for the full vocabulary)")
    if args.prompts_per_step % args.minibatch_prompts:
        p.error("argument --minibatch_prompts: must divide --prompts_per_step")
    return args

# -----------------------------------------------------------------------------
# the demo's paths, run set-up, data


def is_demo(model):
    """--model toy, or the shipped demo model by its path."""
    return model == "toy" or os.path.abspath(model) == DEMO_MODEL


def demo_paths():
    """(model dir, train JSONL, eval JSONL) of the embedded demo, built on first use."""
    import toy
    return toy.ensure()


def resolve_paths(args):
    """--model toy becomes the demo's model directory and, unless given, its data splits."""
    if args.model == "toy":
        args.model, demo_train, demo_eval = demo_paths()
        args.train_data = args.train_data or demo_train
        args.eval_data = args.eval_data or demo_eval
    if not args.train_data:
        sys.exit("train.py: --train_data is required with a model other than 'toy'")


def start_run(argv):
    """Arguments, torchrun, the demo's paths (built on rank 0), the resume check, config.json."""
    args = get_args(argv)
    rank, world, device = setup(single_process_group=True)
    if args.minibatch_prompts % world:
        sys.exit(f"train.py: --minibatch_prompts {args.minibatch_prompts} is not a multiple of the {world} ranks")
    if args.threads:
        torch.set_num_threads(args.threads)
    problem = None
    if rank == 0:   # the run folder first: a bad one stops the run before anything is built or changed
        problem = run_folder_problem(args)
        if not problem:
            resolve_paths(args)
    box = [vars(args), problem]   # rank 0 may have built the demo; everyone uses its paths
    torch.distributed.broadcast_object_list(box, src=0)
    args, problem = argparse.Namespace(**box[0]), box[1]
    if problem:
        sys.exit(f"train.py: {problem}")
    config = {**vars(args), "world_size": world}
    try:
        diff = checkpoint.config_changes(args.out_dir, config, RESUME_KEYS) if args.resume else ""
    except ValueError as e:          # a file that is not a JSON object: nothing to check against
        if not args.allow_config_change:
            sys.exit(f"train.py: --resume cannot check the run's settings: {e}; restore the file, or rerun with "
                     f"--allow_config_change")
        print0(f"train.py: --resume cannot check the run's settings: {e}; resuming anyway (--allow_config_change)")
        diff = ""
    if diff and not args.allow_config_change:
        sys.exit(f"train.py: --resume with settings that differ from the run's config.json: {diff} "
                 f"(--allow_config_change to resume anyway)")
    if not args.resume and checkpoint.clear(args.out_dir):
        print0(f"train.py: a new run in {args.out_dir}: the earlier run's checkpoints and metrics are replaced "
               f"(--resume continues a run instead)")
    torch.manual_seed(args.seed)
    print0("config:\n" + json.dumps(vars(args), indent=1))
    torch.distributed.barrier()   # every rank has read the old config.json (--resume) before it is replaced
    if rank == 0:
        try:
            checkpoint.write_config(args.out_dir, config)
        except OSError as e:
            sys.exit(f"train.py: cannot write {os.path.join(args.out_dir, 'config.json')}: "
                     f"{checkpoint.os_error(e)}: {checkpoint.fix_for(e)}")
    return args, rank, world, device


def run_folder_problem(args):
    """--resume PATH resolved (args.out_dir becomes PATH's run, args.resume its checkpoint folder or
    True) and the run folder checked for writing: None, or one line saying what is wrong."""
    if isinstance(args.resume, str):
        try:
            run, ckpt = checkpoint.resume_target(args.resume)
        except ValueError as e:
            return str(e)
        if args.out_dir and os.path.abspath(args.out_dir) != run:
            return (f"--resume {args.resume} belongs to the run in {run}, not to --out_dir {args.out_dir}: "
                    f"leave --out_dir out (or give --out_dir {run})")
        args.out_dir, args.resume = run, ckpt or True
    return checkpoint.out_dir_problem(args.out_dir)


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
