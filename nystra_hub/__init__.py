"""nystra_hub: pretrained window-transformer restoration models (SwinIR, Uformer, DehazeFormer) with exact and
PnP-Nystra attention.

``import nystra_hub`` registers the models with transformers' Auto classes and timm's registry when those
libraries are installed; building, loading and running models needs neither.

Get a model:
    ``load(source)``: the one loader: a released ``.pth``/``.safetensors`` file (architecture detected), a hub
    folder, a catalogue variant (``weights=`` its released file) or a Hugging Face repo id.
    ``build_model(arch, **official_kwargs)``: an architecture from its official constructor arguments, random
    weights; ``build_variant(name)``: a catalogue variant, random weights. ``VARIANTS`` / ``get_variant`` are the
    catalogue, ``ARCHITECTURES`` the architectures, ``RestorationModel`` their base class.
Run it:
    ``restore(model, image)``: PIL image, NumPy array or tensor in, the same kind out (the official pre- and
    post-processing, tiles for large images). ``export(model, path, format, size=...)``: an ONNX or OpenVINO graph.
Attention:
    ``ATTN_IMPLS`` ("softmax", "sdpa", "nystra") and ``NystraParams``, chosen with ``attn_impl=`` and ``nystra=``
    (or a model's ``set_attn_impl``); ``apply_plan`` / ``extract_plan``: per-layer choices; ``calibrate(model,
    images)`` finds a plan within a PSNR budget (loaded on first use: it imports the measurement code).
Lower-level loaders, the steps ``load`` takes, for code that needs one of them:
    ``load_pretrained`` (hub folder or repo), ``load_variant`` (variant + released file), ``load_checkpoint`` (a
    bare checkpoint, architecture detected by ``detect_checkpoint``), ``load_original_checkpoint`` (released
    weights into a model you built), ``read_state_dict`` (a checkpoint's tensors, official keys);
    ``CheckpointError`` / ``CheckpointMismatchError`` are what they raise.
"""

from __future__ import annotations

import importlib
import warnings

from nystra_hub._version import __version__ as __version__
from nystra_hub.attention import ATTN_IMPLS, NystraParams
from nystra_hub.inference.export import export
from nystra_hub.inference.restore import restore
from nystra_hub.io.checkpoints import (
    CheckpointError,
    CheckpointMismatchError,
    load_original_checkpoint,
    read_state_dict,
)
from nystra_hub.io.detect import detect_checkpoint, load_checkpoint
from nystra_hub.io.hub import load_pretrained
from nystra_hub.io.loading import load
from nystra_hub.io.plan import apply_plan, extract_plan
from nystra_hub.io.variants import VARIANTS, build_variant, get_variant, load_variant
from nystra_hub.models import ARCHITECTURES, RestorationModel, build_model

# Public names that live in modules with heavier imports, loaded on first use.
_LAZY = {
    "calibrate": "nystra_hub.measure.calibration",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nystra_hub' has no attribute {name!r}")


def _register_plugins() -> None:
    """Register with transformers and timm when they import; the core works without them."""
    for module_name in ("nystra_hub.integrations.transformers", "nystra_hub.integrations.timm"):
        try:
            importlib.import_module(module_name)
        except ImportError as err:
            if getattr(err, "name", None) in (module_name, "transformers", "timm"):
                continue  # the glue module or the library it glues to is not installed
            warnings.warn(f"nystra_hub: {module_name} not registered ({err})", stacklevel=2)
        except Exception as err:  # noqa: BLE001 - an incompatible library version must not break the core
            warnings.warn(f"nystra_hub: {module_name} not registered ({type(err).__name__}: {err})", stacklevel=2)


_register_plugins()

__all__ = [
    # get a model
    "load",
    "build_model",
    "build_variant",
    "VARIANTS",
    "get_variant",
    "ARCHITECTURES",
    "RestorationModel",
    # run it
    "restore",
    "export",
    # attention (calibrate, in _LAZY, stays out: a star import would load the measurement code)
    "ATTN_IMPLS",
    "NystraParams",
    "apply_plan",
    "extract_plan",
    # lower-level loaders
    "load_pretrained",
    "load_variant",
    "load_checkpoint",
    "detect_checkpoint",
    "load_original_checkpoint",
    "read_state_dict",
    "CheckpointError",
    "CheckpointMismatchError",
]
