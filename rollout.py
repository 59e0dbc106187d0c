"""
rollout.py: the model as a sampler and a scorer.

    load_model(path)          a Qwen2.5-VL / Qwen3-VL model and processor: hub id, local
                              directory or the tiny demo model; image-only processor fallback
    encode(processor, ...)    one prompt (chat template + image) -> token ids and image tensors
    sample(model, ...)        G responses per prompt, batched, FSDP2-safe
    score(model, ...)         per response token: log-prob of the sampled token, entropy, and
                              optionally log-probs on a support and the model's own top-K ids

Layout of every scored batch: left-padded prompts, right-padded responses, so the response
sits in the last R columns of every row whatever the prompt lengths (tests/test_rollout.py
checks each row against an unpadded single-row forward). Rows go through the model in
micro-batches cut by a token budget. The lm_head is applied in chunks (loss.head_logprobs),
so no (tokens x vocabulary) tensor is ever kept for the backward pass.
Left out on purpose: a vLLM/SGLang engine (HF generate() is slow but exact and simple).
"""
import contextlib
import types

import torch

import loss

FORMAT_PROMPT = "First think inside <think> </think>, then give the final answer inside <answer> </answer>."

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
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    model = AutoModelForImageTextToText.from_pretrained(
        path, dtype=resolve_dtype(dtype, device), trust_remote_code=trust_remote_code,
        attn_implementation="sdpa")
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
# prompts


def prompt_text(processor, question, extra=None, instruct=True):
    """The chat-formatted prompt: image, question, format instruction, then the hint block.
    Student and tutor prompts differ only by `extra` (the hint block). instruct=False leaves the
    format instruction out (the hint generator asks for JSON instead)."""
    text = question.replace("<image>", "").strip() + ("\n" + FORMAT_PROMPT if instruct else "")
    if extra:
        text += "\n\n" + extra
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode(processor, question, images, extra=None, instruct=True):
    """One prompt -> dict(input_ids (P,), mm_token_type_ids (P,), pixel_values, image_grid_thw).

    Several images are supported by repeating the image part of the template; the tiny demo
    and most benchmarks use one."""
    text = prompt_text(processor, question, extra, instruct)
    if len(images) > 1:
        one = "<|vision_start|><|image_pad|><|vision_end|>"
        text = text.replace(one, one * len(images), 1)
    out = processor(text=[text], images=images, return_tensors="pt", return_mm_token_type_ids=True)
    image_token = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    ids = out["input_ids"][0]
    mm = out.get("mm_token_type_ids")
    mm = mm[0] if mm is not None else (ids == image_token).long()
    return {"input_ids": ids, "mm_token_type_ids": mm.long(),
            "pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}


def resized_size(processor, image):
    """(width, height) of the image as the processor resizes it (for Qwen2.5-VL pixel boxes)."""
    grid = processor.image_processor(images=[image], return_tensors="pt")["image_grid_thw"][0]
    patch = processor.image_processor.patch_size
    return int(grid[2]) * patch, int(grid[1]) * patch


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
        ids = torch.cat([ids, responses.masked_fill(~response_mask, pad_id)], dim=1)
        attn = torch.cat([attn, response_mask.long()], dim=1)
        mm = torch.cat([mm, torch.zeros_like(responses)], dim=1)
    return {"input_ids": ids.to(device), "attention_mask": attn.to(device), "mm_token_type_ids": mm.to(device),
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


class RowSampler:
    """A logits processor that samples each row from its own random stream.

    HF's sampler draws from one global stream, so a row's tokens would depend on which rows
    share its batch (micro-batch cuts, data split across ranks). Here row r at step t uses a
    generator seeded by (row_keys[r], t): the same prompt row gets the same tokens however
    the rows are batched or sharded. It applies temperature and top-p, samples by Gumbel-max,
    and returns scores that leave only the chosen token, for generate(do_sample=False)."""

    def __init__(self, row_keys, temperature, top_p, banned):
        self.row_keys, self.temperature, self.top_p, self.banned = row_keys, temperature, top_p, banned

    def __call__(self, input_ids, scores):
        scores = scores.float()
        scores[:, self.banned] = float("-inf")
        if self.temperature <= 0:
            choice = scores.argmax(-1)
        else:
            logits = scores / self.temperature
            if self.top_p < 1.0:
                sorted_logits, order = logits.sort(dim=-1, descending=True)
                cum = sorted_logits.softmax(-1).cumsum(-1)
                drop = cum - sorted_logits.softmax(-1) > self.top_p   # keep the smallest set reaching top_p
                logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
            step = input_ids.shape[1]
            noise = torch.empty_like(logits)
            for r, key in enumerate(self.row_keys):
                g = torch.Generator(device=logits.device).manual_seed((key * 1_000_003 + step) % (2 ** 63))
                noise[r].exponential_(generator=g)
            choice = (logits - noise.log()).argmax(-1)             # Gumbel-max: -log(Exp(1)) ~ Gumbel
        out = torch.full_like(scores, float("-inf"))
        return out.scatter(-1, choice.unsqueeze(-1), 0.0)


@torch.no_grad()
def sample(model, processor, prompts, group_size, max_new_tokens, temperature=1.0, top_p=1.0,
           token_budget=16384, seed=0, prompt_ids=None, progress=None):
    """group_size responses per prompt. Returns (B*G, R) ids right-padded, (B*G, R) mask.

    Each response ends with EOS unless cut at max_new_tokens. Row order: prompt-major
    (the G responses of prompt 0, then of prompt 1, ...), the layout group_advantages expects.
    Response g of prompt p depends only on (seed, prompt_ids[p], g): give each prompt its index
    in the global batch and a data-parallel run samples exactly what one process would."""
    from transformers import LogitsProcessorList
    tok = processor.tokenizer
    eos, pad = tok.convert_tokens_to_ids("<|im_end|>"), tok.pad_token_id
    rows = [p for p in prompts for _ in range(group_size)]
    pids = list(range(len(prompts))) if prompt_ids is None else list(prompt_ids)
    row_keys = [seed * 7_919 + pid * group_size + g for pid in pids for g in range(group_size)]
    lengths = [len(p["input_ids"]) + max_new_tokens for p in rows]
    device = next(model.parameters()).device
    banned = vision_token_ids(tok)
    out = []
    with gathered(model):
        for idx in micro_batches(lengths, token_budget):
            batch = collate([rows[i] for i in idx], pad, device=device)
            keys = [row_keys[i] for i in idx]
            procs = LogitsProcessorList([RowSampler(keys, temperature, top_p, banned)])
            gen = model.generate(**batch, do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=eos,
                                 pad_token_id=pad, logits_processor=procs, top_k=None, top_p=None,
                                 temperature=None)
            out += list(gen[:, batch["input_ids"].shape[1]:].cpu())
            if progress is not None:
                progress.update(len(idx))
    return pad_responses(out, eos, pad)


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
    R = max(1, max(len(s) for s in cut))
    ids = torch.full((len(cut), R), pad, dtype=torch.long)
    mask = torch.zeros((len(cut), R), dtype=torch.bool)
    for i, s in enumerate(cut):
        ids[i, :len(s)] = s
        mask[i, :len(s)] = True
    return ids, mask


@torch.no_grad()
def generate_text(model, processor, images, texts, max_new_tokens=256, temperature=0.0, seed=0):
    """Free-form replies to arbitrary prompts (used by make_hints.py). images: a list of PIL
    images per prompt."""
    prompts = [encode(processor, t, imgs, instruct=False) for imgs, t in zip(images, texts)]
    ids, mask = sample(model, processor, prompts, 1, max_new_tokens, temperature, seed=seed)
    return [processor.tokenizer.decode(r[m], skip_special_tokens=True) for r, m in zip(ids, mask)]

# -----------------------------------------------------------------------------
# scoring


def _score_forward(self, batch, response_ids, response_mask, support=None, union_with=None, topk=0,
                   temperature=1.0, chunk_size=256):
    """Runs inside the FSDP2 root's forward hooks (see attach_scorer). Shapes: (B, R[, K])."""
    R = response_ids.shape[1]
    hidden = self.model(**batch, use_cache=False).last_hidden_state     # (B, P+R, D)
    hidden = hidden[:, -R - 1:-1]                                       # predicts response tokens
    m = response_mask
    weight = self.get_output_embeddings().weight
    out = loss.head_logprobs(hidden[m], weight, response_ids[m],
                             support=support[m] if support is not None else None,
                             union_with=union_with[m] if union_with is not None else None,
                             topk=topk, temperature=temperature, chunk_size=chunk_size)
    return {k: (None if v is None else _unflatten(v, m)) for k, v in out.items()}


def _unflatten(flat, mask):
    full = flat.new_zeros(mask.shape + flat.shape[1:])
    full[mask] = flat
    return full


def attach_scorer(model):
    """Give the model a `ptd_score` method. Under FSDP2 it is registered as a forward method
    (train.shard does that) so the root's parameters are gathered around it like forward()."""
    model.ptd_score = types.MethodType(_score_forward, model)


def score(model, prompts, response_ids, response_mask, support=None, union_with=None, topk=0,
          temperature=1.0, token_budget=16384, chunk_size=256, grad=False):
    """Per-token scores of responses under `model`, micro-batched by token budget.

    prompts: B encoded prompts; response_ids, response_mask: (B, R). support: (B, R, M) ids to
    score; union_with: (B, R, K) ids to unite with the model's own top-K (the tutor's support).
    Returns dict of (B, R[, M]) tensors: logp, entropy, support_logp, topk_ids, support_ids,
    support_mask. With grad=True, call it per micro-batch yourself (train.py does) so each
    micro-batch's graph is freed by its own backward.
    """
    device = next(model.parameters()).device
    pad = 0
    lengths = [len(p["input_ids"]) + response_ids.shape[1] for p in prompts]
    parts = []
    ctx = contextlib.nullcontext() if grad else torch.no_grad()
    with ctx:
        for idx in micro_batches(lengths, token_budget):
            r_ids, r_mask = response_ids[idx].to(device), response_mask[idx].to(device)
            batch = collate([prompts[i] for i in idx], pad, r_ids, r_mask, device)
            parts.append(model.ptd_score(batch, r_ids, r_mask,
                                         support=support[idx].to(device) if support is not None else None,
                                         union_with=union_with[idx].to(device) if union_with is not None else None,
                                         topk=topk, temperature=temperature, chunk_size=chunk_size))
    return {k: (None if parts[0][k] is None else torch.cat([p[k] for p in parts])) for k in parts[0]}
