"""answers/ against sympy: generated identities must be accepted and generated non-identities
rejected, including differences built to vanish on every structured point set (an arithmetic
progression across the variables, shared values, small integers, the points an earlier version
used). Skipped where sympy is absent."""
import random

import pytest

from reward import is_correct

sympy = pytest.importorskip("sympy")

NAMES = "abcxyz"
# differences that vanish at every point of some structured set, in the variables n0 < n1 < n2 < n3
STRUCTURED = [
    "{0} - 2*{1} + {2}",                      # any arithmetic progression n0, n1, n2
    "{0} - {1} - {2} + {3}",                  # any arithmetic progression n0..n3
    "({0} - {1})*({1} - {2})",                # points where variables share a value
    "{0}*({0} - 1)*({0} + 1)*({0} - 2)",      # the integers -1, 0, 1, 2
    "({0} - 72/35)*({0} + 14/55)*({0} - 88/15)",   # the three points of the earlier version
]


def _linear(rng, names):
    text = "+".join(f"{rng.randint(-5, 5)}*{n}" for n in names) + f"+{rng.randint(-9, 9)}"
    return text.replace("+-", "-")


def _text(expr):
    """sympy's own str() of an expression, in the answer syntax (x^2, not x**2)."""
    return str(expr).replace("**", "^")


def _pairs(seed, n):
    """(pred, gold, equal?) pairs: a product of linear forms against its expansion, plus or minus
    a structured or a random difference; and equations with and without such an offset."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        names = sorted(rng.sample(NAMES, rng.choice([3, 4])))
        product = f"({_linear(rng, names)})*({_linear(rng, names)})" if i % 2 else _linear(rng, names)
        expanded = sympy.expand(sympy.sympify(product.replace("^", "**")))
        shape = rng.choice(STRUCTURED) if i % 3 else None
        diff = sympy.sympify(shape.format(*names, *names).replace("^", "**")) if shape else \
            sympy.sympify(_linear(rng, names[:2]).replace("^", "**"))
        diff *= rng.choice([1, -1, 2, sympy.Rational(1, 3)])
        wrong = sympy.expand(expanded + diff)
        out.append((_text(expanded), product, True))
        out.append((_text(wrong), product, sympy.expand(wrong - expanded) == 0))
        k = rng.randint(-9, 9)
        out.append((f"{_text(expanded - k)} = 0", f"{product} = {k}", True))
        out.append((f"{_text(wrong)} = {k}", f"{product} = {k}", sympy.expand(wrong - expanded) == 0))
        out.append((f"{_text(2 * wrong)} = {2 * k}", f"{product} = {k}", sympy.expand(wrong - expanded) == 0))
    return out


def test_symbolic_comparison_agrees_with_sympy():
    pairs = _pairs(seed=0, n=80)
    verdicts = [(is_correct(f"<answer>{p}</answer>", g), truth, p, g) for p, g, truth in pairs]
    false_accepts = [(p, g) for got, truth, p, g in verdicts if got and not truth]
    false_rejects = [(p, g) for got, truth, p, g in verdicts if truth and not got]
    assert sum(not t for _, t, _, _ in verdicts) >= 150       # enough non-identities to mean something
    assert false_accepts == [], false_accepts[:5]
    assert false_rejects == [], false_rejects[:5]


@pytest.mark.parametrize("shape", STRUCTURED)
def test_a_difference_built_for_structured_points_is_never_accepted(shape):
    for names in ("abc", "xyz", "abcx", "bcyz"):
        gold = "3*a^2 - 2*b + 7" if "a" in names else "3*x^2 - 2*y + 7"
        pred = f"{gold} + {shape.format(*sorted(names), *sorted(names))}"
        assert not is_correct(f"<answer>{pred}</answer>", gold), (pred, gold)
        assert not is_correct(f"<answer>{pred} = 1</answer>", f"{gold} = 1"), (pred, gold)
