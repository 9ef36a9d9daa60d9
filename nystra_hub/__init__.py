"""nystra_hub: pretrained window-transformer restoration models with exact and PnP-Nystra attention.

``import nystra_hub`` registers the models with transformers' Auto classes and timm's registry when those
libraries are installed; building, loading and running models needs neither.
"""

from __future__ import annotations

import importlib
import warnings

from ._version import __version__ as __version__
from .attention import ATTN_IMPLS, NystraParams
from .checkpoints import CheckpointError, CheckpointMismatchError, load_original_checkpoint, read_state_dict
from .detect import detect_checkpoint, load_checkpoint

# Imported eagerly, like restore below: binds the function, not the module of the same name.
from .export import export
from .hub import load_pretrained
from .loading import load
from .models import ARCHITECTURES, RestorationModel, build_model
from .plan import apply_plan, extract_plan

# Imported eagerly on purpose: binding the function here means a later ``import nystra_hub.restore`` (the module
# of the same name, already loaded) cannot rebind ``nystra_hub.restore`` to the module.
from .restore import restore
from .variants import VARIANTS, build_variant, get_variant, load_variant

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
    for module_name in ("nystra_hub.hf", "nystra_hub.timm_models"):
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
    "ARCHITECTURES",
    "ATTN_IMPLS",
    "VARIANTS",
    "CheckpointError",
    "CheckpointMismatchError",
    "NystraParams",
    "RestorationModel",
    "apply_plan",
    "build_model",
    "build_variant",
    "detect_checkpoint",
    "export",
    "extract_plan",
    "get_variant",
    "load",
    "load_checkpoint",
    "load_original_checkpoint",
    "load_pretrained",
    "load_variant",
    "read_state_dict",
    "restore",
]
