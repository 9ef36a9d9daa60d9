"""``nystra-hub eval``: pairs, protocol choice, reports, and the official SwinIR numbers of a known case (the shipped
reference model on Set5 images), checked against the official formulas written out independently here."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from conftest import REPO, TESTSETS, requires_shared
from PIL import Image

import nystra_hub
from nystra_hub.cli import main
from nystra_hub.cli.evaluate import Pair, default_scoring, evaluate, pair_images, score_pair, to_unit_tensor
from nystra_hub.measure.metrics import PROTOCOLS

REFERENCE = REPO / "reference_models" / "swinir-ref-x2"


# -- SwinIR's util_calculate_psnr_ssim.py, written out again from its definition (HWC uint8, BGR weights on RGB) --
def official_y(image: np.ndarray) -> np.ndarray:
    """to_y_channel: float32 in [0, 1], BT.601 Y (16 + 65.481 R + 128.553 G + 24.966 B), back in float32 ×255."""
    x = image.astype(np.float32) / 255.0
    y = np.dot(x, [65.481, 128.553, 24.966]) + 16.0  # float64, then /255 as float32 (bgr2ycbcr's output type)
    return (y / 255.0).astype(np.float32) * 255.0


def official_psnr(a: np.ndarray, b: np.ndarray, border: int) -> float:
    a, b = a[border:-border, border:-border], b[border:-border, border:-border]
    mse = np.mean((official_y(a) - official_y(b)) ** 2)
    return float(20.0 * np.log10(255.0 / np.sqrt(mse)))


def _filter_valid(x: np.ndarray, window: np.ndarray) -> np.ndarray:
    return np.einsum("ijkl,kl->ij", np.lib.stride_tricks.sliding_window_view(x, window.shape), window)


def official_ssim(a: np.ndarray, b: np.ndarray, border: int) -> float:
    """_ssim on the Y channel: Gaussian 11x11 (sigma 1.5) window, 'valid' region, float64."""
    a = official_y(a[border:-border, border:-border]).astype(np.float64)
    b = official_y(b[border:-border, border:-border]).astype(np.float64)
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    window = np.outer(g / g.sum(), g / g.sum())
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = _filter_valid(a, window), _filter_valid(b, window)
    var_a = _filter_valid(a * a, window) - mu_a**2
    var_b = _filter_valid(b * b, window) - mu_b**2
    cov = _filter_valid(a * b, window) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


@requires_shared
def test_eval_reproduces_the_official_swinir_numbers_on_set5(tmp_path):
    lq, gt = tmp_path / "lq", tmp_path / "gt"
    lq.mkdir(), gt.mkdir()
    names = ["butterfly", "woman"]  # the two smallest Set5 images: seconds on a CPU
    for name in names:
        (lq / f"{name}x2.png").symlink_to(TESTSETS / "Set5" / "LR_bicubic" / "X2" / f"{name}x2.png")
        (gt / f"{name}.png").symlink_to(TESTSETS / "Set5" / "HR" / f"{name}.png")
    out, table, saved = tmp_path / "report.json", tmp_path / "report.csv", tmp_path / "restored"
    assert main(["eval", "--model", str(REFERENCE), "--lq", str(lq), "--gt", str(gt), "--device", "cpu",
                 "--out", str(out), "--csv", str(table), "--save-images", str(saved)]) == 0
    report = json.loads(out.read_text())
    assert report["schema"] == "nystra_hub.eval/1" and report["failures"] == 0
    assert report["scoring"]["name"] == "swinir-sr" and report["scoring"]["border_crop"] == 2
    assert report["settings"]["protocol"] == "official"
    recorded = {r["image"]: r for r in json.loads((REFERENCE / "reference.json").read_text())["heldout"]["per_image"]}
    for row, name in zip(report["images"], names):
        restored = np.asarray(Image.open(saved / f"{name}x2.png"))
        truth = np.asarray(Image.open(TESTSETS / "Set5" / "HR" / f"{name}.png").convert("RGB"))
        truth = truth[: restored.shape[0], : restored.shape[1]]  # the official crop of the ground truth
        assert row["psnr"] == pytest.approx(official_psnr(restored, truth, 2), abs=1e-4)
        assert row["ssim"] == pytest.approx(official_ssim(restored, truth, 2), abs=1e-6)
        # and the numbers this reference model was trained to (reference.json, measured on another machine)
        assert row["psnr"] == pytest.approx(recorded[f"Set5/HR/{name}.png"]["psnr"], abs=0.01)
    rows = list(csv.DictReader(table.open()))
    assert [r["lq"] for r in rows[:-1]] == [r["lq"] for r in report["images"]] and rows[-1]["lq"].startswith("mean")
    assert float(rows[-1]["psnr"]) == pytest.approx(np.mean([r["psnr"] for r in report["images"]]))


def test_pairs_by_name_with_scale_and_degradation_tags(tmp_path):
    lq, gt = tmp_path / "lq", tmp_path / "gt"
    lq.mkdir(), gt.mkdir()
    for name in ("babyx2.png", "bird_x4.png", "head_lr.png", "woman.png", "kodim01_noisy.png", "lonely.png"):
        Image.new("RGB", (4, 4)).save(lq / name)
    for name in ("baby.png", "bird.png", "head.png", "woman.png", "kodim01.png"):
        Image.new("RGB", (4, 4)).save(gt / name)
    (gt / "notes.txt").write_text("not an image")
    pairs = {p.lq.name: p.gt.name if p.gt else None for p in pair_images(lq, gt)}
    assert pairs == {"babyx2.png": "baby.png", "bird_x4.png": "bird.png", "head_lr.png": "head.png",
                     "woman.png": "woman.png", "kodim01_noisy.png": "kodim01.png", "lonely.png": None}


def test_protocol_follows_the_model():
    model = nystra_hub.load(REFERENCE)
    protocol, why = default_scoring(model, REFERENCE)
    assert protocol.name == "swinir-sr" and "reference.json" in why
    denoiser = nystra_hub.load(REPO / "reference_models" / "uformer-ref-denoise25")
    assert default_scoring(denoiser)[0].name == "rgb-uint8"
    variant = nystra_hub.build_variant("swinir-s-x2")
    protocol, why = default_scoring(variant)
    assert protocol.name == "swinir-sr" and "lightweight-sr" in why


def test_gray_images_are_scored_on_their_one_channel():
    """SwinIR's to_y_channel leaves a single-channel image as it is: no Y weights on replicated gray."""
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 256, (40, 40), dtype=np.uint8)
    output = np.clip(truth.astype(int) + rng.integers(-3, 4, truth.shape), 0, 255).astype(np.uint8)
    scores = score_pair(output, truth, PROTOCOLS["swinir-sr"], scale=2)
    mse = np.mean((output[2:-2, 2:-2].astype(float) - truth[2:-2, 2:-2]) ** 2)
    assert scores["psnr"] == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-9)


def test_images_are_scored_in_float64_alpha_dropped_and_float_images_checked():
    """eval converts through the package's one converter, at the metrics' float64 precision."""
    rgba16 = np.random.default_rng(0).integers(0, 65536, (4, 5, 4)).astype(np.uint16)
    unit = to_unit_tensor(rgba16)
    assert unit.dtype == torch.float64 and unit.shape == (3, 4, 5)
    np.testing.assert_array_equal(unit.numpy(), rgba16[:, :, :3].transpose(2, 0, 1) / 65535.0)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\].*divide by 255"):
        to_unit_tensor(np.full((4, 5), 200.0, np.float32))  # a float (F-mode) ground truth of 8-bit values


def test_failures_are_reported_and_the_rest_scored(tmp_path):
    lq = tmp_path / "a.png"
    Image.new("RGB", (16, 16), (10, 20, 30)).save(lq)
    model = nystra_hub.load(REFERENCE)
    result = evaluate(model, [Pair(lq, None), Pair(lq, lq)], PROTOCOLS["rgb-uint8"], log=lambda _: None)
    assert result["failures"] == 2 and "no ground truth" in result["images"][0]["error"]
    assert "smaller than the output" in result["images"][1]["error"]  # an x2 model's output is twice the size
    assert result["mean"] == {"psnr": None, "ssim": None, "images": 0}
