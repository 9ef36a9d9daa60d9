"""Restore one image with a model created through timm.

    python examples/restore_timm.py --weights 001_classicalSR_DF2K_s64w8_SwinIR-M_x4.pth      # released file
    python examples/restore_timm.py --model swinir_s_x2 --weights 002_lightweightSR_DIV2K_s64w8_SwinIR-S_x2.pth
    python examples/restore_timm.py                                   # weights from the Hub (nystra/swinir-x4)
"""

import argparse

import numpy as np
import timm
from PIL import Image

import nystra_hub  # registers swinir_x4, uformer_b_sidd, dehazeformer_t_indoor, ... with timm

parser = argparse.ArgumentParser()
parser.add_argument("input", nargs="?", default="examples/images/butterfly_x2_lr.png")
parser.add_argument("output", nargs="?", default="restored.png")
parser.add_argument("--model", default="swinir_x4", help="timm name (timm.list_models('swinir*'))")
parser.add_argument("--weights", help="a released .pth or a model.safetensors (default: the Hub)")
parser.add_argument("--attn", default="nystra", choices=["softmax", "sdpa", "nystra"])
parser.add_argument("--tile", type=int, default=None, help="tile side (0: never tile; default: automatic)")
args = parser.parse_args()

overlay = dict(file=args.weights) if args.weights else None
model = timm.create_model(args.model, pretrained=True, attn_impl=args.attn, pretrained_cfg_overlay=overlay).eval()
image = np.asarray(Image.open(args.input).convert("RGB"))  # NumPy in, NumPy (same dtype and layout) out
restored = nystra_hub.restore(model, image, tile=args.tile)
Image.fromarray(restored).save(args.output)
print(f"{args.input} {image.shape} -> {args.output} {restored.shape} ({args.attn} attention)")
