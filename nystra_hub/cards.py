"""Model cards (``README.md`` of a hub folder) rendered from the catalogue with huggingface_hub's ModelCard.

Front matter: ``library_name: nystra_hub``, ``pipeline_tag: image-to-image``, tags, license, the original
release (repository and file) and, when measurements are given, a ``model-index`` with their metrics. The card
never states a number that was not measured: without measurements it says so plainly.

``nystra-hub cards VARIANT ... [--all] [--out-dir model_cards]`` writes ``<out-dir>/<variant>.md``.
"""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .variants import VARIANTS, Variant, get_variant

LIBRARY_NAME = "nystra_hub"
PIPELINE_TAG = "image-to-image"

_ARCH_TITLES = {"swinir": "SwinIR", "uformer": "Uformer", "dehazeformer": "DehazeFormer"}
_PAPERS = {
    "swinir": "SwinIR: Image Restoration Using Swin Transformer (Liang et al., ICCVW 2021)",
    "uformer": "Uformer: A General U-Shaped Transformer for Image Restoration (Wang et al., CVPR 2022)",
    "dehazeformer": "Vision Transformers for Single Image Dehazing (Song et al., IEEE TIP 2023)",
}
_TASK_TAGS = {
    "classical-sr": ["super-resolution"],
    "lightweight-sr": ["super-resolution"],
    "real-sr": ["super-resolution", "real-world-super-resolution"],
    "denoise-gray": ["denoising"],
    "denoise-color": ["denoising"],
    "jpeg-gray": ["jpeg-artifact-removal"],
    "jpeg-color": ["jpeg-artifact-removal"],
    "denoise-real": ["denoising"],
    "deblur": ["deblurring"],
    "dehaze": ["dehazing"],
}
NO_MEASUREMENTS = (
    "No measurements are included in this card: no speed or quality numbers have been measured for this "
    "packaging. With exact attention (`attn_impl=\"softmax\"`) the model computes what the original "
    "implementation computes; PnP-Nystra attention changes the output, so its quality has to be measured."
)


def _title(arch: str) -> str:
    return _ARCH_TITLES.get(arch, arch)


def _variant(variant: str | Variant) -> Variant:
    return variant if isinstance(variant, Variant) else get_variant(variant)


def card_tags(v: Variant) -> list[str]:
    return ["image-restoration", "pnp-nystra", "window-attention", v.arch, v.task, *_TASK_TAGS.get(v.task, []),
            *v.tags, "timm", "transformers"]


def build_model_card(variant: str | Variant, measurements: dict | None = None) -> ModelCard:
    """The card of a catalogue variant. ``measurements`` (None for now) adds a model-index and result tables;
    see :func:`render_measurements` for the accepted form."""
    v = _variant(variant)
    repo_id = f"nystra/{v.name}"
    eval_results, results_md = render_measurements(v, measurements)
    data = ModelCardData(
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
    rows = [
        ("Architecture", f"{_title(v.arch)} (`{v.arch}`)"),
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
    table = "\n".join(["| | |", "|---|---|", *(f"| {k} | {val} |" for k, val in rows)])
    intro = (f"The released {_title(v.arch)} weights" if v.released
             else f"The paper's {_title(v.arch)} configuration (no official checkpoint of it is listed)")
    value_range = "[-1, 1]" if v.arch == "dehazeformer" else "[0, 1]"
    body = f"""
# {v.name}: {_title(v.arch)}, {v.task_description}

{intro} in the official state-dict format (keys and tensors as released), packaged for
`nystra_hub`, 🤗 transformers and timm, with a switch between exact attention and training-free PnP-Nystra
(Nyström) window attention.

## Base model

{table}

Paper: {_PAPERS.get(v.arch, "see the original code")}.

## Usage

```python
import nystra_hub  # registers the transformers and timm classes

model = nystra_hub.load_pretrained("{repo_id}")                        # exact attention
model = nystra_hub.load_pretrained("{repo_id}", attn_impl="nystra")    # PnP-Nystra attention

from transformers import AutoModel
model = AutoModel.from_pretrained("{repo_id}", attn_impl="nystra")      # outputs.reconstruction

import timm
model = timm.create_model("{v.timm_name}", pretrained=True, attn_impl="nystra")
model = timm.create_model("hf-hub:{repo_id}", pretrained=True)
```

`model(x)` is the network's forward on a float batch in {value_range}; `model.official_inference(x)` runs the
official test protocol (padding, cropping, clamping) on images in [0, 1], and `nystra_hub.restore(...)` handles
image files, tiling and integer images.

## Measurements

{results_md}
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def build_custom_card(arch: str, official_kwargs: dict) -> ModelCard:
    """A short card for a configuration that is not in the catalogue (e.g. a converted test model)."""
    data = ModelCardData(library_name=LIBRARY_NAME, pipeline_tag=PIPELINE_TAG,
                         tags=["image-restoration", "pnp-nystra", arch], architecture=arch)
    body = f"""
# Custom {_title(arch)} configuration

A {_title(arch)} model converted with `nystra-hub convert` from explicit constructor arguments; it is not one of
the catalogued releases.

```json
{json.dumps(official_kwargs, indent=2)}
```

## Measurements

{NO_MEASUREMENTS}
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def render_measurements(v: Variant, measurements: dict | None) -> tuple[list[EvalResult] | None, str]:
    """(model-index entries, markdown) for ``measurements``; ``(None, NO_MEASUREMENTS)`` when there are none.

    Accepted now: ``{"results": [{"dataset": "Set5", "metric": "PSNR", "value": 38.1, "attn_impl": "softmax",
    "split": "test", "notes": "..."}, ...]}``. Speed and fidelity tables from benchmark JSON go here too: add a
    key and its renderer; unknown keys raise so that nothing is silently left out of a card.
    """
    if not measurements:
        return None, NO_MEASUREMENTS
    unknown = sorted(set(measurements) - {"results"})
    if unknown:
        raise NotImplementedError(f"rendering of measurement section(s) {unknown} is not implemented yet")
    eval_results, lines = [], ["| dataset | metric | value | attention |", "|---|---|---|---|"]
    for row in measurements["results"]:
        missing = [k for k in ("dataset", "metric", "value") if k not in row]
        if missing:
            raise ValueError(f"measurement {row} lacks {missing}")
        impl = row.get("attn_impl", "softmax")
        eval_results.append(EvalResult(
            task_type=PIPELINE_TAG, task_name=v.task_description, dataset_type=str(row["dataset"]).lower(),
            dataset_name=str(row["dataset"]), dataset_split=row.get("split"), metric_type=str(row["metric"]).lower(),
            metric_name=f"{row['metric']} ({impl})", metric_value=row["value"],
        ))
        lines.append(f"| {row['dataset']} | {row['metric']} | {row['value']} | {impl} |")
    return eval_results, "\n".join(lines)


# -- `nystra-hub cards` --------------------------------------------------------------------------------------------
def add_arguments(parser) -> None:
    parser.add_argument("variants", nargs="*", metavar="VARIANT", help="catalogue variants (see nystra-hub list)")
    parser.add_argument("--all", action="store_true", help="every catalogue variant")
    parser.add_argument("--out-dir", default="model_cards", help="output folder (default: model_cards)")


def run(args) -> int:
    import sys

    names = list(VARIANTS) if args.all else args.variants
    if not names:
        print("error: name at least one variant or pass --all", file=sys.stderr)
        return 2
    try:
        variants = [get_variant(n) for n in names]
    except KeyError as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 2
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for v in variants:
        path = out / f"{v.name}.md"
        build_model_card(v).save(str(path))
        print(path)
    return 0
