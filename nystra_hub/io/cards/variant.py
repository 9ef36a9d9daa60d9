"""The card of a catalogue variant (:func:`build_model_card`) or of a configuration outside the catalogue
(:func:`build_custom_card`): front matter, where the weights come from, install and usage, the base model; the
measured sections come from :mod:`nystra_hub.io.cards.measurements`."""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from nystra_hub.io.cards.format import (
    INSTALL,
    LIBRARY_NAME,
    PIPELINE_TAG,
    TASK_TAGS,
    arch_title,
    check_card,
    paper_tags,
    papers,
)
from nystra_hub.io.cards.measurements import render_measurements
from nystra_hub.io.variants import Variant, get_variant
from nystra_hub.models import ARCHITECTURES

NO_MEASUREMENTS = (
    "No measurements are included in this card: no speed or quality numbers have been measured for this "
    "packaging. With exact attention (`attn_impl=\"softmax\"`) the model computes what the original "
    "implementation computes; PnP-Nystra attention changes the output, so its quality has to be measured."
)
UNRECORDED_ORIGIN = ("Weights saved from a model that was not loaded from a checkpoint file (built or changed in "
                     "memory: where they come from is not recorded), in the official state-dict format")


def _variant(variant: str | Variant) -> Variant:
    return variant if isinstance(variant, Variant) else get_variant(variant)


def card_tags(v: Variant) -> list[str]:
    return ["image-restoration", "pnp-nystra", "window-attention", v.arch, v.task, *TASK_TAGS.get(v.task, []),
            *v.tags, "timm", "transformers", *paper_tags(v.arch)]


def build_model_card(variant: str | Variant, measurements: dict | None = None, *,
                     converted_from: str | None = None, sha256: str | None = None,
                     origin_unrecorded: bool = False) -> ModelCard:
    """The card of a catalogue variant. ``measurements`` (see :func:`render_measurements` for the accepted form)
    fills the summary table and the detail sections. ``converted_from`` (a file name) and its ``sha256``: the card
    of a folder ``nystra-hub convert`` wrote from a user's file, which it calls the released weights only when
    ``sha256`` is the one the catalogue records for the release. ``origin_unrecorded``: the weights were not read
    from a file (built or changed in memory), so the card cannot say where they come from."""
    v = _variant(variant)
    eval_results, sections = render_measurements(v, measurements)
    origin = (UNRECORDED_ORIGIN, "") if origin_unrecorded else _origin(v, converted_from, sha256)
    body = _card_body(v, measurements or {}, sections, *origin)
    check_card(body, eval_results)
    data = _card_data(v, eval_results)
    if converted_from is not None:
        data.converted_from, data.converted_from_sha256 = converted_from, sha256
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def card_origin(file: str | None, sha256: str | None) -> dict:
    """:func:`build_model_card`'s keywords for weights last read from ``file`` (None: not read from a file)."""
    if file is None:
        return {"origin_unrecorded": True}
    return {"converted_from": Path(file).name, "sha256": sha256}


def is_release(v: Variant, sha256: str | None) -> bool:
    """Whether a file with this sha256 is ``v``'s released checkpoint: never when the catalogue records none."""
    return bool(v.sha256) and sha256 == v.sha256


def _origin(v: Variant, converted_from: str | None, sha256: str | None) -> tuple[str, str]:
    """(the card's opening words, a paragraph after them): where the weights come from, as far as it can know."""
    title = arch_title(v.arch)
    if converted_from is None:  # the card of the catalogue entry itself, published with the release
        return (f"The released {title} weights in the official state-dict format (keys and tensors as released)"
                if v.released else f"The paper's {title} configuration (no official checkpoint of it is listed)"), ""
    checksum = f"sha256 of `{converted_from}`: `{sha256}`"
    if is_release(v, sha256):
        return (f"The released {title} weights, converted with `nystra-hub convert` from `{converted_from}`, in the "
                "official state-dict format (keys and tensors as released)", f"{checksum} (the catalogued release's).")
    unknown = ("it differs from the release's, so these are not the released weights" if v.sha256 else
               "the catalogue records no checksum of the release, so whether these are the released weights is "
               "not known")
    return (f"Weights converted with `nystra-hub convert` from `{converted_from}` in the official state-dict format "
            "(keys and tensors as in that file)",
            f"`{converted_from}` is a checkpoint of the configuration of `{v.official_file}`; {checksum}; {unknown}.")


def _card_data(v: Variant, eval_results: list[EvalResult] | None) -> ModelCardData:
    """The card's front matter."""
    return ModelCardData(
        library_name=LIBRARY_NAME,
        pipeline_tag=PIPELINE_TAG,
        license=v.license.lower() or None,
        tags=card_tags(v),
        model_name=v.name,
        eval_results=eval_results,
        original_repository=v.source or None,
        original_checkpoint=v.official_file,
        original_checkpoint_released=v.released,
        architecture=v.arch,
        task=v.task,
        scale=v.scale,
        training_window=v.window,
        training_patch=v.patch,
    )


def _base_model_table(v: Variant) -> str:
    """The "Base model" table: architecture, task, training setup, the original release."""
    rows = [
        ("Architecture", f"{arch_title(v.arch)} (`{v.arch}`)"),
        ("Task", v.task_description),
        ("Scale", f"x{v.scale}"),
        ("Input channels", str(v.in_chans)),
        ("Training window", str(v.window)),
        ("Training patch", str(v.patch)),
        ("Training data", v.dataset or "not stated"),
    ]
    if v.level is not None:
        rows.append(("Noise sigma" if v.task.startswith("denoise") else "JPEG quality", str(v.level)))
    rows += [
        ("Original checkpoint", f"`{v.official_file}`" + ("" if v.released else " (no released file of this "
                                                            "configuration is listed)")),
        ("Original code", v.source or "not stated"),
        ("License", v.license or "not stated"),
    ]
    if v.notes:
        rows.append(("Notes", v.notes))
    return "\n".join(["| | |", "|---|---|", *(f"| {k} | {val} |" for k, val in rows)])


def _usage(v: Variant) -> str:
    """One block that runs offline from a converted folder, then the hub id the folder will have."""
    folder = f"{v.name}/"
    source = f", from {v.source}" if v.source else ""
    return f"""```python
# once, in a shell (the released file{source}):
#   nystra-hub convert {Path(v.official_file).name} --variant {v.name} --out {folder}
import nystra_hub
from PIL import Image

model = nystra_hub.load("{folder}")         # offline, exact attention; attn_impl="nystra" for PnP-Nystra
restored = nystra_hub.restore(model, Image.open("input.png"))   # PIL in, PIL out (padding, tiling inside)
```

Hub id once published: `nystra/{v.name}` (**not published yet**; `nystra_hub.load("nystra/{v.name}")` will
then read it). The folder also loads as `AutoModel.from_pretrained("{folder}")` (transformers) and
`timm.create_model("local-dir:{folder}", pretrained=True)`."""


def _card_body(v: Variant, m: dict, sections: dict, origin: str, origin_note: str = "") -> str:
    """The card's markdown: the first screen (summary table, quality, install, usage), the details, the model."""
    note = f"\n\n{origin_note}" if origin_note else ""
    low, high = ARCHITECTURES[v.arch].spec.value_range
    first = sections.get("summary") or ("**Speed:** not measured. **Quality:** not measured (PnP-Nystra changes "
                                        "the output; no quality measurement is included in this card).")
    details = "\n\n".join(sections[k] for k in ("speed", "quality", "results") if sections.get(k))
    measured = ("" if sections.get("summary") or sections.get("results") else
                f"\n\n## Measurements\n\n{NO_MEASUREMENTS}")
    runs = f"\n\n{sections['runs']}" if sections.get("runs") else ""
    footer = f"\n\nRendered from the JSON of these runs by `{m['command']}`." if m.get("command") else ""
    return f"""
# {v.name}: {arch_title(v.arch)}, {v.task_description}

{first}

{INSTALL}

{_usage(v)}
{(chr(10) + details + chr(10)) if details else ""}
## The model

{origin}, packaged for `nystra_hub`, 🤗 transformers and timm, with a switch between exact attention and
training-free PnP-Nystra (Nyström) window attention.{note} `model(x)` is the network's forward on a float batch in
[{low:g}, {high:g}]; `nystra_hub.restore(...)` adds the official padding, tiling and image conversion.

{_base_model_table(v)}

{papers(v.arch)}{measured}{runs}{footer}
"""


def build_custom_card(arch: str, official_kwargs: dict, *, converted_from: str | None = None,
                      sha256: str | None = None) -> ModelCard:
    """A short card for a configuration that is not in the catalogue (e.g. a converted test model);
    ``converted_from`` (a file name) and its ``sha256`` say which file ``nystra-hub convert`` read."""
    data = ModelCardData(library_name=LIBRARY_NAME, pipeline_tag=PIPELINE_TAG,
                         tags=["image-restoration", "pnp-nystra", arch, *paper_tags(arch)], architecture=arch)
    source = ""
    if converted_from is not None:
        data.converted_from, data.converted_from_sha256 = converted_from, sha256
        source = f" from `{converted_from}`" + (f" (sha256 `{sha256}`)" if sha256 else "")
    body = f"""
# Custom {arch_title(arch)} configuration

**Speed:** not measured. **Quality:** not measured.

A {arch_title(arch)} model converted with `nystra-hub convert`{source}, built from explicit constructor arguments;
it is not one of the catalogued releases.

```json
{json.dumps(official_kwargs, indent=2)}
```

{papers(arch)}

## Measurements

{NO_MEASUREMENTS}
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")
