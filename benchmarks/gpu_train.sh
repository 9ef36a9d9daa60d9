#!/usr/bin/env bash
# Train the three reference models in one time-boxed piece on a GPU:
#     benchmarks/gpu_train.sh OUT_DIR MINUTES [TESTSETS_DIR]
# Each recipe trains in its own process, all at once (these small models leave a GPU mostly idle when alone),
# bf16 autocast, the state saved every 200 steps to OUT_DIR/<recipe>.pt (weights, optimizer, sampler and RNG
# state). Steps are sized to MINUTES from the step times the three concurrent runs reached on an H200
# (benchmarks/gpu/train-h200-piece2.log: 0.173, 0.101, 0.111 s per step), with --max-minutes as a guard: the
# --steps auto probe, run by three processes starting at once, measured 3-12x slower steps than training then
# ran at (train-h200-piece1.log). Finish each one where the held-out images are:
#     nystra-hub train-reference --recipe <recipe> --resume --state OUT_DIR/<recipe>.pt
# which evaluates on Set5 + Set14 and writes reference_models/<recipe>/ (add --steps N to train further first).
# TESTSETS_DIR needs only the training sets (CBSD68, Kodak24); the GPU machine has no ../shared, so copy them
# into an ignored folder of the checkout (default .gpu_data/testsets) and carry it. DEVICE=cpu tries it here.
# STEPS=N fixes the schedule (a run to be continued in later pieces: --resume needs the same steps);
# RECIPES="swinir-ref-x2" trains only those; TRAIN_ARGS are added to each command, e.g. the SwinIR model whose bias
# should matter, from scratch with the locality prior (benchmarks/reference-finetune-cpu/README.md):
#     RECIPES=swinir-ref-x2 TRAIN_ARGS="--bias-init locality" benchmarks/gpu_train.sh OUT 9
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: benchmarks/gpu_train.sh OUT_DIR MINUTES [TESTSETS_DIR]}
minutes=${2:?usage: benchmarks/gpu_train.sh OUT_DIR MINUTES [TESTSETS_DIR]}
testsets=${3:-.gpu_data/testsets}
python=${PYTHON:-python3}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
read -r -a recipes <<<"${RECIPES:-swinir-ref-x2 uformer-ref-denoise25 dehazeformer-ref-t}"
read -r -a extra <<<"${TRAIN_ARGS:-}"
declare -A seconds_per_step=([swinir-ref-x2]=0.173 [uformer-ref-denoise25]=0.101 [dehazeformer-ref-t]=0.111)
mkdir -p "$out"
pids=()
for recipe in "${recipes[@]}"; do
    steps=${STEPS:-$("$python" -c "print(max(1, int($minutes * 60 * 0.9 / ${seconds_per_step[$recipe]})))")}
    "$python" -m nystra_hub.cli train-reference --recipe "$recipe" --device "${DEVICE:-cuda}" --steps "$steps" \
        --max-minutes "$minutes" --state "$out/$recipe.pt" --resume --save-every 200 --no-eval \
        --testsets "$testsets" --threads 4 --log-every 250 ${extra[@]+"${extra[@]}"} >"$out/$recipe.log" 2>&1 &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
    wait "$pid" || status=1
done
for recipe in "${recipes[@]}"; do
    sed "s/^/[$recipe] /" "$out/$recipe.log" && rm "$out/$recipe.log"
done >"$out/train.log"
cat "$out/train.log" | grep -v "^\[.*\] step [0-9]*[1-9]/" | tail -n 30
exit $status
