"""calibrate(): per-layer choices under a measured quality budget, stored in and reproduced from hub folders."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from conftest import TESTSETS, load_golden
from helpers import make_reference

import nystra_hub
from nystra_hub.attention import NystraParams, attention_modules
from nystra_hub.cli import calibrate as calibrate_cli
from nystra_hub.io.hub import load_pretrained, save_hub_folder
from nystra_hub.io.plan import apply_plan
from nystra_hub.measure import calibration
from nystra_hub.measure.calibration import Candidate, LayerReport
from nystra_hub.measure.references import load_reference


def _fake_timings(model, x, blocks, candidates, runs, log):
    """Deterministic timings: exact 10 ms per layer; Nyström with fewer landmarks is faster; other windows slower."""
    reports = {}
    for name in candidates:
        times = {"sdpa": 10.0, "softmax": 12.0}
        for cand in candidates[name]:
            times[cand.label] = 4.0 + cand.params.landmarks / 8 + (20.0 if cand.window else 0.0)
        reports[name] = LayerReport(name, "sdpa", 10.0, times)
    return reports


def _windows_pay(model, x, blocks, candidates, runs, log):
    """Only the candidates at another window are faster than exact."""
    reports = _fake_timings(model, x, blocks, candidates, runs, log)
    for name, report in reports.items():
        for cand in candidates[name]:
            report.times_ms[cand.label] = 2.0 if cand.window else 50.0
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
    assert result["plan"] == model.provenance.plan
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
    def slow(model, x, blocks, candidates, runs, log):
        reports = _fake_timings(model, x, blocks, candidates, runs, log)
        for r in reports.values():
            r.times_ms.update({k: 50.0 for k in r.times_ms if k.startswith("nystra")})
        return reports

    monkeypatch.setattr(calibration, "_time_layers", slow)
    model, x, target = golden_sr
    result = nystra_hub.calibrate(model, [x], budget_db=100.0, targets=[target], timing_runs=0)
    assert result["report"]["nystra_layers"] == 0


def test_a_selection_slower_than_exact_end_to_end_is_rejected(golden_sr, monkeypatch):
    monkeypatch.setattr(calibration, "_time_layers", _fake_timings)
    monkeypatch.setattr(calibration, "_end_to_end", lambda *a: {"exact_ms": 9.0, "calibrated_ms": 10.0,
                                                                "speedup": 0.9})
    model, x, target = golden_sr
    result = nystra_hub.calibrate(model, [x], budget_db=3.0, targets=[target], timing_runs=1)
    report = result["report"]
    assert report["nystra_layers"] == 0 and report["speed"]["rejected"]  # per-layer gains did not add up
    assert {m.attn_impl for _, m in attention_modules(model)} <= {"sdpa", "softmax"}
    assert all(s["attn_impl"] != "nystra" for s in result["plan"]["attention"].values())
    monkeypatch.setattr(calibration, "_end_to_end", lambda *a: {"exact_ms": 11.0, "calibrated_ms": 10.0,
                                                                "speedup": 1.1})
    kept = nystra_hub.calibrate(model, [x], budget_db=3.0, targets=[target], timing_runs=1)["report"]
    assert kept["nystra_layers"] >= 1 and "rejected" not in kept["speed"]


def test_a_window_change_that_slows_the_whole_model_is_retried_without_it(golden_sr, monkeypatch):
    def both_pay(model, x, blocks, candidates, runs, log):
        reports = _windows_pay(model, x, blocks, candidates, runs, log)
        for name, report in reports.items():
            report.times_ms.update({c.label: 3.0 for c in candidates[name] if not c.window})
        return reports

    def slow_if_windows_changed(model, x, runs, use_calibrated, use_exact):
        use_calibrated()  # e.g. SwinIR padding every layer's input to a multiple of 16
        return {"exact_ms": 10.0, "calibrated_ms": 12.5 if max(model.window_sizes()) > 8 else 9.0,
                "speedup": 0.8 if max(model.window_sizes()) > 8 else 10 / 9}

    monkeypatch.setattr(calibration, "_time_layers", both_pay)
    monkeypatch.setattr(calibration, "_end_to_end", slow_if_windows_changed)
    model, x, target = golden_sr
    result = nystra_hub.calibrate(model, [x], budget_db=6.0, targets=[target], windows=[16], timing_runs=1)
    report = result["report"]
    assert "windows" not in result["plan"] and report["nystra_layers"] >= 1
    assert report["speed"]["speedup"] > 1 and len(report["speed"]["rejected"]) == 1
    assert any(label.startswith("w16") for label in report["speed"]["rejected"][0]["layers"].values())
    assert model.window_sizes() == [8, 8, 8, 8]


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
    m16 = NystraParams(landmarks=16, iters=2)
    cands = {name: [Candidate("nystra", m16), Candidate("nystra", m16, window=16)]
             for name, _ in attention_modules(model)}
    result = nystra_hub.calibrate(model, [x], budget_db=0.5, targets=[target], candidates=cands, timing_runs=1)
    per_layer = result["report"]["per_layer"]
    assert len(per_layer) == 4
    assert all(r["exact_ms"] > 0 and {"nystra m16 it2", "w16 nystra m16 it2"} <= set(r["times_ms"]) for r in per_layer)
    assert result["report"]["speed"]["exact_ms"] > 0
    assert result["report"]["measured_drop_db"] <= 0.5


def test_plan_survives_a_hub_round_trip(golden_sr, monkeypatch, tmp_path):
    monkeypatch.setattr(calibration, "_time_layers", _fake_timings)
    model, x, target = golden_sr
    result = nystra_hub.calibrate(model, [x], budget_db=3.0, targets=[target], timing_runs=0)
    save_hub_folder(model, tmp_path / "calibrated")
    loaded = load_pretrained(tmp_path / "calibrated")
    assert nystra_hub.extract_plan(loaded) == result["plan"]
    with torch.no_grad():
        assert torch.equal(loaded.official_inference(x), model.official_inference(x))


WINDOW_GOLDENS = ["swinir_sr_x2_pixelshuffle", "uformer_tiny_modulator", "dehazeformer_tiny_dwconv"]


def _golden_with_target(name):
    model, io, _ = load_golden(name)
    x = io["input"].clamp(0, 1)
    with torch.no_grad():
        target = model.official_inference(x)
    return model, x, (target + 0.05 * torch.randn_like(target)).clamp(0, 1)


@pytest.mark.parametrize("golden", WINDOW_GOLDENS)
def test_window_choices_enter_the_plan_and_a_hub_folder_reproduces_them(golden, monkeypatch, tmp_path):
    monkeypatch.setattr(calibration, "_time_layers", _windows_pay)
    model, x, target = _golden_with_target(golden)
    result = nystra_hub.calibrate(model, [x], budget_db=6.0, targets=[target], windows=[16], timing_runs=0)
    plan = result["plan"]
    assert plan["windows"] and set(plan["windows"].values()) == {16} and plan["window_resize"] == "bicubic"
    # Exactly the layers whose block changed window run Nyström, each at 16x16 (or clamped to its stage).
    modules = dict(attention_modules(model))
    for block in plan["windows"]:
        attn = modules[next(n for n in modules if n.rsplit(".", 1)[0] == block)]
        assert attn.attn_impl == "nystra" and attn.window_size[0] > 8
    assert result["report"]["measured_drop_db"] <= 6.0
    with torch.no_grad():
        calibrated = model.official_inference(x)
    # A model whose windows changed no longer holds its trained weights: saving it directly is refused...
    with pytest.raises(ValueError, match="windows"):
        save_hub_folder(model, tmp_path / "refused")
    # ...the trained model is saved with the plan, and loading re-applies it to the same function.
    trained, _, _ = load_golden(golden)
    save_hub_folder(trained, tmp_path / "calibrated", plan=plan)
    loaded = load_pretrained(tmp_path / "calibrated")
    with torch.no_grad():
        assert torch.equal(loaded.official_inference(x), calibrated)


@pytest.mark.parametrize("golden", WINDOW_GOLDENS)
def test_trying_windows_leaves_an_unchosen_layer_exactly_as_trained(golden, monkeypatch):
    monkeypatch.setattr(calibration, "_time_layers", _windows_pay)
    model, x, target = _golden_with_target(golden)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        exact = model.official_inference(x)
    result = nystra_hub.calibrate(model, [x], budget_db=1e-9, targets=[target], windows=[16], timing_runs=0)
    assert result["report"]["nystra_layers"] == 0 and "windows" not in result["plan"]
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():
        torch.testing.assert_close(model.official_inference(x), exact, rtol=0, atol=1e-5)  # softmax vs sdpa


def test_bad_arguments():
    model, io, _ = load_golden("swinir_sr_x2_pixelshuffle")
    with pytest.raises(ValueError, match="budget"):
        nystra_hub.calibrate(model, [io["input"]], budget_db=0)
    with pytest.raises(ValueError, match="targets"):
        nystra_hub.calibrate(model, [io["input"]], targets=[])
    with pytest.raises(ValueError, match="windows"):
        nystra_hub.calibrate(model, [io["input"]], windows=[1])


@pytest.mark.skipif(not (TESTSETS / "Set5").is_dir(), reason="needs ../shared/testsets")
def test_command_with_windows_saves_a_hub_folder_that_reproduces_the_plan(tmp_path, monkeypatch):
    """The CLI path: a plan that changes windows is saved with the trained weights, and loading re-applies it."""
    monkeypatch.setattr(calibration, "_time_layers", _windows_pay)
    folder = make_reference(tmp_path / "tiny")
    parser = argparse.ArgumentParser()
    calibrate_cli.add_arguments(parser)
    args = parser.parse_args(["--model", str(folder), "--images", "Set5/HR/butterfly.png", "--crop", "64",
                              "--windows", "16", "--budget-db", "50", "--runs", "0", "--out", str(tmp_path / "p.json"),
                              "--save-hub", str(tmp_path / "hub")])
    assert calibrate_cli.run(args) == 0
    plan = json.loads((tmp_path / "p.json").read_text())["plan"]
    assert set(plan["windows"].values()) == {16}
    loaded = load_pretrained(tmp_path / "hub")
    expected, _ = load_reference(folder)
    apply_plan(expected, plan)
    x = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded.official_inference(x), expected.official_inference(x))
    assert loaded.window_sizes() == expected.window_sizes() and 16 in loaded.window_sizes()
