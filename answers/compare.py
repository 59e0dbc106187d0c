"""
answers/compare.py: two short math answers compared, strictly, once forms.py has read each into a
form.

    compare(pred, gold)         -> True / False when both parse as forms this module knows, else
                                   None
    parse_number(s)             -> an exact Fraction for a plain number ("1,234", ".5", "\\frac34",
                                   "50%")
    clean_unicode(text)         -> the one Unicode normaliser (reward.py and hints.py use it too)
    ask_math_verify(pred, gold) -> the optional math_verify package's verdict where it is sound,
                                   else None

Handled (both sides; kinds must agree: "7 or -1" is a list, never the number -1):
- numbers: 12, -3, 1,234 and 1 000 (thousands), 0.5, .5, 1e1, \\frac34, 28% (= 28 = 0.28), 204_6
  (base n); a decimal comma "1000,99" only against a decimal written with a point
- constant expressions: 3\\sqrt{13}, 6-5i, \\frac94\\pi, \\sin x, \\log, n!, |x|
- expressions in variables: equal at six seeded random rational points (_points says why that is
  sound)
- units: ignored unless both sides carry one; then they must agree (15 cm^2 is not 15 cm^3)
- lists: "6, 8" = "6 and 8" = "8, 6"; "a \\pm b" is its two values; ";" separates groups
- tuples and intervals (brackets must match), unions of intervals, matrices
- relations: "x \\le 5" = "5 \\ge x"; equations equal up to a nonzero factor, inequalities up to a
  positive one; a chain "-2 < x \\le 7" is the interval (-2, 7]; "E \\approx 3.01" is E
- labels: "k = 1", "(p, q) = (3, 2)", "V_1:V_2 = 11:21", "\\frac{NO}{BO} = 2" stand for their right
  side; "p=5, q=2" (distinct names) is the tuple (5, 2) and the list "5, 2", in the order written
- ratios and times: "7:32", "12:00", compared part by part (14:64 is not 7:32)
Rational values compare exactly; values with pi, e or roots within REL_TOL (float error). The one
rounding tolerance: a decimal of at least 6 significant digits for a non-integer gold that it
rounds correctly (0.0833333 for 1/12, 1.41421 for \\sqrt2).
Not handled (compare returns None): prose around the answer, words, \\sum, \\int, derivatives,
matrices combined by + or products, set-builder notation, chains on an expression
("1 \\le |z| \\le 2"), decimals rounded to fewer than 6 digits. reward.py then asks math_verify,
else compares texts.
Model text is never evaluated as code, and every scan is linear or bounded. Standard library only
(math_verify optional, imported where used) and forms.py: copy the folder anywhere.
"""
import cmath
import math
import random
import re
from fractions import Fraction

from answers.forms import (_LABEL, _THOUSANDS, _Expr, _form, _prepare, _split_unit,  # noqa: F401
                           clean_unicode, parse_number, unwrap)

REL_TOL = 1e-9     # for values with pi, e or roots: float error, not rounding
N_POINTS = 6       # random points where expressions in variables are compared

# -----------------------------------------------------------------------------
# comparing forms


class _Unsettled(Exception):
    """The forms were read but cannot be compared here (undefined at most points): no verdict."""


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
    """Is `text` a decimal of 6+ significant digits that is `value` (not an integer) correctly
    rounded?"""
    m = _DECIMAL.fullmatch(text.replace(" ", ""))
    if not m or value is None or isinstance(value, complex) or not math.isfinite(value):
        return False
    if (isinstance(value, Fraction) and value.denominator == 1) or \
            len((m.group(1) + m.group(2)).lstrip("0")) < 6:
        return False
    return abs(Fraction(text.replace(" ", "")) - Fraction(value)) <= \
        Fraction(1, 2 * 10 ** len(m.group(2)))


def _points(names):
    """N_POINTS assignments of random rationals to the variables (|v| <= 3, denominators 101..997,
    distinct within each point), the same for both sides and on every run: the generator is seeded
    by the variable names. Random points have no structure (an arithmetic progression, small
    integers, values shared between variables) for a difference to vanish on: a nonzero polynomial
    of degree d vanishes at such a point with probability about d / 10^6 (Schwartz-Zippel), and a
    false accept needs every point. Rational points keep polynomial comparisons exact."""
    names = sorted(names)
    # str seeds are hashed with sha512; the text keeps the file's old name: the points stay the same
    rng = random.Random("answers.py points: " + " ".join(names))
    out = []
    for _ in range(N_POINTS):
        env = {}
        for n in names:
            v = None
            while v is None or v in env.values():
                q = rng.randint(101, 997)
                v = Fraction(rng.randint(-3 * q, 3 * q), q)
            env[n] = v
        out.append(env)
    return out


def _same_value(g, p):
    """Two ("val", expr, text) forms: equal at every point where either is defined (at least
    half)."""
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
    if agree < N_POINTS // 2:
        raise _Unsettled
    return True


def _proportional(g, p, positive):
    """Do two differences (lhs - rhs) vanish together: is p = c * g for one constant c (> 0 if
    asked)?"""
    ratio = None
    for env in _points(g.names | p.names):
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


def _same_assignment(g, p):
    """"p=5, q=2" against another assignment (name by name), or against "(5, 2)" or "5, 2" (in
    order)."""
    if p[0] == "assign":
        gd, pd = dict(zip(g[1], g[2])), dict(zip(p[1], p[2]))
        return gd.keys() == pd.keys() and all(_same_form(gd[k], pd[k]) for k in gd)
    items = p[3] if p[0] == "seq" and p[1:3] == ("(", ")") else p[1] if p[0] == "set" else None
    return items is not None and len(items) == len(g[2]) and all(map(_same_form, g[2], items))


def _same_form(g, p):
    """Equality of two forms; a relation "label = v" (k = 1, A:B = 1) also stands for v."""
    if g[0] == "rel" and p[0] != "rel" and g[1] == "=" and _LABEL.fullmatch(g[2]):
        return _same_form(g[4], p)
    if p[0] == "rel" and g[0] != "rel" and p[1] == "=" and _LABEL.fullmatch(p[2]):
        return _same_form(g, p[4])
    if "assign" in (g[0], p[0]):
        return _same_assignment(g, p) if g[0] == "assign" else _same_assignment(p, g)
    if g[0] != p[0]:
        return False
    kind = g[0]
    if kind == "val":
        return _same_value(g, p)
    if kind == "set":
        return _same_set(g[1], p[1])
    if kind == "seq":
        return g[1:3] == p[1:3] and len(g[3]) == len(p[3]) and all(map(_same_form, g[3], p[3]))
    if kind == "ratio":  # part by part: 14:64 is not 7:32 (nor is the time 12:00 the time 1:00)
        return len(g[1]) == len(p[1]) and all(map(_same_form, g[1], p[1]))
    if kind == "rel":
        return _same_relation(g, p)
    if kind == "mat":
        return [len(r) for r in g[1]] == [len(r) for r in p[1]] and \
            all(_same_form(a, b) for rg, rp in zip(g[1], p[1]) for a, b in zip(rg, rp))
    return g == p  # base-n numerals: digits and base


def _scaled(form, factor):
    e = form[1]
    return ("val", _Expr(lambda env: e.fn(env) * factor, e.names), "")


_COMMA_DECIMAL = re.compile(r"[+-]?\d+,\d+")


def _decimal_comma(a, b):
    """"1000,99" against "1000.99": a comma that is no thousands separator is a decimal comma when
    the other side is a decimal written with a point. Alone, "1,22" stays the list 1, 22."""
    for x, y in ((a, b), (b, a)):
        if _COMMA_DECIMAL.fullmatch(x) and not _THOUSANDS.fullmatch(x) and _DECIMAL.fullmatch(y):
            return Fraction(x.replace(",", ".")) == Fraction(y)
    return None


def compare(pred, gold):
    """True / False when both answers parse as forms this module knows, None when one does not."""
    try:
        return _compare(pred, gold)
    except (_Unsettled, ArithmeticError, ValueError, TypeError, RecursionError):
        return None   # no verdict, never a crash


def _compare(pred, gold):
    (gc, gu, gp), (pc, pu, pp) = _split_unit(_prepare(gold)), _split_unit(_prepare(pred))
    comma = _decimal_comma(pc, gc)
    if comma is not None:
        return comma
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
# math_verify, where installed, for what the parser above does not settle


def _in_dollars(s):
    """LaTeX for math_verify.parse: in $...$ as its documentation asks, unless already delimited."""
    return s if any(d in s for d in ("$", "\\(", "\\[", "\\boxed")) else f"${s}$"


def _kind(x):
    """The kind of object math_verify parsed: the two sides must agree on it."""
    import sympy
    if isinstance(x, str):
        return "text"
    if getattr(x, "is_Matrix", False):       # a matrix, or matrices added or multiplied
        return "matrix"
    if isinstance(x, sympy.core.relational.Relational):
        return "relation"
    if isinstance(x, (sympy.Set, sympy.Tuple)):
        return "set"
    if getattr(x, "is_number", False):
        return "number"
    return "expression"


def _whole(extracted, text):
    """Did math_verify read all of `text`, not a prefix ("1 - \\frac{1}{" of
    "1 - \\frac{1}{\\mathrm{e}}")?"""
    squash = lambda s: re.sub(r"[\s$]|\\[()\[\]]", "", s)
    return extracted.count("{") == extracted.count("}") and \
        len(squash(extracted)) >= len(squash(unwrap(text))) // 2


def ask_math_verify(pred, gold):
    """math_verify's verdict where it is sound, else None (not installed, unsure). Its verdict
    counts only when both sides parse to the same kind of object and the gold's parse is not a
    prefix standing for more text (it reads "1 - \\frac{1}{\\mathrm{e}}" as 1)."""
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
