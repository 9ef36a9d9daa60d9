#!/usr/bin/env bash
# What a session that is lent a GPU runs, in one device call (the machine starts bare and goes back when idle):
#     benchmarks/gpu_session.sh OUT_DIR
# 1. benchmarks/gpu.sh OUT_DIR/bench --budget-s ${BENCH_BUDGET_S:-220}: the GPU columns of the cards (the 512² runs
#    of the three models come first; 220 s fitted exactly those on an H200, 393 s in all).
# 2. The SwinIR reference model from scratch with the locality prior (issue 16: its bias must come to matter), in
#    the time left of ${SESSION_MINUTES:-9.5} minutes: benchmarks/gpu_train.sh with the recipe's schedule (STEPS,
#    default 4000 steps of batch 32), so that a run cut short here continues in the next GPU session. It resumes
#    from ${STATES:-.gpu_data/states}/swinir-ref-x2.pt when that file was carried (copy
#    OUT_DIR/train/swinir-ref-x2.pt there after the call; .gpu_data/ is ignored by git: name it in `carry`, with
#    .whl/ for spandrel; .gpu_data/testsets holds the training images: see gpu.sh and gpu_train.sh).
# Back here: commit OUT_DIR/bench/gpu-bench.json and .log under benchmarks/gpu/, look at the state with
#     python benchmarks/reference-finetune-cpu/check_ablations.py swinir-ref-x2 OUT_DIR/train/swinir-ref-x2.pt
# and, once its ablations hold (or the schedule is done), write the reference folder from it:
#     nystra-hub train-reference --recipe swinir-ref-x2 --bias-init locality --resume \
#         --state OUT_DIR/train/swinir-ref-x2.pt --stop-at <its step>
# SKIP_BENCH=1 skips step 1; DEVICE=cpu STEPS=2 TRAIN_ARGS="--batch 2" tries step 2 on this machine (CI does).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: benchmarks/gpu_session.sh OUT_DIR}
python=${PYTHON:-python3}
start=$(date +%s)
if [[ -z "${SKIP_BENCH:-}" ]]; then
    bash benchmarks/gpu.sh "$out/bench" --budget-s "${BENCH_BUDGET_S:-220}" || echo "gpu.sh failed: status $?"
fi
mkdir -p "$out/train"
states=${STATES:-.gpu_data/states}
if [[ -f "$states/swinir-ref-x2.pt" ]]; then
    cp "$states/swinir-ref-x2.pt" "$out/train/"
fi
minutes=$("$python" -c "print(round(max(0.5, ${SESSION_MINUTES:-9.5} - ($(date +%s) - $start) / 60 - 0.5), 2))")
echo "training swinir-ref-x2 for at most $minutes minutes"
STEPS=${STEPS:-4000} RECIPES=swinir-ref-x2 TRAIN_ARGS="--bias-init locality ${TRAIN_ARGS:-}" \
    bash benchmarks/gpu_train.sh "$out/train" "$minutes" "${TESTSETS:-.gpu_data/testsets}"
