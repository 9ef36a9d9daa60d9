"""``nystra-hub eval``: PSNR/SSIM of a model on your own (degraded, ground-truth) image folders, scored under the
official evaluation protocol of the model's task.

    nystra-hub eval --model reference_models/swinir-ref-x2 --lq Set5/LR_bicubic/X2 --gt Set5/HR
    nystra-hub eval --model swinir-x4 --weights 001_classicalSR_DF2K_s64w8_SwinIR-M_x4.pth --lq lr/ --gt hr/ \\
        --attn nystra --out report.json --csv report.csv

Pairs: every image of ``--lq`` is paired with the ``--gt`` image of the same name (extension aside). Without an
exact match, a trailing scale or degradation tag of the degraded name is ignored: ``babyx2.png``, ``baby_x2.png``,
``baby_lr.png``, ``baby_noisy.png`` all pair with ``baby.png``. Images without a partner are reported as failures.

Scoring (``--scoring`` overrides; :data:`nystra_hub.measure.metrics.PROTOCOLS`, the one metric implementation of
this package): a reference-model folder's own (its ``reference.json``), else the one of the catalogue variant's
task (:data:`TASK_PROTOCOLS`), else by architecture: ``swinir-sr`` for super-resolution (Y channel, 8-bit
rounding, border crop = scale, as SwinIR's ``main_test_swinir.py``), ``dehazeformer`` for DehazeFormer,
``rgb-uint8`` otherwise. Single-channel images are scored on their one channel (SwinIR's ``to_y_channel`` leaves
them as they are). The ground truth is cropped to the output's size, as the official scripts crop it.

The images run through :func:`nystra_hub.restore` with the official test protocol (``--protocol official``: each
architecture's padding; ``restore``'s default ``minimal`` differs for Uformer), in float32, whole, as the official
scripts run them; ``--tile N`` or ``--memory-budget-mb MB`` tile large images instead (then not exactly the
official protocol).

Report (``--out`` JSON, ``schema: "nystra_hub.eval/1"``; ``--csv`` one row per image and a mean row)::

    {schema, created, command, model: {source, weights, arch, variant, scale, attn_impl, nystra},
     scoring: {name, channel, quantisation, border_crop, ssim, source, chosen_because},
     settings: {lq, gt, protocol, device, dtype, tile, memory_budget_mb},
     images: [{lq, gt, output_shape, psnr (null: identical), ssim, seconds} | {lq, gt, error}],
     mean: {psnr, ssim, images}, failures}
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import re
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from nystra_hub.cli.options import DEVICE_HELP, add_loadable_model_arguments, parse_nystra, resolve_device
from nystra_hub.inference.precision import DTYPE_NAMES
from nystra_hub.inference.restore import PROTOCOLS as RESTORE_PROTOCOLS
from nystra_hub.inference.restore import restore
from nystra_hub.io.images import (
    IMAGE_EXTENSIONS,
    atomic_write_json,
    read_image,
    split_alpha,
    to_float_batch,
    write_image,
)
from nystra_hub.io.loading import load
from nystra_hub.io.variants import get_variant
from nystra_hub.measure.metrics import PROTOCOLS, Protocol, score
from nystra_hub.measure.references import is_reference_folder, reference_info
from nystra_hub.models.common import unwrap_model

SCHEMA = "nystra_hub.eval/1"

# The official protocol of each catalogue task (nystra_hub.io.variants.TASKS), with why.
TASK_PROTOCOLS: dict[str, tuple[str, str]] = {
    "classical-sr": ("swinir-sr", "SwinIR classical SR: Y channel, border = scale"),
    "lightweight-sr": ("swinir-sr", "SwinIR lightweight SR: Y channel, border = scale"),
    "real-sr": ("swinir-sr", "SwinIR real-SR has no ground-truth protocol; the SR one is used"),
    "denoise-gray": ("rgb-uint8", "SwinIR gray denoising: the gray channel, 8-bit, no border"),
    "denoise-color": ("rgb-uint8", "SwinIR color denoising: RGB, 8-bit, no border"),
    "jpeg-gray": ("rgb-uint8", "SwinIR JPEG artifact removal: 8-bit, no border (PSNR-B not computed)"),
    "jpeg-color": ("rgb-uint8", "SwinIR JPEG artifact removal: 8-bit, no border (PSNR-B not computed)"),
    "denoise-real": ("rgb-uint8", "Uformer's scripts score float RGB with skimage; the nearest protocol here"),
    "deblur": ("rgb-uint8", "Uformer's scripts score float RGB with skimage; the nearest protocol here"),
    "dehaze": ("dehazeformer", "DehazeFormer test.py"),
}
# degraded-image name tags that may follow the ground truth's name: babyx2, baby_x2, baby-lr, baby_noisy...
_LQ_TAG = re.compile(r"[_-]?(x\d+|lr|lq|noisy|hazy|blurry|blur|input)$", re.IGNORECASE)


@dataclass(frozen=True)
class Pair:
    lq: Path
    gt: Path | None  # None: no ground truth found


# -- pairs -----------------------------------------------------------------------------------------------------------
def image_files(folder: str | Path) -> list[Path]:
    """The image files directly in ``folder``, sorted (hidden files skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)


def pair_images(lq_dir: str | Path, gt_dir: str | Path) -> list[Pair]:
    """Each degraded image with its ground truth (see the module doc for the name rule)."""
    by_stem: dict[str, Path] = {}
    for path in image_files(gt_dir):
        if path.stem in by_stem:
            raise ValueError(f"{gt_dir}: two ground-truth images named {path.stem}: {by_stem[path.stem].name}, "
                             f"{path.name}")
        by_stem[path.stem] = path
    pairs = []
    for lq in image_files(lq_dir):
        gt = by_stem.get(lq.stem) or by_stem.get(_LQ_TAG.sub("", lq.stem))
        pairs.append(Pair(lq, gt))
    if not pairs:
        raise FileNotFoundError(f"no images in {lq_dir} (extensions {', '.join(IMAGE_EXTENSIONS)})")
    return pairs


# -- scoring protocol --------------------------------------------------------------------------------------------
def default_scoring(model, source: str | Path | None = None) -> tuple[Protocol, str]:
    """(metric protocol, why it was chosen) for ``model`` loaded from ``source``; see the module doc."""
    if source is not None and is_reference_folder(source):
        name = reference_info(source)["degradation"]["protocol"]
        return PROTOCOLS[name], f"the reference model's own (reference.json of {source})"
    net = unwrap_model(model)
    variant = net.provenance.variant
    if variant:
        task = get_variant(variant).task
        name, why = TASK_PROTOCOLS[task]
        return PROTOCOLS[name], f"catalogue variant {variant} ({task}): {why}"
    if net.scale > 1:
        return PROTOCOLS["swinir-sr"], f"a x{net.scale} super-resolution model: SwinIR's SR protocol"
    if net.spec.metric_protocol:
        return PROTOCOLS[net.spec.metric_protocol], f"a {net.spec.title} model: its own test script's protocol"
    return PROTOCOLS["rgb-uint8"], f"a x1 {net.arch} model: RGB (or gray), 8-bit, no border"


def protocol_for_channels(protocol: Protocol, channels: int) -> Protocol:
    """The Y protocols score a single-channel image on that channel, as SwinIR's ``to_y_channel`` does."""
    return dataclasses.replace(protocol, channel="rgb") if channels == 1 and protocol.channel == "y" else protocol


# -- scoring -----------------------------------------------------------------------------------------------------
def to_unit_tensor(image: np.ndarray) -> Tensor:
    """(H, W[, C]) uint8/uint16/float image → (C, H, W) float64 in [0, 1] (float64: the metrics' precision),
    alpha dropped; float images outside [0, 1] are refused or warned about as ``restore`` does them."""
    colour, _ = split_alpha(to_float_batch(image, dtype=torch.float64)[0])
    return colour[0]


def score_pair(output: np.ndarray, gt: np.ndarray, protocol: Protocol, scale: int) -> dict:
    """PSNR/SSIM of a restored image against its ground truth (cropped to the output, as the official scripts)."""
    out01, gt01 = to_unit_tensor(output), to_unit_tensor(gt)
    if out01.shape[0] != gt01.shape[0]:
        raise ValueError(f"the output has {out01.shape[0]} channel(s), the ground truth {gt01.shape[0]}")
    if gt01.shape[-2] < out01.shape[-2] or gt01.shape[-1] < out01.shape[-1]:
        raise ValueError(f"ground truth {tuple(gt01.shape[-2:])} is smaller than the output "
                         f"{tuple(out01.shape[-2:])} (wrong pair, or wrong scale)")
    return score(out01, gt01, protocol_for_channels(protocol, out01.shape[0]), scale=scale)


def evaluate(model, pairs: list[Pair], scoring: Protocol, *, protocol: str = "official", tile: int | None = 0,
             tile_overlap: int | None = None, memory_budget_mb: float | None = None, dtype: str = "float32",
             save_dir: str | Path | None = None, log=print) -> dict:
    """Restore every pair's degraded image with ``model`` (``protocol``: restore's padding) and score it under
    ``scoring``; returns ``{images, mean, failures}``."""
    scale = unwrap_model(model).scale
    rows = []
    for pair in pairs:
        row: dict = {"lq": str(pair.lq), "gt": str(pair.gt) if pair.gt else None}
        try:
            if pair.gt is None:
                raise FileNotFoundError(f"no ground truth named like {pair.lq.name}")
            start = time.perf_counter()
            output = restore(model, read_image(pair.lq), tile=tile, tile_overlap=tile_overlap,
                             memory_budget_mb=memory_budget_mb, alpha="drop", dtype=dtype, protocol=protocol)
            seconds = time.perf_counter() - start
            scores = score_pair(output, read_image(pair.gt), scoring, scale)
            if save_dir is not None:
                write_image(Path(save_dir) / f"{pair.lq.stem}.png", output)
            row.update(output_shape=list(output.shape), psnr=_finite(scores["psnr"]), ssim=scores["ssim"],
                       seconds=round(seconds, 3))
        except Exception as err:  # per image: report it and go on (unreadable, too small, out of memory...)
            row["error"] = f"{type(err).__name__}: {err}"
        rows.append(row)
        log(_row_line(row))
    scored = [r for r in rows if "error" not in r]
    psnrs = [math.inf if r["psnr"] is None else r["psnr"] for r in scored]
    mean = {"psnr": _finite(float(np.mean(psnrs))) if scored else None,
            "ssim": float(np.mean([r["ssim"] for r in scored])) if scored else None, "images": len(scored)}
    return {"images": rows, "mean": mean, "failures": len(rows) - len(scored)}


def _finite(value: float) -> float | None:
    """JSON has no infinity: identical images (infinite PSNR) are recorded as null."""
    return None if math.isinf(value) else value


def _fmt(value, spec: str) -> str:
    return "inf" if value is None else format(value, spec)


def _row_line(row: dict) -> str:
    name = Path(row["lq"]).name
    if "error" in row:
        return f"{name:<28} failed: {row['error']}"
    return f"{name:<28} {_fmt(row['psnr'], '10.4f')} {row['ssim']:8.4f} {row['seconds']:8.2f}"


# -- reports -----------------------------------------------------------------------------------------------------
def write_csv(path: str | Path, result: dict) -> Path:
    """One row per image (lq, gt, psnr, ssim, seconds, error) and a last row with the means."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = ["lq", "gt", "psnr", "ssim", "seconds", "error"]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in result["images"]:
            writer.writerow({**row, "psnr": "inf" if "error" not in row and row["psnr"] is None else row.get("psnr")})
        mean = result["mean"]
        writer.writerow({"lq": f"mean of {mean['images']} images", "psnr": mean["psnr"], "ssim": mean["ssim"]})
    return path


def summary(report: dict) -> str:
    """The table printed at the end: means, scoring, model, failures."""
    mean, proto, model = report["mean"], report["scoring"], report["model"]
    lines = [f"{'':<28} {'PSNR (dB)':>10} {'SSIM':>8}",
             f"{'mean of ' + str(mean['images']) + ' images':<28} {_fmt(mean['psnr'], '10.4f')} "
             f"{_fmt(mean['ssim'], '8.4f')}",
             f"model {model['source']} ({model['arch']} x{model['scale']}, attention {model['attn_impl']})",
             f"scoring {proto['name']}: {proto['channel']}, {proto['quantisation']}, border {proto['border_crop']} "
             f"[{proto['chosen_because']}]; {report['settings']['protocol']} test protocol"]
    if report["failures"]:
        lines.append(f"{report['failures']} image(s) failed: " + "; ".join(
            f"{Path(r['lq']).name}: {r['error']}" for r in report["images"] if "error" in r))
    return "\n".join(lines)


# -- command line ------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("example: nystra-hub eval --model reference_models/swinir-ref-x2 --lq Set5/LR_bicubic/X2 "
                     "--gt Set5/HR --out report.json --csv report.csv")
    data = parser.add_argument_group("images")
    data.add_argument("--lq", required=True, metavar="DIR", help="folder of degraded (model input) images")
    data.add_argument("--gt", required=True, metavar="DIR",
                      help="folder of ground-truth images, named like the degraded ones (babyx2.png ↔ baby.png)")
    model = parser.add_argument_group("model")
    add_loadable_model_arguments(model, attn_help="attention implementation: softmax, sdpa or nystra (default: "
                                                  "the model folder's, else softmax)")
    model.add_argument("--device", default="auto", help=DEVICE_HELP)
    model.add_argument("--dtype", choices=DTYPE_NAMES, default="float32",
                       help="compute precision (default float32, as the official test scripts)")
    scoring = parser.add_argument_group("scoring")
    scoring.add_argument("--scoring", choices=sorted(PROTOCOLS), default=None,
                         help="metric protocol: swinir-sr (Y channel, 8-bit, border = scale), rgb-uint8 (RGB or "
                              "gray, 8-bit, no border), dehazeformer (float RGB). Default: the model's own task's "
                              "(a reference model's reference.json, a catalogue variant's task; else swinir-sr for "
                              "super-resolution, dehazeformer for DehazeFormer, rgb-uint8 otherwise)")
    scoring.add_argument("--protocol", choices=RESTORE_PROTOCOLS, default="official",
                         help="the test protocol's padding, as in nystra-hub restore (default: official, each "
                              "architecture's test script)")
    scoring.add_argument("--tile", type=int, default=0,
                         help="tile side in input pixels (default 0: whole images, the official protocol)")
    scoring.add_argument("--tile-overlap", type=int, default=None, help="tile overlap in input pixels")
    scoring.add_argument("--memory-budget-mb", type=float, default=None,
                         help="tile automatically to fit this activation-memory budget of one forward (MB) "
                              "instead of running whole images")
    output = parser.add_argument_group("output")
    output.add_argument("--out", metavar="FILE", help="JSON report (per image and mean scores, protocol, model)")
    output.add_argument("--csv", metavar="FILE", help="CSV report: one row per image and a mean row")
    output.add_argument("--save-images", metavar="DIR", help="also write the restored images here (PNG)")


def run(args: argparse.Namespace) -> int:
    try:
        pairs = pair_images(args.lq, args.gt)
        device = resolve_device(args.device)
        nystra = parse_nystra(args.nystra)
        model = load(args.model, weights=args.weights, attn_impl=args.attn, **nystra).to(device).eval()
    except (ValueError, TypeError, KeyError, OSError) as err:
        print(f"nystra-hub eval: error: {err}", file=sys.stderr)
        return 2
    scoring, why = (PROTOCOLS[args.scoring], "--scoring") if args.scoring else default_scoring(model, args.model)
    print(f"{len(pairs)} image(s); scored under {scoring.name} ({why})")
    print(f"{'image':<28} {'PSNR (dB)':>10} {'SSIM':>8} {'seconds':>8}")
    tile = None if args.memory_budget_mb is not None and args.tile == 0 else args.tile  # None: automatic
    result = evaluate(model, pairs, scoring, protocol=args.protocol, tile=tile, tile_overlap=args.tile_overlap,
                      memory_budget_mb=args.memory_budget_mb, dtype=args.dtype, save_dir=args.save_images)
    report = {**_report_header(args, model, nystra, scoring, why, device, tile), **result}
    if args.out:
        atomic_write_json(args.out, report)
    if args.csv:
        write_csv(args.csv, result)
    print(summary(report))
    for path in (args.out, args.csv):
        if path:
            print(f"wrote {path}")
    return 1 if result["failures"] else 0


def _report_header(args, model, nystra: dict, scoring: Protocol, why: str, device, tile) -> dict:
    """What the report records besides the scores: command, model, scoring protocol, settings."""
    net = unwrap_model(model)
    return {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": shlex.join(["nystra-hub", *sys.argv[1:]]) if sys.argv[1:2] == ["eval"] else None,
        "model": {"source": str(args.model), "weights": args.weights, "arch": net.arch,
                  "variant": net.provenance.variant, "scale": net.scale, "attn_impl": net.attn_impl,
                  "nystra": nystra or None},
        "scoring": {**scoring.describe(net.scale), "chosen_because": why},
        "settings": {"lq": str(args.lq), "gt": str(args.gt), "protocol": args.protocol, "device": str(device),
                     "dtype": args.dtype, "tile": "automatic" if tile is None else tile,
                     "memory_budget_mb": args.memory_budget_mb},
    }
