#!/usr/bin/env bash
# Train the three reference models in one time-boxed piece on a GPU:
#     benchmarks/gpu_train.sh OUT_DIR MINUTES [TESTSETS_DIR]
# Each recipe trains in its own process, all at once (these small models leave a GPU mostly idle when alone),
# sized to MINUTES by a measured step time (--steps auto), bf16 autocast, the state saved every 500 steps to
# OUT_DIR/<recipe>.pt (weights, optimizer, sampler and RNG state). Finish each one where the held-out images are:
#     nystra-hub train-reference --recipe <recipe> --resume --state OUT_DIR/<recipe>.pt
# which evaluates on Set5 + Set14 and writes reference_models/<recipe>/ (add --steps N to train further first).
# TESTSETS_DIR needs only the training sets (CBSD68, Kodak24); the GPU machine has no ../shared, so copy them
# into an ignored folder of the checkout (default .gpu_data/testsets) and carry it. DEVICE=cpu tries it here.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: benchmarks/gpu_train.sh OUT_DIR MINUTES [TESTSETS_DIR]}
minutes=${2:?usage: benchmarks/gpu_train.sh OUT_DIR MINUTES [TESTSETS_DIR]}
testsets=${3:-.gpu_data/testsets}
python=${PYTHON:-python3}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
recipes=(swinir-ref-x2 uformer-ref-denoise25 dehazeformer-ref-t)
mkdir -p "$out"
pids=()
for recipe in "${recipes[@]}"; do
    "$python" -m nystra_hub.cli train-reference --recipe "$recipe" --device "${DEVICE:-cuda}" --steps auto \
        --max-minutes "$minutes" --state "$out/$recipe.pt" --resume --save-every 500 --no-eval \
        --testsets "$testsets" --threads 4 --log-every 250 >"$out/$recipe.log" 2>&1 &
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
