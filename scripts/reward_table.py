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
Where the data comes from: tests/data/SOURCES.md. tests/test_reward.py asserts these numbers.
"""
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import reward  # noqa: E402

DATA = os.path.join(ROOT, "tests", "data")


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
    """The three numbers for the mode reward.py is in now."""
    peers = peer_cases()
    golds = math500_golds()
    partial, changed = partial_number_cases(golds), changed_digit_cases(golds)
    agree = sum(reward.is_correct(r, g) == e for r, g, e in peers)
    return {"agree": (agree, len(peers)),
            "partial": (sum(reward.is_correct(r, g) for r, g in partial), len(partial)),
            "changed": (sum(reward.is_correct(r, g) for r, g in changed), len(changed))}


def main():
    try:
        import math_verify  # noqa: F401
        modes = [("with math-verify", True), ("standard library only", False)]
    except ImportError:
        modes = [("standard library only (math-verify not installed)", False)]
    rows = []
    for name, flag in modes:
        reward.USE_MATH_VERIFY = flag
        rows.append((name, measure()))
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
