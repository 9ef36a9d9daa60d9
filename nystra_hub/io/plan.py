"""Per-layer attention plans: which implementation, Nyström parameters and window each part of a model runs.

A plan is plain JSON so it can live in a hub ``config.json`` and be re-applied by ``from_pretrained``:

    {"windows": {"layers.0": 16, ...},                        # module name -> window (module has set_window_size)
     "window_resize": "bicubic",                              # how bias tables follow the window
     "attention": {"layers.0.residual_group.blocks.0.attn":   # attention module name -> settings
                   {"attn_impl": "nystra", "landmarks": 16, "iters": 2, "tau": 5.0, "bias": "pooled", "mask": "exact"}}}

Windows are applied first (they resize position terms from the trained ones, so apply a plan to a model holding
its trained weights), then the per-module attention settings.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from torch import nn

from nystra_hub.attention import NystraParams, attention_modules, check_attn_impl
from nystra_hub.io.checkpoints import file_sha256
from nystra_hub.models.common import RestorationModel

PLAN_KEYS = ("windows", "window_resize", "attention")
logger = logging.getLogger(__name__)


def check_plan(plan) -> dict | None:
    """The checks a plan passes without a model (keys, implementation names, Nyström values); None stays None.
    :func:`validate_plan` adds the checks against a model."""
    if plan is None:
        return None
    if not isinstance(plan, Mapping):
        raise ValueError(f"nystra_plan must be a dict, got {type(plan).__name__}")
    unknown = sorted(set(plan) - set(PLAN_KEYS))
    if unknown:
        raise ValueError(f"unknown nystra_plan keys {unknown}; valid: {list(PLAN_KEYS)}")
    for name, settings in dict(plan.get("attention", {})).items():
        settings = dict(settings)
        check_attn_impl(settings.pop("attn_impl", "softmax"))
        try:
            NystraParams(**settings)
        except TypeError as err:
            raise ValueError(f"nystra_plan attention entry {name!r}: {err}") from None
    return dict(plan)


def validate_plan(model: nn.Module, plan: dict) -> None:
    check_plan(plan)
    modules = dict(model.named_modules())
    for name, window in plan.get("windows", {}).items():
        if name not in modules or not hasattr(modules[name], "set_window_size"):
            raise ValueError(f"plan window for {name!r}: no such module with set_window_size in the model")
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"plan window for {name!r} must be a positive int, got {window!r}")
    attention = dict(attention_modules(model))
    for name in plan.get("attention", {}):
        if name not in attention:
            raise ValueError(f"plan attention entry {name!r} is not an attention module of the model")


def apply_plan(model: nn.Module, plan: dict | None) -> nn.Module:
    """Apply ``plan`` in place (validated first, so a bad plan changes nothing)."""
    if not plan:
        return model
    validate_plan(model, plan)
    method = plan.get("window_resize", "bicubic")
    for name, window in sorted(plan.get("windows", {}).items()):
        model.get_submodule(name).set_window_size(window, method)
    attention = dict(attention_modules(model))
    for name, settings in plan.get("attention", {}).items():
        settings = dict(settings)
        impl = settings.pop("attn_impl", "softmax")
        attention[name].set_attn_impl(impl, NystraParams(**settings))
    return model


def extract_plan(model: nn.Module) -> dict:
    """The attention part of a plan describing ``model`` as it is now (windows are recorded by whoever set them)."""
    return {
        "attention": {
            name: {"attn_impl": module.attn_impl, **module.nystra.as_dict()}
            for name, module in attention_modules(model)
        }
    }


def finish_loaded(
    model: RestorationModel, *, plan: Mapping | None = None, explicit_attention: bool = False,
    variant: str | None = None, source: str = "", weights: str | os.PathLike | None = None,
) -> RestorationModel:
    """What every loader does after the strict load, in one place: apply the stored per-layer ``plan`` (unless
    attention was chosen explicitly at load time, which then holds everywhere), record in ``model.provenance``
    the plan applied, the catalogue ``variant`` and the ``weights`` file read (with its sha256), switch to eval
    mode. ``source`` names what was loaded in messages."""
    if plan and not explicit_attention:
        apply_plan(model, dict(plan))
        model.update_provenance(plan=dict(plan))
    elif plan:
        logger.info("%s: explicit attention arguments given, the stored nystra_plan is not applied", source)
    if variant:
        model.update_provenance(variant=variant)
    if weights is not None:
        model.update_provenance(file=str(weights), sha256=file_sha256(weights))
    return model.eval()
