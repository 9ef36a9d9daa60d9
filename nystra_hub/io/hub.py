"""Hub folders: one ``config.json`` + ``model.safetensors`` (+ ``README.md``) that nystra_hub, transformers and
timm all read. This module needs neither transformers nor timm.

Layout of a hub folder (local, or a Hugging Face repo such as ``nystra/swinir-x4``)::

    config.json         # see hub_config(); read by load_pretrained, transformers' AutoConfig and timm's hf-hub loader
    model.safetensors   # the official state-dict keys (no prefix), tensors as released
    README.md           # model card (nystra_hub.io.cards)

``config.json`` (example for the catalogue variant ``swinir-x4``)::

    {
      "model_type": "nystra_swinir",                 # transformers: AutoConfig -> NystraSwinIRConfig
      "architectures": ["NystraSwinIRModel"],        # transformers
      "arch": "swinir",                              # nystra_hub.build_model(arch, **official_kwargs)
      "variant": "swinir-x4",                        # catalogue name, null for a custom configuration
      "official_kwargs": {"upscale": 4, "in_chans": 3, "img_size": 64, "window_size": 8, ...},
      "attn_impl": "softmax",                        # default attention of every attention module
      "nystra": {"landmarks": 16, "iters": 2, "tau": 5.0, "bias": "pooled", "mask": "exact"},
      "nystra_plan": {...},                          # optional per-layer plan (io.plan), applied after loading
      "architecture": "swinir_x4",                   # timm: registered model name (nystra_swinir for custom ones)
      "model_args": {"attn_impl": "softmax", "nystra": {...}},   # timm: kwargs for create_model
      "pretrained_cfg": {"hf_hub_id": "nystra/swinir-x4", "hf_hub_filename": "model.safetensors", ...},  # timm
      "nystra_hub_version": "0.1.0"
    }

Explicit attention arguments (``attn_impl`` or Nyström parameters) given at load time replace the stored plan:
the model then runs that attention everywhere, at the trained windows.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import torch
from huggingface_hub import constants, hf_hub_download
from huggingface_hub.errors import LocalEntryNotFoundError

from nystra_hub._version import __version__
from nystra_hub.attention import NystraParams, attention_modules, check_attn_impl
from nystra_hub.io.cards import build_custom_card, build_model_card, card_origin
from nystra_hub.io.checkpoints import check_state_dict, load_state_dict_strict, read_state_dict
from nystra_hub.io.images import atomic_write_json
from nystra_hub.io.plan import check_plan, extract_plan, finish_loaded
from nystra_hub.io.variants import VARIANTS, Variant, close_folders, close_models, get_variant, weights_hint
from nystra_hub.models import ARCHITECTURES, RestorationModel, build_model
from nystra_hub.models.common import unwrap_model

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
HUB_ORG = "nystra"
# Nothing under nystra/ is on the Hugging Face Hub yet: its repos are looked up in the local cache only (a request
# would retry for half a minute without a network, then fail). Flip when the converted folders are uploaded.
HUB_ORG_PUBLISHED = False
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?(@[\w./-]+)?$")
NYSTRA_PARAM_NAMES = tuple(NystraParams().as_dict())


# -- names shared by the three libraries ------------------------------------------------------------------------
def arch_class(arch: str) -> type[RestorationModel]:
    try:
        return ARCHITECTURES[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; known: {sorted(ARCHITECTURES)}") from None


def model_type(arch: str) -> str:
    """transformers ``model_type`` (``swin2sr`` and friends are taken, so every type is prefixed)."""
    return f"nystra_{arch}"


def hf_class_names(arch: str) -> tuple[str, str]:
    """(config class, model class) names of the transformers glue, e.g. NystraSwinIRConfig, NystraSwinIRModel."""
    stem = arch_class(arch).__name__
    return f"Nystra{stem}Config", f"Nystra{stem}Model"


def timm_generic_name(arch: str) -> str:
    """timm name that builds ``arch`` from explicit official kwargs (custom configurations)."""
    return f"nystra_{arch}"


def default_repo_id(variant: str | Variant) -> str:
    v = variant if isinstance(variant, Variant) else get_variant(variant)
    return f"{HUB_ORG}/{v.name}"


def restoration_pretrained_cfg(
    in_chans: int = 3, patch: int = 64, variant: Variant | None = None, hf_hub_id: str | None = None
) -> dict:
    """A timm pretrained cfg for an image-to-image model: no classifier, identity normalisation (the models
    normalise internally), no resize/crop, no first-conv adaptation (a restoration model's input channels are
    its output channels)."""
    cfg = dict(
        hf_hub_id=hf_hub_id,
        hf_hub_filename=WEIGHTS_NAME,
        num_classes=None,
        input_size=(in_chans, patch, patch),
        fixed_input_size=False,
        interpolation="bicubic",
        crop_pct=1.0,
        crop_mode="center",
        mean=(0.0,) * in_chans,
        std=(1.0,) * in_chans,
        first_conv=None,
        classifier=None,
    )
    if variant is not None:
        cfg.update(
            license=variant.license.lower() or None,
            description=f"{arch_class(variant.arch).__name__} {variant.task_description}",
            origin_url=variant.source or None,
            notes=tuple(n for n in (f"original file {variant.official_file}", variant.notes) if n),
        )
    return cfg


@contextlib.contextmanager
def no_param_init():
    """Skip ``torch.nn.init``'s random fills while building a model whose parameters are all loaded, strictly,
    right after (building SwinIR-M spends most of its time in trunc_normal_). Derived buffers come from ordinary
    tensor ops and are computed as usual. Process-wide while active, like transformers' ``no_init_weights``."""
    saved = {name: getattr(torch.nn.init, name) for name in _INIT_FUNCTIONS}

    def skip(tensor, *args, **kwargs):
        return tensor

    try:
        for name in _INIT_FUNCTIONS:
            setattr(torch.nn.init, name, skip)
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.nn.init, name, fn)


_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                   "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
                   "sparse_")


# -- attention settings -------------------------------------------------------------------------------------------
def resolve_nystra(arch: str, nystra: NystraParams | Mapping | None = None, **overrides) -> NystraParams:
    """The architecture's default Nyström parameters updated by ``nystra`` and ``overrides`` (validated)."""
    base = arch_class(arch).default_nystra
    if isinstance(nystra, NystraParams):
        base = nystra
    elif nystra:
        if not isinstance(nystra, Mapping):
            raise ValueError(f"nystra must be a dict of Nyström parameters, got {type(nystra).__name__}")
        base = base.replace(**dict(nystra))
    return base.replace(**overrides) if overrides else base


def check_official_kwargs(arch: str, official_kwargs) -> dict:
    """Names must be constructor arguments of the architecture (values are checked by the constructor)."""
    import inspect

    if official_kwargs is None:
        return {}
    if not isinstance(official_kwargs, Mapping):
        raise ValueError(f"official_kwargs must be a dict, got {type(official_kwargs).__name__}")
    params = inspect.signature(arch_class(arch).__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        valid = {n for n, p in params.items() if n != "self" and n not in ("attn_impl", "nystra")}
        unknown = sorted(set(official_kwargs) - valid)
        if unknown:
            raise ValueError(f"{arch}: unknown official constructor argument(s) {unknown}; valid: {sorted(valid)}")
    return dict(official_kwargs)


def attention_state(model: torch.nn.Module) -> tuple[str, NystraParams, dict | None]:
    """(attn_impl, nystra, plan): a uniform model is described by the first two; a mixed one needs a plan."""
    modules = [m for _, m in attention_modules(model)]
    settings = Counter((m.attn_impl, m.nystra) for m in modules)
    if len(settings) <= 1:
        (impl, params), = settings or [("softmax", getattr(model, "default_nystra", NystraParams()))]
        return impl, params, None
    (impl, params), _ = settings.most_common(1)[0]
    return impl, params, extract_plan(model)


# -- config.json ------------------------------------------------------------------------------------------------
def jsonable(value):
    """``value`` as JSON reads it back (tuples become lists): what a config or export record compares against."""
    return json.loads(json.dumps(value))


def timm_fields(
    arch: str,
    official_kwargs: Mapping,
    variant: str | None = None,
    attn_impl: str = "softmax",
    nystra: Mapping | None = None,
    nystra_plan: Mapping | None = None,
    repo_id: str | None = None,
) -> dict:
    """``architecture``, ``model_args`` and ``pretrained_cfg``: what timm's ``hf-hub:`` loader reads."""
    v = get_variant(variant) if variant else None
    model_args = {} if v is not None else dict(official_kwargs)
    model_args.update(attn_impl=attn_impl, nystra=dict(nystra or {}))
    if nystra_plan:
        model_args["nystra_plan"] = dict(nystra_plan)
    in_chans = int(official_kwargs.get("in_chans", 3))
    patch = v.patch if v is not None else _patch_of(official_kwargs)
    cfg = restoration_pretrained_cfg(in_chans, patch, v, repo_id or (default_repo_id(v) if v else None))
    return jsonable(dict(
        architecture=v.timm_name if v is not None else timm_generic_name(arch),
        model_args=model_args,
        pretrained_cfg={k: val for k, val in cfg.items() if val is not None or k in ("num_classes", "first_conv")},
    ))


def _patch_of(official_kwargs: Mapping) -> int:
    size = official_kwargs.get("img_size", 64)
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def hub_config(
    arch: str,
    official_kwargs: Mapping,
    variant: str | None = None,
    attn_impl: str = "softmax",
    nystra: NystraParams | Mapping | None = None,
    nystra_plan: Mapping | None = None,
    repo_id: str | None = None,
) -> dict:
    """The canonical ``config.json`` of a hub folder (validated)."""
    arch_class(arch)
    official_kwargs = check_official_kwargs(arch, official_kwargs)
    if variant is not None:
        v = get_variant(variant)
        if v.arch != arch:
            raise ValueError(f"variant {v.name} is a {v.arch} model, not {arch}")
        variant = v.name
    check_attn_impl(attn_impl)
    params = resolve_nystra(arch, nystra).as_dict()
    plan = check_plan(nystra_plan)
    config_class, model_class = hf_class_names(arch)
    cfg = dict(
        model_type=model_type(arch),
        architectures=[model_class],
        arch=arch,
        variant=variant,
        official_kwargs=jsonable(official_kwargs),
        attn_impl=attn_impl,
        nystra=params,
    )
    if plan:
        cfg["nystra_plan"] = jsonable(plan)
    cfg.update(timm_fields(arch, official_kwargs, variant, attn_impl, params, plan, repo_id))
    cfg["nystra_hub_version"] = __version__
    return cfg


def model_hub_config(
    model: torch.nn.Module, variant: str | None = None, plan: Mapping | None = None, repo_id: str | None = None
) -> dict:
    """``config.json`` describing ``model`` (a RestorationModel): its official kwargs and attention settings."""
    model = unwrap_model(model)
    if variant is None:
        variant = model.provenance.variant
    if variant is not None:
        _check_variant_matches(model, get_variant(variant))
    impl, params, mixed_plan = attention_state(model)
    return hub_config(model.arch, model.official_kwargs, variant, impl, params, plan or mixed_plan, repo_id)


def _check_variant_matches(model: RestorationModel, v: Variant) -> None:
    if v.arch != model.arch:
        raise ValueError(f"variant {v.name} is a {v.arch} model but the model is {model.arch}")
    own = jsonable(model.official_kwargs)
    differs = {k: (val, own.get(k)) for k, val in jsonable(v.kwargs).items() if own.get(k, val) != val}
    if differs:
        raise ValueError(f"model does not have the configuration of variant {v.name}: (variant, model) {differs}")


def validate_hub_config(cfg: Mapping, source: str = CONFIG_NAME) -> dict:
    """Check a loaded ``config.json``; returns it with ``arch`` filled in (older/foreign configs give model_type)."""
    if not isinstance(cfg, Mapping):
        raise ValueError(f"{source}: expected a JSON object")
    cfg = dict(cfg)
    arch = cfg.get("arch")
    if arch is None and str(cfg.get("model_type", "")).startswith("nystra_"):
        arch = cfg["model_type"][len("nystra_"):]
    if arch is None:
        raise ValueError(f"{source}: not a nystra_hub config (no 'arch' and no nystra_* model_type)")
    try:
        arch_class(arch)
        if "model_type" in cfg and cfg["model_type"] != model_type(arch):
            raise ValueError(f"model_type {cfg['model_type']!r} does not match arch {arch!r}")
        cfg["arch"] = arch
        cfg["official_kwargs"] = check_official_kwargs(arch, cfg.get("official_kwargs"))
        cfg["attn_impl"] = check_attn_impl(cfg.get("attn_impl") or "softmax")
        cfg["nystra"] = resolve_nystra(arch, cfg.get("nystra")).as_dict()
        cfg["nystra_plan"] = check_plan(cfg.get("nystra_plan"))
    except (ValueError, TypeError) as err:
        raise ValueError(f"{source}: {err}") from None
    return cfg


# -- writing ------------------------------------------------------------------------------------------------------
def _safetensors_ready(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors, none sharing storage (safetensors refuses shared tensors); values unchanged."""
    out, seen = {}, set()
    for key, value in state.items():
        tensor = value.detach().to("cpu").contiguous()
        ptr = (tensor.untyped_storage().data_ptr(), tensor.storage_offset()) if tensor.numel() else None
        if ptr is not None and ptr[0] in seen:
            tensor = tensor.clone()
        elif ptr is not None:
            seen.add(ptr[0])
        out[key] = tensor
    return out


def save_hub_folder(
    model,
    out_dir: str | os.PathLike,
    variant: str | None = None,
    card: bool = True,
    *,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    plan: Mapping | None = None,
    repo_id: str | None = None,
) -> Path:
    """Write ``config.json``, ``model.safetensors`` (official keys) and, with ``card``, ``README.md``.

    ``model`` must hold its trained weights at the trained windows (save before applying a plan that changes
    windows and pass the plan as ``plan``). ``state_dict`` (default: the model's) is written as given after a
    strict key/shape check against the model, so a converter can store the released tensors unchanged.
    """
    from safetensors.torch import save_file

    inner = unwrap_model(model)
    applied = inner.provenance.plan
    if applied and applied.get("windows"):
        raise ValueError(
            "this model runs a plan that changed its windows, so its weights are no longer the trained ones; "
            "save the model as loaded and pass the plan as plan=..."
        )
    cfg = model_hub_config(inner, variant, plan, repo_id)
    state = dict(inner.state_dict() if state_dict is None else state_dict)
    check_state_dict(inner, inner.adapt_state_dict(dict(state)), source="state to save")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"format": "pt", "arch": inner.arch, "variant": str(cfg.get("variant") or "")}
    save_file(_safetensors_ready(state), str(out / WEIGHTS_NAME), metadata=meta)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(out / WEIGHTS_NAME, 0o666 & ~umask)  # safetensors writes 0600; a hub folder is meant to be shared
    atomic_write_json(out / CONFIG_NAME, cfg)
    if card:
        if cfg.get("variant"):  # the card says what the weights are only as far as the provenance knows
            model_card = build_model_card(cfg["variant"], **card_origin(inner.provenance.file,
                                                                        inner.provenance.sha256))
        else:
            model_card = build_custom_card(inner.arch, cfg["official_kwargs"])
        model_card.save(str(out / CARD_NAME))
    return out


# -- reading ------------------------------------------------------------------------------------------------------
def resolve_hub_folder(
    name_or_path: str | os.PathLike,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
) -> Path:
    """A local folder holding config.json and model.safetensors.

    ``name_or_path``: a local hub folder; a repo id ``org/name`` (optionally ``org/name@revision``), fetched with
    huggingface_hub (its cache, ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` apply); or a catalogue variant name, which
    means the repo ``nystra/<variant>``. Until :data:`HUB_ORG_PUBLISHED`, ``nystra/*`` repos are looked up in the
    local cache only; a catalogue name found nowhere raises FileNotFoundError saying how to get its weights.
    """
    path = Path(name_or_path)
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{path} is not a hub folder: no {CONFIG_NAME}")
        return path
    repo_id, revision = _repo_id(str(name_or_path), revision)
    return _download_hub_folder(repo_id, revision, cache_dir, token)


def _repo_id(name: str, revision: str | None) -> tuple[str, str | None]:
    """(repo id, revision) a name means; a name that is none, or a mistyped local folder, raises
    FileNotFoundError with the nearest folders and variants."""
    if Path(name).exists() or not _REPO_ID.match(name):
        raise FileNotFoundError(f"{name!r} is neither a hub folder nor a repo id (org/name) nor a variant name")
    if "/" not in name:
        variant = _variant_named(name)
        if variant is None:
            close = close_models(name)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise FileNotFoundError(f"unknown variant {name!r} (and no folder of that name here){hint} "
                                    "(nystra-hub list shows the variants and the reference models)")
        name = default_repo_id(variant)
    elif Path(name).parent.is_dir() and close_folders(name):  # a mistyped path: the Hub would not have it
        raise FileNotFoundError(f"no folder {name}; did you mean {', '.join(close_folders(name))}?")
    if "@" in name and revision is None:
        name, revision = name.split("@", 1)
    return name, revision


def _variant_named(name: str) -> Variant | None:
    try:
        return get_variant(name)
    except KeyError:
        return None


def _published(repo_id: str) -> bool:
    return HUB_ORG_PUBLISHED or not repo_id.startswith(f"{HUB_ORG}/")


def _download_hub_folder(repo_id: str, revision: str | None, cache_dir, token) -> Path:
    """config.json and model.safetensors of ``repo_id``, from the local cache only when offline or unpublished
    (no request, so no retries), else downloaded when missing."""
    local_only = bool(constants.HF_HUB_OFFLINE) or not _published(repo_id)
    kwargs = dict(repo_id=repo_id, revision=revision, cache_dir=cache_dir, token=token, local_files_only=local_only)
    try:
        config_path = hf_hub_download(filename=CONFIG_NAME, **kwargs)
        weights_path = hf_hub_download(filename=WEIGHTS_NAME, **kwargs)
    except LocalEntryNotFoundError as err:
        raise _not_in_cache(repo_id, cache_dir, err) from err
    folder = Path(config_path).parent
    if Path(weights_path).parent != folder:
        raise FileNotFoundError(f"{repo_id}: {CONFIG_NAME} and {WEIGHTS_NAME} resolved to different snapshots")
    return folder


def _not_in_cache(repo_id: str, cache_dir, err: Exception) -> FileNotFoundError:
    """The error for a repo absent from the local cache: for a catalogue variant's repo, how to get its weights."""
    cache = cache_dir or constants.HF_HUB_CACHE
    if not _published(repo_id):  # the Hub was not asked: huggingface_hub's own words would only confuse
        why = f"{repo_id} is not on the Hugging Face Hub yet (nothing under {HUB_ORG}/ is published)"
    else:
        why = f"{repo_id}: {'HF_HUB_OFFLINE is set' if constants.HF_HUB_OFFLINE else 'the Hub could not be reached'}"
        why += f" ({err})"
    org, _, name = repo_id.partition("/")
    variant = VARIANTS.get(name) if org == HUB_ORG else None
    if variant is None:
        return LocalEntryNotFoundError(f"{why}; {CONFIG_NAME}/{WEIGHTS_NAME} are not in the local Hugging Face "
                                       f"cache ({cache})")
    return FileNotFoundError(f"{variant.name} is a catalogue variant without weights here: {why}, and the local "
                             f"Hugging Face cache ({cache}) does not hold it. To get going:\n{weights_hint(variant)}")


def read_hub_config(folder: str | os.PathLike) -> dict:
    path = Path(folder) / CONFIG_NAME
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    return validate_hub_config(raw, str(path))


def build_from_config(cfg: Mapping, attn_impl: str | None = None, **nystra_params) -> RestorationModel:
    """Build the model a (validated) config describes, with explicit attention arguments applied."""
    impl = cfg["attn_impl"] if attn_impl is None else attn_impl
    nystra = resolve_nystra(cfg["arch"], cfg["nystra"], **nystra_params)
    with no_param_init():  # every parameter is loaded strictly right after
        return build_model(cfg["arch"], attn_impl=impl, nystra=nystra, **cfg["official_kwargs"])


def load_pretrained(
    name_or_path: str | os.PathLike,
    attn_impl: str | None = None,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    use_plan: bool = True,
    **nystra_params,
) -> RestorationModel:
    """Load a hub folder, a Hugging Face repo (``nystra/swinir-x4``) or a catalogue variant's repo, strictly.

    ``attn_impl`` ("softmax", "sdpa", "nystra") and Nyström parameters (landmarks, iters, tau, bias, mask) switch
    every attention module; without them the folder's ``attn_impl``/``nystra`` and its ``nystra_plan`` (unless
    ``use_plan=False``) apply. Returns a RestorationModel in eval mode; ``model.provenance.hub_config`` is the config.
    """
    folder = resolve_hub_folder(name_or_path, revision=revision, cache_dir=cache_dir, token=token)
    cfg = read_hub_config(folder)
    unknown = sorted(set(nystra_params) - set(NYSTRA_PARAM_NAMES))
    if unknown:
        raise TypeError(f"unknown argument(s) {unknown}; Nyström parameters are {list(NYSTRA_PARAM_NAMES)}")
    explicit = attn_impl is not None or bool(nystra_params)
    model = build_from_config(cfg, attn_impl, **nystra_params)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{folder}: no {WEIGHTS_NAME}")
    load_state_dict_strict(model, read_state_dict(weights), source=str(weights))
    model.update_provenance(hub_config=cfg)
    plan = cfg.get("nystra_plan") if use_plan else None
    return finish_loaded(model, plan=plan, explicit_attention=explicit, variant=cfg.get("variant"),
                         source=str(folder), weights=weights)


__all__ = [
    "CARD_NAME",
    "CONFIG_NAME",
    "HUB_ORG",
    "WEIGHTS_NAME",
    "build_from_config",
    "default_repo_id",
    "hf_class_names",
    "hub_config",
    "load_pretrained",
    "model_hub_config",
    "model_type",
    "read_hub_config",
    "resolve_hub_folder",
    "restoration_pretrained_cfg",
    "save_hub_folder",
    "timm_generic_name",
    "validate_hub_config",
]
