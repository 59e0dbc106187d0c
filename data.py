"""
data.py: the one JSONL format shared by train.py, eval.py and scripts/make_hints.py, and its
validator.

One problem per line (UTF-8; a leading byte-order mark is fine):
    {"id": "geo-17",                      unique string or integer (default: file:line)
     "image": "images/17.png",            path relative to the JSONL file ("images": [...] for
                                          several)
     "question": "What is the area?",     or "problem"; an "<image>" placeholder is allowed
     "answer": "12",                      a string or a number, compared by reward.is_correct
     "choices": ["3", "6", "12", "24"],   optional: a list (A, B, ...) or {"A": ..., ...}
     "hint": {"regions": [...], "steps": [...]},   optional, see hints.py
     "hint_text": "..."}                  optional, a hint rendered elsewhere (used as is)

Every problem is reported as "file:line: field: what is wrong". A bad record is skipped and
counted (or stops the run with strict=True); a hint that leaks the answer is dropped and its
problem kept, since the problem still trains under plain GRPO. The aim is that a record which
loads never crashes the run later, at whatever step first draws it. So the loader also refuses:
  - `<|...|>` anywhere in a string: the form of every chat and vision special token. One in a
    question breaks the image-token count or forges a chat turn.
  - lone surrogates ("\\ud800" is valid JSON): the tokenizer cannot encode them.
  - images the Qwen-VL processor refuses (aspect ratio over 200), FIFOs and other non-files.
  - image paths outside the data file's folder (absolute, or escaping with ".."), unless the
    caller passes allow_outside_images=True. Symlinks inside the folder are followed on purpose:
    datasets often link to a shared image store.
Prompt length needs the processor, so it is a second pass: check_lengths(examples, processor,
limit), for eval data as well as training data.
"""
import json
import math
import os
import random
import re
import stat

from PIL import Image

import hints
import reward

SPECIAL_TOKEN = re.compile(r"<\|[^|<>\s]*\|>")  # <|im_end|>, <|image_pad|>, <|box_start|>, ...
# Qwen-VL's smart_resize raises above this (transformers 5.24, Qwen2/2.5/3-VL)
MAX_ASPECT_RATIO = 200


class DataError(ValueError):
    pass


def _kind(v):
    """A JSON value's type in JSON's words, for messages."""
    if isinstance(v, bool):
        return "true/false"
    return {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number",
            type(None): "null"}.get(type(v), type(v).__name__)


def _strings(rec):
    """(field path, string) for every key and string value in a record. Iterative, not recursive:
    json.loads accepts nesting almost as deep as the recursion limit."""
    stack = [("", rec)]
    while stack:
        path, v = stack.pop()
        if isinstance(v, str):
            yield path, v
        elif isinstance(v, dict):
            for k, x in v.items():
                yield (path or k), k
                stack.append((f"{path}.{k}" if path else k, x))
        elif isinstance(v, list):
            stack.extend((f"{path}[{i}]", x) for i, x in enumerate(v))


def _check_strings(rec, where):
    """Refuse text the tokenizer cannot encode or would read as a special token."""
    for field, s in _strings(rec):
        try:
            s.encode("utf-8")
        except UnicodeEncodeError as e:
            # the field name may hold one too: escape it, so the message prints
            field = field.encode("utf-8", "backslashreplace").decode()
            raise DataError(f"{where}: field '{field}': lone surrogate {s[e.start]!r} "
                            f"at character {e.start + 1} (not encodable text)") from None
        m = SPECIAL_TOKEN.search(s)
        if m:
            raise DataError(f"{where}: field '{field}': contains {m.group()!r}; text of the form "
                            f"<|...|> is a chat or vision special token and is not allowed")


def image_size_problem(width, height):
    """Why the Qwen-VL processor would refuse a width x height image, or None. A pure mirror of
    its smart_resize, so loading data needs no processor. Tiny images pass: the pinned
    transformers scales anything under its minimum pixel count up (some older releases, and
    qwen_vl_utils, refuse a side under 28 pixels; a test pins this rule to the processor)."""
    if min(width, height) < 1:
        return f"image is {width}x{height}, empty"
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        return (f"image is {width}x{height}, aspect ratio {ratio:g} over the Qwen-VL processor's "
                f"limit of {MAX_ASPECT_RATIO}")
    return None


def _image_fields(rec, where):
    """[(field name, path)] of a record's images, type-checked."""
    if "images" in rec:
        paths = rec["images"]
        if not isinstance(paths, list) or not paths:
            raise DataError(f"{where}: field 'images': expected a non-empty list of paths, "
                            f"got {_kind(paths)}")
        fields = [(f"images[{i}]", p) for i, p in enumerate(paths)]
    elif "image" in rec:
        fields = [("image", rec["image"])]
    else:
        raise DataError(f"{where}: field 'image': missing")
    for field, p in fields:
        if not isinstance(p, str) or not p.strip():
            raise DataError(f"{where}: field '{field}': expected a non-empty path, got {_kind(p)}")
    return fields


def _check_image(field, p, where, base_dir, allow_outside):
    """The image's full path and (width, height), or DataError. Checks that the path is a regular
    file before opening it (opening a FIFO blocks forever) and the size before decoding pixels."""
    if not allow_outside and (os.path.isabs(p) or os.path.normpath(p).split(os.sep)[0] == ".."):
        raise DataError(f"{where}: field '{field}': {p!r} is outside the data file's folder; "
                        f"absolute and '..' paths need allow_outside_images "
                        f"(--allow_outside_images)")
    full = os.path.join(base_dir, p)
    try:
        st = os.stat(full)
    except FileNotFoundError:
        raise DataError(f"{where}: field '{field}': file not found: {full}") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise DataError(f"{where}: field '{field}': cannot read {full}: {e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{where}: field '{field}': not a regular file: {full}")
    try:
        with Image.open(full) as im:
            why = image_size_problem(*im.size)
            if why is None:
                im.load()
            size = im.size
    except Exception as e:
        raise DataError(f"{where}: field '{field}': unreadable image {full}: "
                        f"{type(e).__name__}: {e}") from None
    if why:
        raise DataError(f"{where}: field '{field}': {why}: {full}")
    return full, size


def _check_choices(choices, where):
    if choices is None:
        return
    if not isinstance(choices, (list, dict)) or len(choices) < 2:
        raise DataError(f"{where}: field 'choices': expected a list or object with at least "
                        f"2 options")
    if isinstance(choices, list) and len(choices) > 26:
        raise DataError(f"{where}: field 'choices': {len(choices)} options, more than the "
                        f"letters A-Z")
    items = choices.items() if isinstance(choices, dict) else enumerate(choices)
    for k, v in items:
        if isinstance(v, bool) or not isinstance(v, (str, int, float)) or not str(v).strip():
            raise DataError(f"{where}: field 'choices': option {k}: expected a non-empty string "
                            f"or a number")


def _check_answer(answer, choices, where):
    """The gold answer as a stripped string. A lone letter must name one of the choices (or be an
    option's own text): reward.answers_match would otherwise score every response wrong."""
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        raise DataError(f"{where}: field 'answer': missing or empty")
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        raise DataError(f"{where}: field 'answer': expected a string or a number, "
                        f"got {_kind(answer)}")
    if isinstance(answer, float) and not math.isfinite(answer):
        raise DataError(f"{where}: field 'answer': {answer} is not a finite number")
    answer = str(answer).strip()
    opts, g = reward.options(choices), reward.normalize(answer)
    if (opts and len(g) == 1 and g.isalpha() and g.upper() not in opts
            and all(reward.normalize(v) != g for v in opts.values())):
        raise DataError(f"{where}: field 'answer': letter {answer!r} is not one of the choices "
                        f"{', '.join(opts)}")
    return answer


def _check_hints(ex, rec, where, spoiler_filter=True):
    """Fill ex's hint fields; return notes for hints dropped (the problem itself is kept).
    spoiler_filter=False keeps hints that leak the answer: the paper's ablation of the filter."""
    notes = []
    if rec.get("hint") is not None:
        try:
            ex["hint"] = hints.validate_hint(rec["hint"], ex["image_size"])
        except ValueError as e:
            notes.append(f"{where}: field 'hint': {e}; hint dropped, problem kept")
        else:
            why = spoiler_filter and reward.find_spoiler(hints.hint_words(ex["hint"]), ex["answer"],
                                                         ex["choices"])
            if why:
                ex["hint"] = None
                notes.append(f"{where}: field 'hint': spoiler ({why}); hint dropped, problem kept")
    if rec.get("hint_text") is not None:
        text = rec["hint_text"]
        if not isinstance(text, str):
            why = f"expected a string, got {_kind(text)}"
        else:
            why = "empty" if not text.strip() else spoiler_filter and reward.find_spoiler(
                text, ex["answer"], ex["choices"])
        if why:
            notes.append(f"{where}: field 'hint_text': {why}; hint dropped, problem kept")
        else:
            ex["hint_text"] = text.strip()
    return notes


def _check_record(rec, where, base_dir, check_hints, allow_outside, spoiler_filter=True):
    """Validate one parsed line; return (example, notes) or raise DataError naming the field."""
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object, got {_kind(rec)}")
    _check_strings(rec, where)
    question = rec.get("question", rec.get("problem"))
    if question is not None and not isinstance(question, str):
        raise DataError(f"{where}: field 'question': expected a string, got {_kind(question)}")
    if not question or not question.strip():
        raise DataError(f"{where}: field 'question': missing or empty")
    rid = rec.get("id", where)
    if isinstance(rid, bool) or not isinstance(rid, (str, int)) or not str(rid).strip():
        raise DataError(f"{where}: field 'id': expected a non-empty string or an integer, "
                        f"got {_kind(rid)}")
    choices = rec.get("choices")
    _check_choices(choices, where)
    answer = _check_answer(rec.get("answer"), choices, where)
    images = [_check_image(f, p, where, base_dir, allow_outside)
              for f, p in _image_fields(rec, where)]
    paths, sizes = [p for p, _ in images], [s for _, s in images]
    category = rec.get("category")
    if category is not None and not isinstance(category, (str, int)):
        raise DataError(f"{where}: field 'category': expected a string, got {_kind(category)}")
    ex = {"id": str(rid), "images": paths, "image_size": sizes[0], "image_sizes": sizes,
          "question": question, "answer": answer, "choices": choices, "hint": None,
          "hint_text": None,
          "category": None if category is None else str(category), "where": where, "record": rec}
    return ex, (_check_hints(ex, rec, where, spoiler_filter) if check_hints else [])


def check_record(rec, where, base_dir, allow_outside_images=False):
    """One parsed record checked exactly as load_jsonl checks a line: (example, notes about dropped
    hints), or DataError naming the field. For converters that must write only lines that load
    (scripts/prepare_data.py). Duplicate ids are a file-level check, left to the caller."""
    return _check_record(rec, where, base_dir, True, allow_outside_images)


def _decode(raw, where):
    """One line's bytes as text. Lines are decoded one at a time so that a bad byte costs only
    its own line; utf-8-sig drops a byte-order mark (also one left where files were joined)."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: not valid UTF-8 (byte {e.start + 1} is "
                        f"{raw[e.start:e.start + 1]!r})") from None


def _parse(line, where):
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: invalid JSON: {e.msg} at column {e.colno}") from None
    except RecursionError:
        raise DataError(f"{where}: invalid JSON: nested too deeply") from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise DataError(f"{where}: invalid JSON: {e}") from None


def _open_data(path):
    """The data file opened for binary reading, or a DataError that reads well on its own."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"data file not found: {path}") from None
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read data file {path}: {e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"data file {path} is a directory; expected a JSONL file")
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block here forever
        raise DataError(f"data file {path} is not a regular file; expected a JSONL file")
    if st.st_size == 0:
        raise DataError(f"data file {path} is empty; expected one JSON record per line")
    try:
        return open(path, "rb")
    except OSError as e:
        raise DataError(f"cannot read data file {path}: {e.strerror}") from None


def _load_line(raw, where, base_dir, check_hints, allow_outside, spoiler_filter=True):
    """(example, notes) of one line, None for a blank one, or DataError for a bad one."""
    try:
        line = _decode(raw, where)
        if not line.strip():
            return None
        return _check_record(_parse(line, where), where, base_dir, check_hints, allow_outside,
                             spoiler_filter)
    except DataError:
        raise
    except Exception as e:  # a check broken by a record nobody foresaw: reject it, keep loading
        raise DataError(f"{where}: cannot be checked: {type(e).__name__}: {e}") from None


def load_jsonl(path, strict=False, check_hints=True, report=print, allow_outside_images=False,
               spoiler_filter=True):
    """All valid examples of a JSONL file. Bad lines are reported and skipped (strict: raised).
    allow_outside_images: accept absolute and '..' image paths (off: a data file from elsewhere
    cannot make the run read files outside its folder). spoiler_filter=False keeps hints that
    leak the answer (an ablation; train.py --no_spoiler_filter)."""
    base = os.path.dirname(os.path.abspath(path))
    # problems: in line order, dropped hints too
    examples, problems, rejected, seen = [], [], [], set()
    with _open_data(path) as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            try:
                got = _load_line(raw, where, base, check_hints, allow_outside_images,
                                 spoiler_filter)
                if got and got[0]["id"] in seen:
                    raise DataError(f"{where}: field 'id': duplicate id {got[0]['id']!r}")
            except DataError as e:
                if strict:
                    raise
                rejected.append(str(e))
                problems.append(str(e))
                continue
            if got is None:
                continue
            ex, ex_notes = got
            if ex_notes and strict:
                raise DataError(ex_notes[0])
            problems += ex_notes
            seen.add(ex["id"])
            examples.append(ex)
    for p in problems:
        report(f"data: {p}")
    dropped = len(problems) - len(rejected)
    report(f"data: {path}: {len(examples)} examples loaded, {len(rejected)} skipped, "
           f"{dropped} hints dropped, "
           f"{sum(e['hint'] is not None or e['hint_text'] is not None for e in examples)} "
           f"with a hint")
    if not examples:
        why = (f"all {len(rejected)} records rejected, the first as {rejected[0]}" if rejected
               else "only blank lines")
        raise DataError(f"data file {path} has no valid examples: {why}")
    return examples

# -----------------------------------------------------------------------------
# prompt length: needs the processor, so a second pass after loading


def prompt_length(processor, ex):
    """Prompt tokens of an example without decoding pixels (rollout.prompt_length; exact, so a
    limit never has to truncate)."""
    import rollout  # here, not at the top: loading data needs neither torch nor a processor
    sizes = ex.get("image_sizes", [ex["image_size"]] * len(ex["images"]))
    return rollout.prompt_length(processor, ex["question"], sizes)


def max_token_chars(tokenizer):
    """The most characters of text one token can stand for: the longest string in the vocabulary
    (byte-level BPE, Qwen's: one character per byte of text; SentencePiece: one per character)."""
    if not hasattr(tokenizer, "_max_token_chars"):
        tokenizer._max_token_chars = max(len(t) for t in tokenizer.get_vocab())
    return tokenizer._max_token_chars


# Unicode normalisation (NFC) can merge up to 3 characters into one before the tokenizer counts them
NORMALISED = 4


def check_lengths(examples, processor, limit, strict=False, report=print):
    """The examples whose prompt fits in `limit` tokens. Longer ones are reported and dropped,
    never truncated (that would cut image tokens). Run it on eval data too: one 1 MB question
    stalls a whole evaluation batch. A question too long to fit in `limit` tokens whatever they
    hold (over limit x the longest token's characters x NORMALISED) is refused by its length
    alone: tokenising a 50 MB line took minutes and 11 GB. (A tokenizer with an unknown-word token,
    which can swallow a word of any length, could make that bound refuse a prompt that would fit;
    Qwen's byte-level BPE has none.)"""
    keep, bound = [], limit * max_token_chars(processor.tokenizer) * NORMALISED
    for ex in examples:
        if len(ex["question"]) > bound:
            n, what = len(ex["question"]), "characters, more than fit in"
        else:
            n, what = prompt_length(processor, ex), "tokens, over"
        if n <= limit:
            keep.append(ex)
            continue
        msg = (f"{ex['where']}: field 'question': prompt is {n} {what} the limit of {limit} tokens "
               f"(--max_prompt_tokens)")
        if strict:
            raise DataError(msg)
        report(f"data: {msg}; skipped")
    if examples and not keep:
        raise DataError(f"data file {examples[0]['where'].rsplit(':', 1)[0]} has no example "
                        f"whose prompt fits in {limit} tokens (--max_prompt_tokens)")
    return keep


def image_size(ex):
    return ex["image_size"]

# -----------------------------------------------------------------------------
# data order


def step_examples(examples, step, n, seed):
    """The n prompts of a step: a seeded shuffle per epoch, so position = step * n resumes
    exactly."""
    order, start = [], step * n
    epoch = start // len(examples)
    while len(order) < (start % len(examples)) + n:
        idx = list(range(len(examples)))
        random.Random(seed * 1_000_003 + epoch).shuffle(idx)
        order += idx
        epoch += 1
    first = start % len(examples)
    return [examples[i] for i in order[first:first + n]]
