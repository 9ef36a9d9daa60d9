"""``nystra-hub fidelity``: how close each attention arm stays to the exact model, and to the ground truth.

The scoring, the arms and the JSON are described in :mod:`nystra_hub.measure.fidelity`; this module turns the
options into :class:`~nystra_hub.measure.fidelity.FidelitySettings`, writes one report and plot per model, and
prints a summary.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from nystra_hub.cli.reports import default_output
from nystra_hub.io.images import atomic_write_json
from nystra_hub.io.plots import plot_fidelity
from nystra_hub.measure.environment import argv_after
from nystra_hub.measure.fidelity import (
    DEFAULT_LANDMARKS,
    DEFAULT_LANDMARKS_ENLARGED,
    FidelitySettings,
    format_number,
    run_fidelity,
)


def _spelled(values: tuple[int, ...]) -> str:
    return " ".join(map(str, values))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append",
                        help="reference-model folder, e.g. reference_models/swinir-ref-x2 (repeatable); or a "
                             "SR/color-denoise variant with --checkpoint")
    parser.add_argument("--checkpoint", help="released checkpoint for a variant --model")
    parser.add_argument("--arms", nargs="+", default=None,
                        help="arm names or letters (see nystra-hub bench --list-arms); default: a b c c' d e e' "
                             "f, the three other nystra bias/mask combinations, nystromformer and performer at "
                             "both windows")
    parser.add_argument("--landmarks", type=int, nargs="*", default=list(DEFAULT_LANDMARKS),
                        help=f"landmarks sweep at the trained window (default {_spelled(DEFAULT_LANDMARKS)})")
    parser.add_argument("--landmarks-enlarged", type=int, nargs="*", default=list(DEFAULT_LANDMARKS_ENLARGED),
                        help="landmarks sweep at the recipe's enlarged window, paper form (default "
                             f"{_spelled(DEFAULT_LANDMARKS_ENLARGED)})")
    parser.add_argument("--plan", nargs="+", metavar="JSON",
                        help="extra arms running per-layer plans (nystra-hub calibrate --out files)")
    parser.add_argument("--images", type=int, default=None, metavar="N",
                        help="only the first N held-out images (default: all of the reference model's, e.g. 19; "
                             "a count, unlike calibrate's --images, which names images)")
    parser.add_argument("--diag-images", type=int, default=1,
                        help="images for the per-layer diagnostic (0: off); default 1")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for building the model (its weights where none are loaded; default 0)")
    parser.add_argument("--testsets", default=None,
                        help="folder of the standard test sets (Set5, Set14, Kodak24...); default: "
                             "$NYSTRA_HUB_TESTSETS, else ../shared/testsets next to a repository checkout")
    parser.add_argument("--out", help="JSON output (one --model only; default: benchmarks/fidelity-<name>.json in a "
                                      "repository checkout, else fidelity-<name>.json in the current folder)")
    parser.add_argument("--plot", help="PNG output (default: the JSON path with .png)")
    parser.add_argument("--plot-only", nargs="+", metavar="JSON", help="redraw the plot from fidelity JSON files")


def settings_from(args: argparse.Namespace) -> FidelitySettings:
    """The scoring settings from the parsed options; ``args.argv`` (else this process's command line after
    ``fidelity``) is recorded as the command."""
    argv = getattr(args, "argv", None) or argv_after("fidelity")
    return FidelitySettings(
        checkpoint=args.checkpoint, arms=args.arms, plans=args.plan or [], landmarks=args.landmarks,
        landmarks_enlarged=args.landmarks_enlarged, images=args.images, diag_images=args.diag_images, seed=args.seed,
        testsets=args.testsets, command=" ".join(["nystra-hub", "fidelity", *argv]))


def run(args: argparse.Namespace) -> int:
    if args.plot_only:
        reports = [json.loads(Path(p).read_text()) for p in args.plot_only]
        print(f"wrote {plot_fidelity(reports, args.plot or Path(args.plot_only[0]).with_suffix('.png'))}")
        return 0
    if not args.model:
        raise SystemExit("fidelity: --model is required")
    if args.out and len(args.model) > 1:
        raise SystemExit("fidelity: --out needs a single --model")
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = settings_from(args)
    for spec in args.model:
        report = run_fidelity(spec, settings, log=lambda m: print(m, flush=True))
        name = report["model"]["name"]
        out = Path(args.out) if args.out else default_output(f"fidelity-{name}")
        atomic_write_json(out, report, indent=1)
        plot = plot_fidelity([report], args.plot or out.with_suffix(".png"))
        print(f"wrote {out} and {plot}")
        print_summary(report)
    return 0


def print_summary(report: dict) -> None:
    """The input baseline, then per arm: PSNR/SSIM against the exact model and the ground truth, layer error."""
    base = report["input_baseline"]
    print(f"\n{report['model']['name']} ({report['protocol']['name']}, {len(report['images'])} images); "
          f"{base['description']}: {format_number(base['psnr_gt'])} dB")
    print(f"{'arm':<30}{'PSNR vs exact':>14}{'SSIM vs exact':>14}{'PSNR GT':>9}{'dPSNR':>8}{'layer err':>11}")
    for name, entry in report["arms"].items():
        if entry.get("error"):
            print(f"{name:<30}  error: {entry['error'][:70]}")
            continue
        diag = entry.get("layer_diagnostic", {}).get("rel_error_mean")
        vs_exact = "identical" if entry.get("identical_images") == len(entry["per_image"]) else format_number(
            entry["psnr_vs_exact"])
        print(f"{name:<30}{vs_exact:>14}{format_number(entry['ssim_vs_exact'], '.4f'):>14}"
              f"{format_number(entry['psnr_gt']):>9}{format_number(entry.get('delta_psnr_gt'), '+.2f'):>8}"
              f"{format_number(diag, '.2e'):>11}")
