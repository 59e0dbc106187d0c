"""
scripts/reward_table.py: reward.py measured against the peers' own test cases, both modes.

    python scripts/reward_table.py

Three numbers per mode (math_verify asked where installed, and the standard library alone):
- agreement with the expected label on tests/data/peer_cases.jsonl, the (gold, prediction,
  expected) tables of Math-Verify's tests/ and lighteval's test_extractive_match.py. A prediction
  holding \\boxed is scored as a whole solution, any other is wrapped in <answer>...</answer>; a
  gold holding \\boxed (a whole solution) is replaced by what extract_answer takes from it.
- false accepts of a partial number: for each distinct MATH-500 gold that is more than one
  number (tests/data/math500_answers.jsonl), its first and its last number offered alone.
- false accepts of a changed digit: each distinct MATH-500 gold with its last digit changed.
Where the data comes from: tests/data/SOURCES.md. tests/test_reward.py asserts these numbers, and
that every disagreement with the peers' labels is one named in DELIBERATE below.

    python scripts/reward_table.py --list     # also each disagreement, with its mode and reason
"""
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import reward  # noqa: E402

DATA = os.path.join(ROOT, "tests", "data")

# Every row of peer_cases.jsonl (1-based line) where this reward and the peers' label differ, in
# either mode, and why. Rows marked PROSE pass with math-verify where it finds the number.
PROSE = "prose, not an answer: the reward reads the answer (at most 1000 characters), not the last number of a text"
DELIBERATE = {
    **{row: PROSE for row in (8, 13, 14, 15, 57, 58, 136, 137, 138, 142, 143, 147, 151, 152, 154, 158, 162, 164,
                              165, 167, 169, 269, 270, 271, 272, 273, 274, 275, 276, 277, 278, 279, 280, 281, 282,
                              283, 284, 285, 288, 291)},
    29: "the peers skip a $...$ span holding line breaks; the reward reads it (9 is 9)",
    30: "the peers skip a \\(...\\) span holding line breaks; the reward reads it (9 is 9)",
    33: "an escaped \\$ inside a $...$ span: not read",
    105: "a chain of equations through an unknown macro (\\zzz): not read",
    118: "matrices added: the parser does not compute; math-verify settles it",
    119: "matrices multiplied: the parser does not compute; math-verify settles it",
    128: "0.33 for 1/3: the one rounding tolerance is 6 significant digits",
    134: "2.6667 for 8/3: the one rounding tolerance is 6 significant digits",
    157: "the set {1,3} is not the tuple (1,3)",
    181: "a list is not one of its items ({35 cm, 4} for 4)",
    184: "a list with an item repeated is not the list without it (multiplicities count)",
    187: "a chain on an expression (1 <= |z| <= 3/2): not handled",
    206: "the peers' gold has an unclosed \\boxed: there is no gold answer",
    226: "boxes separated by prose (\"for part (a)\") are not one list: the last box is the answer",
    236: "boxes separated by prose (\"y_2 =\") are not one list: the last box is the answer",
    238: "a list is not one of its items (1, 2 for 2)",
    245: "\\sum: not handled by the parser; math-verify settles it",
    249: "the peers' label is wrong: 1 + 1/e is not 1 - 1/e",
    255: "a letter in prose among other letters (\"not A ... B\"): the answer must start with its letter",
    256: "a letter in prose among other letters (\"D, it can't be A or B\")",
    257: "a letter in prose among other letters (\"D, ... A or B\")",
    262: "the peers' gold is a sentence, not a letter",
    263: "the peers' gold is a sentence, not a letter",
    264: "the peers' gold is a sentence, not a letter",
    265: "a letter in French prose among other letters (\"réponse est C non A\")",
}


def _jsonl(name):
    with open(os.path.join(DATA, name), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def peer_cases():
    """(response, gold, expected) from the peers' tables, the prediction wrapped as our models answer."""
    cases = []
    for c in _jsonl("peer_cases.jsonl"):
        response = c["pred"] if "\\boxed" in c["pred"] else f"<answer>{c['pred']}</answer>"
        gold = reward.extract_answer(c["gold"]) if "\\boxed" in c["gold"] else c["gold"]
        cases.append((response, gold, c["expected"]))
    return cases


def math500_golds():
    """The distinct gold answers of MATH-500, in file order."""
    return list(dict.fromkeys(r["answer"] for r in _jsonl("math500_answers.jsonl")))


_DECORATION = re.compile(r"\^\{?\\circ\}?|\\%|\\\$|\\(?:text|mbox)\{\s*[a-z ]*\}(?:\^\{?\d\}?)?|[\s,]")
_NUM = re.compile(r"\d+(?:\.\d+)?")


def partial_number_cases(golds):
    """(response, gold): the first or last number of a gold that is more than that number.
    Golds that are one number with decoration (90^\\circ, 10\\%, \\$5, 15\\mbox{ cm}^2) and
    "x = 5" are left out: the bare number is a right answer there."""
    cases = []
    for g in golds:
        bare = _DECORATION.sub("", g)
        if re.fullmatch(r"-?\d+(?:\.\d+)?", bare) or re.fullmatch(r"[a-zA-Z]=-?\d+(?:\.\d+)?", bare):
            continue
        nums = _NUM.findall(g)
        for n in dict.fromkeys(nums[:1] + nums[-1:]):
            cases.append((f"<answer>{n}</answer>", g))
    return cases


def changed_digit_cases(golds):
    """(response, gold): the gold with its last digit replaced by the next one (9 -> 0)."""
    cases = []
    for g in golds:
        m = list(re.finditer(r"\d", g))
        if m:
            i = m[-1].start()
            cases.append((f"<answer>{g[:i]}{(int(g[i]) + 1) % 10}{g[i + 1:]}</answer>", g))
    return cases


def measure():
    """The three numbers for the mode reward.py is in now, and the rows that disagree."""
    peers = peer_cases()
    golds = math500_golds()
    partial, changed = partial_number_cases(golds), changed_digit_cases(golds)
    disagree = [row for row, (r, g, e) in enumerate(peers, 1) if reward.is_correct(r, g) != e]
    return {"agree": (len(peers) - len(disagree), len(peers)), "disagree": disagree,
            "partial": (sum(reward.is_correct(r, g) for r, g in partial), len(partial)),
            "changed": (sum(reward.is_correct(r, g) for r, g in changed), len(changed))}


def main():
    show = "--list" in sys.argv[1:]
    try:
        import math_verify  # noqa: F401
        modes = [("with math-verify", True), ("standard library only", False)]
    except ImportError:
        modes = [("standard library only (math-verify not installed)", False)]
    rows = []
    for name, flag in modes:
        reward.USE_MATH_VERIFY = flag
        rows.append((name, measure()))
        for row in rows[-1][1]["disagree"] if show else []:
            print(f"{name}: row {row}: {DELIBERATE.get(row, 'NOT NAMED')}")
    first = rows[0][1]
    print("| | " + " | ".join(name for name, _ in rows) + " |")
    print("|---|" + "---|" * len(rows))
    print(f"| agrees with the peers' label ({first['agree'][1]} cases) | "
          + " | ".join(f"{100 * m['agree'][0] / m['agree'][1]:.0f}%" for _, m in rows) + " |")
    print(f"| false accepts: partial number of a MATH-500 gold ({first['partial'][1]} cases) | "
          + " | ".join(str(m["partial"][0]) for _, m in rows) + " |")
    print(f"| false accepts: the gold's last digit changed ({first['changed'][1]} cases) | "
          + " | ".join(str(m["changed"][0]) for _, m in rows) + " |")


if __name__ == "__main__":
    main()
