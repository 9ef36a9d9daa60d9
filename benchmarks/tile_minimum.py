"""The smallest tile that reproduces the whole-image result within 1/255, per golden model (issue 22).

For each golden SwinIR and Uformer case (small models whose weights were perturbed so that attention and the
position bias visibly matter), restore a 300×200 crop of a Set14 image whole and in tiles of growing size with
the default overlap, and record the largest difference in 8-bit levels. DehazeFormer is never tiled (its RLN
layers normalise with whole-image statistics), so it has no row.

    python benchmarks/tile_minimum.py benchmarks/tile-minimum-golden.json
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import nystra_hub
from nystra_hub.inference.restore import plan_tiles

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO.parent / "shared" / "golden"
IMAGE = REPO.parent / "shared" / "testsets" / "Set14" / "img_005.png"
HEIGHT, WIDTH = 200, 300


def golden_model(case: str):
    info = json.loads((GOLDEN / case / "case.json").read_text())
    model = nystra_hub.build_model(info["arch"], **info["official_constructor_kwargs"])
    nystra_hub.load_original_checkpoint(model, GOLDEN / case / "checkpoint.pth")
    if model.spec.tile_overlap is not None:  # measure below the declared minimum too
        model.spec = dataclasses.replace(model.spec, min_tile_multiples=None)
    return model.eval()


def test_image(channels: int) -> torch.Tensor:
    image = Image.open(IMAGE).convert("RGB" if channels == 3 else "L")
    array = np.asarray(image, dtype=np.float32)[:HEIGHT, :WIDTH] / 255
    array = array[..., None] if array.ndim == 2 else array
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


def levels_off(model, x: torch.Tensor, tile: int) -> tuple[float, int, int]:
    """(largest |tiled - whole| in 8-bit levels, tiles, overlap) at ``tile`` with the default overlap."""
    plan = plan_tiles(model, HEIGHT, WIDTH, tile=tile)
    with torch.no_grad():
        whole = nystra_hub.restore(model, x, tile=0)
        tiled = nystra_hub.restore(model, x, tile=tile)
    return float((tiled - whole).abs().max()) * 255, plan.tiles, plan.overlap


def main(out: str) -> None:
    torch.set_num_threads(2)
    rows = []
    for case in sorted(p.parent.name for p in GOLDEN.glob("*/case.json")):
        model = golden_model(case)
        if model.spec.tile_overlap is None:
            continue
        unit = model.official_multiple
        x = test_image(model.in_channels)
        for tile in sorted({unit * k for k in range(1, 17) if unit * k <= 256}):
            off, tiles, overlap = levels_off(model, x, tile)
            rows.append(dict(case=case, arch=model.arch, unit=unit, tile=tile, overlap=overlap, tiles=tiles,
                             max_levels=round(off, 4)))
            print(f"{case:28s} tile {tile:4d} overlap {overlap:3d} tiles {tiles:4d}: {off:8.3f} levels", flush=True)
            if tiles == 1:
                break
    Path(out).write_text(json.dumps({"image": f"{IMAGE.parent.name}/{IMAGE.name}", "crop": [HEIGHT, WIDTH],
                                     "torch": torch.__version__, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
