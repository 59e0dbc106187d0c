"""decode.py on CPU (fp32, eager steps): the fast path samples the plain path's tokens, its per-step
logits are a full forward's, and the generation copy follows an FSDP2 policy in place (its sampler:
tests/test_sampler.py). tests/test_cuda.py checks the same in bf16 with CUDA graphs."""
import pytest
import torch
import torch.distributed as dist

import data
import decode
import rollout
import sampler
import train
from test_rollout import varied_prompts


@pytest.fixture(params=["qwen3", "qwen2.5"])
def family(request, tiny, tiny25):
    return tiny if request.param == "qwen3" else tiny25


def rows_of(processor, examples, tmp_path, G=3):
    """Left-padded rows of unequal prompt lengths and image sizes, with their keys."""
    prompts = varied_prompts(processor, examples, tmp_path)
    batch = rollout.collate([p for p in prompts for _ in range(G)], processor.tokenizer.pad_token_id)
    return prompts, batch, sampler.row_keys(5, list(range(len(prompts))), G)


@pytest.mark.parametrize("temperature,top_p", [(0.0, 1.0), (1.0, 0.9), (0.7, 1.0)])
def test_fast_path_samples_the_plain_paths_tokens(family, examples, tmp_path, temperature, top_p):
    model, processor, _ = family
    prompts = varied_prompts(processor, examples, tmp_path)
    fast = decode.FastSampler(model, torch.float32)
    kw = dict(temperature=temperature, top_p=top_p, seed=3)
    plain = rollout.sample(model, processor, prompts, 3, 14, **kw)
    assert torch.equal(plain[0], rollout.sample(model, processor, prompts, 3, 14, fast=fast, **kw)[0])
    # one row per call: spare rows in the same cache, other padding, other batch mates
    one_row = 200 * rollout.kv_bytes_per_token(model) / 2 ** 30
    alone = rollout.sample(model, processor, prompts, 3, 14, kv_cache_gb=one_row, fast=fast, **kw)
    assert torch.equal(plain[0], alone[0]) and torch.equal(plain[1], alone[1])
    assert fast.allocations == 1            # the cache was sized once; smaller calls reuse it


def test_each_decode_step_scores_like_a_full_forward(family, examples, tmp_path, monkeypatch):
    """Per-step logits of the static-cache loop == HF's forward of the finished sequence (fp32)."""
    monkeypatch.setattr(decode, "WINDOW", 16)             # several attention windows in 30 steps
    model, processor, _ = family
    prompts, batch, keys = rows_of(processor, examples, tmp_path, G=1)
    fast = decode.FastSampler(model, torch.float32)
    steps = 30
    fast.start(batch, keys, steps, 1.0, 1.0, rollout.vision_token_ids(processor.tokenizer), eos=-1)
    logits = [fast.logits[:len(prompts)].clone()]
    for _ in range(steps - 1):
        fast.advance()
        logits.append(fast.logits[:len(prompts)].clone())
    got = torch.stack(logits, 1).log_softmax(-1)                        # (B, steps, V)
    tokens = fast.out[:len(prompts), :steps]
    for i, p in enumerate(prompts):
        ids = torch.cat([p["input_ids"], tokens[i]]).unsqueeze(0)
        mm = torch.cat([p["mm_token_type_ids"], torch.zeros(steps, dtype=torch.long)]).unsqueeze(0)
        with torch.no_grad():
            full = model(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=mm,
                         pixel_values=p["pixel_values"], image_grid_thw=p["image_grid_thw"]).logits[0]
        want = full[-steps - 1:-1].log_softmax(-1)
        assert (got[i] - want).abs().max() < 1e-4, (i, (got[i] - want).abs().max())


def test_a_batch_with_a_row_left_without_a_token_goes_to_the_plain_path(tiny, examples, tmp_path):
    """One draw per row at top_p 0.3 leaves rows without a token: generate() hands the batch back
    and rollout.sample runs HF generate() on the copy, so the tokens are still the plain path's."""
    model, processor, _ = tiny
    prompts = varied_prompts(processor, examples, tmp_path)[:2]
    fast = decode.FastSampler(model, torch.float32, tries=1)
    _, batch, keys = rows_of(processor, examples, tmp_path, G=2)
    assert fast.generate(batch, keys, 6, 1.0, 0.3, [], eos=-1) is None
    plain = rollout.sample(model, processor, prompts, 2, 6, top_p=0.3, seed=4)
    assert torch.equal(plain[0], rollout.sample(model, processor, prompts, 2, 6, top_p=0.3, seed=4, fast=fast)[0])


def test_the_loop_stops_when_every_row_has_ended(tiny, examples, tmp_path):
    """An 'EOS' every row draws early (greedy's favourite token): the loop stops at the next check
    and the responses equal HF generate()'s."""
    model, processor, _ = tiny
    prompts, batch, keys = rows_of(processor, examples, tmp_path, G=1)
    banned, pad = rollout.vision_token_ids(processor.tokenizer), processor.tokenizer.pad_token_id
    free = rollout.hf_generate(model, batch, keys, 24, 0.0, 1.0, banned, -1, pad)
    eos = int(free[:, :8].flatten().mode().values)
    rows = [i for i in range(len(prompts)) if (free[i] == eos).any()]   # the rows that draw it (>= 1)
    batch = rollout.collate([prompts[i] for i in rows], pad)
    keys = keys[rows]
    fast = decode.FastSampler(model, torch.float32)
    got = fast.generate(batch, keys, 64, 0.0, 1.0, banned, eos)
    want = rollout.hf_generate(model, batch, keys, 64, 0.0, 1.0, banned, eos, pad)
    a, b = rollout.pad_responses(list(got), eos, pad), rollout.pad_responses(list(want), eos, pad)
    assert torch.equal(a[0], b[0])
    assert (want == eos).any(1).all() and got.shape[1] < 64


@pytest.mark.parametrize("param_dtype", [torch.float32, torch.bfloat16])
def test_the_bf16_copy_follows_an_fsdp2_policy_in_place(tiny, examples, monkeypatch, param_dtype):
    """After an optimiser step, refresh() makes the copy equal the policy's gathered weights (cast
    to bf16) without moving any storage (captured graphs keep pointing at the right memory). It
    gathers one FSDP unit at a time in FSDP2's param_dtype (bf16 on CUDA), never tensor by tensor."""
    from torch.distributed.tensor import DTensor
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        policy, processor = rollout.load_model(tiny[2], "float32", "cpu")
        policy = train.shard(policy, param_dtype)
        p = rollout.encode(processor, examples[0]["question"], rollout.open_images(examples[0]))
        r_ids = torch.tensor([[20, 21, 22, 23]])
        batch = rollout.collate([p], 0, r_ids, torch.ones_like(r_ids, dtype=torch.bool))
        with torch.no_grad():   # FSDP2 initialises lazily in the root's first forward
            getattr(policy, rollout.SCORER)(batch, r_ids, torch.ones_like(r_ids, dtype=torch.bool))
        fast = decode.FastSampler(policy, torch.bfloat16)
        params = dict(fast.model.named_parameters())
        before = {n: (t.data_ptr(), t.clone()) for n, t in params.items()}
        fused = [lw["qkv"].data_ptr() for lw in fast.layers]
        opt = torch.optim.AdamW(policy.parameters(), lr=1e-2)
        out = getattr(policy, rollout.SCORER)(batch, r_ids, torch.ones_like(r_ids, dtype=torch.bool))
        out["logp"].sum().backward()
        opt.step()
        with monkeypatch.context() as m:
            m.setattr(DTensor, "full_tensor", lambda self: 1 / 0)        # no per-tensor gathers
            fast.refresh(policy)
        moved = 0
        for n, t in policy.named_parameters():
            assert torch.equal(params[n], t.full_tensor().detach().to(torch.bfloat16)), n
            assert params[n].data_ptr() == before[n][0], n
            moved += int(not torch.equal(params[n], before[n][1]))
        assert moved > len(params) // 2
        a = fast.model.model.language_model.layers[0].self_attn
        assert [lw["qkv"].data_ptr() for lw in fast.layers] == fused
        assert torch.equal(fast.layers[0]["qkv"][:len(a.q_proj.weight)], a.q_proj.weight)   # views still alias
    finally:
        dist.destroy_process_group()


def test_compiled_steps_trace_whole_once_for_every_layer(tiny, examples, tmp_path, monkeypatch):
    """What torch.compile sees on CUDA (traced here with the aot_eager backend: Dynamo without
    Inductor, seconds on a CPU): each step function is one graph, no graph break, one graph serves
    every layer, one per sampling rule; and the tokens are still the plain path's."""
    import torch._dynamo
    from torch._dynamo.utils import counters
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, dynamic: real(fn, dynamic=dynamic, backend="aot_eager"))
    torch._dynamo.reset()
    counters.clear()
    try:
        model, processor, _ = tiny
        prompts = varied_prompts(processor, examples, tmp_path)
        fast = decode.FastSampler(model, torch.float32, compile=True)
        for temperature, top_p in ((1.0, 0.9), (0.0, 1.0)):
            kw = dict(temperature=temperature, top_p=top_p, seed=3)
            want = rollout.sample(model, processor, prompts, 2, 10, **kw)[0]
            assert torch.equal(want, rollout.sample(model, processor, prompts, 2, 10, fast=fast, **kw)[0])
        assert not counters["graph_break"]
        assert counters["stats"]["unique_graphs"] == 4       # attn_in, attn_out_mlp, choose x 2 rules
    finally:
        torch._dynamo.reset()

# -----------------------------------------------------------------------------
# fallbacks and switches: what a first GPU run must survive, simulated on CPU


def sample_both(model, processor, prompts, fast, **kw):
    kw = dict(temperature=1.0, top_p=0.9, seed=3, **kw)
    return rollout.sample(model, processor, prompts, 2, 20, **kw), rollout.sample(model, processor, prompts, 2, 20,
                                                                                  fast=fast, **kw)


class ReplayedStep:
    """A stand-in for a captured CUDA graph on CPU: replay() runs the step it recorded."""
    def __init__(self, step):
        self.replay = step


def test_captured_steps_are_counted_and_replay_what_the_eager_steps_draw(tiny, examples, tmp_path, monkeypatch):
    monkeypatch.setattr(decode, "WINDOW", 16)                          # several windows in 20 steps
    model, processor, _ = tiny
    prompts = varied_prompts(processor, examples, tmp_path)
    fast = decode.FastSampler(model, torch.float32)
    fast.graphs = {}                                                    # as on CUDA
    monkeypatch.setattr(fast, "_record", lambda w: ReplayedStep(lambda: fast._decode(w)))   # records, runs nothing
    plain, got = sample_both(model, processor, prompts, fast)
    assert torch.equal(plain[0], got[0])
    s = fast.status
    assert s["captured"] == len(fast.graphs) >= 2 and s["replayed"] > s["captured"] and not s["fallbacks"]
    assert s["eager_steps"] == s["captured"]                           # only the warm-ups ran eagerly


def test_a_failed_graph_capture_warns_once_and_decodes_eagerly(tiny, examples, tmp_path, monkeypatch):
    model, processor, _ = tiny
    prompts = varied_prompts(processor, examples, tmp_path)
    fast = decode.FastSampler(model, torch.float32)
    fast.graphs = {}

    def broken(w):
        raise RuntimeError("operation not permitted when stream is capturing (simulated)")
    monkeypatch.setattr(fast, "_record", broken)
    with pytest.warns(UserWarning) as caught:
        plain, got = sample_both(model, processor, prompts, fast)
        again = rollout.sample(model, processor, prompts, 2, 20, temperature=1.0, top_p=0.9, seed=3, fast=fast)
    assert torch.equal(plain[0], got[0]) and torch.equal(plain[0], again[0])
    assert fast.graphs is None and fast.status["fallbacks"] == ["CUDA graph capture"]
    lines = [str(w.message) for w in caught if "decode.py" in str(w.message)]
    assert len(lines) == 1 and "CUDA graph capture failed" in lines[0] and "\n" not in lines[0]


def test_an_exception_in_the_fast_loop_hands_the_run_to_hf_generate_on_the_copy(tiny, examples, tmp_path,
                                                                              monkeypatch):
    model, processor, _ = tiny
    prompts = varied_prompts(processor, examples, tmp_path)
    fast = decode.FastSampler(model, torch.float32)
    monkeypatch.setattr(fast, "_decode", lambda w: 1 / 0)
    used = []
    real = rollout.hf_generate
    monkeypatch.setattr(rollout, "hf_generate", lambda m, *a: used.append(m) or real(m, *a))
    with pytest.warns(UserWarning, match="the fast decode loop failed") as caught:
        plain, got = sample_both(model, processor, prompts, fast)
        rollout.sample(model, processor, prompts, 2, 20, fast=fast)
    assert torch.equal(plain[0], got[0]) and fast.broken
    assert len([w for w in caught if "decode.py" in str(w.message)]) == 1
    assert used.count(fast.model) >= 2                                 # both calls on the copy


def test_a_sampler_that_cannot_be_built_leaves_the_run_on_the_plain_path(tiny, monkeypatch):
    import config
    import eval as eval_py
    model = tiny[0]
    cuda = torch.device("cuda")
    built = []
    monkeypatch.setattr(decode, "FastSampler", lambda m, dtype, **kw: built.append(kw) or "fast")
    args = config.get_args(["--no_compile", "--no_cuda_graphs"])
    assert decode.for_run(model, args, cuda) == "fast" and built[-1] == {"compile": False, "graphs": False}
    assert decode.for_run(model, config.get_args([]), cuda) == "fast" and built[-1] == {"compile": True,
                                                                                          "graphs": True}
    eargs = eval_py.get_args(["--plain_generate", "--no_compile"])
    assert decode.for_run(model, eargs, cuda) is None and decode.for_run(model, args, torch.device("cpu")) is None

    def fails(m, dtype, **kw):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
    monkeypatch.setattr(decode, "FastSampler", fails)
    with pytest.warns(UserWarning, match="building the fast sampler failed .*OutOfMemoryError.*HF generate"):
        assert decode.for_run(model, args, cuda) is None


def test_the_switches_turn_compile_and_graphs_off(tiny):
    fast = decode.FastSampler(tiny[0], torch.float32, compile=False, graphs=False)
    assert fast._attn_in is decode.attn_in and fast._choose is sampler.choose and fast.graphs is None
    assert decode.FastSampler(tiny[0], torch.float32, compile=True)._attn_in is not decode.attn_in


def test_a_compile_error_during_a_capture_is_raised_not_swallowed(monkeypatch):
    """Eager code inside a broken capture would record garbage and turn compile off for good: while
    a capture is on, the error goes to the capture's own fallback; outside one, fn runs eagerly."""
    def fn(x):
        return x + 1

    def broken(f, dynamic):
        def run(*a):
            raise RuntimeError("Inductor failed (simulated)")
        return run
    monkeypatch.setattr(torch, "compile", broken)
    failures = []
    step = decode.compiled(fn, lambda what, e, then: failures.append(what))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    with pytest.raises(RuntimeError, match="simulated"):
        step(1)
    assert not failures
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    assert step(1) == 2 and step(2) == 3 and failures == ["torch.compile(fn)"]   # eager from now on, said once


# -----------------------------------------------------------------------------
# the static cache's size


def test_the_cache_keeps_rows_times_length_within_the_budget(tiny, examples, tmp_path):
    """A call with more rows and one with a longer length: never the larger rows x the larger length
    beyond the budget; a budget under two rows splits the calls; under one row, HF generate() takes it."""
    model, processor, _ = tiny
    prompts = varied_prompts(processor, examples, tmp_path)
    fast = decode.FastSampler(model, torch.float32)
    gb = lambda tokens: tokens * fast.kv_bytes / 2 ** 30                    # noqa: E731
    budget = 6 * 256
    for n_prompts, new in ((3, 10), (1, 300)):                              # 6 rows x 128, then 2 x 384+
        kw = dict(temperature=1.0, top_p=0.9, seed=3)
        want = rollout.sample(model, processor, prompts[:n_prompts], 2, new, **kw)[0]
        got = rollout.sample(model, processor, prompts[:n_prompts], 2, new, kv_cache_gb=gb(budget), fast=fast,
                             **kw)[0]
        assert torch.equal(want, got) and fast.rows * fast.length <= budget, (fast.rows, fast.length)
    assert (fast.rows, fast.allocations) == (2, 2)
    fast = decode.FastSampler(model, torch.float32)
    kw = dict(temperature=1.0, top_p=0.9, seed=4)
    want = rollout.sample(model, processor, prompts, 2, 10, **kw)[0]
    assert torch.equal(want, rollout.sample(model, processor, prompts, 2, 10, kv_cache_gb=gb(256), fast=fast,
                                            **kw)[0])
    assert fast.rows == 2 and not fast.status["fallbacks"]                 # split: 2 rows x 128 a call
    with pytest.warns(UserWarning, match="fitting the KV budget failed"):
        assert torch.equal(want, rollout.sample(model, processor, prompts, 2, 10, kv_cache_gb=gb(100), fast=fast,
                                                **kw)[0])
