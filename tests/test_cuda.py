"""The CUDA path (skipped without a GPU): bf16 scoring, the sampler on the GPU, train.py on NCCL with
bf16 compute over fp32 master weights, and decode.py's fast path against the plain one in bf16.
scripts/gpu_check.sh runs these."""
import os

import pytest
import torch
from safetensors.torch import load_file

import data
import decode
import loss
import rollout
import sampler
from demo import toy
from test_distributed import run, train_args

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_sampler_on_cuda_draws_what_it_draws_on_cpu():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 151_936, generator=g) * 2
    keys = torch.arange(64) * 13 + 1
    cpu = sampler.sample_rows(logits, keys, step=5, top_p=0.9)
    gpu = sampler.sample_rows(logits.cuda(), keys.cuda(), step=5, top_p=0.9).cpu()
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
    prompts = [rollout.encode(processor, ex["question"], rollout.open_images(ex)) for ex in examples[:4]]
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


def fast_and_plain(model_dir, dtype=torch.bfloat16):
    model, processor = rollout.load_model(model_dir, "bfloat16", "cuda")
    return model, processor, decode.FastSampler(model, dtype)


def test_fast_path_logprobs_on_cuda_match_a_full_forward_in_bf16(tiny, examples):
    """decode.py's per-step log-probs (CUDA graphs, torch.compile'd kernels) == rollout.score's on
    the finished rows, within bf16 rounding: mean |difference| < 0.01 nats (bf16 noise alone is
    ~0.0015 on CPU; K/V writes lost for decoded tokens gave 0.040), from graphs that were really
    captured and replayed, with no fallback taken."""
    model, processor, fast = fast_and_plain(tiny[2])
    prompts = [rollout.encode(processor, ex["question"], rollout.open_images(ex)) for ex in examples[:4]]
    rows = [p for p in prompts for _ in range(2)]
    batch = rollout.collate(rows, processor.tokenizer.pad_token_id, device="cuda")
    steps = 40
    fast.start(batch, sampler.row_keys(0, [0, 1, 2, 3], 2), steps, 1.0, 0.99,
               rollout.vision_token_ids(processor.tokenizer), eos=-1)
    logits = [fast.logits[:8].clone()]
    for _ in range(steps - 1):
        fast.advance()
        logits.append(fast.logits[:8].clone())
    ids = fast.out[:8, :steps].cpu()
    got = torch.stack(logits, 1).log_softmax(-1).gather(-1, ids.cuda().unsqueeze(-1)).squeeze(-1).cpu()
    want = rollout.score(model, rows, ids, torch.ones_like(ids, dtype=torch.bool))["logp"].float().cpu()
    assert (got - want).abs().mean() < 0.01, (got - want).abs().mean()
    s = fast.status
    assert s["captured"] >= 1 and s["replayed"] >= steps - 1 - s["captured"] and not s["fallbacks"], s


def test_fast_path_replay_loop_makes_no_host_sync(tiny, examples):
    """The steps between two "has every row finished?" checks run with no host sync: a sync there
    would stall every step. Graphs captured first (capture itself synchronises), then replayed under
    sync debug mode "error"."""
    model, processor, fast = fast_and_plain(tiny[2])
    prompts = [rollout.encode(processor, ex["question"], rollout.open_images(ex)) for ex in examples[:4]]
    batch = rollout.collate([p for p in prompts for _ in range(2)], processor.tokenizer.pad_token_id, device="cuda")
    call = (batch, sampler.row_keys(0, [0, 1, 2, 3], 2), 200, 1.0, 0.99, rollout.vision_token_ids(processor.tokenizer),
            -1)
    assert fast.generate(*call) is not None                                   # captures every window's graph
    captured = fast.status["captured"]
    fast.start(*call)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fast.steps(199)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    s = fast.status
    assert s["captured"] == captured and s["replayed"] >= 199 and not s["fallbacks"], s


def test_fast_path_graphs_replay_the_eager_steps_exactly(tiny, examples):
    model, processor, fast = fast_and_plain(tiny[2])
    prompts = [rollout.encode(processor, ex["question"], rollout.open_images(ex)) for ex in examples[:4]]
    graphs = rollout.sample(model, processor, prompts, 3, 300, seed=2, top_p=0.9, fast=fast)   # 3 windows
    assert fast.status["captured"] >= 3 and not fast.status["fallbacks"], fast.status
    fast.graphs = None                                                         # eager steps, same kernels
    eager = rollout.sample(model, processor, prompts, 3, 300, seed=2, top_p=0.9, fast=fast)
    assert torch.equal(graphs[0], eager[0]) and torch.equal(graphs[1], eager[1])
    assert not fast.status["fallbacks"], fast.status


def test_fast_path_on_cuda_draws_the_plain_paths_tokens_on_the_demo_model(examples):
    """Same streams, same draws; bf16 rounding differs (fused kernels), so a draw can move where two
    tokens are within rounding of each other: every first token agrees (a shared prefill), and at
    least 90% of the demo model's 32-token rows agree whole."""
    model, processor, fast = fast_and_plain(os.path.join(toy.DEFAULT_DIR, "model"))
    prompts = [rollout.encode(processor, ex["question"], rollout.open_images(ex)) for ex in examples[:8]]
    for temperature, top_p in ((0.0, 1.0), (1.0, 0.99)):
        kw = dict(temperature=temperature, top_p=top_p, seed=9)
        a, am = rollout.sample(model, processor, prompts, 4, 32, **kw)
        b, bm = rollout.sample(model, processor, prompts, 4, 32, fast=fast, **kw)
        R = max(a.shape[1], b.shape[1])
        a, b = (torch.nn.functional.pad(x, (0, R - x.shape[1]), value=-1) for x in (a, b))
        assert torch.equal(a[:, 0], b[:, 0])
        assert (a == b).all(1).float().mean() >= 0.9, (temperature, (a == b).all(1).float().mean())
    assert fast.status["captured"] and not fast.status["fallbacks"], fast.status
