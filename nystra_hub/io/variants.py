"""The catalogue of named, ready-to-use variants: every released SwinIR, Uformer and DehazeFormer checkpoint.

Each entry carries the official constructor arguments (what the official test scripts build), the released file
name, the task, scale, training window and patch. ``build_variant(name)`` builds the architecture;
``load_variant(name, path)`` also loads a released file strictly.

A name alone holds no weights: :func:`weights_hint` says how to get them (the released file, ``--weights``,
``nystra-hub convert``) and which of the reference models shipped in a checkout (:func:`reference_models`,
weights included) can stand in.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path

from nystra_hub.attention import NystraParams
from nystra_hub.io.checkpoints import load_original_checkpoint
from nystra_hub.models import RestorationModel, build_model

SWINIR_URL = "https://github.com/JingyunLiang/SwinIR/releases/tag/v0.0"
UFORMER_URL = "https://github.com/ZhendongWang6/Uformer"
DEHAZEFORMER_URL = "https://github.com/IDKiro/DehazeFormer"

# What a task means for pre/post-processing and for the model card.
TASKS = {
    "classical-sr": "image super-resolution (bicubic degradation)",
    "lightweight-sr": "image super-resolution (bicubic degradation), lightweight model",
    "real-sr": "real-world image super-resolution (BSRGAN degradations, GAN-trained)",
    "denoise-gray": "grayscale Gaussian denoising",
    "denoise-color": "color Gaussian denoising",
    "jpeg-gray": "grayscale JPEG compression artifact reduction",
    "jpeg-color": "color JPEG compression artifact reduction",
    "denoise-real": "real camera noise removal (SIDD)",
    "deblur": "motion deblurring (GoPro)",
    "dehaze": "single image dehazing",
}


@dataclass(frozen=True)
class Variant:
    name: str
    arch: str
    task: str
    official_file: str
    kwargs: dict
    scale: int = 1
    window: int = 8
    patch: int = 64
    dataset: str = ""
    released: bool = True
    source: str = ""
    license: str = ""
    level: int | None = None  # noise sigma (denoise) or JPEG quality (jpeg)
    notes: str = ""
    manifest: str | None = None  # ../shared/manifests/<manifest>.tsv lists this variant's keys
    tags: tuple[str, ...] = field(default_factory=tuple)
    # sha256 of the released file, once recorded from the original download (none is yet): only a file matching it
    # is called "the released weights" in a converted folder's card
    sha256: str = ""

    @property
    def timm_name(self) -> str:
        return self.name.replace("-", "_")

    @property
    def in_chans(self) -> int:
        return int(self.kwargs.get("in_chans", 3))

    @property
    def task_description(self) -> str:
        return TASKS[self.task]


VARIANTS: dict[str, Variant] = {}
VARIANTS_BY_ARCH: dict[str, list[Variant]] = {}


def _add(variant: Variant) -> None:
    if variant.name in VARIANTS:
        raise ValueError(f"duplicate variant {variant.name}")
    if variant.task not in TASKS:
        raise ValueError(f"{variant.name}: unknown task {variant.task}")
    VARIANTS[variant.name] = variant
    VARIANTS_BY_ARCH.setdefault(variant.arch, []).append(variant)


# --- SwinIR (main_test_swinir.py constructor arguments) --------------------------------------------------------------
_SWINIR_M = dict(embed_dim=180, depths=[6] * 6, num_heads=[6] * 6, mlp_ratio=2, window_size=8, img_range=1.0)
for _scale in (2, 3, 4, 8):
    for _data, _patch, _suffix in (("DF2K", 64, ""), ("DIV2K", 48, "-div2k-s48")):
        _add(Variant(
            name=f"swinir-x{_scale}{_suffix}", arch="swinir", task="classical-sr",
            official_file=f"001_classicalSR_{_data}_s{_patch}w8_SwinIR-M_x{_scale}.pth",
            kwargs=dict(_SWINIR_M, upscale=_scale, in_chans=3, img_size=_patch, upsampler="pixelshuffle",
                        resi_connection="1conv"),
            scale=_scale, patch=_patch, dataset=_data, source=SWINIR_URL, license="Apache-2.0",
            manifest=f"swinir_classicalSR_{_data}_s{_patch}w8_M_x4" if _scale == 4 else None,
        ))
for _scale in (2, 3, 4):
    _add(Variant(
        name=f"swinir-s-x{_scale}", arch="swinir", task="lightweight-sr",
        official_file=f"002_lightweightSR_DIV2K_s64w8_SwinIR-S_x{_scale}.pth",
        kwargs=dict(upscale=_scale, in_chans=3, img_size=64, window_size=8, img_range=1.0, depths=[6] * 4,
                    embed_dim=60, num_heads=[6] * 4, mlp_ratio=2, upsampler="pixelshuffledirect",
                    resi_connection="1conv"),
        scale=_scale, patch=64, dataset="DIV2K", source=SWINIR_URL, license="Apache-2.0",
        manifest="swinir_lightweightSR_DIV2K_s64w8_S_x2" if _scale == 2 else None,
    ))
_add(Variant(
    name="swinir-realsr-m-x4", arch="swinir", task="real-sr",
    official_file="003_realSR_BSRGAN_DFO_s64w8_SwinIR-M_x4_GAN.pth",
    kwargs=dict(_SWINIR_M, upscale=4, in_chans=3, img_size=64, upsampler="nearest+conv", resi_connection="1conv"),
    scale=4, patch=64, dataset="DIV2K+Flickr2K+OST", source=SWINIR_URL, license="Apache-2.0",
    notes="released as {'params_ema': ...}; the EMA weights are the ones the official test script uses",
))
_add(Variant(
    name="swinir-realsr-l-x4", arch="swinir", task="real-sr",
    official_file="003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth",
    kwargs=dict(upscale=4, in_chans=3, img_size=64, window_size=8, img_range=1.0, depths=[6] * 9, embed_dim=240,
                num_heads=[8] * 9, mlp_ratio=2, upsampler="nearest+conv", resi_connection="3conv"),
    scale=4, patch=64, dataset="DIV2K+Flickr2K+OST+WED+FFHQ+Manga109+SCUT-CTW1500", source=SWINIR_URL,
    license="Apache-2.0", manifest="swinir_realSR_BSRGAN_DFOWMFC_s64w8_L_x4",
    notes="released as {'params_ema': ...}",
))
for _chans, _kind, _prefix in ((1, "gray", "004_grayDN"), (3, "color", "005_colorDN")):
    for _sigma in (15, 25, 50):
        _add(Variant(
            name=f"swinir-denoise-{_kind}-{_sigma}", arch="swinir", task=f"denoise-{_kind}",
            official_file=f"{_prefix}_DFWB_s128w8_SwinIR-M_noise{_sigma}.pth",
            kwargs=dict(_SWINIR_M, upscale=1, in_chans=_chans, img_size=128, upsampler="", resi_connection="1conv"),
            patch=128, dataset="DIV2K+Flickr2K+BSD500+WED", level=_sigma, source=SWINIR_URL, license="Apache-2.0",
        ))
for _chans, _kind, _prefix in ((1, "gray", "006_CAR"), (3, "color", "006_colorCAR")):
    for _quality in (10, 20, 30, 40):
        _add(Variant(
            name=f"swinir-jpeg-{_kind}-{_quality}", arch="swinir", task=f"jpeg-{_kind}",
            official_file=f"{_prefix}_DFWB_s126w7_SwinIR-M_jpeg{_quality}.pth",
            kwargs=dict(_SWINIR_M, upscale=1, in_chans=_chans, img_size=126, window_size=7, img_range=255.0,
                        upsampler="", resi_connection="1conv"),
            window=7, patch=126, dataset="DIV2K+Flickr2K+BSD500+WED", level=_quality, source=SWINIR_URL,
            license="Apache-2.0",
        ))

# --- Uformer (model.py; heads [1,2,4,8,16,16,8,4,2], window 8, linear projection, LeFF, modulator) ------------------
_UFORMER = dict(in_chans=3, dd_in=3, num_heads=[1, 2, 4, 8, 16, 16, 8, 4, 2], win_size=8, mlp_ratio=4.0,
                token_projection="linear", token_mlp="leff", modulator=True, shift_flag=True)
_add(Variant(
    name="uformer-t", arch="uformer", task="denoise-real", official_file="Uformer_T.pth",
    kwargs=dict(_UFORMER, img_size=128, embed_dim=16, depths=[2] * 9), patch=128, dataset="SIDD",
    released=False, source=UFORMER_URL, license="MIT", manifest="uformer_T_ps128",
    notes="paper configuration Uformer-T; no official SIDD checkpoint of this exact configuration is linked",
))
_add(Variant(
    name="uformer-s", arch="uformer", task="denoise-real", official_file="Uformer_S.pth",
    kwargs=dict(_UFORMER, img_size=128, embed_dim=32, depths=[2] * 9), patch=128, dataset="SIDD",
    released=False, source=UFORMER_URL, license="MIT",
    notes="paper configuration Uformer-S; no official SIDD checkpoint of this exact configuration is linked",
))
_UFORMER_B = dict(_UFORMER, embed_dim=32, depths=[1, 2, 8, 8, 2, 8, 8, 2, 1])
_add(Variant(
    name="uformer-b-sidd", arch="uformer", task="denoise-real", official_file="Uformer_B.pth",
    kwargs=dict(_UFORMER_B, img_size=128), patch=128, dataset="SIDD", source=UFORMER_URL, license="MIT",
    manifest="uformer_B_ps128", notes="the SIDD release; file name shared with the GoPro release",
))
_add(Variant(
    name="uformer-b-gopro", arch="uformer", task="deblur", official_file="Uformer_B.pth",
    kwargs=dict(_UFORMER_B, img_size=256), patch=256, dataset="GoPro", source=UFORMER_URL, license="MIT",
    notes="the GoPro release; built with img_size=256, which (unlike 128) shifts bottleneck block 1, as in training",
))

# --- DehazeFormer (models/dehazeformer.py factory functions; trained on 256 patches, configs/*/*.json) -------------
_DEHAZE_SMALL = dict(embed_dims=[24, 48, 96, 48, 24], mlp_ratios=[2.0, 4.0, 4.0, 2.0, 2.0], num_heads=[2, 4, 6, 1, 1])
_DEHAZE_RATIO = [0.25, 0.5, 0.75, 0.0, 0.0]
_DEHAZEFORMER = {
    "t": dict(_DEHAZE_SMALL, depths=[4, 4, 4, 2, 2], attn_ratio=[0.0, 0.5, 1.0, 0.0, 0.0], conv_type=["DWConv"] * 5),
    "s": dict(_DEHAZE_SMALL, depths=[8, 8, 8, 4, 4], attn_ratio=_DEHAZE_RATIO, conv_type=["DWConv"] * 5),
    "b": dict(_DEHAZE_SMALL, depths=[16, 16, 16, 8, 8], attn_ratio=_DEHAZE_RATIO, conv_type=["DWConv"] * 5),
    "d": dict(_DEHAZE_SMALL, depths=[32, 32, 32, 16, 16], attn_ratio=_DEHAZE_RATIO, conv_type=["DWConv"] * 5),
    "w": dict(_DEHAZE_SMALL, embed_dims=[48, 96, 192, 96, 48], depths=[16, 16, 16, 8, 8], attn_ratio=_DEHAZE_RATIO,
              conv_type=["DWConv"] * 5),
    "m": dict(_DEHAZE_SMALL, depths=[12, 12, 12, 6, 6], attn_ratio=_DEHAZE_RATIO, conv_type=["Conv"] * 5),
    "l": dict(_DEHAZE_SMALL, embed_dims=[48, 96, 192, 96, 48], depths=[16, 16, 16, 12, 12], attn_ratio=_DEHAZE_RATIO,
              conv_type=["Conv"] * 5),
}
# Released per run.sh: indoor t/s/b/m/l, outdoor/reside6k/rshaze t/s/b/m. w and d are the paper's ablation sizes.
_DEHAZE_RELEASES = {"indoor": "tsbmlwd", "outdoor": "tsbm", "reside6k": "tsbm", "rshaze": "tsbm"}
_DEHAZE_DATA = {"indoor": "RESIDE ITS (SOTS indoor)", "outdoor": "RESIDE OTS (SOTS outdoor)",
                "reside6k": "RESIDE-6K", "rshaze": "RS-Haze"}
for _dataset, _sizes in _DEHAZE_RELEASES.items():
    for _size in _sizes:
        _add(Variant(
            name=f"dehazeformer-{_size}-{_dataset}", arch="dehazeformer", task="dehaze",
            official_file=f"saved_models/{_dataset}/dehazeformer-{_size}.pth",
            kwargs=dict(in_chans=3, out_chans=4, window_size=8, norm_layer=["RLN"] * 5, **_DEHAZEFORMER[_size]),
            patch=256, dataset=_DEHAZE_DATA[_dataset], released=_size not in "wd", source=DEHAZEFORMER_URL,
            license="MIT", manifest=f"dehazeformer_{_size}" if _size in "tbm" and _dataset == "indoor" else None,
            notes="" if _size not in "wd" else "paper ablation size; no released checkpoint is listed in run.sh",
        ))

# Short aliases users reach for.
ALIASES = {
    **{f"swinir-m-x{s}": f"swinir-x{s}" for s in (2, 3, 4, 8)},
    "uformer-b": "uformer-b-sidd",
    **{f"dehazeformer-{s}": f"dehazeformer-{s}-indoor" for s in "tsbmlwd"},
}


def _key(name: str) -> str:
    key = name.replace("_", "-").lower()
    return ALIASES.get(key, key)


def close_variants(name: str, n: int = 3) -> list[str]:
    """The catalogue names nearest ``name`` (difflib), for a "did you mean"."""
    return difflib.get_close_matches(_key(name), list(VARIANTS), n=n)


def get_variant(name: str) -> Variant:
    key = _key(name)
    if key not in VARIANTS:
        close = close_variants(name)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown variant {name!r}{hint} (nystra-hub list shows all {len(VARIANTS)})")
    return VARIANTS[key]


# -- reference models shipped in a checkout ---------------------------------------------------------------------------
# ``nystra-hub train-reference`` writes them into the repository, next to the package: a checkout (or an editable
# install) has them, an installed wheel does not. They are the only weights that come with the code.
REFERENCE_MODELS_DIR = Path(__file__).resolve().parents[2] / "reference_models"


@dataclass(frozen=True)
class ReferenceModel:
    name: str
    arch: str
    task: str
    scale: int
    path: Path

    @property
    def model_argument(self) -> str:
        """The path to pass to ``--model``: relative to the working directory when under it."""
        return _display(self.path)


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def reference_models(folder: Path | None = None) -> list[ReferenceModel]:
    """The reference models in ``folder`` (default :data:`REFERENCE_MODELS_DIR`): each sub-folder with
    ``reference.json`` and ``config.json``, sorted by name; none when the folder is absent."""
    folder = REFERENCE_MODELS_DIR if folder is None else Path(folder)
    found = []
    for info_file in sorted(folder.glob("*/reference.json")):
        if not (info_file.parent / "config.json").is_file():
            continue  # a training run in progress: no loadable folder yet
        info = json.loads(info_file.read_text())
        found.append(ReferenceModel(name=info.get("name", info_file.parent.name), arch=info["arch"],
                                    task=info["task"], scale=int(info.get("scale", 1)), path=info_file.parent))
    return found


def close_folders(name: str, n: int = 3) -> list[str]:
    """Loadable folders whose name is near ``name``'s last part, as the path to pass to ``--model``: the reference
    models and the working directory's sub-folders holding a ``config.json`` (hub folders)."""
    return _nearest(Path(name).name, _local_folders(), n)


def close_models(name: str, n: int = 4) -> list[str]:
    """The local folders (see :func:`close_folders`) and catalogue variants nearest ``name``, nearest first."""
    return _nearest(_key(Path(name).name), {**_local_folders(), **{v: v for v in VARIANTS}}, n)


def _local_folders() -> dict[str, str]:
    """{path to pass to --model: folder name} of the reference models and the working directory's hub folders."""
    found = {r.model_argument: r.path.name for r in reference_models()}
    found.update({_display(p.parent.resolve()): p.parent.name for p in Path.cwd().glob("*/config.json")})
    return found


def _nearest(name: str, candidates: dict[str, str], n: int) -> list[str]:
    """The keys of ``candidates`` whose value is like ``name`` (difflib's ratio, its default cutoff 0.6)."""
    scored = [(difflib.SequenceMatcher(None, name, label).ratio(), key) for key, label in candidates.items()]
    return [key for ratio, key in sorted(scored, key=lambda item: -item[0]) if ratio >= 0.6][:n]


def weights_hint(v: Variant) -> str:
    """How to get going with the catalogue variant ``v`` named without weights: its released file and where it
    comes from, ``--weights``, ``nystra-hub convert``, or a shipped reference model (same architecture first)."""
    if v.released:
        origin = f" from {v.source}" if v.source else ""
        steps = [f"download its released checkpoint {v.official_file}{origin} and pass it: --model {v.name} "
                 f"--weights FILE (Python: nystra_hub.load({v.name!r}, weights=FILE))",
                 f"or convert it once into a hub folder: nystra-hub convert FILE --out {v.name}-hub, then "
                 f"--model {v.name}-hub"]
    else:
        steps = [f"no checkpoint of this configuration is released ({v.notes or 'none is listed'}); pass your own "
                 f"trained one: --model {v.name} --weights FILE"]
    refs = reference_models()
    refs = [r for r in refs if r.arch == v.arch] or refs
    if refs:
        shipped = ", ".join(f"--model {r.model_argument} ({r.arch}, {r.task})" for r in refs)
        steps.append(f"or start now with a small model shipped in the repository, weights included: {shipped}")
    return "\n".join(f"  - {step}" for step in steps)


def build_variant(
    name: str, attn_impl: str = "softmax", nystra: NystraParams | dict | None = None
) -> RestorationModel:
    variant = get_variant(name)
    model = build_model(variant.arch, attn_impl=attn_impl, nystra=nystra, **variant.kwargs)
    model.update_provenance(variant=variant.name)
    return model


def load_variant(
    name: str, path, attn_impl: str = "softmax", nystra: NystraParams | dict | None = None
) -> RestorationModel:
    """Build the named variant and load a released checkpoint into it strictly."""
    model = build_variant(name, attn_impl, nystra)
    load_original_checkpoint(model, path)
    return model.eval()
