"""
reward.py: verifiable rewards. A response is right or wrong; nothing else decides gating.

    extract_answer(text)                  -> the final answer string, or None
    is_correct(response, answer, choices) -> bool
    format_reward(response)               -> 1.0 for "<think>...</think><answer>...</answer>"
    reward(response, example)             -> 1.0 / 0.0, what train.py and eval.py call
    normalize(s), options(choices)        -> the text normaliser and the choices as {"A": text}

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
Model text is never evaluated as code; every scan is linear or bounded (tests/test_reward.py feeds
it a 1 MB response and 10,000 nested braces). Imports: the standard library and answers/ (itself
standard library only, math_verify optional): copy the file and the folder anywhere.
"""
import re

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
