"""
scripts/gpu_check.py: the helpers of scripts/gpu_check.sh.

    python scripts/gpu_check.py build --shape 2b --out DIR     # a random Qwen3-VL, real shapes
    python scripts/gpu_check.py decode --model DIR             # ms per decode step: plain vs fast, floor
    python scripts/gpu_check.py update --model DIR             # forward + backward MFU, where time goes
    python scripts/gpu_check.py report --run RUN --model DIR   # step time split, tokens/s, MFU

The 2b shape is Qwen3-VL-2B's language model (hidden 2048, 28 layers, 16 heads, 8 KV heads,
head dim 128, MLP 6144, vocabulary 151,936) with a small vision tower (the demo's images are
96 px, so the tower is not what is measured). Random weights: the responses are noise that
runs to --max_new_tokens, which is what a timing check wants. No download: the tokenizer and
processor are the demo's (943 tokens; the lm-head still has 151,936 rows). tiny is the demo's
own shape with the real vocabulary, for a CPU run that proves the script does not rot.
The bandwidth floor of a decode step is the bytes it must read (decoder and lm-head weights once,
plus the filled part of every row's KV cache) over the copy bandwidth measured on the spot.
"""
import argparse
import json
import os
import random
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data  # noqa: E402
import decode  # noqa: E402
import rollout  # noqa: E402
from demo import tiny_model, toy  # noqa: E402

SHAPES = {
    "2b": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
               num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
    "tiny": {},
}
VARIANTS = (("fast: eager steps", dict(compile=False, graphs=False)),
            ("fast: compile", dict(compile=True, graphs=False)),
            ("fast: graphs", dict(compile=False, graphs=True)),
            ("fast: graphs + compile", dict(compile=True, graphs=True)))
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}   # dense bf16 FLOP/s


def build(shape, out):
    """A random model of the given shape, saved with the demo's tokenizer and processor."""
    from transformers import AutoModelForImageTextToText
    tok = tiny_model.build_tokenizer(toy.tokenizer_corpus(random.Random(0)))
    config = tiny_model.build_config(tok, "qwen3")
    text = config.text_config
    for k, v in SHAPES[shape].items():
        setattr(text, k, v)
    text.vocab_size = tiny_model.REAL_VOCAB
    if shape == "2b":
        text.rope_parameters["mrope_section"] = [24, 20, 20]   # sums to head_dim / 2
        config.vision_config.out_hidden_size = text.hidden_size
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16 if device == "cuda" else
                                                        torch.float32)
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out)
    rollout.save_processor(tiny_model.build_processor(tok, "qwen3"), out)
    n = sum(p.numel() for p in model.parameters())
    print(f"built a random {shape} Qwen3-VL: {n / 1e9:.2f}B parameters -> {out}")


def cuda_sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn):
    cuda_sync()
    t = time.perf_counter()
    out = fn()
    cuda_sync()
    return out, time.perf_counter() - t


def copy_bandwidth(gb=2.0):
    """Bytes read + written per second by a device-to-device copy (the floor's yardstick)."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    a = torch.empty(int(gb * 2 ** 30), dtype=torch.uint8, device=dev)
    b = torch.empty_like(a)
    b.copy_(a)
    _, t = timed(lambda: [b.copy_(a) for _ in range(5)])
    return 2 * 5 * a.numel() / t


def floor_ms(model, rows, prompt, new_tokens, bandwidth):
    """Bytes a decode step must read, averaged over the steps, over the bandwidth: the decoder and
    lm-head weights (in the sampling dtype) + every row's filled KV cache."""
    text = model.model.language_model
    weights = sum(p.numel() * p.element_size() for p in list(text.layers.parameters()) + [model.lm_head.weight])
    kv = rows * (prompt + new_tokens / 2) * rollout.kv_bytes_per_token(model)
    return 1e3 * (weights + kv) / bandwidth, weights, kv


def per_step_ms(run, n):
    """ms per decode step of run(n) with the prefill (run(1)) taken out, and run(n)'s tokens."""
    _, t1 = timed(lambda: run(1))
    out, tn = timed(lambda: run(n))
    return 1e3 * (tn - t1) / (n - 1), out


def demo_prompts(processor, n):
    exs = data.load_jsonl("toy/data/train.jsonl", report=lambda s: None)[:n]
    return [rollout.encode(processor, ex["question"], rollout.open_images(ex)) for ex in exs]


def decode_bench(model_dir, rows, new_tokens, long_tokens):
    """ms per decode step on one batch (rows = 8 prompts x G): HF generate() (the plain path) and
    decode.py's loop with and without torch.compile and CUDA graphs. Returns how many variants failed."""
    cuda = torch.cuda.is_available()
    model, processor = rollout.load_model(model_dir, "bfloat16" if cuda else "float32")
    G = max(1, rows // 8)
    prompts = demo_prompts(processor, rows // G)
    P = max(len(p["input_ids"]) for p in prompts)

    def run(fast):
        return lambda n: rollout.sample(model, processor, prompts, G, n, 1.0, 0.99, seed=1, fast=fast)
    bw = copy_bandwidth()
    print(f"decode: {G * len(prompts)} rows, prompt width {P}, T = 1, top_p = 0.99; copy bandwidth "
          f"{bw / 1e12:.2f} TB/s; floor = (weights + filled KV) / bandwidth")
    plain_ms, (plain, _) = per_step_ms(run(None), new_tokens)
    fl, w, kv = floor_ms(model, G * len(prompts), P, new_tokens, bw)
    print(f"  weights {w / 1e9:.2f} GB, mean filled KV {kv / 1e9:.2f} GB over {new_tokens} steps: floor {fl:.2f} ms")
    print(f"  {'path':<28s} {'new tokens':>10s} {'ms/step':>8s} {'x floor':>8s} {'speed-up':>8s} {'same 1st':>8s}")
    print(f"  {'plain: HF generate()':<28s} {new_tokens:10d} {plain_ms:8.2f} {plain_ms / fl:8.1f} {1.0:8.1f} {'':>8s}")
    failures = 0
    for name, kw in VARIANTS:
        if not cuda and (kw["compile"] or kw["graphs"]):
            continue                                    # CPU: the eager steps only (graphs need CUDA)
        try:                                            # one failing variant must not lose the others' rows
            failures += not fast_rows(model, run, name, kw, plain, plain_ms, new_tokens, long_tokens, bw, P)
        except Exception as e:
            print(f"  {name:<28s} FAILED: {decode.one_line(e)}")
            failures += 1
        if cuda:
            torch.cuda.empty_cache()
    print("  (random weights: rows never end early; plain and fast share the prefill, so the first tokens agree;"
          " later ones part where bf16 rounding moves a draw)")
    return failures


def fast_rows(model, run, name, kw, plain, plain_ms, new_tokens, long_tokens, bw, P):
    """One fast variant's rows (a graph variant also at long_tokens); False if it took a fallback."""
    fast = decode.FastSampler(model, next(model.parameters()).dtype, **kw)
    n_all = (new_tokens, long_tokens) if kw["graphs"] else (new_tokens,)
    _, warm = timed(lambda: run(fast)(n_all[-1]))       # compiles, captures
    for n in n_all:
        ms, (ids, _) = per_step_ms(run(fast), n)
        f = floor_ms(model, len(ids), P, n, bw)[0]
        same = (ids[:, 0] == plain[:, 0]).float().mean().item() if n == new_tokens else float("nan")
        print(f"  {name:<28s} {n:10d} {ms:8.2f} {ms / f:8.1f} {plain_ms / ms:8.1f} {same:8.0%}"
              f"   (floor {f:.2f} ms; warm-up {warm:.0f} s; {fast.status})")
    return not fast.status["fallbacks"]


def update_bench(model_dir, rows, new_tokens, budgets, chunk):
    """Forward + backward of the clipped-surrogate scoring pass (rollout.score with grad, lm-head
    chunks checkpointed, gradient checkpointing on) on rows x new_tokens random tokens, at each
    micro-batch token budget: the model's own MFU, without FSDP, fp32 master or optimiser. The
    last budget is profiled: the top kernels by CUDA time."""
    cuda = torch.cuda.is_available()
    model, processor = rollout.load_model(model_dir, "bfloat16" if cuda else "float32")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    G = max(1, rows // 8)
    prompts = [p for p in demo_prompts(processor, rows // G) for _ in range(G)]
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, len(processor.tokenizer) - 20, (len(prompts), new_tokens), generator=g)
    mask = torch.ones_like(ids, dtype=torch.bool)
    lens = [len(p["input_ids"]) + new_tokens for p in prompts]

    def step(budget):
        for mb in rollout.micro_batches(lens, budget):
            out = rollout.score(model, [prompts[i] for i in mb], ids[mb], mask[mb], token_budget=10 ** 12,
                                chunk_size=chunk, grad=True)
            out["logp"].sum().backward()
    c = model.config.get_text_config()
    n = sum(p.numel() for p in model.model.language_model.layers.parameters())
    flops = 6 * n * sum(lens) + 6 * c.hidden_size * c.vocab_size * mask.sum().item()
    peak = next((v for k, v in PEAK_BF16.items() if k in (torch.cuda.get_device_name() if cuda else "")), None)
    print(f"update: {len(prompts)} rows x {new_tokens} tokens, gradient checkpointing, lm-head chunk {chunk}")
    for budget in budgets:
        step(budget)                                                          # warm-up
        _, t = timed(lambda: step(budget))
        mfu = f"{flops / t / peak:.1%}" if peak else "n/a"
        print(f"  token budget {budget:6d}: {len(rollout.micro_batches(lens, budget))} micro-batches, "
              f"{t:.2f} s, MFU {mfu} (6 N T, no recompute)")
    if cuda:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step(budgets[-1])
            cuda_sync()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=60))


def report(run, model_dir):
    """Per step: time by phase, rollout tokens/s, update MFU (model FLOPs 6 N T, no recompute)."""
    from transformers import AutoConfig
    with open(os.path.join(run, "metrics.jsonl")) as f:
        steps = [json.loads(x) for x in f if '"reward"' in x]
    cfg = json.load(open(os.path.join(run, "config.json")))
    text = AutoConfig.from_pretrained(model_dir).get_text_config()
    D, L, V, F = text.hidden_size, text.num_hidden_layers, text.vocab_size, text.intermediate_size
    kv = text.num_key_value_heads * text.head_dim
    n_layer = L * (D * (D + 2 * kv) + text.num_attention_heads * text.head_dim * D + 3 * D * F)
    rows = cfg["prompts_per_step"] * cfg["group_size"]
    prompt = 80                                              # the demo's prompts: ~70 text + 9 image tokens
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    print(f"{name}: {rows} rollouts per step, {n_layer / 1e9:.2f}B decoder parameters, V = {V}")
    print(f"{'step':>4s} {'rollout s':>9s} {'old s':>6s} {'ref+tutor s':>11s} {'update s':>8s} {'resp len':>8s} "
          f"{'rollout tok/s':>13s} {'update MFU':>10s} {'peak GB':>7s} {'rollout ms/step':>15s}")
    for m in steps:
        tokens = rows * (prompt + m["resp_len"])
        flops = 6 * n_layer * tokens + 6 * D * V * rows * m["resp_len"]
        mfu = f"{flops / m['t_update'] / peak:10.1%}" if peak else f"{'n/a':>10s}"
        print(f"{m['step']:4d} {m['t_rollout']:9.1f} {m['t_old']:6.1f} {m['t_ref_tutor']:11.1f} {m['t_update']:8.1f} "
              f"{m['resp_len']:8.0f} {rows * m['resp_len'] / m['t_rollout']:13.0f} {mfu} "
              f"{m.get('peak_mem_gb', float('nan')):7.1f} {1e3 * m['t_rollout'] / m['resp_len']:15.1f}")
    print("(rollout ms/step: the whole rollout phase over the response length, prefill included; step 1 also "
          "compiles and captures the decode graphs)")


def main():
    p = argparse.ArgumentParser(description="gpu_check.sh helpers")
    p.add_argument("what", choices=["build", "decode", "update", "report"])
    p.add_argument("--shape", default="2b", choices=sorted(SHAPES))
    p.add_argument("--out", default="runs/gpu_check/model")
    p.add_argument("--run", default="runs/gpu_check/run")
    p.add_argument("--model", default="runs/gpu_check/model")
    p.add_argument("--rows", type=int, default=64, help="decode / update: rows (8 prompts x rows / 8)")
    p.add_argument("--new_tokens", type=int, default=256, help="decode: steps timed for plain and fast")
    p.add_argument("--long_tokens", type=int, default=1024, help="decode: steps timed for the fast path too")
    p.add_argument("--budgets", type=int, nargs="+", default=[32768, 73728], help="update: token budgets")
    p.add_argument("--chunk", type=int, default=256, help="update: lm-head chunk (positions)")
    a = p.parse_args()
    if a.what == "build":
        build(a.shape, a.out)
    elif a.what == "decode":
        sys.exit(1 if decode_bench(a.model, a.rows, a.new_tokens, a.long_tokens) else 0)
    elif a.what == "update":
        update_bench(a.model, a.rows, a.new_tokens, a.budgets, a.chunk)
    else:
        report(a.run, a.model)


if __name__ == "__main__":
    main()
