"""
reward.py: verifiable rewards. A response is right or wrong; nothing else decides gating.

    extract_answer(text)                  -> the final answer string, or None
    is_correct(response, answer, choices) -> bool
    format_reward(response)               -> 1.0 for "<think>...</think><answer>...</answer>"
    reward(response, example)             -> 1.0 / 0.0, what train.py and eval.py call

Rules, in order: the last <answer>...</answer>, else the last \\boxed{...}, else a trailing
"the answer is X". Numbers compare by value (0.5 == 1/2 == \\frac12 == 50%), multiple choice
by letter or by the option's text, everything else as normalised text. If the optional
`math_verify` package is installed it is asked as a last resort for symbolic answers.
Model text is never evaluated as code; every scan is linear or bounded (tests/test_reward.py
feeds it a 1 MB response and 10,000 nested braces). Standard library only: copy it anywhere.
"""
import re
from fractions import Fraction

MAX_ANSWER_CHARS = 1000   # an "answer" longer than this is not a short verifiable answer
TAIL_CHARS = 2000         # "the answer is X" is looked for in the last characters only

# -----------------------------------------------------------------------------
# extraction


def _last_boxed(text):
    """Content of the last \\boxed{...} (or \\fbox{...}) with balanced braces, else None."""
    for tries, start in enumerate(_rfind_all(text, ("\\boxed{", "\\fbox{"))):
        if tries >= 5:  # bounded work on adversarial input: a handful of candidates at most
            return None
        depth, i = 1, start
        end = min(len(text), start + 10 * MAX_ANSWER_CHARS)
        while i < end:
            c = text[i]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i]
            i += 1
    return None


def _rfind_all(text, needles):
    """Start offsets (after the needle) of every needle occurrence, last first."""
    hits = []
    for n in needles:
        pos = text.rfind(n)
        while pos != -1 and len(hits) < 50:
            hits.append(pos + len(n))
            pos = text.rfind(n, 0, pos)
    return sorted(hits, reverse=True)


_ANSWER_IS = re.compile(r"(?:final answer|the answer|answer)\s*(?:is|:|=)\s*:?\s*([^\n]{1,200})", re.I)


def extract_answer(text):
    """The final answer in a response: last <answer>..</answer>, last \\boxed{}, "answer is X"."""
    if not text:
        return None
    end = text.rfind("</answer>")
    if end != -1:
        start = text.rfind("<answer>", 0, end)
        if start != -1:
            return text[start + len("<answer>"):end].strip()
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    matches = _ANSWER_IS.findall(text[-TAIL_CHARS:])
    if matches:
        return matches[-1].strip().rstrip(".").strip()
    return None

# -----------------------------------------------------------------------------
# normalisation


_TEXT_WRAP = re.compile(r"\\(?:text|textbf|mathrm|mathbf|operatorname|mbox)\{([^{}]*)\}")


def normalize(s):
    """Case, whitespace, $...$, \\text{}, \\left/\\right, trailing period, spacing macros."""
    s = s.strip()
    for _ in range(3):
        if len(s) >= 2 and s[0] == "$" and s[-1] == "$":
            s = s.strip("$").strip()
        if s.startswith("\\(") and s.endswith("\\)"):
            s = s[2:-2].strip()
        if s.startswith("\\[") and s.endswith("\\]"):
            s = s[2:-2].strip()
    s = _TEXT_WRAP.sub(r"\1", s)
    for macro in ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\displaystyle"):
        s = s.replace(macro, "")
    s = s.replace("\\%", "%").replace("^\\circ", "").replace("^{\\circ}", "").replace("°", "")
    s = re.sub(r"\s+", " ", s).strip().rstrip(".").strip()
    return s.lower()


_NUMBER = re.compile(r"^([+-]?)(\d{1,3}(?:,\d{3})+|\d+)?(?:\.(\d+))?$")
_FRAC_TEX = re.compile(r"^([+-]?)\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}$|^([+-]?)\\[dt]?frac(\d)(\d)$")


def parse_number(s):
    """A normalised string as an exact Fraction (ints, decimals, 1,234, 3/4, \\frac34, 50%)."""
    s = s.replace(" ", "")
    if not s or len(s) > 60:
        return None
    if s.endswith("%"):
        v = parse_number(s[:-1])
        return None if v is None else v / 100
    m = _FRAC_TEX.match(s)
    if m:
        sign, a, b = (m.group(1), m.group(2), m.group(3)) if m.group(2) else (m.group(4), m.group(5), m.group(6))
        a, b = parse_number(a), parse_number(b)
        if a is None or not b:
            return None
        return -a / b if sign == "-" else a / b
    if s.count("/") == 1:
        a, b = s.split("/")
        a, b = parse_number(a), parse_number(b)
        return None if a is None or not b else a / b
    m = _NUMBER.match(s)
    if not m or (m.group(2) is None and m.group(3) is None):
        return None
    v = Fraction(int((m.group(2) or "0").replace(",", ""))) + (Fraction(f"0.{m.group(3)}") if m.group(3) else 0)
    return -v if m.group(1) == "-" else v


_UNIT_TAIL = re.compile(r"^(.*?\d)\s*(?:[a-z]{1,12}(?:\^?\d)?)(?:\s+[a-z]{1,12})?$")


def _number_of(s):
    """Value of a normalised answer, allowing a trailing unit word ("12 cm", "3 apples")."""
    v = parse_number(s)
    if v is None:
        m = _UNIT_TAIL.match(s)
        if m:
            v = parse_number(m.group(1))
    return v


def numbers_equal(a, b, rel=1e-6):
    return a == b or abs(a - b) <= rel * max(abs(a), abs(b), 1)

# -----------------------------------------------------------------------------
# multiple choice


_LETTER = re.compile(r"^(?:(?:option|choice|answer)\s*:?\s*)?\(?([a-z])\)?(?:[.:)]|\s|$)", re.I)


def choice_letter(raw):
    """The option letter a response picks: "B", "(B)", "B.", "option B", "(B) text"."""
    s = raw.strip().strip("$").strip()
    if len(s) == 1 and s.isalpha():
        return s.upper()
    m = _LETTER.match(s)
    if not m:
        return None
    letter = m.group(1)
    # a lower-case bare letter followed by a word is an article ("a cat"), not an option
    explicit = s[:1] == "(" or s.lower().startswith(("option", "choice", "answer")) or letter.isupper()
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


def _math_verify(pred, gold):
    try:
        import math_verify  # optional: pip install math-verify
    except ImportError:
        return False
    try:
        return bool(math_verify.verify(math_verify.parse(gold), math_verify.parse(pred)))
    except Exception:  # math_verify raises on unparsable input; that is simply "not equal"
        return False


def answers_match(pred, gold, choices=None):
    """Is the extracted answer `pred` the gold answer? Both are raw strings."""
    if pred is None or len(pred) > MAX_ANSWER_CHARS:
        return False
    p, g = normalize(pred), normalize(str(gold))
    if not p:
        return False
    if p == g:
        return True
    opts = options(choices)
    gold_letter = g.upper() if len(g) == 1 and g.isalpha() else None
    if gold_letter:
        picked = choice_letter(pred)
        if picked is not None:
            return picked == gold_letter
        if gold_letter in opts:
            return answers_match(pred, opts[gold_letter])
        return False
    if opts:  # gold is an option's text; a letter pointing at that option counts
        picked = choice_letter(pred)
        if picked in opts and normalize(opts[picked]) == g:
            return True
    pv, gv = _number_of(p), _number_of(g)
    if pv is not None and gv is not None:
        return numbers_equal(pv, gv)
    return _math_verify(pred, str(gold)) if any(c in g for c in "\\^{}()+-*/=") else False


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
