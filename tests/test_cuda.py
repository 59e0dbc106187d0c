"""The CUDA path (skipped without a GPU): bf16 scoring, the sampler on the GPU, and train.py on
NCCL with bf16 compute over fp32 master weights. scripts/gpu_check.sh runs these."""
import os

import pytest
import torch
from safetensors.torch import load_file

import data
import loss
import rollout
import toy
from test_distributed import run, train_args

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_sampler_on_cuda_draws_what_it_draws_on_cpu():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 151_936, generator=g) * 2
    keys = torch.arange(64) * 13 + 1
    cpu = rollout.sample_rows(logits, keys, step=5, top_p=0.9)
    gpu = rollout.sample_rows(logits.cuda(), keys.cuda(), step=5, top_p=0.9).cpu()
    assert (cpu == gpu).float().mean() >= 0.95       # fp32 exp/sums may round differently on a GPU


def test_bf16_head_logprobs_on_cuda_match_fp64():
    g = torch.Generator().manual_seed(1)
    h, w = torch.randn(300, 256, generator=g) / 16, torch.randn(151_936, 256, generator=g)
    t = torch.randint(0, 151_936, (300,), generator=g)
    want = loss.full_logprobs(h.double(), w.double(), t)[1]
    got = loss.head_logprobs(h.cuda().bfloat16(), w.cuda().bfloat16(), t.cuda())["logp"].cpu().double()
    assert got.dtype == torch.float64 and (got - want).abs().max() < 0.25   # bf16 inputs, fp32 softmax


def test_scoring_in_bf16_on_cuda_is_close_to_fp32_on_cpu(tiny, examples):
    _, processor, d = tiny
    gpu, _ = rollout.load_model(d, "bfloat16", "cuda")
    cpu, _ = rollout.load_model(d, "float32", "cpu")
    prompts = [rollout.encode(processor, ex["question"], data.open_images(ex)) for ex in examples[:4]]
    ids, mask = rollout.sample(gpu, processor, prompts, 2, 12, seed=0)
    a = rollout.score(gpu, [p for p in prompts for _ in range(2)], ids, mask)["logp"].float().cpu()
    b = rollout.score(cpu, [p for p in prompts for _ in range(2)], ids, mask)["logp"]
    assert ((a - b).abs() * mask).sum() / mask.sum() < 0.05


def test_train_on_nccl_in_bf16_moves_fp32_master_weights(tiny, toy_data, tmp_path):
    out = str(tmp_path / "cuda")
    run(train_args(tiny[2], toy_data[1], toy_data[2], out, steps=2,
                   extra=["--dtype", "bfloat16", "--lr", "1e-6", "--warmup_steps", "0"]))
    w0 = load_file(os.path.join(tiny[2], "model.safetensors"))
    w1 = load_file(os.path.join(out, "final", "model.safetensors"))
    assert all(v.dtype == torch.float32 for v in w1.values())
    moved = sum(int((w1[k] != w0[k]).sum()) for k in w0) / sum(v.numel() for v in w0.values())
    assert moved >= 0.9, moved


def test_demo_model_builds_on_cuda():
    model, _ = rollout.load_model(os.path.join(toy.DEFAULT_DIR, "model"), "bfloat16", "cuda")
    assert next(model.parameters()).is_cuda
