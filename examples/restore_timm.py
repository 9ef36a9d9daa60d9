"""Restore one image with a model created through timm.

    python examples/restore_timm.py                                   # the shipped reference model, offline
    python examples/restore_timm.py --model swinir_x4 --weights 001_classicalSR_DF2K_s64w8_SwinIR-M_x4.pth
    python examples/restore_timm.py --model swinir_s_x2 --weights 002_lightweightSR_DIV2K_s64w8_SwinIR-S_x2.pth

``--model`` is a timm name: ``local-dir:FOLDER`` or ``hf-hub:ORG/NAME`` for a hub folder, or a catalogue name
(``timm.list_models("swinir*")``) with ``--weights`` a released ``.pth`` or a ``model.safetensors``. Always pass
``pretrained=True``: without it timm builds the model with random weights.
"""

import argparse

import numpy as np
import timm
from PIL import Image

import nystra_hub  # registers swinir_x4, uformer_b_sidd, dehazeformer_t_indoor, ... with timm

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("input", nargs="?", default="examples/images/butterfly_x2_lr.png", help="image to restore")
parser.add_argument("output", nargs="?", default="restored.png", help="where to write the result")
parser.add_argument("--model", default="local-dir:reference_models/swinir-ref-x2",
                    help="timm name: local-dir:FOLDER, hf-hub:ORG/NAME, or a catalogue name with --weights")
parser.add_argument("--weights", help="a released .pth or a model.safetensors for a catalogue --model")
parser.add_argument("--attn", default="nystra", choices=["softmax", "sdpa", "nystra"], help="attention")
parser.add_argument("--tile", type=int, default=None, help="tile side (0: never tile; default: automatic)")
args = parser.parse_args()

overlay = dict(file=args.weights) if args.weights else None
model = timm.create_model(args.model, pretrained=True, attn_impl=args.attn, pretrained_cfg_overlay=overlay).eval()
image = np.asarray(Image.open(args.input).convert("RGB"))  # NumPy in, NumPy (same dtype and layout) out
restored = nystra_hub.restore(model, image, tile=args.tile)
Image.fromarray(restored).save(args.output)
print(f"{args.input} {image.shape} -> {args.output} {restored.shape} ({args.attn} attention)")
