"""Metrics against hand-computed values, the per-layer diagnostic, and the fidelity command's JSON."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch
from conftest import TESTSETS
from helpers import make_reference, tiny_swinir

import nystra_hub
from nystra_hub.cli import fidelity as fidelity_cli
from nystra_hub.cli import main
from nystra_hub.io.cards import build_model_card, render_run_page
from nystra_hub.measure.arms import resolve_model, standard_arms
from nystra_hub.measure.fidelity import layer_errors
from nystra_hub.measure.metrics import PROTOCOLS, psnr, rgb_to_y, score, ssim


# -- metrics ------------------------------------------------------------------------------------------------------
def test_psnr_hand_computed():
    a = torch.zeros(3, 8, 8)
    assert psnr(a, a + 2) == pytest.approx(20 * math.log10(255 / 2))
    assert psnr(a, a + 0.1, data_range=1.0) == pytest.approx(20.0)
    assert psnr(a, a) == math.inf


def test_y_channel_bt601():
    red, white, black = (torch.tensor(c, dtype=torch.float64).view(3, 1, 1) for c in
                         ([255.0, 0, 0], [255.0, 255, 255], [0.0, 0, 0]))
    assert float(rgb_to_y(red)) == pytest.approx(16 + 65.481)
    assert float(rgb_to_y(white)) == pytest.approx(235.0)
    assert float(rgb_to_y(black)) == pytest.approx(16.0)


def test_ssim_identical_and_constant_images():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 20, 20, generator=gen) * 255
    assert ssim(x, x) == pytest.approx(1.0)
    a, b = torch.full((16, 16), 100.0), torch.full((16, 16), 110.0)
    c1 = (0.01 * 255) ** 2
    assert ssim(a, b) == pytest.approx((2 * 100 * 110 + c1) / (100**2 + 110**2 + c1))


def test_ssim_matches_direct_formula_on_one_window():
    """An 11x11 image has exactly one 'valid' window: SSIM is the Gaussian-weighted formula, written out."""
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0, 255, (11, 11)), rng.uniform(0, 255, (11, 11))
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    mu_a, mu_b = (w * a).sum(), (w * b).sum()
    var_a, var_b = (w * a * a).sum() - mu_a**2, (w * b * b).sum() - mu_b**2
    cov = (w * a * b).sum() - mu_a * mu_b
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    expected = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    assert ssim(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(expected, rel=1e-10)


def test_swinir_protocol_crops_border_and_quantises():
    gt = (torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(2)) * 255).round() / 255  # 8-bit levels
    out = gt.clone()
    out[:, :2] = 1 - out[:, :2]  # differs only inside the 2-pixel border
    out = out + 0.4 / 255  # below half a grey level: rounds away
    assert score(out, gt, "swinir-sr", scale=2)["psnr"] == math.inf
    assert score(out, gt, "rgb-uint8")["psnr"] < 30
    # ground truth larger than the output (modcrop) is cropped to it
    assert score(gt[:, :30, :30], gt, "rgb-uint8")["psnr"] == math.inf


def test_dehazeformer_protocol_float_psnr():
    gt = torch.full((3, 40, 40), 0.6)
    result = score(torch.full((3, 40, 40), 0.5), gt, PROTOCOLS["dehazeformer"])
    assert result["psnr"] == pytest.approx(20.0)
    assert PROTOCOLS["dehazeformer"].describe()["channel"] == "RGB"
    assert PROTOCOLS["swinir-sr"].describe(3)["border_crop"] == 3


# -- per-layer diagnostic ------------------------------------------------------------------------------------------
def test_layer_errors_zero_for_exact_and_positive_for_approximations():
    model = tiny_swinir()
    arms = standard_arms(resolve_model("swinir-s-x2"))
    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(3))
    exact = layer_errors(model, arms["exact"], x, with_stats=True)
    assert len(exact["layers"]) == 2 and exact["rel_error_max"] == 0.0
    stats = exact["attention_stats"]
    assert len(stats) == 2 and all(0 < s["entropy_normalised"] <= 1 for s in stats)
    sdpa = layer_errors(model, arms["sdpa"], x)
    assert sdpa["rel_error_max"] < 1e-5
    nystra = layer_errors(model, arms["nystra"], x)
    assert nystra["rel_error_max"] > 1e-4
    assert all(row["window"] == [8, 8] and row["tokens"] == 64 for row in nystra["layers"])
    enlarged = layer_errors(model, arms["nystra-w32"], x)
    assert all(row["window"] == [32, 32] for row in enlarged["layers"])
    # the model handed in is never modified
    assert model.attn_impl == "softmax" and all(w == 8 for w in model.window_sizes())


# -- the command ------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not (TESTSETS / "Set5").is_dir(), reason="needs ../shared/testsets")
def test_fidelity_command_json(tmp_path):
    folder = make_reference(tmp_path / "tiny")
    out = tmp_path / "fid.json"
    first = next(nystra_hub.attention.attention_modules(tiny_swinir()))[0]
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps({"plan": {"attention": {first: {"attn_impl": "nystra", "landmarks": 8}}}}))
    parser = argparse.ArgumentParser()
    fidelity_cli.add_arguments(parser)
    args = parser.parse_args(["--model", str(folder), "--arms", "a", "b", "d", "f", "nystromformer", "performer",
                              "nystra-biasdrop-maskdrop", "--landmarks", "4", "16", "--landmarks-enlarged",
                              "--plan", str(plan_file), "--out", str(out)])
    args.argv = ["--model", str(folder)]
    assert fidelity_cli.run(args) == 0
    report = json.loads(out.read_text())
    assert report["schema"] == "nystra_hub.fidelity/1"
    assert report["protocol"]["name"] == "swinir-sr" and report["protocol"]["border_crop"] == 2
    assert [im["image"] for im in report["images"]] == ["Set5/HR/butterfly.png"]
    assert "LR_bicubic" in report["images"][0]["input"]
    arms = report["arms"]
    assert set(arms) >= {"exact", "sdpa", "nystra", "spandrel", "nystromformer", "performer", "nystra-m4",
                         "nystra-m16"}
    assert arms["exact"]["psnr_vs_exact"] is None and arms["exact"]["identical_images"] == 1
    assert arms["exact"]["delta_psnr_gt"] == 0.0
    # the same function through spandrel: another implementation, so its float32 rounding may differ (~1e-7,
    # an 8-bit value flipping now and then): identical, or nearly (one pixel 1/255 off is about 100 dB here)
    assert arms["spandrel"]["identical_images"] == 1 or arms["spandrel"]["psnr_vs_exact"] > 80
    assert arms["sdpa"]["psnr_vs_exact"] > 60
    for name in ("nystra", "nystromformer", "performer", "nystra-m4"):
        entry = arms[name]
        assert entry["error"] is None and 20 < entry["psnr_vs_exact"] < 120
        assert entry["layer_diagnostic"]["rel_error_mean"] > 0
        assert set(entry["per_image"][0]) >= {"psnr_gt", "ssim_gt", "psnr_vs_exact", "ssim_vs_exact"}
    assert arms["nystra-m16"]["same_as"] == "nystra"  # SwinIR's default is 16 landmarks: not recomputed
    # a plan arm is its own arm (it once was taken for a duplicate of the exact arm)
    plan_arm = next(a for n, a in arms.items() if n.startswith("calibrated-"))
    assert "same_as" not in plan_arm and 20 < plan_arm["psnr_vs_exact"] < 120
    assert arms["exact"]["layer_diagnostic"]["rel_error_max"] == 0.0
    assert report["sweep"]["landmarks_trained_window"] == {"4": "nystra-m4", "16": "nystra-m16"}
    assert report["input_baseline"]["psnr_gt"] > 20
    assert (tmp_path / "fid.png").stat().st_size > 10_000
    card = build_model_card("swinir-s-x2", {"fidelity": [report]})
    assert f"| {arms['nystra']['psnr_vs_exact']:.1f} |" in card.text and "not on these weights" in card.text
    assert card.data.eval_results is None  # a stand-in model's numbers are no model-index of this variant
    page = render_run_page(report, "fid.json")
    assert "| (a) exact | ∞ (identical) | 1.00000 |" in page
    assert f"| (d) nystra | {arms['nystra']['psnr_vs_exact']:.1f} |" in page
    # the cards command: the card, its copied plot, the command that made it; a bench of another model is refused
    cards = tmp_path / "cards"
    assert main(["cards", "swinir-s-x2", "--fidelity", str(out), "--out-dir", str(cards)]) == 0
    text = (cards / "swinir-s-x2.md").read_text()
    assert "(fid.png)" not in text and (cards / "swinir-s-x2--fid.png").stat().st_size > 10_000
    assert f"`nystra-hub cards swinir-s-x2 --out-dir {cards} --fidelity {out}`" in text
    assert main(["cards", "swinir-s-x2", "swinir-x2", "--fidelity", str(out), "--out-dir", str(cards)]) == 2
    assert main(["cards", "swinir-s-x2", "--bench", str(out), "--out-dir", str(cards)]) == 2  # not a bench report


def test_fidelity_scores_half_precision_arms(tmp_path):
    folder = make_reference(tmp_path / "tiny")
    out = tmp_path / "fid.json"
    parser = argparse.ArgumentParser()
    fidelity_cli.add_arguments(parser)
    args = parser.parse_args(["--model", str(folder), "--arms", "a", "exact-bf16", "exact-fp16", "--landmarks",
                              "--landmarks-enlarged", "--diag-images", "0", "--out", str(out)])
    args.argv = ["--model", str(folder)]
    assert fidelity_cli.run(args) == 0
    arms = json.loads(out.read_text())["arms"]
    assert arms["exact-bf16"]["config"]["dtype"] == "bfloat16" and "same_as" not in arms["exact-bf16"]
    assert 35 < arms["exact-bf16"]["psnr_vs_exact"] < arms["exact-fp16"]["psnr_vs_exact"]
