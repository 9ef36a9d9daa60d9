"""Checkpoint detection: architecture, official constructor arguments and catalogue variant from a state dict;
``load_checkpoint`` and the CLIs with a bare checkpoint file."""

from __future__ import annotations

import ast
import json
import logging

import numpy as np
import pytest
import torch
from conftest import GOLDEN, MANIFESTS, golden_cases, read_manifest, state_dict_listing
from conftest_hub import cli, swinir_s_x2_checkpoint
from safetensors.torch import load_file

import nystra_hub
from nystra_hub.io.detect import UnknownCheckpointError
from nystra_hub.io.images import read_image, write_image
from nystra_hub.io.variants import VARIANTS

# What the tensors of the golden cases cannot tell (none of them is a catalogue configuration, so nothing is
# settled by the catalogue): SwinIR never stores img_range, Uformer its training patch unless a stage was clamped.
OPEN_IN_GOLDENS = {"swinir": {"img_range"}, "uformer": {"img_size"}, "dehazeformer": set()}


def case_info(case: str) -> dict:
    return json.loads((GOLDEN / case / "case.json").read_text())


@pytest.mark.parametrize("case", golden_cases())
def test_golden_arch_and_arguments(case):
    info = case_info(case)
    raw = torch.load(GOLDEN / case / "checkpoint.pth", weights_only=True)  # the released container, as saved
    detection = nystra_hub.detect_checkpoint(raw)
    assert detection.arch == info["arch"]
    assert detection.open_arguments == OPEN_IN_GOLDENS[info["arch"]]
    differing = {k for k, v in info["official_constructor_kwargs"].items() if detection.kwargs.get(k) != v}
    assert differing <= detection.open_arguments, differing
    assert detection.variant is None and detection.candidates == ()


@pytest.mark.parametrize("case", golden_cases())
def test_load_checkpoint_reproduces_golden_output(case):
    model = nystra_hub.load_checkpoint(GOLDEN / case / "checkpoint.pth")
    io = load_file(str(GOLDEN / case / "io.safetensors"))
    with torch.no_grad():
        out = model(io["input"])
    assert out.shape == io["output"].shape
    assert (out - io["output"]).abs().max().item() < 1e-4


def test_open_arguments_are_logged_and_overrides_settle_them(caplog):
    path = GOLDEN / "swinir_jpeg_window7" / "checkpoint.pth"
    with caplog.at_level(logging.WARNING, logger="nystra_hub.io.detect"):
        assert nystra_hub.load_checkpoint(path).img_range == 255.0  # window 7, no upscaling: JPEG CAR
    assert "img_range: not stored in the weights" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="nystra_hub.io.detect"):
        assert nystra_hub.load_checkpoint(path, img_range=1.0).img_range == 1.0
    assert caplog.text == ""


MANIFEST_VARIANTS = {v.manifest: v.name for v in VARIANTS.values() if v.manifest}


def test_every_manifest_belongs_to_a_variant():
    assert sorted(p.stem for p in MANIFESTS.glob("*.tsv")) == sorted(MANIFEST_VARIANTS)


def zeros_like_manifest(name: str) -> dict[str, torch.Tensor]:
    return {key: torch.zeros(ast.literal_eval(shape), dtype=getattr(torch, dtype))
            for key, (shape, dtype, _) in read_manifest(name).items()}


@pytest.mark.parametrize("manifest", sorted(MANIFEST_VARIANTS))
def test_full_size_manifest_matches_its_variant(manifest):
    variant = MANIFEST_VARIANTS[manifest]
    detection = nystra_hub.detect_checkpoint(zeros_like_manifest(manifest))
    assert detection.arch == VARIANTS[variant].arch and variant in detection.candidates
    # Several variants share one configuration only where the weights differ in value alone (noise levels,
    # datasets) or in what the tensors do not record (then it stays open).
    assert detection.variant == (variant if len(detection.candidates) == 1 else None)


def test_uformer_b_is_sidd_or_gopro_until_img_size_is_given():
    detection = nystra_hub.detect_checkpoint({"state_dict": zeros_like_manifest("uformer_B_ps128")})
    assert detection.candidates == ("uformer-b-sidd", "uformer-b-gopro") and detection.open_arguments == {"img_size"}
    assert detection.settle(img_size=256).variant == "uformer-b-gopro"
    assert detection.settle(img_size=128).variant == "uformer-b-sidd"


def test_dehazeformer_datasets_share_one_configuration():
    detection = nystra_hub.detect_checkpoint(zeros_like_manifest("dehazeformer_t"))
    assert detection.variant is None and detection.ambiguities == ()
    assert detection.candidates == tuple(f"dehazeformer-t-{d}" for d in ("indoor", "outdoor", "reside6k", "rshaze"))


# Tails and stage layouts the goldens and manifests do not cover: built, detected, rebuilt key for key.
ROUND_TRIP = [
    ("swinir", dict(upscale=3, img_size=16, window_size=8, depths=[2], embed_dim=12, num_heads=[3], mlp_ratio=2,
                    upsampler="pixelshuffle")),
    ("swinir", dict(upscale=8, img_size=16, window_size=4, depths=[3, 1], embed_dim=16, num_heads=[4, 2],
                    mlp_ratio=1.5, upsampler="nearest+conv", resi_connection="3conv", qkv_bias=False)),
    ("swinir", dict(upscale=2, img_size=8, window_size=8, depths=[2], embed_dim=12, num_heads=[2], mlp_ratio=2,
                    upsampler="pixelshuffledirect", ape=True, patch_norm=False)),
    ("uformer", dict(img_size=64, embed_dim=8, depths=[1, 2, 1, 1, 2, 1, 1, 2, 1], num_heads=[1, 2, 4, 8, 8, 8, 4,
                     2, 1], win_size=8, token_mlp="fastleff", dd_in=4, modulator=False)),
    ("uformer", dict(img_size=128, embed_dim=8, depths=[1] * 9, num_heads=[1] * 9, win_size=4, token_mlp="mlp",
                     mlp_ratio=3.0, modulator=True, in_chans=1, dd_in=1)),
    ("dehazeformer", dict(embed_dims=[8, 16, 24, 16, 8], depths=[3, 3, 3, 1, 1], num_heads=[2, 4, 6, 1, 1],
                          attn_ratio=[1 / 3, 2 / 3, 1.0, 0.0, 0.0], conv_type=["Conv", "DWConv", "Conv", "DWConv",
                          "Conv"], mlp_ratios=[1.5, 2.0, 3.0, 2.0, 1.0], window_size=4)),
]


@pytest.mark.parametrize("arch, kwargs", ROUND_TRIP, ids=lambda v: v if isinstance(v, str) else "")
def test_round_trip_rebuilds_the_same_state_dict(arch, kwargs):
    original = nystra_hub.build_model(arch, **kwargs)
    detection = nystra_hub.detect_checkpoint(original.state_dict())
    assert detection.arch == arch
    differing = {k for k, v in kwargs.items() if detection.kwargs.get(k) != v}
    assert differing <= detection.open_arguments, differing
    rebuilt = nystra_hub.build_model(arch, **detection.kwargs)
    assert state_dict_listing(rebuilt) == state_dict_listing(original)
    rebuilt.load_state_dict(original.state_dict(), strict=True)


def test_unknown_state_dict_is_a_clear_error(tmp_path):
    with pytest.raises(UnknownCheckpointError) as err:
        nystra_hub.detect_checkpoint({"model": {"backbone.conv.weight": torch.zeros(8, 3, 3, 3)}})
    message = str(err.value)
    assert "not a checkpoint of a known architecture" in message and "backbone.conv.weight" in message
    for arch, cls in nystra_hub.ARCHITECTURES.items():
        assert arch in message and all(key in message for key in cls.detection_keys)
    assert isinstance(err.value, nystra_hub.CheckpointError)  # the CLIs report it as a clean error
    torch.save({"epoch": 1}, tmp_path / "not_weights.pth")
    with pytest.raises(nystra_hub.CheckpointError, match="not a state dict"):
        nystra_hub.detect_checkpoint(tmp_path / "not_weights.pth")


# -- CLI ---------------------------------------------------------------------------------------------------------
X2 = GOLDEN / "swinir_sr_x2_pixelshuffle"


def test_convert_without_variant_or_arch(tmp_path, capsys):
    assert cli("convert", X2 / "checkpoint.pth", "--out", tmp_path / "tiny") == 0
    assert "detected a swinir checkpoint: not a catalogue configuration" in capsys.readouterr().out
    cfg = json.loads((tmp_path / "tiny" / "config.json").read_text())
    built = nystra_hub.build_model("swinir", **case_info(X2.name)["official_constructor_kwargs"])
    assert cfg["arch"] == "swinir" and cfg["official_kwargs"] == json.loads(json.dumps(built.official_kwargs))
    # A catalogue configuration becomes that variant (model card, repo id), as with --variant.
    assert cli("convert", swinir_s_x2_checkpoint(), "--out", tmp_path / "s2", "--no-card") == 0
    assert "catalogue variant swinir-s-x2" in capsys.readouterr().out
    assert json.loads((tmp_path / "s2" / "config.json").read_text())["variant"] == "swinir-s-x2"
    # --kwargs settles an open argument
    jpeg = GOLDEN / "swinir_jpeg_window7" / "checkpoint.pth"
    assert cli("convert", jpeg, "--kwargs", '{"img_range": 1.0}', "--out", tmp_path / "j", "--no-card") == 0
    assert json.loads((tmp_path / "j" / "config.json").read_text())["official_kwargs"]["img_range"] == 1.0


def test_convert_unknown_checkpoint_is_a_clean_error(tmp_path, capsys):
    torch.save({"params": {"head.weight": torch.zeros(2, 2)}}, tmp_path / "other.pth")
    assert cli("convert", tmp_path / "other.pth", "--out", tmp_path / "o") == 1
    err = capsys.readouterr().err
    assert "not a checkpoint of a known architecture" in err and "Traceback" not in err


def restore(*args) -> int:
    return cli("restore", "--no-progress", *args)


def test_restore_with_a_bare_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    write_image(tmp_path / "in" / "lr.png", rng.integers(0, 255, (10, 14, 3)).astype(np.uint8))
    assert restore("--model", X2, tmp_path / "in", "--out", tmp_path / "ref") == 0  # case.json + checkpoint.pth
    assert restore("--weights", X2 / "checkpoint.pth", tmp_path / "in", "--out", tmp_path / "weights") == 0
    assert restore("--model", X2 / "checkpoint.pth", tmp_path / "in", "--out", tmp_path / "model") == 0
    expected = read_image(tmp_path / "ref" / "lr.png")
    assert expected.shape == (20, 28, 3)
    np.testing.assert_array_equal(read_image(tmp_path / "weights" / "lr.png"), expected)
    np.testing.assert_array_equal(read_image(tmp_path / "model" / "lr.png"), expected)
    both = ("--model", X2 / "checkpoint.pth", "--weights", X2 / "checkpoint.pth")
    assert restore(*both, tmp_path / "in", "--out", tmp_path / "both") == 2
