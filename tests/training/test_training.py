"""Reference-model training: degradations, sampling, a few steps reduce the loss, the saved folder, the shipped
reference models."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, TESTSETS

import nystra_hub
from nystra_hub.cli import main
from nystra_hub.measure import data
from nystra_hub.measure.data import bicubic_downscale, gaussian_noise_input, synthetic_haze
from nystra_hub.measure.metrics import score
from nystra_hub.measure.references import load_reference, recipe_task
from nystra_hub.training import reference as training
from nystra_hub.training.reference import RECIPES, PairSampler, save_reference, train

pytestmark = pytest.mark.skipif(not (TESTSETS / "Kodak24").is_dir(), reason="needs ../shared/testsets")

TINY_SR = dataclasses.replace(
    RECIPES["swinir-ref-x2"], name="tiny-sr", train_sets=("Kodak24",), patch=16, batch=4, steps=30, lr=2e-3,
    kwargs=dict(RECIPES["swinir-ref-x2"].kwargs, img_size=16, depths=[2], embed_dim=12, num_heads=[2]),
)


def test_split_never_overlaps():
    for recipe in RECIPES.values():
        train_names = {n for s in recipe.train_sets for n in data.list_images(s)}
        held = {n for s in recipe.heldout_sets for n in data.list_images(s)}
        assert train_names and held and not train_names & held
        assert len(held) == 19  # Set5 + Set14


def test_bicubic_degradation_matches_the_provided_set5_lr():
    hr = data.load_rgb("Set5/HR/bird.png")
    lr = bicubic_downscale(hr, 2)
    provided = data.load_rgb("Set5/LR_bicubic/X2/birdx2.png")
    assert lr.shape == provided.shape == (144, 144, 3)
    assert np.abs(lr.astype(float) - provided).mean() < 0.5  # PIL bicubic ~ MATLAB imresize


def test_gaussian_noise_protocol():
    clean = np.full((4, 5, 3), 128, np.uint8)
    noisy = gaussian_noise_input(clean, 25.0)
    np.random.seed(0)
    expected = 128 / 255 + np.random.normal(0, 25 / 255, clean.shape)
    np.testing.assert_allclose(noisy, expected.astype(np.float32))
    assert noisy.max() > 128 / 255 and noisy.dtype == np.float32  # not clipped, float


def test_synthetic_haze_is_the_scattering_model():
    clean = torch.rand(3, 40, 50, generator=torch.Generator().manual_seed(0))
    hazy, params = synthetic_haze(clean, torch.Generator().manual_seed(1))
    again, params_again = synthetic_haze(clean, torch.Generator().manual_seed(1))
    assert torch.equal(hazy, again) and params == params_again
    assert data.HAZE_BETA[0] <= params["beta"] <= data.HAZE_BETA[1]
    airlight = torch.tensor(params["airlight"]).view(3, 1, 1)
    # I = J t + A (1 - t) with t in [exp(-beta), 1]: recover t per pixel, check its range and channel agreement
    t = (hazy - airlight) / (clean - airlight)
    t = t.median(dim=0).values
    assert t.min() > np.exp(-params["beta"]) - 1e-2 and t.max() <= 1 + 1e-4
    assert (hazy - (clean * t + airlight * (1 - t))).abs().max() < 5e-3


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_sampler_shapes_and_determinism(name):
    recipe = dataclasses.replace(RECIPES[name], train_sets=("Kodak24",), patch=32)
    names = data.list_images("Kodak24")[:3]
    a = PairSampler(recipe, names, seed=0).batch(2)
    b = PairSampler(recipe, names, seed=0).batch(2)
    scale = recipe.task.scale
    assert a[0].shape == (2, 3, 32, 32) and a[1].shape == (2, 3, 32 * scale, 32 * scale)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert 0 <= a[1].min() and a[1].max() <= 1


def test_a_few_steps_reduce_the_loss_deterministically():
    model, record = train(TINY_SR, seed=0, threads=1, log_every=5, log=lambda m: None)
    assert record["steps"] == 30 and len(record["loss_curve"]) == 30
    curve = record["loss_curve"]
    assert np.mean(curve[-5:]) < 0.7 * np.mean(curve[:5])
    again, _ = train(dataclasses.replace(TINY_SR, steps=30), seed=0, threads=1, stop_at=3, log=lambda m: None)
    short, _ = train(TINY_SR, seed=0, threads=1, stop_at=3, log=lambda m: None)
    for (k, v), (_, w) in zip(again.state_dict().items(), short.state_dict().items()):
        assert torch.equal(v, w), k


def test_a_run_saved_in_pieces_resumes_exactly(tmp_path):
    state = tmp_path / "state.pt"
    straight, record = train(TINY_SR, steps=8, seed=0, threads=1, log=lambda m: None)
    train(TINY_SR, steps=8, seed=0, threads=1, stop_at=3, state_path=state, log=lambda m: None)
    resumed, pieces = train(TINY_SR, steps=8, seed=0, threads=1, state_path=state, resume=True, log=lambda m: None)
    for (k, v), (_, w) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(v, w), k
    assert pieces["loss_curve"] == record["loss_curve"] and pieces["steps"] == 8
    assert [(p["from_step"], p["to_step"]) for p in pieces["pieces"]] == [(0, 3), (3, 8)]
    with pytest.raises(ValueError, match=r"settings differ \(lr: saved 0.002 vs asked 0.001\)"):
        train(TINY_SR, steps=8, lr=1e-3, seed=0, threads=1, state_path=state, resume=True, log=lambda m: None)


def test_save_and_load_reference_roundtrip(tmp_path):
    model, _ = train(TINY_SR, seed=0, threads=1, stop_at=1, log=lambda m: None)
    info = {"name": "tiny", "arch": "swinir", "kwargs": model.official_kwargs}
    folder = save_reference(model, tmp_path / "tiny", info)
    loaded, loaded_info = load_reference(folder)
    assert loaded_info == info
    # the folder is also a hub folder: load_pretrained (and so the restore CLI) reads it
    hub = nystra_hub.load_pretrained(folder, attn_impl="sdpa")
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert (hub(x) - loaded(x)).abs().max() < 1e-5
    official = nystra_hub.build_model("swinir", **TINY_SR.kwargs).state_dict()
    assert list(loaded.state_dict()) == list(official)
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])


def test_cli_writes_a_complete_reference_folder(tmp_path, monkeypatch):
    monkeypatch.setitem(training.RECIPES, "tiny-sr", TINY_SR)
    out = tmp_path / "ref"
    assert main(["train-reference", "--recipe", "tiny-sr", "--steps", "2", "--batch", "1", "--threads", "1",
                 "--heldout-limit", "1", "--out", str(out)]) == 0
    info = json.loads((out / "reference.json").read_text())
    for key in ("arch", "kwargs", "task", "scale", "degradation", "command", "training", "train_images",
                "heldout_images", "heldout", "parameters"):
        assert key in info, key
    assert info["training"]["steps"] == 2 and info["training"]["seed"] == 0
    assert "--steps 2" in info["command"] and "--recipe tiny-sr" in info["command"]
    assert info["heldout"]["protocol"]["name"] == "swinir-sr" and len(info["heldout"]["per_image"]) == 1
    load_reference(out)


SHIPPED = sorted(p.parent for p in (REPO / "reference_models").glob("*/reference.json"))


@pytest.mark.parametrize("folder", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_reference_models(folder: Path):
    """Small, complete, strictly loadable, and the recorded held-out score is reproduced from the saved weights."""
    assert (folder / "model.safetensors").stat().st_size < 5.5e6
    model, info = load_reference(folder)
    assert info["training"]["steps"] > 0 and info["command"].startswith("nystra-hub train-reference")
    assert not set(info["train_images"]) & set(info["heldout_images"])
    task = recipe_task(info)
    row = min(info["heldout"]["per_image"], key=lambda r: "butterfly" not in r["image"])  # a small image
    degraded, gt, _ = task.heldout_pair(row["image"])
    with torch.no_grad():
        out = model.official_inference(degraded.unsqueeze(0))[0]
    assert score(out, gt, task.protocol, task.scale)["psnr"] == pytest.approx(row["psnr"], abs=0.02)
    hub = nystra_hub.load_pretrained(folder)  # config.json: the same model through the hub loader
    assert hub.official_kwargs == model.official_kwargs and hub.attn_impl == "softmax"
    ablations = info["ablations"]  # what the model owes its attention, recorded with the model
    for key in ("position_bias_dropped", "window_x2"):
        entry = ablations[key]
        assert entry["change_db"] == pytest.approx(entry["psnr"] - info["heldout"]["psnr"])
        assert entry["matters"] == (abs(entry["change_db"]) >= ablations["thresholds_db"][key])


def test_max_minutes_limits_the_piece_not_the_whole_run(tmp_path):
    """A resumed piece gets its own time budget: a run that already trained for hours still takes its steps."""
    state = tmp_path / "state.pt"
    train(TINY_SR, steps=6, seed=0, threads=1, stop_at=2, state_path=state, log=lambda m: None)
    saved = torch.load(state, weights_only=False)
    saved["run"]["seconds"] = 10 * 3600.0  # earlier pieces took ten hours
    torch.save(saved, state)
    _, record = train(TINY_SR, steps=6, seed=0, threads=1, state_path=state, resume=True, max_minutes=1.0,
                      log=lambda m: None)
    assert record["steps"] == 6 and record["stopped_early"] is None


def test_fine_tuning_starts_from_a_reference_folder_and_scales_the_bias_learning_rate(tmp_path):
    base, record = train(TINY_SR, steps=2, seed=0, threads=1, log=lambda m: None)
    folder = save_reference(base, tmp_path / "base", {"name": "tiny-sr", "arch": "swinir", "command": "cmd",
                                                      "kwargs": base.official_kwargs, "training": record})
    tables = lambda m: [p.detach().clone() for n, p in m.named_parameters() if "bias_table" in n]  # noqa: E731
    rest = lambda m: [p.detach().clone() for n, p in m.named_parameters() if "bias_table" not in n]  # noqa: E731
    moved = {}
    for scale in (1.0, 100.0):
        tuned, rec = train(TINY_SR, steps=3, lr=1e-4, seed=0, threads=1, init_from=folder, bias_lr_scale=scale,
                           log=lambda m: None)
        moved[scale] = (max((a - b).abs().max().item() for a, b in zip(tables(tuned), tables(base))),
                        max((a - b).abs().max().item() for a, b in zip(rest(tuned), rest(base))))
        assert rec["init_from"]["command"] == "cmd" and rec["position_bias_lr_scale"] == scale
        assert rec["init_from"]["weights_sha256"] == hashlib.sha256(
            (folder / "model.safetensors").read_bytes()).hexdigest()
    # Adam moves each parameter by about lr per step: 3e-4 at scale 1, 3e-2 at scale 100; the rest as before
    assert moved[1.0][0] < 1e-3 < 1e-2 < moved[100.0][0]
    assert moved[1.0][1] == pytest.approx(moved[100.0][1], rel=0.5)
    other = dataclasses.replace(TINY_SR, name="other")
    with pytest.raises(ValueError, match="holds 'tiny-sr', not the recipe 'other'"):
        train(other, steps=1, seed=0, threads=1, init_from=folder, log=lambda m: None)
    wider = dataclasses.replace(TINY_SR, kwargs=dict(TINY_SR.kwargs, embed_dim=24))
    with pytest.raises(ValueError, match="constructor arguments differ: embed_dim"):
        train(wider, steps=1, seed=0, threads=1, init_from=folder, log=lambda m: None)
    with pytest.raises(ValueError, match="learning-rate scale must be positive"):
        train(TINY_SR, steps=1, seed=0, threads=1, bias_lr_scale=0.0, log=lambda m: None)


def test_locality_prior_and_attention_learning_rate():
    model = nystra_hub.build_model("swinir", **TINY_SR.kwargs)
    assert training.apply_locality_prior(model) == 2  # one table per block
    table = model.layers[0].residual_group.blocks[0].attn.relative_position_bias_table.detach()
    centre = (2 * 8 - 1) * 7 + 7  # offset (0, 0)
    assert table[centre].abs().max() == 0 and float(table[centre + 1, 0]) == pytest.approx(-1.0)  # (0, 1), head 0
    assert float(table[centre + 1, 1]) == pytest.approx(-0.5)
    assert float(table[0, 0]) == pytest.approx(-(2 * 7**2) ** 0.5)  # offset (-7, -7)
    groups = training._param_groups(model, bias_lr_scale=3.0, attention_lr_scale=5.0)
    assert [g["lr_scale"] for g in groups] == [1.0, 3.0, 5.0]
    names = {id(p): n for n, p in model.named_parameters()}
    assert all("bias_table" in names[id(p)] for p in groups[1]["params"])
    assert {names[id(p)].split(".attn.")[1] for p in groups[2]["params"]} == {
        "qkv.weight", "qkv.bias", "proj.weight", "proj.bias"}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    dehaze = nystra_hub.build_model("dehazeformer", **RECIPES["dehazeformer-ref-t"].kwargs)
    assert training.apply_locality_prior(dehaze) == 0  # its bias is an MLP
    with pytest.raises(ValueError, match="no bias tables for the locality prior"):
        train(dataclasses.replace(RECIPES["dehazeformer-ref-t"], train_sets=("Kodak24",), patch=32), steps=1,
              batch=1, seed=0, threads=1, bias_init="locality", log=lambda m: None)


def test_locality_strength_scales_the_prior_and_is_recorded(tmp_path, monkeypatch):
    model = nystra_hub.build_model("swinir", **TINY_SR.kwargs)
    training.apply_locality_prior(model, strongest=4.0)
    table = model.layers[0].residual_group.blocks[0].attn.relative_position_bias_table.detach()
    centre = (2 * 8 - 1) * 7 + 7
    assert [float(v) for v in table[centre + 1]] == pytest.approx([-4.0, -2.0])  # offset (0, 1), heads 0 and 1
    monkeypatch.setitem(training.RECIPES, "tiny-sr", TINY_SR)
    out = tmp_path / "ref"
    assert main(["train-reference", "--recipe", "tiny-sr", "--steps", "1", "--batch", "1", "--threads", "1",
                 "--heldout-limit", "1", "--out", str(out), "--bias-init", "locality",
                 "--locality-strength", "4"]) == 0
    info = json.loads((out / "reference.json").read_text())
    assert info["training"]["locality_strength"] == 4.0
    with pytest.raises(ValueError, match="only applies with bias_init='locality'"):
        train(TINY_SR, steps=1, seed=0, threads=1, locality_strength=4.0, log=lambda m: None)
    with pytest.raises(ValueError, match="locality strength must be positive"):
        train(TINY_SR, steps=1, seed=0, threads=1, bias_init="locality", locality_strength=-1.0, log=lambda m: None)
    assert "--bias-init locality --locality-strength 4.0" in info["command"]
