"""
expert_hints.py: writing and vetting hints: the expert model's prompt, parsing its reply, and the
zero-spoiler filter every hint passes (scripts/make_hints.py when writing, data.py when loading).

    find_spoiler(text, answer, choices)   -> a reason string if the text leaks, else None
    expert_prompt(example)                -> the prompt an expert model answers with a hint
    parse_expert_json(text, opened_think) -> the first JSON object after any <think> block
    check_expert_reply(text, example, size, opened_think) -> (hint, None) or (None, reason)

Pure: the standard library, hints.py (the schema) and reward.py's normalisers (clean_unicode,
normalize, options, parse_number). The zero-spoiler filter is a precise rule set, not a model;
what it cannot catch (a paraphrase such as "the colour of a ripe tomato") is listed in
tests/test_hints.py. The tutor never needs this file: hints.py is what it reads.
"""
import json
import re
from fractions import Fraction

from hints import hint_words, validate_hint
from reward import clean_unicode, normalize, options, parse_number

# -----------------------------------------------------------------------------
# the zero-spoiler filter

_WORD_NUMBERS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen".split())}
_WORD_NUMBERS.update({w: 10 * (i + 2) for i, w in enumerate(
    "twenty thirty forty fifty sixty seventy eighty ninety".split())})
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10 ** 6}
_PARTS = {"half": Fraction(1, 2), "halves": Fraction(1, 2), "quarter": Fraction(1, 4),
          "quarters": Fraction(1, 4), "third": Fraction(1, 3), "thirds": Fraction(1, 3)}
# quantity words count only after "a" or a number word ("a dozen", "four score"):
# "the score" is clean
_QUANTITIES = {"dozen": 12, "score": 20, "gross": 144}
_JOINERS = ("and", "a", "an")    # inside a run: "two hundred and five", "half a dozen"

# Phrases that state a final answer, right or wrong: the "trap" filter.
_ASSERTIONS = [
    (r"\b(?:the\s+)?(?:final\s+|correct\s+|right\s+)?answer\s*"
     r"(?:is|=|:|would be|should be|must be|will be)",
     "states a final answer"),
    (r"\b(?:so|thus|therefore|hence)\b[^.]{0,40}\b(?:result|answer|total|value|count|number)"
     r"\s+(?:is|equals|=)",
     "concludes a result"),
    (r"\b(?:result|solution)\s+(?:is|equals|=)\s", "states the result"),
    (r"\bcorrect\s+(?:option|choice)\b", "names the correct option"),
    (r"\b(?:correct|right)\s+(?:one|letter|pick)\s+(?:is|=|:|would be|must be)",
     "names the correct option"),
    (r"\b(?i:choose|select|pick|tick|circle)\s+(?i:option\s+|choice\s+)?\(?[A-Z]\)?(?![\w-])",
     "picks an option"),
    (r"\b(?i:option|choice)\s*\(?[A-Z]\)?\s+(?i:is|must be|would be)\s+(?i:the\s+)?"
     r"(?i:correct|right|answer)",
     "asserts an option"),
    (r"(?<![\w(])\(?[A-Z]\)?\s+(?i:is)\s+(?i:the\s+)?(?i:correct|right)\b", "asserts an option"),
    (r"<answer>|\\boxed", "contains an answer tag"),
]
_ASSERTIONS = [(re.compile(p, re.I if "[A-Z]" not in p else 0), why) for p, why in _ASSERTIONS]

_BOX = re.compile(r"[\[(]\s*-?\d+(?:\.\d+)?(?:\s*,\s*-?\d+(?:\.\d+)?){1,3}\s*[\])]")
_NUM_IN_TEXT = re.compile(r"(?<![\w.])[+-]?(?:\\[dt]?frac\{[^{}]{1,20}\}\{[^{}]{1,20}\}|"
                          r"\d+(?:,\d{3})*(?:\.\d+)?(?:[eE][+-]?\d+)?(?:\s*/\s*\d+)?%?)")


# "1 2", "3-0-5" for 12, 305
_SPACED_DIGITS = re.compile(r"(?<![\w.,])\d(?:[ \-]\d)+(?![\w,]|\.\d)")
# Roman numerals of two or more letters (XII); one letter alone (I, C, X) is a word or a label
_ROMAN = re.compile(r"(?<![A-Za-z])(?=[MDCLXVI]{2,}(?![A-Za-z]))"
                    r"(M{0,3})(CM|CD|D?C{0,3})(XC|XL|L?X{0,3})(IX|IV|V?I{0,3})(?![A-Za-z])")
_ROMAN_VALUES = {"M": 1000, "D": 500, "C": 100, "L": 50, "X": 10, "V": 5, "I": 1}


def _numbers_in(text):
    """Every number a text states (digits, 1.2e1, fractions, number words, quantity words, Roman
    numerals, digits spaced apart), coordinates excluded."""
    text = _BOX.sub(" ", text)
    found = []
    for m in _NUM_IN_TEXT.finditer(text):
        v = parse_number(m.group(0).replace(" ", ""))
        if v is not None:
            found.append((m.group(0), v))
    found += [(m.group(0), Fraction(int(re.sub(r"\D", "", m.group(0)))))
              for m in _SPACED_DIGITS.finditer(text)]
    found += [(m.group(0), _roman_value(m.group(0))) for m in _ROMAN.finditer(text)]
    return found + _word_numbers(text)


def _roman_value(numeral):
    values = [_ROMAN_VALUES[c] for c in numeral]
    return Fraction(sum(-v if v < nxt else v for v, nxt in zip(values, values[1:] + [0])))


def _word_numbers(text):
    """Numbers in words: each word alone and each run as a whole ("twenty four" = 24 and 20 and 4,
    "two hundred" = 200, "three quarters" = 0.75, "half a dozen" = 6), so no spelling hides the
    value."""
    found, run, prev = [], [], ""
    for w in re.findall(r"[a-z]+", text.lower()) + [""]:
        quantity = w in _QUANTITIES and (run or prev in ("a", "an"))
        if w in _WORD_NUMBERS or w in _SCALES or w in _PARTS or quantity or (w in _JOINERS and run):
            run.append(w)
            prev = w
            continue
        prev = w
        while run and run[-1] in _JOINERS:
            run.pop()
        if run:
            found += [(x, _run_value([x])) for x in run if x not in _JOINERS]
            if len(run) > 1:
                found.append((" ".join(run), _run_value(run)))
        run = []
    return found


def _run_value(words):
    total, current = 0, 0
    for w in words:
        if w in _WORD_NUMBERS:
            current += _WORD_NUMBERS[w]
        elif w == "hundred":
            current = (current or 1) * 100
        elif w in _SCALES:
            total, current = total + (current or 1) * _SCALES[w], 0
        elif w in _PARTS:
            current = (current or 1) * _PARTS[w]
        elif w in _QUANTITIES:
            current = (current or 1) * _QUANTITIES[w]
    return total + current


def _contains_phrase(text_norm, phrase_norm):
    if not phrase_norm:
        return False
    return re.search(r"(?<![a-z0-9])" + re.escape(phrase_norm) + r"(?![a-z0-9])",
                     text_norm) is not None


_SPACED = re.compile(r"(?<![a-z0-9])[a-z0-9](?:[\s.,*_\-]{1,3}[a-z0-9])+(?![a-z0-9])")


def _spelled_apart(text_norm, phrase_norm):
    """Is the phrase written one character at a time ("r-e-d", "r e d", "R.E.D.")?"""
    squashed = re.sub(r"[^a-z0-9]", "", phrase_norm)
    return len(squashed) >= 2 and any(re.sub(r"[^a-z0-9]", "", m.group(0)) == squashed
                                      for m in _SPACED.finditer(text_norm))


_ORDINALS = {w: i for i, w in enumerate(
    "first second third fourth fifth sixth seventh eighth ninth tenth".split())}
_OPTION_NOUN = r"(?:option|choice|alternative|answer)s?\b"
_BY_PLACE = re.compile(r"\b(penultimate|last|" + "|".join(_ORDINALS) + r"|\d+(?:st|nd|rd|th))"
                       r"(\s*-?\s*(?:to|from)\s*-?\s*(?:the\s+)?(?:last|end))?\s+" + _OPTION_NOUN,
                       re.I)
_BY_NUMBER = re.compile(r"\b(?:option|choice|alternative)\s+(?:number\s+|no\.\s*|#\s*)?(\d+|"
                        + "|".join(list(_WORD_NUMBERS)[1:11]) + r")\b", re.I)


def _names_place(text, index, n_options):
    """Does the text name option number `index` (0-based) by its place: "the second option", "the
    last choice" (needs the number of options), "second to last answer", "option 2", "choice
    two"?"""
    for m in _BY_PLACE.finditer(text):
        word = m.group(1).lower()
        if word in ("last", "penultimate"):
            place = n_options - (1 if word == "last" else 2) if n_options else None
        else:
            k = _ORDINALS[word] if word in _ORDINALS else int(re.match(r"\d+", word).group()) - 1
            place = (n_options - 1 - k if n_options else None) if m.group(2) else k
        if place == index:
            return True
    for m in _BY_NUMBER.finditer(text):
        word = m.group(1).lower()
        if (int(word) if word.isdigit() else _WORD_NUMBERS[word]) - 1 == index:
            return True
    return False


def find_spoiler(text, answer, choices=None):
    """Why `text` reveals or asserts the final answer, or None when it is clean.

    Catches: an answer-stating phrase of any kind ("the answer is", "choose C", "the correct one
    is B": the trap filter); the gold answer as text after normalisation; the gold value as a
    number in any form (12.0, 1.2e1, twelve, twenty four, 1/2 = 0.5 = 50%), coordinates in [..]
    or (..) excepted; quantity words ("a dozen", "four score"), Roman numerals of two or more
    letters (XII), digits or letters spelled apart ("1 2", "r-e-d"); the correct option's letter
    used as an answer, the option named by its place ("the second option", "the last choice",
    "option 2") and the correct option's text.
    Text and answer first go through reward.clean_unicode, the answer checker's own normaliser
    (full-width ｒｅｄ, the minus sign U+2212, zero-width characters).
    """
    text, answer = clean_unicode(text), clean_unicode(str(answer))
    for pattern, why in _ASSERTIONS:
        m = pattern.search(text)
        if m:
            return f"{why}: '{m.group(0).strip()}'"
    t = normalize(text)
    gold = normalize(str(answer))
    opts = options(choices)
    letter = gold.upper() if len(gold) == 1 and gold.isalpha() else None
    targets = [gold] if not letter else []
    if letter:
        if re.search(rf"(?:\(\s*{letter}\s*\)|\b(?:option|choice|letter)\s+{letter}\b)", text,
                     re.I):
            return f"names the correct option ({letter})"
        if letter in opts:
            targets.append(normalize(opts[letter]))
    place = letter or next((k for k, v in opts.items() if normalize(v) == gold), None)
    if place and _names_place(text, ord(place) - ord("A"), len(opts)):
        return f"names the correct option by its place ({place})"
    for target in targets:
        value = parse_number(target)
        if value is None:
            if target in ("yes", "no", "true", "false"):
                continue  # a bare yes/no leaks only through an assertion, caught above
            if len(target) >= 2 and _contains_phrase(t, target):
                return f"contains the answer text '{target}'"
            if _spelled_apart(t, target):
                return f"spells out the answer text '{target}'"
            continue
        candidates = {value, value * 100} if target.endswith("%") else {value}
        for raw, v in _numbers_in(text):
            if v in candidates:
                return f"states the answer's value ({raw.strip()} = {target})"
    return None

# -----------------------------------------------------------------------------
# the expert's prompt and its reply

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
    w, h = (ex.get("image_size") or (0, 0))
    opts = options(ex.get("choices"))
    choices = "".join(f"({k}) {v}\n" for k, v in opts.items())
    return EXPERT_PROMPT.format(width=w, height=h, question=ex["question"], answer=ex["answer"],
                                choices=("Options:\n" + choices) if choices else "")
