#!/usr/bin/env bash
# The CUDA path in two calls, each well under one 10-minute device command on one H100/H200:
#   part 1 (~6 min): on a random Qwen3-VL with the 2B model's shapes (hidden 2048, 28 layers, V = 151,936)
#     - ms per decode step for 64 rows: HF generate() vs decode.py's fast path with and without
#       torch.compile and CUDA graphs, against the memory-bandwidth floor (scripts/gpu_check.py decode)
#     - the scoring pass's forward + backward at two micro-batch budgets, with a kernel profile (update)
#     - 2 PTD-PO steps with 1,024-token responses under torchrun (fast rollouts, no checkpoint, no
#       export): time split, rollout tokens/s, update MFU, peak memory (report)
#   part 2 (~4 min): tests/test_cuda.py, then scripts/bench.py loss in bf16 (Top-K vs full-vocabulary JSD)
#     bash scripts/gpu_check.sh 1; bash scripts/gpu_check.sh 2   # on a GPU machine: two commands
#     bash scripts/gpu_check.sh 1 --tiny    # on a CPU: tiny shapes, short responses (tests run it)
#     PYTHON=.venv/bin/python bash scripts/gpu_check.sh 1      # an interpreter other than the python on PATH
# Each part logs to gpu_check_part<N>.log in $OUT (the device tool's folder) if set, else in GPU_CHECK_DIR.
# Every item runs in its own guard with its own time limit: a failure prints "gpu_check: FAILED: <item>"
# and the rest still runs; the exit status is the number of failed items.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python}
DIR=${GPU_CHECK_DIR:-runs/gpu_check}
PART=1; SHAPE=2b
for a in "$@"; do
    case "$a" in 1|2) PART=$a ;; --tiny) SHAPE=tiny ;; *) echo "usage: gpu_check.sh [1|2] [--tiny]"; exit 2 ;; esac
done
mkdir -p "$DIR" "${OUT:-$DIR}"
LOG=${OUT:-$DIR}/gpu_check_part$PART.log
exec > >(tee "$LOG") 2>&1
FAILED=()
guard() {   # guard NAME SECONDS COMMAND...: run it, report a failure or a timeout, go on
    local name=$1 limit=$2; shift 2
    echo "== $name (limit ${limit}s)"
    timeout "$limit" "$@" || { echo "gpu_check: FAILED: $name (exit $?)"; FAILED+=("$name"); }
}
"$PY" -c "
import sys, torch, transformers
print('torch', torch.__version__, '| transformers', transformers.__version__, '|',
      torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')
if transformers.__version__ != '5.24.0':
    sys.exit('gpu_check: transformers ' + transformers.__version__ + ', expected 5.24.0 (install the 5.24 and regex wheels)')
" || exit 1
if [[ "$SHAPE" == tiny ]]; then
    STEPS=(--max_new_tokens 8 --prompts_per_step 2 --minibatch_prompts 2 --group_size 2 --threads 1)
    DECODE=(--rows 4 --new_tokens 6 --long_tokens 8); UPDATE=(--rows 4 --new_tokens 8 --budgets 200 10000)
else
    STEPS=(--max_new_tokens 1024 --prompts_per_step 8 --minibatch_prompts 8 --group_size 8 --grad_ckpt
           --token_budget 73728 --lr 1e-6 --warmup_steps 0 --ptd_coef 0.05)
    DECODE=(--rows 64 --new_tokens 256 --long_tokens 1024); UPDATE=(--rows 64 --new_tokens 1024)
fi
if [[ "$PART" == 2 ]]; then
    guard "CUDA tests" 300 "$PY" -m pytest -q tests/test_cuda.py
    [[ "$SHAPE" == tiny ]] || guard "loss bench" 90 "$PY" scripts/bench.py loss --device cuda --dtype bfloat16 \
        --tokens 2048 8192 16384 --hidden 2048
else
    rm -rf "$DIR/run"
    "$PY" -c "from demo import toy; toy.ensure()" || exit 1        # the demo's data (its prompts and hints)
    "$PY" scripts/gpu_check.py build --shape "$SHAPE" --out "$DIR/model" || exit 1
    guard "decode bench" 200 "$PY" scripts/gpu_check.py decode --model "$DIR/model" "${DECODE[@]}"
    guard "update bench" 90 "$PY" scripts/gpu_check.py update --model "$DIR/model" "${UPDATE[@]}"
    guard "2 training steps" 150 "$PY" -m torch.distributed.run --nproc_per_node=1 \
        --master_port "${MASTER_PORT:-29531}" train.py --model "$DIR/model" --train_data toy/data/train.jsonl \
        --out_dir "$DIR/run" --steps 2 --save_every 0 --no_checkpoints --no_export "${STEPS[@]}"
    guard "step report" 30 "$PY" scripts/gpu_check.py report --run "$DIR/run" --model "$DIR/model"
fi
echo "gpu_check part $PART: ${#FAILED[@]} failed${FAILED[*]:+: ${FAILED[*]}}; log in $LOG"
exit ${#FAILED[@]}
