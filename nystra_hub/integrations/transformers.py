"""transformers glue: one config class and one PreTrainedModel class per architecture, registered with
AutoConfig, AutoModel and AutoModelForImageToImage when ``nystra_hub`` is imported. No model logic lives here.

Classes, for every ``arch`` of :data:`nystra_hub.models.ARCHITECTURES`: ``Nystra<Arch>Config`` (model_type
``nystra_<arch>``) and ``Nystra<Arch>Model``, e.g. ``NystraSwinIRConfig`` / ``NystraSwinIRModel``.

- The config carries ``official_kwargs`` (the official constructor arguments), ``attn_impl`` ("softmax", "sdpa",
  "nystra"), ``nystra`` (Nyström parameters) and an optional ``nystra_plan``; every value is validated on
  assignment and again when a model is built. ``attn_impl`` is this package's switch and is unrelated to
  transformers' ``attn_implementation``. The same ``config.json`` carries timm's fields (see :mod:`nystra_hub.io.hub`).
- The model *is* the RestorationModel's module tree: the RestorationModel is built inside ``__init__`` and its
  parameter/buffer/submodule registries become the model's own, so state-dict keys are the official ones with no
  prefix (``base_model_prefix = ""``). ``model.restoration_model`` is the RestorationModel, sharing every tensor.
- ``forward(pixel_values)`` runs the network's forward (a float batch; [0, 1] for SwinIR/Uformer, [-1, 1] for
  DehazeFormer) and returns an ``ImageSuperResolutionOutput`` whose ``reconstruction`` is the restored batch
  (a tuple ``(reconstruction,)`` with ``return_dict=False``).
- ``from_pretrained`` is strict: missing, unexpected or mis-shaped keys raise
  :class:`~nystra_hub.io.checkpoints.CheckpointMismatchError` naming them. transformers 5 builds the model on the
  meta device and leaves non-persistent buffers uninitialised; ``initialize_weights`` (run by transformers
  after loading) therefore always calls the model's ``reset_constants()``, which recomputes every derived
  buffer (relative-position indices, shift masks, SwinIR's ``mean``), then puts back the buffers it loaded.
- Extra ``from_pretrained`` keyword arguments ``landmarks``, ``iters``, ``tau``, ``bias``, ``mask`` update the
  Nyström parameters. Explicit ``attn_impl``/``nystra``/Nyström arguments replace a stored ``nystra_plan``.
- transformers' own ``attn_implementation`` (``from_pretrained``, ``from_config``, ``set_attn_implementation``) is
  translated: ``"eager"`` is ``attn_impl="softmax"``, ``"sdpa"`` is ``attn_impl="sdpa"``; other values (flash
  attention kernels...) are refused with a message naming ``attn_impl``.
- ``save_pretrained`` also writes the model card (``README.md``), as :func:`nystra_hub.io.hub.save_hub_folder` does.
- :class:`NystraImageProcessor` (``AutoImageProcessor``) does the official pre- and post-processing: range
  mapping and the official test script's padding, then crop, clamp and 8-bit rounding. transformers 5 has no
  image-to-image pipeline, so processor + model + ``postprocess`` (or :func:`nystra_hub.restore`) is the route.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from huggingface_hub.dataclasses import strict, validated_field
from PIL import Image
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageToImage,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.modeling_outputs import ImageSuperResolutionOutput
from transformers.processing_utils import ImagesKwargs
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, cached_file

from nystra_hub._version import __version__
from nystra_hub.attention import NystraParams, attention_modules, check_attn_impl
from nystra_hub.io import hub
from nystra_hub.io.cards import build_custom_card, build_model_card, card_origin
from nystra_hub.io.checkpoints import CheckpointError, CheckpointMismatchError, check_dtypes, read_safetensors_dtypes
from nystra_hub.io.images import ImageLayout, from_float_batch, split_alpha, to_float_batch, to_model_channels
from nystra_hub.io.plan import check_plan, finish_loaded
from nystra_hub.io.variants import get_variant
from nystra_hub.models import ARCHITECTURES, RestorationModel, build_model
from nystra_hub.models.common import OFFICIAL_PADDINGS, Provenance, unwrap_model

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


# transformers' attention switch in this package's terms: "eager" is attention as written (our exact softmax path),
# "sdpa" the fused kernel. Flash/flex kernels have no counterpart: window attention with a position bias and shift
# masks runs through this package's own implementations only.
HF_ATTN_IMPLEMENTATIONS = {"eager": "softmax", "sdpa": "sdpa"}


def translate_attn_implementation(kwargs: dict) -> None:
    """Replace transformers' ``attn_implementation`` in ``kwargs`` by this package's ``attn_impl`` (in place)."""
    value = kwargs.pop("attn_implementation", None)
    if value is None:
        return
    impl = HF_ATTN_IMPLEMENTATIONS.get(value) if isinstance(value, str) else None
    if impl is None:
        raise ValueError(
            f"attn_implementation={value!r} is not available for nystra_hub models: they choose attention with "
            "attn_impl='softmax' (exact), 'sdpa' (exact, fused) or 'nystra' (PnP-Nystra); "
            f"attn_implementation {sorted(HF_ATTN_IMPLEMENTATIONS)} map to attn_impl "
            f"{sorted(set(HF_ATTN_IMPLEMENTATIONS.values()))}"
        )
    if kwargs.get("attn_impl", impl) != impl:
        raise ValueError(f"attn_implementation={value!r} means attn_impl={impl!r}, but attn_impl="
                         f"{kwargs['attn_impl']!r} was given too; give attn_impl only")
    kwargs["attn_impl"] = impl


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
        translate_attn_implementation(kwargs)
        if "attn_impl" in kwargs:  # from attn_implementation: applied like the field itself
            self.attn_impl = kwargs.pop("attn_impl")
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
        translate_attn_implementation(kwargs)  # AutoModel/AutoConfig.from_pretrained pass it here
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

    @property
    def provenance(self) -> Provenance:
        return self._restoration.provenance

    def set_attn_impl(self, attn_impl: str, **nystra_params) -> NystraRestorationModel:
        """:meth:`RestorationModel.set_attn_impl` (the same rules: see there); the config then records the
        attention state as it is, so ``save_pretrained`` stores what runs."""
        self._restoration.set_attn_impl(attn_impl, **nystra_params)
        impl, params, plan = hub.attention_state(self._restoration)
        self.config.attn_impl, self.config.nystra, self.config.nystra_plan = impl, params.as_dict(), plan
        return self

    def set_attn_implementation(self, attn_implementation: str, **kwargs) -> NystraRestorationModel:
        """transformers' switch, translated (``"eager"`` → softmax, ``"sdpa"`` → sdpa); see :meth:`set_attn_impl`
        for PnP-Nystra."""
        translated = {"attn_implementation": attn_implementation}
        translate_attn_implementation(translated)
        return self.set_attn_impl(translated["attn_impl"])

    def reset_constants(self) -> None:
        self._restoration.reset_constants()

    # -- transformers hooks -----------------------------------------------------------------------------------
    @torch.no_grad()
    def _init_weights(self, module) -> None:
        """Parameters are initialised by the architecture's constructor or loaded; nothing to do per module.
        Derived buffers are rebuilt in :meth:`initialize_weights`."""

    def initialize_weights(self) -> None:
        # transformers runs this after loading (and in post_init off the meta device). It may skip modules it
        # believes initialised, so the derived buffers are rebuilt here unconditionally, except those it loaded
        # (flagged _is_hf_initialized): a checkpoint's buffers stay as stored (DehazeFormer's relative_positions
        # recomputed on another CPU can differ from the file's in the last bit).
        super().initialize_weights()
        loaded = {name: buffer.clone() for name, buffer in self.named_buffers()
                  if getattr(buffer, "_is_hf_initialized", False) and not buffer.is_meta}
        with torch.no_grad():
            self._restoration.reset_constants()
            for name, value in loaded.items():
                self.get_buffer(name).copy_(value)

    @classmethod
    def _from_config(cls, config, **kwargs):
        translate_attn_implementation(kwargs)
        if "attn_impl" in kwargs:
            config.attn_impl = kwargs.pop("attn_impl")
        return super()._from_config(config, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """``PreTrainedModel.from_pretrained``, strict: any missing, unexpected or mis-shaped key raises
        CheckpointMismatchError; then the config's ``nystra_plan`` (if any) is applied. ``attn_implementation``
        is translated to ``attn_impl`` (see the module doc)."""
        translate_attn_implementation(kwargs)
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
        files = _check_stored_values(model, pretrained_model_name_or_path, kwargs)
        finish_loaded(model._restoration, plan=model.config.nystra_plan, variant=model.config.variant,
                      source=str(pretrained_model_name_or_path), weights=files[0] if len(files) == 1 else None)
        model.eval()
        return (model, info) if want_info else model

    def save_pretrained(self, save_directory, *args, **kwargs):
        """``PreTrainedModel.save_pretrained`` plus the model card (``README.md``) a hub folder carries.
        (``push_to_hub`` uploads transformers' own card; ``nystra-hub convert --push-to-hub`` or
        ``huggingface_hub.upload_folder`` on the saved folder publish this one.)"""
        applied = self._restoration.provenance.plan
        if applied and applied.get("windows"):
            raise ValueError(
                "this model runs a plan that changed its windows, so its weights are no longer the trained "
                "ones; save the model before applying the plan and store the plan in config.nystra_plan"
            )
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if not os.path.isfile(save_directory):  # transformers logs and returns when given a file
            model_card(self.config, self._restoration.provenance).save(str(Path(save_directory) / hub.CARD_NAME))
        return result


def _weight_files(name_or_path, kwargs: dict) -> list[str]:
    """The safetensors file(s) ``from_pretrained`` read: a folder's, or the Hub cache's for a repo id."""
    hub_kwargs = {k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only", "subfolder")
                  if k in kwargs}
    single = cached_file(name_or_path, SAFE_WEIGHTS_NAME, _raise_exceptions_for_missing_entries=False, **hub_kwargs)
    if single:
        return [single]
    index = cached_file(name_or_path, SAFE_WEIGHTS_INDEX_NAME, _raise_exceptions_for_missing_entries=False,
                        **hub_kwargs)
    if not index:
        return []
    shards = sorted(set(json.loads(Path(index).read_text())["weight_map"].values()))
    return [cached_file(name_or_path, shard, **hub_kwargs) for shard in shards]


def _check_stored_values(model: NystraRestorationModel, name_or_path, kwargs: dict) -> list[str]:
    """The checks ``nystra_hub.load`` makes on every checkpoint, for transformers' loader (which casts while
    loading): no integer or bool tensors stored for floating-point weights, no NaN/Inf. Returns the files read."""
    own = model._restoration.state_dict()
    files = _weight_files(name_or_path, kwargs)
    for path in files:
        check_dtypes(own, read_safetensors_dtypes(path), source=str(name_or_path))
    non_finite = [k for k, v in own.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if non_finite:
        raise CheckpointError(f"{name_or_path}: non-finite values (NaN/Inf) in {non_finite[:8]}")
    return files


def model_card(config: NystraRestorationConfig, provenance: Provenance):
    """The card :func:`nystra_hub.io.hub.save_hub_folder` writes: the catalogue variant's, saying where the weights
    come from as far as ``provenance`` knows, or a custom one."""
    if config.variant:
        return build_model_card(config.variant, **card_origin(provenance.file, provenance.sha256))
    return build_custom_card(config.arch, config.official_kwargs or {})


# -- image processor -------------------------------------------------------------------------------------------------
class NystraImageProcessorKwargs(ImagesKwargs, total=False):
    arch: str
    scale: int
    value_range: list[float]
    padding: str
    pad_multiple: int
    in_channels: int


class NystraImageProcessor(BaseImageProcessor):
    """The official pre- and post-processing of a nystra_hub model, as a transformers image processor::

        processor = AutoImageProcessor.from_pretrained("reference_models/swinir-ref-x2")
        model = AutoModel.from_pretrained("reference_models/swinir-ref-x2")
        inputs = processor(image, return_tensors="pt")        # pixel_values: the forward's range, padded
        with torch.no_grad():
            outputs = model(**inputs)
        restored = processor.postprocess(outputs, [image])[0]  # PIL: cropped, clamped, 8-bit

    ``preprocess``: images (PIL; NumPy ``(H, W[, C])`` and tensors ``(C, H, W)`` / ``(B, C, H, W)`` of uint8,
    uint16 or float in [0, 1], as :func:`nystra_hub.restore` takes them) → [0, 1] → the forward's value range,
    padded as the official test script pads (SwinIR: flip to the next window multiple, always by at least one
    pixel; Uformer: zeros around the image, centred, to a square multiple of 128; DehazeFormer: none, its forward
    pads itself). Images of one call must pad to one size.
    ``postprocess``: each output cropped back to ``scale`` × its original size, mapped to [0, 1], clamped and (for
    PIL/NumPy output) rounded to 8 bits, as the official scripts save images. Large images: :func:`nystra_hub.restore`
    tiles them.
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = NystraImageProcessorKwargs

    def __init__(self, arch: str = "swinir", scale: int = 1, value_range=(0.0, 1.0), padding: str = "none",
                 pad_multiple: int = 1, in_channels: int = 3, **kwargs) -> None:
        super().__init__(**kwargs)
        if padding not in OFFICIAL_PADDINGS:
            raise ValueError(f"padding must be one of {sorted(OFFICIAL_PADDINGS)}, got {padding!r}")
        self.arch, self.scale, self.padding = arch, int(scale), padding
        self.value_range = [float(v) for v in value_range]
        self.pad_multiple, self.in_channels = int(pad_multiple), int(in_channels)

    @classmethod
    def from_model(cls, model) -> NystraImageProcessor:
        """The processor of a loaded model (RestorationModel, transformers or timm model)."""
        net = unwrap_model(model)
        return cls(arch=net.arch, scale=net.scale, value_range=list(net.spec.value_range),
                   padding=net.spec.padding.kind, pad_multiple=net.official_multiple, in_channels=net.in_channels)

    @classmethod
    def from_config(cls, config: NystraRestorationConfig) -> NystraImageProcessor:
        """The processor of the model ``config`` describes (built once, without random initialisation)."""
        return cls.from_model(hub.build_from_config(hub.validate_hub_config(config.to_dict())))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs) -> NystraImageProcessor:
        """A saved ``preprocessor_config.json``; without one (hub folders written by ``nystra-hub convert`` and
        ``train-reference`` have none), the processor of the model the folder's ``config.json`` describes."""
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except OSError:
            hub_kwargs = {k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only") if k in kwargs}
            return cls.from_config(AutoConfig.from_pretrained(pretrained_model_name_or_path, **hub_kwargs))

    @classmethod
    def from_dict(cls, image_processor_dict: dict[str, Any], **kwargs):
        """A processor's saved settings, or a model's ``config.json``: transformers 5.2x's
        ``AutoImageProcessor.from_pretrained`` hands over a folder's ``config.json`` when the folder has no
        ``preprocessor_config.json`` (its timm ``pretrained_cfg`` reads as a timm checkpoint's processing
        settings), and building from it with defaults would silently use scale 1 and no padding."""
        if "official_kwargs" in image_processor_dict:
            config = hub.validate_hub_config(image_processor_dict)
            processor = cls.from_model(hub.build_from_config(config))
            return (processor, {}) if kwargs.get("return_unused_kwargs") else processor
        return super().from_dict(image_processor_dict, **kwargs)

    # -- pre-processing -------------------------------------------------------------------------------------------
    def preprocess(self, images, return_tensors="pt", **kwargs) -> BatchFeature:
        batch = [self.pad(self.to_unit_range(image)) for image in _image_list(images)]
        if len({tuple(x.shape) for x in batch}) > 1:
            raise ValueError(f"these images pad to different sizes {sorted({tuple(x.shape) for x in batch})}: "
                             "process them one call each")
        low, high = self.value_range
        pixel_values = torch.stack(batch) * (high - low) + low
        return BatchFeature({"pixel_values": pixel_values}, tensor_type=return_tensors)

    def to_unit_range(self, image) -> torch.Tensor:
        """One image → (C, H, W) float32 in [0, 1] with the model's input channels (alpha dropped, gray
        replicated for an RGB model, RGB turned into luma for a gray one), through the package's one converter
        (:func:`~nystra_hub.io.images.to_float_batch`). A PIL image's pixels are taken as stored (EXIF orientation
        not applied, as transformers' processors take them), so its size is the one ``postprocess`` crops to."""
        batch, _ = to_float_batch(image, exif_orientation=False)
        if batch.shape[0] != 1:
            raise ValueError(f"to_unit_range takes one image, got a batch of {batch.shape[0]}")
        colour, _ = split_alpha(batch)
        return to_model_channels(colour, self.in_channels, color="luma", model=self.arch)[0][0]

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """The official test script's padding of one (C, H, W) image: the models' own (``official_pad``)."""
        return OFFICIAL_PADDINGS[self.padding].pad(x, self.pad_multiple)[0]

    def offset(self, h: int, w: int) -> tuple[int, int]:
        """(top, left) of an ``h×w`` image inside its padded input."""
        return OFFICIAL_PADDINGS[self.padding].offset(h, w, self.pad_multiple)

    # -- post-processing ------------------------------------------------------------------------------------------
    def postprocess(self, outputs, original_sizes, output_type: str = "pil") -> list:
        """Restored images from the model's ``outputs`` (or its reconstruction tensor). ``original_sizes``: the
        input images themselves, or their ``(height, width)``. ``output_type``: "pil", "np" (uint8 arrays) or
        "pt" ((C, H, W) float tensors in [0, 1], not rounded)."""
        reconstruction = getattr(outputs, "reconstruction", outputs)
        if isinstance(reconstruction, (tuple, list)):
            reconstruction = reconstruction[0]
        sizes = [_image_size(item) for item in _image_list(original_sizes, sizes=True)]
        if len(sizes) != reconstruction.shape[0]:
            raise ValueError(f"{len(sizes)} original sizes for a batch of {reconstruction.shape[0]} outputs")
        low, high = self.value_range
        s = self.scale
        results = []
        for out, (h, w) in zip(reconstruction, sizes):
            top, left = self.offset(h, w)
            out = out[:, top * s:(top + h) * s, left * s:(left + w) * s].float()
            out = ((out - low) / (high - low)).clamp(0, 1)
            if output_type == "pt":
                results.append(out)
                continue
            layout = ImageLayout("numpy" if output_type == "np" else "pil", np.uint8, 2 if out.shape[0] == 1 else 3)
            results.append(from_float_batch(out[None].detach(), layout))
        return results


def _image_list(images, sizes: bool = False) -> list:
    """One image (or size), a list of them, or a (B, C, H, W) tensor → a list."""
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        return list(images.unbind(0))
    if isinstance(images, (list, tuple)) and not (sizes and len(images) == 2 and isinstance(images[0], int)):
        return list(images)
    return [images]


def _image_size(item) -> tuple[int, int]:
    """(height, width) of an image (PIL, NumPy HWC, tensor CHW) or of a given ``(height, width)``."""
    if isinstance(item, Image.Image):
        return item.height, item.width
    if isinstance(item, torch.Tensor):
        return int(item.shape[-2]), int(item.shape[-1])
    if isinstance(item, np.ndarray):
        return int(item.shape[0]), int(item.shape[1])
    height, width = item
    return int(height), int(width)


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
    # one torch implementation serves both of transformers' backends (so neither is reported missing)
    AutoImageProcessor.register(config_cls, image_processor_classes=dict.fromkeys(("torchvision", "pil"),
                                                                                  NystraImageProcessor), exist_ok=True)
    CONFIG_CLASSES[arch], MODEL_CLASSES[arch] = config_cls, model_cls
    globals()[config_cls.__name__] = config_cls
    globals()[model_cls.__name__] = model_cls
    return config_cls, model_cls


for _arch in ARCHITECTURES:
    register(_arch)

__all__ = ["CONFIG_CLASSES", "MODEL_CLASSES", "NystraImageProcessor", "NystraRestorationConfig",
           "NystraRestorationModel", "register", "translate_attn_implementation",
           *(c.__name__ for c in CONFIG_CLASSES.values()), *(c.__name__ for c in MODEL_CLASSES.values())]
