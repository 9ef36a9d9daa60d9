"""transformers glue: one config class and one PreTrainedModel class per architecture, registered with
AutoConfig, AutoModel and AutoModelForImageToImage when ``nystra_hub`` is imported. No model logic lives here.

Classes, for every ``arch`` of :data:`nystra_hub.models.ARCHITECTURES`: ``Nystra<Arch>Config`` (model_type
``nystra_<arch>``) and ``Nystra<Arch>Model``, e.g. ``NystraSwinIRConfig`` / ``NystraSwinIRModel``.

- The config carries ``official_kwargs`` (the official constructor arguments), ``attn_impl`` ("softmax", "sdpa",
  "nystra"), ``nystra`` (Nyström parameters) and an optional ``nystra_plan``; every value is validated on
  assignment and again when a model is built. ``attn_impl`` is this package's switch and is unrelated to
  transformers' ``attn_implementation``. The same ``config.json`` carries timm's fields (see :mod:`nystra_hub.hub`).
- The model *is* the RestorationModel's module tree: the RestorationModel is built inside ``__init__`` and its
  parameter/buffer/submodule registries become the model's own, so state-dict keys are the official ones with no
  prefix (``base_model_prefix = ""``). ``model.restoration_model`` is the RestorationModel, sharing every tensor.
- ``forward(pixel_values)`` runs the network's forward (a float batch; [0, 1] for SwinIR/Uformer, [-1, 1] for
  DehazeFormer) and returns an ``ImageSuperResolutionOutput`` whose ``reconstruction`` is the restored batch
  (a tuple ``(reconstruction,)`` with ``return_dict=False``).
- ``from_pretrained`` is strict: missing, unexpected or mis-shaped keys raise
  :class:`~nystra_hub.checkpoints.CheckpointMismatchError` naming them. transformers 5 builds the model on the
  meta device and leaves non-persistent buffers uninitialised; ``initialize_weights`` (run by transformers
  after loading) therefore always calls the model's ``reset_constants()``, which recomputes every derived
  buffer (relative-position indices, shift masks, SwinIR's ``mean``).
- Extra ``from_pretrained`` keyword arguments ``landmarks``, ``iters``, ``tau``, ``bias``, ``mask`` update the
  Nyström parameters. Explicit ``attn_impl``/``nystra``/Nyström arguments replace a stored ``nystra_plan``.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import torch
from huggingface_hub.dataclasses import strict, validated_field
from transformers import AutoConfig, AutoModel, AutoModelForImageToImage, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import ImageSuperResolutionOutput

from . import hub
from ._version import __version__
from .attention import NystraParams, attention_modules, check_attn_impl
from .checkpoints import CheckpointMismatchError
from .models import ARCHITECTURES, RestorationModel, build_model
from .plan import check_plan, finish_loaded
from .variants import get_variant

logger = logging.getLogger(__name__)

_SHARED_REGISTRIES = (
    "_parameters",
    "_buffers",
    "_non_persistent_buffers_set",
    "_modules",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)


def _check_attn_impl_value(value: str) -> None:
    check_attn_impl(value)


def _check_nystra_value(value: dict | None) -> None:
    if value is not None:
        try:
            NystraParams().replace(**dict(value))
        except TypeError as err:
            raise ValueError(str(err)) from None


def _check_plan_value(value: dict | None) -> None:
    check_plan(value)


@strict
class NystraRestorationConfig(PreTrainedConfig):
    """Base of the per-architecture configs (use ``Nystra<Arch>Config``)."""

    model_type = ""
    nystra_arch: ClassVar[str] = ""

    arch: str | None = None
    variant: str | None = None
    official_kwargs: dict | None = None
    attn_impl: str = validated_field(_check_attn_impl_value, default="softmax")
    nystra: dict | None = validated_field(_check_nystra_value, default=None)
    nystra_plan: dict | None = validated_field(_check_plan_value, default=None)
    # timm's fields of the shared config.json (regenerated on save from the fields above)
    architecture: str | None = None
    model_args: dict | None = None
    pretrained_cfg: dict | None = None
    nystra_hub_version: str | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.arch is None:
            self.arch = self.nystra_arch or None
        if self.official_kwargs is None:
            self.official_kwargs = {}
        if self.variant is not None:
            self.variant = get_variant(self.variant).name

    def validate_nystra_hub(self) -> None:
        """Class validator (run after ``__init__`` and by the model constructor)."""
        if not self.nystra_arch:
            raise ValueError("use a per-architecture config class such as NystraSwinIRConfig")
        if self.arch != self.nystra_arch:
            raise ValueError(f"{type(self).__name__} is for arch {self.nystra_arch!r}, got arch={self.arch!r}")
        hub.check_official_kwargs(self.arch, self.official_kwargs)
        check_attn_impl(self.attn_impl)
        hub.resolve_nystra(self.arch, self.nystra)
        check_plan(self.nystra_plan)
        if self.variant is not None and get_variant(self.variant).arch != self.arch:
            raise ValueError(f"variant {self.variant} is not a {self.arch} model")

    @property
    def nystra_params(self) -> NystraParams:
        return hub.resolve_nystra(self.arch, self.nystra)

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs):
        # An explicit attention choice at load time replaces the stored per-layer plan (as in load_pretrained).
        explicit = {"attn_impl", "nystra"} & set(kwargs)
        if explicit and "nystra_plan" not in kwargs and config_dict.get("nystra_plan"):
            logger.info("explicit %s given: the stored nystra_plan is not applied", sorted(explicit))
            kwargs["nystra_plan"] = None
        return super().from_dict(config_dict, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if not self.nystra_arch:
            return out
        try:  # timm's fields always follow the nystra_hub fields (an attn_impl override is written back to both)
            params = hub.resolve_nystra(self.nystra_arch, self.nystra).as_dict()
            timm = hub.timm_fields(self.nystra_arch, self.official_kwargs or {}, self.variant, self.attn_impl,
                                   params, self.nystra_plan)
        except (ValueError, TypeError, KeyError):  # an invalid config (being reported) still has a repr
            return out
        out["nystra"] = params
        out["architecture"] = timm["architecture"]
        out["model_args"] = timm["model_args"]
        out["pretrained_cfg"] = self.pretrained_cfg or timm["pretrained_cfg"]
        out["nystra_hub_version"] = __version__
        return out


class NystraRestorationModel(PreTrainedModel):
    """Base of the per-architecture models (use ``Nystra<Arch>Model`` or AutoModel)."""

    config_class = NystraRestorationConfig
    base_model_prefix = ""
    main_input_name = "pixel_values"
    input_modalities = "image"
    supports_gradient_checkpointing = False
    _no_split_modules: list[str] | None = None
    nystra_arch: ClassVar[str] = ""

    def __init__(self, config: NystraRestorationConfig, **nystra_params) -> None:
        super().__init__(config)
        if not isinstance(config, NystraRestorationConfig) or config.nystra_arch != self.nystra_arch:
            raise TypeError(f"{type(self).__name__} needs a {self.nystra_arch} config, got {type(config).__name__}")
        unknown = sorted(set(nystra_params) - set(hub.NYSTRA_PARAM_NAMES))
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown argument(s) {unknown}; Nyström parameters are "
                            f"{list(hub.NYSTRA_PARAM_NAMES)}")
        if nystra_params:
            config.nystra = {**(config.nystra or {}), **nystra_params}
            if config.nystra_plan:
                logger.info("explicit Nyström parameters given: the stored nystra_plan is not applied")
                config.nystra_plan = None
        config.validate()  # values assigned after the config was built (from_pretrained kwargs) are checked here
        config.nystra = config.nystra_params.as_dict()
        inner = _build_restoration_model(config)
        self._adopt(inner)
        self._no_split_modules = sorted({
            type(self.get_submodule(name.rsplit(".", 1)[0])).__name__ if "." in name else type(module).__name__
            for name, module in attention_modules(inner)
        })
        self.post_init()

    # -- composition ------------------------------------------------------------------------------------------
    def _adopt(self, inner: RestorationModel) -> None:
        """Make ``inner``'s registries this module's own: same tensors, same (official) state-dict keys."""
        for name in [*inner._modules, *inner._parameters, *inner._buffers]:
            if hasattr(type(self), name):
                raise RuntimeError(f"{inner.arch}: submodule/tensor name {name!r} clashes with a PreTrainedModel "
                                   "attribute; the transformers glue cannot expose it unprefixed")
        for attr in _SHARED_REGISTRIES:
            if getattr(self, attr):
                raise RuntimeError(f"{type(self).__name__}.{attr} was populated before adopting the model")
            object.__setattr__(self, attr, getattr(inner, attr))
        object.__setattr__(self, "_restoration", inner)

    @property
    def restoration_model(self) -> RestorationModel:
        """The RestorationModel (its own forward, ``official_inference``, windows...), sharing every tensor."""
        return self._restoration

    def train(self, mode: bool = True):
        super().train(mode)
        self._restoration.training = mode
        return self

    # -- what users call --------------------------------------------------------------------------------------
    def forward(self, pixel_values: torch.Tensor, return_dict: bool | None = None, **kwargs):
        reconstruction = self._restoration(pixel_values, **kwargs)
        return_dict = self.config.return_dict if return_dict is None else return_dict
        if not return_dict:
            return (reconstruction,)
        return ImageSuperResolutionOutput(reconstruction=reconstruction)

    def official_inference(self, x: torch.Tensor) -> torch.Tensor:
        return self._restoration.official_inference(x)

    @property
    def scale(self) -> int:
        return self._restoration.scale

    @property
    def attn_impl(self) -> str:
        return self._restoration.attn_impl

    def set_attn_impl(self, attn_impl: str, **nystra_params) -> NystraRestorationModel:
        """:meth:`RestorationModel.set_attn_impl` (the same rules: see there); the config then records the
        attention state as it is, so ``save_pretrained`` stores what runs."""
        self._restoration.set_attn_impl(attn_impl, **nystra_params)
        impl, params, plan = hub.attention_state(self._restoration)
        self.config.attn_impl, self.config.nystra, self.config.nystra_plan = impl, params.as_dict(), plan
        return self

    def reset_constants(self) -> None:
        self._restoration.reset_constants()

    # -- transformers hooks -----------------------------------------------------------------------------------
    @torch.no_grad()
    def _init_weights(self, module) -> None:
        """Parameters are initialised by the architecture's constructor or loaded; nothing to do per module.
        Derived buffers are rebuilt in :meth:`initialize_weights`."""

    def initialize_weights(self) -> None:
        # transformers runs this after loading (and in post_init off the meta device). It may skip modules it
        # believes initialised, so the derived buffers are rebuilt here unconditionally.
        super().initialize_weights()
        with torch.no_grad():
            self._restoration.reset_constants()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """``PreTrainedModel.from_pretrained``, strict: any missing, unexpected or mis-shaped key raises
        CheckpointMismatchError; then the config's ``nystra_plan`` (if any) is applied."""
        want_info = kwargs.pop("output_loading_info", False)
        kwargs["ignore_mismatched_sizes"] = True  # report mis-shaped keys below, with the others, then raise
        model, info = super().from_pretrained(
            pretrained_model_name_or_path, *model_args, output_loading_info=True, **kwargs
        )
        missing = sorted(info.get("missing_keys") or [])
        unexpected = sorted(info.get("unexpected_keys") or [])
        mismatched = sorted((k, tuple(a), tuple(b)) for k, a, b in (info.get("mismatched_keys") or []))
        if missing or unexpected or mismatched:
            raise CheckpointMismatchError(str(pretrained_model_name_or_path), missing, unexpected, mismatched)
        if info.get("error_msgs"):
            raise RuntimeError(f"loading {pretrained_model_name_or_path}: {info['error_msgs']}")
        on_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if on_meta:
            raise RuntimeError(f"{pretrained_model_name_or_path}: tensors left on the meta device: {on_meta[:8]}")
        finish_loaded(model._restoration, plan=model.config.nystra_plan, variant=model.config.variant,
                      source=str(pretrained_model_name_or_path))
        model.eval()
        return (model, info) if want_info else model

    def save_pretrained(self, save_directory, *args, **kwargs):
        applied = getattr(self._restoration, "nystra_plan_applied", None)
        if applied and applied.get("windows"):
            raise ValueError(
                "this model runs a plan that changed its windows, so its weights are no longer the trained "
                "ones; save the model before applying the plan and store the plan in config.nystra_plan"
            )
        return super().save_pretrained(save_directory, *args, **kwargs)


def _build_restoration_model(config: NystraRestorationConfig) -> RestorationModel:
    """Build under the ambient device (meta inside from_pretrained); constructors that compute tensors on the
    CPU (shift masks) cannot run on meta, so fall back to a CPU build, whose tensors are then loaded over."""
    args = dict(attn_impl=config.attn_impl, nystra=config.nystra_params, **(config.official_kwargs or {}))
    try:
        return build_model(config.arch, **args)
    except (NotImplementedError, RuntimeError) as err:
        if torch.get_default_device().type != "meta":
            raise
        logger.debug("%s cannot be built on the meta device (%s); building on the CPU", config.arch, err)
    # Meta means "parameters come from a checkpoint" (from_pretrained): skip the random fills as meta would.
    with torch.device("cpu"), hub.no_param_init():
        return build_model(config.arch, **args)


def _make_classes(arch: str) -> tuple[type[NystraRestorationConfig], type[NystraRestorationModel]]:
    config_name, model_name = hub.hf_class_names(arch)
    stem = ARCHITECTURES[arch].__name__
    config_cls = strict(type(config_name, (NystraRestorationConfig,), {
        "__module__": __name__,
        "__doc__": f"transformers config of nystra_hub's {stem} (model_type {hub.model_type(arch)!r}).",
        "model_type": hub.model_type(arch),
        "nystra_arch": arch,
    }))
    model_cls = type(model_name, (NystraRestorationModel,), {
        "__module__": __name__,
        "__doc__": f"nystra_hub's {stem} as a transformers PreTrainedModel (official state-dict keys).",
        "config_class": config_cls,
        "nystra_arch": arch,
    })
    return config_cls, model_cls


CONFIG_CLASSES: dict[str, type[NystraRestorationConfig]] = {}
MODEL_CLASSES: dict[str, type[NystraRestorationModel]] = {}


def register(arch: str) -> tuple[type[NystraRestorationConfig], type[NystraRestorationModel]]:
    """Create and register the classes of ``arch`` (idempotent)."""
    if arch in MODEL_CLASSES:
        return CONFIG_CLASSES[arch], MODEL_CLASSES[arch]
    config_cls, model_cls = _make_classes(arch)
    AutoConfig.register(hub.model_type(arch), config_cls, exist_ok=True)
    AutoModel.register(config_cls, model_cls, exist_ok=True)
    AutoModelForImageToImage.register(config_cls, model_cls, exist_ok=True)
    CONFIG_CLASSES[arch], MODEL_CLASSES[arch] = config_cls, model_cls
    globals()[config_cls.__name__] = config_cls
    globals()[model_cls.__name__] = model_cls
    return config_cls, model_cls


for _arch in ARCHITECTURES:
    register(_arch)

__all__ = ["CONFIG_CLASSES", "MODEL_CLASSES", "NystraRestorationConfig", "NystraRestorationModel", "register",
           *(c.__name__ for c in CONFIG_CLASSES.values()), *(c.__name__ for c in MODEL_CLASSES.values())]
