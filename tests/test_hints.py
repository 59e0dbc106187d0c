"""hints.py: rendering and drawing; reward.find_spoiler, the zero-spoiler filter, both ways;
scripts/make_hints.py's parsing and check of an expert reply."""
import json
import os
import sys
import time

import pytest
from PIL import Image

from hints import box_for_model, draw_focus, render_hint, render_hint_text, validate_hint
from reward import find_spoiler

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
from make_hints import check_expert_reply, finished_ids, parse_expert_json  # noqa: E402

ABCD = ["a cat", "a dog", "12 apples", "none of these"]

LEAKS = [  # (hint text, gold answer, choices): each must be rejected
    ("The triangle is red.", "red", None),
    ("Note the RED fill.", "red", None),
    ("Look for something $\\text{red}$.", "red", None),
    ("There are 12 of them.", "12", None),
    ("There are 12.0 of them.", "12", None),
    ("You should find twelve objects.", "12", None),
    ("The ratio works out to 1/2 here.", "0.5", None),
    ("It is 0.5 of the area.", "1/2", None),
    ("The area is \\frac{1}{2} of the square.", "0.5", None),
    ("About half of the bars.", "0.5", None),
    ("Roughly 50% of the circle is shaded.", "0.5", None),
    ("Twenty-one marbles in the jar.", "21", None),
    ("Count until you reach 1,234.", "1234", None),
    ("Choose B.", "B", ABCD),
    ("Option (B) fits best.", "B", ABCD),
    ("B is correct.", "B", ABCD),
    ("The option B matches the picture.", "B", ABCD),
    ("It is clearly a dog in the picture.", "B", ABCD),
    ("There are 12 apples on the table.", "C", ABCD),
    ("The answer is 7.", "12", None),                     # trap: an answer stated, even wrong
    ("So the result equals 9.", "12", None),
    ("Therefore the total is 30.", "12", None),
    ("The correct answer should be the bigger one.", "12", None),
    ("Thus the final answer: blue.", "red", None),
    ("Pick C and move on.", "B", ABCD),                   # trap: a wrong option asserted
    ("The correct option is the last one.", "B", ABCD),
    ("Write <answer>x</answer> at the end.", "red", None),
    ("Put \\boxed{3} there.", "12", None),
    ("The result is negative three.", "-3", None),
    ("Notice the top left cell holds it.", "top left", None),
    ("The angle is 30 degrees.", "30", None),
    ("There are twenty four of them.", "24", None),       # number words as a run, not word by word
    ("About two hundred beads.", "200", None),
    ("Roughly three quarters of the disc.", "0.75", None),
    ("It measures 1.2e1 units.", "12", None),
    ("The fill is ｒｅｄ.", "red", None),                 # full-width letters: one Unicode normaliser
    ("The fill is re\u200bd.", "red", None),             # a zero-width space inside the word
    ("Mark the point at −3 on the axis.", "-3", None),    # U+2212, the minus sign
    ("The correct one is B.", "B", ABCD),
    ("The correct one is (Ｂ).", "B", ABCD),
    ("There are a dozen of them.", "12", None),           # quantity words
    ("Half a dozen marbles sit there.", "6", None),
    ("Four score and seven dots.", "87", None),
    ("A gross of pens lies there.", "144", None),
    ("There are XII of them.", "12", None),               # a Roman numeral
    ("The clock shows IV.", "4", None),
    ("Write 1 2 on the line.", "12", None),               # digits spaced apart
    ("The code is 3-0-5.", "305", None),
    ("The fill is r-e-d.", "red", None),                  # letters spaced apart
    ("The fill is r e d.", "red", None),
    ("The fill is R.E.D.", "red", None),
    ("Take the second option.", "B", ABCD),               # an option named by its place
    ("The last choice fits the picture.", "D", ABCD),
    ("The second-to-last option fits.", "C", ABCD),
    ("Option 2 fits the picture.", "B", ABCD),
    ("Look hard at choice two.", "B", ABCD),
    ("The 2nd alternative fits.", "a dog", ABCD),         # the gold given as the option's text
]

CLEAN = [  # (hint text, gold answer, choices): each must pass
    ("Find the triangle, then read the colour of its fill.", "red", None),
    ("Look at the region [120, 40, 300, 200] and ignore the circle at [0, 0, 50, 50].", "12", None),
    ("Focus on the object at (12, 40).", "12", None),
    ("Count the apples in each of the 3 rows, then add the rows.", "12", None),
    ("The first step has 2 parts; the second has 4.", "12", None),
    ("Compare the two bars and compute their ratio.", "0.5", None),
    ("Use the Pythagorean theorem on the right triangle.", "5", None),
    ("Check each option against the picture before deciding.", "B", ABCD),
    ("Consider whether the animal has whiskers.", "B", ABCD),
    ("Choose a point on the line and measure its distance.", "B", ABCD),
    ("A careful look at the legend helps.", "A", ["x", "y"]),
    ("Is the shape closed? Check the edges.", "yes", None),
    ("Look at the shape in the top right cell.", "red", None),
    ("Ignore the decorations; they are distractors.", "none of these", None),
    ("The angle marked 40 is not the one asked for.", "30", None),
    ("Think about what fraction of the circle is shaded.", "1/4", None),
    ("Compare one bar with the other two.", "12", None),
    ("A hundred tiny dots fill the background.", "24", None),
    ("Compare the score of both teams.", "20", None),      # "score" without "a" or a number word
    ("Look at rows 1, 2 and 3.", "12", None),              # a list is not digits spaced apart
    ("Check the first option carefully.", "B", ABCD),      # a place that is not the correct option's
    ("Look at point C, then at point I.", "100", None),    # one letter is a label, not a numeral
    ("Find the red region, then step back.", "re", None),
]


@pytest.mark.parametrize("text,answer,choices", LEAKS)
def test_spoiler_filter_catches_leaks(text, answer, choices):
    assert find_spoiler(text, answer, choices) is not None


@pytest.mark.parametrize("text,answer,choices", CLEAN)
def test_spoiler_filter_passes_clean_hints(text, answer, choices):
    assert find_spoiler(text, answer, choices) is None


def test_paraphrase_is_a_known_blind_spot():
    # A rule-based filter cannot see that a ripe tomato is red; documented, not hidden.
    assert find_spoiler("It has the colour of a ripe tomato.", "red") is None
    # Two-letter Roman numerals that are also segment names: CD reads as 400 (a false reject, rare).
    assert find_spoiler("Measure the segment CD.", "400") is not None


HINT = {"regions": [{"box": [10, 20, 60, 80], "label": "the triangle", "role": "focus"},
                    {"box": [60, 0, 100, 40], "label": "a circle", "role": "distractor"}],
        "steps": ["Find the triangle.", "Read the colour of its fill."]}


def test_render_snapshot_qwen3_norm1000():
    text = render_hint(validate_hint(HINT, (200, 100)), (200, 100), "norm1000")
    assert text == ("Hint:\nLook at: the triangle [50, 200, 300, 800].\nIgnore: a circle [300, 0, 500, 400].\n"
                    "1. Find the triangle.\n2. Read the colour of its fill.")


def test_render_snapshot_qwen25_resized_pixels():
    text = render_hint(validate_hint(HINT, (200, 100)), (200, 100), "pixels", resized_size=(224, 112))
    assert text.splitlines()[1] == "Look at: the triangle [11, 22, 67, 90]."
    assert box_for_model([0, 0, 200, 100], (200, 100), "pixels", (224, 112)) == [0, 0, 224, 112]


def test_the_free_text_hint_keeps_the_words_and_drops_the_structure():
    text = render_hint_text(validate_hint(HINT, (200, 100)))
    assert text == ("Hint: What matters is the triangle. Do not be misled by a circle. "
                    "Find the triangle. Read the colour of its fill.")
    assert "\n" not in text and "[" not in text
    assert render_hint_text(validate_hint({"steps": ["Count the rows"]})) == "Hint: Count the rows."


def test_without_the_filter_a_leaking_expert_reply_is_kept():
    ex = {"answer": "red", "choices": None}
    reply = json.dumps({"steps": ["The triangle is red."]})
    assert check_expert_reply(reply, ex, (100, 100))[1].startswith("spoiler")
    hint, why = check_expert_reply(reply, ex, (100, 100), spoiler_filter=False)
    assert why is None and hint["steps"] == ["The triangle is red."]


def test_render_steps_only_and_is_deterministic():
    h = validate_hint({"steps": ["Count the rows."]})
    assert render_hint(h) == "Hint:\n1. Count the rows." == render_hint(h)


@pytest.mark.parametrize("bad,field", [
    ({"regions": [], "steps": []}, "both"),
    ({"regions": [{"box": [0, 0, 10], "label": "x"}]}, "regions[0].box"),
    ({"regions": [{"box": [5, 0, 1, 10], "label": "x"}]}, "x1 < x2"),
    ({"regions": [{"box": [0, 0, 300, 10], "label": "x"}]}, "outside"),
    ({"regions": [{"box": [0, 0, 10, 10], "label": "x", "role": "answer"}]}, "role"),
    ({"steps": ["ok", ""]}, "steps[1]"),
    ({"steps": "one"}, "lists"),
    ({"hints": []}, "unknown"),
    ("text", "object"),
])
def test_validate_hint_names_the_field(bad, field):
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        validate_hint(bad, (200, 100))


def test_draw_focus_frames_only_focus_boxes():
    img = Image.new("RGB", (100, 100), (255, 255, 255))
    out = draw_focus(img, validate_hint(HINT))
    assert img.getpixel((10, 20)) == (255, 255, 255)          # the original is untouched
    assert out.getpixel((10, 20)) == (0, 0, 0) and out.getpixel((59, 79)) == (0, 0, 0)
    assert out.getpixel((30, 50)) == (255, 255, 255)          # inside the frame: untouched
    assert out.getpixel((80, 20)) == (255, 255, 255)          # distractor: not drawn


@pytest.mark.parametrize("reply", [
    '{"steps": ["Find it."]}',
    '```json\n{"steps": ["Find it."]}\n```',
    'Sure! Here is the hint:\n{"steps": ["Find it."],}\nHope this helps {not json}',
    'noise { broken \n{"steps": ["Find {it}."]} trailing',
    '{"steps": ["a \\"quoted\\" word"]}',
])
def test_parse_expert_json_tolerates_fences_and_chatter(reply):
    assert "steps" in parse_expert_json(reply)


@pytest.mark.parametrize("reply", ["", "no json here", "{unclosed", "[1, 2]", '{"a": }'])
def test_parse_expert_json_rejects_garbage(reply):
    with pytest.raises(ValueError):
        parse_expert_json(reply)


def test_check_expert_reply_reasons():
    ex = {"answer": "red"}
    assert check_expert_reply('{"steps": ["Find the triangle."]}', ex, (100, 100))[0] is not None
    assert check_expert_reply("nonsense", ex, (100, 100)) == (None, "invalid JSON")
    assert check_expert_reply('{"steps": ["It is red."]}', ex, (100, 100))[1].startswith("spoiler")
    bad_box = '{"regions": [{"box": [0, 0, 500, 5], "label": "x", "role": "focus"}]}'
    assert check_expert_reply(bad_box, ex, (100, 100))[1].startswith("bad schema")


@pytest.mark.parametrize("reply", ["{" * 10_000, "{" * 30_000, '{"a": ' * 6_000, "{}" * 15_000,
                                   "{" * 15_000 + "}" * 15_000, '"' + "{" * 30_000])
def test_parse_expert_json_is_linear_on_hostile_replies(reply):
    t0 = time.perf_counter()
    try:
        parse_expert_json(reply)
    except ValueError:
        pass
    assert time.perf_counter() - t0 < 0.2  # milliseconds in practice; quadratic took seconds


DRAFT = '{"steps": ["It is red."]}'
FINAL = '{"steps": ["Find the triangle."]}'


def test_thinking_reply_uses_the_json_after_think():
    reply = f"<think>\nA first draft: {DRAFT}. Too revealing.\n</think>\n\n{FINAL}"
    assert parse_expert_json(reply) == json.loads(FINAL)
    # a Thinking template opens <think> in the prompt: the reply holds only the closing tag
    assert parse_expert_json(f"draft {DRAFT}\n</think>\n{FINAL}", opened_think=True) == json.loads(FINAL)
    hint, why = check_expert_reply(reply, {"answer": "red"}, (100, 100))
    assert why is None and hint["steps"] == ["Find the triangle."]


@pytest.mark.parametrize("reply,opened", [(f"<think>I will write {DRAFT} and then", False),
                                          (f"I will write {FINAL} and then", True)])
def test_reply_cut_off_inside_think_is_invalid_json(reply, opened):
    with pytest.raises(ValueError, match="inside <think>"):
        parse_expert_json(reply, opened_think=opened)
    assert check_expert_reply(reply, {"answer": "blue"}, (100, 100), opened) == (None, "invalid JSON")


def test_make_hints_resume_drops_a_partial_last_line(tmp_path):
    out = tmp_path / "hints.jsonl"
    assert finished_ids(str(out)) == set()
    out.write_text('{"id": "a", "hint": {}}\n{"id": "b", "hint": {}}\n{"id": "c", "hi')  # killed mid-write
    assert finished_ids(str(out)) == {"a", "b"}
    with open(out, "a") as f:                     # what the resumed run appends lands on its own line
        f.write('{"id": "c", "hint": {}}\n')
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["a", "b", "c"]
