"""One file per architecture; ``ARCHITECTURES`` maps the ``arch`` names of :func:`build_model` to classes."""

from __future__ import annotations

from torch import nn

from ..attention import NystraParams
from .common import RestorationModel
from .swinir import SwinIR

ARCHITECTURES: dict[str, type[RestorationModel]] = {"swinir": SwinIR}

try:  # filled in as the architectures land
    from .uformer import Uformer

    ARCHITECTURES["uformer"] = Uformer
except ImportError:  # pragma: no cover
    pass
try:
    from .dehazeformer import DehazeFormer

    ARCHITECTURES["dehazeformer"] = DehazeFormer
except ImportError:  # pragma: no cover
    pass


def build_model(
    arch: str, attn_impl: str = "softmax", nystra: NystraParams | dict | None = None, **official_kwargs
) -> RestorationModel:
    """Build ``arch`` from the official constructor arguments (as in the golden ``case.json``).

    The model's ``state_dict()`` keys are the official ones; ``attn_impl`` is "softmax", "sdpa" or "nystra",
    ``nystra`` overrides the architecture's default Nyström parameters. The model is returned in eval mode.
    """
    try:
        cls = ARCHITECTURES[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; known: {sorted(ARCHITECTURES)}") from None
    try:
        model = cls(**official_kwargs, attn_impl=attn_impl, nystra=nystra)
    except TypeError as err:
        raise TypeError(f"{arch}: {err}") from err
    return model.eval()


def is_restoration_model(obj: object) -> bool:
    return isinstance(obj, RestorationModel) or (
        isinstance(obj, nn.Module) and isinstance(getattr(obj, "model", None), RestorationModel)
    )


__all__ = ["ARCHITECTURES", "RestorationModel", "SwinIR", "build_model"]
