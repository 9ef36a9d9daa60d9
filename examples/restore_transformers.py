"""Restore one image with a model loaded through transformers: AutoModel + AutoImageProcessor.

    python examples/restore_transformers.py                                # the shipped reference model, offline
    python examples/restore_transformers.py --model ./swinir-x4 --attn softmax in.png out.png   # your hub folder

transformers 5 has no image-to-image pipeline: the image processor does the official pre-processing (range,
padding), the model the forward, ``processor.postprocess`` the official crop, clamp and 8-bit rounding.
``nystra_hub.restore(model, image)`` does the same in one call and tiles large images.
A hub folder comes from ``nystra-hub convert RELEASED.pth --out DIR`` (the ``nystra/*`` Hub repos are not published).
"""

import argparse

import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel

import nystra_hub  # noqa: F401 - registers the nystra model types with transformers

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("input", nargs="?", default="examples/images/butterfly_x2_lr.png", help="image to restore")
parser.add_argument("output", nargs="?", default="restored.png", help="where to write the result")
parser.add_argument("--model", default="reference_models/swinir-ref-x2", help="hub folder or Hugging Face repo id")
parser.add_argument("--attn", default="nystra", choices=["softmax", "sdpa", "nystra"], help="attention")
args = parser.parse_args()

model = AutoModel.from_pretrained(args.model, attn_impl=args.attn).eval()
processor = AutoImageProcessor.from_pretrained(args.model)
image = Image.open(args.input)
inputs = processor(image, return_tensors="pt")
with torch.no_grad():
    outputs = model(**inputs)  # outputs.reconstruction
restored = processor.postprocess(outputs, [image])[0]
restored.save(args.output)
print(f"{args.input} {image.size} -> {args.output} {restored.size} ({args.attn} attention)")
