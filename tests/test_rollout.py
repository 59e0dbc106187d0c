"""rollout.py: padded batched scoring equals unpadded single-row forwards; sampling; loading."""
import pytest
import torch

import data
import rollout


def varied_prompts(processor, examples, tmp_path):
    """Rows with different questions, prompt lengths and image sizes."""
    sizes = [(96, 96), (64, 128), (128, 64), (160, 96)]
    prompts = []
    for i, ex in enumerate(examples[:4]):
        img = rollout.open_images(ex)[0].resize(sizes[i])
        q = ex["question"] + (" Look carefully." * i)
        prompts.append(rollout.encode(processor, q, [img]))
    return prompts


def ragged_responses(tok, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = [5, 11, 2, 8][:n]
    vocab = [i for i in range(20, len(tok)) if i not in rollout.vision_token_ids(tok)]
    seqs = [torch.tensor([vocab[j] for j in torch.randint(0, len(vocab), (L,), generator=g)]) for L in lengths]
    return rollout.pad_responses(seqs, eos=-1, pad=tok.pad_token_id)


def single_row_logp(model, prompt, response):
    """HF's own forward on [prompt + response], no padding, full logits: the reference."""
    ids = torch.cat([prompt["input_ids"], response]).unsqueeze(0)
    mm = torch.cat([prompt["mm_token_type_ids"], torch.zeros_like(response)]).unsqueeze(0)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=mm,
                       pixel_values=prompt["pixel_values"], image_grid_thw=prompt["image_grid_thw"]).logits[0]
    lp = logits[-len(response) - 1:-1].float().log_softmax(-1)
    return lp.gather(-1, response.unsqueeze(-1)).squeeze(-1), -(lp.exp() * lp).sum(-1)


def check_alignment(model, processor, examples, tmp_path):
    prompts = varied_prompts(processor, examples, tmp_path)
    ids, mask = ragged_responses(processor.tokenizer, len(prompts))
    out = rollout.score(model, prompts, ids, mask, token_budget=10 ** 6, entropy=True)
    for i, p in enumerate(prompts):
        ref_lp, ref_ent = single_row_logp(model, p, ids[i][mask[i]])
        assert torch.allclose(out["logp"][i][mask[i]], ref_lp, atol=1e-5), i
        assert torch.allclose(out["entropy"][i][mask[i]], ref_ent, atol=1e-4), i
        assert (out["logp"][i][~mask[i]] == 0).all()
    # micro-batching by a small token budget changes nothing
    small = rollout.score(model, prompts, ids, mask, token_budget=80)
    assert torch.allclose(small["logp"], out["logp"], atol=1e-5)


def test_scoring_matches_unpadded_single_row_forward_qwen3(tiny, examples, tmp_path):
    check_alignment(tiny[0], tiny[1], examples, tmp_path)


def test_scoring_matches_unpadded_single_row_forward_qwen25(tiny25, examples, tmp_path):
    check_alignment(tiny25[0], tiny25[1], examples, tmp_path)


def test_support_and_topk_scores(tiny, examples, tmp_path):
    model, processor, _ = tiny
    prompts = varied_prompts(processor, examples, tmp_path)[:2]
    ids, mask = ragged_responses(processor.tokenizer, 2)
    sup = torch.randint(0, len(processor.tokenizer), ids.shape + (7,))
    out = rollout.score(model, prompts, ids, mask, support=sup, topk=5)
    for i, p in enumerate(prompts):
        full = torch.cat([p["input_ids"], ids[i][mask[i]]]).unsqueeze(0)
        mm = torch.cat([p["mm_token_type_ids"], torch.zeros(int(mask[i].sum()), dtype=torch.long)]).unsqueeze(0)
        with torch.no_grad():
            lp = model(input_ids=full, mm_token_type_ids=mm, pixel_values=p["pixel_values"],
                       image_grid_thw=p["image_grid_thw"]).logits[0, -int(mask[i].sum()) - 1:-1].log_softmax(-1)
        assert torch.allclose(out["support_logp"][i][mask[i]], lp.gather(-1, sup[i][mask[i]]), atol=1e-5)
        assert torch.equal(out["topk_ids"][i][mask[i]], lp.topk(5, -1).indices)


def test_sampling_stops_at_eos_right_pads_and_is_seeded(tiny, examples):
    model, processor, _ = tiny
    prompts = [rollout.encode(processor, ex["question"], rollout.open_images(ex)) for ex in examples[:3]]
    a_ids, a_mask = rollout.sample(model, processor, prompts, 2, 12, temperature=1.0, seed=7)
    tiny_kv = 60 * rollout.kv_bytes_per_token(model) / 2 ** 30       # one row per generate() call
    b_ids, b_mask = rollout.sample(model, processor, prompts, 2, 12, temperature=1.0, seed=7, kv_cache_gb=tiny_kv)
    assert a_ids.shape[0] == 6 and torch.equal(a_ids, b_ids) and torch.equal(a_mask, b_mask)
    eos = rollout.eos_id(processor)
    for r, m in zip(a_ids, a_mask):
        n = int(m.sum())
        assert m[:n].all() and not m[n:].any()                # right-padded
        assert (r[:n - 1] != eos).all()                       # EOS only at the end
        assert not any(t in rollout.vision_token_ids(processor.tokenizer) for t in r[:n].tolist())


def test_a_prompt_samples_the_same_tokens_alone_or_beside_longer_ones(tiny, examples, tmp_path):
    """Left padding depends on the batch mates; the random stream must not."""
    model, processor, _ = tiny
    prompts = varied_prompts(processor, examples, tmp_path)            # 4 different prompt lengths
    assert len({len(p["input_ids"]) for p in prompts}) == 4
    together, tm = rollout.sample(model, processor, prompts, 3, 10, seed=11, top_p=0.9)
    for i, p in enumerate(prompts):
        alone, am = rollout.sample(model, processor, [p], 3, 10, seed=11, top_p=0.9, prompt_ids=[i])
        R = am.shape[1]
        assert torch.equal(alone, together[3 * i:3 * i + 3, :R]) and not tm[3 * i:3 * i + 3, R:].any()


def test_the_models_generation_config_cannot_change_what_is_sampled(tiny, examples):
    """Real checkpoints ship penalties (Qwen2.5-VL-Instruct: repetition_penalty 1.05); the
    sampler must draw from exactly the softmax that score() computes, nothing else."""
    model, processor, d = tiny
    penalised, _ = rollout.load_model(d, dtype="float32", device="cpu")
    penalised.generation_config.repetition_penalty = 3.0
    penalised.generation_config.no_repeat_ngram_size = 2
    prompts = [rollout.encode(processor, ex["question"], rollout.open_images(ex)) for ex in examples[:3]]
    a = rollout.sample(model, processor, prompts, 4, 16, seed=3)
    b = rollout.sample(penalised, processor, prompts, 4, 16, seed=3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert penalised.generation_config.repetition_penalty == 3.0       # restored afterwards


def test_micro_batches_respect_the_token_budget():
    lengths = [10, 30, 20, 50, 5, 100, 7]
    batches = rollout.micro_batches(lengths, 60)
    assert [i for b in batches for i in b] == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 60


def test_save_load_round_trip_gives_identical_logits(tiny, examples, tmp_path):
    model, processor, _ = tiny
    model.save_pretrained(tmp_path)
    rollout.save_processor(processor, tmp_path)
    model2, processor2 = rollout.load_model(str(tmp_path), dtype="float32", device="cpu")
    ex = examples[0]
    p1 = rollout.encode(processor, ex["question"], rollout.open_images(ex))
    p2 = rollout.encode(processor2, ex["question"], rollout.open_images(ex))
    assert torch.equal(p1["input_ids"], p2["input_ids"]) and torch.equal(p1["pixel_values"], p2["pixel_values"])
    with torch.no_grad():
        kw = {k: p1[k].unsqueeze(0) if k in ("input_ids", "mm_token_type_ids") else p1[k] for k in p1}
        assert torch.equal(model(**kw).logits, model2(**kw).logits)
