"""calibrate(): per-layer choices under a measured quality budget, stored in and reproduced from hub folders."""

from __future__ import annotations

import pytest
import torch
from conftest import load_golden

import nystra_hub
from nystra_hub import calibration
from nystra_hub.attention import NystraParams, attention_modules
from nystra_hub.calibration import Candidate, LayerReport


def _fake_timings(model, x, layers, candidates, runs, log):
    """Deterministic timings: exact 10 ms per layer; Nyström with fewer landmarks is faster."""
    reports = {}
    for name in layers:
        times = {"sdpa": 10.0, "softmax": 12.0}
        for cand in candidates[name]:
            times[cand.label] = 4.0 + cand.params.landmarks / 8
        reports[name] = LayerReport(name, "sdpa", 10.0, times)
    return reports


@pytest.fixture
def golden_sr():
    model, io, _ = load_golden("swinir_sr_x2_pixelshuffle")
    x = io["input"].clamp(0, 1)
    with torch.no_grad():
        target = model.official_inference(x)  # a target the exact model meets with some error below
    target = (target + 0.05 * torch.randn_like(target)).clamp(0, 1)
    return model, x, target


def test_generous_budget_turns_layers_nystra_and_holds(golden_sr, monkeypatch):
    monkeypatch.setattr(calibration, "_time_layers", _fake_timings)
    model, x, target = golden_sr
    result = nystra_hub.calibrate(model, [x], budget_db=3.0, targets=[target], timing_runs=0)
    report = result["report"]
    assert report["nystra_layers"] >= 1
    assert report["measured_drop_db"] <= 3.0
    impls = {name: m.attn_impl for name, m in attention_modules(model)}
    assert sum(v == "nystra" for v in impls.values()) == report["nystra_layers"]
    assert result["plan"] == model.nystra_plan
    # The plan's settings are exactly what the model now runs.
    for name, settings in result["plan"]["attention"].items():
        assert settings["attn_impl"] == impls[name]


def test_tiny_budget_keeps_everything_exact(golden_sr, monkeypatch):
    monkeypatch.setattr(calibration, "_time_layers", _fake_timings)
    model, x, target = golden_sr
    result = nystra_hub.calibrate(model, [x], budget_db=1e-6, targets=[target], timing_runs=0)
    assert result["report"]["nystra_layers"] == 0
    assert {m.attn_impl for _, m in attention_modules(model)} == {"sdpa"}


def test_slower_candidates_are_never_chosen(golden_sr, monkeypatch):
    def slow(model, x, layers, candidates, runs, log):
        reports = _fake_timings(model, x, layers, candidates, runs, log)
        for r in reports.values():
            r.times_ms.update({k: 50.0 for k in r.times_ms if k.startswith("nystra")})
        return reports

    monkeypatch.setattr(calibration, "_time_layers", slow)
    model, x, target = golden_sr
    result = nystra_hub.calibrate(model, [x], budget_db=100.0, targets=[target], timing_runs=0)
    assert result["report"]["nystra_layers"] == 0


def test_without_targets_the_budget_uses_the_reference_psnr(golden_sr, monkeypatch):
    monkeypatch.setattr(calibration, "_time_layers", _fake_timings)
    model, x, _ = golden_sr
    strict = nystra_hub.calibrate(model, [x], budget_db=0.1, reference_psnr_db=80.0, timing_runs=0)
    assert strict["report"]["nystra_layers"] == 0  # an 80 dB model leaves no room for these perturbed weights
    loose = nystra_hub.calibrate(model, [x], budget_db=0.1, reference_psnr_db=5.0, timing_runs=0)
    assert loose["report"]["nystra_layers"] >= 1
    assert "assumed" in loose["report"]["quality_reference"]


def test_real_timing_path_runs(golden_sr):
    model, x, target = golden_sr
    cands = {name: [Candidate("nystra", NystraParams(landmarks=16, iters=2))] for name, _ in attention_modules(model)}
    result = nystra_hub.calibrate(model, [x], budget_db=0.5, targets=[target], candidates=cands, timing_runs=1)
    per_layer = result["report"]["per_layer"]
    assert len(per_layer) == 4 and all(r["exact_ms"] > 0 and "nystra m16 it2" in r["times_ms"] for r in per_layer)
    assert result["report"]["speed"]["exact_ms"] > 0
    assert result["report"]["measured_drop_db"] <= 0.5


def test_plan_survives_a_hub_round_trip(golden_sr, monkeypatch, tmp_path):
    from nystra_hub.hub import load_pretrained, save_hub_folder

    monkeypatch.setattr(calibration, "_time_layers", _fake_timings)
    model, x, target = golden_sr
    result = nystra_hub.calibrate(model, [x], budget_db=3.0, targets=[target], timing_runs=0)
    save_hub_folder(model, tmp_path / "calibrated")
    loaded = load_pretrained(tmp_path / "calibrated")
    assert nystra_hub.extract_plan(loaded) == result["plan"]
    with torch.no_grad():
        assert torch.equal(loaded.official_inference(x), model.official_inference(x))


def test_bad_arguments():
    model, io, _ = load_golden("swinir_sr_x2_pixelshuffle")
    with pytest.raises(ValueError, match="budget"):
        nystra_hub.calibrate(model, [io["input"]], budget_db=0)
    with pytest.raises(ValueError, match="targets"):
        nystra_hub.calibrate(model, [io["input"]], targets=[])
