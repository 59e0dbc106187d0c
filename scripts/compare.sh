#!/usr/bin/env bash
# The demo's evidence: GRPO vs PTD-PO (forward KL, the demo's divergence) vs PTD-PO with the paper's
# JSD vs the no-hint control, from the shipped checkpoint, on the same data order, steps and budget.
# Settings are chosen on a development seed, then frozen and run on evaluation seeds that were
# never used to choose anything. Two runs at a time, one thread each (the machine has 2 cores);
# the evaluation runs go seed by seed, so a partial phase still pairs its methods.
#   PHASE=dev bash scripts/compare.sh        # seed 100: GRPO lr, PTD-PO (fkl) lambda/lr, JSD lambda
#   PHASE=eval bash scripts/compare.sh       # seeds 1-5: grpo, ptdpo, ptdpo_jsd, control
#   PHASE=ablations bash scripts/compare.sh  # the paper's ablations of PTD-PO, seeds 1-2
#   PHASE=summary bash scripts/compare.sh    # results/compare.txt and results/compare*.png
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-runs/compare}
STEPS=${STEPS:-100}
JOBS=${JOBS:-2}
DEV_SEED=${DEV_SEED:-100}
SEEDS=${SEEDS:-"1 2 3 4 5"}
ABL_SEEDS=${ABL_SEEDS:-"1 2"}
LR=${LR:-5e-4}                  # GRPO's lr
PTD_LR=${PTD_LR:-5e-4}          # PTD-PO's lr (both divergences) and the control's
LAMBDA=${LAMBDA:-2}             # PTD-PO's lambda with forward KL (the demo's divergence) and the control's
JSD_LAMBDA=${JSD_LAMBDA:-2}     # PTD-PO's lambda with the paper's JSD
COMMON="--steps $STEPS --eval_every 50 --eval_n 400 --eval_samples 8 --save_every 0 --no_export --threads 1"
mkdir -p "$OUT" results
jobs_file=$(mktemp)
case "${PHASE:-dev}" in
  dev)
    for lr in 5e-4 1e-3; do echo "--algo grpo --lr $lr --seed $DEV_SEED --out_dir $OUT/dev_grpo_lr$lr"; done
    echo "--algo ptdpo --divergence fkl --lr 5e-4 --ptd_coef 2 --seed $DEV_SEED --out_dir $OUT/dev_ptdpo_lam2"
    echo "--algo ptdpo --divergence fkl --lr 2.5e-4 --ptd_coef 1 --seed $DEV_SEED --out_dir $OUT/dev_ptdpo_lam1_lr2.5e-4"
    for lam in 2 16; do
      echo "--algo ptdpo --divergence jsd --lr $PTD_LR --ptd_coef $lam --seed $DEV_SEED --out_dir $OUT/dev_ptdpo_jsd_lam$lam"
    done ;;
  eval)
    for s in $SEEDS; do
      echo "--algo grpo --lr $LR --seed $s --out_dir $OUT/grpo_s$s"
      echo "--algo ptdpo --divergence fkl --lr $PTD_LR --ptd_coef $LAMBDA --seed $s --out_dir $OUT/ptdpo_s$s"
      echo "--algo ptdpo --divergence jsd --lr $PTD_LR --ptd_coef $JSD_LAMBDA --seed $s --out_dir $OUT/ptdpo_jsd_s$s"
      echo "--algo ptdpo --divergence fkl --lr $PTD_LR --ptd_coef $LAMBDA --tutor_context none --seed $s --out_dir $OUT/control_s$s"
    done ;;
  ablations)   # ABLATIONS="answer_tutor rkl" runs a subset
    for s in $ABL_SEEDS; do
      for a in "tau0.2 --tau 0.2" "distill_all --distill_all" "rkl --divergence rkl" \
               "answer_tutor --tutor_context answer"; do
        set -- $a; name=$1; shift
        case " ${ABLATIONS:-tau0.2 distill_all rkl answer_tutor} " in *" $name "*) ;; *) continue ;; esac
        echo "--algo ptdpo --divergence fkl --lr $PTD_LR --ptd_coef $LAMBDA $* --seed $s --out_dir $OUT/abl_${name}_s$s"
      done
    done ;;
  summary) ;;
  *) echo "PHASE must be dev, eval, ablations or summary"; exit 2 ;;
esac > "$jobs_file"
"$PY" -c "import toy; toy.ensure()"   # build the demo data once, before the parallel runs
start=$(date +%s)
# shellcheck disable=SC2086
xargs -r -P "$JOBS" -L 1 sh -c '"$0" train.py '"$COMMON"' "$@" > "$(echo "$@" | sed "s/.*--out_dir //").log" 2>&1' \
  "$PY" < "$jobs_file"
echo "phase ${PHASE:-dev} done in $(( $(date +%s) - start ))s"
if [ "${PHASE:-dev}" = summary ]; then
  "$PY" scripts/summarise.py "$OUT" --png results/compare.png | tee results/compare.txt
fi
