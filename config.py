"""
config.py: the flags and the presets, shared by train.py, eval.py, scripts/make_hints.py.

    args = get_args(argv)        # train.py's flags, the preset (PAPER or DEMO) filled in

A flag that more than one entry point takes is defined once, in FLAGS; each entry point adds it
with add_flags (an entry point may change its default, e.g. eval.py's --seed). PAPER and DEMO are
the defaults that depend on the model, and `python train.py --help` shows both; a flag given on
the command line always wins. The run's set-up (torchrun, the demo's files, the resume check,
config.json) is train.py's.
Left out on purpose: config files and overrides (argparse is the whole config; the run logs it).
"""
import argparse
import math
import os

from loss import DIVERGENCES

# changing one of these between a checkpoint and --resume changes the data order or the algorithm
RESUME_KEYS = ("world_size", "model", "train_data", "algo", "group_size", "prompts_per_step",
               "minibatch_prompts", "seed", "tau", "topk", "distill_all", "divergence",
               "tutor_context", "kl_coef", "ptd_coef", "temperature", "top_p", "max_new_tokens",
               "no_std_norm", "clip_low", "clip_high", "dual_clip", "hint_style",
               "no_spoiler_filter")

# Defaults that depend on the model. A real model gets the paper's settings (Qwen3-VL-2B/8B:
# lambda 0.05, lr 1e-6 constant, 384 prompts per step in mini-batches of 128, 4,096 new tokens,
# ~2 epochs of ViRL39K); the embedded demo (--model toy, a 1M-parameter model on a 96 px task)
# gets its own: forward KL(tutor || student) at lambda 4 with 30 warm-up steps, chosen on two
# development seeds over the paper's JSD at lambda 32-512 (docs/RESULTS.md: the JSD's pull on a
# logit scales with the student's own probability of it, ~1e-4 on the pivot bucket at the start,
# and it reached the pivot late). A flag given on the command line always wins.
PAPER = {"ptd_coef": 0.05, "lr": 1e-6, "warmup_steps": 0, "max_new_tokens": 4096,
         "prompts_per_step": 384, "minibatch_prompts": 128, "steps": 200, "eval_samples": 1,
         "divergence": "jsd", "eval_blank": 0}
DEMO = {"ptd_coef": 4.0, "lr": 5e-4, "warmup_steps": 30, "max_new_tokens": 32,
        "prompts_per_step": 16, "minibatch_prompts": 8, "steps": 80, "eval_samples": 8,
        "divergence": "fkl", "eval_blank": 1}

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
            where = f"{'(' if open_lo else '['}{lo}, {hi or 'inf'}]"
            raise argparse.ArgumentTypeError(f"{text} is outside {where}")
        return v
    parse.__name__ = kind.__name__
    return parse


POS, NONNEG, PROB = ranged(int, 1), ranged(int, 0), ranged(float, 0, 1, open_lo=True)

FLAGS = {
    "--max_prompt_tokens": dict(type=POS, default=4096,
                                help="longer prompts are reported and skipped"),
    "--trust_remote_code": dict(action="store_true",
                                help="allow model code from the hub (off by default)"),
    "--allow_outside_images": dict(action="store_true",
                                   help="allow absolute or ../ image paths (default: only inside "
                                        "the data file's folder)"),
    "--tutor_context": dict(default="hint", choices=["hint", "answer", "none", "unanswer"],
                            help="what the tutor reads: the hint; the gold answer (leaky baseline); "
                                 "none (a control: the frozen model on the student's own prompt, "
                                 "same gate and rows); unanswer (a control: the same, with the "
                                 "rollout's own unsure tokens removed and the rest renormalised)"),
    "--hint_style": dict(default="structured", choices=["structured", "text"],
                         help="how the tutor reads a hint: regions with boxes and numbered steps, or "
                              "the same hint as one paragraph of prose (the paper's structured vs "
                              "unstructured ablation)"),
    "--no_spoiler_filter": dict(action="store_true",
                                help="keep hints that leak the answer (the paper's ablation of the "
                                     "zero-spoiler filter; make hints with scripts/make_hints.py "
                                     "--no_spoiler_filter, train on them with train.py "
                                     "--no_spoiler_filter)"),
    "--top_p": dict(type=PROB, default=0.99,
                    help="nucleus (0.99 everywhere: one pass@1 definition)"),
    "--kv_cache_gb": dict(type=ranged(float, 0, open_lo=True), default=32.0,
                          help="KV-cache memory per generate() call; it sets the rows per call "
                               "(docs/ENGINEERING.md)"),
    "--token_budget": dict(type=POS, default=16384, help="padded tokens per scoring micro-batch"),
    "--dtype": dict(default="auto", choices=["auto", "float32", "bfloat16"],
                    help="compute dtype: auto (bf16 on CUDA, fp32 on CPU)"),
    "--plain_generate": dict(action="store_true",
                             help="sample with HF generate() on CUDA too (the reference path; "
                                  "default: decode.py's)"),
    "--no_compile": dict(action="store_true",
                         help="decode.py's steps without torch.compile (bisecting a GPU run)"),
    "--no_cuda_graphs": dict(action="store_true",
                             help="decode.py's steps run eagerly, no CUDA graphs captured "
                                  "(bisecting a GPU run)"),
    "--seed": dict(type=NONNEG, default=0, help="seed for data order and sampling"),
    "--threads": dict(type=NONNEG, default=0, help="torch CPU threads per process (0: default)"),
}


def add_flags(group, *names, **defaults):
    """Add shared flags from FLAGS to a parser or group; defaults={dest: value} changes one."""
    for name in names:
        spec = dict(FLAGS[name])
        if name[2:] in defaults:
            spec["default"] = defaults[name[2:]]
        group.add_argument(name, **spec)


def preset(name, text):
    """The help of a flag whose default comes from a preset: both presets' values, as used."""
    return f"{text} (default: {PAPER[name]}, the paper's; --model toy: {DEMO[name]})"

# -----------------------------------------------------------------------------
# train.py's flags


def _model_and_data(p):
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default="toy",
                   help="hub id, local directory, or 'toy' (the embedded demo)")
    g.add_argument("--train_data", default=None,
                   help="training JSONL (default: the demo's train split)")
    g.add_argument("--eval_data", default=None,
                   help="held-out JSONL (default: the demo's eval split)")
    g.add_argument("--strict", action="store_true",
                   help="stop at the first bad data record instead of skipping it")
    add_flags(g, "--max_prompt_tokens", "--trust_remote_code", "--allow_outside_images")


def _algorithm(p):
    g = p.add_argument_group("algorithm")
    g.add_argument("--algo", default="ptdpo", choices=["ptdpo", "grpo"],
                   help="ptdpo adds the distillation toward the tutor (--divergence)")
    g.add_argument("--group_size", type=ranged(int, 2), default=8,
                   help="G: rollouts per prompt (>= 2)")
    g.add_argument("--kl_coef", type=ranged(float, 0), default=0.01,
                   help="k3 KL to the reference (0: no pass)")
    g.add_argument("--ptd_coef", type=ranged(float, 0), default=None,
                   help=preset("ptd_coef", "lambda: weight of the distillation term; the paper's "
                                           "2B/8B value, its 4B used 0.5"))
    g.add_argument("--tau", type=PROB, default=1.0,
                   help="a group with accuracy < tau is a PTD group")
    g.add_argument("--topk", type=ranged(int, -1), default=100,
                   help="K of the Top-K JSD support (-1: the full vocabulary, an ablation: "
                        "N x R x 2V memory)")
    g.add_argument("--distill_all", action="store_true",
                   help="distil every rollout of a PTD group, not only failed ones")
    g.add_argument("--divergence", default=None, choices=list(DIVERGENCES),
                   help=preset("divergence", "distillation divergence: the paper's Top-K JSD, "
                                             "forward KL(tutor||student) or reverse KL"))
    add_flags(g, "--tutor_context", "--hint_style", "--no_spoiler_filter")
    g.add_argument("--clip_low", type=ranged(float, 0, 0.999), default=0.2,
                   help="PPO clip below 1")
    g.add_argument("--clip_high", type=ranged(float, 0), default=0.3,
                   help="PPO clip above 1 (clip higher)")
    g.add_argument("--dual_clip", type=ranged(float, 1, open_lo=True), default=3.0,
                   help="dual clip, A < 0")
    g.add_argument("--no_std_norm", action="store_true",
                   help="Dr. GRPO: do not divide advantages by the group std")


def _sampling_and_optimisation(p):
    g = p.add_argument_group("sampling")
    g.add_argument("--temperature", type=ranged(float, 0, open_lo=True), default=1.0,
                   help="rollout temperature")
    add_flags(g, "--top_p")
    g.add_argument("--max_new_tokens", type=POS, default=None,
                   help=preset("max_new_tokens", "response length cap"))
    add_flags(g, "--kv_cache_gb", "--plain_generate", "--no_compile", "--no_cuda_graphs")
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=NONNEG, default=None,
                   help=preset("steps", "training steps, one rollout batch each (the paper's: "
                                        "~2 epochs of ViRL39K)"))
    g.add_argument("--prompts_per_step", type=POS, default=None,
                   help=preset("prompts_per_step", "prompts per step, all ranks together"))
    g.add_argument("--minibatch_prompts", type=POS, default=None,
                   help=preset("minibatch_prompts", "prompts per optimiser step, all ranks "
                                                    "together"))
    g.add_argument("--lr", type=ranged(float, 0, open_lo=True), default=None,
                   help=preset("lr", "AdamW learning rate"))
    g.add_argument("--warmup_steps", type=NONNEG, default=None,
                   help=preset("warmup_steps", "linear warm-up, then constant"))
    g.add_argument("--weight_decay", type=ranged(float, 0), default=0.01,
                   help="AdamW weight decay")
    g.add_argument("--grad_clip", type=ranged(float, 0, open_lo=True), default=1.0,
                   help="gradient-norm clip")
    g.add_argument("--max_bad_steps", type=POS, default=3,
                   help="stop (exit 1, no export) after this many steps in a row with a "
                        "non-finite loss")


def _system_and_logging(p):
    g = p.add_argument_group("system")
    add_flags(g, "--dtype")
    g.add_argument("--grad_ckpt", action="store_true",
                   help="activation checkpointing in the decoder")
    add_flags(g, "--token_budget")
    g.add_argument("--chunk_size", type=POS, default=256, help="positions per lm_head chunk")
    add_flags(g, "--seed", "--threads")
    g = p.add_argument_group("logging, evaluation, checkpoints")
    g.add_argument("--out_dir", default=None,
                   help="run directory: config, metrics.jsonl, checkpoints (default runs/demo; "
                        "with --resume PATH, PATH's run)")
    g.add_argument("--eval_every", type=NONNEG, default=20,
                   help="held-out evaluation interval (0: start/end)")
    g.add_argument("--eval_start", type=int, choices=[0, 1], default=1,
                   help="0: skip the step-0 evaluation (it depends on the model and the held-out "
                        "problems only, so a comparison computes it once, not once per run)")
    g.add_argument("--eval_n", type=NONNEG, default=200,
                   help="held-out problems per evaluation (0: all)")
    g.add_argument("--eval_samples", type=POS, default=None,
                   help=preset("eval_samples", "samples per held-out problem: pass@1 = their "
                                               "mean, pass@n = any right"))
    g.add_argument("--eval_blank", type=int, choices=[0, 1], default=None,
                   help=preset("eval_blank", "1: at the start and the end, also score the "
                               "held-out prompts on white images of the same sizes, the chance "
                               "line printed beside each pass@1"))
    g.add_argument("--save_every", type=NONNEG, default=20,
                   help="checkpoint interval in steps (0: only at the end)")
    g.add_argument("--keep", type=POS, default=2,
                   help="checkpoints kept (the newest is never deleted, nor the newest known "
                        "good: the steps after it stayed in the usual range the divergence stop "
                        "uses)")
    g.add_argument("--resume", nargs="?", const=True, default=False, metavar="PATH",
                   help="continue from the newest valid checkpoint in out_dir; with PATH, from "
                        "that checkpoint folder (run/checkpoints/step_N; the run's later ones are "
                        "set aside) or run folder")
    g.add_argument("--allow_config_change", action="store_true",
                   help="resume even if the data order or algorithm settings differ from the "
                        "saved config.json")
    g.add_argument("--no_export", action="store_true", help="skip the final Hugging Face export")
    g.add_argument("--no_checkpoints", action="store_true",
                   help="save no checkpoint, not even the last (timing runs; a 2B checkpoint's "
                        "size: docs/ENGINEERING.md)")
    g.add_argument("--wandb", default="",
                   help="wandb project name (optional; needs `pip install wandb`)")


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


def is_demo(model):
    """--model toy, or the shipped demo model by its path."""
    return model == "toy" or os.path.abspath(model) == DEMO_MODEL
