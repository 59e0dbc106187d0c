#!/usr/bin/env bash
# GRPO vs PTD-PO and the paper's ablations on the embedded demo task, from the same shipped
# checkpoint, with the same data, steps and seeds. Two runs at a time (one CPU thread each).
#   bash scripts/compare.sh                 # all runs, then the table and results/compare.png
#   STEPS=40 SEEDS="0" bash scripts/compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/compare}
STEPS=${STEPS:-120}
SEEDS=${SEEDS:-"0 1 2"}
JOBS=${JOBS:-2}
COMMON="--steps $STEPS --lr ${LR:-5e-4} --ptd_coef ${PTD_COEF:-2.0} --eval_every 30 --eval_n 400 --eval_samples 2 \
        --save_every 0 --no_export --threads 1"
mkdir -p "$OUT" results
jobs_file=$(mktemp)
for s in $SEEDS; do
  echo "--algo grpo --seed $s --out_dir $OUT/grpo_s$s" >> "$jobs_file"
  echo "--algo ptdpo --seed $s --out_dir $OUT/ptdpo_s$s" >> "$jobs_file"
done
echo "--algo ptdpo --seed 0 --tau 0.2 --out_dir $OUT/abl_tau0.2" >> "$jobs_file"
echo "--algo ptdpo --seed 0 --distill_all --out_dir $OUT/abl_distill_all" >> "$jobs_file"
echo "--algo ptdpo --seed 0 --divergence fkl --out_dir $OUT/abl_fkl" >> "$jobs_file"
echo "--algo ptdpo --seed 0 --divergence rkl --out_dir $OUT/abl_rkl" >> "$jobs_file"
echo "--algo ptdpo --seed 0 --topk -1 --out_dir $OUT/abl_full_vocab" >> "$jobs_file"
echo "--algo ptdpo --seed 0 --tutor_context answer --out_dir $OUT/abl_answer_tutor" >> "$jobs_file"
python -c "import toy; toy.ensure()"   # build the demo data once, before the parallel runs
start=$(date +%s)
# shellcheck disable=SC2086
xargs -P "$JOBS" -L 1 sh -c 'python train.py '"$COMMON"' "$@" > "$(echo "$@" | sed "s/.*--out_dir //").log" 2>&1' _ < "$jobs_file"
echo "all runs done in $(( $(date +%s) - start ))s"
python eval.py --compare $(ls -d "$OUT"/grpo_s*/ "$OUT"/ptdpo_s*/ "$OUT"/abl_*/) --png results/compare.png | tee results/compare.txt
python scripts/summarise.py "$OUT" | tee -a results/compare.txt
