#!/usr/bin/env bash
# Render model_cards/ from the measurement JSON in benchmarks/ (no measuring happens here; see benchmarks/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
B=benchmarks
GPU=$B/gpu/gpu-bench-h200.json
cards() { nystra-hub cards "$@" --out-dir model_cards; }
existing() { for f in "$@"; do [ -f "$f" ] && echo "$f"; done; }
cards swinir-x2 --bench $(existing $B/timing-swinir-x2-128-cpu.json $B/bench-swinir-x2-cpu.json $B/bench-swinir-x2-512-cpu.json \
        $B/bench-swinir-x2-enlarged-cpu.json $B/bench-swinir-x2-routes-cpu.json) \
    --fidelity $(existing $B/fidelity-swinir-ref-x2.json) --gpu $GPU
cards swinir-x4 --bench $B/bench-swinir-x4-cpu.json --fidelity $(existing $B/fidelity-swinir-ref-x2.json)
cards uformer-b-sidd --bench $(existing $B/bench-uformer-b-sidd-cpu.json $B/bench-uformer-b-sidd-512-cpu.json \
        $B/bench-uformer-b-sidd-routes-cpu.json) \
    --fidelity $(existing $B/fidelity-uformer-ref-denoise25.json $B/fidelity-uformer-ref-denoise25-calibrated.json) --gpu $GPU
cards dehazeformer-b-indoor --bench $(existing $B/bench-dehazeformer-b-indoor-cpu.json $B/bench-dehazeformer-b-indoor-512-cpu.json \
        $B/bench-dehazeformer-b-indoor-routes-cpu.json) \
    --fidelity $(existing $B/fidelity-dehazeformer-ref-t.json) --gpu $GPU
