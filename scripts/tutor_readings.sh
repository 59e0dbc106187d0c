#!/bin/bash
# What the demo's frozen model answers when it reads each tutor context of the ablations, before any
# training: the student's prompt (with its blank-image chance line), the structured hint (PTD-PO's
# tutor), the same hint as prose (--hint_style text), the gold answer (--tutor_context answer), and
# the structured hint with a frame drawn around the focus (the abl5 "frame" ablation). Development
# split, first 300 problems (100 a bucket) x 8 samples at T = 1.
#   bash scripts/tutor_readings.sh [out_dir]     (default results/tutor_readings; ~3 min on 2 cores)
set -eo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-results/tutor_readings}
PY=${PYTHON:-python}
mkdir -p "$OUT"
"$PY" -c "from demo import toy; toy.ensure()"
"$PY" -c "from demo import toy; toy.write_framed('toy/data/dev.jsonl', 'toy/data/dev_framed.jsonl')"
E="--model toy --limit 300 --n_samples 8 --seed 1234 --threads ${THREADS:-2}"
run() { name=$1; shift; echo "== $name" >&2; "$PY" eval.py $E "$@" --out "$OUT/$name.json" > /dev/null; }
run student --data toy/data/dev.jsonl --blank
run hint    --data toy/data/dev.jsonl --with_hints
run text    --data toy/data/dev.jsonl --with_hints --hint_style text
run answer  --data toy/data/dev.jsonl --with_hints --tutor_context answer
run frame   --data toy/data/dev_framed.jsonl --with_hints
"$PY" - "$OUT" <<'EOF' | tee "$OUT/table.txt"
import json, os, sys
out = sys.argv[1]
print("The demo model before training, reading each context (toy/data/dev.jsonl, first 300 problems x 8 "
      "samples, T = 1):\npass@1 (%) easy / hard / pivot; answers: the share naming the target's colour / "
      "the other marked shape's / no answer in the format")
print("\n| reading | pass@1 easy | hard | pivot | pivot: target / marked / none | all buckets: none |")
print("|---|---|---|---|---|---|")
names = {"student": "the student's prompt (no hint)", "hint": "the hint, structured (PTD-PO's tutor)",
         "text": "the hint as prose (--hint_style text)", "answer": "the gold answer (--tutor_context answer)",
         "frame": "the hint + a frame drawn around the focus (abl5 frame)"}
for k, label in names.items():
    r = json.load(open(os.path.join(out, k + ".json")))
    b = ("easy", "hard", "pivot")
    none = sum(r[f"answers/{c}/none"] for c in b) / 3
    print(f"| {label} | " + " | ".join(f"{100 * r[f'pass@1/{c}']:.1f}" for c in b) +
          f" | {100 * r['answers/pivot/target']:.1f} / {100 * r['answers/pivot/marked']:.1f} / "
          f"{100 * r['answers/pivot/none']:.1f} | {100 * none:.1f} |")
r = json.load(open(os.path.join(out, "student.json")))
print("\nChance lines: the student's prompt on a blank image " +
      " / ".join(f"{100 * r[f'blank_pass@1/{c}']:.1f}" for c in ("easy", "hard", "pivot")) +
      "%; a uniform guess over the 10 colours 10%.")
EOF
