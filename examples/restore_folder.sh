#!/usr/bin/env bash
# Restore a folder from the command line (run from the repository root; nystra-hub on PATH, e.g. .venv/bin).
#   bash examples/restore_folder.sh [MODEL [INPUT_DIR [OUT_DIR [single|cpu2|gpus]]]]
#   bash examples/restore_folder.sh                      # the shipped reference model on examples/images
# MODEL: a hub folder (default reference_models/swinir-ref-x2), a repo id, a released .pth, or
#        "VARIANT --weights RELEASED.pth" (left unquoted on purpose so that this form splits into arguments).
# Outputs keep their relative paths (PNG; 16-bit in -> 16-bit out); existing ones are skipped (--overwrite).
set -euo pipefail
MODEL=${1:-reference_models/swinir-ref-x2}
IN=${2:-examples/images}
OUT=${3:-restored}
MODE=${4:-single}

gpu_count() {  # 0 without nvidia-smi or without a GPU
    { nvidia-smi -L 2>/dev/null || true; } | grep -c '^GPU' || true
}

if [ "$MODE" = gpus ]; then
    GPUS=$(gpu_count)
    if [ "$GPUS" -lt 2 ]; then  # accelerate's --multi_gpu needs two processes or more
        echo "restore_folder.sh: $GPUS GPU(s) found; running one process (mode single) instead of one per GPU" >&2
        MODE=single
    fi
fi

case $MODE in
single)  # one process, CUDA when available
    nystra-hub restore --model $MODEL --attn nystra "$IN" --out "$OUT" -r ;;
cpu2)    # two CPU processes (gloo): the sorted input list is split, each image done once, one summary.
         # Not 'accelerate launch --cpu --num_processes 2': that starts ONE process.
    torchrun --standalone --nproc_per_node 2 -m nystra_hub.cli restore --model $MODEL --attn nystra \
        --device cpu "$IN" --out "$OUT" -r ;;
         # equivalently: accelerate launch --multi_gpu --num_processes 2 -m nystra_hub.cli restore ... --device cpu
gpus)    # one process per GPU (two or more GPUs)
    accelerate launch --multi_gpu --num_processes "$GPUS" -m nystra_hub.cli restore \
        --model $MODEL --attn nystra "$IN" --out "$OUT" -r ;;
*)  echo "mode must be single, cpu2 or gpus" >&2; exit 2 ;;
esac
