#!/usr/bin/env bash
# The demo's evidence: GRPO vs PTD-PO vs PTD-PO with the other divergence vs two controls, from the
# shipped checkpoint, on the same data order, steps and budget. Settings are chosen on a development
# seed and the development split (toy/data/dev.jsonl, disjoint from the held-out split), then frozen
# and run on evaluation seeds and the held-out split, never used to choose anything. Two runs at a
# time, one thread each (the machine has 2 cores); the evaluation runs go seed by seed, so a partial
# phase still pairs its methods.
# Task 5 (the current demo; docs/RESULTS.md has the protocol, the rule and the findings, and
# docs/PREREGISTRATION.md the confirmation's frozen values, passed through the *5 variables):
#   PHASE=dev5 / dev5b / dev5c / dev5d   # development seed 100, the development split: the grid
#   PHASE=dev5seed RUNS2="..."           # the named settings on development seed 101
#   PHASE=eval5 GRPO_LR5=... bash scripts/compare.sh   # seeds 21-28 x the five methods, held-out
#   PHASE=summary bash scripts/compare.sh    # results/runs/ (one file per run), results/compare.txt, .png
# Task 4's phases, kept for its committed runs (results/runs/task4/): PHASE=dev, eval, ablations
# and levers, with task 4's rule (the mean held-out hard pass@1 over the evaluations at steps 20,
# 40 and 60; GRPO lr 5e-4, the JSD at lambda 32 and forward KL at lambda 1 were chosen; the main
# job then ran the JSD).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-runs/compare}
STEPS=${STEPS:-$("$PY" -c "import config; print(config.DEMO['steps'])")}   # the main job's budget
JOBS=${JOBS:-2}
DEV_SEED=${DEV_SEED:-100}
SEEDS=${SEEDS:-"1 2 3 4 5"}
ABL_SEEDS=${ABL_SEEDS:-"1 2"}
LR=${LR:-5e-4}                  # GRPO's lr (chosen on the development seed: 5e-4 over 1e-4 and 2e-3)
PTD_LR=${PTD_LR:-5e-4}          # PTD-PO's lr (both divergences) and the controls'
DIV=${DIV:-jsd}                 # the main job's divergence; OTHER is the other one
OTHER=${OTHER:-fkl}
LAMBDA=${LAMBDA:-32}            # lambda of DIV (the main job's) and of the controls
OTHER_LAMBDA=${OTHER_LAMBDA:-1} # lambda of OTHER
COMMON="--steps $STEPS --eval_every ${EVAL_EVERY:-20} --save_every 0 --no_checkpoints --no_export --threads 1"
HELD="--eval_n 400 --eval_samples 8 --eval_blank 1"      # pass@1, pass@8, the chance line at both ends
DEV="--eval_data toy/data/dev.jsonl --eval_n 400 --eval_samples 4 --eval_blank 0"   # what the rule reads
DEV_SEED2=${DEV_SEED2:-101}
# task 5's confirmation: the values docs/PREREGISTRATION.md froze (set there, not here)
SEEDS5=${SEEDS5:-"21 22 23 24 25 26 27 28"}
GRPO_LR5=${GRPO_LR5:-unset}; GRPO_WARM5=${GRPO_WARM5:-unset}; LAMBDA5=${LAMBDA5:-unset}; WARM5=${WARM5:-unset}
OTHER_LAMBDA5=${OTHER_LAMBDA5:-unset}; UNANSWER_LAMBDA5=${UNANSWER_LAMBDA5:-unset}
DIV5=${DIV5:-unset}; OTHER5=${OTHER5:-unset}   # ptdpo's divergence (the main job's) and ptdpo_other's
OTHER_WARM5=${OTHER_WARM5:-unset}
WARM=${WARM:-30}                # dev5b: PTD-PO's chosen warm-up
DEV5="--eval_data toy/data/dev.jsonl --eval_n 300 --eval_samples 2 --eval_blank 0 --eval_every 10"
PTD="--algo ptdpo --lr $PTD_LR"
mkdir -p "$OUT" results
jobs_file=$(mktemp)
case "${PHASE:-dev}" in
  dev)
    for lr in 1e-4 5e-4 2e-3; do echo "--algo grpo --lr $lr $DEV --seed $DEV_SEED --out_dir $OUT/dev_grpo_lr$lr"; done
    for lam in 2 8 32; do echo "$PTD --divergence jsd --ptd_coef $lam $DEV --seed $DEV_SEED --out_dir $OUT/dev_jsd_lam$lam"; done
    for lam in 1 4; do echo "$PTD --divergence fkl --ptd_coef $lam $DEV --seed $DEV_SEED --out_dir $OUT/dev_fkl_lam$lam"; done ;;
  eval)
    for s in $SEEDS; do
      echo "--algo grpo --lr $LR $HELD --seed $s --out_dir $OUT/grpo_s$s"
      echo "$PTD --divergence $DIV --ptd_coef $LAMBDA $HELD --seed $s --out_dir $OUT/ptdpo_s$s"
      echo "$PTD --divergence $OTHER --ptd_coef $OTHER_LAMBDA $HELD --seed $s --out_dir $OUT/ptdpo_other_s$s"
      echo "$PTD --divergence $DIV --ptd_coef $LAMBDA --tutor_context none $HELD --seed $s --out_dir $OUT/control_s$s"
      echo "$PTD --divergence $DIV --ptd_coef $LAMBDA --tutor_context unanswer $HELD --seed $s --out_dir $OUT/unanswer_s$s"
    done ;;
  eval5)   # task 5, the pre-registered confirmation (docs/PREREGISTRATION.md fixes every value here)
    # the step-0 evaluation is computed once per seed (GRPO's run) and shared (summarise.py)
    E="--eval_every 10 --eval_n 300 --eval_samples 8 --eval_blank 1 --eval_start 0"
    for s in $SEEDS5; do
      echo "--algo grpo --lr $GRPO_LR5 --warmup_steps $GRPO_WARM5 $E --eval_start 1 --seed $s --out_dir $OUT/grpo_s$s"
      echo "$PTD --divergence $DIV5 --ptd_coef $LAMBDA5 --warmup_steps $WARM5 $E --seed $s --out_dir $OUT/ptdpo_s$s"
      echo "$PTD --divergence $OTHER5 --ptd_coef $OTHER_LAMBDA5 --warmup_steps $OTHER_WARM5 $E --seed $s --out_dir $OUT/ptdpo_other_s$s"
      echo "$PTD --divergence $DIV5 --ptd_coef $LAMBDA5 --warmup_steps $WARM5 --tutor_context none $E --seed $s --out_dir $OUT/control_s$s"
      echo "$PTD --divergence $DIV5 --ptd_coef $UNANSWER_LAMBDA5 --warmup_steps $WARM5 --tutor_context unanswer $E --seed $s --out_dir $OUT/unanswer_s$s"
    done ;;
  abl5)   # task 5: the paper's ablations of PTD-PO at the frozen ptdpo setting, paired on ABL_SEEDS5
    # (seeds of the confirmation, so each compares with ptdpo_s<seed>); "frame": the tutor also sees
    # a frame drawn around the focus (the structured hint + frame against ptdpo's hint alone)
    "$PY" -c "from demo import toy; toy.ensure()" >&2   # the framed copy needs the train split built first
    "$PY" -c "from demo import toy; toy.write_framed('toy/data/train.jsonl', 'toy/data/train_framed.jsonl')" >&2
    for s in ${ABL_SEEDS5:-21 22 23}; do
      for a in "tau0.2 --tau 0.2" "distill_all --distill_all" "rkl --divergence rkl" \
               "answer_tutor --tutor_context answer" "hint_text --hint_style text" \
               "frame --train_data toy/data/train_framed.jsonl"; do
        set -- $a; name=$1; shift
        echo "$PTD --divergence $DIV5 --ptd_coef $LAMBDA5 --warmup_steps $WARM5 $* --eval_every 10 --eval_n 300 --eval_samples 8 --eval_blank 1 --eval_start 0 --seed $s --out_dir $OUT/abl_${name}_s$s"
      done
    done ;;
  ablations)   # ABLATIONS="answer_tutor rkl" runs a subset
    for s in $ABL_SEEDS; do
      for a in "tau0.2 --tau 0.2" "distill_all --distill_all" "rkl --divergence rkl" \
               "answer_tutor --tutor_context answer"; do
        set -- $a; name=$1; shift
        case " ${ABLATIONS:-tau0.2 distill_all rkl answer_tutor} " in *" $name "*) ;; *) continue ;; esac
        echo "$PTD --divergence $DIV --ptd_coef $LAMBDA $* $HELD --seed $s --out_dir $OUT/abl_${name}_s$s"
      done
    done ;;
  dev5)   # task 5: every method's knobs on development seed 100 (docs/RESULTS.md, "Development phase")
    s=$DEV_SEED
    for w in 10 30; do
      for lam in 128 64 32; do
        echo "$PTD --divergence jsd --ptd_coef $lam --warmup_steps $w $DEV5 --seed $s --out_dir $OUT/dev_jsd_lam${lam}_w${w}_s$s"
      done
      for lr in 1e-4 5e-4 1e-3 2e-3 4e-3; do
        echo "--algo grpo --lr $lr --warmup_steps $w $DEV5 --seed $s --out_dir $OUT/dev_grpo_lr${lr}_w${w}_s$s"
      done
    done ;;
  dev5seed)  # task 5: the settings RUNS2 names (e.g. "grpo_lr5e-4_w10 jsd_lam128_w10 fkl_lam4_w10
             # unanswer_lam64_w10") on the second development seed, named as on the first
    s=$DEV_SEED2
    for r in ${RUNS2:?RUNS2 names the runs: method_lr/lam<value>_w<warm-up> ...}; do
      IFS=_ read -r method knob warm <<< "$r"
      value=${knob#lr}; value=${value#lam}; w=${warm#w}
      case $method in
        grpo) echo "--algo grpo --lr $value --warmup_steps $w $DEV5 --seed $s --out_dir $OUT/dev_${r}_s$s" ;;
        jsd|fkl) echo "$PTD --divergence $method --ptd_coef $value --warmup_steps $w $DEV5 --seed $s --out_dir $OUT/dev_${r}_s$s" ;;
        unanswer) echo "$PTD --divergence jsd --ptd_coef $value --tutor_context unanswer --warmup_steps $w $DEV5 --seed $s --out_dir $OUT/dev_${r}_s$s" ;;
        unanswerfkl) echo "$PTD --divergence fkl --ptd_coef $value --tutor_context unanswer --warmup_steps $w $DEV5 --seed $s --out_dir $OUT/dev_${r}_s$s" ;;
        *) echo "RUNS2: unknown method in $r" >&2; exit 2 ;;
      esac
    done ;;
  dev5c)  # task 5, amended after seed 100's grid (docs/RESULTS.md): PTD-PO's lambda above 128 at 30
          # warm-up steps, and GRPO at lr 7e-4 with both warm-ups (two more settings each)
    s=$DEV_SEED
    for lam in 256 512; do
      echo "$PTD --divergence jsd --ptd_coef $lam --warmup_steps 30 $DEV5 --seed $s --out_dir $OUT/dev_jsd_lam${lam}_w30_s$s"
    done
    for w in 10 30; do
      echo "--algo grpo --lr 7e-4 --warmup_steps $w $DEV5 --seed $s --out_dir $OUT/dev_grpo_lr7e-4_w${w}_s$s"
    done ;;
  dev5d)  # task 5, amended after dev5b: the un-answer control with forward KL, lambda 1, 4, 16
    for lam in 1 4 16; do
      echo "$PTD --divergence fkl --ptd_coef $lam --tutor_context unanswer --warmup_steps $WARM $DEV5 --seed $DEV_SEED --out_dir $OUT/dev_unanswerfkl_lam${lam}_w${WARM}_s$DEV_SEED"
    done ;;
  dev5b)  # task 5: the other divergence's and the un-answer control's lambda, at PTD-PO's chosen warm-up
    for s in $DEV_SEED; do
      for lam in 1 4 16; do
        echo "$PTD --divergence fkl --ptd_coef $lam --warmup_steps $WARM $DEV5 --seed $s --out_dir $OUT/dev_fkl_lam${lam}_w${WARM}_s$s"
      done
      for lam in 32 64 128; do
        echo "$PTD --divergence jsd --ptd_coef $lam --tutor_context unanswer --warmup_steps $WARM $DEV5 --seed $s --out_dir $OUT/dev_unanswer_lam${lam}_w${WARM}_s$s"
      done
    done ;;
  levers)   # the first round ran at 10 warm-up steps: the easy dip there, and what did not remove it
    W="--warmup_steps 10 $DEV --seed $DEV_SEED"
    echo "$PTD --divergence jsd --ptd_coef 32 $W --out_dir $OUT/dev_jsd_lam32_warm10"
    for kl in 0.1 0.5; do echo "$PTD --divergence jsd --ptd_coef 32 --kl_coef $kl $W --out_dir $OUT/dev_jsd_lam32_warm10_kl$kl"; done
    echo "$PTD --divergence jsd --ptd_coef 32 --lr 2.5e-4 $W --out_dir $OUT/dev_jsd_lam32_warm10_lr2.5e-4"
    echo "$PTD --divergence fkl --ptd_coef 4 $W --out_dir $OUT/dev_fkl_lam4_warm10"
    echo "--algo grpo --lr 5e-4 $W --out_dir $OUT/dev_grpo_lr5e-4_warm10" ;;
  summary) ;;
  *) echo "PHASE must be dev, dev5, dev5seed, dev5b, dev5c, dev5d, eval5, abl5, eval, ablations, levers or summary"; exit 2 ;;
esac > "$jobs_file"
"$PY" -c "from demo import toy; toy.ensure()"   # build the demo data once, before the parallel runs
start=$(date +%s)
# shellcheck disable=SC2086
xargs -r -P "$JOBS" -L 1 sh -c '"$0" train.py '"$COMMON"' "$@" > "$(echo "$@" | sed "s/.*--out_dir //").log" 2>&1' \
  "$PY" < "$jobs_file"
echo "phase ${PHASE:-dev} done in $(( $(date +%s) - start ))s"
if [ "${PHASE:-dev}" = summary ]; then
  "$PY" scripts/summarise.py --pack "$OUT" results/runs --png results/compare.png | tee results/compare.txt
fi
