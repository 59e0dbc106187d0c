"""
hints.py: privileged hints, from an expert model's JSON to the block in the tutor's prompt.

A hint is structured data (the paper's two parts), never the answer:
    {"regions": [{"box": [x1, y1, x2, y2], "label": "the triangle", "role": "focus"},
                 {"box": [...], "label": "a circle", "role": "distractor"}],
     "steps": ["Find the triangle.", "Read the colour of its fill."],
     "frame": false}
boxes in pixels of the original image; both parts optional, not both empty. "frame": true asks
the tutor's copy of the image to carry a frame around each focus box (draw_focus). That is a
visual channel beyond the paper's method (its tutor gets the same pixels as the student), so
it is off unless the data asks for it. The embedded demo's hints are words only (its warm start
used the frame as a scaffold, then taught the tutor to follow the words; docs/DEMO.md).

    validate_hint(hint, image_size)       -> the hint, cleaned, or ValueError naming the field
    render_hint(hint, image_size, ...)    -> the deterministic text block the tutor reads
    render_hint_text(hint)                -> the same hint as one paragraph of prose (the
                                             unstructured-hint ablation: no boxes, no roles,
                                             no list)
    draw_focus(image, hint)               -> a copy of the image with the focus boxes framed
    EXPERT_PROMPT                         -> the prompt an expert model answers with a hint

What the tutor needs and nothing else: the standard library and Pillow (draw_focus). The
zero-spoiler filter every hint passes is reward.find_spoiler (it reads answers as the reward
does); the offline command that asks an expert model for hints, and checks each reply with
both, is scripts/make_hints.py.
"""

ROLES = ("focus", "distractor")

# -----------------------------------------------------------------------------
# schema


def validate_hint(hint, image_size=None):
    """Check and clean a structured hint; raise ValueError("field: problem") when bad.

    image_size: (width, height) of the original image; when given, boxes must lie inside it.
    """
    if not isinstance(hint, dict):
        raise ValueError(f"hint: expected an object, got {type(hint).__name__}")
    unknown = set(hint) - {"regions", "steps", "frame"}
    if unknown:
        raise ValueError(f"hint: unknown keys {sorted(unknown)}")
    regions, steps = hint.get("regions") or [], hint.get("steps") or []
    if not isinstance(regions, list) or not isinstance(steps, list):
        raise ValueError("hint: 'regions' and 'steps' must be lists")
    if not isinstance(hint.get("frame", False), bool):
        raise ValueError(f"hint.frame: expected true or false, got {hint['frame']!r}")
    clean = {"regions": [], "steps": []}
    if hint.get("frame"):
        clean["frame"] = True
    for i, r in enumerate(regions):
        where = f"hint.regions[{i}]"
        if not isinstance(r, dict):
            raise ValueError(f"{where}: expected an object")
        box, label, role = r.get("box"), r.get("label", ""), r.get("role", "focus")
        if (not isinstance(box, (list, tuple)) or len(box) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)):
            raise ValueError(f"{where}.box: expected [x1, y1, x2, y2] numbers, got {box!r}")
        x1, y1, x2, y2 = box
        if not (x1 < x2 and y1 < y2):
            raise ValueError(f"{where}.box: needs x1 < x2 and y1 < y2, got {box!r}")
        if image_size is not None:
            w, h = image_size
            if x1 < 0 or y1 < 0 or x2 > w or y2 > h:
                raise ValueError(f"{where}.box: {box!r} lies outside the {w}x{h} image")
        if role not in ROLES:
            raise ValueError(f"{where}.role: must be one of {ROLES}, got {role!r}")
        if not isinstance(label, str):
            raise ValueError(f"{where}.label: expected a string")
        clean["regions"].append({"box": [float(v) for v in box], "label": label.strip(),
                                 "role": role})
    for i, s in enumerate(steps):
        if not isinstance(s, str) or not s.strip():
            raise ValueError(f"hint.steps[{i}]: expected a non-empty string")
        clean["steps"].append(s.strip())
    if not clean["regions"] and not clean["steps"]:
        raise ValueError("hint: both 'regions' and 'steps' are empty")
    return clean


def hint_words(hint):
    """The hint's own words (labels and steps), the part that can leak an answer."""
    return " ".join([r["label"] for r in hint["regions"]] + hint["steps"])

# -----------------------------------------------------------------------------
# rendering for the tutor


def box_for_model(box, image_size, box_format="norm1000", resized_size=None):
    """A pixel box in the model family's own convention.

    norm1000: integers in 0..1000 relative to the image (Qwen3-VL).
    pixels:   absolute pixels of the image as the processor resized it (Qwen2.5-VL);
              resized_size = (width, height) after resizing.
    """
    w, h = image_size
    if box_format == "norm1000":
        sx, sy = 1000.0 / w, 1000.0 / h
    elif box_format == "pixels":
        rw, rh = resized_size or image_size
        sx, sy = rw / w, rh / h
    else:
        raise ValueError(f"box_format must be norm1000 or pixels, got {box_format!r}")
    x1, y1, x2, y2 = box
    return [round(x1 * sx), round(y1 * sy), round(x2 * sx), round(y2 * sy)]


def render_hint(hint, image_size=None, box_format="norm1000", resized_size=None):
    """The hint as the text block appended to the question in the tutor's prompt."""
    lines = ["Hint:"]
    for role, head in (("focus", "Look at"), ("distractor", "Ignore")):
        items = []
        for r in hint["regions"]:
            if r["role"] != role:
                continue
            label = r["label"] or "this region"
            if image_size is not None:
                b = box_for_model(r["box"], image_size, box_format, resized_size)
                label += " [" + ", ".join(str(v) for v in b) + "]"
            items.append(label)
        if items:
            lines.append(f"{head}: " + "; ".join(items) + ".")
    for i, s in enumerate(hint["steps"], 1):
        lines.append(f"{i}. {s}")
    return "\n".join(lines)


def render_hint_text(hint):
    """The hint as free text instead of regions and steps: the paper's structured vs unstructured
    ablation, made from the same hint so that only the form changes. No boxes (a free-text hint
    names places in words), no Look at / Ignore headings, no numbered steps."""
    regions = hint["regions"]
    focus = [r["label"] or "the key region" for r in regions if r["role"] == "focus"]
    other = [r["label"] or "the other regions" for r in regions if r["role"] == "distractor"]
    parts = []
    if focus:
        parts.append("What matters is " + " and ".join(focus) + ".")
    if other:
        parts.append("Do not be misled by " + " or ".join(other) + ".")
    parts += [s if s.rstrip().endswith((".", "!", "?")) else s + "." for s in hint["steps"]]
    return "Hint: " + " ".join(parts)


def draw_focus(image, hint, width=3, colour=(0, 0, 0)):
    """A copy of the image with a frame around every focus box (the student never sees it).
    Used only for hints with "frame": true (a privileged visual channel beyond the paper)."""
    from PIL import ImageDraw
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    for r in hint["regions"]:
        if r["role"] == "focus":
            x1, y1, x2, y2 = r["box"]
            draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=colour, width=width)
    return out

# -----------------------------------------------------------------------------
# the expert's prompt (scripts/make_hints.py reads its reply)

EXPERT_PROMPT = """You are writing a privileged hint for a student who will solve this problem.
The image is {width}x{height} pixels. Problem: {question}
{choices}The correct final answer is: {answer}
(The answer is for your eyes only. The student must never learn it from the hint.)

Write a hint that teaches the way, not the answer, as JSON with two parts:
- "regions": the image regions that matter, each {{"box": [x1, y1, x2, y2] in pixels of this
  image, "label": a few words naming the object, "role": "focus" or "distractor"}}; mark as
  "distractor" what looks relevant but must be ignored;
- "steps": 2 to 5 short sentences of reasoning direction, in order.
Zero-spoiler rule: never state, imply or compute the final answer, its value in any form, the
correct option letter or the correct option's text, and never write "the answer is".
Reply with the JSON object only."""
