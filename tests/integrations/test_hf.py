"""transformers glue: registration, validated configs, strict from_pretrained (local and by repo id offline),
save/load round trips with official keys, and meta-device initialisation that leaves no buffer corrupted."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import timm
import torch
from conftest import REPO, load_golden
from conftest_hub import (
    all_cases_params,
    available_cases,
    case_info,
    check_parity,
    converted,
    offline_output,
    offline_results,
    reference,
    representative_cases_params,
)
from huggingface_hub import ModelCard
from huggingface_hub.errors import StrictDataclassClassValidationError, StrictDataclassFieldValidationError
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageToImage, Swin2SRConfig

import nystra_hub
from nystra_hub.attention import attention_modules
from nystra_hub.integrations import transformers as hf
from nystra_hub.io.checkpoints import CheckpointError, CheckpointMismatchError
from nystra_hub.io.variants import VARIANTS

# huggingface_hub's strict dataclasses report a bad field value with their own error types
BAD_VALUE = (ValueError, StrictDataclassFieldValidationError, StrictDataclassClassValidationError)


def _copy_folder(src, dst):
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_registered_for_every_architecture():
    tiny = {case_info(c)["arch"]: case_info(c)["official_constructor_kwargs"] for c in available_cases()}
    for arch in nystra_hub.ARCHITECTURES:
        config_cls, model_cls = hf.CONFIG_CLASSES[arch], hf.MODEL_CLASSES[arch]
        assert config_cls.model_type == f"nystra_{arch}" and config_cls.__name__.startswith("Nystra")
        assert type(AutoConfig.for_model(f"nystra_{arch}")) is config_cls
        config = config_cls(official_kwargs=tiny[arch])
        assert type(AutoModel.from_config(config)) is model_cls
        assert type(AutoModelForImageToImage.from_config(config)) is model_cls
    # transformers' own restoration model keeps its names
    assert type(AutoConfig.for_model("swin2sr")) is Swin2SRConfig
    assert hf.NystraSwinIRConfig.__name__ == "NystraSwinIRConfig"
    assert hf.NystraSwinIRModel.main_input_name == "pixel_values" and hf.NystraSwinIRModel.base_model_prefix == ""


def test_config_validates_values():
    cfg = hf.NystraSwinIRConfig(official_kwargs={"embed_dim": 12}, attn_impl="nystra", nystra={"landmarks": 4})
    assert cfg.arch == "swinir" and cfg.nystra_params.landmarks == 4 and cfg.nystra_params.iters == 2
    with pytest.raises(BAD_VALUE, match="attn_impl"):
        hf.NystraSwinIRConfig(attn_impl="flash")
    with pytest.raises(BAD_VALUE, match="landmarks"):
        hf.NystraSwinIRConfig(nystra={"landmarks": 0})
    with pytest.raises(BAD_VALUE, match="embed_dims"):
        hf.NystraSwinIRConfig(official_kwargs={"embed_dims": [1]})
    with pytest.raises(BAD_VALUE, match="nystra_plan"):
        hf.NystraSwinIRConfig(nystra_plan={"layers": {}})
    with pytest.raises(BAD_VALUE, match="arch"):
        hf.NystraSwinIRConfig(arch="uformer")
    with pytest.raises(StrictDataclassFieldValidationError):  # assignment is validated too
        cfg.attn_impl = "flash"
    # transformers' own switch is separate
    assert cfg._attn_implementation != "nystra"


@pytest.mark.parametrize("case", all_cases_params())
def test_from_pretrained_local_parity_and_loading_info(case):
    model, info = AutoModel.from_pretrained(converted(case), output_loading_info=True)
    assert type(model) is hf.MODEL_CLASSES[case_info(case)["arch"]]
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert not model.training
    x, _, _ = reference(case)
    with torch.no_grad():
        out = model(pixel_values=x)
    check_parity(case, out.reconstruction)


@pytest.mark.parametrize("case", all_cases_params())
def test_from_pretrained_by_repo_id_offline(case):
    res = offline_results()["runs"][f"{case}/hf"]
    assert "error" not in res, res
    assert res["cls"] == hf.MODEL_CLASSES[case_info(case)["arch"]].__name__
    assert all(not v for v in res["info"].values()), res["info"]
    check_parity(case, offline_output(case, "hf"))


def test_offline_attn_impl_and_catalogue_variant():
    runs = offline_results()["runs"]
    first = available_cases()[0]
    assert runs[f"{first}/hf"]["nystra"] == "nystra"
    assert runs[f"{first}/hf"]["hf_attn_implementation"] != "nystra"
    assert runs["variant/hf"] == {"cls": "NystraSwinIRModel"}


@pytest.mark.parametrize("case", representative_cases_params())
def test_save_pretrained_round_trip(case, tmp_path):
    model = AutoModel.from_pretrained(converted(case))
    model.save_pretrained(tmp_path)
    saved = load_file(str(tmp_path / "model.safetensors"))
    source = load_file(str(converted(case) / "model.safetensors"))
    assert saved.keys() == source.keys()  # official keys, no prefix
    assert all(torch.equal(saved[k], source[k]) for k in saved)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == f"nystra_{case_info(case)['arch']}" and cfg["architecture"].startswith("nystra_")
    again = AutoModel.from_pretrained(tmp_path)
    x, _, _ = reference(case)
    with torch.no_grad():
        out = again(x).reconstruction
        # Bits only where the same instance reruns the same ops; separate instances (each loader allocates its
        # own weights) may take other CPU kernels and differ in the last bits (2.4e-7 seen on another machine).
        assert torch.equal(out, again(x).reconstruction)
        assert_same_function(model(x).reconstruction, out)
        # the folder transformers wrote, through the transformers-free loader and through timm
        assert_same_function(nystra_hub.load_pretrained(tmp_path)(x), out)
        assert_same_function(timm.create_model(f"local-dir:{tmp_path}", pretrained=True)(x), out)


SAME_FUNCTION_ATOL = 1e-5
"""Two instances or builds of one function: float32 rounding differences (~1e-7), far below the 3e-3 that the
smallest real change (the position bias) makes on the golden cases."""


def assert_same_function(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, atol=SAME_FUNCTION_ATOL, rtol=0)


def test_outputs_differ_in_the_last_bits_across_cpu_vector_paths(tmp_path):
    """Why separate instances are compared with a tolerance: the same golden model through another CPU vector
    path (what another machine takes) differs from this one in the last bits, within SAME_FUNCTION_ATOL."""
    other = {"AVX512": "avx2", "AVX2": "default"}.get(torch.backends.cpu.get_cpu_capability())
    if other is None:
        pytest.skip("no second vector path on this CPU")
    case = "dehazeformer_tiny_conv"
    model, io, _ = load_golden(case)
    script = (f"import sys, torch; sys.path.insert(0, {str(REPO / 'tests')!r}); from conftest import load_golden; "
              f"m, io, _ = load_golden({case!r}); torch.save(m(io['input']).detach(), sys.argv[1])")
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "out.pt")], check=True, timeout=300,
                   env={**os.environ, "ATEN_CPU_CAPABILITY": other})
    with torch.no_grad():
        here = model(io["input"])
    # Measured here: 2.4e-7 apart (AVX-512 vs AVX2). Whether they differ at all depends on the CPU and torch
    # build, so only the tolerance is asserted.
    assert_same_function(here, torch.load(tmp_path / "out.pt"))


@pytest.mark.parametrize("case", representative_cases_params())
def test_meta_init_rebuilds_every_derived_buffer(case, monkeypatch):
    """transformers builds on the meta device and gives non-persistent buffers uninitialised memory. Poison
    that memory with NaN: outputs must still match, and every buffer must equal the directly built model's."""
    real_empty_like = torch.empty_like

    def poisoned_empty_like(t, *args, **kwargs):
        out = real_empty_like(t, *args, **kwargs)
        return out.fill_(float("nan")) if out.is_floating_point() else out.fill_(123456)

    monkeypatch.setattr(torch, "empty_like", poisoned_empty_like)
    model = AutoModel.from_pretrained(converted(case))
    monkeypatch.undo()
    direct, _, _ = load_golden(case)
    ours = dict(model.named_buffers())
    for name, buf in direct.named_buffers():
        assert torch.equal(ours[name], buf), name
    x, _, _ = reference(case)
    with torch.no_grad():
        check_parity(case, model(x).reconstruction)


def test_meta_init_trap_is_real(monkeypatch):
    """Without the rebuild, gray SwinIR's non-persistent ``mean`` keeps the poisoned memory."""
    case = "swinir_denoise_gray_3conv"
    real_empty_like = torch.empty_like
    monkeypatch.setattr(torch, "empty_like", lambda t, *a, **k: real_empty_like(t, *a, **k).fill_(float("nan"))
                        if t.is_floating_point() else real_empty_like(t, *a, **k))
    monkeypatch.setattr(nystra_hub.models.swinir.SwinIR, "reset_constants", lambda self: None)
    model = AutoModel.from_pretrained(converted(case))
    assert torch.isnan(model.mean).all()


def test_attn_impl_override_and_written_back(tmp_path):
    case = "swinir_sr_x2_pixelshuffle"
    model = AutoModel.from_pretrained(converted(case), attn_impl="nystra", landmarks=4)
    mods = [m for _, m in attention_modules(model)]
    assert all(m.attn_impl == "nystra" and m.nystra.landmarks == 4 for m in mods)
    assert model.config.attn_impl == "nystra" and model.config.nystra["landmarks"] == 4
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["attn_impl"] == "nystra" and cfg["nystra"]["landmarks"] == 4
    assert cfg["model_args"]["attn_impl"] == "nystra"  # timm's view follows
    assert nystra_hub.load_pretrained(tmp_path).attn_impl == "nystra"
    x, _, exact = reference(case)
    with torch.no_grad():
        approx = model(x).reconstruction
        assert torch.isfinite(approx).all() and not torch.allclose(approx, exact, atol=1e-6)
        model.set_attn_impl("softmax")
        check_parity(case, model(x).reconstruction)
    assert model.config.attn_impl == "softmax"
    with pytest.raises(BAD_VALUE, match="attn_impl"):
        AutoModel.from_pretrained(converted(case), attn_impl="flash")
    with pytest.raises(BAD_VALUE, match="tau"):
        AutoModel.from_pretrained(converted(case), nystra={"tau": "high"})
    with pytest.raises(TypeError, match="unknown argument"):
        AutoModel.from_pretrained(converted(case), landmark=4)


def test_stored_plan_applied_and_replaced_by_explicit_choice(tmp_path):
    case = "swinir_sr_x2_pixelshuffle"
    model = nystra_hub.load_pretrained(converted(case))
    first = next(n for n, _ in attention_modules(model))
    model.get_submodule(first).set_attn_impl("nystra", nystra_hub.NystraParams(landmarks=4))
    nystra_hub.io.hub.save_hub_folder(model, tmp_path, card=False)
    planned = AutoModel.from_pretrained(tmp_path)
    assert planned.get_submodule(first).attn_impl == "nystra" and planned.attn_impl == "mixed"
    assert AutoModel.from_pretrained(tmp_path, attn_impl="sdpa").attn_impl == "sdpa"


@pytest.mark.parametrize("edit", ["missing", "unexpected", "mismatched"])
def test_from_pretrained_is_strict(edit, tmp_path):
    case = "swinir_sr_x2_pixelshuffle"
    folder = _copy_folder(converted(case), tmp_path / edit)
    state = load_file(str(folder / "model.safetensors"))
    if edit == "missing":
        state.pop("layers.0.residual_group.blocks.1.attn_mask")
    elif edit == "unexpected":
        state["module.extra"] = torch.zeros(2)
    else:
        state["conv_first.weight"] = torch.zeros(24, 3, 5, 5)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError) as err:
        AutoModel.from_pretrained(folder)
    named = {"missing": "layers.0.residual_group.blocks.1.attn_mask", "unexpected": "module.extra",
             "mismatched": "conv_first.weight"}[edit]
    assert named in str(err.value)


@pytest.mark.parametrize("edit", ["integer", "bool", "nan"])
def test_from_pretrained_checks_stored_dtypes_and_values(edit, tmp_path):
    """transformers casts while loading, so an int32 or bool tensor stored for a float weight would load as whole
    numbers without a word: the same refusal as nystra_hub.load, naming the key."""
    folder = _copy_folder(converted("swinir_sr_x2_pixelshuffle"), tmp_path / edit)
    state = load_file(str(folder / "model.safetensors"))
    weight = state["conv_first.weight"]
    state["conv_first.weight"] = {"integer": (weight * 1000).to(torch.int32), "bool": weight > 0,
                                  "nan": weight.clone().fill_(float("nan"))}[edit]
    save_file(state, str(folder / "model.safetensors"))
    message = (r"non-finite values .*conv_first\.weight" if edit == "nan"
               else r"conv_first\.weight \(torch\.(int32|bool)")
    with pytest.raises(CheckpointError, match=message):
        AutoModel.from_pretrained(folder)


def test_forward_outputs():
    case = "swinir_lightsr_x3_direct"
    model = AutoModel.from_pretrained(converted(case))
    x, _, direct = reference(case)
    with torch.no_grad():
        as_tuple = model(x, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 1 and torch.allclose(as_tuple[0], direct, atol=1e-5)
    assert model.scale == 3 and model.restoration_model.official_kwargs == model.config.official_kwargs
    # the restoration model shares every tensor with the transformers model
    assert model.restoration_model.conv_first.weight is model.conv_first.weight
    assert model.device.type == "cpu" and model.dtype == torch.float32


# -- image processor, transformers' attn_implementation, the model card of save_pretrained ------------------------
REFERENCE_FOLDERS = sorted((REPO / "reference_models").iterdir())


@pytest.mark.parametrize("folder", REFERENCE_FOLDERS, ids=lambda p: p.name)
def test_image_processor_reproduces_the_official_protocol(folder, tmp_path):
    processor = AutoImageProcessor.from_pretrained(folder)  # no preprocessor_config.json: from config.json
    assert type(processor) is hf.NystraImageProcessor and not (folder / "preprocessor_config.json").exists()
    model = AutoModel.from_pretrained(folder)
    image = torch.rand(3, 27, 38)
    with torch.no_grad():
        outputs = model(**processor(image, return_tensors="pt"))
        official = model.official_inference(image[None])[0]
    restored = processor.postprocess(outputs, [image], output_type="pt")[0]
    assert restored.shape == official.shape and (restored - official).abs().max() < 1e-5
    pil = processor.postprocess(outputs, [(27, 38)])[0]
    assert pil.size == (38 * model.scale, 27 * model.scale)
    processor.save_pretrained(tmp_path)
    assert AutoImageProcessor.from_pretrained(tmp_path).to_dict() == processor.to_dict()


def _rgb_and_unit() -> tuple[np.ndarray, torch.Tensor]:
    rgb = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    return rgb, torch.from_numpy(rgb).permute(2, 0, 1).float() / 255


def test_image_processor_takes_every_image_form_restore_takes():
    """One converter behind preprocess: uint16 and uint8 tensors are scaled like uint8 arrays (a uint8 tensor
    is 8-bit data, not floats in [0, 255]); alpha is dropped."""
    processor = hf.NystraImageProcessor(arch="swinir", scale=2, in_channels=3)  # padding "none"
    rgb, unit = _rgb_and_unit()
    rgba = np.concatenate([rgb, np.full((6, 5, 1), 9, np.uint8)], axis=2)
    forms = {"numpy": rgb, "PIL": Image.fromarray(rgb), "uint16": rgb.astype(np.uint16) * 257,
             "uint8 tensor": torch.from_numpy(rgb).permute(2, 0, 1), "float batch": unit[None],
             "numpy RGBA": rgba, "PIL RGBA": Image.fromarray(rgba)}
    for name, image in forms.items():
        pixel_values = processor(image, return_tensors="pt")["pixel_values"]
        assert pixel_values.shape == (1, 3, 6, 5), name
        torch.testing.assert_close(pixel_values[0], unit, atol=1e-7, rtol=0, msg=name)
    gray = processor(Image.fromarray(rgb[:, :, 0]), return_tensors="pt")["pixel_values"][0]
    assert torch.equal(gray, unit[:1].expand(3, -1, -1))  # gray replicated for an RGB model


def test_image_processor_gives_a_gray_model_luma_and_refuses_bad_images_clearly():
    processor = hf.NystraImageProcessor(arch="swinir", in_channels=1)
    rgb, _ = _rgb_and_unit()
    luma = processor(Image.fromarray(rgb), return_tensors="pt")["pixel_values"][0, 0]
    pillow = torch.from_numpy(np.array(Image.fromarray(rgb).convert("L"))).float() / 255
    assert (luma - pillow).abs().max() <= 0.5 / 255 + 1e-6  # Pillow's luma, unrounded
    for image, match in ((torch.full((3, 4, 4), float("nan")), "NaN"), (torch.rand(8, 8, 3), "looks like"),
                         (np.zeros((4, 4, 3), np.int64), "unsupported NumPy dtype")):
        with pytest.raises((ValueError, TypeError), match=match):
            processor(image, return_tensors="pt")


def test_image_processor_takes_pil_pixels_as_stored_and_postprocesses_to_8_bits():
    """No EXIF orientation in the processor: the size postprocess crops to is the PIL image's own."""
    processor = hf.NystraImageProcessor(arch="swinir", in_channels=3)
    rgb, unit = _rgb_and_unit()
    image = Image.fromarray(rgb)
    image.getexif()[0x0112] = 6  # displayed rotated; restore() would turn it
    assert processor(image, return_tensors="pt")["pixel_values"].shape == (1, 3, 6, 5)
    out = processor.postprocess(unit[None], [image], output_type="np")[0]
    assert out.dtype == np.uint8 and np.array_equal(out, rgb)
    gray = processor.postprocess(unit[None, :1], [(6, 5)], output_type="np")[0]
    assert gray.shape == (6, 5) and np.array_equal(gray, rgb[:, :, 0])
    assert processor.postprocess(unit[None, :1], [(6, 5)])[0].mode == "L"


def test_attn_implementation_is_translated_or_refused_by_name():
    folder = REPO / "reference_models" / "swinir-ref-x2"
    assert AutoModel.from_pretrained(folder, attn_implementation="sdpa").attn_impl == "sdpa"
    assert AutoModel.from_pretrained(folder, attn_implementation="eager").attn_impl == "softmax"
    with pytest.raises(ValueError, match="attn_impl='softmax'") as err:
        AutoModel.from_pretrained(folder, attn_implementation="flash_attention_2")
    assert "huggingface/transformers/issues" not in str(err.value)
    with pytest.raises(ValueError, match="give attn_impl only"):
        AutoModel.from_pretrained(folder, attn_implementation="sdpa", attn_impl="nystra")
    model = AutoModel.from_pretrained(folder)
    assert model.set_attn_implementation("sdpa").attn_impl == "sdpa"
    assert AutoModel.from_config(AutoConfig.from_pretrained(folder), attn_implementation="sdpa").attn_impl == "sdpa"


def test_save_pretrained_writes_the_model_card(tmp_path):
    AutoModel.from_pretrained(REPO / "reference_models" / "swinir-ref-x2").save_pretrained(tmp_path / "custom")
    card = ModelCard.load(tmp_path / "custom" / "README.md")
    assert card.data.library_name == "nystra_hub" and "Custom SwinIR configuration" in card.text
    config = hf.NystraSwinIRConfig(variant="swinir-s-x2", official_kwargs=VARIANTS["swinir-s-x2"].kwargs)
    AutoModel.from_config(config).save_pretrained(tmp_path / "variant")
    card = ModelCard.load(tmp_path / "variant" / "README.md")
    assert "002_lightweightSR_DIV2K_s64w8_SwinIR-S_x2.pth" in card.text and card.data.pipeline_tag == "image-to-image"
    # built from a config, not read from a file: the card cannot call these the released weights
    assert "The released" not in card.text and "where they come from is not recorded" in card.text


def test_a_saved_variant_card_names_the_file_its_weights_came_from(tmp_path):
    """save_hub_folder of a catalogue variant loaded from a user's file: 'converted from FILE' with its sha256, never
    'the released weights' (the catalogue records no release checksum to compare with)."""
    model = nystra_hub.build_variant("swinir-s-x2")
    torch.save({"params": model.state_dict()}, tmp_path / "mine.pth")
    loaded = nystra_hub.load("swinir-s-x2", weights=tmp_path / "mine.pth")
    nystra_hub.io.hub.save_hub_folder(loaded, tmp_path / "folder", variant="swinir-s-x2")
    text = ModelCard.load(tmp_path / "folder" / "README.md").text
    assert "The released" not in text and "from `mine.pth`" in text and loaded.provenance.sha256 in text
