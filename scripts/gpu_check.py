"""
scripts/gpu_check.py: the helpers of scripts/gpu_check.sh.

    python scripts/gpu_check.py build --shape 2b --out DIR     # a random Qwen3-VL, real shapes
    python scripts/gpu_check.py report --run RUN --model DIR   # step time split, tokens/s, MFU

The 2b shape is Qwen3-VL-2B's language model (hidden 2048, 28 layers, 16 heads, 8 KV heads,
head dim 128, MLP 6144, vocabulary 151,936) with a small vision tower (the demo's images are
96 px, so the tower is not what is measured). Random weights: the responses are noise that
runs to --max_new_tokens, which is what a timing check wants. No download: the tokenizer and
processor are the demo's (943 tokens; the lm-head still has 151,936 rows). tiny is the demo's
own shape with the real vocabulary, for a CPU run that proves the script does not rot.
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import rollout  # noqa: E402
import toy  # noqa: E402

SHAPES = {
    "2b": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
               num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
    "tiny": {},
}
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}   # dense bf16 FLOP/s


def build(shape, out):
    """A random model of the given shape, saved with the demo's tokenizer and processor."""
    from transformers import AutoModelForImageTextToText
    tok = toy.build_tokenizer()
    config = toy.build_config(tok, "qwen3")
    text = config.text_config
    for k, v in SHAPES[shape].items():
        setattr(text, k, v)
    text.vocab_size = toy.REAL_VOCAB
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
    rollout.save_processor(toy.build_processor(tok, "qwen3"), out)
    n = sum(p.numel() for p in model.parameters())
    print(f"built a random {shape} Qwen3-VL: {n / 1e9:.2f}B parameters -> {out}")


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
          f"{'rollout tok/s':>13s} {'update MFU':>10s} {'peak GB':>7s}")
    for m in steps:
        tokens = rows * (prompt + m["resp_len"])
        flops = 6 * n_layer * tokens + 6 * D * V * rows * m["resp_len"]
        mfu = f"{flops / m['t_update'] / peak:10.1%}" if peak else f"{'n/a':>10s}"
        print(f"{m['step']:4d} {m['t_rollout']:9.1f} {m['t_old']:6.1f} {m['t_ref_tutor']:11.1f} {m['t_update']:8.1f} "
              f"{m['resp_len']:8.0f} {rows * m['resp_len'] / m['t_rollout']:13.0f} {mfu} "
              f"{m.get('peak_mem_gb', float('nan')):7.1f}")


def main():
    p = argparse.ArgumentParser(description="gpu_check.sh helpers")
    p.add_argument("what", choices=["build", "report"])
    p.add_argument("--shape", default="2b", choices=sorted(SHAPES))
    p.add_argument("--out", default="runs/gpu_check/model")
    p.add_argument("--run", default="runs/gpu_check/run")
    p.add_argument("--model", default="runs/gpu_check/model")
    a = p.parse_args()
    build(a.shape, a.out) if a.what == "build" else report(a.run, a.model)


if __name__ == "__main__":
    main()
