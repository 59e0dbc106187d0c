"""
answers/forms.py: a short math answer read into a form (compare.py compares two forms).

    parse_number(s)             -> an exact Fraction for a plain number ("1,234", ".5", "\\frac34",
                                   "50%")
    clean_unicode(text)         -> the one Unicode normaliser (reward.py and hints' spoiler filter
                                   use it too)
    unwrap(s)                   -> the answer without $...$, \\(...\\), \\[...\\] around it
    _form(s)                    -> the answer's structure as nested tuples (see _form), or None

What the forms are and what is handled: compare.py's docstring. Model text is never evaluated as
code, and every scan is linear or bounded. Standard library only: copy it anywhere.
"""
import cmath
import math
import operator
import re
import unicodedata
from fractions import Fraction

MAX_CHARS = 1000   # longer is not a short answer: no verdict

# -----------------------------------------------------------------------------
# Unicode: one normaliser for answers and for the spoiler filter

_SUPERSCRIPTS = "⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺"
_SUPER_RUN = re.compile(f"[{_SUPERSCRIPTS}]+")
_SUPER_DIGITS = str.maketrans(_SUPERSCRIPTS, "0123456789-+")
_UNICODE_FIXES = str.maketrans({
    **{c: "-" for c in "\u2212\u2010\u2011\u2012\u2013\ufe63"},    # minus signs and dashes
    **{c: None for c in "\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff\u00ad"},
    "\u2044": "/"})                                    # the fraction slash of ½ after NFKC


def clean_unicode(text):
    """NFKC (full-width ０-９ Ａ-Ｚ, non-breaking spaces, ½), every minus sign as "-", no zero-width
    characters, superscript digits as ^{..} (NFKC alone would turn x² into x2)."""
    text = _SUPER_RUN.sub(lambda m: "^{" + m.group(0).translate(_SUPER_DIGITS) + "}", text)
    return unicodedata.normalize("NFKC", text).translate(_UNICODE_FIXES)


def unwrap(s):
    """Strip $...$, \\(...\\), \\[...\\] around an answer, and a trailing period."""
    s = s.strip()
    for _ in range(3):
        if len(s) >= 2 and s[0] == "$" and s[-1] == "$":
            s = s.strip("$").strip()
        if s.startswith(("\\(", "\\[")) and s.endswith(("\\)", "\\]")):
            s = s[2:-2].strip()
        s = s.rstrip(".").strip()
    return s


# 7,425,000 and 1 000
_THOUSANDS = re.compile(r"[+-]?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?|[1-9]\d{0,2}(?: \d{3})+")


def parse_number(s):
    """A plain number as an exact Fraction (12, -3, 1,234, 0.5, .5, 1e1, 3/4, \\frac34, 50%), else
    None."""
    s = clean_unicode(s).replace(" ", "")
    if not s or len(s) > 60:
        return None
    percent = s.endswith("%")
    s = s[:-1] if percent else s
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    e = _expression(s)
    v = e.at({}) if e is not None and not e.names else None
    if not isinstance(v, Fraction):
        return None
    return v / 100 if percent else v

# -----------------------------------------------------------------------------
# the expression parser: LaTeX-ish arithmetic to a function of its variables

_TOKEN = re.compile(r"\s*(?:((?:\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?)|(\\[a-zA-Z]+|\\[{}])"
                    r"|([a-zA-Z])|(\S))")
_FUNCS = {"sin": cmath.sin, "cos": cmath.cos, "tan": cmath.tan, "sec": lambda z: 1 / cmath.cos(z),
          "csc": lambda z: 1 / cmath.sin(z), "cot": lambda z: 1 / cmath.tan(z), "ln": cmath.log,
          "log": cmath.log, "exp": cmath.exp, "arcsin": cmath.asin, "arccos": cmath.acos,
          "arctan": cmath.atan, "sinh": cmath.sinh, "cosh": cmath.cosh, "tanh": cmath.tanh}
_MUL = {"*", "\\cdot", "\\times"}
_DIV = {"/", "\\div"}


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
        r = (next((c for c in (r - 1, r, r + 1) if c >= 0 and c ** n == k), None)
             if r is not None else None)
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




class _Tokens:
    """A token list and a read position, consumed by the recursive descent below:
    sum := product (+|- product)*, product := factor (*|/|juxtaposed factor)*,
    factor := -factor | atom (^ factor)? !*. It builds closures; nothing is ever eval'ed."""

    def __init__(self, toks):
        self.toks, self.i, self.names = toks, 0, set()

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else (None, None)

    def take(self, want=None):
        kind, tok = self.peek()
        if kind is None or (want is not None and tok != want):
            raise ValueError(f"expected {want}")
        self.i += 1
        return tok


def _sum(ts):
    left = _product(ts)
    while ts.peek()[1] in ("+", "-"):
        op = operator.add if ts.take() == "+" else operator.sub
        left = _apply(op, left, _product(ts))
    return left


def _product(ts):
    left = _factor(ts)
    while True:
        kind, tok = ts.peek()
        if tok in _MUL or tok in _DIV:
            ts.take()
            left = _apply(operator.truediv if tok in _DIV else operator.mul, left, _factor(ts))
        elif kind in ("num", "var", "cmd") or tok in ("(", "{"):
            left = _apply(operator.mul, left, _factor(ts))  # juxtaposed: 2\pi, 3x, (a+5)(b+2)
        else:
            return left


def _factor(ts):
    if ts.peek()[1] in ("-", "+"):
        neg = ts.take() == "-"
        inner = _factor(ts)
        return _apply(operator.neg, inner) if neg else inner
    base = _atom(ts)
    if ts.peek()[1] == "^":
        ts.take()
        exp = _factor(ts) if ts.peek()[1] in ("-", "+") else _atom(ts)
        base = _apply(_power, base, exp)
    while ts.peek()[1] == "!":
        ts.take()
        base = _apply(_factorial, base)
    return base


def _argument(ts):
    """A macro argument: {sum}, or one digit / letter / command (\\frac34, \\sqrt2)."""
    kind, tok = ts.peek()
    if tok == "{":
        ts.take()
        inner = _sum(ts)
        ts.take("}")
        return inner
    if kind == "num" and re.fullmatch(r"\d+", tok) and len(tok) > 1:
        ts.toks[ts.i] = ("num", tok[1:])  # \frac94 is \frac{9}{4}: split the digit run
        return lambda e, v=Fraction(int(tok[0])): v
    return _atom(ts)


def _atom(ts):
    kind, tok = ts.peek()
    if kind == "num":
        ts.take()
        v = Fraction(tok)
        return lambda e: v
    if kind == "var":
        return _variable(ts)
    if tok in ("(", "[", "{"):
        ts.take()
        inner = _sum(ts)
        ts.take({"(": ")", "[": "]", "{": "}"}[tok])
        return inner
    if tok == "|":
        ts.take()
        inner = _sum(ts)
        ts.take("|")
        return _apply(abs, inner)
    if kind == "cmd":
        return _command(ts)
    raise ValueError(f"unexpected {tok!r}")


def _variable(ts):
    """A letter: i and e are the constants, anything else a variable (x, x_1, a_{37})."""
    name = ts.take()
    if name == "i":
        return lambda e: 1j
    if name == "e":
        return lambda e: math.e
    if ts.peek()[1] == "_":
        ts.take()
        k, sub = ts.take(), None
        if k == "{":
            sub = ""
            while ts.peek()[1] not in ("}", None):
                sub += ts.take()
            ts.take("}")
        name += "_" + (sub if sub is not None else k)
    ts.names.add(name)
    return lambda e: e[name]


def _command(ts):
    """\\frac, \\sqrt (and \\sqrt[n]), \\pi, \\infty, \\text{e}, and the functions in _FUNCS
    (\\sin^2 x)."""
    tok = ts.take()
    name = tok[1:]
    if name == "frac":
        num, den = _argument(ts), _argument(ts)
        return _apply(operator.truediv, num, den)
    if name == "sqrt":
        n = None
        if ts.peek()[1] == "[":
            ts.take()
            n = _sum(ts)
            ts.take("]")
        arg = _argument(ts)
        return _apply(_sqrt, arg) if n is None else _apply(lambda a, k: _power(a, 1 / k), arg, n)
    if name == "pi":
        return lambda e: math.pi
    if name == "infty":
        return lambda e: math.inf
    one_letter = ts.toks[ts.i:ts.i + 3][::2] == [("op", "{"), ("op", "}")]
    if name in ("text", "operatorname") and one_letter:
        return _argument(ts)  # \mathrm{e} (made \text{e} by _prepare): a letter, never a word
    if name in _FUNCS:
        fn = _FUNCS[name]
        power = None
        if ts.peek()[1] == "^":  # \sin^2 x
            ts.take()
            power = _atom(ts)
        value = _apply(lambda z: fn(complex(z)), _factor(ts))
        return value if power is None else _apply(_power, value, power)
    raise ValueError(f"unknown command {tok}")

_WORD_FUNCS = re.compile(r"(?<![a-zA-Z\\])(sin|cos|tan|sec|csc|cot|ln|log|exp|sqrt|pi)(?![a-zA-Z])")


def _tokens(s):
    """Tokens of an expression, or None when the text is not one (a word, an unknown symbol)."""
    s = _WORD_FUNCS.sub(r"\\\1", s)
    if re.search(r"(?<![\\a-zA-Z])(?<!_\{)[a-zA-Z]{3,}", s):  # a subscript S_{MBCN} is a name
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
    if not s or len(s) > MAX_CHARS:
        return None
    toks = _tokens(s)
    if not toks:
        return None
    ts = _Tokens(toks)
    try:
        fn = _sum(ts)
        if ts.i != len(toks):
            return None
    except (ValueError, RecursionError, ZeroDivisionError):
        return None
    return _Expr(fn, frozenset(ts.names))

# -----------------------------------------------------------------------------
# answer forms: a value with a unit, lists, tuples and intervals, relations, ratios, matrices,
# base-n

_MATH_CHARS = str.maketrans({"π": "\\pi ", "√": "\\sqrt ", "∞": "\\infty ", "≤": "\\le ",
                             "≥": "\\ge ", "≠": "\\ne ", "·": "*", "⋅": "*", "×": "*", "÷": "/",
                             "±": "\\pm ", "∓": "\\mp ", "°": "^\\circ ", "∪": "\\cup ",
                             "∈": "\\in ", "≈": "\\approx "})
_SPACING = re.compile(r"\\(?:left|right|[bB]igg?[lr]?)(?![a-zA-Z])|(?<!\\)\\[,;:! ]|\\q?quad"
                      r"|\\displaystyle")
_TEXTLIKE = re.compile(r"\\(?:textbf|textit|textnormal|textrm|mbox|mathrm|mathbf|mathit|rm)\{")


def _prepare(s):
    """One spelling for the many LaTeX spellings of the same answer."""
    s = unwrap(clean_unicode(s).replace("\\$", "")).replace("$", "").translate(_MATH_CHARS)
    s = re.sub(r"(?<!\\)\\\\(?=[a-zA-Z])", r"\\", s)       # \\left typed for \left
    s = re.sub(r",\\!\s*|\{,\}", ",", s)                   # 10,\!080 and 14{,}916: thousands
    s = re.sub(r"\\[dtc]frac", r"\\frac", s)
    s = _TEXTLIKE.sub(r"\\text{", _SPACING.sub(" ", s))
    s = re.sub(r"\\(?:mathrm|rm)\s*([a-zA-Z])(?![a-zA-Z])", r"\1", s)   # \mathrm e
    s = re.sub(r"\\text\{\s*(and|or)\s*\}", r" \1 ", s)
    s = re.sub(r"\^\s*\{?\\circ\}?|\\circ|\\degree", "", s).replace("\\%", "%")
    s = re.sub(r"\s+", " ", s).strip()
    whole = re.fullmatch(r"\\text\{([^{}]*)\}", s)                     # \text{12 cm}
    return whole.group(1).strip() if whole else s


_PERCENT = re.compile(r"\s*(?:%|\\text\{\s*(?:percent|percentage|pct)\s*\}"
                      r"|(?<![a-zA-Z])(?:percent|percentage|pct))$")
_UNIT = re.compile(r"(?:\\text\{([^{}]*)\}|\s([a-zA-Z]{2,}(?: [a-zA-Z]{2,})?)"
                   r"|(?<=\d)(cm|mm|km|kg|mg|ml|ft|yd|hr|min))"
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


def _split_top(s, seps=","):
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
_ONE_NAME = r"[A-Za-z](?:_\{?\w+\}?)?'*"
_NAME = re.compile(rf"{_ONE_NAME}|\((?:[A-Za-z]\s*,\s*)+[A-Za-z]\)|[A-Za-z]\([a-z]\)"
                   rf"|\|?[A-Z]{{1,3}}\|?")
# what may stand on the left of "=" as a mere label: a name, a ratio of names, a ratio of segments
_LABEL = re.compile(rf"{_NAME.pattern}|{_ONE_NAME}(?:\s*:\s*{_ONE_NAME})+"
                    rf"|\\frac\{{[A-Z]{{1,3}}\}}\{{[A-Z]{{1,3}}\}}")
_ASSIGNED = re.compile(rf"({_ONE_NAME})\s*=\s*(.+)", re.S)
_AND_OR = re.compile(r"\s*(?<![a-zA-Z\\])(?:and|or)(?![a-zA-Z])\s*")
_MATRIX = re.compile(r"\\begin\{([pbBvV]?matrix|array)\}(?:\{[lcr|]*\})?(.*)\\end\{\1\}", re.S)
_CUP = re.compile(r"\\cup(?![a-zA-Z])")


def _form(s, depth=0):
    """An answer's structure as nested tuples, or None when it is not a form this module knows.
    ("val", expr, text) | ("seq", open, close, items) | ("set", items)
    | ("rel", op, lhs_text, lhs, rhs) | ("assign", names, values) | ("ratio", items)
    | ("mat", rows) | ("base", digits, base)."""
    s = s.strip()
    if not s or depth > 8:
        return None
    s = re.sub(r"^[A-Za-z](?:_\{?\w+\}?)?\s*\\in\s+", "", s)          # "x \in [-2, 7]"
    if _CUP.search(s):
        items = [_form(p, depth + 1) for p in _CUP.split(s)]
        return ("set", items) if None not in items else None
    if _THOUSANDS.fullmatch(s):
        return _value(re.sub(r"[, ]", "", s))
    for reader in (_list, _relation, _ratio):
        form = reader(s, depth)
        if form is not False:
            return form
    return _single(s, depth)


def _single(s, depth):
    """A form without a top-level list, relation or ratio: a set in braces, a tuple or interval, a
    matrix, a base-n numeral, "a \\pm b", or a value."""
    if s.startswith(("\\{", "{")) and s.endswith("}") and _encloses(s.lstrip("\\")):
        inner = s[2:-2] if s.startswith("\\{") else s[1:-1]
        return _set_of(_split_top(inner, ",;"), depth)
    if s[0] in "([" and s[-1] in ")]" and _encloses(s):
        items = _split_top(s[1:-1], ",;")                             # (0;-2;6) is (0, -2, 6)
        # \left[\begin{array}..\end{array}\right]
        if len(items) == 1 and _MATRIX.fullmatch(items[0]):
            return _form(items[0], depth + 1)
        if len(items) > 1 or s[0] == "[":
            forms = [_form(p, depth + 1) for p in items]
            return ("seq", s[0], s[-1], forms) if None not in forms else None
    m = _MATRIX.fullmatch(s)
    if m:
        rows = [[_form(c, depth + 1) for c in r.split("&")] for r in m.group(2).split("\\\\")
                if r.strip()]
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


def _list(s, depth):
    """Groups split at ";", items at "," / "and" / "or" ("6, 8", "7 or -1"); False for one item.
    Items that assign two or more distinct names ("p=5, q=2") are one assignment, not a list, and
    the same names again start the next one ("p=5, q=2 and p=7, q=2" is a list of two)."""
    groups = _split_top(s, ";")
    if len(groups) > 1:
        return _set_of(groups, depth)
    items = _split_top(_AND_OR.sub(",", s))
    if len(items) == 1:
        return False
    assigned = [_ASSIGNED.fullmatch(p) for p in items]
    names = [m.group(1).replace("{", "").replace("}", "") for m in assigned if m]
    k = next((k for k in range(2, len(names) + 1) if names[k - 1] in names[:k - 1]),
             len(names) + 1) - 1
    if len(names) < len(items) or k < 2 or len(names) % k or names != names[:k] * (len(names) // k):
        return _set_of(items, depth)
    out = []
    for i in range(0, len(names), k):
        values = [_form(m.group(2), depth + 1) for m in assigned[i:i + k]]
        if None in values:
            return None
        out.append(("assign", names[i:i + k], values))
    return out[0] if len(out) == 1 else ("set", out)


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
    """("rel", op, lhs_text, lhs, rhs) for "a = b", "x \\le 5"; a chain "a < x \\le b" as an
    interval; None if unparsable; False if no relation."""
    ops = [m for m in _REL.finditer(s) if _depth0(s, m.start())]
    if not ops:
        return False
    if ops[0].group(0) == "\\approx" and not _LABEL.fullmatch(s[:ops[0].start()].strip()):
        # "\frac{9.5}{\pi} \approx 3.02": the value
        return _form(s[:ops[0].start()], depth + 1)
    approx = [m for m in ops if m.group(0) == "\\approx"]
    if approx and approx[0] is not ops[0]:                              # "x = 1/3 \approx 0.33"
        s, ops = s[:approx[0].start()], [m for m in ops if m.start() < approx[0].start()]
    names = [_REL_NAMES.get(m.group(0), m.group(0)) for m in ops]
    if len(ops) == 2 and (set(names) <= {"<", "<="} or set(names) <= {">", ">="}):
        return _chain(s, ops, names, depth)
    if len(set(names)) != 1 or (names[0] != "=" and len(ops) > 1):
        return None                                                     # "1 < x > 0": not handled
    lhs_text, rhs_text = s[:ops[0].start()].strip(), s[ops[-1].end():].strip()
    # a chain "x = 2+3 = 5": first, last
    lhs, rhs = _form(lhs_text, depth + 1), _form(rhs_text, depth + 1)
    if lhs is None or rhs is None:
        return None
    op = names[0]
    if op in (">", ">="):
        op, lhs, rhs, lhs_text = op.replace(">", "<"), rhs, lhs, rhs_text
    return ("rel", op, lhs_text, lhs, rhs)


def _chain(s, ops, names, depth):
    """"-2 < x \\le 7" (or "7 \\ge x > -2") as the interval (-2, 7]: a bare name between two
    bounds."""
    if not _NAME.fullmatch(s[ops[0].end():ops[1].start()].strip()):
        return None                                     # "1 \le |z| \le 2": not handled
    lo, hi = s[:ops[0].start()], s[ops[1].end():]
    if names[0].startswith(">"):
        lo, hi, names = hi, lo, names[::-1]
    lo, hi = _form(lo, depth + 1), _form(hi, depth + 1)
    if lo is None or hi is None:
        return None
    return ("seq", "(" if "=" not in names[0] else "[", ")" if "=" not in names[1] else "]",
            [lo, hi])


def _ratio(s, depth):
    """("ratio", items) for "7:32"; False when there is no top-level colon."""
    parts = _split_top(s, ":")
    if len(parts) == 1:
        return False
    forms = [_form(p, depth + 1) for p in parts]
    return ("ratio", forms) if None not in forms else None


def _depth0(s, i):
    return s[:i].count("(") + s[:i].count("[") + s[:i].count("{") == \
        s[:i].count(")") + s[:i].count("]") + s[:i].count("}")
