#!/usr/bin/env bash
# Render model_cards/, reference_models/*/README.md and the page of every JSON they cite (benchmarks/*.md, next to
# its JSON) from the measurement JSON in benchmarks/ and the reference models' reference.json. Nothing is measured
# here (see benchmarks/README.md); a card names the date, machine and commit of each run it cites. The cards cite
# only runs of the current code (the route runs of 2026-11-27 with compile and ONNX Runtime, and the 3-round run of
# the enlarged-window recipe, stay in benchmarks/ with their pages, cited by the README only).
set -euo pipefail
cd "$(dirname "$0")/.."
B=benchmarks
GPU=$B/gpu/gpu-bench-h200.json
NYSTRA_HUB=${NYSTRA_HUB:-nystra-hub}
cards() { "$NYSTRA_HUB" cards "$@" --out-dir model_cards --gpu $GPU --run-pages; }
existing() { for f in "$@"; do [ -f "$f" ] && echo "$f"; done; }
ref() { echo "--fidelity $(existing "${@:2}") --reference reference_models/$1"; }
cards swinir-x2 --bench $(existing $B/timing-swinir-x2-128-cpu.json $B/bench-swinir-x2-cpu.json $B/bench-swinir-x2-512-cpu.json \
        $B/bench-swinir-x2-default-route-cpu.json) \
    $(ref swinir-ref-denoise50 $B/fidelity-swinir-ref-denoise50.json $B/fidelity-swinir-ref-denoise50-calibrated.json)
cards swinir-x4 --bench $(existing $B/bench-swinir-x4-cpu.json $B/bench-swinir-x4-default-route-cpu.json) \
    $(ref swinir-ref-denoise50 $B/fidelity-swinir-ref-denoise50.json $B/fidelity-swinir-ref-denoise50-calibrated.json)
cards uformer-b-sidd --bench $(existing $B/bench-uformer-b-sidd-cpu.json $B/bench-uformer-b-sidd-512-cpu.json \
        $B/bench-uformer-b-sidd-default-route-cpu.json) \
    $(ref uformer-ref-denoise25 $B/fidelity-uformer-ref-denoise25.json $B/fidelity-uformer-ref-denoise25-calibrated.json)
cards dehazeformer-b-indoor --bench $(existing $B/bench-dehazeformer-b-indoor-cpu.json \
        $B/bench-dehazeformer-b-indoor-512-cpu.json $B/bench-dehazeformer-b-indoor-default-route-cpu.json) \
    $(ref dehazeformer-ref-t $B/fidelity-dehazeformer-ref-t.json)
"$NYSTRA_HUB" cards --reference-model reference_models/swinir-ref-x2 --fidelity $B/fidelity-swinir-ref-x2.json
"$NYSTRA_HUB" cards --reference-model reference_models/swinir-ref-denoise50 \
    --fidelity $(existing $B/fidelity-swinir-ref-denoise50.json $B/fidelity-swinir-ref-denoise50-calibrated.json)
"$NYSTRA_HUB" cards --reference-model reference_models/uformer-ref-denoise25 \
    --fidelity $(existing $B/fidelity-uformer-ref-denoise25.json $B/fidelity-uformer-ref-denoise25-calibrated.json)
"$NYSTRA_HUB" cards --reference-model reference_models/dehazeformer-ref-t --fidelity $B/fidelity-dehazeformer-ref-t.json
