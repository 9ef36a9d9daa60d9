"""Helpers shared by test modules of different folders (a test module imports from here, never from another test
module: each folder of tests/ is put on sys.path only when pytest imports a module from it)."""

from __future__ import annotations

import argparse
import importlib.util

import pytest
import torch

import nystra_hub
from nystra_hub.cli import bench as bench_cli
from nystra_hub.training.reference import save_reference

EXPORT_BACKENDS = {"onnxruntime": ("onnx", "onnxscript", "onnxruntime"), "openvino": ("onnx", "onnxscript", "openvino")}
TINY_SWINIR = dict(upscale=2, in_chans=3, img_size=16, window_size=8, img_range=1.0, depths=[2], embed_dim=12,
                   num_heads=[2], mlp_ratio=2, upsampler="pixelshuffledirect", resi_connection="1conv")


def has(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def skip_without(backend: str) -> None:
    if not has(*EXPORT_BACKENDS.get(backend, ())):
        pytest.skip(f"the {backend} backend needs {', '.join(EXPORT_BACKENDS[backend])}")


def bench_args(*argv: str) -> argparse.Namespace:
    """``nystra-hub bench``'s arguments for ``argv``, as its command parses them."""
    parser = argparse.ArgumentParser()
    bench_cli.add_arguments(parser)
    args = parser.parse_args(list(argv))
    args.argv = list(argv)
    return args


def tiny_swinir(sharpen: float = 20.0):
    torch.manual_seed(0)
    model = nystra_hub.build_model("swinir", **TINY_SWINIR)
    with torch.no_grad():  # sharper attention than at init, so approximations visibly differ
        for name, p in model.named_parameters():
            if "qkv.weight" in name:
                p.mul_(sharpen)
    return model.eval()


def make_reference(folder, images=("Set5/HR/butterfly.png",)):
    """A reference-model folder of :func:`tiny_swinir`, held out on ``images``."""
    model = tiny_swinir()
    info = {"name": "tiny-swinir", "arch": "swinir", "kwargs": model.official_kwargs, "task": "lightweight-sr",
            "scale": 2, "window": 8, "heldout_images": list(images),
            "degradation": {"name": "sr", "scale": 2, "sigma": 0.0, "protocol": "swinir-sr", "description": "x2"}}
    save_reference(model, folder, info)
    return folder
