"""reward.py: a table of cases both ways, format reward, bounded time on hostile input, and (both
with math_verify and without) the false accepts and rejects measured on the peers' own tables."""
import time

import pytest

import reward as reward_module
from reward import extract_answer, format_reward, is_correct, reward

ABCD = ["a cat", "a dog", "12 apples", "none of these"]

CASES = [  # (response, gold, choices, expected)
    ("<think>x</think><answer>red</answer>", "red", None, True),
    ("<answer> Red. </answer>", "red", None, True),
    ("<answer>blue</answer>", "red", None, False),
    ("<answer>red</answer> then <answer>blue</answer>", "blue", None, True),   # the last one
    ("<answer>red</answer> then <answer>blue</answer>", "red", None, False),
    ("so \\boxed{42}", "42", None, True),
    ("\\boxed{\\frac{1}{2}}", "0.5", None, True),
    ("\\boxed{\\frac12}", "1/2", None, True),
    ("\\boxed{\\dfrac{3}{4}}", "0.75", None, True),
    ("\\boxed{x^{2}+1} and more text", "x^{2}+1", None, True),
    ("\\boxed{1} then \\boxed{2}", "2", None, True),
    ("The answer is 7.", "7", None, True),
    ("Thus the final answer: 7", "7", None, True),
    ("The answer is 8.", "7", None, False),
    ("no answer here at all", "7", None, False),
    ("<answer>$12$</answer>", "12", None, True),
    ("<answer>12.0</answer>", "12", None, True),
    ("<answer>12.5</answer>", "12", None, False),
    ("<answer>-3</answer>", "-3", None, True),
    ("<answer>-3</answer>", "3", None, False),
    ("<answer>1,234</answer>", "1234", None, True),
    ("<answer>50%</answer>", "0.5", None, True),
    ("<answer>50\\%</answer>", "50%", None, True),
    ("<answer>3/4</answer>", "\\frac{3}{4}", None, True),
    ("<answer>0.333</answer>", "1/3", None, False),
    ("<answer>12 cm</answer>", "12", None, True),
    ("<answer>12</answer>", "12 cm", None, True),
    ("<answer>\\text{12 cm}</answer>", "12cm", None, True),
    ("<answer>30^\\circ</answer>", "30", None, True),
    ("<answer>B</answer>", "B", ABCD, True),
    ("<answer>(B)</answer>", "B", ABCD, True),
    ("<answer>B.</answer>", "B", ABCD, True),
    ("<answer>option B</answer>", "B", ABCD, True),
    ("<answer>(B) a dog</answer>", "B", ABCD, True),
    ("<answer>b</answer>", "B", ABCD, True),
    ("<answer>C</answer>", "B", ABCD, False),
    ("<answer>(A)</answer>", "B", ABCD, False),
    ("<answer>a dog</answer>", "B", ABCD, True),           # the option's text
    ("<answer>a cat</answer>", "B", ABCD, False),          # another option's text
    ("<answer>A dog</answer>", "B", ABCD, False),          # an upper-case letter A is option A
    ("<answer>B</answer>", "a dog", ABCD, True),           # gold given as text, letter answer
    ("<answer>12</answer>", "C", ABCD, True),              # option C's number
    ("<answer>yes</answer>", "Yes", None, True),
    ("<answer>no</answer>", "yes", None, False),
    ("<answer></answer>", "", None, False),
    ("<answer>   </answer>", "red", None, False),
    ("<answer>red</answer>", "B", None, False),
    ("<answer>top left</answer>", "Top  left", None, True),
]


@pytest.mark.parametrize("response,gold,choices,expected", CASES)
def test_reward_table(response, gold, choices, expected):
    assert is_correct(response, gold, choices) is expected
    assert reward(response, {"answer": gold, "choices": choices}) == float(expected)


def test_extract_answer_order_and_none():
    assert extract_answer("<answer>a</answer> \\boxed{b}") == "a"
    assert extract_answer("\\boxed{b} the answer is c") == "b"
    assert extract_answer("\\boxed{a{b}c}") == "a{b}c"
    assert extract_answer("The answer is c.") == "c"
    assert extract_answer("") is None and extract_answer("nothing") is None


def test_format_reward_is_separate_from_correctness():
    assert format_reward("<think>look</think><answer>red</answer>") == 1.0
    assert format_reward("<think>look</think>\n<answer>red</answer>\n") == 1.0
    assert format_reward("<answer>red</answer>") == 0.0
    assert format_reward("<think>look</think>blah<answer>red</answer>") == 0.0
    assert format_reward("<think>look</think><answer>red</answer> extra") == 0.0
    # wrong format can still be correct, right format can still be wrong
    assert is_correct("<answer>red</answer>", "red") and not is_correct("<think>x</think><answer>blue</answer>", "red")


def test_bounded_time_on_hostile_input():
    hostile = [
        "x" * 1_000_000,
        "\\boxed{" + "{" * 10_000 + "1",
        "\\boxed{" * 10_000,
        "<answer>" * 100_000 + "</answer>",
        "the answer is " * 50_000,
        "<answer>" + "9" * 1_000_000 + "</answer>",
        "1/" * 200_000,
    ]
    for text in hostile:
        t0 = time.perf_counter()
        is_correct(text, "1")
        is_correct(text, "B", ABCD)
        format_reward(text)
        assert time.perf_counter() - t0 < 2.0, text[:30]


# -----------------------------------------------------------------------------
# both modes: with math_verify where installed, and the standard library alone (what CI has)

def _modes():
    try:
        import math_verify  # noqa: F401
        return [False, True]
    except ImportError:
        return [False, pytest.param(True, marks=pytest.mark.skip(reason="math-verify not installed"))]


@pytest.fixture(params=_modes(), ids=lambda m: "math_verify" if m else "stdlib")
def mode(request, monkeypatch):
    monkeypatch.setattr(reward_module, "USE_MATH_VERIFY", request.param)
    return request.param

FALSE_ACCEPTS = [  # (prediction, gold): each must be rejected, in both modes
    ("3", "3\\sqrt{13}"), ("12", "12\\pi"), ("5", "6 - 5i"), ("0", "(-\\infty,0]"), ("0", "5x-7y+11z+4=0"),
    ("7 or -1", "-1"), ("-1 \\text{ or } 7", "-1"), ("\\boxed{7} or \\boxed{-1}", "-1"), ("1", "1,-3"),
    ("7425001", "7425000"), ("1000001", "1000000"), ("2.999999", "3"), ("16386.21", "16386.20"),
    ("3.00000", "3.000001"), ("0.333", "\\frac13"),
    ("2", "2k"), ("5", "5r^5"), ("3", "3R^2"), ("15 cm^2", "15\\mbox{ cm}^3"),
    ("1+\\frac1{\\mathrm e}", "1-\\frac1{\\mathrm e}"), ("1 + \\frac{1}{\\mathrm{e}}", "1 - \\frac{1}{\\mathrm{e}}"),
    ("204_5", "204_6"), ("52", "52_8"), ("x \\geq 5", "x \\leq 5"), ("x > -1", "x < 1"), ("(0,1)", "[0,1)"),
    ("(1,3)", "(3,1)"), ("2021", "\\pm 2021"), ("x+1", "x+2n+1"), ("4", "4\\sqrt{2}"), ("0", "a + 3z = 0"),
    # differences that vanish on an arithmetic progression of sample points (issue 21)
    ("a+c", "2b"), ("x-2y+z", "0"), ("a-2b+c+5", "5"), ("x-2y+z=5", "x-2y+z-1=0"), ("x-2y+z-1=1", "x-2y+z-1=0"),
    # the new forms stay strict
    ("1.22", "1, 22"), ("14:64", "7:32"), ("1:00", "12:00"), ("(0,1)", "0 \\le x < 1"), ("[0,1)", "0 < x \\le 1"),
    ("5", "x + y = 5"), ("(2,5)", "p=5, q=2"), ("3.01", "\\frac{9.5}{\\pi} \\approx 3.01"), ("12", "1,2"),
]

FALSE_REJECTS = [  # (prediction, gold): each must be accepted, in both modes
    ("28", "28\\%"), ("28 percent", "28\\%"), ("0.28", "28\\%"), ("1", "k=1"), ("k=1", "1"),
    ("5 \\geq x", "x \\leq 5"), ("-x > -1", "x < 1"), ("(3,2)", "(p,q)=(3,2)"), ("\\frac3{3}", "1"),
    ("\\frac94\\pi", "\\frac{9}{4}\\pi"), ("\\sqrt 2+\\sqrt 5", "\\sqrt{2}+\\sqrt{5}"), ("\\cfrac{1}{3}", "1/3"),
    ("\\left(\\frac13\\right)", "\\frac13"), ("(1,4.5)", "(1,\\frac92)"), ("125\\textnormal{ miles}", "125 miles"),
    ("6,8", "6 \\text{ and } 8"), ("8, 6", "6 \\text{ and } 8"), ("\\boxed{6} and \\boxed{8}", "6,8"),
    ("−3", "-3"), ("－３", "-3"), ("１２．５", "12.5"), ("12\u200b", "12"), ("1e1", "10"),
    ("0.0833333", "\\frac{1}{12}"), ("1.41421", "\\sqrt2"), ("x^2+2x+1", "(x+1)^2"), ("\\tan^2(y)+1", "\\sec^2(y)"),
    ("-5x+7y-11z-4=0", "5x - 7y + 11z + 4 = 0"), ("y=3+2x", "y = 2x + 3"), ("-2, 2", "\\pm 2"),
    ("1+\\sqrt{19}, 1-\\sqrt{19}", "1 \\pm \\sqrt{19}"), ("90", "90^\\circ"), ("\\$18.90", "18.90"), ("10080", "10,\\!080"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{bmatrix}1\\\\2\\end{bmatrix}"), ("x \\in [-2,7]", "[-2, 7]"),
    ("15\\text{ cm}^2", "15\\mbox{ cm}^2"), ("52_{8}", "52_8"), ("\\text{Evelyn}", "Evelyn"),
    # issue 21: decimal commas, chains, ratios, labels, assignments, an exact value then its rounding
    ("1000,99", "1000.99"), ("1.22", "1,22"), ("0.111", "0,111"), ("(-793, 10)", "-793 < a < 10"),
    ("(0,1)", "0<f(x)<1"), ("[-2, 7]", "-2 \\le x \\le 7"), ("(-2, 7]", "7 \\ge x > -2"), ("7:32", "S_{MBCN}:S=7:32"),
    ("11:21", "V_{1}:V_{2}=11:21"), ("1", "A:B=1"), ("\\frac{1}{\\sqrt{6}}", "\\frac{NO}{BO}=\\frac{1}{\\sqrt{6}}"),
    ("(5,2),(7,2)", "p=5,q=2;p=7,q=2"), ("p=5,q=2;p=7,q=2", "p = 5, q = 2 \\text{ and } p = 7, q = 2"),
    ("5, 2", "p=5, q=2"), ("q=2, p=5", "p=5, q=2"), ("\\frac{9.5}{3.14159} \\approx 3.01", "\\frac{9.5}{3.14159}"),
    ("x \\approx 11", "11"), ("(0;-2;6)", "(0, -2, 6)"),
    ("n!", "n!"), ("(n+1)!", "(n+1)!"),       # read but not computable at any point: no verdict, not a reject
    ("10^{\\frac{\\sqrt{13} - 5}{6}} \\quad \\text{and} \\quad 10^{-\\frac{5 + \\sqrt{13}}{6}}",
     "x_{1}=10^{\\frac{-5+\\sqrt{13}}{6}},\\quadx_{2}=10^{\\frac{-5-\\sqrt{13}}{6}}"),
]


def _answer(pred):
    return pred if "\\boxed" in pred else f"<answer>{pred}</answer>"


@pytest.mark.parametrize("pred,gold", FALSE_ACCEPTS)
def test_wrong_or_partial_answers_are_rejected(pred, gold, mode):
    assert not is_correct(_answer(pred), gold)


@pytest.mark.parametrize("pred,gold", FALSE_REJECTS)
def test_equivalent_forms_are_accepted(pred, gold, mode):
    assert is_correct(_answer(pred), gold)


def test_unicode_option_letter_and_numbers():
    assert is_correct("<answer>Ｂ</answer>", "B", ABCD) and is_correct("<answer>(Ｂ)</answer>", "B", ABCD)
    assert is_correct("<answer>B。不是 A</answer>", "B", ABCD) and is_correct("<answer>B不是 A</answer>", "B", ABCD)
    assert not is_correct("<answer>Bien sûr</answer>", "B", ABCD)
    assert extract_answer("<answer>\u200b１２</answer>") == "12"
    assert not is_correct("<answer>−3</answer>", "3")


def _top_imports(module):
    import ast
    tree = ast.parse(open(module.__file__, encoding="utf-8").read())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    return {n.module.split(".")[0] if isinstance(n, ast.ImportFrom) else a.name.split(".")[0]
            for n in top for a in n.names}


def test_reward_and_answers_import_only_the_standard_library():
    import sys
    from answers import compare, forms
    assert _top_imports(forms) <= set(sys.stdlib_module_names), _top_imports(forms)
    assert _top_imports(compare) <= set(sys.stdlib_module_names) | {"answers"}, _top_imports(compare)
    assert _top_imports(reward_module) <= set(sys.stdlib_module_names) | {"answers"}, _top_imports(reward_module)


# -----------------------------------------------------------------------------
# the peers' own test tables and MATH-500 golds (tests/data/, sources named in scripts/reward_table.py)

def _table():
    import importlib.util
    import os
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "reward_table.py")
    spec = importlib.util.spec_from_file_location("reward_table", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_agrees_with_the_peers_tables(mode):
    numbers = _table().measure()
    agree, n = numbers["agree"]
    assert n > 280 and agree / n >= (0.85 if mode else 0.75), numbers
    unnamed = set(numbers["disagree"]) - set(_table().DELIBERATE)
    assert not unnamed, f"disagreements not named in scripts/reward_table.py: rows {sorted(unnamed)}"


def test_no_false_accepts_of_partial_numbers_or_changed_digits(mode):
    numbers = _table().measure()
    assert numbers["partial"][0] == 0 and numbers["partial"][1] > 200, numbers
    assert numbers["changed"][0] == 0 and numbers["changed"][1] > 250, numbers


def test_two_words_are_compared_as_text_not_as_products_of_variables():
    """"on" is not "no" (as products of variables o*n and n*o they were equal); case and a final
    full stop do not matter; a one-letter answer is still an option letter or a symbol."""
    ex = {"answer": "no", "question": "Is the cup full?"}
    said = lambda a: reward_module.reward(f"<think>x</think><answer>{a}</answer>", ex)   # noqa: E731
    assert said("on") == 0.0 and said("No") == said("no.") == said(" NO ") == 1.0
    assert reward_module.reward("<think>x</think><answer>yx</answer>", {"answer": "xy", "question": "q"}) == 0.0
    assert reward_module.reward("<think>x</think><answer>2ba</answer>", {"answer": "2ab", "question": "q"}) == 1.0
