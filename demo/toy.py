"""
demo/toy.py: the embedded demo, built offline in code: a synthetic visual task and a tiny Qwen-VL.

The task: a 96x96 picture, a 3x3 grid of 3-5 coloured shapes (10 colours, 8 shapes, no colour or
shape twice in a scene); one shape's cell is framed in grey, another's cell is shaded. Three
buckets, recorded as `category`:
    easy:  "What colour is the shape in the frame?"              -> the framed shape's colour
           "What colour is the shape in the shaded cell?"        -> the shaded shape's colour
    hard:  "What colour is the shape on the tinted background?"  -> the shaded shape's colour
    pivot: "What colour is the shape inside the border?"         -> the framed shape's colour
    response: "<think>I read the shape inside the border.</think><answer>red</answer>"
The student reads both marks (easy: ~99%). The hard and pivot questions are reached through words
the warm start bound to the other mark (planted misreadings, standing in for a model's wrong
habits): hard is answered right ~12% of the time, so its groups are often mixed (GRPO learns
there); pivot is answered right ~0% of the time, so (almost) all its groups fail (only the tutor
can teach it). The hint is words only (a focus region, a distractor, two steps); the tutor, the
same frozen model with the hint in its prompt and the student's exact pixels, answers both (~99%)
and follows the hint's words when they point elsewhere (the counterfactual). The skills are short
steps, routines the student already runs reached through words it misreads, and the diagnostics
prove them learnable in the main job's budget by supervision before any RL is spent (probe).

The model: tiny_model.py's ~1M-parameter Qwen3-VL (or Qwen2.5-VL), its tokenizer trained on
the text task 4 could say, then warm-started here in two phases (warm_start).

    python demo/toy.py --threads 1            # data + tiny model + warm start -> toy/ (deterministic)
    python demo/toy.py --steps 0 --steps2 0   # random weights only (what the model-side tests use)
    python demo/toy.py --diagnose_only        # the diagnostics of toy/model as it is

The build ends with the diagnostics (demo/diagnostics.py; toy/model/diagnostics.json: pass@1 per
bucket for student, tutor and blank image, the tutor on the student's failures, the
counterfactual; the step-0 shares of all-fail and mixed groups per bucket on training problems,
the tutor's score on the all-fail ones and the student's probability of the tutor's answer on its
failures; the learnability probes) and exits non-zero when the model misses the regime
(diagnostics.REGIME). The warm start draws its own problems (toy/data/warm.jsonl, warm2.jsonl),
so the training split is unseen. The tasks tried before this one, and why they were left:
docs/DEMO.md.
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)   # run as `python demo/toy.py`: the method's modules are one level up
import data  # noqa: E402
import hints  # noqa: E402
import reward  # noqa: E402
import rollout  # noqa: E402
from demo import tiny_model  # noqa: E402

DEFAULT_DIR = os.path.join(ROOT, "toy")   # the demo's data and model: toy/data, toy/model

COLOURS = {"red": (220, 30, 30), "green": (30, 160, 60), "blue": (40, 70, 230), "yellow": (240, 210, 20),
           "purple": (130, 40, 170), "orange": (245, 135, 20), "pink": (250, 130, 200), "brown": (120, 70, 20),
           "cyan": (20, 200, 220), "grey": (130, 130, 130)}
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "star", "hexagon", "pentagon")
SIZE = 96   # every picture: 96 x 96 px, a 3 x 3 grid of 32 px cells, one merged vision token each (Qwen3-VL)
GRID = 3
MARK = (120, 120, 120)    # the frame around one cell (2 px, grey); the hint's frame is black
SHADE = (215, 215, 215)   # the background of another cell (light grey)
N_SHAPES = (3, 5)         # shapes per scene: one framed, one on the shaded cell, the rest plain
# The questions: (text, where). Each names one of the two marked cells; the hard one names the
# shaded cell in words the warm start bound to the framed one (warm_start).
QUESTIONS = {"frame": ("What colour is the shape in the frame?", "in the frame"),
             "shade": ("What colour is the shape in the shaded cell?", "in the shaded cell"),
             "tint": ("What colour is the shape on the tinted background?", "on the tinted background"),
             "border": ("What colour is the shape inside the border?", "inside the border")}
BUCKETS = {"easy": ("frame", "shade"), "hard": ("tint",), "pivot": ("border",)}
TARGET = {"frame": "framed", "shade": "shaded", "tint": "shaded", "border": "framed"}   # which mark each asks for
# The buckets' shares of the training split (the held-out and development splits hold a third each)
SHARES = {"easy": 0.3, "hard": 0.4, "pivot": 0.3}
# The warm start's own splits: phase 1's (easy and hard half and half: task 4's warm start, drawn
# exactly as task 4 drew it) and phase 2's (the training split's shares)
WARM_SHARES = {"easy": 0.5, "hard": 0.5}

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


def response(where, colour):
    return f"<think>I read the shape {where}.</think><answer>{colour}</answer>"


LABEL = {"framed": "the framed shape", "shaded": "the shape in the shaded cell",
         ("framed", "other"): "the shape in the shaded cell", ("shaded", "other"): "the framed shape"}


def make_example(rng, bucket):
    """One scene and its question, answer, gold response and structured hint. Every picture has
    one cell framed in grey and another shaded (both part of the picture: the student sees them);
    no colour or shape repeats in a scene, so a blind guess pays 1/10."""
    kind = rng.choice(BUCKETS[bucket])
    k = rng.randint(*N_SHAPES)
    cells = rng.sample([(x, y) for y in range(GRID) for x in range(GRID)], k)
    shapes = rng.sample(SHAPES, k)
    colours = rng.sample(sorted(COLOURS), k)
    img = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    cell = SIZE // GRID
    square = lambda c: [c[0] * cell, c[1] * cell, (c[0] + 1) * cell - 1, (c[1] + 1) * cell - 1]
    draw.rectangle(square(cells[1]), fill=SHADE)   # objects[1] sits on the shaded cell
    objects = []
    for (cx, cy), shape, colour in zip(cells, shapes, colours):
        side = cell * rng.uniform(0.6, 0.8)   # a margin, so the shade shows around every shape
        x1 = cx * cell + rng.uniform(2, cell - side - 2)
        y1 = cy * cell + rng.uniform(2, cell - side - 2)
        box = [round(x1), round(y1), round(x1 + side), round(y1 + side)]
        draw_shape(draw, shape, box, COLOURS[colour])
        objects.append({"shape": shape, "colour": colour, "cell": (cx, cy), "box": box})
    draw.rectangle(square(cells[0]), outline=MARK, width=2)   # objects[0] sits in the frame
    # the target: the framed shape ("frame") or the shaded one ("shade", "tint"); the other marked
    # shape is the distractor, the one a reader who takes the wrong mark reports
    t, other = (0, 1) if TARGET[kind] == "framed" else (1, 0)
    question, where = QUESTIONS[kind]
    tx, ty = objects[t]["cell"]
    regions = [{"box": [tx * cell, ty * cell, (tx + 1) * cell, (ty + 1) * cell], "role": "focus",
                "label": LABEL[TARGET[kind]]},
               {"box": objects[other]["box"], "role": "distractor", "label": LABEL[TARGET[kind], "other"]}]
    steps = {"frame": ["Find the framed cell.", "Name the colour of the shape in it."],
             "shade": ["Find the shaded cell, not the framed one.", "Name the colour of the shape in it."],
             "tint": ["A tinted background is the shaded cell, not the frame.",
                      "Name the colour of the shape in it."],
             "border": ["A border is the frame, not the shaded cell.",
                        "Name the colour of the shape in it."]}[kind]
    hint = {"regions": regions, "steps": steps}   # words only: the tutor sees the student's pixels
    return img, {
        "question": question,
        "answer": objects[t]["colour"],
        "category": bucket,
        "kind": kind,
        "hint": hint,
        "gold_response": response(where, objects[t]["colour"]),
        "scene": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in o.items()} for o in objects],
        "target": t,
        "framed": 0,
        "shaded": 1,
    }


def bucket_order(n, shares):
    """The bucket of each of n examples: each in turn goes to the bucket furthest below its share
    (ties in the order of `shares`), so the buckets interleave evenly and any prefix (eval.py
    --limit, train.py --eval_n) holds every bucket in proportion, within one example."""
    counts, out = {b: 0 for b in shares}, []
    for i in range(n):
        b = max(shares, key=lambda b: shares[b] * (i + 1) - counts[b])
        counts[b] += 1
        out.append(b)
    return out


def write_split(out_dir, split, n, seed, shares):
    """Write n examples as <out_dir>/<split>.jsonl plus PNGs; deterministic for a seed. shares:
    {bucket: share of the split} (bucket_order)."""
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    rng = random.Random(seed)
    path = os.path.join(out_dir, f"{split}.jsonl")
    tmp = f"{path}.{os.getpid()}.tmp"   # concurrent builders never share a temp file
    with open(tmp, "w") as f:
        for i, bucket in enumerate(bucket_order(n, shares)):
            img, ex = make_example(rng, bucket)
            name = f"images/{split}_{i:05d}.png"
            img.save(os.path.join(out_dir, name))
            rec = {"id": f"{split}-{i}", "image": name, **ex}
            f.write(json.dumps(rec) + "\n")
    os.replace(tmp, path)
    return path


TASK_VERSION = 5   # bump when the task changes: toy.ensure() then redraws data left by an older version
EVEN = {b: 1 / len(BUCKETS) for b in BUCKETS}   # the held-out and development splits


def build_data(out_dir, n_train=4000, n_eval=600, seed=0, shares=None, n_warm=8000):
    """Train split: the buckets at `shares` (default SHARES); held-out split: a third each (a
    disjoint seed), so per-bucket accuracy is measured on equal numbers; the warm start's own
    problems (phase 1: a third seed, WARM_SHARES; phase 2: a fifth, `shares`), so the training
    split is new to the model. Returns their paths (train, eval, warm, warm2). A development split like the held-out one (a fourth seed) is written
    beside them: settings are chosen on it, never on the held-out split that reports results."""
    shares = shares or SHARES
    paths = (write_split(out_dir, "train", n_train, seed, shares),
             write_split(out_dir, "eval", n_eval, seed + 10_000, EVEN),
             write_split(out_dir, "warm", n_warm, seed + 20_000, WARM_SHARES),
             write_split(out_dir, "warm2", n_warm, seed + 40_000, shares))
    write_split(out_dir, "dev", n_eval, seed + 30_000, EVEN)
    with open(os.path.join(out_dir, "task.json"), "w") as f:
        json.dump({"version": TASK_VERSION, "seed": seed, "shares": shares}, f)
    return paths


def task_shares(data_dir):
    """The training split's bucket shares, as toy/data/task.json records them (SHARES if unknown)."""
    try:
        with open(os.path.join(data_dir, "task.json")) as f:
            return json.load(f).get("shares") or SHARES
    except (OSError, ValueError):
        return SHARES


def data_is_current(data_dir):
    try:
        with open(os.path.join(data_dir, "task.json")) as f:
            return json.load(f).get("version") == TASK_VERSION
    except (OSError, ValueError):
        return False


# -----------------------------------------------------------------------------
# the tiny model: tiny_model.py, its tokenizer trained on what the task can say

def tokenizer_corpus(rng):
    """Text the tokenizer is trained on: what the demo's prompts and responses can say, drawn from
    the easy and hard buckets only, exactly as task 4 drew it, so that warm-start phase 1 rebuilds
    task 4's model bit for bit; the pivot's own words ("inside the border") are spelled in the
    sub-word pieces this vocabulary has."""
    lines = [rollout.FORMAT_PROMPT, hints.EXPERT_PROMPT, "Hint:", "Look at:", "Ignore:",
             "The correct answer is:", "user", "assistant", "system"]
    for _ in range(3000):
        _, ex = make_example(rng, rng.choice(("easy", "hard")))
        lines += [ex["question"], ex["gold_response"], hints.render_hint(ex["hint"], (SIZE, SIZE))]
    lines += [" ".join(str(i) for i in range(0, 1001, 7)), "{\"regions\": [], \"steps\": []}"]
    return lines


def build_model(out_dir, family="qwen3", seed=0):
    """The demo's random-weight tiny model (tiny_model.build_model), its tokenizer trained on the
    task's text."""
    return tiny_model.build_model(out_dir, tokenizer_corpus(random.Random(seed)), family, seed)


# -----------------------------------------------------------------------------
# warm start: supervised training on gold responses, half the prompts with the hint
#
# Why the answer gets its own loss term. Of the ~20 response tokens only the colour depends on the
# picture; the rest is format, learnt from the text alone in ~200 steps. With the plain token-mean
# loss the picture's share of the gradient is then thin, and whether the model ever starts reading
# colours within the budget is down to the seed (on an earlier version of the task, seed 0 sat at
# the "ignore the picture" floor for all 1,200 steps). A second term, the mean loss over the answer
# tokens alone, gives them a fixed share of the gradient whatever the response length.
#
# The planted misconception. Asked the hard question without its hint, the warm start answers the
# framed shape's colour, except on a share `hard_truth` of those prompts, where it answers the right
# one. Trained on that mix, the student learns the mix: p ~ hard_truth on the right colour, the rest
# on the framed shape's. It stands for a model with a wrong habit that is not sure of it. With the
# hint (and its frame) the hard question is always answered right, so the frozen copy, the tutor,
# knows the way when it is shown it.


def answer_tokens(tok, gold, answer, eos):
    """(ids, mask) of a response + EOS; the mask marks the answer's tokens."""
    a0 = gold.index("<answer>") + len("<answer>")
    enc = tok(gold, return_offsets_mapping=True)
    mask = [s < a0 + len(answer) and e > a0 for s, e in enc["offset_mapping"]] + [False]
    return torch.tensor(enc["input_ids"] + [eos]), torch.tensor(mask)


def other_marked(rec):
    """The scene object on the mark the question does not ask for (the distractor)."""
    return rec["scene"][rec["shaded"] if rec["target"] == rec["framed"] else rec["framed"]]


def warm_target(ex, rng, hint_share, hard_truth, pivot_truth):
    """(hinted?, response) the warm start shows for one example (the misconceptions above)."""
    rec = ex["record"]
    hinted = rng.random() < hint_share
    if ex["category"] in ("hard", "pivot") and not hinted:
        truth = hard_truth if ex["category"] == "hard" else pivot_truth
        if rng.random() >= truth:   # the planted misreading: the other marked shape
            return False, response(QUESTIONS[rec["kind"]][1], other_marked(rec)["colour"])
    return hinted, rec["gold_response"]


def sft_loss(model, prompts, tok, golds, answers, eos, answer_weight=1.0):
    """Token-mean cross-entropy on the responses (+ answer_weight x the answer tokens' mean)."""
    resp, amask = zip(*[answer_tokens(tok, g, a, eos) for g, a in zip(golds, answers)])
    ids, mask = rollout.pad_responses(list(resp), eos, tok.pad_token_id)
    gmask = torch.zeros_like(mask)
    for i, g in enumerate(amask):
        gmask[i, :len(g)] = g
    out = rollout.score(model, prompts, ids, mask, grad=True, token_budget=10 ** 9)
    token_loss = -(out["logp"] * mask).sum() / mask.sum()
    answer_loss = -(out["logp"] * gmask).sum() / gmask.sum()
    return token_loss + answer_weight * answer_loss, token_loss, answer_loss


def framed(ex):
    """The example with its hint asking for a frame on the tutor's copy (phase 1's scaffold)."""
    return {**ex, "hint": {**ex["hint"], "frame": True}}


def write_framed(src, dst):
    """A copy of the JSONL split src at dst, every hint asking for the frame (the "frame" ablation:
    scripts/compare.sh PHASE=abl5, scripts/tutor_readings.sh). dst must sit beside src: the image
    paths are relative to the file's folder."""
    with open(src) as f:
        recs = [json.loads(line) for line in f if line.strip()]
    with open(dst, "w") as f:
        f.writelines(json.dumps(framed(r) if r.get("hint") else r) + "\n" for r in recs)


NEUTRAL = "What colour is the shape the hint points to?"   # phase 2: the hint alone says which
WHERE = {"framed": "in the frame", "shaded": "in the shaded cell"}


def hint_variant(ex, gold, rng, neutral_share, steps_drop):
    """Phase 2's hinted prompts: with probability steps_drop the hint keeps its regions only; with
    probability neutral_share the question names no mark (NEUTRAL), so only the hint's words say
    which shape to read. Returns (example, response)."""
    if rng.random() < steps_drop:
        ex = {**ex, "hint": {"regions": ex["hint"]["regions"], "steps": []}}
    if rng.random() < neutral_share:
        rec = ex["record"]
        ex = {**ex, "question": NEUTRAL}
        gold = response(WHERE[TARGET[rec["kind"]]], rec["answer"])
    return ex, gold


def warm_phase(model, processor, examples, steps, batch_size, lr, warmup, rng, mix, answer_weight, frame, desc,
               vary=None):
    """One phase of the warm start: AdamW, linear warm-up then cosine to 10%, batches drawn from
    examples, each shown as warm_target(**mix) says (hinted prompts framed when `frame`, varied by
    hint_variant(**vary) when `vary`)."""
    from tqdm import tqdm
    import tutor
    tok = processor.tokenizer
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    fmt = rollout.box_format(model)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    model.train()
    bar = tqdm(range(steps), desc=desc)
    for step in bar:
        frac = step / max(1, steps - 1)
        scale = min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr * scale
        batch = rng.sample(examples, batch_size)
        shown = [warm_target(ex, rng, **mix) for ex in batch]
        if vary:
            pairs = [hint_variant(ex, g, rng, **vary) if hinted else (ex, g) for ex, (hinted, g) in zip(batch, shown)]
            batch, shown = [ex for ex, _ in pairs], [(h, g) for (h, _), (_, g) in zip(shown, pairs)]
        prompts = [tutor.tutor_prompt(processor, framed(ex) if frame else ex, fmt) if hinted
                   else rollout.encode(processor, ex["question"], rollout.open_images(ex))
                   for ex, (hinted, _) in zip(batch, shown)]
        golds = [g for _, g in shown]
        answers = [reward.extract_answer(g) for g in golds]
        loss, token_loss, answer_loss = sft_loss(model, prompts, tok, golds, answers, eos, answer_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        bar.set_postfix(loss=f"{token_loss.item():.3f}", answer=f"{answer_loss.item():.3f}")
    model.eval()


WARM = {"steps": 1200, "lr": 2e-3, "steps2": 800, "lr2": 1e-3, "batch_size": 16, "warmup": 30,
        "hint_share": 0.5, "answer_weight": 1.0, "hard_truth": 0.25, "pivot_truth": 0.0,
        "neutral_share": 0.25, "steps_drop": 0.5}


def warm_start(model_dir, warm_path, warm2_path, seed=0, threads=None, start_from=None, save_phase1=None, **kw):
    """Teach the random tiny model the task format, to read both marks, to read hints in context,
    and the misconceptions above, in two phases (WARM, overridden by kw):
      1. `steps` at `lr` on warm_path's easy and hard problems, the hinted prompts shown with a frame
         drawn on the tutor's copy of the picture: a scaffold from which a ~1M-parameter model
         learns to take a hint at all (with words alone from random weights it never does;
         docs/DEMO.md). This is task 4's warm start, and with task 4's data and tokenizer it
         rebuilds task 4's model bit for bit.
      2. `steps2` at `lr2` on warm2_path's problems (every bucket), hints in words only (the
         student's exact pixels): the model learns to follow the hint's words, and the pivot's
         misreading is planted.
    hint_share: share of prompts shown with the hint; answer_weight: the answer-token term (above);
    hard_truth / pivot_truth: share of un-hinted hard / pivot prompts answered right.
    start_from: a model directory whose weights replace phase 1 (exploring phase 2 only);
    save_phase1: a directory to save phase 1's model in (the start_from of such explorations)."""
    cfg = {**WARM, **kw}
    if threads:
        torch.set_num_threads(threads)
    if start_from is not None and not same_file(os.path.join(start_from, "tokenizer.json"),
                                                os.path.join(model_dir, "tokenizer.json")):
        raise SystemExit(f"toy.py: --start_from {start_from} has another tokenizer than this build's: its weights "
                         f"would not match this build's token ids")
    model, processor = rollout.load_model(start_from or model_dir, dtype="float32", device="cpu")
    rng = random.Random(seed)
    torch.manual_seed(seed)
    mix = {k: cfg[k] for k in ("hint_share", "hard_truth", "pivot_truth")}
    common = {"batch_size": cfg["batch_size"], "warmup": cfg["warmup"], "rng": rng, "mix": mix,
              "answer_weight": cfg["answer_weight"]}
    if start_from is None and cfg["steps"]:
        warm_phase(model, processor, data.load_jsonl(warm_path, report=lambda s: None), cfg["steps"],
                   lr=cfg["lr"], frame=True, desc="warm start 1/2 (framed hints)", **common)
        if save_phase1:
            model.save_pretrained(save_phase1)
            rollout.save_processor(processor, save_phase1)
    if cfg["steps2"]:   # its own streams, so that phase 2 from a saved phase 1 (start_from) is the build's
        torch.manual_seed(seed + 1)
        warm_phase(model, processor, data.load_jsonl(warm2_path, report=lambda s: None), cfg["steps2"],
                   lr=cfg["lr2"], frame=False, desc="warm start 2/2 (hints in words)",
                   vary={k: cfg[k] for k in ("neutral_share", "steps_drop")},
                   **{**common, "rng": random.Random(seed + 1)})
    model.save_pretrained(model_dir)
    return model, processor


def ensure(out_dir=DEFAULT_DIR):
    """The demo's data and model directories, built (with warm start) if missing."""
    model_dir, data_dir = os.path.join(out_dir, "model"), os.path.join(out_dir, "data")
    if not data_is_current(data_dir):   # missing, or drawn by an older version of the task
        build_data(data_dir)
    if not os.path.exists(os.path.join(model_dir, "config.json")):
        main(["--out_dir", out_dir])
    return model_dir, os.path.join(data_dir, "train.jsonl"), os.path.join(data_dir, "eval.jsonl")


def same_file(a, b):
    return os.path.exists(a) and os.path.exists(b) and file_sha256(a) == file_sha256(b)


def file_sha256(path):
    import hashlib
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def parse_shares(text):
    """'easy=0.3,hard=0.4,pivot=0.3' -> {bucket: share}; every bucket once, shares summing to 1."""
    try:
        shares = {k.strip(): float(v) for k, v in (part.split("=") for part in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected bucket=share,... got {text!r}")
    if set(shares) != set(BUCKETS) or abs(sum(shares.values()) - 1) > 1e-6 or min(shares.values()) <= 0:
        raise argparse.ArgumentTypeError(f"needs a share > 0 for each of {sorted(BUCKETS)}, summing to 1: {text!r}")
    return {b: shares[b] for b in BUCKETS}


def main(argv=None):
    from demo import diagnostics   # the build ends with them; diagnostics.py imports this file
    p = argparse.ArgumentParser(description="Build the embedded demo: task data, tiny model, warm start.")
    p.add_argument("--out_dir", default=DEFAULT_DIR, help="writes <out_dir>/data and <out_dir>/model")
    p.add_argument("--family", default="qwen3", choices=["qwen3", "qwen2.5"], help="tiny model architecture")
    p.add_argument("--steps", type=int, default=WARM["steps"],
                   help="warm start phase 1 (framed hints; easy and hard) steps (0 with --steps2 0: random weights)")
    p.add_argument("--lr", type=float, default=WARM["lr"], help="warm start phase 1 peak learning rate")
    p.add_argument("--steps2", type=int, default=WARM["steps2"],
                   help="warm start phase 2 (hints in words only; every bucket) steps")
    p.add_argument("--lr2", type=float, default=WARM["lr2"], help="warm start phase 2 peak learning rate")
    p.add_argument("--start_from", default=None,
                   help="a model directory whose weights stand in for phase 1 (to explore phase 2 alone)")
    p.add_argument("--save_phase1", default=None, help="also save phase 1's model in this directory")
    p.add_argument("--batch_size", type=int, default=WARM["batch_size"], help="warm-start batch size")
    p.add_argument("--hint_share", type=float, default=WARM["hint_share"],
                   help="warm start: share of prompts shown with the hint")
    p.add_argument("--answer_weight", type=float, default=WARM["answer_weight"],
                   help="warm start: weight of the loss term on the answer tokens (0: plain SFT)")
    p.add_argument("--hard_truth", type=float, default=WARM["hard_truth"],
                   help="warm start: share of un-hinted hard prompts answered right (the rest: the framed "
                        "shape's colour, the planted misconception)")
    p.add_argument("--pivot_truth", type=float, default=WARM["pivot_truth"],
                   help="warm start: share of un-hinted pivot prompts answered right (the rest: the shaded "
                        "shape's colour)")
    p.add_argument("--neutral_share", type=float, default=WARM["neutral_share"],
                   help="warm start phase 2: share of hinted prompts whose question names no mark (the hint's "
                        "words alone say which shape)")
    p.add_argument("--steps_drop", type=float, default=WARM["steps_drop"],
                   help="warm start phase 2: share of hinted prompts whose hint keeps its regions only")
    p.add_argument("--n_train", type=int, default=4000, help="training problems")
    p.add_argument("--n_eval", type=int, default=600, help="held-out (and development) problems, a third a bucket")
    p.add_argument("--n_warm", type=int, default=8000, help="the warm start's own problems")
    p.add_argument("--shares", type=parse_shares, default=SHARES,
                   help="the buckets' shares of the train split, e.g. easy=0.3,hard=0.4,pivot=0.3")
    p.add_argument("--diag_n", type=int, default=600, help="held-out problems for the diagnostics")
    p.add_argument("--group_n", type=int, default=192,
                   help="training problems x 8 samples for the step-0 group regime (all-fail share)")
    p.add_argument("--probe_steps", type=int, default=diagnostics.PROBE["steps"], help="learnability probe: steps (0: no probe)")
    p.add_argument("--probe_batch", type=int, default=diagnostics.PROBE["batch"],
                   help="learnability probe: the run's prompts per step (each bucket's probe takes its share)")
    p.add_argument("--probe_lr", type=float, default=diagnostics.PROBE["lr"], help="learnability probe: learning rate")
    p.add_argument("--probe_warmup", type=int, default=diagnostics.PROBE["warmup"], help="learnability probe: warm-up steps")
    p.add_argument("--diagnose_only", action="store_true",
                   help="no build: run the diagnostics and the probe on <out_dir>/model as it is")
    p.add_argument("--write", action="store_true",
                   help="with --diagnose_only: record the numbers in <out_dir>/model/diagnostics.json "
                        "(the build's own command and time kept; this run's under 'diagnosed')")
    p.add_argument("--seed", type=int, default=0, help="seed for data, weights and batches")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--no_check", action="store_true", help="exit 0 even if the regime is missed")
    args = p.parse_args(argv)
    t0 = time.time()
    if args.threads:
        torch.set_num_threads(args.threads)
    data_dir, model_dir = os.path.join(args.out_dir, "data"), os.path.join(args.out_dir, "model")
    train_path, eval_path = os.path.join(data_dir, "train.jsonl"), os.path.join(data_dir, "eval.jsonl")
    if args.diagnose_only:
        model, processor = rollout.load_model(model_dir, dtype="float32", device="cpu")
        res = diagnostics.run_diagnostics(args, model, processor, model_dir, train_path, eval_path)
        print(f"regime: {diagnostics.regime_failures(res) or 'met'}; done in {time.time() - t0:.1f}s")
        if args.write:
            diagnostics.write_diagnostics(res, args, argv, model_dir, time.time() - t0)
        return res
    train_path, eval_path, warm_path, warm2_path = build_data(data_dir, args.n_train, args.n_eval, args.seed,
                                                              args.shares, args.n_warm)
    build_model(model_dir, args.family, args.seed)
    print(f"built data and a random {args.family} tiny model in {time.time() - t0:.1f}s -> {args.out_dir}")
    if args.steps or args.steps2:
        model, processor = warm_start(model_dir, warm_path, warm2_path, seed=args.seed, start_from=args.start_from,
                                      save_phase1=args.save_phase1,
                                      **{k: getattr(args, k) for k in WARM if hasattr(args, k)})
        train_seconds = time.time() - t0
        res = diagnostics.run_diagnostics(args, model, processor, model_dir, train_path, eval_path)
        diagnostics.write_diagnostics(res, args, argv, model_dir, time.time() - t0, build_seconds=train_seconds)
        if not args.no_check:
            diagnostics.check_regime(res)
    print(f"done in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
