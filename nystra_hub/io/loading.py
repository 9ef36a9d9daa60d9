"""One loading path: :func:`load` turns anything that names a model into that model, loaded strictly.

    model = nystra_hub.load("001_classicalSR_DF2K_s64w8_SwinIR-M_x4.pth")        # a released checkpoint
    model = nystra_hub.load("swinir-x4", weights="001_...x4.pth")                 # a catalogue variant + its file
    model = nystra_hub.load("swinir-x4/")                                         # a hub folder (config.json)
    model = nystra_hub.load("nystra/swinir-x4", attn_impl="nystra")              # a Hugging Face repo
    model = nystra_hub.load("reference_models/swinir-ref-x2")                     # a folder this package wrote

What ``source`` is, in the order it is tried: a file (a released checkpoint, .pth/.pt/.safetensors, detected with
:func:`nystra_hub.detect_checkpoint`); a folder with ``config.json`` (a hub folder); a folder with ``case.json``
(an official test case: constructor arguments + ``checkpoint.pth``); with ``weights``, a catalogue variant name;
otherwise a Hugging Face repo id or a catalogue variant's repo (:func:`nystra_hub.load_pretrained`).

Attention: ``attn_impl`` and Nyström parameters (landmarks, iters, tau, bias, mask) switch every attention module.
Without them, a hub folder's stored attention and per-layer plan apply; the other sources start exact
(``"softmax"``). Every path ends in :func:`nystra_hub.io.plan.finish_loaded`, so the transformers and timm loaders,
which call it too, leave a model in the same state.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from nystra_hub.io.checkpoints import load_original_checkpoint
from nystra_hub.io.detect import load_checkpoint
from nystra_hub.io.hub import CONFIG_NAME, NYSTRA_PARAM_NAMES, load_pretrained, resolve_nystra
from nystra_hub.io.plan import finish_loaded
from nystra_hub.io.variants import get_variant, load_variant
from nystra_hub.models import RestorationModel, build_model

CASE_NAME = "case.json"
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors", ".bin")


def load(
    source: str | os.PathLike,
    *,
    weights: str | os.PathLike | None = None,
    attn_impl: str | None = None,
    revision: str | None = None,
    use_plan: bool = True,
    official_kwargs: dict | None = None,
    **nystra_params,
) -> RestorationModel:
    """The model ``source`` names, loaded strictly, in eval mode (see the module doc for what ``source`` can be).

    weights: the released checkpoint of a catalogue variant named by ``source`` (or of a test case folder).
    attn_impl, nystra_params: attention for every module (a stored plan is then not applied).
    revision: a Hugging Face revision. use_plan: apply a hub folder's stored plan (default True).
    official_kwargs: constructor arguments that settle what checkpoint detection leaves open (e.g.
        ``{"img_range": 255.0}``).
    """
    unknown = sorted(set(nystra_params) - set(NYSTRA_PARAM_NAMES))
    if unknown:
        raise TypeError(f"unknown argument(s) {unknown}; Nyström parameters are {list(NYSTRA_PARAM_NAMES)}")
    path = Path(source)
    if path.is_file():
        if weights is not None:
            raise ValueError(f"{source} is a checkpoint file already; drop weights=")
        return _from_checkpoint(path, attn_impl, nystra_params, official_kwargs or {})
    if official_kwargs:
        raise ValueError(f"official_kwargs settle what a checkpoint file leaves open; {source!r} is not a file")
    if path.suffix.lower() in CHECKPOINT_SUFFIXES:
        raise FileNotFoundError(f"checkpoint file {source} not found")
    if (path / CONFIG_NAME).is_file() or (not path.exists() and weights is None):
        return load_pretrained(source, attn_impl, revision=revision, use_plan=use_plan, **nystra_params)
    if (path / CASE_NAME).is_file():
        return _from_case(path, weights, attn_impl, nystra_params)
    if path.is_dir():
        raise FileNotFoundError(f"{path} is a folder without {CONFIG_NAME} (a hub folder) or {CASE_NAME}")
    variant = get_variant(str(source))  # unknown names: a "did you mean" error
    nystra = resolve_nystra(variant.arch, None, **nystra_params)
    model = load_variant(variant.name, weights, attn_impl=attn_impl or "softmax", nystra=nystra)
    return finish_loaded(model, variant=variant.name, source=str(weights), weights=weights)


def _from_checkpoint(path: Path, attn_impl, nystra_params: dict, official_kwargs: dict) -> RestorationModel:
    return load_checkpoint(path, attn_impl=attn_impl or "softmax", nystra=nystra_params or None, **official_kwargs)


def _from_case(folder: Path, weights, attn_impl, nystra_params: dict) -> RestorationModel:
    """An official test case: ``case.json`` names the architecture and constructor arguments."""
    case = json.loads((folder / CASE_NAME).read_text())
    arch = case["arch"]
    model = build_model(arch, attn_impl=attn_impl or "softmax", nystra=resolve_nystra(arch, None, **nystra_params),
                        **case["official_constructor_kwargs"])
    weights = weights or folder / "checkpoint.pth"
    load_original_checkpoint(model, weights)
    return finish_loaded(model, source=str(folder), weights=weights)


__all__ = ["load"]
