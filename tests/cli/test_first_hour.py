"""A newcomer's first hour (issue 28): a catalogue name without weights says how to get going at once, the shipped
reference models are listed and suggested, typos get the closest spelling before torch is imported, and a
converted folder's card says which file it came from."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO
from huggingface_hub import ModelCard
from PIL import Image

import nystra_hub
from nystra_hub.cli import SUBCOMMANDS, build_parser, command_parser, main, parse
from nystra_hub.cli.commands import command_options
from nystra_hub.io import hub, variants

REFERENCE = REPO / "reference_models"
needs_reference_models = pytest.mark.skipif(not (REFERENCE / "swinir-ref-x2").is_dir(),
                                            reason="a checkout without reference_models/")


def nystra_hub_cmd(*argv: str, env: dict | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """``nystra-hub ARGV`` as a user types it (the console script's entry point), in a fresh process."""
    code = "import sys; from nystra_hub_cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def offline_env(tmp_path: Path) -> dict:
    """An empty Hugging Face cache and an endpoint nothing answers: a request would show as retries."""
    return {"HF_HUB_CACHE": str(tmp_path / "hf-cache"), "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0"}


def tiny_png(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), (90, 120, 150)).save(folder / "a.png")
    return folder


# -- 1. a catalogue name without weights ----------------------------------------------------------------------------
@needs_reference_models
def test_restore_with_a_catalogue_name_alone_says_how_to_get_going(tmp_path):
    proc = nystra_hub_cmd("restore", "--model", "swinir-x2", str(tiny_png(tmp_path / "in")), "--out",
                          str(tmp_path / "out"), env=offline_env(tmp_path))
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr
    assert "Retrying" not in err and "Traceback" not in err  # no Hub request was made
    for hint in ("001_classicalSR_DF2K_s64w8_SwinIR-M_x2.pth", "github.com/JingyunLiang/SwinIR", "--weights FILE",
                 "nystra-hub convert", "--model reference_models/swinir-ref-x2", "not on the Hugging Face Hub yet"):
        assert hint in err, (hint, err)


def test_load_of_a_catalogue_name_asks_the_local_cache_only(tmp_path, monkeypatch):
    calls = []
    real = hub.hf_hub_download

    def recorded(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(hub, "hf_hub_download", recorded)
    started = time.perf_counter()
    with pytest.raises(FileNotFoundError, match=r"(?s)without weights.*Uformer_B\.pth.*weights=FILE") as err:
        hub.load_pretrained("uformer-b", cache_dir=tmp_path)
    assert time.perf_counter() - started < 2.0
    assert calls and all(c["local_files_only"] for c in calls)  # unpublished: the Hub is not asked
    assert "nystra-hub convert FILE --out uformer-b-sidd-hub" in str(err.value)
    with pytest.raises(FileNotFoundError, match="no checkpoint of this configuration is released"):
        hub.load_pretrained("uformer-t", cache_dir=tmp_path)


def test_python_api_gives_the_same_answer(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"(?s)swinir-x2 is a catalogue variant.*001_classicalSR_DF2K"):
        nystra_hub.load("swinir-x2")


def test_offline_after_release_is_local_only_too(tmp_path, monkeypatch):
    monkeypatch.setattr(hub, "HUB_ORG_PUBLISHED", True)
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", True)
    calls = []

    def not_in_cache(**kwargs):
        calls.append(kwargs)
        raise hub.LocalEntryNotFoundError("not in the cache")

    monkeypatch.setattr(hub, "hf_hub_download", not_in_cache)
    with pytest.raises(FileNotFoundError, match=r"(?s)HF_HUB_OFFLINE is set.*--weights FILE"):
        hub.load_pretrained("swinir-s-x2", cache_dir=tmp_path)
    assert calls and all(c["local_files_only"] for c in calls)


# -- 2. the shipped models are visible ------------------------------------------------------------------------------
@needs_reference_models
def test_list_has_a_header_and_the_reference_models():
    proc = nystra_hub_cmd("list")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:3] == ["VARIANT", "ARCH", "TASK"]
    assert any(line.startswith("swinir-x2 ") for line in lines)
    shipped = lines[lines.index(next(line for line in lines if line.startswith("REFERENCE MODEL"))) + 1:]
    for folder in sorted(p.parent.name for p in REFERENCE.glob("*/reference.json")):
        row = next(line for line in shipped if line.startswith(folder + " "))
        assert row.split()[-1] == f"reference_models/{folder}"


@needs_reference_models
def test_list_json_and_arch_filter(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert main(["list", "--json", "--arch", "uformer"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert {v["arch"] for v in listing["variants"]} == {"uformer"}
    assert listing["reference_models"] == [dict(name="uformer-ref-denoise25", arch="uformer", task="denoise-color",
                                                scale=1, model="reference_models/uformer-ref-denoise25")]


def test_list_without_reference_models_has_no_such_section(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(variants, "REFERENCE_MODELS_DIR", tmp_path / "absent")
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("VARIANT") and "REFERENCE MODEL" not in out
    assert main(["list", "--json"]) == 0 and json.loads(capsys.readouterr().out)["reference_models"] == []


@needs_reference_models
def test_an_unknown_model_suggests_the_local_folders(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    images = str(tiny_png(tmp_path / "in"))
    assert main(["restore", "--model", "swinir-ref-x2", images, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "unknown variant" in err and "did you mean reference_models/swinir-ref-x2, swinir-s-x2" in err
    with pytest.raises(FileNotFoundError, match="no folder reference_models/swinir-ref-x3; did you mean "
                                                "reference_models/swinir-ref-x2"):
        nystra_hub.load("reference_models/swinir-ref-x3")


# -- 4. typos ---------------------------------------------------------------------------------------------------------
TYPO_PROBE = """
import sys, time
from nystra_hub_cli import main
for argv in (["restore", "--atn", "nystra", "in", "--out", "o"], ["restor", "in"], ["list", "--jsn"],
             ["--verison"], ["export", "--modl", "m", "--size", "64"], ["--help"]):
    started = time.perf_counter()
    try:
        code = main(argv)
    except SystemExit as exit:
        code = exit.code
    print("EXIT", code, round(time.perf_counter() - started, 3), file=sys.stderr)
print("HEAVY", sorted(m for m in ("torch", "transformers", "timm", "nystra_hub") if m in sys.modules), file=sys.stderr)
"""


def test_typos_are_answered_before_torch_with_the_closest_spelling():
    proc = subprocess.run([sys.executable, "-c", TYPO_PROBE], cwd=REPO, capture_output=True, text=True, timeout=60)
    err = proc.stderr
    assert "HEAVY []" in err, err  # every answer came from the light launcher
    assert "nystra-hub restore: error: unrecognized option --atn (did you mean --attn?)" in err
    assert "nystra-hub: error: unknown command 'restor'; did you mean 'restore'?" in err
    assert "--jsn (did you mean --json?)" in err and "--verison (did you mean --version?)" in err
    assert "nystra-hub export: error: unrecognized option --modl (did you mean --model?)" in err
    exits = [line.split() for line in err.splitlines() if line.startswith("EXIT")]
    assert [code for _, code, _ in exits] == ["2"] * 5 + ["0"]
    assert float(exits[-1][2]) < 0.1, exits  # --help itself, in-process


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_the_launcher_knows_every_option_of_every_command(command):
    """The launcher reads the options from the source; an option it missed would be refused as a typo."""
    sub = command_parser(build_parser(command), command)
    real = {s for action in sub._actions for s in action.option_strings}
    assert real <= command_options(command), sorted(real - command_options(command))


def test_after_the_import_an_unknown_option_gets_the_command_usage(capsys):
    with pytest.raises(SystemExit):
        parse(build_parser("restore"), ["restore", "--attnn", "nystra", "x", "--out", "o", "--", "y"])
    err = capsys.readouterr().err
    assert err.startswith("usage: nystra-hub restore") and "--attnn (did you mean --attn?)" in err
    args = parse(build_parser("list"), ["list", "--js"])  # an abbreviation argparse takes stays accepted
    assert isinstance(args, argparse.Namespace) and args.json


# -- 5a. the card of a converted file -------------------------------------------------------------------------------
def _released_format_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    torch.save({"params": nystra_hub.build_variant("swinir-s-x2").state_dict()}, path)
    return path


def test_a_converted_card_names_its_file_and_never_guesses_released(tmp_path, capsys, monkeypatch):
    checkpoint = _released_format_checkpoint(tmp_path / "my_finetune.pth")
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert main(["convert", str(checkpoint), "--variant", "swinir-s-x2", "--out", str(tmp_path / "a")]) == 0
    card = ModelCard.load(tmp_path / "a" / "README.md")
    assert "converted with `nystra-hub convert` from `my_finetune.pth`" in card.text and digest in card.text
    assert "released weights is not known" in card.text and "The released" not in card.text
    assert card.data.converted_from == "my_finetune.pth" and card.data.converted_from_sha256 == digest
    # the day the catalogue records the release's sha256, a matching file is called released
    v = variants.VARIANTS["swinir-s-x2"]
    monkeypatch.setitem(variants.VARIANTS, "swinir-s-x2", dataclasses.replace(v, sha256=digest))
    assert main(["convert", str(checkpoint), "--variant", "swinir-s-x2", "--out", str(tmp_path / "b")]) == 0
    assert "The released SwinIR weights, converted" in ModelCard.load(tmp_path / "b" / "README.md").text
    monkeypatch.setitem(variants.VARIANTS, "swinir-s-x2", dataclasses.replace(v, sha256="0" * 64))
    assert main(["convert", str(checkpoint), "--variant", "swinir-s-x2", "--out", str(tmp_path / "c")]) == 0
    assert "not the released weights" in ModelCard.load(tmp_path / "c" / "README.md").text
    capsys.readouterr()


@needs_reference_models
def test_a_custom_configuration_card_names_its_file(tmp_path, capsys):
    folder = REFERENCE / "swinir-ref-x2"
    assert main(["convert", str(folder / "model.safetensors"), "--arch", "swinir", "--kwargs",
                 str(folder / "config.json"), "--out", str(tmp_path / "ref")]) == 0
    text = ModelCard.load(tmp_path / "ref" / "README.md").text
    assert "converted with `nystra-hub convert` from `model.safetensors`" in text
    assert "released" not in text.replace("catalogued releases", "")
    capsys.readouterr()


@needs_reference_models
def test_choosing_nystra_says_once_that_it_is_slower_at_the_trained_window(tmp_path, capsys):
    """Item 5: --attn nystra was measured slower than exact on every model at the trained window; saying so once
    keeps a user from picking it for speed."""
    Image.new("RGB", (24, 16)).save(tmp_path / "a.png")
    Image.new("RGB", (24, 16)).save(tmp_path / "b.png")
    common = ["restore", "--no-progress", "--backend", "torch", "--model", str(REFERENCE / "swinir-ref-x2"),
              str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert main([*common, "--attn", "nystra", "--out", str(tmp_path / "nystra")]) == 0
    assert capsys.readouterr().err.count("measured slower than exact attention on every model") == 1
    assert main([*common, "--out", str(tmp_path / "exact")]) == 0
    assert "slower than exact" not in capsys.readouterr().err
