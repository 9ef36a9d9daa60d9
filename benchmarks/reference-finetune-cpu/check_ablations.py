"""Ablations of a training state on the first N held-out images (default 5: Set5), one thread:

    python benchmarks/reference-finetune-cpu/check_ablations.py RECIPE STATE.pt [N]

prints the held-out PSNR, its change with the position bias dropped and with exact attention at window 16, and
the standard deviation of the first bias tables (a quick look at a run between its saves; the reference folder
written at the end records the same ablations on all held-out images)."""

from __future__ import annotations

import copy
import sys

import torch

from nystra_hub.attention import set_position_bias
from nystra_hub.measure.data import list_images
from nystra_hub.models import build_model
from nystra_hub.training.reference import RECIPES, evaluate_heldout


def main(name: str, state_path: str, images: int = 5) -> None:
    torch.set_num_threads(1)
    recipe = RECIPES[name]
    state = torch.load(state_path, map_location="cpu", weights_only=False)
    model = build_model(recipe.arch, **recipe.kwargs)
    model.load_state_dict(state["model"])
    model.eval()
    held = [n for s in recipe.heldout_sets for n in list_images(s)][:images]

    def psnr(variant) -> float:
        return evaluate_heldout(variant, recipe, held, log=lambda _: None)["psnr"]

    base = psnr(model)
    no_bias = psnr(set_position_bias(copy.deepcopy(model), False))
    wide = copy.deepcopy(model)
    wide.set_window_size(16, method="bicubic")
    window = psnr(wide)
    print(f"step {state['run']['step']}: psnr {base:.3f} nobias {no_bias - base:+.3f} wx2 {window - base:+.3f}")
    tables = [p.std().item() for n, p in model.named_parameters() if "bias_table" in n]
    print("table std", [round(t, 2) for t in tables[:8]])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *map(int, sys.argv[3:4]))
