"""Restore one image with a model loaded through transformers' AutoModel.

    python examples/restore_transformers.py                                  # nystra/swinir-x4 from the Hub
    python examples/restore_transformers.py --model ./swinir-x4 --attn softmax in.png out.png   # a local hub folder
"""

import argparse

from PIL import Image
from transformers import AutoModel

import nystra_hub  # registers the nystra model types with transformers

parser = argparse.ArgumentParser()
parser.add_argument("input", nargs="?", default="examples/images/butterfly_x2_lr.png")
parser.add_argument("output", nargs="?", default="restored.png")
parser.add_argument("--model", default="nystra/swinir-x4", help="hub repo id or local hub folder")
parser.add_argument("--attn", default="nystra", choices=["softmax", "sdpa", "nystra"])
args = parser.parse_args()

model = AutoModel.from_pretrained(args.model, attn_impl=args.attn).eval()
image = Image.open(args.input)
# the official pre/post-processing (padding, range, crop, clamp); tiles automatically when the image is large
restored = nystra_hub.restore(model, image)
restored.save(args.output)
print(f"{args.input} {image.size} -> {args.output} {restored.size} ({args.attn} attention)")
