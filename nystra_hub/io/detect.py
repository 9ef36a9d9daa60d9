"""What is this checkpoint? Architecture and official constructor arguments from a state dict, as spandrel does.

    detection = nystra_hub.detect_checkpoint("001_classicalSR_DF2K_s64w8_SwinIR-M_x4.pth")
    detection.arch, detection.kwargs, detection.variant      # "swinir", {...}, "swinir-x4"
    model = nystra_hub.load_checkpoint("Uformer_B.pth", img_size=256)   # an override settles an open argument

Each architecture reads its own keys and shapes (``infer_kwargs`` at the end of its model class) and says which
arguments its tensors leave open, one "argument: why, and what settles it" line each. The catalogue then settles
an open argument when every variant of the same configuration agrees on it; overrides settle the rest. Loading
stays strict: a wrong inference fails with the keys that differ, never with silently ignored weights.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from nystra_hub.attention import NystraParams
from nystra_hub.io.checkpoints import CheckpointError, load_state_dict_strict, read_state_dict, unwrap_state_dict
from nystra_hub.io.plan import finish_loaded
from nystra_hub.io.variants import VARIANTS_BY_ARCH
from nystra_hub.models import ARCHITECTURES, RestorationModel, build_model

logger = logging.getLogger(__name__)


class UnknownCheckpointError(CheckpointError):
    """The state dict is not one of the architectures nystra_hub implements."""


@dataclass(frozen=True)
class Detection:
    arch: str
    #: the official constructor arguments (``build_model(arch, **kwargs)``)
    kwargs: dict
    #: the catalogue variant, when exactly one has this configuration
    variant: str | None
    #: every catalogue variant with this configuration: weights of several noise levels or datasets share one
    candidates: tuple[str, ...]
    #: what the tensors leave open and neither the catalogue nor an override settled: "argument: why, and what
    #: settles it"
    ambiguities: tuple[str, ...]

    @property
    def open_arguments(self) -> set[str]:
        return {_argument(text) for text in self.ambiguities}

    def settle(self, **overrides) -> Detection:
        """The detection with ``overrides`` taken as known (their ambiguities closed, the catalogue re-matched)."""
        if not overrides:
            return self
        still_open = [text for text in self.ambiguities if _argument(text) not in overrides]
        return _resolve(self.arch, {**self.kwargs, **overrides}, still_open)

    def describe(self) -> str:
        """What was detected, for people (``nystra-hub convert`` prints it)."""
        if self.variant:
            what = f"catalogue variant {self.variant}"
        elif self.candidates:
            what = (f"the configuration of {len(self.candidates)} catalogue variants ({', '.join(self.candidates)}); "
                    f"the weights do not say which (name one to choose)")
        else:
            what = "not a catalogue configuration"
        arguments = json.dumps(self.kwargs, default=repr)
        lines = [f"detected a {self.arch} checkpoint: {what}", f"  official arguments: {arguments}"]
        return "\n".join(lines + [f"  open: {text}" for text in self.ambiguities])


def detect_checkpoint(checkpoint: Mapping | str | os.PathLike) -> Detection:
    """Detect the architecture, constructor arguments and catalogue variant of a checkpoint.

    ``checkpoint`` is a file (.pth/.safetensors) or what ``torch.load`` returned: any released container
    (``params_ema``/``params``/``state_dict``, ``module.`` prefixes) is unwrapped as the strict loader does.
    Raises :class:`UnknownCheckpointError` naming the keys looked for when no architecture matches.
    """
    if isinstance(checkpoint, Mapping):
        state = unwrap_state_dict(checkpoint)
    else:
        state = read_state_dict(checkpoint)
    arch = _recognise(state)
    kwargs, ambiguities = ARCHITECTURES[arch].infer_kwargs(state)
    return _resolve(arch, kwargs, ambiguities)


def load_checkpoint(
    path: str | os.PathLike, attn_impl: str = "softmax", nystra: NystraParams | dict | None = None, **overrides
) -> RestorationModel:
    """Detect what ``path`` is, build it and load it strictly; ``overrides`` are official constructor arguments
    that settle what detection leaves open (e.g. ``img_range=255.0``). Open arguments left unsettled are logged
    as warnings (logger ``nystra_hub.io.detect``)."""
    state = read_state_dict(path)
    detection = detect_checkpoint(state).settle(**overrides)
    for text in detection.ambiguities:
        logger.warning("%s: %s", path, text)
    model = build_model(detection.arch, attn_impl=attn_impl, nystra=nystra, **detection.kwargs)
    # The state dict read above goes through the same strict check as load_original_checkpoint, read once.
    load_state_dict_strict(model, state, source=str(path))
    return finish_loaded(model, variant=detection.variant, source=str(path), weights=path)


def _recognise(state: Mapping) -> str:
    """The architecture whose ``detection_keys`` the state dict has."""
    for arch, cls in ARCHITECTURES.items():
        if all(key in state for key in cls.detection_keys):
            return arch
    looked_for = "; ".join(f"{arch}: {', '.join(cls.detection_keys)}" for arch, cls in ARCHITECTURES.items())
    sample = ", ".join(list(state)[:5]) or "none"
    raise UnknownCheckpointError(
        f"not a checkpoint of a known architecture: looked for the keys of {looked_for}; the state dict has "
        f"{len(state)} keys ({sample}{', ...' if len(state) > 5 else ''})"
    )


def _resolve(arch: str, kwargs: dict, ambiguities: list[str]) -> Detection:
    """Match the catalogue on every argument the tensors determine; adopt an open argument's value when every
    matching variant agrees on it (the catalogue is the evidence then), keep it open otherwise."""
    open_args = {_argument(text) for text in ambiguities}
    ours = _completed(arch, kwargs)
    matches = [v for v in VARIANTS_BY_ARCH.get(arch, []) if _same(_completed(arch, v.kwargs), ours, ignore=open_args)]
    kwargs, still_open = dict(kwargs), []
    for text in ambiguities:
        values = [_completed(arch, v.kwargs)[_argument(text)] for v in matches]
        if values and all(value == values[0] for value in values):
            kwargs[_argument(text)] = values[0]
        else:
            still_open.append(text)
    names = tuple(v.name for v in matches)
    return Detection(arch, kwargs, names[0] if len(names) == 1 else None, names, tuple(still_open))


def _completed(arch: str, kwargs: Mapping) -> dict:
    """``kwargs`` completed with the constructor's defaults, sequences as lists, so that two configurations
    compare equal exactly when every argument does (a catalogue entry leaves qkv_bias, ape... at the default)."""
    parameters = inspect.signature(ARCHITECTURES[arch]).parameters.values()
    full = {p.name: p.default for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD}
    full.update(kwargs)
    return {name: list(value) if isinstance(value, (tuple, list)) else value for name, value in full.items()}


def _same(theirs: dict, ours: dict, ignore: set[str]) -> bool:
    return all(theirs.get(name) == value for name, value in ours.items() if name not in ignore)


def _argument(ambiguity: str) -> str:
    """The argument an ambiguity line is about (the text before the first colon)."""
    return ambiguity.split(":", 1)[0].strip()


__all__ = ["Detection", "UnknownCheckpointError", "detect_checkpoint", "load_checkpoint"]
