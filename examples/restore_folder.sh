#!/usr/bin/env bash
# Restore a folder from the command line.
#   bash examples/restore_folder.sh MODEL INPUT_DIR OUT_DIR [single|cpu2|gpus]
# MODEL: a hub folder or repo id (nystra/swinir-x4), or "VARIANT --weights RELEASED.pth".
# Outputs keep their relative paths (PNG; 16-bit in -> 16-bit out); existing ones are skipped (--overwrite).
set -euo pipefail
MODEL=${1:-nystra/swinir-x4}
IN=${2:-examples/images}
OUT=${3:-restored}
MODE=${4:-single}

case $MODE in
single)  # one process, CUDA when available
    nystra-hub restore --model $MODEL --attn nystra "$IN" --out "$OUT" -r ;;
cpu2)    # two CPU processes (gloo): the sorted input list is split, each image done once, one summary.
         # Not 'accelerate launch --cpu --num_processes 2': that starts ONE process.
    torchrun --standalone --nproc_per_node 2 -m nystra_hub.cli restore --model $MODEL --attn nystra \
        --device cpu "$IN" --out "$OUT" -r ;;
         # equivalently: accelerate launch --multi_gpu --num_processes 2 -m nystra_hub.cli restore ... --device cpu
gpus)    # one process per GPU
    accelerate launch --multi_gpu --num_processes "$(nvidia-smi -L | wc -l)" -m nystra_hub.cli restore \
        --model $MODEL --attn nystra "$IN" --out "$OUT" -r ;;
*)  echo "mode must be single, cpu2 or gpus" >&2; exit 2 ;;
esac
