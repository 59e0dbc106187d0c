"""
reward.py: verifiable rewards. A response is right or wrong; nothing else decides gating.

    extract_answer(text)                  -> the final answer string, or None
    is_correct(response, answer, choices) -> bool
    format_reward(response)               -> 1.0 for "<think>...</think><answer>...</answer>"
    reward(response, example)             -> 1.0 / 0.0, what train.py and eval.py call
    normalize(s), options(choices)        -> the text normaliser and the choices as {"A": text}
    find_spoiler(text, answer, choices)   -> why a hint's text gives the answer away, or None

Extraction, in order: the last <answer>...</answer>, else the last \\boxed{...} (boxes side by side,
"\\boxed{1} and \\boxed{2}", are one list), else a trailing "the answer is X". An answer longer
than MAX_ANSWER_CHARS (a whole solution in the answer tag) is wrong: this reward reads answers,
not the last number of a solution.

The verdict, strict on purpose (a false accept is reward hacking waiting to happen):
1. Multiple choice: by letter ("B", "(B)", "option B", "B. text", "B。") or by the option's text.
2. answers.compare: both sides read into forms (numbers, expressions, lists, tuples, intervals,
   relations, ratios, matrices, units; answers/compare.py lists what it handles and what not).
   When both parse, that is the verdict. For a sentence with one $...$ span (or "the answer is X")
   the stated part is compared.
3. Otherwise the optional math_verify package (pip install math-verify), where installed and
   USE_MATH_VERIFY is on; ask_math_verify (answers/compare.py) says when its verdict counts.
4. Otherwise the normalised texts must be equal.
The zero-spoiler filter (find_spoiler) asks the same question of a hint, with the same normalisers,
and a hint must fail it: data.py drops a hint that states the answer in any form, and
scripts/make_hints.py rejects it. A precise rule set, not a model; what it cannot catch (a
paraphrase such as "the colour of a ripe tomato") is listed in tests/test_hints.py.
Model text is never evaluated as code; every scan is linear or bounded (tests/test_reward.py feeds
it a 1 MB response and 10,000 nested braces). Imports: the standard library and answers/ (itself
standard library only, math_verify optional): copy the file and the folder anywhere.
"""
import re
from fractions import Fraction

from answers.compare import (ask_math_verify, clean_unicode, compare,  # noqa: F401 (re-exported)
                             parse_number, unwrap)

MAX_ANSWER_CHARS = 1000   # an "answer" longer than this is not a short verifiable answer
TAIL_CHARS = 2000         # "the answer is X" is looked for in the last characters only
# ask math_verify where installed; tests and scripts/reward_table.py flip it
USE_MATH_VERIFY = True

# -----------------------------------------------------------------------------
# extraction


def _closing_brace(text, start):
    """Index of the brace closing the one opened just before `start`, bounded, else None."""
    depth = 1
    for i in range(start, min(len(text), start + 10 * MAX_ANSWER_CHARS)):
        c = text[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
    return None


def _rfind_all(text, needles):
    """(needle start, content start) of every needle occurrence, last first, at most 50 each."""
    hits = []
    for n in needles:
        pos = text.rfind(n)
        while pos != -1 and len(hits) < 50:
            hits.append((pos, pos + len(n)))
            pos = text.rfind(n, 0, pos)
    return sorted(hits, reverse=True)


# what may stand between boxes that form one list answer: "\boxed{1}, \boxed{2} and \boxed{3}"
_BETWEEN_BOXES = re.compile(r"(?:[\s,;.$]|\\[(),;\[\]]|\\q?quad|"
                            r"\\text\{\s*(?:and|or)\s*\}|and|or)*")


def _boxed(text):
    """The last \\boxed{...} (or \\fbox{...}); boxes side by side join into one list "1, 2"."""
    parts, left = [], None
    for tries, (macro, start) in enumerate(_rfind_all(text, ("\\boxed{", "\\fbox{"))):
        if tries >= 5:  # bounded work on adversarial input: a handful of candidates at most
            break
        end = _closing_brace(text, start)
        if end is None:
            if parts:
                break
            continue
        if left is not None and (end > left or not _BETWEEN_BOXES.fullmatch(text[end + 1:left])):
            break
        parts.append(text[start:end].strip())
        left = macro
    return ", ".join(reversed(parts)) if parts else None


_ANSWER_IS = re.compile(r"(?:final answer|the answer|answer)\s*(?:is|:|=)\s*:?\s*"
                        r"([^\n]{1,200})", re.I)


def extract_answer(text):
    """The final answer in a response: last <answer>..</answer>, last \\boxed{}, "answer is X"."""
    if not text:
        return None
    text = clean_unicode(text)
    end = text.rfind("</answer>")
    if end != -1:
        start = text.rfind("<answer>", 0, end)
        if start != -1:
            return text[start + len("<answer>"):end].strip()
    boxed = _boxed(text)
    if boxed is not None:
        return boxed
    matches = _ANSWER_IS.findall(text[-TAIL_CHARS:])
    if matches:
        return matches[-1].strip().rstrip(".").strip()
    return None

# -----------------------------------------------------------------------------
# text normalisation (text answers, multiple choice, and hints.py)


_TEXT_WRAP = re.compile(r"\\(?:text|textbf|textit|textnormal|textrm|mathrm|mathbf|mathit|"
                        r"operatorname|mbox)\{([^{}]*)\}")


def normalize(s):
    """Case, whitespace, $...$, \\text{}, \\left/\\right, trailing period, spacing macros."""
    s = _TEXT_WRAP.sub(r"\1", unwrap(clean_unicode(s)))
    for macro in ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\displaystyle"):
        s = s.replace(macro, "")
    s = s.replace("\\%", "%").replace("^\\circ", "").replace("^{\\circ}", "").replace("°", "")
    s = re.sub(r"\s+", " ", s).strip().rstrip(".").strip()
    return s.lower()


# -----------------------------------------------------------------------------
# multiple choice


_LETTER = re.compile(r"^(?:(?:option|choice|answer)\s*:?\s*)?\(?([a-z])\)?"
                     r"(?:[.:)。]|\s|$|(?=[\u3000-\u9fff]))", re.I)


def choice_letter(raw):
    """The option letter a response picks: "B", "(B)", "B.", "option B", "(B) text"."""
    s = _TEXT_WRAP.sub(r"\1", unwrap(clean_unicode(raw)))
    if len(s) == 1 and s.isalpha():
        return s.upper()
    m = _LETTER.match(s)
    if not m:
        return None
    letter = m.group(1)
    # a lower-case bare letter followed by a word is an article ("a cat"), not an option
    explicit = s[:1] == "(" or s.lower().startswith(("option", "choice", "answer")) \
        or letter.isupper()
    return letter.upper() if explicit else None


def options(choices):
    """choices as {"A": text, ...} from a list or a dict."""
    if not choices:
        return {}
    if isinstance(choices, dict):
        return {str(k).strip().upper(): str(v) for k, v in choices.items()}
    return {chr(ord("A") + i): str(c) for i, c in enumerate(choices)}

# -----------------------------------------------------------------------------
# correctness


def answers_match(pred, gold, choices=None):
    """Is the extracted answer `pred` the gold answer? Both are raw strings."""
    if pred is None or len(pred) > MAX_ANSWER_CHARS:
        return False
    gold = str(gold)
    p, g = normalize(pred), normalize(gold)
    if not p:
        return False
    opts = options(choices)
    lettered = len(g) == 1 and g.isalpha() and (opts or not _is_math(gold))
    gold_letter = g.upper() if lettered else None
    if gold_letter:
        picked = choice_letter(pred) or choice_letter(_stated(pred) or "")
        if picked is not None:
            return picked == gold_letter
        if gold_letter in opts:
            return answers_match(pred, opts[gold_letter])
        return False
    if opts:  # gold is an option's text; a letter pointing at that option counts
        picked = choice_letter(pred)
        if picked in opts and normalize(opts[picked]) == g:
            return True
    if _WORD.fullmatch(pred) and _WORD.fullmatch(gold):
        # two words ("no", "on"): text, not products of variables, which would be equal
        return p == g
    verdict = compare(pred, gold)
    stated = _stated(pred) if verdict is None else None
    if stated:
        verdict = compare(stated, gold)
    if verdict is None:
        verdict = ask_math_verify(pred, gold) if USE_MATH_VERIFY else None
    return p == g if verdict is None else verdict


_WORD = re.compile(r"\s*[A-Za-z]{2,}[.!]?\s*")


def _is_math(gold):
    """A one-letter gold in $...$ is a symbol ("$E$"), not an option letter."""
    return "$" in gold or "\\(" in gold


_MATH_SPAN = re.compile(r"(?s:\$\$(.+?)\$\$|\\\[(.+?)\\\])|\$([^$\n]+)\$|\\\(([^\n]+?)\\\)")


def _stated(pred):
    """The answer a sentence states: its one $...$ (or \\(...\\)), else what follows
    "the answer is"."""
    spans = _MATH_SPAN.findall(pred.replace("\\$", ""))
    if len(spans) == 1:
        return next(x for x in spans[0] if x).strip()
    said = _ANSWER_IS.findall(pred)
    return said[-1].strip().rstrip(".").strip() if said else None


def is_correct(response, answer, choices=None):
    """Correctness of a whole response against the gold answer."""
    return answers_match(extract_answer(response), answer, choices)


def format_reward(response):
    """1.0 if the response is <think>...</think> then <answer>...</answer> and nothing else."""
    s = response.strip()
    t0, t1 = s.find("<think>"), s.find("</think>")
    a0, a1 = s.find("<answer>"), s.rfind("</answer>")
    ok = (t0 == 0 and t1 > t0 and a0 > t1 and a1 > a0 and s.endswith("</answer>")
          and not s[t1 + len("</think>"):a0].strip() and s.count("<answer>") == 1)
    return 1.0 if ok else 0.0


def reward(response, example):
    """The verifiable reward of one response for one example (a dict with answer, choices)."""
    return 1.0 if is_correct(response, example["answer"], example.get("choices")) else 0.0

# -----------------------------------------------------------------------------
# the zero-spoiler filter: the same question asked of a hint, which must never give the answer away

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
    Text and answer first go through clean_unicode, the answer checker's own normaliser
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

