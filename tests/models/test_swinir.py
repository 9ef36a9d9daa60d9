"""SwinIR: golden parity, spandrel parity, manifests, catalogue, input errors, windows."""

from __future__ import annotations

import pytest
import torch
from conftest import golden_cases, load_golden, read_manifest, state_dict_listing

import nystra_hub
from nystra_hub.attention import attention_modules
from nystra_hub.io.variants import VARIANTS, build_variant

SWINIR_CASES = golden_cases("swinir")


def test_all_golden_swinir_cases_present():
    assert len(SWINIR_CASES) == 5


@pytest.mark.parametrize("impl", ["softmax", "sdpa"])
@pytest.mark.parametrize("case", SWINIR_CASES)
def test_golden_parity(case, impl):
    model, io, info = load_golden(case, impl)
    with torch.no_grad():
        out = model(io["input"])
    assert out.shape == io["output"].shape
    assert (out - io["output"]).abs().max().item() < 1e-4


@pytest.mark.parametrize("case", SWINIR_CASES)
def test_golden_nystra_runs_and_switches_back(case):
    model, io, _ = load_golden(case, "nystra")
    with torch.no_grad():
        approx = model(io["input"])
        model.set_attn_impl("softmax")
        exact = model(io["input"])
    assert torch.isfinite(approx).all() and approx.shape == exact.shape
    assert (exact - io["output"]).abs().max().item() < 1e-4


SPANDREL_CONFIGS = [
    dict(upscale=2, in_chans=3, img_size=32, window_size=8, depths=[2, 2], embed_dim=24, num_heads=[2, 3],
         mlp_ratio=2, upsampler="pixelshuffle", resi_connection="1conv"),
    dict(upscale=4, in_chans=3, img_size=16, window_size=4, depths=[3], embed_dim=16, num_heads=[4],
         mlp_ratio=2, upsampler="nearest+conv", resi_connection="3conv"),
    dict(upscale=1, in_chans=1, img_size=21, window_size=7, depths=[2], embed_dim=12, num_heads=[3],
         mlp_ratio=2, img_range=255.0, upsampler="", resi_connection="1conv"),
    dict(upscale=3, in_chans=3, img_size=16, window_size=8, depths=[2], embed_dim=12, num_heads=[2],
         mlp_ratio=2, upsampler="pixelshuffledirect", resi_connection="1conv"),
]


@pytest.mark.parametrize("config", SPANDREL_CONFIGS, ids=lambda c: f"{c['upsampler'] or 'restore'}-w{c['window_size']}")
def test_matches_spandrel(config):
    from spandrel.architectures.SwinIR import SwinIR as SpandrelSwinIR

    reference = SpandrelSwinIR(**config).eval()
    with torch.no_grad():  # visible position bias, like trained weights
        for name, p in reference.named_parameters():
            if "relative_position_bias_table" in name:
                p.normal_(0, 1.0)
    ours = nystra_hub.build_model("swinir", **config)
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.rand(2, config["in_chans"], 19, 26)  # not window multiples, not img_size
    with torch.no_grad():
        expected = reference(x)
        for impl in ("softmax", "sdpa"):
            ours.set_attn_impl(impl)
            assert (ours(x) - expected).abs().max().item() < 1e-4, impl


MANIFEST_VARIANTS = {v.manifest: v.name for v in VARIANTS.values() if v.arch == "swinir" and v.manifest}


@pytest.mark.parametrize("manifest", sorted(MANIFEST_VARIANTS))
def test_full_size_keys_match_manifest(manifest):
    expected = read_manifest(manifest)
    ours = state_dict_listing(build_variant(MANIFEST_VARIANTS[manifest]))
    assert sorted(ours) == sorted(expected)
    for key, (shape, dtype, _) in expected.items():
        assert ours[key] == (shape, dtype), key


def test_manifest_buffers_are_buffers():
    expected = read_manifest("swinir_lightweightSR_DIV2K_s64w8_S_x2")
    model = build_variant("swinir-s-x2")
    buffers = {name for name, _ in model.named_buffers() if name in model.state_dict()}
    assert buffers == {k for k, (_, _, kind) in expected.items() if kind == "BUFFER"}


# Parameter counts of the official classes (architectures.md), in millions.
# Written as given there; the tolerance is half a unit of the last digit quoted.
PARAM_COUNTS = {"swinir-x2": "11.75", "swinir-x3": "11.94", "swinir-x4": "11.90", "swinir-x8": "12.05",
                "swinir-s-x2": "0.91", "swinir-s-x4": "0.93", "swinir-realsr-m-x4": "11.72",
                "swinir-realsr-l-x4": "28.0", "swinir-denoise-color-25": "11.50", "swinir-jpeg-gray-10": "11.49"}


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_catalogue_parameter_counts(name):
    model = build_variant(name)
    count = sum(p.numel() for p in model.parameters()) / 1e6
    quoted = PARAM_COUNTS[name]
    assert abs(count - float(quoted)) <= 0.5 * 10 ** -len(quoted.split(".")[1])


def test_every_swinir_variant_is_consistent():
    swinir = [v for v in VARIANTS.values() if v.arch == "swinir"]
    assert len(swinir) == 8 + 3 + 2 + 6 + 8  # classical x2/3/4/8 at s48+s64, light, real, denoise, JPEG
    for v in swinir:
        assert v.kwargs["window_size"] == v.window and v.kwargs["img_size"] == v.patch
        assert v.kwargs["upscale"] == v.scale
        assert f"s{v.patch}w{v.window}" in v.official_file


def test_gray_mean_is_buffer_not_state():
    model = build_variant("swinir-denoise-gray-15")
    assert "mean" not in model.state_dict()
    assert dict(model.named_buffers())["mean"].shape == (1, 1, 1, 1)


@pytest.mark.parametrize(
    "bad,error,match",
    [
        (torch.rand(3, 24, 24), ValueError, "4-D"),
        (torch.rand(1, 1, 24, 24), ValueError, "channel"),
        ((torch.rand(1, 3, 24, 24) * 255).to(torch.uint8), TypeError, "floating-point"),
        (torch.rand(1, 3, 7, 24), ValueError, "at least 8x8"),
        (torch.full((1, 3, 24, 24), float("nan")), ValueError, "NaN"),
        (torch.full((1, 3, 24, 24), float("inf")), ValueError, "NaN or Inf"),
        ([[0.5]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_inputs_raise_clearly(bad, error, match):
    model, _, _ = load_golden("swinir_sr_x2_pixelshuffle")
    with pytest.raises(error, match=match):
        model(bad)


def test_attn_impl_at_construction_and_switch():
    model = nystra_hub.build_model("swinir", attn_impl="nystra", nystra={"landmarks": 4}, **SPANDREL_CONFIGS[0])
    assert model.attn_impl == "nystra"
    assert all(m.nystra.landmarks == 4 and m.nystra.tau == 5.0 for _, m in attention_modules(model))
    model.set_attn_impl("sdpa")
    assert model.attn_impl == "sdpa"
    with pytest.raises(ValueError):
        nystra_hub.build_model("swinir", attn_impl="fast", **SPANDREL_CONFIGS[0])
    with pytest.raises(TypeError, match="swinir"):
        nystra_hub.build_model("swinir", not_an_arg=1)
    with pytest.raises(ValueError, match="unknown architecture"):
        nystra_hub.build_model("swin2sr")


def test_official_inference_protocol():
    model, io, _ = load_golden("swinir_sr_x2_pixelshuffle")
    x = io["input"].clamp(0, 1)
    h, w = x.shape[-2:]
    # main_test_swinir.py: flip-concatenate to (h // ws + 1) * ws, run, crop, clamp.
    padded = torch.cat([x, torch.flip(x, [2])], 2)[:, :, : (h // 8 + 1) * 8, :]
    padded = torch.cat([padded, torch.flip(padded, [3])], 3)[:, :, :, : (w // 8 + 1) * 8]
    with torch.no_grad():
        expected = model(padded)[..., : 2 * h, : 2 * w].clamp(0, 1)
        out = model.official_inference(x)
    assert torch.equal(out, expected)


def test_enlarged_window_runs_and_keeps_exactness_at_trained_window():
    model, io, _ = load_golden("swinir_sr_x2_pixelshuffle")
    x = io["input"]
    model.set_window_size(16, "centre")
    assert model.window_sizes() == [16] * 4 and "layers.0.residual_group.blocks.1.attn_mask" not in model.state_dict()
    with torch.no_grad():
        for impl in ("softmax", "sdpa", "nystra"):
            model.set_attn_impl(impl)
            out = model(x)
            assert out.shape == io["output"].shape and torch.isfinite(out).all()
        with pytest.raises(ValueError, match="at least 16x16"):
            model(x[..., :12, :12])


def test_mask_buffer_cache_not_rebuilt_per_forward(monkeypatch):
    from nystra_hub.attention import windows

    model, io, _ = load_golden("swinir_sr_x2_pixelshuffle")
    windows._shifted_window_mask.cache_clear()
    with torch.no_grad():
        model(io["input"])
        model(io["input"])
    info = windows._shifted_window_mask.cache_info()
    assert info.misses == 1  # one geometry: built once for every shifted block and both forwards
