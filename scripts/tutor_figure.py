"""
scripts/tutor_figure.py: one picture of what the tutor teaches, on the student's own failed rollouts.

For the first --n held-out problems (in file order) that have a hint and a failed rollout among
--group_size samples, one row each, with the first failed rollout of the problem:
  - the picture the student sees (no hint);
  - the tutor's input: the same picture, framed where the hint sets "frame": true, and the
    hint text it reads (tutor.tutor_prompt, the prompt train.py's tutor pass uses);
  - the student's sampled response, each token shaded by the Top-K JSD between the student and
    the tutor at that position, computed as train.py computes it (support: student top-K union
    tutor top-K, plus a tail bucket; loss.topk_jsd); under the --mark tokens where they disagree
    most, each side's most probable token there (S: student, T: tutor) and its probability.

    python scripts/tutor_figure.py          # shipped demo model -> results/tutor_figure.png
    python scripts/tutor_figure.py --model Qwen/Qwen3-VL-2B-Thinking --data held_out.jsonl \\
        --max_new_tokens 1024 --device cuda

The tutor is the same weights as the student unless --tutor names another checkpoint (a trained
policy as the student against its frozen initial model, as in training). Long responses are shown
as a window of --show tokens around the largest divergence. Left out on purpose: the
answer-conditioned tutor (--tutor_context answer in train.py) and successful rollouts (PTD-PO
distils only failed ones). matplotlib is optional for the project; this script needs it.
"""
import argparse
import math
import os
import sys
import textwrap

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import config  # noqa: E402
import data  # noqa: E402
import loss  # noqa: E402
import reward  # noqa: E402
import rollout  # noqa: E402
import train  # noqa: E402
import tutor  # noqa: E402
from config import add_flags  # noqa: E402
from demo import toy  # noqa: E402

FONT = 8.5                  # points, monospace: one character is 0.602 em wide
CHAR = 0.602 * FONT / 72    # inches per character
LINE = 1.45 * FONT / 72     # inches per text line
WIDTH = 104                 # characters per text line
IMAGE = 1.55                # inches per picture

# -----------------------------------------------------------------------------
# the numbers


def failed_rollouts(model, processor, exs, n, group_size, max_new_tokens, seed, chunk=16):
    """The first n hinted problems with a failed rollout, and that rollout: (examples, ids (n, R),
    mask (n, R)). Sampled chunk by chunk; response g of problem i depends only on (seed, i, g)."""
    picked, seqs = [], []
    pool = [i for i, ex in enumerate(exs) if tutor.can_teach(ex)]
    for s in range(0, len(pool), chunk):
        idx = pool[s:s + chunk]
        prompts = [rollout.encode(processor, exs[i]["question"], rollout.open_images(exs[i])) for i in idx]
        ids, mask = rollout.sample(model, processor, prompts, group_size, max_new_tokens, seed=seed, prompt_ids=idx)
        texts = rollout.decode(processor, ids, mask)
        for k, i in enumerate(idx):
            fails = [g for g in range(group_size) if reward.reward(texts[k * group_size + g], exs[i]) == 0]
            if fails and len(picked) < n:
                r = k * group_size + fails[0]
                picked.append(exs[i])
                seqs.append(ids[r][mask[r]])
        if len(picked) == n:
            break
    if not picked:
        raise SystemExit("tutor_figure.py: no failed rollout on a hinted problem in the data")
    ids, mask = rollout.pad_responses(seqs, rollout.eos_id(processor), processor.tokenizer.pad_token_id)
    return picked, ids, mask


@torch.no_grad()
def signal(student, teacher, processor, exs, ids, mask, topk):
    """Per response position, as train.py computes it: the Top-K JSD between the student (no
    hint) and the tutor (hint), and each side's most probable token and its probability. All (N, R).
    Both argmaxes lie on the support: it holds each side's own top-K."""
    prompts = [rollout.encode(processor, ex["question"], rollout.open_images(ex)) for ex in exs]
    every = torch.ones(len(exs), dtype=torch.bool)
    old = rollout.score(student, prompts, ids, mask, topk=topk)
    # train.py's tutor pass: the tutor's prompts, scored by the call the reference pass makes
    tutor_prompts = train.tutor_rows(processor, rollout.box_format(teacher), exs,
                                     [rollout.open_images(ex) for ex in exs], torch.arange(len(exs)),
                                     every, "hint", "structured")
    t = rollout.score_rows(teacher, tutor_prompts, ids, mask, every, union_with=old["topk_ids"], topk=topk)
    t["support_mask"] &= mask.unsqueeze(-1)
    t["tutor_logp"] = t["support_logp"].float()
    st = rollout.score(student, prompts, ids, mask, support=t["support_ids"])
    sup, smask = t["support_ids"], t["support_mask"]                   # (N, R, M)
    out = {"jsd": loss.topk_jsd(st["support_logp"], t["tutor_logp"], smask) * mask}
    for side, lp in (("student", st["support_logp"]), ("tutor", t["tutor_logp"])):
        best = lp.masked_fill(~smask, -math.inf).max(-1)
        out[side + "_id"] = sup.gather(-1, best.indices.unsqueeze(-1)).squeeze(-1)
        out[side + "_p"] = best.values.exp() * mask
    return out


def tutor_image(ex):
    """The tutor's picture: the student's, framed where the hint asks (tutor.tutor_prompt's)."""
    return tutor.tutor_images(ex, rollout.open_images(ex))[0]


def piece(tok, i):
    """One token as printable text (newlines and tabs made visible)."""
    s = tok.decode([int(i)])
    s = s.replace("\n", "\u21b5").replace("\t", "\u2192").replace("\r", "")
    return "".join(c if c.isprintable() else "\ufffd" for c in s) or "\u2205"


def label(side, tok, i, p):
    """'S top 70%': a side's most probable token and its probability."""
    return f"{side} {piece(tok, i).strip()[:12] or piece(tok, i)} " + ("<1%" if p < 0.005 else f"{p:.0%}")

# -----------------------------------------------------------------------------
# the picture: one row per rollout; text laid out on a monospace grid (x: characters, y: lines)


def wrap(text, prefix=""):
    return [prefix + line for para in text.splitlines() for line in textwrap.wrap(para, WIDTH - len(prefix)) or [""]]


def text_lines(row):
    """The plain text of a row's panel, one (line, style, text) per line: the problem, the hint."""
    ex = row["example"]
    head = f"{ex['id']}" + (f" ({ex['category']})" if ex.get("category") else "") + f"   gold answer: {ex['answer']}"
    hint = wrap(row["hint"], "  ")
    texts = ([("bold", head)] + [("plain", s) for s in wrap(ex["question"].replace("<image>", ""), "Q: ")[:3]]
             + [("hint_head", "the tutor also reads:")]
             + [("hint", s) for s in hint[:8] + (["  ..."] if len(hint) > 8 else [])]
             + [("plain", "the student's response (shaded: JSD to the tutor at each token):")])
    return [(k, style, s) for k, (style, s) in enumerate(texts)]


def layout(row, tok, show, n_mark):
    """What a row's text panel holds: (plain lines, token boxes, marks, n_lines). Token boxes:
    (line, col, text, jsd, marked); marks: (line, col, student label, tutor label), drawn on the
    two lines under their token. Responses over `show` tokens: a window around the peak JSD."""
    jsd, n = row["jsd"], len(row["jsd"])
    peak = max(range(n), key=lambda t: jsd[t])
    start = max(0, min(peak - show // 3, n - show))
    window = range(start, min(n, start + show))
    marked = set(sorted(window, key=lambda t: -jsd[t])[:n_mark])
    lines = text_lines(row)
    boxes, marks, line, col, room = [], [], len(lines), 0, 1   # room: lines the current line takes
    if start > 0 or window.stop < n:   # right-aligned on the line that introduces the response
        lines.append((line - 1, "note", f"(tokens {start}-{window.stop - 1} of {n})"))
    for t in window:
        text = piece(tok, row["ids"][t])[:WIDTH]
        if col + len(text) > WIDTH:
            line, col, room = line + room, 0, 1
        boxes.append((line, col, text, jsd[t], t in marked))
        if t in marked:
            room = 3
            marks.append((line, col, label("S", tok, row["student_id"][t], row["student_p"][t]),
                          label("T", tok, row["tutor_id"][t], row["tutor_p"][t])))
        col += len(text)
    return lines, boxes, marks, line + room


def draw_text(ax, lines, boxes, marks, cmap, norm):
    styles = {"bold": dict(weight="bold"), "plain": {}, "hint_head": dict(color="#2a6f2a", style="italic"),
              "hint": dict(color="#2a6f2a"), "note": dict(color="grey")}
    for y, style, s in lines:
        x = WIDTH - len(s) if style == "note" else 0
        ax.text(x, y + 0.5, s, va="center", ha="left", family="monospace", fontsize=FONT, **styles[style])
    from matplotlib.patches import Rectangle
    for y, x, s, j, mark in boxes:
        ax.add_patch(Rectangle((x, y + 0.05), len(s), 0.9, facecolor=cmap(norm(j)),
                               edgecolor="black" if mark else "white", linewidth=1.0 if mark else 0.5))
        ax.text(x, y + 0.5, s, va="center", ha="left", family="monospace", fontsize=FONT,
                color="white" if norm(j) > 0.55 else "black")
    free = {}   # per line: the first column an annotation may start at (adjacent marks shift right)
    for y, x, s_label, t_label in marks:
        x = max(x, free.get(y, 0))
        free[y] = x + max(len(s_label), len(t_label)) + 2
        ax.text(x, y + 1.5, s_label, va="center", family="monospace", fontsize=FONT - 1, color="#1f4e9c")
        ax.text(x, y + 2.5, t_label, va="center", family="monospace", fontsize=FONT - 1, color="#2a6f2a")


def draw(rows, tok, out, title, show=60, n_mark=3):
    """Render the rows (dicts from collect) to a PNG at out."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize
    cmap, norm = plt.get_cmap("Reds"), Normalize(0.0, math.log(2.0))   # JSD lies in [0, ln 2]
    panels = [layout(r, tok, show, n_mark) for r in rows]
    gap, top, left = 0.25, 0.9, 0.15
    text_w = WIDTH * CHAR
    heights = [max(IMAGE + 0.25, p[3] * LINE) for p in panels]
    W, H = left + 2 * (IMAGE + gap) + text_w + 0.2, top + sum(heights) + gap * len(rows)
    fig = plt.figure(figsize=(W, H))
    fig.text(left / W, 1 - 0.25 / H, title, fontsize=FONT + 3, weight="bold", va="center")
    fig.text(left / W, 1 - 0.5 / H, "S / T: the student's / the tutor's most probable token at the outlined "
             f"positions (the {n_mark} largest JSDs) and its probability", fontsize=FONT, va="center")
    cax = fig.add_axes([(W - 0.2 - 2.6) / W, 1 - 0.42 / H, 2.6 / W, 0.1 / H])
    fig.colorbar(plt.cm.ScalarMappable(norm, cmap), cax=cax, orientation="horizontal")
    cax.set_title("Top-K JSD(student, tutor) per token, 0 to ln 2", fontsize=FONT - 1)
    cax.tick_params(labelsize=FONT - 1)
    y = H - top
    for row, (lines, boxes, marks, n_lines), h in zip(rows, panels, heights):
        y -= h
        for k, (img, name) in enumerate(((row["student_image"], "student sees"), (row["tutor_image"], "tutor sees"))):
            ax = fig.add_axes([(left + k * (IMAGE + gap)) / W, (y + h - IMAGE - 0.2) / H, IMAGE / W, IMAGE / H])
            ax.imshow(img, interpolation="nearest")
            ax.set_title(name, fontsize=FONT)
            ax.set_xticks([]), ax.set_yticks([])
        x0, th = left + 2 * (IMAGE + gap), n_lines * LINE
        ax = fig.add_axes([x0 / W, (y + h - th) / H, text_w / W, th / H])
        ax.set_xlim(0, WIDTH), ax.set_ylim(n_lines, 0), ax.axis("off")
        draw_text(ax, lines, boxes, marks, cmap, norm)
        y -= gap
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=150)
    plt.close(fig)

# -----------------------------------------------------------------------------


def collect(args):
    """The rows to draw: example, pictures, hint text, response ids and the per-token signal."""
    model_dir = args.model or toy.ensure()[0]
    eval_path = args.data or os.path.join(toy.DEFAULT_DIR, "data", "eval.jsonl")
    if args.data is None and not os.path.exists(eval_path):   # the demo's data alone (toy.ensure would build a model too)
        toy.build_data(os.path.dirname(eval_path))
    model, processor = rollout.load_model(model_dir, args.dtype, args.device)
    teacher = model if args.tutor is None else rollout.load_model(args.tutor, args.dtype, args.device)[0]
    exs = data.load_jsonl(eval_path, report=lambda s: None)
    picked, ids, mask = failed_rollouts(model, processor, exs, args.n, args.group_size, args.max_new_tokens, args.seed)
    sig = signal(model, teacher, processor, picked, ids, mask, args.topk)
    fmt = rollout.box_format(teacher)
    rows = []
    for r, ex in enumerate(picked):
        m = mask[r]
        image = rollout.open_images(ex)[0]
        resized = rollout.resized_size(processor, image) if fmt == "pixels" else None
        rows.append({"example": ex, "student_image": image, "tutor_image": tutor_image(ex),
                     "hint": tutor.tutor_text(ex, "hint", fmt, resized), "ids": ids[r][m].tolist(),
                     **{k: v[r][m].tolist() for k, v in sig.items()}})
    return rows, processor, model


def main(argv=None):
    p = argparse.ArgumentParser(description="Student view, tutor view and the per-token Top-K JSD on failed rollouts.")
    p.add_argument("--model", default=None, help="the student: a local directory or hub id (default: the demo model)")
    p.add_argument("--tutor", default=None, help="the tutor's weights, if not the student's (e.g. the initial model)")
    p.add_argument("--data", default=None, help="held-out JSONL with hints (default: the demo's held-out split)")
    p.add_argument("--out", default="results/tutor_figure.png", help="the PNG to write")
    p.add_argument("--n", type=int, default=3, help="failed rollouts to show, one per problem")
    p.add_argument("--group_size", type=int, default=4, help="samples per problem when looking for a failure")
    p.add_argument("--max_new_tokens", type=int, default=32, help="response length cap (32 fits the demo)")
    p.add_argument("--topk", type=int, default=100, help="K of the Top-K JSD, as train.py --topk")
    p.add_argument("--show", type=int, default=60, help="response tokens shown per row (a window around the peak)")
    p.add_argument("--mark", type=int, default=3, help="positions annotated with both sides' top token")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    add_flags(p, "--seed", "--dtype", "--threads", dtype="float32")
    args = p.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise SystemExit("tutor_figure.py draws with matplotlib, which is not installed (pip install matplotlib)")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows, processor, model = collect(args)
    name = args.model or "the demo model"
    draw(rows, processor.tokenizer, args.out, f"What the tutor teaches: failed rollouts of {name} on held-out "
         f"problems (K = {args.topk})", args.show, args.mark)
    print(f"wrote {args.out}: {len(rows)} failed rollouts; mean JSD per token "
          + ", ".join(f"{sum(r['jsd']) / len(r['jsd']):.3f}" for r in rows))
    return rows


if __name__ == "__main__":
    main()
