"""Uformer padding: the official protocol against the minimal one, on crops whose sizes are not multiples of 128.

    .venv/bin/python benchmarks/uformer_padding.py --threads 2 --out benchmarks/uformer-padding-ref-denoise25-cpu.json

Arms, each the whole image in one forward (float32): ``official`` (zeros around the image, centred, to a square
multiple of 128: ``expand2square`` of the official test scripts), ``minimal-reflect`` (the default of
``nystra_hub.inference.restore``: the smallest square the forward runs, the image's borders mirrored outwards) and
``minimal-replicate`` (the same square, border pixels repeated). Per crop: PSNR against the clean image under the
colour-denoising protocol (8-bit RGB, no border), the noisy input's PSNR (a restoration below it is worse than
doing nothing), the side of the square the network ran and the forward's wall time. Inputs: centre crops of
``CROP_SIZES`` and the whole image, σ=25 Gaussian noise drawn as in ``nystra_hub.measure.data`` (numpy seed 0,
not clipped). Kodak24 and CBSD68 are the reference model's training images (random 128-px crops); Set5 and Set14
are held out. Also: how far tiled outputs (tile 256, overlap 64) are from whole-image ones under each protocol.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from nystra_hub import load
from nystra_hub.inference.restore import restore_tensor
from nystra_hub.io.images import atomic_write_json
from nystra_hub.measure.data import gaussian_noise_input, list_images, load_rgb, to_tensor
from nystra_hub.measure.environment import environment
from nystra_hub.measure.metrics import score

SIGMA = 25.0
CROP_SIZES = [(24, 24), (40, 56), (100, 75), (150, 200), (260, 300)]  # (height, width); plus the whole image
ARMS = ("official", "minimal-reflect", "minimal-replicate")
SETS = {"Kodak24": "training", "CBSD68": "training", "Set5": "held-out", "Set14": "held-out"}


def run_arm(model, x: torch.Tensor, arm: str) -> tuple[torch.Tensor, int, float]:
    """(restored [0, 1] batch, side of the square the network ran, seconds) for one arm."""
    start = time.perf_counter()
    with torch.inference_mode():
        if arm == "official":
            out, side = model.official_inference(x), model.official_size(*x.shape[-2:])[0]
        else:
            padded, (top, left) = model.minimal_pad(x, mode=arm.split("-")[1])
            h, w = x.shape[-2:]
            out, side = model(padded)[..., top:top + h, left:left + w].clamp(0, 1), padded.shape[-1]
    return out, side, time.perf_counter() - start


def centre_crop(image: np.ndarray, size: tuple[int, int] | None) -> np.ndarray | None:
    if size is None:
        return image
    h, w = size
    if h > image.shape[0] or w > image.shape[1]:
        return None
    top, left = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
    return image[top:top + h, left:left + w]


def measure_image(model, name: str) -> list[dict]:
    """One row per crop size of one image: every arm's PSNR, side and time."""
    rows = []
    clean_full = load_rgb(name)
    for size in [*CROP_SIZES, None]:
        clean = centre_crop(clean_full, size)
        if clean is None:
            continue
        x = to_tensor(gaussian_noise_input(clean, SIGMA))[None]
        gt = to_tensor(clean)
        row = {"image": name, "size": list(clean.shape[:2]), "crop": "whole" if size is None else "centre",
               "input_psnr": score(x[0].clamp(0, 1), gt, "rgb-uint8")["psnr"]}
        for arm in ARMS:
            out, side, seconds = run_arm(model, x, arm)
            row[arm] = {"psnr": score(out[0], gt, "rgb-uint8")["psnr"], "side": side, "seconds": round(seconds, 4)}
        rows.append(row)
    return rows


def summarise(rows: list[dict]) -> dict:
    """Per set and crop size: mean PSNR and total time of each arm."""
    summary: dict = {}
    for row in rows:
        key = f"{row['size'][0]}x{row['size'][1]}" if row["crop"] == "centre" else "whole"
        entry = summary.setdefault(row["image"].split("/")[0], {}).setdefault(key, {"images": 0, "input_psnr": []})
        entry["images"] += 1
        entry["input_psnr"].append(row["input_psnr"])
        for arm in ARMS:
            arm_entry = entry.setdefault(arm, {"psnr": [], "seconds": 0.0, "pixels_run": 0})
            arm_entry["psnr"].append(row[arm]["psnr"])
            arm_entry["seconds"] += row[arm]["seconds"]
            arm_entry["pixels_run"] += row[arm]["side"] ** 2
    for sizes in summary.values():
        for entry in sizes.values():
            entry["input_psnr"] = round(float(np.mean(entry["input_psnr"])), 3)
            for arm in ARMS:
                entry[arm]["psnr"] = round(float(np.mean(entry[arm]["psnr"])), 3)
                entry[arm]["seconds"] = round(entry[arm]["seconds"], 3)
    return summary


def tiled_vs_whole(model, names: list[str]) -> list[dict]:
    """Largest and mean |tiled − whole| (in 8-bit steps) per protocol: tile 256, overlap 64."""
    rows = []
    for name in names:
        x = to_tensor(gaussian_noise_input(load_rgb(name), SIGMA))[None]
        row = {"image": name, "size": list(x.shape[-2:])}
        for protocol in ("official", "minimal"):
            whole = restore_tensor(model, x, tile=0, protocol=protocol)
            tiled = restore_tensor(model, x, tile=256, tile_overlap=64, protocol=protocol)
            diff = (tiled - whole).abs() * 255
            row[protocol] = {"max_255": round(float(diff.max()), 3), "mean_255": round(float(diff.mean()), 4)}
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="reference_models/uformer-ref-denoise25")
    parser.add_argument("--per-set", type=int, default=12, help="images per test set (the first N, sorted)")
    parser.add_argument("--tiled-images", type=int, default=4, help="Kodak24 images for the tiled-vs-whole check")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/uformer-padding-ref-denoise25-cpu.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load(args.model).eval()
    rows = []
    for set_name in SETS:
        for name in list_images(set_name)[:args.per_set]:
            rows.extend(measure_image(model, name))
            print(f"{name}: " + ", ".join(f"{r['size'][0]}x{r['size'][1]} " + "/".join(
                f"{r[a]['psnr']:.2f}" for a in ARMS) for r in rows if r["image"] == name), flush=True)
    report = {
        "schema": "nystra_hub.uformer_padding/1", "command": "python benchmarks/uformer_padding.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "model": args.model, "noise": f"gaussian sigma={SIGMA:g}/255, numpy seed 0, not clipped",
        "metric": "PSNR, 8-bit RGB, no border (rgb-uint8)", "arms": list(ARMS), "sets": SETS,
        "environment": environment(torch.device("cpu")),
        "summary": summarise(rows),
        "tiled_vs_whole": tiled_vs_whole(model, list_images("Kodak24")[:args.tiled_images]),
        "per_crop": rows,
    }
    atomic_write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
