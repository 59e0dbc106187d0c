"""
toy.py: the embedded demo, built offline in code: a synthetic visual task and a tiny Qwen-VL.

The task: a 96x96 picture, a 3x3 grid of coloured shapes (10 colours, 8 shapes, no colour or shape
twice in a scene) with one cell framed in grey, in two buckets recorded as `category`:
    easy: 5-8 shapes   "What colour is the shape in the frame?"       answer: the framed shape's colour
    hard: 2 shapes     "What colour is the shape outside the frame?"  answer: the other shape's colour
    response: "<think>The star is in the frame.</think><answer>red</answer>"
The warm start teaches the student to read the framed shape (easy: right ~98% of the time) and
shows the hard questions only with their hint, so the student never practises them: asked one,
it reports the framed shape, the one word 'outside' making no difference to it. It is wrong,
and confidently so (~0.5% of samples right), so nearly every hard group of rollouts all fails and
GRPO's advantage is zero there. The hint names the shape outside the frame (and the framed one
as the distractor) and frames it in black on the tutor's copy of the image; with it the same
frozen model answers ~97% of the hard problems. That is the regime PTD-PO is for: failed rollouts
on problems the student never solves, and a tutor (the student's own initial weights plus the
hint) that can.

The model: a real Qwen3-VL (or Qwen2.5-VL) architecture from a hand-written config, ~1M
parameters, a byte-level BPE tokenizer trained here with the Qwen special tokens and chat
template, and an image-only processor (no torchvision needed). Saved with save_pretrained, so
rollout.load_model reads it exactly as it reads a real checkpoint.

    python toy.py --threads 1     # data + tiny model + warm start -> toy/ (deterministic)
    python toy.py --steps 0       # random weights only (what the model-side tests use)

The build ends with the diagnostics (toy/model/diagnostics.json: pass@1 per bucket for student,
tutor and blank image; the step-0 share of all-fail groups on training problems and the tutor's
score on them) and exits non-zero when the model misses the regime (REGIME below).
scripts/toy_seeds.py rebuilds it on several seeds. The shipped checkpoint in toy/model was made
by `python toy.py --threads 1` (seed 0).
Left out on purpose: cells named in words ("the top left cell": in 2,000 warm-start steps this
model never learnt to find a cell from its name, student = blank image), digits and counting
(it cannot read digits at this resolution in a CPU budget); video.
"""
import argparse
import json
import math
import os
import random
import sys
import time

import torch
from PIL import Image, ImageDraw

import data
import hints
import rollout

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DIR = os.path.join(HERE, "toy")

COLOURS = {"red": (220, 30, 30), "green": (30, 160, 60), "blue": (40, 70, 230), "yellow": (240, 210, 20),
           "purple": (130, 40, 170), "orange": (245, 135, 20), "pink": (250, 130, 200), "brown": (120, 70, 20),
           "cyan": (20, 200, 220), "grey": (130, 130, 130)}
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "star", "hexagon", "pentagon")
SIZE = 96   # every picture: 96 x 96 px, a 3 x 3 grid of 32 px cells, one merged vision token each (Qwen3-VL)
GRID = 3
MARK = (120, 120, 120)   # the task's own frame (2 px, grey), drawn in every picture; the hint's frame is black
# bucket: (fewest shapes, most shapes). easy: find the framed shape among 5-8; hard: two shapes, one framed,
# and the question asks for the other one
BUCKETS = {"easy": (5, 8), "hard": (2, 2)}

# -----------------------------------------------------------------------------
# the task


def draw_shape(draw, shape, box, fill):
    x1, y1, x2, y2 = box
    cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, y1), (x2, y2), (x1, y2)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, y1), (x2, cy), (cx, y2), (x1, cy)], fill=fill)
    elif shape == "cross":
        draw.rectangle([x1, cy - h / 6, x2, cy + h / 6], fill=fill)
        draw.rectangle([cx - w / 6, y1, cx + w / 6, y2], fill=fill)
    elif shape in ("star", "hexagon", "pentagon"):
        n, inner = {"star": (5, 0.45), "hexagon": (6, 1.0), "pentagon": (5, 1.0)}[shape]
        pts = []
        for k in range(2 * n if shape == "star" else n):
            r = (inner if k % 2 else 1.0) if shape == "star" else 1.0
            a = -math.pi / 2 + k * math.pi / (n if shape == "star" else n / 2)
            pts.append((cx + r * w / 2 * math.cos(a), cy + r * h / 2 * math.sin(a)))
        draw.polygon(pts, fill=fill)


def make_example(rng, bucket):
    """One scene and its question, answer, gold response and structured hint. Every picture has
    one cell framed in grey (part of the picture, the student sees it); no colour or shape repeats
    in a scene, so a blind guess pays 1/10.
        easy: 5-8 shapes  "What colour is the shape in the frame?"       (the framed one)
        hard: 2 shapes    "What colour is the shape outside the frame?"  (the other one)"""
    lo, hi = BUCKETS[bucket]
    k = rng.randint(lo, hi)
    cells = rng.sample([(x, y) for y in range(GRID) for x in range(GRID)], k)
    shapes = rng.sample(SHAPES, k)
    colours = rng.sample(sorted(COLOURS), k)
    img = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    cell = SIZE // GRID
    objects = []
    for (cx, cy), shape, colour in zip(cells, shapes, colours):
        side = cell * rng.uniform(0.7, 0.95)
        x1 = cx * cell + rng.uniform(0, cell - side)
        y1 = cy * cell + rng.uniform(0, cell - side)
        box = [round(x1), round(y1), round(x1 + side), round(y1 + side)]
        draw_shape(draw, shape, box, COLOURS[colour])
        objects.append({"shape": shape, "colour": colour, "cell": (cx, cy), "box": box})
    # objects[0] is the target; the framed one is the target (easy) or the other shape (hard)
    framed = objects[0] if bucket == "easy" else objects[1]
    fx, fy = framed["cell"]
    draw.rectangle([fx * cell, fy * cell, (fx + 1) * cell - 1, (fy + 1) * cell - 1], outline=MARK, width=2)
    t = objects[0]
    cx, cy = t["cell"]
    focus = {"box": [cx * cell, cy * cell, (cx + 1) * cell, (cy + 1) * cell], "role": "focus"}
    if bucket == "easy":
        question, where = "What colour is the shape in the frame?", "in the frame"
        regions = [{**focus, "label": "the framed shape"}]
        steps = ["Find the framed shape.", "Name the colour of its fill."]
    else:
        question, where = "What colour is the shape outside the frame?", "outside the frame"
        # the framed shape is the distractor: it is the one a reader who skips the word 'outside' reports
        regions = [{**focus, "label": "the shape outside the frame"},
                   {"box": framed["box"], "label": "the framed shape", "role": "distractor"}]
        steps = ["The question asks for the shape outside the frame, not the framed one.",
                 "Name the colour of its fill."]
    hint = {"regions": regions, "steps": steps, "frame": True}   # the tutor's copy: a black frame (hints.py)
    return img, {
        "question": question,
        "answer": t["colour"],
        "category": bucket,
        "hint": hint,
        "gold_response": f"<think>The {t['shape']} is {where}.</think><answer>{t['colour']}</answer>",
        "scene": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in o.items()} for o in objects],
        "framed": objects.index(framed),
    }


def write_split(out_dir, split, n, seed, hard_share):
    """Write n examples as <out_dir>/<split>.jsonl plus PNGs; deterministic for a seed. Example i
    is hard when floor((i + 1) * hard_share) > floor(i * hard_share): the buckets interleave
    evenly, so any prefix (eval.py --limit, train.py --eval_n) holds both in proportion."""
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    rng = random.Random(seed)
    path = os.path.join(out_dir, f"{split}.jsonl")
    tmp = f"{path}.{os.getpid()}.tmp"   # concurrent builders never share a temp file
    with open(tmp, "w") as f:
        for i in range(n):
            hard = math.floor((i + 1) * hard_share) > math.floor(i * hard_share)
            img, ex = make_example(rng, "hard" if hard else "easy")
            name = f"images/{split}_{i:05d}.png"
            img.save(os.path.join(out_dir, name))
            rec = {"id": f"{split}-{i}", "image": name, **ex}
            f.write(json.dumps(rec) + "\n")
    os.replace(tmp, path)
    return path


TASK_VERSION = 3   # bump when the task changes: toy.ensure() then redraws data left by older code


def build_data(out_dir, n_train=4000, n_eval=400, seed=0, hard_share=0.5):
    """Train split: hard_share of the problems hard, the rest easy; held-out split: half and half
    (a disjoint seed), so per-bucket accuracy is measured on equal numbers."""
    paths = (write_split(out_dir, "train", n_train, seed, hard_share),
             write_split(out_dir, "eval", n_eval, seed + 10_000, 0.5))
    with open(os.path.join(out_dir, "task.json"), "w") as f:
        json.dump({"version": TASK_VERSION, "seed": seed, "hard_share": hard_share}, f)
    return paths


def data_is_current(data_dir):
    try:
        with open(os.path.join(data_dir, "task.json")) as f:
            return json.load(f).get("version") == TASK_VERSION
    except (OSError, ValueError):
        return False

# -----------------------------------------------------------------------------
# the tiny model

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
           "<|image_pad|>", "<|video_pad|>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def tokenizer_corpus(rng):
    """Text the tokenizer is trained on: everything the demo's prompts and responses can say."""
    lines = [rollout.FORMAT_PROMPT, hints.EXPERT_PROMPT, "Hint:", "Look at:", "Ignore:",
             "The correct answer is:", "user", "assistant", "system"]
    for _ in range(3000):
        _, ex = make_example(rng, rng.choice(sorted(BUCKETS)))
        lines += [ex["question"], ex["gold_response"], hints.render_hint(ex["hint"], (SIZE, SIZE))]
    lines += [" ".join(str(i) for i in range(0, 1001, 7)), "{\"regions\": [], \"steps\": []}"]
    return lines


def build_tokenizer(vocab_size=1024, seed=0):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(tokenizer_corpus(random.Random(seed)), trainer)
    t = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                                                      "vision_bos_token": "<|vision_start|>",
                                                      "vision_eos_token": "<|vision_end|>"})
    t.chat_template = CHAT_TEMPLATE
    return t


def build_config(tok, family="qwen3"):
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL}
    common = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
                  tie_word_embeddings=True)
    text = dict(vocab_size=len(tok), hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=2048,
                bos_token_id=ids["<|im_start|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                rms_norm_eps=1e-6, tie_word_embeddings=True)
    if family == "qwen3":
        from transformers import Qwen3VLConfig
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0,
                                   "mrope_section": [6, 5, 5], "mrope_interleaved": True}
        vision = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=128,
                      patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                      deepstack_visual_indexes=[1])
        return Qwen3VLConfig(text_config=text, vision_config=vision, **common)
    if family == "qwen2.5":
        from transformers import Qwen2_5_VLConfig
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [6, 5, 5]}
        vision = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=128,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                      fullatt_block_indexes=[1])
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **common)
    raise ValueError(f"family must be qwen3 or qwen2.5, got {family!r}")


def build_processor(tok, family="qwen3"):
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessorPil, Qwen3VLProcessor
    patch = 16 if family == "qwen3" else 14
    # small images stay small: 64..256 merged tokens' worth of pixels
    side = patch * 2
    ip = Qwen2VLImageProcessorPil(patch_size=patch, merge_size=2, temporal_patch_size=2,
                                  size={"shortest_edge": 4 * side * side, "longest_edge": 64 * side * side},
                                  image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    cls = Qwen3VLProcessor if family == "qwen3" else Qwen2_5_VLProcessor
    return rollout.image_only_processor(cls, ip, tok, CHAT_TEMPLATE)


def build_model(out_dir, family="qwen3", seed=0):
    """A random-weight tiny model, tokenizer and processor, saved to out_dir."""
    from transformers import AutoModelForImageTextToText
    torch.manual_seed(seed)
    tok = build_tokenizer(seed=seed)
    config = build_config(tok, family)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    rollout.save_processor(build_processor(tok, family), out_dir)
    return out_dir


REAL_VOCAB = 151_936   # rows of a real Qwen2.5-VL / Qwen3-VL lm-head
THINKING_TEMPLATE = CHAT_TEMPLATE.replace("'<|im_start|>assistant\n'", "'<|im_start|>assistant\n<think>\n'")


def widen(model_dir, out_dir, vocab_size=REAL_VOCAB, thinking=False, seed=0):
    """A copy of a tiny model with a real-size vocabulary (and a Thinking chat template): the
    costs and tails of a 152k-token softmax without any download. The trained rows are kept;
    the new ones get small random embeddings (half the trained rows' std), so the model puts a
    few percent of its mass on them, as a real model spreads mass over rare tokens."""
    model, processor = rollout.load_model(model_dir, dtype="float32", device="cpu")
    old = model.get_input_embeddings().weight.data
    g = torch.Generator().manual_seed(seed)
    new = torch.randn(vocab_size - old.shape[0], old.shape[1], generator=g) * old.std() * 0.5
    model.resize_token_embeddings(vocab_size, mean_resizing=False)
    model.get_input_embeddings().weight.data[:] = torch.cat([old, new])
    model.tie_weights()
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    if thinking:
        processor.tokenizer.chat_template = processor.chat_template = THINKING_TEMPLATE
    rollout.save_processor(processor, out_dir)
    return out_dir


# -----------------------------------------------------------------------------
# warm start: supervised training on gold responses, half the prompts with the hint
#
# Why the picture's words get their own loss term. Of the ~19 response tokens only the shape word
# and the colour depend on the picture; the rest is format, learnt from the text alone in ~200
# steps. With the plain token-mean loss the picture's share of the gradient is then thin, and
# whether the model ever starts reading colours within the budget is down to the seed (on an
# earlier version of the task, seed 0 sat at the "ignore the picture" floor for all 1,200 steps).
# A second term, the mean loss over those grounded tokens alone, gives them a fixed share of the
# gradient whatever the response length.
#
# answer_smoothing (off by default) adds a cross-entropy to the uniform over the ten colours at the
# answer token, a student that is less sure of itself. With 0.1 the hard bucket's student puts
# ~2% on the right colour instead of ~0.1%; it did not make the JSD teach it (README, Results).


def grounded_tokens(tok, ex, eos):
    """(ids, mask, answer position) of an example's gold response + EOS; the mask marks the
    tokens that depend on the picture: the target's shape word and the answer."""
    gold, answer = ex["record"]["gold_response"], ex["answer"]
    shape = ex["record"]["scene"][0]["shape"]
    s0 = gold.index(f"The {shape} is") + len("The ")
    a0 = gold.index("<answer>") + len("<answer>")
    spans = [(s0, s0 + len(shape)), (a0, a0 + len(answer))]
    enc = tok(gold, return_offsets_mapping=True)
    mask = [any(s < e1 and e > s1 for s1, e1 in spans) for s, e in enc["offset_mapping"]] + [False]
    first = next(i for i, (s, e) in enumerate(enc["offset_mapping"]) if e > a0)
    return torch.tensor(enc["input_ids"] + [eos]), torch.tensor(mask), first


def warm_start(model_dir, train_path, steps=1000, batch_size=16, lr=2e-3, warmup=30, seed=0, threads=None,
               hint_share=0.5, grounded_weight=1.0, answer_smoothing=0.0):
    """Teach the random tiny model the task format, to read the picture, and to read hints in
    context. Hard problems are shown only with their hint (and frame); easy ones with it at
    hint_share, so that the frozen copy can act as the tutor on both; grounded_weight: weight of the
    grounded-token term (above)."""
    from tqdm import tqdm
    import tutor
    if threads:
        torch.set_num_threads(threads)
    model, processor = rollout.load_model(model_dir, dtype="float32", device="cpu")
    examples = data.load_jsonl(train_path, report=lambda s: None)
    tok = processor.tokenizer
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    fmt = rollout.box_format(model)
    colour_ids = torch.tensor([tok(c)["input_ids"][0] for c in sorted(COLOURS)])
    rng = random.Random(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    model.train()
    bar = tqdm(range(steps), desc="warm start")
    for step in bar:
        frac = step / max(1, steps - 1)
        scale = min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr * scale
        batch = rng.sample(examples, batch_size)
        # hard problems only ever with their hint: the student never practises them (they stand for
        # problems beyond it), the tutor learns to read them; easy ones with the hint at hint_share
        prompts = [tutor.tutor_prompt(processor, ex, fmt) if ex["category"] == "hard" or rng.random() < hint_share
                   else rollout.encode(processor, ex["question"], data.open_images(ex)) for ex in batch]
        resp, grounded, first = zip(*[grounded_tokens(tok, ex, eos) for ex in batch])
        ids, mask = rollout.pad_responses(list(resp), eos, tok.pad_token_id)
        gmask = torch.zeros_like(mask)
        for i, g in enumerate(grounded):
            gmask[i, :len(g)] = g
        support = colour_ids.expand(*ids.shape, -1) if answer_smoothing else None
        out = rollout.score(model, prompts, ids, mask, support=support, grad=True, token_budget=10 ** 9)
        token_loss = -(out["logp"] * mask).sum() / mask.sum()
        grounded_loss = -(out["logp"] * gmask).sum() / gmask.sum()
        loss = token_loss + grounded_weight * grounded_loss
        if answer_smoothing:   # cross-entropy to the uniform over the colours, at the answer token
            at = (torch.arange(len(batch)), torch.tensor(first))
            loss = loss - answer_smoothing * out["support_logp"][at].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        bar.set_postfix(loss=f"{token_loss.item():.3f}", grounded=f"{grounded_loss.item():.3f}")
    model.eval()
    model.save_pretrained(model_dir)
    return model, processor


def blank_like(ex, out_dir):
    """The example with a plain white image of the same size (the 'is it reading?' control)."""
    path = os.path.join(out_dir, "blank_%dx%d.png" % tuple(ex["image_size"]))
    if not os.path.exists(path):
        Image.new("RGB", tuple(ex["image_size"]), (255, 255, 255)).save(path)
    return {**ex, "images": [path]}


def prompts_of(processor, examples, variant, fmt, tmp_dir):
    """Encoded prompts of one diagnostic variant: student (no hint), tutor (hint + frame), or
    blank (the student's prompt on a white image)."""
    import tutor
    if variant == "tutor":
        return [tutor.tutor_prompt(processor, ex, fmt) for ex in examples]
    if variant == "blank":
        examples = [blank_like(ex, tmp_dir) for ex in examples]
    return [rollout.encode(processor, ex["question"], data.open_images(ex)) for ex in examples]


@torch.no_grad()
def diagnose(model, processor, examples, samples=1, temperature=1.0, max_new_tokens=32, seed=0, tmp_dir=None):
    """Held-out pass@1 of the student (no hint), the tutor (hint + frame), the student on a blank
    image, and the majority-answer baseline: overall and per bucket (`category`)."""
    import tempfile
    from collections import Counter
    fmt = rollout.box_format(model)
    tmp_dir = tmp_dir or tempfile.mkdtemp()
    buckets = sorted({ex.get("category") or "all" for ex in examples})
    res = {"by_bucket": {b: {} for b in buckets}}
    for name in ("student", "tutor", "blank"):
        prompts = prompts_of(processor, examples, name, fmt, tmp_dir)
        out = rollout.evaluate(model, processor, prompts, examples, samples, max_new_tokens, temperature, seed=seed)
        hits = out["correct"] / samples
        res[name] = hits.mean().item()
        for b in buckets:
            sel = torch.tensor([(ex.get("category") or "all") == b for ex in examples])
            res["by_bucket"][b][name] = hits[sel].mean().item()
    top = Counter(ex["answer"] for ex in examples).most_common(1)[0][1]
    res["majority"] = top / len(examples)
    return res


@torch.no_grad()
def group_regime(model, processor, examples, group_size=8, temperature=1.0, max_new_tokens=32, seed=0):
    """What GRPO sees at step 0 on training problems: the share of groups of group_size samples
    that all fail (no GRPO signal), all pass, or are mixed; and the tutor's pass@1 on the
    all-fail problems (what PTD-PO can still teach there)."""
    fmt = rollout.box_format(model)
    plain = prompts_of(processor, examples, "student", fmt, None)
    hits = rollout.evaluate(model, processor, plain, examples, group_size, max_new_tokens, temperature,
                            seed=seed)["correct"]
    fail = [ex for ex, c in zip(examples, hits.tolist()) if c == 0]
    res = {"group_size": group_size, "n_groups": len(examples),
           "all_fail": (hits == 0).float().mean().item(), "all_pass": (hits == group_size).float().mean().item()}
    res["mixed"] = 1.0 - res["all_fail"] - res["all_pass"]
    res["tutor_on_all_fail"] = float("nan")
    if fail:
        hinted = prompts_of(processor, fail, "tutor", fmt, None)
        out = rollout.evaluate(model, processor, hinted, fail, group_size, max_new_tokens, temperature, seed=seed + 1)
        res["tutor_on_all_fail"] = out["correct"].sum().item() / (group_size * len(fail))
    return res


def format_diagnostics(res, n):
    line = (f"held-out pass@1 on {n} examples (sampled, T=1): student {res['student']:.3f} | "
            f"tutor (hint) {res['tutor']:.3f} | student on blank image {res['blank']:.3f} | "
            f"majority answer {res['majority']:.3f}")
    for b, r in res.get("by_bucket", {}).items():
        line += f"\n  {b:5s}: student {r['student']:.3f} | tutor {r['tutor']:.3f} | blank {r['blank']:.3f}"
    g = res.get("groups")
    if g:
        line += (f"\ntraining groups at step 0 ({g['n_groups']} problems x {g['group_size']} samples): "
                 f"all-fail {g['all_fail']:.2f} | mixed {g['mixed']:.2f} | all-pass {g['all_pass']:.2f} | "
                 f"tutor pass@1 on the all-fail problems {g['tutor_on_all_fail']:.3f}")
    return line


# The regime PTD-PO is for, checked on the warm-started model. On the easy bucket the student
# reads the picture (clearly above its blank-image score); on training problems a large share of
# groups all fail (GRPO's advantage is zero there) while the tutor, the same weights with the
# hint, solves those problems.
REGIME = {"easy_over_blank": 0.10, "all_fail_min": 0.35, "all_fail_max": 0.55, "tutor_on_all_fail": 0.90}


def regime_failures(res, regime=REGIME):
    """What the diagnostics miss of the regime, as sentences ([] when it is met)."""
    out = []
    easy, g = res["by_bucket"]["easy"], res["groups"]
    if easy["student"] < easy["blank"] + regime["easy_over_blank"]:
        out.append(f"on the easy bucket the student ({easy['student']:.3f}) is not {regime['easy_over_blank']:.2f} "
                   f"above its blank-image score ({easy['blank']:.3f}): it does not read the picture")
    if not regime["all_fail_min"] <= g["all_fail"] <= regime["all_fail_max"]:
        out.append(f"{g['all_fail']:.2f} of the training groups all fail, outside "
                   f"[{regime['all_fail_min']:.2f}, {regime['all_fail_max']:.2f}]")
    if not g["tutor_on_all_fail"] >= regime["tutor_on_all_fail"]:     # nan (no all-fail group) fails too
        out.append(f"the tutor solves {g['tutor_on_all_fail']:.3f} of the all-fail problems, below "
                   f"{regime['tutor_on_all_fail']:.2f}: the hint does not help enough")
    return out


def check_regime(res):
    """Exit non-zero (SystemExit) with a plain message when the regime is not met."""
    failures = regime_failures(res)
    if failures:
        raise SystemExit("toy.py: the warm-started model misses the regime PTD-PO is for:\n  - "
                         + "\n  - ".join(failures)
                         + "\nTry another --seed, more --steps or another --hard_share.")


def ensure(out_dir=DEFAULT_DIR):
    """The demo's data and model directories, built (with warm start) if missing."""
    model_dir, data_dir = os.path.join(out_dir, "model"), os.path.join(out_dir, "data")
    if not data_is_current(data_dir):   # missing, or drawn by an older version of the task
        build_data(data_dir)
    if not os.path.exists(os.path.join(model_dir, "config.json")):
        main(["--out_dir", out_dir])
    return model_dir, os.path.join(data_dir, "train.jsonl"), os.path.join(data_dir, "eval.jsonl")


def main(argv=None):
    p = argparse.ArgumentParser(description="Build the embedded demo: task data, tiny model, warm start.")
    p.add_argument("--out_dir", default=DEFAULT_DIR, help="writes <out_dir>/data and <out_dir>/model")
    p.add_argument("--family", default="qwen3", choices=["qwen3", "qwen2.5"], help="tiny model architecture")
    p.add_argument("--steps", type=int, default=1000, help="warm-start steps (0: random weights)")
    p.add_argument("--batch_size", type=int, default=16, help="warm-start batch size")
    p.add_argument("--lr", type=float, default=2e-3, help="warm-start peak learning rate")
    p.add_argument("--hint_share", type=float, default=0.5,
                   help="warm start: share of easy prompts shown with the hint and its frame (hard: always)")
    p.add_argument("--grounded_weight", type=float, default=1.0,
                   help="warm start: weight of the loss term on the picture-dependent tokens (0: plain SFT)")
    p.add_argument("--answer_smoothing", type=float, default=0.0,
                   help="warm start: weight of a cross-entropy to the uniform over the colours at the answer "
                        "token (keeps the student from saturating; see warm_start)")
    p.add_argument("--n_train", type=int, default=4000, help="training problems")
    p.add_argument("--n_eval", type=int, default=400, help="held-out problems (half easy, half hard)")
    p.add_argument("--hard_share", type=float, default=0.5, help="share of hard problems in the train split")
    p.add_argument("--diag_n", type=int, default=400, help="held-out problems for the diagnostics")
    p.add_argument("--group_n", type=int, default=128,
                   help="training problems x 8 samples for the step-0 group regime (all-fail share)")
    p.add_argument("--seed", type=int, default=0, help="seed for data, weights and batches")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--no_check", action="store_true", help="exit 0 even if the regime is missed")
    args = p.parse_args(argv)
    t0 = time.time()
    data_dir, model_dir = os.path.join(args.out_dir, "data"), os.path.join(args.out_dir, "model")
    train_path, eval_path = build_data(data_dir, args.n_train, args.n_eval, args.seed, args.hard_share)
    build_model(model_dir, args.family, args.seed)
    print(f"built data and a random {args.family} tiny model in {time.time() - t0:.1f}s -> {args.out_dir}")
    if args.steps:
        model, processor = warm_start(model_dir, train_path, args.steps, args.batch_size, args.lr, seed=args.seed,
                                      threads=args.threads or None, hint_share=args.hint_share,
                                      grounded_weight=args.grounded_weight, answer_smoothing=args.answer_smoothing)
        train_seconds = time.time() - t0
        evals = data.load_jsonl(eval_path, report=lambda s: None)[:args.diag_n]
        res = diagnose(model, processor, evals, seed=args.seed)
        trains = data.load_jsonl(train_path, report=lambda s: None)[:args.group_n]
        res["groups"] = group_regime(model, processor, trains, seed=args.seed)
        print(format_diagnostics(res, len(evals)))
        failures = regime_failures(res)
        argv_shown = sys.argv[1:] if argv is None else list(argv)
        with open(os.path.join(model_dir, "diagnostics.json"), "w") as f:
            json.dump({**res, "n": len(evals), "regime": not failures,
                       "command": " ".join(["python", "toy.py", *argv_shown]), "seed": args.seed,
                       "steps": args.steps, "grounded_weight": args.grounded_weight, "hard_share": args.hard_share,
                       "hint_share": args.hint_share, "answer_smoothing": args.answer_smoothing,
                       "torch": torch.__version__, "threads": torch.get_num_threads(),
                       "build_seconds": round(train_seconds, 1), "seconds": round(time.time() - t0, 1),
                       "built": time.strftime("%Y-%m-%d %H:%M:%S %Z")}, f, indent=1)
        if not args.no_check:
            check_regime(res)
    print(f"done in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
