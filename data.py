"""
data.py: the one JSONL format shared by train.py, eval.py and hints.py, and its validator.

One problem per line:
    {"id": "geo-17",                      unique string (default: the line number)
     "image": "images/17.png",            path relative to the JSONL file ("images": [...] for several)
     "question": "What is the area?",     or "problem"; an "<image>" placeholder is allowed
     "answer": "12",                      the gold answer, compared by reward.is_correct
     "choices": ["3", "6", "12", "24"],   optional: a list (A, B, ...) or {"A": ..., ...}
     "hint": {"regions": [...], "steps": [...]},   optional, see hints.py
     "hint_text": "..."}                  optional, a hint rendered elsewhere (used as is)

Every problem is reported as "file:line: field: what is wrong". A bad record is skipped and
counted (or stops the run with strict=True); a hint that leaks the answer is dropped and its
problem kept, since the problem still trains under plain GRPO.
"""
import json
import os

from PIL import Image

import hints


class DataError(ValueError):
    pass


def _check_record(rec, where, base_dir, check_hints):
    """Validate one parsed line; return (example, notes) or raise DataError naming the field."""
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object")
    question = rec.get("question", rec.get("problem"))
    if not isinstance(question, str) or not question.strip():
        raise DataError(f"{where}: field 'question': missing or empty")
    answer = rec.get("answer")
    if answer is None or not str(answer).strip():
        raise DataError(f"{where}: field 'answer': missing or empty")
    paths = rec.get("images", [rec["image"]] if "image" in rec else None)
    if not paths or not all(isinstance(p, str) and p for p in paths):
        raise DataError(f"{where}: field 'image': missing or empty")
    paths = [p if os.path.isabs(p) else os.path.join(base_dir, p) for p in paths]
    sizes = []
    for p in paths:
        if not os.path.exists(p):
            raise DataError(f"{where}: field 'image': file not found: {p}")
        try:
            with Image.open(p) as im:
                im.load()
                sizes.append(im.size)
        except Exception as e:
            raise DataError(f"{where}: field 'image': unreadable image {p}: {type(e).__name__}: {e}") from None
    choices = rec.get("choices")
    if choices is not None and not (isinstance(choices, (list, dict)) and len(choices) >= 2):
        raise DataError(f"{where}: field 'choices': expected a list or object with at least 2 options")
    ex = {"id": str(rec.get("id", where)), "images": paths, "image_size": sizes[0], "image_sizes": sizes,
          "question": question,
          "answer": str(answer).strip(), "choices": choices, "hint": None, "hint_text": None,
          "where": where, "record": rec}
    notes = []
    if check_hints and rec.get("hint") is not None:
        try:
            ex["hint"] = hints.validate_hint(rec["hint"], sizes[0])
        except ValueError as e:
            notes.append(f"{where}: field 'hint': {e}; hint dropped, problem kept")
        else:
            why = hints.find_spoiler(hints.hint_words(ex["hint"]), ex["answer"], choices)
            if why:
                ex["hint"] = None
                notes.append(f"{where}: field 'hint': spoiler ({why}); hint dropped, problem kept")
    if check_hints and rec.get("hint_text") is not None:
        text = rec["hint_text"]
        why = hints.find_spoiler(text, ex["answer"], choices) if isinstance(text, str) and text.strip() else "empty"
        if why:
            notes.append(f"{where}: field 'hint_text': {why}; hint dropped, problem kept")
        else:
            ex["hint_text"] = text.strip()
    return ex, notes


def load_jsonl(path, strict=False, check_hints=True, report=print):
    """All valid examples of a JSONL file. Bad lines are reported and skipped (strict: raised)."""
    if not os.path.exists(path):
        raise DataError(f"{path}: file not found")
    base = os.path.dirname(os.path.abspath(path))
    examples, problems, seen = [], [], set()
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{where}: invalid JSON: {e.msg} at column {e.colno}") from None
                ex, notes = _check_record(rec, where, base, check_hints)
                if ex["id"] in seen:
                    raise DataError(f"{where}: field 'id': duplicate id {ex['id']!r}")
            except DataError as e:
                if strict:
                    raise
                problems.append(str(e))
                continue
            if notes and strict:
                raise DataError(notes[0])
            problems += notes
            seen.add(ex["id"])
            examples.append(ex)
    for p in problems:
        report(f"data: {p}")
    skipped = sum("dropped" not in p for p in problems)
    report(f"data: {path}: {len(examples)} examples loaded, {skipped} skipped, "
           f"{sum('dropped' in p for p in problems)} hints dropped, "
           f"{sum(e['hint'] is not None or e['hint_text'] is not None for e in examples)} with a hint")
    if not examples:
        raise DataError(f"{path}: no valid examples")
    return examples


def open_images(ex):
    return [Image.open(p).convert("RGB") for p in ex["images"]]


def image_size(ex):
    return ex["image_size"]
