"""One loading path: nystra_hub.load resolves files, folders, variants and repos; every loader finishes alike."""

from __future__ import annotations

import copy
import dataclasses
import hashlib

import pytest
import timm
import torch
from conftest import GOLDEN, load_golden
from conftest_hub import converted, swinir_s_x2_checkpoint
from transformers import AutoModel

import nystra_hub
from nystra_hub.attention import attention_modules
from nystra_hub.io.hub import attention_state, read_hub_config, save_hub_folder
from nystra_hub.models import Provenance

CASE = "swinir_sr_x2_pixelshuffle"


def _output(model, x):
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("source", ["file", "case folder", "hub folder"])
def test_load_resolves_every_kind_of_source(source):
    _, io, _ = load_golden(CASE)
    path = {"file": GOLDEN / CASE / "checkpoint.pth", "case folder": GOLDEN / CASE,
            "hub folder": converted(CASE)}[source]
    model = nystra_hub.load(path)
    assert isinstance(model, nystra_hub.RestorationModel) and not model.training
    assert (_output(model, io["input"]) - io["output"]).abs().max() < 1e-4


def test_load_takes_attention_arguments_and_checks_them():
    model = nystra_hub.load(GOLDEN / CASE / "checkpoint.pth", attn_impl="nystra", landmarks=4)
    assert {(m.attn_impl, m.nystra.landmarks) for _, m in attention_modules(model)} == {("nystra", 4)}
    with pytest.raises(TypeError, match="unknown argument"):
        nystra_hub.load(GOLDEN / CASE / "checkpoint.pth", landmark=4)
    with pytest.raises(ValueError, match="attn_impl must be one of"):
        nystra_hub.load(GOLDEN / CASE / "checkpoint.pth", attn_impl="flash")


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint file missing.pth not found"):
        nystra_hub.load("missing.pth")
    with pytest.raises(FileNotFoundError, match="without config.json"):
        nystra_hub.load(tmp_path)
    with pytest.raises(ValueError, match="checkpoint file already"):
        nystra_hub.load(GOLDEN / CASE / "checkpoint.pth", weights="other.pth")
    with pytest.raises(ValueError, match="official_kwargs settle"):
        nystra_hub.load(converted(CASE), official_kwargs={"img_range": 1.0})
    with pytest.raises(KeyError, match="did you mean"):
        nystra_hub.load("swinir-x5", weights=GOLDEN / CASE / "checkpoint.pth")


def _planned_folder(tmp_path):
    model = nystra_hub.load(converted(CASE))
    first = next(n for n, _ in attention_modules(model))
    model.get_submodule(first).set_attn_impl("nystra", nystra_hub.NystraParams(landmarks=4))
    return save_hub_folder(model, tmp_path / "planned", card=False), first


def test_every_loader_applies_a_stored_plan_and_drops_it_on_set_attn_impl_alike(tmp_path):
    folder, first = _planned_folder(tmp_path)
    ours = nystra_hub.load(folder)
    auto = AutoModel.from_pretrained(folder)
    timm_model = timm.create_model("nystra_swinir", pretrained=True, pretrained_cfg_overlay=dict(
        file=str(folder / "model.safetensors")), **ours.official_kwargs,
        nystra_plan=ours.provenance.hub_config["nystra_plan"])
    inners = [ours, auto.restoration_model, timm_model]
    for inner in inners:
        assert inner.get_submodule(first).attn_impl == "nystra" and inner.attn_impl == "mixed"
        assert inner.provenance.plan
    for model in (ours, auto, timm_model):
        model.set_attn_impl("softmax")
    states = [attention_state(inner) for inner in inners]
    assert all(state == states[0] for state in states)
    for inner in inners:
        assert inner.attn_impl == "softmax" and not inner.provenance.plan
        assert inner.get_submodule(first).nystra.landmarks == 4  # per-layer parameters survive the switch
    assert auto.config.attn_impl == "softmax" and auto.config.nystra_plan == states[0][2]


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_loading_path_records_the_provenance(tmp_path):
    checkpoint = swinir_s_x2_checkpoint()
    assert nystra_hub.build_model("swinir", **nystra_hub.get_variant("swinir-s-x2").kwargs).provenance == Provenance()
    released = Provenance(variant="swinir-s-x2", file=str(checkpoint), sha256=_sha256(checkpoint))
    assert nystra_hub.load("swinir-s-x2", weights=checkpoint).provenance == released  # variant + weights
    assert nystra_hub.load(checkpoint).provenance == released  # a file: detection finds the variant
    assert timm.create_model("swinir_s_x2", pretrained=True,
                             pretrained_cfg_overlay=dict(file=str(checkpoint))).provenance == released
    folder = save_hub_folder(nystra_hub.load(checkpoint), tmp_path / "hub", card=False)
    weights = folder / "model.safetensors"
    from_folder = Provenance(variant="swinir-s-x2", file=str(weights), sha256=_sha256(weights))
    assert nystra_hub.load(folder).provenance == dataclasses.replace(from_folder, hub_config=read_hub_config(folder))
    assert AutoModel.from_pretrained(folder).provenance == from_folder  # transformers keeps no hub_config (as before)
    case = nystra_hub.load(GOLDEN / CASE)  # a test case folder: no catalogue variant
    assert case.provenance == Provenance(file=str(GOLDEN / CASE / "checkpoint.pth"),
                                         sha256=_sha256(GOLDEN / CASE / "checkpoint.pth"))


def test_provenance_survives_switches_and_copies_but_not_a_plan_it_no_longer_runs(tmp_path):
    folder, _ = _planned_folder(tmp_path)
    model = nystra_hub.load(folder)
    before = model.provenance
    assert before.plan == before.hub_config["nystra_plan"] and before.sha256 == _sha256(folder / "model.safetensors")
    assert copy.deepcopy(model).provenance == before and model.float().provenance == before
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.provenance.variant = "swinir-x2"
    model.set_attn_impl("sdpa")  # every module now runs sdpa: the plan is gone, where the weights came from is not
    assert model.provenance == dataclasses.replace(before, plan=None)


def test_unwrap_model_sees_through_wrappers():
    model, _, _ = load_golden(CASE)
    from nystra_hub.models.common import unwrap_model

    class Parallel(torch.nn.Module):  # DDP / Accelerate keep the model as .module
        def __init__(self, module):
            super().__init__()
            self.module = module

    assert unwrap_model(Parallel(model)) is model and unwrap_model(model) is model
    with pytest.raises(TypeError, match="expected a nystra_hub model"):
        unwrap_model(torch.nn.Linear(2, 2))
