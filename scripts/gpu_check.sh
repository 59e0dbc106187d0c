#!/usr/bin/env bash
# The CUDA path in one short script (under 10 minutes on one H100/H200):
#   1. the test suite's CUDA tests (tests/test_cuda.py; skipped on a machine without a GPU)
#   2. bench.py loss in bf16: Top-K JSD vs the full-vocabulary JSD at 2k / 8k / 16k tokens
#   3. on a random Qwen3-VL with the 2B model's shapes (hidden 2048, 28 layers, V = 151,936):
#      ms per decode step for 64 rows, HF generate() vs decode.py's fast path, on the same batch,
#      against the memory-bandwidth floor (scripts/gpu_check.py decode)
#   4. the scoring pass's forward + backward alone at two micro-batch budgets, with a kernel profile
#      (scripts/gpu_check.py update): what limits the update's MFU
#   5. 2 PTD-PO steps of that model with 1,024-token responses under torchrun (fast rollouts): time
#      split, rollout tokens/s, update MFU, peak memory
#     bash scripts/gpu_check.sh            # on a GPU machine
#     bash scripts/gpu_check.sh --tiny     # on a CPU: tiny shapes, short responses (tests run it)
#     PYTHON=.venv/bin/python bash scripts/gpu_check.sh   # an interpreter other than the python on PATH
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python}
OUT=${GPU_CHECK_DIR:-runs/gpu_check}
rm -rf "$OUT/run"
if [[ "${1:-}" == "--tiny" ]]; then
    SHAPE=tiny; STEPS=(--max_new_tokens 8 --prompts_per_step 2 --minibatch_prompts 2 --group_size 2 --threads 1)
    DECODE=(--rows 4 --new_tokens 6 --long_tokens 8); UPDATE=(--rows 4 --new_tokens 8 --budgets 200 10000)
else
    SHAPE=2b; STEPS=(--max_new_tokens 1024 --prompts_per_step 8 --minibatch_prompts 8 --group_size 8 --grad_ckpt
                     --token_budget 73728 --lr 1e-6 --warmup_steps 0 --ptd_coef 0.05)
    DECODE=(--rows 64 --new_tokens 256 --long_tokens 1024); UPDATE=(--rows 64 --new_tokens 1024)
    "$PY" -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__, '|', torch.cuda.get_device_name())"
    "$PY" -m pytest -q tests/test_cuda.py || echo "gpu_check: CUDA TESTS FAILED (the checks below still run)"
    "$PY" bench.py loss --device cuda --dtype bfloat16 --tokens 2048 8192 16384 --hidden 2048
fi
"$PY" -c "import toy; toy.ensure()"                      # the demo's data (its prompts and hints)
"$PY" scripts/gpu_check.py build --shape "$SHAPE" --out "$OUT/model"
# a failed bench is reported and the rest still runs on a GPU (one run, no second chance); --tiny stops
bench() { "$PY" scripts/gpu_check.py "$@" || { echo "gpu_check: FAILED: $1"; [[ "$SHAPE" == 2b ]] || exit 1; }; }
bench decode --model "$OUT/model" "${DECODE[@]}"
bench update --model "$OUT/model" "${UPDATE[@]}"
"$PY" -m torch.distributed.run --nproc_per_node=1 --master_port "${MASTER_PORT:-29531}" train.py \
    --model "$OUT/model" --train_data toy/data/train.jsonl --out_dir "$OUT/run" --steps 2 --save_every 0 \
    --no_export "${STEPS[@]}"
"$PY" scripts/gpu_check.py report --run "$OUT/run" --model "$OUT/model"
