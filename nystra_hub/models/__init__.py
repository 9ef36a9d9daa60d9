"""One file per architecture; ``ARCHITECTURES`` maps the ``arch`` names of :func:`build_model` to classes."""

from __future__ import annotations

from nystra_hub.attention import NystraParams
from nystra_hub.models.common import ArchitectureSpec, Provenance, RestorationModel, unwrap_model
from nystra_hub.models.dehazeformer import DehazeFormer
from nystra_hub.models.swinir import SwinIR
from nystra_hub.models.uformer import Uformer

# A fourth architecture is one file here plus this entry and its catalogue variants (nystra_hub.io.variants).
ARCHITECTURES: dict[str, type[RestorationModel]] = {"swinir": SwinIR, "uformer": Uformer, "dehazeformer": DehazeFormer}


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


__all__ = ["ARCHITECTURES", "ArchitectureSpec", "DehazeFormer", "Provenance", "RestorationModel", "SwinIR", "Uformer",
           "build_model", "unwrap_model"]
