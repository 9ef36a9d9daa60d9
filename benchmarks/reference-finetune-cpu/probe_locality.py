"""How much a SwinIR reference model could owe a locality prior, without training (first 5 held-out images,
one thread):

    python benchmarks/reference-finetune-cpu/probe_locality.py [FOLDER]

prints, for a few attention blocks, the spread of the attention output within a window against its size (a window
mean leaves the first near zero); the held-out PSNR change when every bias table is set to the locality prior of
strength 1, 4, 16 and 64 (``apply_locality_prior``); and, with the strength-4 prior and every ``attn.proj`` weight
doubled (a louder attention branch), the change with and without the position bias."""

from __future__ import annotations

import copy
import sys

import torch

from nystra_hub.attention import attention_modules, set_position_bias
from nystra_hub.measure.data import list_images
from nystra_hub.measure.references import load_reference
from nystra_hub.training.reference import RECIPES, apply_locality_prior, evaluate_heldout


def window_spread(model) -> list[tuple[str, float, float]]:
    """(block, std of the attention output, std of its deviation from the window mean) on a random 48² input."""
    outputs = {}
    hooks = [module.register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o.detach()))
             for name, module in attention_modules(model)]
    with torch.no_grad():
        model(torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(0)))
    for hook in hooks:
        hook.remove()
    return [(name, out.std().item(), (out - out.mean(dim=1, keepdim=True)).std().item())
            for name, out in list(outputs.items())[::5]]


def main(folder: str = "reference_models/swinir-ref-x2") -> None:
    torch.set_num_threads(1)
    model, info = load_reference(folder)
    recipe = RECIPES[info["name"]]
    held = [n for s in recipe.heldout_sets for n in list_images(s)][:5]
    psnr = lambda m: evaluate_heldout(m, recipe, held, log=lambda _: None)["psnr"]  # noqa: E731
    base = psnr(model)
    print(f"{folder}: held-out PSNR {base:.3f} dB on {len(held)} images")
    for name, spread, within in window_spread(model):
        print(f"  {name}: output std {spread:.4f}, within-window std {within:.4f}")
    for strength in (1.0, 4.0, 16.0, 64.0):
        prior = copy.deepcopy(model)
        apply_locality_prior(prior, strength)
        print(f"  locality prior, strength {strength:g}: {psnr(prior) - base:+.3f} dB")
    louder = copy.deepcopy(model)
    apply_locality_prior(louder, 4.0)
    with torch.no_grad():
        for name, module in louder.named_modules():
            if name.endswith("attn.proj"):
                module.weight.mul_(2.0)
    print(f"  strength-4 prior, attn.proj doubled: {psnr(louder) - base:+.3f} dB, "
          f"bias then dropped {psnr(set_position_bias(louder, False)) - base:+.3f} dB")


if __name__ == "__main__":
    main(*sys.argv[1:2])
