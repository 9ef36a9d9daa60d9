"""What a reference model's attention does, on the first 5 held-out images, one thread:

    python benchmarks/reference-finetune-cpu/diagnose_attention.py RECIPE FOLDER

prints the held-out PSNR change with the whole attention branch zeroed (every ``attn.proj``), with the position
bias dropped, with Uformer's modulators dropped, how far the locality prior moves the output (largest absolute
difference on a 32² input, bias tables set by ``apply_locality_prior``), and the mean gradient magnitude reaching
the bias tables and the q/k/v weights (L1 of the output, a batch of two random 32² inputs, training mode)."""

from __future__ import annotations

import copy
import sys

import torch

from nystra_hub.attention import set_position_bias
from nystra_hub.measure.arms import _drop_modulators
from nystra_hub.measure.data import list_images
from nystra_hub.measure.references import load_reference
from nystra_hub.training.reference import RECIPES, apply_locality_prior, evaluate_heldout


def mean_grad(model, word: str) -> float:
    grads = [p.grad.abs().mean().item() for n, p in model.named_parameters() if word in n and p.grad is not None]
    return sum(grads) / len(grads)


def main(name: str, folder: str) -> None:
    torch.set_num_threads(1)
    recipe = RECIPES[name]
    model, _ = load_reference(folder)
    held = [n for s in recipe.heldout_sets for n in list_images(s)][:5]

    def change(variant) -> float:
        return evaluate_heldout(variant, recipe, held, log=lambda _: None)["psnr"] - base

    base = evaluate_heldout(model, recipe, held, log=lambda _: None)["psnr"]
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for module_name, module in zeroed.named_modules():
            if module_name.endswith("attn.proj"):
                module.weight.zero_()
                module.bias.zero_()
    print(f"{name} ({folder}): held-out PSNR {base:.3f} dB on {len(held)} images")
    print(f"  attention branch zeroed {change(zeroed):+.3f} dB")
    print(f"  position bias dropped   {change(set_position_bias(copy.deepcopy(model), False)):+.3f} dB")
    if recipe.arch == "uformer":
        no_modulator = copy.deepcopy(model)
        _drop_modulators(no_modulator)
        print(f"  modulators dropped      {change(no_modulator):+.3f} dB")
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    prior = copy.deepcopy(model)
    apply_locality_prior(prior)
    with torch.no_grad():
        moved = (model(x[:1]) - prior(x[:1])).abs().max().item()
    print(f"  locality prior moves the output by at most {moved:.4f}")
    model.train()
    model(x).abs().mean().backward()
    qkv = "qkv.weight" if recipe.arch == "swinir" else "to_q.weight"  # Uformer projects q and k/v separately
    print(f"  mean |grad|: bias tables {mean_grad(model, 'bias_table'):.1e}, q/k/v weights {mean_grad(model, qkv):.1e}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
