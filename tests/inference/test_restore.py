"""nystra_hub.inference.restore: official protocol equality, type round trips, channel rules, errors, tiling."""

from __future__ import annotations

import copy
import importlib
import json
import math
import re
import sys
import warnings
from functools import cache

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import GOLDEN, TESTSETS, load_golden, without_tile_minimum
from PIL import Image, ImageOps

import nystra_hub
from nystra_hub.inference.restore import (
    BLEND_MARGIN,
    _axis_weights,
    _blend_tiles,
    _starts,
    estimate_activation_mb,
    plan_tiles,
    restore,
)
from nystra_hub.io.variants import get_variant

restore_module = importlib.import_module("nystra_hub.inference.restore")

HAS_UFORMER = "uformer" in nystra_hub.ARCHITECTURES
HAS_DEHAZE = "dehazeformer" in nystra_hub.ARCHITECTURES
needs_uformer = pytest.mark.skipif(not HAS_UFORMER, reason="nystra_hub/models/uformer.py not available yet")
needs_dehaze = pytest.mark.skipif(not HAS_DEHAZE, reason="nystra_hub/models/dehazeformer.py not available yet")


@cache
def golden(case: str):
    return load_golden(case)[0]


def x2():
    return golden("swinir_sr_x2_pixelshuffle")


def gray_model():
    return golden("swinir_denoise_gray_3conv")


def small_tiles_x2():
    return without_tile_minimum(x2())


@cache
def baby(size: int = 96) -> np.ndarray:
    return np.array(Image.open(TESTSETS / "Set5" / "LR_bicubic" / "X2" / "babyx2.png"))[:size, :size]


def official(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.official_inference(x)


# -- the official protocol ---------------------------------------------------------------------------------------
ALL_CASES: list = ["swinir_sr_x2_pixelshuffle", "swinir_lightsr_x3_direct", "swinir_denoise_gray_3conv",
             "swinir_jpeg_window7", "swinir_realsr_x4_nearest"]
ALL_CASES += [pytest.param("uformer_tiny_modulator", marks=needs_uformer),
              pytest.param("dehazeformer_tiny_conv", marks=needs_dehaze)]


@pytest.mark.parametrize("case", ALL_CASES)
def test_float_tensor_equals_official_inference(case):
    model, io, info = load_golden(case)
    x = io["input"]
    if info["arch"] == "dehazeformer":
        x = (x + 1) / 2  # golden DehazeFormer inputs are in [-1, 1]; restore takes [0, 1]
    x = x.clamp(0, 1)
    out = restore(model, x[0])
    ref = official(model, x)[0]
    assert out.shape == ref.shape == (x.shape[1], x.shape[2] * model.scale, x.shape[3] * model.scale)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)


def test_batch_is_restored_image_by_image():
    x = torch.rand(2, 3, 12, 20)
    out = restore(x2(), x)
    assert out.shape == (2, 3, 24, 40)
    torch.testing.assert_close(out[1], official(x2(), x[1:2])[0], atol=1e-6, rtol=0)


def test_package_attribute_stays_the_function_after_importing_the_module():
    importlib.import_module("nystra_hub.inference.restore")
    assert nystra_hub.restore is restore and restore_module.plan_tiles is plan_tiles
    x = torch.rand(3, 10, 12)
    torch.testing.assert_close(nystra_hub.restore(x2(), x), restore(x2(), x))


# -- kinds, dtypes, layouts -----------------------------------------------------------------------------------------
def test_uint8_numpy_matches_official_on_the_same_data():
    img = baby(24)
    out = restore(x2(), img)
    assert out.dtype == np.uint8 and out.shape == (48, 48, 3)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    ref = (official(x2(), x)[0].permute(1, 2, 0) * 255).round().byte().numpy()
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float16, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(10, 12), (10, 12, 1), (10, 12, 3), (10, 12, 4), (10, 12, 2)])
def test_numpy_round_trip_keeps_dtype_and_layout(dtype, shape):
    if np.issubdtype(dtype, np.integer):
        img = np.random.default_rng(0).integers(0, np.iinfo(dtype).max, shape).astype(dtype)
    else:
        img = np.random.default_rng(0).random(shape).astype(dtype)
    out = restore(x2(), img)  # gray inputs go through the RGB model replicated (gray="replicate")
    assert out.dtype == dtype
    assert out.shape == (20, 24, *shape[2:])


@pytest.mark.parametrize("dtype", [torch.uint8, torch.uint16, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("shape", [(10, 12), (3, 10, 12), (2, 4, 10, 12)])
def test_tensor_round_trip_keeps_dtype_and_layout(dtype, shape):
    if dtype.is_floating_point:
        img = torch.rand(shape).to(dtype)
    else:
        img = torch.randint(0, 250, shape).to(dtype)
    out = restore(x2(), img)
    assert out.dtype == dtype and out.device == img.device
    assert out.shape == (*shape[:-2], 20, 24)
    assert not out.is_inference()  # a normal tensor, usable outside inference mode


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "I;16", "I", "F", "CMYK"])
def test_pil_round_trip_keeps_mode(mode):
    rgb = Image.fromarray(baby(12))
    if mode == "I;16":
        image = Image.fromarray(np.array(rgb.convert("L")).astype(np.uint16) * 257)
    elif mode == "F":
        image = Image.fromarray(np.array(rgb.convert("L")).astype(np.float32) / 255, mode="F")
    else:
        image = rgb.convert(mode)
    out = restore(x2(), image)
    assert isinstance(out, Image.Image)
    assert out.mode == image.mode and out.size == (24, 24)


def test_palette_image_comes_back_rgb():
    out = restore(x2(), Image.fromarray(baby(12)).convert("P"))
    assert out.mode == "RGB" and out.size == (24, 24)


def test_model_dtype_and_mode_are_respected():
    model = load_golden("swinir_sr_x2_pixelshuffle")[0].double().train()
    x = torch.rand(3, 9, 11)
    out = restore(model, x)
    assert model.training  # restored to its previous mode
    model.eval()
    torch.testing.assert_close(out, official(model, x[None].double())[0].float(), atol=1e-6, rtol=0)


# -- channels ------------------------------------------------------------------------------------------------------
def test_gray_into_rgb_model_replicates_and_converts_back():
    gray = baby(16)[:, :, 1]
    out = restore(x2(), gray)
    assert out.shape == (32, 32) and out.dtype == np.uint8
    x = torch.from_numpy(gray).float().div(255)[None, None].repeat(1, 3, 1, 1)
    rgb = official(x2(), x)[0]
    luma = (rgb * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0)
    np.testing.assert_array_equal(out, (luma * 255).round().clamp(0, 255).byte().numpy())
    with pytest.raises(ValueError, match="gray image given to an RGB model"):
        restore(x2(), gray, gray="error")


def test_rgb_into_gray_model_is_refused_unless_asked():
    with pytest.raises(ValueError, match="color='luma'"):
        restore(gray_model(), baby(16))
    out = restore(gray_model(), baby(16), color="luma")
    assert out.shape == (16, 16, 1)
    assert restore(gray_model(), Image.fromarray(baby(16)), color="luma").mode == "L"


def test_alpha_is_kept_at_scale_1_resized_for_sr_or_dropped():
    la = np.random.default_rng(1).integers(0, 256, (16, 16, 2)).astype(np.uint8)
    out = restore(gray_model(), la)
    assert out.shape == (16, 16, 2)
    np.testing.assert_array_equal(out[:, :, 1], la[:, :, 1])  # scale 1: alpha untouched
    rgba = np.concatenate([baby(16), np.full((16, 16, 1), 200, np.uint8)], axis=2)
    out = restore(x2(), rgba)
    assert out.shape == (32, 32, 4)
    assert (out[:, :, 3] == 200).all()  # bicubic resize of a constant alpha
    np.testing.assert_array_equal(out[:, :, :3], restore(x2(), baby(16)))
    assert restore(x2(), rgba, alpha="drop").shape == (32, 32, 3)
    assert restore(x2(), Image.fromarray(rgba), alpha="drop").mode == "RGB"


# -- errors --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("image,error,match", [
    (torch.full((3, 8, 8), float("nan")), ValueError, "NaN"),
    (np.full((8, 8, 3), np.inf, np.float32), ValueError, "NaN or Inf"),
    (torch.rand(8), ValueError, "must be"),
    (torch.rand(1, 1, 3, 8, 8), ValueError, "must be"),
    (np.zeros((0, 8, 3), np.uint8), ValueError, "empty"),
    (torch.zeros(3, 0, 8), ValueError, "empty"),
    (np.zeros((8, 8, 3), np.int32), TypeError, "unsupported NumPy dtype"),
    (torch.zeros(3, 8, 8, dtype=torch.int64), TypeError, "unsupported tensor dtype"),
    (np.zeros((8, 8, 3), bool), TypeError, "unsupported NumPy dtype"),
    (np.zeros((8, 8, 5), np.uint8), ValueError, "channels"),
    (np.zeros((3, 8, 8), np.uint8), ValueError, "looks like"),
    (torch.zeros(8, 8, 3), ValueError, "looks like"),
    (np.full((8, 8, 3), 200.0, np.float32), ValueError, r"\[0, 1\]"),
    ("image.png", TypeError, "PIL image, a NumPy array or a torch tensor"),
])
def test_bad_inputs_raise_clear_errors(image, error, match):
    with pytest.raises(error, match=match):
        restore(x2(), image)


def test_bad_arguments_and_models():
    with pytest.raises(TypeError, match="nystra_hub model"):
        restore(torch.nn.Conv2d(3, 3, 1), torch.rand(3, 8, 8))
    for kwargs in (dict(gray="x"), dict(color="x"), dict(alpha="x"), dict(tile=-1), dict(memory_budget_mb=0)):
        with pytest.raises(ValueError):
            restore(x2(), torch.rand(3, 8, 8), **kwargs)


# -- tiling --------------------------------------------------------------------------------------------------------
def test_plan_chooses_tiles_from_the_memory_budget():
    model = nystra_hub.build_variant("swinir-s-x2")
    whole = plan_tiles(model, 64, 64)
    assert whole.tile is None and whole.estimate_mb < 1024
    big = plan_tiles(model, 2048, 2048)  # the documented default budget
    assert big.budget_mb == restore_module.DEFAULT_MEMORY_BUDGET_MB
    assert big.tile is not None and big.tile % 8 == 0 and big.overlap % 8 == 0
    assert big.tile_estimate_mb <= big.budget_mb < big.estimate_mb
    small = plan_tiles(model, 2048, 2048, memory_budget_mb=256)
    assert small.tile < big.tile and small.tile_estimate_mb <= 256
    assert plan_tiles(model, 2048, 2048, tile=0).tile is None
    forced = plan_tiles(model, 300, 300, tile=100, tile_overlap=20)
    assert (forced.tile, forced.overlap) == (104, 24)  # rounded up to window multiples
    with pytest.raises(ValueError, match="larger than tile_overlap"):
        plan_tiles(model, 300, 300, tile=96, tile_overlap=96)
    # the estimate follows the documented formula: linear in padded pixels
    a, b = estimate_activation_mb(model, 255, 255), estimate_activation_mb(model, 511, 511)  # padded: 256, 512
    assert math.isclose(b / a, (512 * 512) / (256 * 256), rel_tol=1e-9)


def test_starts_cover_the_image_and_weights_blend_without_gaps():
    for size, tile, overlap in [(136, 64, 32), (232, 128, 32), (264, 256, 32), (50, 64, 16), (97, 40, 8)]:
        starts = _starts(size, tile, overlap)
        assert starts[0] == 0 and min(size, starts[-1] + tile) == size
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))
        for scale in (1, 3):
            weights = _axis_weights(size, tile, starts, scale, "cpu")
            total = torch.zeros(size * scale)
            for s, w in zip(starts, weights):
                total[s * scale:s * scale + len(w)] += w
            assert total.min() > 0.5 and total.max() < 1.0 + 1e-5  # complementary ramps: a partition of unity
    assert 0 < BLEND_MARGIN < 0.5


def test_blending_reproduces_a_local_operator_exactly():
    """With a context-free tile function the tiled result must equal the whole-image one: no seams."""
    x = torch.rand(1, 3, 50, 70)

    def upsample(t):
        return F.interpolate(t, scale_factor=2, mode="nearest")

    tiled = _blend_tiles(upsample, x, tile=24, overlap=8, scale=2)
    torch.testing.assert_close(tiled, upsample(x), atol=1e-6, rtol=0)


def test_one_tile_covering_the_image_is_exactly_official():
    x = torch.rand(3, 30, 26)
    model = small_tiles_x2()
    torch.testing.assert_close(restore(model, x, tile=64), official(model, x[None])[0], atol=0, rtol=0)


def test_tiled_swinir_matches_whole_image_closely():
    """Windows of aligned tiles coincide with the whole image's; only context near tile borders differs, and the
    blend gives those pixels little weight. Measured on this golden model: max 0.007 at overlap 32, 0.06 at 16."""
    x = torch.from_numpy(baby(96)).permute(2, 0, 1).float() / 255
    whole = restore(small_tiles_x2(), x, tile=0)
    plan = plan_tiles(small_tiles_x2(), 96, 96, tile=64, tile_overlap=32)
    assert plan.tiles == 9
    tiled = restore(small_tiles_x2(), x, tile=64, tile_overlap=32)
    diff = (tiled - whole).abs()
    assert diff.max() < 0.02 and diff.mean() < 5e-4
    less_overlap = (restore(small_tiles_x2(), x, tile=64, tile_overlap=16) - whole).abs()
    assert less_overlap.mean() > diff.mean()  # more overlap, closer to the whole-image result


def test_auto_tiling_kicks_in_under_a_small_budget():
    x = torch.rand(3, 80, 80)
    plan = plan_tiles(small_tiles_x2(), 80, 80, memory_budget_mb=12, tile_overlap=16)
    assert plan.tile == 48 and plan.tiles == 9 and plan.tile_estimate_mb <= 12 < plan.estimate_mb
    auto = restore(small_tiles_x2(), x, memory_budget_mb=12, tile_overlap=16)
    forced = restore(small_tiles_x2(), x, tile=48, tile_overlap=16)
    torch.testing.assert_close(auto, forced, atol=0, rtol=0)


@needs_uformer
def test_uformer_tiles_run_the_official_protocol_per_tile():
    info = json.loads((GOLDEN / "uformer_tiny_modulator" / "case.json").read_text())
    torch.manual_seed(0)  # random (smooth) weights: the golden ones saturate, so any context change shows
    model = without_tile_minimum(nystra_hub.build_model("uformer", **info["official_constructor_kwargs"]))
    x = torch.rand(3, 100, 256) * 0.5 + torch.linspace(0, 0.5, 256)
    plan = plan_tiles(model, 100, 256, tile=100, tile_overlap=64)
    assert plan.tile == 128 and plan.tiles == 3  # rounded up to the 128-px padding unit
    one = restore(model, x[:, :, :120], tile=128, protocol="official")  # one tile: exactly the official protocol
    torch.testing.assert_close(one, official(model, x[None, :, :, :120])[0], atol=1e-6, rtol=0)
    whole = restore(model, x, tile=0, protocol="official")
    diff = (restore(model, x, tile=128, tile_overlap=64, protocol="official") - whole).abs()
    assert diff.max() < 0.05 and diff.mean() < 2e-3


def test_tiles_stacked_into_one_forward_give_the_same_image():
    """tile_batch only groups the same tile crops into fewer, larger forwards; the blend is unchanged."""
    x = torch.from_numpy(baby(96)).permute(2, 0, 1).float() / 255
    one = restore(small_tiles_x2(), x, tile=48, tile_overlap=16, tile_batch=1)
    calls = []
    model = copy.deepcopy(small_tiles_x2())
    model.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    plan = plan_tiles(model, 96, 96, tile=48, tile_overlap=16, tile_batch=4)
    assert (plan.tiles, plan.batch) == (9, 4)
    done = []
    stacked = restore(model, x, tile=48, tile_overlap=16, tile_batch=4, progress=lambda d, t: done.append((d, t)))
    assert calls == [4, 4, 1] and done == [(4, 9), (8, 9), (9, 9)]
    torch.testing.assert_close(stacked, one, atol=1e-5, rtol=0)  # batched matrix products round differently


@needs_uformer
def test_uformer_tiles_stacked_run_the_protocol_per_tile():
    info = json.loads((GOLDEN / "uformer_tiny_modulator" / "case.json").read_text())
    torch.manual_seed(0)
    model = without_tile_minimum(nystra_hub.build_model("uformer", **info["official_constructor_kwargs"]))
    x = torch.rand(3, 100, 256)
    one = restore(model, x, tile=128, tile_overlap=64, tile_batch=1)
    torch.testing.assert_close(restore(model, x, tile=128, tile_overlap=64, tile_batch=3), one, atol=1e-5, rtol=0)


def test_tile_batch_is_one_on_a_cpu_and_fills_the_budget_on_a_gpu():
    assert plan_tiles(small_tiles_x2(), 300, 300, tile=64).batch == 1  # a CPU's cores are busy with one tile
    model = small_tiles_x2()
    assert plan_tiles(model, 300, 300, tile=64, tile_batch=100).batch == plan_tiles(model, 300, 300, tile=64).tiles
    assert restore_module._tile_batch(None, torch.device("cuda"), budget=100.0, tile_mb=30.0, count=9) == 3
    assert restore_module._tile_batch(None, torch.device("cuda"), budget=1000.0, tile_mb=30.0, count=9) == 9
    assert restore_module._tile_batch(None, torch.device("cuda"), budget=10.0, tile_mb=30.0, count=9) == 1
    for bad in (0, -2, 1.5, True, "4"):
        with pytest.raises(ValueError, match="tile_batch must be None"):
            plan_tiles(small_tiles_x2(), 300, 300, tile=64, tile_batch=bad)


@needs_dehaze
def test_dehazeformer_refuses_tiles_clearly():
    model = golden("dehazeformer_tiny_conv")
    x = torch.rand(3, 40, 48)
    with pytest.raises(ValueError, match="RLN"):
        restore(model, x, tile=32)
    with pytest.raises(ValueError, match="tile=0"):
        restore(model, x, memory_budget_mb=0.01)
    torch.testing.assert_close(restore(model, x, tile=0, memory_budget_mb=0.01), official(model, x[None])[0])


# -- EXIF orientation, out-of-range floats, meta tensors -----------------------------------------------------------
def test_pil_exif_orientation_is_applied_and_the_result_is_upright(tmp_path):
    image = Image.fromarray(baby(16)[:12])  # 12 rows, 16 columns as stored
    exif = image.getexif()
    exif[0x0112] = 6  # displayed rotated 90° clockwise: 16 rows, 12 columns
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    with Image.open(tmp_path / "rotated.jpg") as jpeg:
        out = restore(x2(), jpeg)
        expected = restore(x2(), ImageOps.exif_transpose(jpeg))
    assert out.size == (24, 32)  # (width, height) of the displayed image, x2
    np.testing.assert_array_equal(np.asarray(out), np.asarray(expected))
    assert out.getexif().get(0x0112) is None  # applied, not copied


def test_float_values_outside_0_1_warn_with_their_fraction():
    x = torch.full((3, 8, 8), 0.5)
    x[:, :2] = 1.3  # a quarter of the values
    with pytest.warns(UserWarning, match=r"25\.00% of the float image's values are outside \[0, 1\] "
                                         r"\(range \[0\.5, 1\.3\]\)"):
        out = restore(x2(), x)
    assert out.min() >= 0 and out.max() <= 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        restore(x2(), torch.rand(3, 8, 8))


def test_the_range_warning_points_at_the_callers_line_for_every_kind_of_image():
    """The conversion runs a few calls deep (and one deeper for PIL images); the warning still names the line
    that called restore."""
    tensor = torch.full((3, 8, 8), 1.3)
    pil = Image.fromarray(np.full((8, 8), 1.3, np.float32), mode="F")
    for image in (tensor, pil):
        with pytest.warns(UserWarning, match="outside \\[0, 1\\]") as caught:
            line = sys._getframe().f_lineno + 1
            restore(x2(), image)
        assert (caught[0].filename, caught[0].lineno) == (__file__, line)


def test_meta_tensors_are_refused_clearly():
    with pytest.raises(ValueError, match="meta device"):
        restore(x2(), torch.empty(3, 8, 8, device="meta"))
    with pytest.raises(ValueError, match="meta device"):
        restore(copy.deepcopy(x2()).to("meta"), torch.rand(3, 8, 8))


# -- tiles under a tiny budget -------------------------------------------------------------------------------------
def test_a_tiny_budget_bounds_the_repeated_work():
    """SwinIR-M x4 at 1024² under 64 MB once kept the 48-px overlap on 56-px tiles: 15,129 tiles, ~49x the work.
    (The estimate depends on widths, heads, window and upsampler, not depth: one block per stage is enough.)"""
    kwargs = {**get_variant("swinir-x4").kwargs, "depths": [1] * 6}
    model = nystra_hub.build_model("swinir", **kwargs)
    plan = plan_tiles(model, 1024, 1024, memory_budget_mb=202)  # just holds the smallest tile, 12 windows
    assert (plan.tile, plan.overlap) == (96, 48) and plan.tile_estimate_mb <= 202
    assert (plan.tile / (plan.tile - plan.overlap)) ** 2 <= restore_module.MAX_TILE_REDUNDANCY
    assert plan_tiles(model, 1024, 1024, memory_budget_mb=1024).overlap == 48  # large tiles keep the overlap
    # without the quality minimum, a small tile halves the overlap instead of repeating the work
    small = plan_tiles(without_tile_minimum(model), 1024, 1024, memory_budget_mb=64)
    assert (small.tile / (small.tile - small.overlap)) ** 2 <= restore_module.MAX_TILE_REDUNDANCY
    assert small.tiles < 2000 and small.tile_estimate_mb <= 64 and "overlap 48 -> 24" in small.reason
    with pytest.raises(ValueError, match="memory_budget_mb >= 202"):  # an asked overlap changes nothing
        plan_tiles(model, 1024, 1024, memory_budget_mb=64, tile_overlap=48)


def test_a_budget_below_the_smallest_tile_is_refused_naming_the_budget_that_works():
    """restore(model, image, memory_budget_mb=1) once cut a 300x200 image into 925 tiles of 16 px, 200/255 away
    from the whole-image output on the golden SwinIR; now it is refused, naming the smallest budget that works."""
    image = torch.rand(3, 200, 300)
    with pytest.raises(ValueError, match=r"memory_budget_mb=1 cannot hold .* smallest tile \(96 px") as refused:
        restore(x2(), image, memory_budget_mb=1)
    workable = int(re.search(r"memory_budget_mb >= (\d+)", str(refused.value)).group(1))
    plan = plan_tiles(x2(), 200, 300, memory_budget_mb=workable)
    assert plan.tile == 96 and plan.tile_estimate_mb <= workable
    with pytest.raises(ValueError, match="memory_budget_mb >= "):
        plan_tiles(x2(), 200, 300, memory_budget_mb=workable - 1)


def test_the_default_budget_runs_the_smallest_tile_when_it_cannot_hold_it():
    """Uformer-B's smallest trustworthy tile (256 px) is estimated at 1094 MB, over the 1024 MB default: a 300x200
    image with default options once failed; the default budget is a target, an asked one a limit."""
    model = nystra_hub.build_variant("uformer-b-sidd")
    plan = plan_tiles(model, 200, 300)
    assert plan.tile == 256 and plan.tile_estimate_mb > restore_module.DEFAULT_MEMORY_BUDGET_MB
    assert "over the default budget and runs anyway" in plan.reason
    with pytest.raises(ValueError, match=r"memory_budget_mb=1024 cannot hold .* smallest tile \(256 px"):
        plan_tiles(model, 200, 300, memory_budget_mb=1024)


@pytest.mark.parametrize("case, smallest", [("swinir_sr_x2_pixelshuffle", 96), ("swinir_jpeg_window7", 84),
                                            pytest.param("uformer_tiny_modulator", 256, marks=needs_uformer)])
def test_a_tile_below_the_architecture_minimum_is_refused_naming_it(case, smallest):
    """Measured on the golden models (benchmarks/tile-minimum-golden.json): SwinIR tiles of 12 windows stay within
    0.30/255 of the whole image, 8 windows up to 6.8/255; Uformer 256-px tiles 0.000/255, 128-px ones 255/255."""
    model = golden(case)
    size = smallest + 40
    with pytest.raises(ValueError, match=rf"below this model's smallest tile, {smallest} px.*tile >= {smallest}"):
        restore(model, torch.rand(model.in_chans, size, size), tile=smallest - model.official_multiple)
    plan = plan_tiles(model, size, size, tile=smallest)
    assert plan.tile == smallest and plan.tiles > 1
    automatic = plan_tiles(model, 4 * size, 4 * size, memory_budget_mb=plan.tile_estimate_mb + 0.5)
    assert automatic.tile >= smallest


def test_the_golden_swinir_in_its_smallest_tiles_stays_close_to_the_whole_image():
    """The minimum is about quality: on the golden x2 model (attention and bias perturbed so that they matter) a
    Set5 crop in 96-px tiles stays within 1/255 of the whole image (0.30/255 measured on a 300x200 Set14 crop)."""
    x = torch.from_numpy(baby(200)).permute(2, 0, 1).float() / 255
    whole = restore(x2(), x, tile=0)
    tiled = restore(x2(), x, tile=96)
    assert (tiled - whole).abs().max() < 1 / 255
