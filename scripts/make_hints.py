"""
scripts/make_hints.py: the offline hint command. An expert vision-language model writes a structured
hint for every training problem; each reply is checked (check_expert_reply: hints.validate_hint,
then reward.find_spoiler) and only a reply that passes becomes a hint. A problem whose replies all
fail is written without a hint: it still trains (under plain GRPO, with the KL anchor), it is
only never tutored.

    python scripts/make_hints.py --model EXPERT --data train.jsonl --out train_with_hints.jsonl

Any transformers VLM works as the expert (hub id or local directory); a thinking expert's JSON is
taken from after its </think>. Resumable: ids already in --out are skipped, and a partial last
line (a kill mid-write) is dropped and redone. Ends with counts by rejection reason. Left out on
purpose: an LLM spoiler judge (the filter is a rule set; see reward.py) and API-served experts.
"""
import argparse
import json
import os
import re
import sys
from collections import Counter

from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data  # noqa: E402
import rollout  # noqa: E402
from config import NONNEG, POS, add_flags, ranged  # noqa: E402
from hints import EXPERT_PROMPT, hint_words, validate_hint  # noqa: E402
from reward import find_spoiler, options  # noqa: E402

# -----------------------------------------------------------------------------
# the expert's prompt, and the check every reply passes: schema, then the zero-spoiler filter


def parse_expert_json(text, opened_think=False):
    """The first JSON object in a model's reply (code fences and chatter tolerated).

    A thinking expert reasons in <think>...</think> first, often with a draft JSON in there: only
    what follows the last </think> counts, and a reply cut off inside <think> has no JSON.
    opened_think: the chat template opened the <think> block itself (Qwen3-VL-*-Thinking), so
    the reply starts inside it. One pass over the text, then one json.loads per outermost
    balanced {...}: linear time, whatever the reply holds (30 kB of "{" included)."""
    end = text.rfind("</think>")
    if end != -1:
        text = text[end + len("</think>"):]
    elif opened_think or "<think>" in text:
        raise ValueError("the reply ends inside <think>: cut off before its JSON")
    text = re.sub(r"```(?:json)?", "", text)
    for start, stop in _outermost_braces(text):
        chunk = text[start:stop + 1]
        for candidate in (chunk, re.sub(r",\s*([}\]])", r"\1", chunk)):
            try:
                obj = json.loads(candidate)
            except (json.JSONDecodeError, RecursionError):
                continue
            if isinstance(obj, dict):
                return obj
    raise ValueError("no JSON object found in the reply")


def _outermost_braces(text, max_chars=20000):
    """(start, end) of every balanced {...} not inside another balanced one, in order. Braces
    are counted without reading strings: a JSON string holding one lone brace is lost, which
    costs a retry, where tracking quotes would let one stray quote in the chatter hide the JSON."""
    opened, spans = [], []
    for i, c in enumerate(text):
        if c == "{":
            opened.append(i)
        elif c == "}" and opened:
            start = opened.pop()
            while spans and spans[-1][0] > start:  # a closed span inside this one: keep the outer
                spans.pop()
            if i - start < max_chars:
                spans.append((start, i))
    return spans


def check_expert_reply(text, example, image_size, opened_think=False, spoiler_filter=True):
    """Parse, validate and spoiler-check one expert reply: (hint, None) or (None, reason).
    spoiler_filter=False keeps a leaking hint (the ablation of the zero-spoiler filter)."""
    try:
        raw = parse_expert_json(text, opened_think)
    except ValueError:
        return None, "invalid JSON"
    try:
        hint = validate_hint(raw, image_size)
    except ValueError as e:
        return None, "bad schema: " + str(e).split(":")[0]
    why = spoiler_filter and find_spoiler(hint_words(hint), example["answer"],
                                          example.get("choices"))
    if why:
        return None, "spoiler: " + why.split(":")[0]
    return hint, None


def expert_prompt(ex):
    """hints.EXPERT_PROMPT filled in for one example: its size, question, options and answer."""
    w, h = (ex.get("image_size") or (0, 0))
    opts = options(ex.get("choices"))
    choices = "".join(f"({k}) {v}\n" for k, v in opts.items())
    return EXPERT_PROMPT.format(width=w, height=h, question=ex["question"], answer=ex["answer"],
                                choices=("Options:\n" + choices) if choices else "")


# -----------------------------------------------------------------------------
# the command


def finished_ids(path):
    """Ids already written to `path`. A kill mid-write leaves a partial last line: it is cut off
    here (its example is done again), so the appends that follow start on a line of their own."""
    if not os.path.exists(path):
        return set()
    with open(path, "rb") as f:
        raw = f.read()
    whole = raw[:raw.rfind(b"\n") + 1]
    done = set()
    for n, line in enumerate(whole.decode("utf-8", errors="replace").splitlines(), 1):
        try:
            rec = json.loads(line) if line.strip() else {"id": None}
            done.add(rec["id"])
        except (json.JSONDecodeError, TypeError, KeyError) as e:  # a complete line written by something else
            raise data.DataError(f"{path}:{n}: not a record with an id ({type(e).__name__}: {e}); "
                                 "fix or remove that line, or pick another --out") from None
    if len(whole) < len(raw):
        print(f"{path}: dropping a partial last line ({len(raw) - len(whole)} bytes)")
        with open(path, "r+b") as f:
            f.truncate(len(whole))
    return done - {None}


def generate_hints(args):
    """Prompt the expert for every example without an accepted hint; write what passes."""
    try:
        examples = data.load_jsonl(args.data, strict=False, check_hints=False,
                                   allow_outside_images=args.allow_outside_images)
        done = finished_ids(args.out)
    except data.DataError as e:
        sys.exit(f"make_hints.py: {e}")
    todo = [ex for ex in examples if ex["id"] not in done]
    print(f"{len(examples)} examples, {len(done)} already in {args.out}, {len(todo)} to do")
    if args.model == "toy":  # the demo model, built if missing (a folder named toy/ is not a model)
        from demo import toy
        args.model = toy.ensure()[0]
    model, processor = rollout.load_model(args.model, dtype=args.dtype, device=args.device)
    opened_think = rollout.opens_think(processor)  # a Thinking template: replies start inside <think>
    report = Counter()
    with open(args.out, "a") as out:
        for i in tqdm(range(0, len(todo), args.batch_size), desc="hints"):
            batch = todo[i:i + args.batch_size]
            accepted = {}
            for attempt in range(args.retries + 1):
                pending = [ex for ex in batch if ex["id"] not in accepted]
                if not pending:
                    break
                prompts = [expert_prompt(ex) for ex in pending]
                images = [rollout.open_images(ex) for ex in pending]
                replies = rollout.generate_text(model, processor, images, prompts, max_new_tokens=args.max_new_tokens,
                                                temperature=args.temperature, seed=args.seed + attempt)
                for ex, reply in zip(pending, replies):
                    hint, why = check_expert_reply(reply, ex, data.image_size(ex), opened_think,
                                                   spoiler_filter=not args.no_spoiler_filter)
                    if hint is not None:
                        accepted[ex["id"]] = hint
                    elif attempt == args.retries:
                        report[why] += 1
            for ex in batch:
                rec = dict(ex["record"])
                rec.pop("image", None)   # image paths re-anchored at the output file's folder
                rec.pop("hint", None)
                here = os.path.dirname(os.path.abspath(args.out))
                rec["images"] = [os.path.relpath(p, here) for p in ex["images"]]
                if ex["id"] in accepted:
                    rec["hint"] = accepted[ex["id"]]
                    report["accepted"] += 1
                out.write(json.dumps(rec) + "\n")   # rejected: kept without a hint (counted by reason)
            out.flush()
    print(f"hint report for {len(todo)} examples (after up to {args.retries} retries):")
    for why, n in report.most_common():
        print(f"  {n:6d}  {why}")
    return report


def main(argv=None):
    p = argparse.ArgumentParser(description="Generate privileged hints with an expert VLM.")
    p.add_argument("--model", required=True, help="expert model: hub id, local directory, or 'toy'")
    p.add_argument("--data", required=True, help="input JSONL (the shared format: docs/ENGINEERING.md)")
    p.add_argument("--out", required=True, help="output JSONL; ids already there are skipped")
    p.add_argument("--batch_size", type=POS, default=8, help="prompts per generate() call")
    p.add_argument("--retries", type=NONNEG, default=2, help="new tries for a rejected hint")
    p.add_argument("--max_new_tokens", type=POS, default=2048,
                   help="length cap of a reply; thinking experts spend most of it inside <think> and "
                        "a reply cut off there is rejected, so keep it generous")
    p.add_argument("--temperature", type=ranged(float, 0), default=0.7, help="sampling temperature (0: greedy)")
    add_flags(p, "--seed", "--dtype")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    add_flags(p, "--no_spoiler_filter", "--allow_outside_images")
    generate_hints(p.parse_args(argv))   # rejected hints are counted in its report, not an error
    return 0


if __name__ == "__main__":
    sys.exit(main())
