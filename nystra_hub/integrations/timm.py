"""timm registration: one model name per catalogue variant (``swinir_x4``, ``uformer_b_sidd``,
``dehazeformer_t_indoor``...) plus ``nystra_<arch>`` for custom configurations given as official kwargs.

    import nystra_hub, timm
    timm.create_model("swinir_x4", pretrained=True, attn_impl="nystra")            # nystra/swinir-x4 on the Hub
    timm.create_model("swinir_x4", pretrained=True, pretrained_cfg_overlay=dict(file="001_...x4.pth"))
    timm.create_model("hf-hub:nystra/swinir-x4", pretrained=True)                   # config.json decides the name

Keyword arguments: ``attn_impl``, ``nystra`` (dict), Nyström parameters (``landmarks``, ``iters``, ``tau``,
``bias``, ``mask``), ``nystra_plan`` (applied after the weights are loaded) and official constructor arguments
(they override the variant's). Pretrained weights load strictly: the filter that unwraps released containers
(``params_ema``/``params``/``state_dict``, ``module.`` prefixes) also checks keys and shapes and raises
:class:`~nystra_hub.io.checkpoints.CheckpointMismatchError` naming every difference, whatever ``pretrained_strict``
says, so nothing is ever dropped silently. Pretrained cfgs describe image-to-image models: no classifier, mean 0
and std 1 (the networks normalise internally), ``crop_pct`` 1, ``first_conv`` None (no input-stem adaptation).

Export: ``timm.models.save_for_hf(model, folder)`` / ``push_to_hf_hub`` work on models made by
``timm.create_model`` (they carry ``num_classes = 0``, timm's "no classifier"); ``timm.create_model("local-dir:" +
folder, pretrained=True)`` loads the folder back with the attention the model was *created* with (after
``set_attn_impl``, pass ``model_args=dict(attn_impl=...)``). Such a folder is timm's only: for one folder that
nystra_hub, transformers and timm all read, use :func:`nystra_hub.io.hub.save_hub_folder` (or ``nystra-hub convert``).
"""

from __future__ import annotations

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from nystra_hub.attention import NystraParams
from nystra_hub.io.checkpoints import CheckpointError, check_state_dict, unwrap_state_dict
from nystra_hub.io.hub import (
    default_repo_id,
    no_param_init,
    resolve_nystra,
    restoration_pretrained_cfg,
    timm_generic_name,
)
from nystra_hub.io.plan import finish_loaded
from nystra_hub.io.variants import VARIANTS, Variant
from nystra_hub.models import ARCHITECTURES, RestorationModel, build_model

_NYSTRA_PARAMS = tuple(NystraParams().as_dict())
# create_model / build_model_with_cfg arguments that are not model arguments
_TIMM_ARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "pretrained_strict", "pretrained_model_args")
_UNSUPPORTED = ("features_only", "out_indices", "feature_cls", "num_classes", "global_pool", "drop_rate")
# What a restoration model reports to timm's export code (``timm.models.save_for_hf``, ``push_to_hf_hub``): no
# classifier, which timm spells num_classes=0; exports record it in their model_args, so it is accepted back.
NO_CLASSIFIER = 0


def checkpoint_filter_fn(state_dict: dict, model: RestorationModel) -> dict:
    """Unwrap a released checkpoint for ``model`` and check it strictly (raises, naming keys, on any mismatch)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    source = cfg.get("file") or cfg.get("hf_hub_id") or cfg.get("url") or "pretrained weights"
    try:
        state = unwrap_state_dict(state_dict, source=str(source))
        state = model.adapt_state_dict(dict(state))
        check_state_dict(model, state, source=str(source))
    except TypeError as err:  # timm retries a filter that raises TypeError with one argument: don't let it
        raise CheckpointError(f"{source}: {err}") from err
    return state


def _create(arch: str, name: str, variant: Variant | None, pretrained: bool = False, **kwargs) -> RestorationModel:
    if kwargs.get("num_classes", NO_CLASSIFIER) in (NO_CLASSIFIER, None):
        kwargs.pop("num_classes", None)
    bad = sorted(k for k in _UNSUPPORTED if k in kwargs)
    if bad:
        raise TypeError(f"{name}: {bad} are classification/feature options; restoration models do not take them")
    timm_args = {k: kwargs.pop(k) for k in _TIMM_ARGS if k in kwargs}
    attn_impl = kwargs.pop("attn_impl", "softmax")
    nystra = kwargs.pop("nystra", None)
    overrides = {k: kwargs.pop(k) for k in _NYSTRA_PARAMS if k in kwargs}
    plan = kwargs.pop("nystra_plan", None)
    params = resolve_nystra(arch, nystra, **overrides)
    official = dict(variant.kwargs) if variant is not None else {}
    official.update(kwargs)  # in_chans comes from the cfg's input_size; other names are official arguments
    size = official.get("img_size")
    if isinstance(size, (list, tuple)) and len(size) == 2 and size[0] == size[1]:
        official["img_size"] = int(size[0])  # timm exports record (H, W); the official constructors take a side

    def build(**model_kwargs) -> RestorationModel:
        if pretrained:  # every parameter is loaded, strictly, right after: skip the random fills
            with no_param_init():
                return build_model(arch, **model_kwargs)
        return build_model(arch, **model_kwargs)

    model = build_model_with_cfg(
        build, name, pretrained, pretrained_filter_fn=checkpoint_filter_fn, attn_impl=attn_impl, nystra=params,
        kwargs_filter=("num_classes",),  # timm fills it in from an exported cfg (0); the networks take none
        **timm_args, **official,
    )
    model.num_classes = NO_CLASSIFIER  # what timm's save_for_hf/push_to_hf_hub read (see the module doc)
    if not hasattr(model, "num_features"):  # exports record it, for information only; SwinIR has its own
        model.num_features = model.out_channels
    return finish_loaded(model, plan=plan, variant=variant.name if variant else None, source=name,
                         weights=_weights_file(model.pretrained_cfg) if pretrained else None)


def _weights_file(cfg: dict) -> str | None:
    """The file timm loaded pretrained weights from: a cfg's ``file`` wins unless the cfg names another source
    or passes a state dict (timm's ``_resolve_pretrained_source``); None for weights fetched from the Hub."""
    if cfg.get("source", "") not in ("", "timm") or cfg.get("state_dict") is not None:
        return None
    return cfg.get("file")


def _entrypoint(arch: str, name: str, variant: Variant | None):
    def entry(pretrained: bool = False, **kwargs) -> RestorationModel:
        return _create(arch, name, variant, pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__module__ = __name__
    if variant is not None:
        entry.__doc__ = (f"{variant.name}: {ARCHITECTURES[arch].__name__} {variant.task_description} "
                         f"(x{variant.scale}, window {variant.window}, patch {variant.patch}; "
                         f"{variant.official_file}).")
    else:
        entry.__doc__ = f"{ARCHITECTURES[arch].__name__} from explicit official constructor arguments."
    return entry


def _cfgs() -> dict[str, dict]:
    cfgs = {}
    for v in VARIANTS.values():
        if v.arch in ARCHITECTURES:
            cfgs[v.timm_name] = restoration_pretrained_cfg(v.in_chans, v.patch, v, default_repo_id(v))
    for arch in ARCHITECTURES:
        cfgs[timm_generic_name(arch)] = restoration_pretrained_cfg()
    return cfgs


default_cfgs = generate_default_cfgs(_cfgs())

MODEL_NAMES: list[str] = []
for _v in VARIANTS.values():
    if _v.arch in ARCHITECTURES:
        globals()[_v.timm_name] = register_model(_entrypoint(_v.arch, _v.timm_name, _v))
        MODEL_NAMES.append(_v.timm_name)
for _arch in ARCHITECTURES:
    _name = timm_generic_name(_arch)
    globals()[_name] = register_model(_entrypoint(_arch, _name, None))
    MODEL_NAMES.append(_name)
