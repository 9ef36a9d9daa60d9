"""``nystra-hub calibrate``: choose per-layer attention settings of a reference model under a quality budget
(:func:`nystra_hub.measure.calibration.calibrate`), write the plan and its report as JSON, and optionally the
calibrated model as a hub folder."""

from __future__ import annotations

import argparse

import torch
from torch import nn

from nystra_hub.attention import WINDOW_RESIZE_METHODS
from nystra_hub.io.hub import save_hub_folder
from nystra_hub.io.images import atomic_write_json
from nystra_hub.io.loading import load
from nystra_hub.measure.calibration import calibrate, calibration_pairs
from nystra_hub.measure.data import Task, testsets_root
from nystra_hub.measure.references import is_reference_folder, load_reference, recipe_task


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="a reference model folder (reference_models/...), a hub folder or repo id")
    parser.add_argument("--images", nargs="+", required=True,
                        help="calibration images relative to the testsets root (e.g. Kodak24/kodim01.png); "
                             "inputs and ground truth are made with the reference model's degradation")
    parser.add_argument("--testsets", help="testsets root (default ../shared/testsets)")
    parser.add_argument("--budget-db", type=float, default=0.1, help="largest PSNR drop accepted (default 0.1)")
    parser.add_argument("--crop", type=int, default=0, help="centre-crop the clean images to this size first")
    parser.add_argument("--timing-size", type=int, default=0,
                        help="input side to optimise speed for (default: the first calibration input)")
    parser.add_argument("--windows", type=int, nargs="*", default=[],
                        help="other windows to try per layer, e.g. 16 32 (default: the trained windows only)")
    parser.add_argument("--window-resize", default="bicubic", choices=WINDOW_RESIZE_METHODS,
                        help="how position bias tables follow a changed window (default bicubic)")
    parser.add_argument("--runs", type=int, default=3, help="timing runs per candidate (median)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    parser.add_argument("--out", required=True, help="JSON file for the plan and the report")
    parser.add_argument("--save-hub", help="also write the calibrated model as a hub folder here")


def load_with_task(spec: str) -> tuple[nn.Module, Task | None]:
    """(model, the degradation it was trained for) of a reference folder; (model, None) of anything else."""
    if is_reference_folder(spec):
        model, info = load_reference(spec)
        return model, recipe_task(info)
    return load(spec), None


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    model, task = load_with_task(args.model)
    if task is None:
        raise SystemExit("calibrate --model must be a reference model folder (it knows its degradation)")
    inputs, targets = calibration_pairs(task, args.images, testsets_root(args.testsets), crop=args.crop)
    timing = None
    if args.timing_size:
        timing = torch.rand(1, inputs[0].shape[1], args.timing_size, args.timing_size,
                            generator=torch.Generator().manual_seed(0))
    result = calibrate(model, inputs, args.budget_db, targets=targets, timing_image=timing, timing_runs=args.runs,
                       windows=args.windows, window_resize=args.window_resize, log=print)
    result["model"] = args.model
    result["images"] = args.images
    result["threads"] = torch.get_num_threads()
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}: {result['report']['nystra_layers']}/{result['report']['layers']} layers nystra, "
          f"measured drop {result['report']['measured_drop_db']:.4f} dB")
    if args.save_hub:
        if result["plan"].get("windows"):  # the folder holds the trained weights and the plan re-applies them
            model, _ = load_with_task(args.model)
        save_hub_folder(model, args.save_hub, plan=result["plan"])
        print(f"wrote {args.save_hub}")
    return 0
