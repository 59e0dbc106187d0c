"""reward.py: a table of cases both ways, format reward, and bounded time on hostile input."""
import time

import pytest

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
