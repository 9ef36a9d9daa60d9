"""``nystra-hub export``: a model as an ONNX graph or an OpenVINO IR folder, for a given input size.

    nystra-hub export --model swinir-x2 --weights 001_classicalSR_DF2K_s48w8_SwinIR-M_x2.pth --size 256 \\
        --format openvino --out swinir-x2-256-ov/
    nystra-hub export --model reference_models/swinir-ref-x2 --attn nystra --plan plan.json --size 128 --out ref/

The graph is the model's raw forward on the padded input (:mod:`nystra_hub.inference.export`): ``--size`` is the padded
input's height and width (one number for a square; SwinIR and Uformer pad an image to their window, so export the
size ``restore`` pads to, or let ``nystra-hub restore --backend openvino`` export each shape on first use).
``nystra_hub.inference.backends.make_runner(model, "openvino", exported=DIR)`` runs the folder; it refuses a
folder whose
``export.json`` does not describe the model it is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nystra_hub.cli.options import NYSTRA_SPEED_NOTE, add_loadable_model_arguments, parse_nystra
from nystra_hub.inference.export import DEFAULT_OPSET, FORMATS, ExportError, export
from nystra_hub.io.loading import load
from nystra_hub.io.plan import apply_plan, check_plan


def parse_size(text: str) -> tuple[int, int]:
    """``256`` or ``256x384`` (height x width) into (height, width)."""
    parts = text.lower().split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size takes N or HxW, got {text!r}") from None
    if len(size) not in (1, 2) or min(size) < 1:
        raise argparse.ArgumentTypeError(f"--size takes N or HxW with positive sides, got {text!r}")
    return (size[0], size[0]) if len(size) == 1 else size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_loadable_model_arguments(parser, attn_help="attention implementation of the graph: softmax, sdpa or "
                                                   "nystra (default: the model folder's, else softmax)")
    parser.add_argument("--plan", metavar="JSON", help="a per-layer plan (nystra-hub calibrate --out) to apply")
    parser.add_argument("--format", choices=FORMATS, default="onnx",
                        help="onnx (model.onnx, for ONNX Runtime) or openvino (IR model.xml/.bin) (default onnx)")
    parser.add_argument("--size", type=parse_size, required=True, metavar="N|HxW",
                        help="padded input height and width of the graph (static shape)")
    parser.add_argument("--batch", type=int, default=1, help="images per call of the graph (default 1)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (default %(default)s)")
    parser.add_argument("--out", required=True, metavar="DIR", help="the folder to write (must not exist)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")


def run(args: argparse.Namespace) -> int:
    try:
        model = load(args.model, weights=args.weights, attn_impl=args.attn, **parse_nystra(args.nystra)).eval()
        if args.plan:
            data = json.loads(Path(args.plan).read_text())
            apply_plan(model, check_plan(data.get("plan", data)))
        elif args.attn == "nystra":
            print(NYSTRA_SPEED_NOTE, file=sys.stderr)
        folder = export(model, args.out, args.format, size=args.size, batch=args.batch, opset=args.opset,
                        overwrite=args.overwrite, progress=lambda stage: print(f"nystra-hub export: {stage}",
                                                                               file=sys.stderr, flush=True))
    except (ExportError, ValueError, TypeError, KeyError, OSError, ImportError) as err:
        print(f"nystra-hub export: error: {err}", file=sys.stderr)
        return 2
    metadata = json.loads((folder / "export.json").read_text())
    print(f"wrote {folder}: {args.format}, input {metadata['input']['shape']}, attention "
          f"{metadata['model']['attn_impl']}, opset {metadata['opset']}")
    return 0
