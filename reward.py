"""
reward.py: verifiable rewards. A response is right or wrong; nothing else decides gating.

    extract_answer(text)                  -> the final answer string, or None
    is_correct(response, answer, choices) -> bool
    format_reward(response)               -> 1.0 for "<think>...</think><answer>...</answer>"
    reward(response, example)             -> 1.0 / 0.0, what train.py and eval.py call
    clean_unicode(text)                   -> the one Unicode normaliser (hints.find_spoiler uses it too)

Extraction, in order: the last <answer>...</answer>, else the last \\boxed{...} (boxes side by side,
"\\boxed{1} and \\boxed{2}", are one list), else a trailing "the answer is X".

Equivalence is strict on purpose: a false accept is reward hacking waiting to happen.
1. Both sides go through one small parser of answer forms: numbers (1,234  .5  1e1  \\frac3{3}
   28%), constant expressions (3\\sqrt{13}, 6-5i, \\frac94\\pi), expressions in variables (compared at
   three rational points), tuples and intervals (brackets must match), unordered lists ("6 and 8"
   = "6,8" = "8, 6"), relations ("x \\le 5" = "5 \\ge x"; "k=1" = "1"), matrices, base-n numbers (204_6),
   units (ignored unless both sides carry one; then they must agree, powers included). When both
   sides parse, that is the verdict. Kinds must agree ("7 or -1" is a list, never the number -1).
   Rational values compare exactly: integers and fractions get no tolerance. Values involving
   pi, e or roots compare within REL_TOL (float error). The one rounding tolerance: a decimal of at
   least 6 significant digits is accepted for a non-integer gold that it rounds correctly
   (0.0833333 for 1/12, 1.41421 for \\sqrt2).
2. Otherwise the optional math_verify package is asked (pip install math-verify), the gold given in
   $...$ as its documentation says; its verdict counts only when both sides parse to the same kind
   of object and neither parse is a bare number standing for more text (it reads
   "1 - \\frac{1}{\\mathrm{e}}" as 1).
3. Otherwise the normalised texts must be equal.
Multiple choice: by letter or by the option's text. Model text is never evaluated as code; every
scan is linear or bounded (tests/test_reward.py feeds it a 1 MB response and 10,000 nested braces).
Standard library only (math_verify optional, imported where used): copy it anywhere.
"""
import cmath
import math
import operator
import re
import unicodedata
from fractions import Fraction

MAX_ANSWER_CHARS = 1000   # an "answer" longer than this is not a short verifiable answer
TAIL_CHARS = 2000         # "the answer is X" is looked for in the last characters only
REL_TOL = 1e-9            # for values with pi, e or roots: float error, not rounding
USE_MATH_VERIFY = True    # ask math_verify where installed; tests and scripts/reward_table.py flip it

# -----------------------------------------------------------------------------
# Unicode: one normaliser for answers and for the spoiler filter

_SUPERSCRIPTS = "⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺"
_SUPER_RUN = re.compile(f"[{_SUPERSCRIPTS}]+")
_SUPER_DIGITS = str.maketrans(_SUPERSCRIPTS, "0123456789-+")
_UNICODE_FIXES = str.maketrans({
    **{c: "-" for c in "\u2212\u2010\u2011\u2012\u2013\ufe63"},    # minus signs and dashes
    **{c: None for c in "\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff\u00ad"},
    "\u2044": "/"})                                                # the fraction slash of ½ after NFKC


def clean_unicode(text):
    """NFKC (full-width ０-９ Ａ-Ｚ, non-breaking spaces, ½), every minus sign as "-", no zero-width
    characters, superscript digits as ^{..} (NFKC alone would turn x² into x2)."""
    text = _SUPER_RUN.sub(lambda m: "^{" + m.group(0).translate(_SUPER_DIGITS) + "}", text)
    return unicodedata.normalize("NFKC", text).translate(_UNICODE_FIXES)

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
_BETWEEN_BOXES = re.compile(r"(?:[\s,;.$]|\\[(),;\[\]]|\\q?quad|\\text\{\s*(?:and|or)\s*\}|and|or)*")


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


_ANSWER_IS = re.compile(r"(?:final answer|the answer|answer)\s*(?:is|:|=)\s*:?\s*([^\n]{1,200})", re.I)


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


_TEXT_WRAP = re.compile(r"\\(?:text|textbf|textit|textnormal|textrm|mathrm|mathbf|mathit|operatorname|mbox)"
                        r"\{([^{}]*)\}")


def _unwrap(s):
    """Strip $...$, \\(...\\), \\[...\\] around an answer, and a trailing period."""
    s = s.strip()
    for _ in range(3):
        if len(s) >= 2 and s[0] == "$" and s[-1] == "$":
            s = s.strip("$").strip()
        if s.startswith(("\\(", "\\[")) and s.endswith(("\\)", "\\]")):
            s = s[2:-2].strip()
        s = s.rstrip(".").strip()
    return s


def normalize(s):
    """Case, whitespace, $...$, \\text{}, \\left/\\right, trailing period, spacing macros."""
    s = _TEXT_WRAP.sub(r"\1", _unwrap(clean_unicode(s)))
    for macro in ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\displaystyle"):
        s = s.replace(macro, "")
    s = s.replace("\\%", "%").replace("^\\circ", "").replace("^{\\circ}", "").replace("°", "")
    s = re.sub(r"\s+", " ", s).strip().rstrip(".").strip()
    return s.lower()


def parse_number(s):
    """A plain number as an exact Fraction (12, -3, 1,234, 0.5, .5, 1e1, 3/4, \\frac34, 50%), else None."""
    s = clean_unicode(s).replace(" ", "")
    if not s or len(s) > 60:
        return None
    percent = s.endswith("%")
    s = s[:-1] if percent else s
    if re.fullmatch(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        s = s.replace(",", "")
    v = _constant(s)
    if not isinstance(v, Fraction):
        return None
    return v / 100 if percent else v


def _constant(s):
    """The exact or float value of a variable-free expression string, else None."""
    e = _expression(s)
    if e is None or e.names:
        return None
    return e.at({})

# -----------------------------------------------------------------------------
# the expression parser: LaTeX-ish arithmetic to a function of its variables

_TOKEN = re.compile(r"\s*(?:((?:\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?)|(\\[a-zA-Z]+|\\[{}])|([a-zA-Z])|(\S))")
_FUNCS = {"sin": cmath.sin, "cos": cmath.cos, "tan": cmath.tan, "sec": lambda z: 1 / cmath.cos(z),
          "csc": lambda z: 1 / cmath.sin(z), "cot": lambda z: 1 / cmath.tan(z), "ln": cmath.log,
          "log": cmath.log, "exp": cmath.exp, "arcsin": cmath.asin, "arccos": cmath.acos,
          "arctan": cmath.atan, "sinh": cmath.sinh, "cosh": cmath.cosh, "tanh": cmath.tanh}
_MUL = {"*", "\\cdot", "\\times"}
_DIV = {"/", "\\div"}
_POINTS = [Fraction(13, 7), Fraction(-5, 11), Fraction(17, 3)]   # where expressions in variables are compared


class _Expr:
    """A parsed expression: `at(env)` evaluates it for values of its variables `names`."""

    def __init__(self, fn, names):
        self.fn, self.names = fn, names

    def at(self, env):
        try:
            v = self.fn(env)
        except (ArithmeticError, ValueError, TypeError):  # 1/0, log(0), overflow: no value
            return None
        if isinstance(v, complex) and v.imag == 0:
            v = v.real
        return v


def _exact_root(v, n):
    """The exact n-th root of a non-negative Fraction when it is rational, else None."""
    out = []
    for k in (v.numerator, v.denominator):
        if k.bit_length() > 1000:
            return None
        r = round(k ** (1.0 / n)) if k < 2 ** 1000 else None
        r = next((c for c in (r - 1, r, r + 1) if c >= 0 and c ** n == k), None) if r is not None else None
        if r is None:
            return None
        out.append(r)
    return Fraction(out[0], out[1])


def _power(a, b):
    """a^b, exact for rationals where the result is rational and of sane size."""
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        if b.denominator == 1 and abs(b) <= 4096:
            if a == 0 and b < 0:
                raise ZeroDivisionError
            if abs(b) * max(abs(a.numerator), abs(a.denominator)).bit_length() < 20000:
                return a ** int(b)
        elif a >= 0 and b.denominator <= 12:
            root = _exact_root(a, b.denominator)
            if root is not None:
                return _power(root, Fraction(b.numerator))
    a, b = complex(a), complex(b)
    if a == 0:
        if b.real <= 0:
            raise ZeroDivisionError
        return 0.0
    return cmath.exp(b * cmath.log(a))


def _sqrt(a):
    if isinstance(a, Fraction) and a >= 0:
        root = _exact_root(a, 2)
        if root is not None:
            return root
    return cmath.sqrt(complex(a))


def _factorial(a):
    if isinstance(a, Fraction) and a.denominator == 1 and 0 <= a <= 300:
        return Fraction(math.factorial(int(a)))
    raise ValueError("factorial of a non-integer")


def _apply(fn, *args):
    """A closure computing fn of the values of the argument closures at one point."""
    return lambda env: fn(*(a(env) for a in args))


class _Parser:
    """Recursive descent over tokens: expr := term (+|- term)*, term := factor (*|/|juxtaposed factor)*,
    factor := -factor | atom (^ factor)? !?. Builds closures; nothing is ever eval'ed."""

    def __init__(self, tokens):
        self.toks, self.i, self.names = tokens, 0, set()

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else (None, None)

    def take(self, want=None):
        kind, tok = self.peek()
        if kind is None or (want is not None and tok != want):
            raise ValueError(f"expected {want}")
        self.i += 1
        return tok

    def expr(self):
        left = self.term()
        while self.peek()[1] in ("+", "-"):
            op = operator.add if self.take() == "+" else operator.sub
            left = _apply(op, left, self.term())
        return left

    def term(self):
        left = self.factor()
        while True:
            kind, tok = self.peek()
            if tok in _MUL or tok in _DIV:
                self.take()
                left = _apply(operator.truediv if tok in _DIV else operator.mul, left, self.factor())
            elif kind in ("num", "var", "cmd") or tok in ("(", "{"):
                left = _apply(operator.mul, left, self.factor())  # juxtaposed: 2\pi, 3x, (a+5)(b+2)
            else:
                return left

    def factor(self):
        if self.peek()[1] in ("-", "+"):
            neg = self.take() == "-"
            inner = self.factor()
            return _apply(operator.neg, inner) if neg else inner
        base = self.atom()
        if self.peek()[1] == "^":
            self.take()
            exp = self.factor() if self.peek()[1] in ("-", "+") else self.atom()
            base = _apply(_power, base, exp)
        while self.peek()[1] == "!":
            self.take()
            base = _apply(_factorial, base)
        return base

    def argument(self):
        """A macro argument: {expr}, or one digit / letter / command (\\frac34, \\sqrt2)."""
        kind, tok = self.peek()
        if tok == "{":
            self.take()
            inner = self.expr()
            self.take("}")
            return inner
        if kind == "num" and re.fullmatch(r"\d+", tok) and len(tok) > 1:
            self.toks[self.i] = ("num", tok[1:])  # \frac94 is \frac{9}{4}: split the digit run
            return lambda e, v=Fraction(int(tok[0])): v
        return self.atom()

    def atom(self):
        kind, tok = self.peek()
        if kind == "num":
            self.take()
            v = Fraction(tok)
            return lambda e: v
        if kind == "var":
            self.take()
            if tok == "i":
                return lambda e: 1j
            if tok == "e":
                return lambda e: math.e
            name = tok
            if self.peek()[1] == "_":  # x_1, a_{37}
                self.take()
                k, sub = self.take(), None
                if k == "{":
                    sub = ""
                    while self.peek()[1] not in ("}", None):
                        sub += self.take()
                    self.take("}")
                name += "_" + (sub if sub is not None else k)
            self.names.add(name)
            return lambda e: e[name]
        if tok in ("(", "[", "{"):
            self.take()
            inner = self.expr()
            self.take({"(": ")", "[": "]", "{": "}"}[tok])
            return inner
        if tok == "|":
            self.take()
            inner = self.expr()
            self.take("|")
            return _apply(abs, inner)
        if kind == "cmd":
            return self.command()
        raise ValueError(f"unexpected {tok!r}")

    def command(self):
        tok = self.take()
        name = tok[1:]
        if name == "frac":
            num, den = self.argument(), self.argument()
            return _apply(operator.truediv, num, den)
        if name == "sqrt":
            n = None
            if self.peek()[1] == "[":
                self.take()
                n = self.expr()
                self.take("]")
            arg = self.argument()
            return _apply(_sqrt, arg) if n is None else _apply(lambda a, k: _power(a, 1 / k), arg, n)
        if name == "pi":
            return lambda e: math.pi
        if name == "infty":
            return lambda e: math.inf
        one_letter = self.toks[self.i:self.i + 3][::2] == [("op", "{"), ("op", "}")]
        if name in ("text", "operatorname") and one_letter:
            return self.argument()  # \mathrm{e} (made \text{e} by _prepare): a letter, never a word
        if name in _FUNCS:
            fn = _FUNCS[name]
            power = None
            if self.peek()[1] == "^":  # \sin^2 x
                self.take()
                power = self.atom()
            value = _apply(lambda z: fn(complex(z)), self.factor())
            return value if power is None else _apply(_power, value, power)
        raise ValueError(f"unknown command {tok}")


_WORD_FUNCS = re.compile(r"(?<![a-zA-Z\\])(sin|cos|tan|sec|csc|cot|ln|log|exp|sqrt|pi)(?![a-zA-Z])")


def _tokens(s):
    """Tokens of an expression, or None when the text is not one (a word, an unknown symbol)."""
    s = _WORD_FUNCS.sub(r"\\\1", s)
    if re.search(r"(?<![\\a-zA-Z])[a-zA-Z]{3,}", s):
        return None  # a word ("odd", "Evelyn"), not a product of three variables
    out, depth = [], 0
    for m in _TOKEN.finditer(s):
        num, cmd, var, other = m.groups()
        if num:
            out.append(("num", num))
        elif cmd:
            out.append(("cmd", cmd))
        elif var:
            out.append(("var", var))
        elif other in "+-*/^()[]{}|!_":
            depth += other in "([{"
            if depth > 50:
                return None
            out.append(("op", other))
        else:
            return None
    return out


def _expression(s):
    """Parse an expression string into an _Expr, or None."""
    if not s or len(s) > MAX_ANSWER_CHARS:
        return None
    toks = _tokens(s)
    if not toks:
        return None
    p = _Parser(toks)
    try:
        fn = p.expr()
        if p.i != len(toks):
            return None
    except (ValueError, RecursionError, ZeroDivisionError):
        return None
    return _Expr(fn, frozenset(p.names))

# -----------------------------------------------------------------------------
# answer forms: a value with a unit, lists, tuples and intervals, relations, matrices, base-n

_MATH_CHARS = str.maketrans({"π": "\\pi ", "√": "\\sqrt ", "∞": "\\infty ", "≤": "\\le ", "≥": "\\ge ",
                             "≠": "\\ne ", "·": "*", "⋅": "*", "×": "*", "÷": "/", "±": "\\pm ", "∓": "\\mp ",
                             "°": "^\\circ ", "∪": "\\cup ", "∈": "\\in ", "≈": "\\approx "})
_SPACING = re.compile(r"\\(?:left|right|[bB]igg?[lr]?)(?![a-zA-Z])|(?<!\\)\\[,;:! ]|\\q?quad(?![a-zA-Z])"
                      r"|\\displaystyle")
_TEXTLIKE = re.compile(r"\\(?:textbf|textit|textnormal|textrm|mbox|mathrm|mathbf|mathit|rm)\{")


def _prepare(s):
    """One spelling for the many LaTeX spellings of the same answer."""
    s = _unwrap(clean_unicode(s).replace("\\$", "")).replace("$", "").translate(_MATH_CHARS)
    s = re.sub(r"(?<!\\)\\\\(?=[a-zA-Z])", r"\\", s)                         # \\left typed for \left
    s = re.sub(r",\\!\s*|\{,\}", ",", s)                   # 10,\!080 and 14{,}916: thousands
    s = re.sub(r"\\[dtc]frac", r"\\frac", s)
    s = _TEXTLIKE.sub(r"\\text{", _SPACING.sub(" ", s))
    s = re.sub(r"\\(?:mathrm|rm)\s*([a-zA-Z])(?![a-zA-Z])", r"\1", s)   # \mathrm e
    s = re.sub(r"\\text\{\s*(and|or)\s*\}", r" \1 ", s)
    s = re.sub(r"\^\s*\{?\\circ\}?|\\circ|\\degree", "", s).replace("\\%", "%")
    s = re.sub(r"\s+", " ", s).strip()
    whole = re.fullmatch(r"\\text\{([^{}]*)\}", s)                     # \text{12 cm}
    return whole.group(1).strip() if whole else s


_PERCENT = re.compile(r"\s*(?:%|\\text\{\s*(?:percent|percentage|pct)\s*\}|(?<![a-zA-Z])(?:percent|percentage|pct))$")
_UNIT = re.compile(r"(?:\\text\{([^{}]*)\}|\s([a-zA-Z]{2,}(?: [a-zA-Z]{2,})?)|(?<=\d)(cm|mm|km|kg|mg|ml|ft|yd|hr|min))"
                   r"\s*(\^\s*\{?\d\}?)?$")


def _split_unit(s):
    """(core, unit or None, percent?) of a prepared answer: "15 cm^2" -> ("15", "cm^2", False)."""
    percent = False
    m = _PERCENT.search(s)
    if m and m.start() > 0:
        s, percent = s[:m.start()].strip(), True
    m = _UNIT.search(s)
    if m and m.start() > 0:
        words = (m.group(1) or m.group(2) or m.group(3)).strip().lower()
        if re.fullmatch(r"[a-z]{2,}(?: [a-z]+)*", words) and words not in ("and", "or") \
                and not _WORD_FUNCS.fullmatch(words):
            unit = re.sub(r"(?<=ch)es\b|(?<=[^s])s\b", "", words)  # inches = inch, cms = cm
            return s[:m.start()].strip(), unit + re.sub(r"[\s{}]", "", m.group(4) or ""), percent
    return s, None, percent


def _split_top(s, seps=",;"):
    """Split at separators outside any bracket ("[0,1)" counts as one bracket pair)."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(s):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c in seps and depth == 0:
            parts.append(s[start:i].strip())
            start = i + 1
    return parts + [s[start:].strip()]


def _encloses(s):
    """Does the bracket at s[0] close at s[-1] (so "(1)(2)" is not one tuple)?"""
    depth = 0
    for i, c in enumerate(s):
        depth += (c in "([{") - (c in ")]}")
        if depth == 0 and i < len(s) - 1:
            return False
    return depth == 0


_REL = re.compile(r"<=|>=|!=|=|<|>|\\(?:leq?|geq?|neq?|lt|gt|approx)(?![a-zA-Z])")
_REL_NAMES = {"\\le": "<=", "\\leq": "<=", "\\ge": ">=", "\\geq": ">=", "\\ne": "!=", "\\neq": "!=",
              "\\lt": "<", "\\gt": ">", "\\approx": "="}
_NAME = re.compile(r"[A-Za-z](?:_\{?\w+\}?)?'*|\((?:[A-Za-z]\s*,\s*)+[A-Za-z]\)|[A-Za-z]\([a-z]\)|\|?[A-Z]{1,3}\|?")
_MATRIX = re.compile(r"\\begin\{([pbBvV]?matrix|array)\}(?:\{[lcr|]*\})?(.*)\\end\{\1\}", re.S)


def _form(s, depth=0):
    """An answer's structure as nested tuples, or None when it is not a form this parser knows.
    ("val", expr, text) | ("seq", open, close, items) | ("set", items) | ("rel", op, lhs_text, lhs, rhs)
    | ("mat", rows) | ("base", digits, base)."""
    s = s.strip()
    if not s or depth > 8:
        return None
    s = re.sub(r"^[A-Za-z](?:_\{?\w+\}?)?\s*\\in\s+", "", s)          # "x \in [-2, 7]"
    if re.search(r"\\cup(?![a-zA-Z])", s):
        items = [_form(p, depth + 1) for p in re.split(r"\\cup(?![a-zA-Z])", s)]
        return ("set", items) if None not in items else None
    if re.fullmatch(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d{1,3}(?: \d{3})+", s):  # 7,425,000 and 1 000
        return _value(re.sub(r"[, ]", "", s))
    items = _split_top(re.sub(r"\s*(?<![a-zA-Z\\])(?:and|or)(?![a-zA-Z])\s*", ",", s))
    if len(items) > 1:                                                 # "6, 8", "6 and 8", "7 or -1"
        return _set_of(items, depth)
    rel = _relation(s, depth)
    if rel is not False:
        return rel
    if s.startswith(("\\{", "{")) and s.endswith("}") and _encloses(s.lstrip("\\")):
        inner = s[2:-2] if s.startswith("\\{") else s[1:-1]
        return _set_of(_split_top(inner), depth)
    if s[0] in "([" and s[-1] in ")]" and _encloses(s):
        items = _split_top(s[1:-1])
        if len(items) == 1 and _MATRIX.fullmatch(items[0]):          # \left[\begin{array}..\end{array}\right]
            return _form(items[0], depth + 1)
        if len(items) > 1 or s[0] == "[":
            forms = [_form(p, depth + 1) for p in items]
            return ("seq", s[0], s[-1], forms) if None not in forms else None
    m = _MATRIX.fullmatch(s)
    if m:
        rows = [[_form(c, depth + 1) for c in r.split("&")] for r in m.group(2).split("\\\\") if r.strip()]
        return ("mat", rows) if rows and all(None not in r for r in rows) else None
    m = re.fullmatch(r"([0-9A-Za-z]+)_\{?(\d+)\}?", s)
    if m and any(c.isdigit() for c in m.group(1)):                    # 204_6: a base-6 numeral
        return ("base", m.group(1).upper(), int(m.group(2)))
    if "\\pm" in s or "\\mp" in s:
        return _set_of([s], depth)
    return _value(s)


def _value(s):
    e = _expression(s)
    return None if e is None else ("val", e, s)


def _set_of(items, depth):
    """An unordered list; "a \\pm b" counts as its two values."""
    out = []
    for p in items:
        m = re.search(r"\\(?:pm|mp)(?![a-zA-Z])", p)
        if m:
            pair = [p[:m.start()] + "+" + p[m.end():], p[:m.start()] + "-" + p[m.end():]]
            f = _set_of(pair, depth + 1) if depth < 4 else None
            if f is None:
                return None
            out.extend(f[1])
        else:
            f = _form(p, depth + 1)
            if f is None:
                return None
            out.extend(f[1] if f[0] == "set" else [f])
    return ("set", out) if len(out) != 1 else out[0]


def _relation(s, depth):
    """("rel", op, lhs_text, lhs, rhs) for "a = b", "x \\le 5"; None if unparsable; False if no relation."""
    ops = [m for m in _REL.finditer(s) if _depth0(s, m.start())]
    if not ops:
        return False
    approx = [m for m in ops if m.group(0) == "\\approx"]
    if approx and approx[0] is not ops[0]:                              # "x = 1/3 \approx 0.33"
        s, ops = s[:approx[0].start()], [m for m in ops if m.start() < approx[0].start()]
    names = [_REL_NAMES.get(m.group(0), m.group(0)) for m in ops]
    if len(set(names)) != 1 or (names[0] != "=" and len(ops) > 1):
        return None                                                     # "1 \le |z| \le 2": not handled
    lhs_text, rhs_text = s[:ops[0].start()].strip(), s[ops[-1].end():].strip()
    lhs, rhs = _form(lhs_text, depth + 1), _form(rhs_text, depth + 1)  # a chain "x = 2+3 = 5": first, last
    if lhs is None or rhs is None:
        return None
    op = names[0]
    if op in (">", ">="):
        op, lhs, rhs, lhs_text = op.replace(">", "<"), rhs, lhs, rhs_text
    return ("rel", op, lhs_text, lhs, rhs)


def _depth0(s, i):
    return s[:i].count("(") + s[:i].count("[") + s[:i].count("{") == \
        s[:i].count(")") + s[:i].count("]") + s[:i].count("}")

# -----------------------------------------------------------------------------
# comparing forms


def _close(a, b):
    """Equal values: exactly for two rationals, within REL_TOL when pi, e or a root is involved."""
    if a is None or b is None:
        return False
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return a == b
    a, b = complex(a), complex(b)
    if not (cmath.isfinite(a) and cmath.isfinite(b)):
        return a == b
    return abs(a - b) <= REL_TOL * max(1.0, abs(a), abs(b))


_DECIMAL = re.compile(r"[+-]?(\d*)\.(\d+)")


def _rounds_to(text, value):
    """Is `text` a decimal of 6+ significant digits that is `value` (not an integer) correctly rounded?"""
    m = _DECIMAL.fullmatch(text.replace(" ", ""))
    if not m or value is None or isinstance(value, complex) or not math.isfinite(value):
        return False
    if (isinstance(value, Fraction) and value.denominator == 1) or len((m.group(1) + m.group(2)).lstrip("0")) < 6:
        return False
    return abs(Fraction(text.replace(" ", "")) - Fraction(value)) <= Fraction(1, 2 * 10 ** len(m.group(2)))


def _points(names):
    """Three assignments of rational values to the variables, the same for both sides."""
    names = sorted(names)
    return [{n: p + Fraction(2 * k + 1, 5) for k, n in enumerate(names)} for p in _POINTS]


def _same_value(g, p):
    """Two ("val", expr, text) forms: equal at every point where both are defined (at least two)."""
    names = g[1].names | p[1].names
    if not names:
        gv, pv = g[1].at({}), p[1].at({})
        return _close(gv, pv) or (_rounds_to(p[2], gv) and not _DECIMAL.fullmatch(g[2]))
    agree = 0
    for env in _points(names):
        gv, pv = g[1].at(env), p[1].at(env)
        if gv is None and pv is None:
            continue
        if not _close(gv, pv):
            return False
        agree += 1
    return agree >= 2


def _proportional(g, p, positive):
    """Do two differences (lhs - rhs) vanish together: is p = c * g for one constant c (> 0 if asked)?"""
    names = g.names | p.names
    ratio = None
    for env in _points(names) + _points(names)[::-1][:1]:
        gv, pv = g.at(env), p.at(env)
        if gv is None or pv is None:
            return False
        if gv == 0 or pv == 0:
            if not (_close(gv, 0) and _close(pv, 0)):
                return False
            continue
        c = pv / gv
        if ratio is None:
            ratio = c
        elif not _close(c, ratio):
            return False
    if ratio is None:
        return True
    return not positive or (not isinstance(ratio, complex) and ratio > 0)


def _difference(rel):
    lhs, rhs = rel[3], rel[4]
    if lhs[0] != "val" or rhs[0] != "val":
        return None
    return _Expr(lambda e, l=lhs[1], r=rhs[1]: l.fn(e) - r.fn(e), lhs[1].names | rhs[1].names)


def _same_relation(g, p):
    if g[1] != p[1]:
        return False
    dg, dp = _difference(g), _difference(p)
    if dg is None or dp is None:  # "(p, q) = (3, 2)": compare side by side
        return _same_form(g[3], p[3]) and _same_form(g[4], p[4])
    return _proportional(dg, dp, positive=g[1] != "=" and g[1] != "!=")


def _same_set(g, p):
    if len(g) != len(p):
        return False
    left = list(p)
    for item in g:
        match = next((j for j, q in enumerate(left) if _same_form(item, q)), None)
        if match is None:
            return False
        left.pop(match)
    return True


def _same_form(g, p):
    """Equality of two forms; a relation "x = v" with a bare name on the left also stands for v."""
    if g[0] == "rel" and p[0] != "rel" and g[1] == "=" and _NAME.fullmatch(g[2]):
        return _same_form(g[4], p)
    if p[0] == "rel" and g[0] != "rel" and p[1] == "=" and _NAME.fullmatch(p[2]):
        return _same_form(g, p[4])
    if g[0] != p[0]:
        return False
    kind = g[0]
    if kind == "val":
        return _same_value(g, p)
    if kind == "set":
        return _same_set(g[1], p[1])
    if kind == "seq":
        return g[1:3] == p[1:3] and len(g[3]) == len(p[3]) and all(map(_same_form, g[3], p[3]))
    if kind == "rel":
        return _same_relation(g, p)
    if kind == "mat":
        return [len(r) for r in g[1]] == [len(r) for r in p[1]] and \
            all(_same_form(a, b) for rg, rp in zip(g[1], p[1]) for a, b in zip(rg, rp))
    return g == p  # base-n numerals: digits and base


def _scaled(form, factor):
    e = form[1]
    return ("val", _Expr(lambda env: e.fn(env) * factor, e.names), "")


def compare(pred, gold):
    """True / False when both answers parse as forms this module knows, None when one does not."""
    try:
        return _compare(pred, gold)
    except (ArithmeticError, ValueError, TypeError, RecursionError):  # no verdict, never a crash
        return None


def _compare(pred, gold):
    (gc, gu, gp), (pc, pu, pp) = _split_unit(_prepare(gold)), _split_unit(_prepare(pred))
    g, p = _form(gc), _form(pc)
    if g is None or p is None:
        return None
    if gu and pu and gu != pu:
        return False  # 15 cm^2 is not 15 cm^3
    if gp != pp and g[0] == p[0] == "val":  # 28% = 28 = 0.28
        return _same_form(g, p) or _same_form(_scaled(g, Fraction(1, 100)) if gp else g,
                                               _scaled(p, Fraction(1, 100)) if pp else p)
    return _same_form(g, p)

# -----------------------------------------------------------------------------
# math_verify, where installed, for what the parser above does not know


def _in_dollars(s):
    """LaTeX for math_verify.parse: in $...$ as its documentation asks, unless already delimited."""
    return s if any(d in s for d in ("$", "\\(", "\\[", "\\boxed")) else f"${s}$"


def _kind(x):
    """The kind of object math_verify parsed: the two sides must agree on it."""
    import sympy
    if isinstance(x, str):
        return "text"
    if isinstance(x, sympy.MatrixBase):
        return "matrix"
    if isinstance(x, sympy.core.relational.Relational):
        return "relation"
    if isinstance(x, (sympy.Set, sympy.Tuple)):
        return "set"
    if getattr(x, "is_number", False):
        return "number"
    return "expression"


def _whole(extracted, text):
    """Did math_verify read all of `text`, not a prefix ("1 - \\frac{1}{" of "1 - \\frac{1}{\\mathrm{e}}")?"""
    squash = lambda s: re.sub(r"[\s$]|\\[()\[\]]", "", s)
    return extracted.count("{") == extracted.count("}") and len(squash(extracted)) >= len(squash(_unwrap(text))) // 2


def _math_verify(pred, gold):
    """math_verify's verdict where it is sound, else None (not installed, switched off, unsure)."""
    if not USE_MATH_VERIFY:
        return None
    try:
        import math_verify  # optional: pip install math-verify
    except ImportError:
        return None
    try:
        g, p = math_verify.parse(_in_dollars(gold)), math_verify.parse(_in_dollars(pred))
    except Exception:  # math_verify raises on some inputs; that is simply "no verdict"
        return None
    if len(g) < 2 or len(p) < 2 or not _whole(g[-1], gold):
        return None
    if p[-1] != pred:  # it found the answer inside prose: judge that part strictly if we can
        verdict = compare(p[-1], gold)
        if verdict is not None:
            return verdict
    if _kind(g[0]) != _kind(p[0]) or p[-1].count("{") != p[-1].count("}"):
        return False
    try:
        return bool(math_verify.verify(g, p))
    except Exception:
        return None

# -----------------------------------------------------------------------------
# multiple choice


_LETTER = re.compile(r"^(?:(?:option|choice|answer)\s*:?\s*)?\(?([a-z])\)?(?:[.:)]|\s|$)", re.I)


def choice_letter(raw):
    """The option letter a response picks: "B", "(B)", "B.", "option B", "(B) text"."""
    s = _TEXT_WRAP.sub(r"\1", _unwrap(clean_unicode(raw)))
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


def answers_match(pred, gold, choices=None):
    """Is the extracted answer `pred` the gold answer? Both are raw strings."""
    if pred is None or len(pred) > MAX_ANSWER_CHARS:
        return False
    gold = str(gold)
    p, g = normalize(pred), normalize(gold)
    if not p:
        return False
    opts = options(choices)
    gold_letter = g.upper() if len(g) == 1 and g.isalpha() and (opts or not _is_math(gold)) else None
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
    verdict = compare(pred, gold)
    stated = _stated(pred) if verdict is None else None
    if stated:
        verdict = compare(stated, gold)
    if verdict is None:
        verdict = _math_verify(pred, gold)
    return p == g if verdict is None else verdict


def _is_math(gold):
    """A one-letter gold in $...$ is a symbol ("$E$"), not an option letter."""
    return "$" in gold or "\\(" in gold


_MATH_SPAN = re.compile(r"(?s:\$\$(.+?)\$\$|\\\[(.+?)\\\])|\$([^$\n]+)\$|\\\(([^\n]+?)\\\)")


def _stated(pred):
    """The answer a sentence states: its one $...$ (or \\(...\\)), else what follows "the answer is"."""
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
