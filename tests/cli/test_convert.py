"""``nystra-hub convert`` and ``nystra-hub cards``: released checkpoints -> hub folders with the released tensors
bit for bit, clean CLI errors naming keys, a mocked push to the Hub, and model cards from the catalogue."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import GOLDEN
from conftest_hub import all_cases_params, case_info, cli, converted, swinir_s_x2_checkpoint
from huggingface_hub import HfApi, ModelCard
from safetensors import safe_open
from safetensors.torch import load_file

import nystra_hub
from nystra_hub.io.cards import NO_MEASUREMENTS, build_model_card
from nystra_hub.io.checkpoints import read_state_dict
from nystra_hub.io.variants import VARIANTS


@pytest.mark.parametrize("case", all_cases_params())
def test_convert_golden_keeps_released_tensors(case):
    out = converted(case)  # nystra-hub convert checkpoint.pth --arch ARCH --kwargs case.json --out ...
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    source = read_state_dict(GOLDEN / case / "checkpoint.pth")  # params_ema / module. unwrapped as released
    saved = load_file(str(out / "model.safetensors"))
    assert set(saved) == set(source)
    for key, tensor in source.items():
        assert saved[key].dtype == tensor.dtype and torch.equal(saved[key], tensor), key
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert f.metadata()["format"] == "pt" and f.metadata()["arch"] == case_info(case)["arch"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["arch"] == case_info(case)["arch"] and cfg["model_type"] == f"nystra_{cfg['arch']}"
    built = nystra_hub.build_model(cfg["arch"], **case_info(case)["official_constructor_kwargs"])
    assert cfg["official_kwargs"] == json.loads(json.dumps(built.official_kwargs))


def test_realsr_container_uses_params_ema():
    raw = torch.load(GOLDEN / "swinir_realsr_x4_nearest" / "checkpoint.pth", weights_only=True)
    saved = load_file(str(converted("swinir_realsr_x4_nearest") / "model.safetensors"))
    key = "conv_first.weight"
    assert torch.equal(saved[key], raw["params_ema"][key]) and not torch.equal(saved[key], raw["params"][key])


def test_convert_catalogue_variant(tmp_path):
    path = swinir_s_x2_checkpoint()
    assert cli("convert", path, "--variant", "swinir-s-x2", "--out", tmp_path / "v", "--attn", "nystra",
               "--nystra", "landmarks=4") == 0
    cfg = json.loads((tmp_path / "v" / "config.json").read_text())
    assert cfg["variant"] == "swinir-s-x2" and cfg["architecture"] == "swinir_s_x2"
    assert cfg["attn_impl"] == "nystra" and cfg["nystra"]["landmarks"] == 4 and cfg["nystra"]["iters"] == 2
    variant_kwargs = json.loads(json.dumps(VARIANTS["swinir-s-x2"].kwargs))
    assert all(cfg["official_kwargs"][k] == v for k, v in variant_kwargs.items())
    assert cfg["pretrained_cfg"]["hf_hub_id"] == "nystra/swinir-s-x2" and cfg["model_args"]["attn_impl"] == "nystra"
    saved = load_file(str(tmp_path / "v" / "model.safetensors"))
    released = torch.load(path, weights_only=True)["params"]
    assert saved.keys() == released.keys() and all(torch.equal(saved[k], released[k]) for k in saved)
    card = ModelCard.load(tmp_path / "v" / "README.md")
    assert card.data.library_name == "nystra_hub" and card.data.pipeline_tag == "image-to-image"
    assert card.data.license == "apache-2.0" and "super-resolution" in card.data.tags
    assert "002_lightweightSR_DIV2K_s64w8_SwinIR-S_x2.pth" in card.text and NO_MEASUREMENTS in card.text
    model = nystra_hub.load_pretrained(tmp_path / "v")
    assert model.attn_impl == "nystra" and model.provenance.variant == "swinir-s-x2"


def test_convert_mismatch_is_a_clean_cli_error(tmp_path, capsys):
    ckpt = GOLDEN / "swinir_sr_x2_pixelshuffle" / "checkpoint.pth"
    rc = cli("convert", ckpt, "--arch", "swinir", "--kwargs", GOLDEN / "swinir_lightsr_x3_direct" / "case.json",
             "--out", tmp_path / "bad")
    err = capsys.readouterr().err
    assert rc == 1 and "is not a checkpoint of the given swinir configuration" in err
    assert "unexpected keys" in err and "conv_before_upsample.0.weight" in err
    assert "mis-shaped keys" in err and "conv_first.weight (checkpoint (24, 3, 3, 3) vs model (12, 3, 3, 3))" in err
    assert "Traceback" not in err and not (tmp_path / "bad").exists()
    rc = cli("convert", ckpt, "--variant", "swinir-s-x2", "--out", tmp_path / "bad")
    err = capsys.readouterr().err
    assert rc == 1 and "variant swinir-s-x2" in err and "missing keys" in err


@pytest.mark.parametrize("argv, message", [
    (["--arch", "swinir"], "--arch needs --kwargs"),
    (["--variant", "swinir-x9"], "unknown variant"),
    (["--variant", "swinir-x2", "--kwargs", "{}"], "--kwargs goes with --arch"),
    (["--arch", "swinir", "--kwargs", "{not json"], "--kwargs"),
    (["--arch", "swinir", "--kwargs", '{"embed_dims": 3}'], "embed_dims"),
])
def test_convert_argument_errors(argv, message, tmp_path, capsys):
    ckpt = GOLDEN / "swinir_sr_x2_pixelshuffle" / "checkpoint.pth"
    assert cli("convert", ckpt, *argv, "--out", tmp_path / "o") == 1
    assert message in capsys.readouterr().err
    assert cli("convert", tmp_path / "missing.pth", "--variant", "swinir-x2", "--out", tmp_path / "o") == 1
    assert "not found" in capsys.readouterr().err


def test_push_to_hub_is_mocked_up_to_the_upload(tmp_path, monkeypatch, capsys):
    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, folder_path, repo_id, **kwargs):
        files = sorted(p.name for p in Path(folder_path).iterdir())
        calls.append(("upload_folder", repo_id, files, json.loads((tmp_path / "o" / "config.json").read_text())))
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/0"})()

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    ckpt = GOLDEN / "swinir_sr_x2_pixelshuffle" / "checkpoint.pth"
    rc = cli("convert", ckpt, "--arch", "swinir", "--kwargs", GOLDEN / "swinir_sr_x2_pixelshuffle" / "case.json",
             "--out", tmp_path / "o", "--push-to-hub", "me/tiny-x2", "--private")
    assert rc == 0
    assert calls[0] == ("create_repo", "me/tiny-x2", {"repo_type": "model", "private": True, "exist_ok": True})
    assert calls[1][:3] == ("upload_folder", "me/tiny-x2", ["README.md", "config.json", "model.safetensors"])
    assert calls[1][3]["pretrained_cfg"]["hf_hub_id"] == "me/tiny-x2"
    assert "pushed to me/tiny-x2" in capsys.readouterr().out

    def failing_upload(self, **kwargs):
        raise ConnectionError("no network here")

    monkeypatch.setattr(HfApi, "upload_folder", failing_upload)
    rc = cli("convert", ckpt, "--arch", "swinir", "--kwargs", GOLDEN / "swinir_sr_x2_pixelshuffle" / "case.json",
             "--out", tmp_path / "o", "--push-to-hub", "me/tiny-x2")
    assert rc == 1 and "upload to me/tiny-x2 failed: ConnectionError: no network here" in capsys.readouterr().err


def test_cards_subcommand_and_measurements(tmp_path, capsys):
    assert cli("cards", "swinir-x4", "swinir-denoise-gray-25", "--out-dir", tmp_path) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["swinir-denoise-gray-25.md", "swinir-x4.md"]
    card = ModelCard.load(tmp_path / "swinir-denoise-gray-25.md")
    assert card.data.pipeline_tag == "image-to-image" and card.data.library_name == "nystra_hub"
    assert card.data.original_checkpoint == "004_grayDN_DFWB_s128w8_SwinIR-M_noise25.pth"
    assert card.data.training_window == 8 and card.data.training_patch == 128
    assert "Noise sigma | 25" in card.text and NO_MEASUREMENTS in card.text
    assert card.data.eval_results is None and "model-index" not in str(card)
    assert cli("cards", "--out-dir", tmp_path) == 2 and cli("cards", "nope", "--out-dir", tmp_path) == 2
    capsys.readouterr()
    measured = build_model_card("swinir-x4", {"results": [{"dataset": "Set5", "metric": "PSNR", "value": 32.5,
                                                           "attn_impl": "nystra"}]})
    assert "model-index" in str(measured) and measured.data.eval_results[0].metric_value == 32.5
    assert NO_MEASUREMENTS not in measured.text and "| Set5 | PSNR | 32.5 | nystra |" in measured.text
    with pytest.raises(NotImplementedError, match="speed"):
        build_model_card("swinir-x4", {"speed": []})


def test_convert_speaks_the_shared_spelling(tmp_path, capsys):
    path = swinir_s_x2_checkpoint()
    assert cli("convert", path, "--variant", "swinir-s-x2", "--out", tmp_path / "new", "--attn", "nystra",
               "--nystra", "landmarks=4", "--nystra", "bias=drop") == 0
    cfg = json.loads((tmp_path / "new" / "config.json").read_text())
    assert cfg["attn_impl"] == "nystra" and cfg["nystra"]["landmarks"] == 4 and cfg["nystra"]["bias"] == "drop"
    assert "deprecated" not in capsys.readouterr().err
    assert cli("convert", path, "--variant", "swinir-s-x2", "--out", tmp_path / "bad", "--nystra", "landmark=4") == 1
    assert "unknown parameter" in capsys.readouterr().err
