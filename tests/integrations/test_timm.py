"""timm registration: a name per catalogue variant, restoration pretrained cfgs, strict loading from a released
.pth, a .safetensors file and an ``hf-hub:`` id through the offline cache."""

from __future__ import annotations

import pytest
import timm
import torch
from conftest import GOLDEN, REPO
from conftest_hub import (
    all_cases_params,
    available_cases,
    case_info,
    check_parity,
    converted,
    offline_output,
    offline_results,
    reference,
    swinir_s_x2_checkpoint,
)
from timm.models import get_pretrained_cfg

import nystra_hub
from nystra_hub.attention import attention_modules
from nystra_hub.io.checkpoints import CheckpointMismatchError
from nystra_hub.io.variants import VARIANTS


def test_every_catalogue_variant_is_registered_with_a_restoration_cfg():
    names = set(timm.list_models())
    for v in VARIANTS.values():
        if v.arch not in nystra_hub.ARCHITECTURES:
            continue
        assert v.timm_name in names, v.name
        cfg = get_pretrained_cfg(v.timm_name)
        assert cfg.hf_hub_id == f"nystra/{v.name}" and cfg.hf_hub_filename == "model.safetensors"
        assert cfg.num_classes is None and cfg.first_conv is None and cfg.classifier is None
        assert tuple(cfg.mean) == (0.0,) * v.in_chans and tuple(cfg.std) == (1.0,) * v.in_chans
        assert cfg.crop_pct == 1.0 and tuple(cfg.input_size) == (v.in_chans, v.patch, v.patch)
        assert cfg.license == v.license.lower() and cfg.architecture == v.timm_name
    for arch in nystra_hub.ARCHITECTURES:
        assert f"nystra_{arch}" in names
    assert "swinir_x4" in timm.list_models("swinir*", pretrained=True)


@pytest.mark.parametrize("case", all_cases_params())
def test_released_pth_through_pretrained_cfg_overlay(case):
    info = case_info(case)
    model = timm.create_model(f"nystra_{info['arch']}", pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(GOLDEN / case / "checkpoint.pth")),
                              **info["official_constructor_kwargs"])
    assert isinstance(model, nystra_hub.RestorationModel)
    x, _, _ = reference(case)
    with torch.no_grad():
        check_parity(case, model(x))


@pytest.mark.parametrize("case", all_cases_params())
def test_converted_safetensors_and_hf_hub_offline(case):
    info = case_info(case)
    model = timm.create_model(f"nystra_{info['arch']}", pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(converted(case) / "model.safetensors")),
                              **info["official_constructor_kwargs"])
    x, _, _ = reference(case)
    with torch.no_grad():
        check_parity(case, model(x))
    res = offline_results()["runs"][f"{case}/timm"]
    assert "error" not in res, res
    assert res["cfg"]["source"] == "hf-hub" and res["cfg"]["architecture"] == f"nystra_{info['arch']}"
    check_parity(case, offline_output(case, "timm"))


def test_hf_hub_attn_impl_and_registered_variant_offline():
    runs = offline_results()["runs"]
    assert runs[f"{available_cases()[0]}/timm"]["nystra"] == "nystra"
    # timm.create_model("swinir_s_x2", pretrained=True, attn_impl="nystra") resolves nystra/swinir-s-x2 offline
    assert runs["variant/timm"] == {"attn": "nystra", "source": "nystra/swinir-s-x2", "equal": True}


def test_catalogue_name_with_released_file_and_attention_kwargs():
    path = swinir_s_x2_checkpoint()
    model = timm.create_model("swinir_s_x2", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                              attn_impl="nystra", landmarks=4)
    mods = [m for _, m in attention_modules(model)]
    assert mods and all(m.attn_impl == "nystra" and m.nystra.landmarks == 4 for m in mods)
    reference_model = nystra_hub.load_variant("swinir-s-x2", path, attn_impl="nystra", nystra={"landmarks": 4})
    exact = timm.create_model("swinir_s_x2", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    x = torch.rand(1, 3, 20, 28)
    with torch.no_grad():
        assert torch.equal(model(x), reference_model(x))
        assert exact.attn_impl == "softmax" and torch.equal(exact(x), nystra_hub.load_variant("swinir-s-x2",
                                                                                              path)(x))
    assert model.provenance.variant == "swinir-s-x2" and model.pretrained_cfg["file"] == str(path)
    with pytest.raises(ValueError, match="attn_impl"):
        timm.create_model("swinir_s_x2", attn_impl="flash")
    with pytest.raises(TypeError, match="classification"):
        timm.create_model("swinir_s_x2", num_classes=10)


@pytest.mark.parametrize("pretrained_strict", [True, False])
def test_loading_is_strict_even_when_timm_is_told_otherwise(pretrained_strict, tmp_path):
    """A checkpoint of another configuration raises, naming keys; pretrained_strict=False changes nothing."""
    wrong = GOLDEN / "swinir_sr_x2_pixelshuffle" / "checkpoint.pth"
    kwargs = case_info("swinir_lightsr_x3_direct")["official_constructor_kwargs"]
    with pytest.raises(CheckpointMismatchError, match="conv_before_upsample.0.weight") as err:
        timm.create_model("nystra_swinir", pretrained=True, pretrained_cfg_overlay=dict(file=str(wrong)),
                          pretrained_strict=pretrained_strict, **kwargs)
    assert str(wrong) in str(err.value) and err.value.mismatched
    # one extra key is enough
    state = torch.load(GOLDEN / "swinir_lightsr_x3_direct" / "checkpoint.pth", weights_only=True)
    state["params"]["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "extra.pth")
    with pytest.raises(CheckpointMismatchError, match="extra.weight"):
        timm.create_model("nystra_swinir", pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path /
                          "extra.pth")), pretrained_strict=pretrained_strict, **kwargs)


@pytest.mark.parametrize("folder", sorted((REPO / "reference_models").iterdir()), ids=lambda p: p.name)
def test_save_for_hf_round_trip(folder, tmp_path):
    """timm's own export works on these models (num_classes 0: no classifier) and loads back with local-dir:."""
    model = timm.create_model(f"local-dir:{folder}", pretrained=True, attn_impl="nystra")
    assert model.num_classes == 0
    timm.models.save_for_hf(model, tmp_path, safe_serialization=True)
    again = timm.create_model(f"local-dir:{tmp_path}", pretrained=True)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.official_inference(x), again.official_inference(x))
    assert again.attn_impl == "nystra" and again.official_kwargs == model.official_kwargs
    with pytest.raises(TypeError, match="classification"):
        timm.create_model("swinir_s_x2", num_classes=1000)
