"""
rollout.py: the model as a sampler and a scorer.

    load_model(path)          a Qwen2.5-VL / Qwen3-VL model and processor: hub id, local
                              directory or the tiny demo model; image-only processor fallback
    encode(processor, ...)    one prompt (chat template + image) -> token ids and image tensors
                              (tutor.py's, re-exported here with open_images, prompt_text)
    sample(model, ...)        G responses per prompt, batched by KV-cache budget, FSDP2-safe,
                              exactly softmax(logits / T) restricted to the top-p nucleus
                              (score() returns the full-softmax log-probs, as verl does);
                              HF generate() here, decode.py's fast loop when given one (CUDA)
    score(model, ...)         per response token: log-prob of the sampled token, and optionally
                              entropy, log-probs on a support and the model's own top-K ids

Layout of every scored batch: left-padded prompts, right-padded responses, so the response
sits in the last R columns of every row whatever the prompt lengths (tests/test_rollout.py
checks each row against an unpadded single-row forward). Rows go through the model in
micro-batches cut by a token budget. The lm_head is applied in chunks (loss.head_logprobs),
so no (tokens x vocabulary) tensor is ever kept for the backward pass.
Left out on purpose: a vLLM/SGLang engine (its own sampler cannot replay our per-row streams,
so its samples would not be exactly on-policy); decode.py is the fast path instead.
"""
import contextlib
import math
import os
import types

import torch

import loss
from sampler import RowSampler, row_keys
from tutor import (FORMAT_PROMPT, FORMAT_PROMPT_THINKING, IMAGE,  # noqa: F401 (re-exported)
                   encode, open_images, opens_think, prompt_text, resized_size)

EOS = "<|im_end|>"               # Qwen chat turns end here; generation stops at it
SCORER = "ptd_score"             # the scoring method attached to a model (an FSDP2 forward method)

# -----------------------------------------------------------------------------
# loading


def resolve_dtype(dtype, device):
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def load_processor(path, trust_remote_code=False):
    """The stock processor, or an image-only one when the stock one cannot be built
    (the Qwen video processors need torchvision, which a CPU machine may not have)."""
    from transformers import AutoConfig, AutoProcessor, AutoTokenizer
    try:
        return AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as e:  # ImportError / ValueError from the video processor
        first_error = e
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessorPil, Qwen3VLProcessor
    model_type = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code).model_type
    cls = {"qwen3_vl": Qwen3VLProcessor, "qwen2_5_vl": Qwen2_5_VLProcessor}.get(model_type)
    if cls is None:
        raise RuntimeError(f"cannot build a processor for {path} ({model_type}): {first_error}")
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    return image_only_processor(cls, Qwen2VLImageProcessorPil.from_pretrained(path), tok)


def image_only_processor(cls, image_processor, tokenizer, chat_template=None):
    """A Qwen processor with no video processor. The stock constructor insists on checking the
    video processor's class, which imports torchvision; this skips only that check and then
    restores the stock class, so save_pretrained writes a normal Qwen processor config."""
    class _ImageOnly(cls):
        def check_argument_for_proper_class(self, name, arg):
            return None if arg is None else super().check_argument_for_proper_class(name, arg)
    proc = _ImageOnly(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                      chat_template=chat_template or tokenizer.chat_template)
    proc.__class__ = cls
    return proc


def load_model(path, dtype="auto", device="auto", trust_remote_code=False):
    """(model, processor) from a hub id or a local directory, in eval mode, on device."""
    from transformers import AutoModelForImageTextToText
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    try:
        model = AutoModelForImageTextToText.from_pretrained(
            path, dtype=resolve_dtype(dtype, device), trust_remote_code=trust_remote_code,
            attn_implementation="sdpa")
    except OSError as e:   # a missing directory reads as a malformed hub id: say what was meant
        where = "no such directory" if not os.path.isdir(path) \
            else "no loadable model in that directory"
        raise SystemExit(f"cannot load model {path!r}: {where}, and not a reachable hub id "
                         f"({str(e).splitlines()[0][:200]})") from None
    model.to(device).eval()
    attach_scorer(model)
    return model, load_processor(path, trust_remote_code)


def save_processor(processor, out_dir):
    """save_pretrained, or its parts (tokenizer + image processor) for an image-only one."""
    if getattr(processor, "video_processor", None) is not None:
        processor.save_pretrained(out_dir)
    else:
        processor.tokenizer.save_pretrained(out_dir)
        processor.image_processor.save_pretrained(out_dir)


def box_format(model):
    """How the model family writes boxes: Qwen3-VL 0-1000 normalised, Qwen2.5-VL pixels."""
    return "norm1000" if model.config.model_type.startswith("qwen3") else "pixels"

# -----------------------------------------------------------------------------
# prompt lengths and batches (the prompt itself: tutor.py)


def smart_resize(height, width, factor, min_pixels, max_pixels):
    """The size a Qwen-VL image processor resizes an image to (sides multiples of factor, pixel
    count within bounds), written out here so lengths can be counted without decoding pixels.
    tests/test_rollout.py checks it against the processor's own image grids."""
    if max(height, width) / min(height, width) > 200:
        ratio = max(height, width) / min(height, width)
        raise ValueError(f"aspect ratio {ratio:.0f} over Qwen-VL's limit of 200")
    h, w = round(height / factor) * factor, round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


def prompt_length(processor, question, image_sizes):
    """Tokens of encode(processor, question, images) from the images' (width, height) alone,
    without decoding pixels (checking a 39k-problem dataset must not open 39k images)."""
    ip = processor.image_processor
    factor = ip.patch_size * ip.merge_size
    text = prompt_text(processor, question, n_images=len(image_sizes))
    n = len(processor.tokenizer(text)["input_ids"])
    for w, h in image_sizes:
        rh, rw = smart_resize(h, w, factor, ip.size["shortest_edge"], ip.size["longest_edge"])
        n += (rh // factor) * (rw // factor) - 1      # one <|image_pad|> becomes the image's tokens
    return n


def decode(processor, ids, mask):
    """Response texts of (N, R) ids under their mask, special tokens dropped."""
    return processor.tokenizer.batch_decode([r[m] for r, m in zip(ids, mask)],
                                            skip_special_tokens=True)


def eos_id(processor):
    return processor.tokenizer.convert_tokens_to_ids(EOS)


def collate(prompts, pad_id, responses=None, response_mask=None, device="cpu"):
    """Left-pad prompts (and append right-padded responses (B, R)) into one model input."""
    P = max(len(p["input_ids"]) for p in prompts)
    B = len(prompts)
    ids = torch.full((B, P), pad_id, dtype=torch.long)
    attn = torch.zeros((B, P), dtype=torch.long)
    mm = torch.zeros((B, P), dtype=torch.long)
    for i, p in enumerate(prompts):
        n = len(p["input_ids"])
        ids[i, P - n:] = p["input_ids"]
        attn[i, P - n:] = 1
        mm[i, P - n:] = p["mm_token_type_ids"]
    if responses is not None:
        responses, response_mask = responses.cpu(), response_mask.cpu()
        ids = torch.cat([ids, responses.masked_fill(~response_mask, pad_id)], dim=1)
        attn = torch.cat([attn, response_mask.long()], dim=1)
        mm = torch.cat([mm, torch.zeros_like(responses)], dim=1)
    return {"input_ids": ids.to(device), "attention_mask": attn.to(device),
            "mm_token_type_ids": mm.to(device),
            "pixel_values": torch.cat([p["pixel_values"] for p in prompts]).to(device),
            "image_grid_thw": torch.cat([p["image_grid_thw"] for p in prompts]).to(device)}


def micro_batches(lengths, token_budget):
    """Cut consecutive rows into micro-batches whose padded size (rows x longest) fits the budget.
    A row longer than the budget gets a micro-batch of its own."""
    batches, cur, longest = [], [], 0
    for i, n in enumerate(lengths):
        if cur and (len(cur) + 1) * max(longest, n) > token_budget:
            batches.append(cur)
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, n)
    if cur:
        batches.append(cur)
    return batches

# -----------------------------------------------------------------------------
# sampling


def fsdp_modules(model):
    from torch.distributed.fsdp import FSDPModule
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextlib.contextmanager
def gathered(model):
    """Hold every FSDP2 shard unsharded while inside: generate() then runs with no collective
    per token, and ranks that stop at different lengths cannot deadlock. Costs one full copy
    of the parameters per rank for the duration (fine up to ~8B in bf16 on 80 GB)."""
    mods = fsdp_modules(model)
    for m in mods:
        m.set_reshard_after_forward(False)
        m.unshard()
    try:
        yield
    finally:
        for m in mods:
            m.reshard()
            m.set_reshard_after_forward(True)


@contextlib.contextmanager
def plain_generation(model):
    """generate() fills every option we leave unset from model.generation_config, and real
    checkpoints ship repetition_penalty (Qwen2.5-VL-Instruct: 1.05), top_k, and so on. Any of
    those would make the sampled distribution differ from softmax(logits / T) (off-policy
    by design, silently). So, while sampling, the model's config is an empty GenerationConfig."""
    from transformers import GenerationConfig
    saved = model.generation_config
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = saved


def kv_bytes_per_token(model):
    """KV-cache bytes one token costs in generate(): 2 (K, V) x layers x KV heads x head dim x
    bytes per value. Qwen3-VL-2B in bf16: 2 x 28 x 8 x 128 x 2 = 114,688 (112 KiB). Call it
    where the parameters are in compute dtype (inside gathered(): bf16, not the fp32 master)."""
    c = model.config.get_text_config()
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    kv_heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    return 2 * c.num_hidden_layers * kv_heads * head_dim * next(model.parameters()).element_size()


@torch.no_grad()
def sample(model, processor, prompts, group_size, max_new_tokens, temperature=1.0, top_p=1.0,
           kv_cache_gb=32.0, seed=0, prompt_ids=None, progress=None, fast=None):
    """group_size responses per prompt. Returns (B*G, R) ids right-padded, (B*G, R) mask.

    Each response ends with EOS unless cut at max_new_tokens. Row order: prompt-major
    (the G responses of prompt 0, then of prompt 1, ...), the layout group_advantages expects.
    Response g of prompt p depends only on (seed, prompt_ids[p], g): give each prompt its index
    in the global batch and a data-parallel run samples exactly what one process would.
    Rows go to generate() in calls whose KV cache (rows x (prompt + max_new_tokens) tokens)
    fits in kv_cache_gb: decoding is memory-bound, so the more rows per call the better.
    fast: a decode.FastSampler (train.py builds one on CUDA). Each generation batch then goes to
    its static-cache, graph-captured loop instead of generate(): the same tokens, from the same
    streams, ~10x sooner (tests/test_decode.py proves the equality on CPU).
    progress: anything with update(n), e.g. a tqdm bar; advanced by the rows of each call."""
    tok = processor.tokenizer
    eos, pad = eos_id(processor), tok.pad_token_id
    rows = [p for p in prompts for _ in range(group_size)]
    pids = list(range(len(prompts))) if prompt_ids is None else list(prompt_ids)
    keys = row_keys(seed, pids, group_size)
    lengths = [len(p["input_ids"]) + max_new_tokens for p in rows]
    device = next(model.parameters()).device
    banned = vision_token_ids(tok)
    gen_model = model if fast is None else fast.model
    out = []
    # the fast path samples from its own copy of the weights: no shard to gather
    with gathered(model) if fast is None else contextlib.nullcontext(), plain_generation(gen_model):
        budget = int(kv_cache_gb * 2 ** 30 / kv_bytes_per_token(gen_model))
        if fast is not None:   # its static cache: whole attention windows, within free memory
            budget, lengths = fast.token_budget(budget), [fast.padded(n) for n in lengths]
        for idx in micro_batches(lengths, budget):
            batch = collate([rows[i] for i in idx], pad, device=device)
            call = (batch, keys[idx], max_new_tokens, temperature, top_p, banned, eos)
            gen = fast.generate(*call, max_tokens=budget) if fast is not None else None
            # the plain path, or a batch the fast one hands back (decode.FastSampler.generate)
            if gen is None:
                gen = hf_generate(gen_model, *call, pad)
            out += list(gen.cpu())
            if progress is not None:
                progress.update(len(idx))
    return pad_responses(out, eos, pad)


def hf_generate(model, batch, keys, max_new_tokens, temperature, top_p, banned, eos, pad):
    """HF generate() on one left-padded batch, each token drawn by RowSampler: (B, new) ids."""
    from transformers import LogitsProcessorList
    width = batch["input_ids"].shape[1]
    procs = LogitsProcessorList([RowSampler(keys, temperature, top_p, banned, width)])
    gen = model.generate(**batch, do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=eos,
                         pad_token_id=pad, logits_processor=procs)
    return gen[:, width:]


def vision_token_ids(tok):
    """Image/video placeholder ids: a response must never contain them (the forward pass
    would look for pixels to put there), so sampling suppresses them."""
    names = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
    ids = [tok.convert_tokens_to_ids(n) for n in names]
    return [i for i in ids if i is not None and i != tok.unk_token_id]


def pad_responses(seqs, eos, pad):
    """Cut each sequence after its first EOS, right-pad to the longest: ids (N, R), mask (N, R)."""
    cut = []
    for s in seqs:
        hits = (s == eos).nonzero()
        cut.append(s[: int(hits[0]) + 1] if len(hits) else s)
    R = max([1] + [len(s) for s in cut])
    ids = torch.full((len(cut), R), pad, dtype=torch.long)
    mask = torch.zeros((len(cut), R), dtype=torch.bool)
    for i, s in enumerate(cut):
        ids[i, :len(s)] = s
        mask[i, :len(s)] = True
    return ids, mask


@torch.no_grad()
def generate_text(model, processor, images, texts, max_new_tokens=256, temperature=0.0, seed=0):
    """Free-form replies to arbitrary prompts (used by scripts/make_hints.py). images: a list of
    PIL images per prompt."""
    prompts = [encode(processor, t, imgs, instruct=False) for imgs, t in zip(images, texts)]
    ids, mask = sample(model, processor, prompts, 1, max_new_tokens, temperature, seed=seed)
    return decode(processor, ids, mask)

# -----------------------------------------------------------------------------
# scoring


def _score_forward(self, batch, response_ids, response_mask, support=None, union_with=None, topk=0,
                   temperature=1.0, chunk_size=256, entropy=False):
    """Runs inside the FSDP2 root's forward hooks (see attach_scorer). Shapes: (B, R[, K])."""
    R = response_ids.shape[1]
    hidden = self.model(**batch, use_cache=False).last_hidden_state     # (B, P+R, D)
    hidden = hidden[:, -R - 1:-1]                                       # predicts response tokens
    m = response_mask
    weight = self.get_output_embeddings().weight
    out = loss.head_logprobs(hidden[m], weight, response_ids[m],
                             support=support[m] if support is not None else None,
                             union_with=union_with[m] if union_with is not None else None,
                             topk=topk, temperature=temperature, chunk_size=chunk_size,
                             entropy=entropy)
    return {k: (None if v is None else _unflatten(v, m)) for k, v in out.items()}


def _unflatten(flat, mask):
    full = flat.new_zeros(mask.shape + flat.shape[1:])
    full[mask] = flat
    return full


def attach_scorer(model):
    """Give the model a SCORER method. Under FSDP2 it is registered as a forward method
    (train.shard does that) so the root's parameters are gathered around it like forward()."""
    setattr(model, SCORER, types.MethodType(_score_forward, model))


def score(model, prompts, response_ids, response_mask, support=None, union_with=None, topk=0,
          temperature=1.0, token_budget=16384, chunk_size=256, grad=False, entropy=False):
    """Per-token scores of responses under `model`, micro-batched by token budget.

    prompts: B encoded prompts; response_ids, response_mask: (B, R). support: (B, R, M) ids to
    score; union_with: (B, R, K) ids to unite with the model's own top-K (the tutor's support).
    Returns dict of (B, R[, M]) tensors: logp, entropy (when asked), support_logp, topk_ids,
    support_ids, support_mask (None where not asked for). With grad=True, call it per micro-batch
    yourself (train.py does) so each micro-batch's graph is freed by its own backward.

    Why the hops (score -> model.SCORER = _score_forward -> loss.head_logprobs -> a checkpointed
    chunk): FSDP2 gathers a root's parameters only around forward() and the methods registered
    with register_fsdp_forward_method (train.shard), so the scoring code must be such a method
    on the model, not a free function (the lm_head weight lives in the root). It stops at the
    decoder's last hidden states so that head_logprobs can apply the lm_head chunk by chunk and
    never hold a (tokens x V) tensor; the chunk is checkpointed so backward recomputes it.
    """
    device = next(model.parameters()).device
    pad = 0
    if not prompts:   # nothing to score on this rank; still take part in the gathering collectives
        with contextlib.nullcontext() if grad else gathered(model):
            pass
        return {"logp": torch.zeros(response_ids.shape), "entropy": None, "support_logp": None,
                "support_ids": None, "support_mask": None, "topk_ids": None}
    lengths = [len(p["input_ids"]) + response_ids.shape[1] for p in prompts]
    parts = []
    # no grad: hold the shards gathered for the whole pass (one all-gather, not one per micro-batch)
    ctx = contextlib.nullcontext() if grad else contextlib.ExitStack()
    if not grad:
        ctx.enter_context(torch.no_grad())
        ctx.enter_context(gathered(model))
    with ctx:
        for idx in micro_batches(lengths, token_budget):
            r_ids, r_mask = response_ids[idx].to(device), response_mask[idx].to(device)
            batch = collate([prompts[i] for i in idx], pad, r_ids, r_mask, device)
            on = lambda t: None if t is None else t[idx].to(device)   # noqa: E731
            parts.append(getattr(model, SCORER)(batch, r_ids, r_mask, support=on(support),
                                                union_with=on(union_with), topk=topk,
                                                temperature=temperature, chunk_size=chunk_size,
                                                entropy=entropy))
    return {k: (None if parts[0][k] is None else torch.cat([p[k] for p in parts]))
            for k in parts[0]}


def score_rows(model, prompts, response_ids, response_mask, rows, union_with=None, **kw):
    """score() on the rows where rows (N,) is True, placed in full-size zero tensors (N, R[, M]);
    None where score() gives None (nothing of that kind asked, or no row wanted here). prompts,
    union_with: per row (N). Every rank calls it, even with no row wanted here: the scoring takes
    part in FSDP's gathering collectives, and a rank that skipped it would hang the others."""
    sel = rows.nonzero().squeeze(-1)
    part = score(model, [prompts[i] for i in sel.tolist()], response_ids[sel], response_mask[sel],
                 union_with=None if union_with is None else union_with[sel], **kw)
    out = {}
    for k, v in part.items():
        if v is not None:
            out[k] = torch.zeros((len(rows), *v.shape[1:]), dtype=v.dtype)
            out[k][sel] = v.cpu()
        else:
            out[k] = None
    return out
