"""nystra_hub.io.hub: hub folders written by the converter, loaded without transformers, strictly, from a local
folder or by repo id from an offline Hugging Face cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import load_golden
from conftest_hub import (
    REPO,
    all_cases_params,
    available_cases,
    check_parity,
    converted,
    offline_output,
    offline_results,
    reference,
)
from safetensors.torch import load_file, save_file

import nystra_hub
from nystra_hub.attention import attention_modules
from nystra_hub.io.checkpoints import CheckpointMismatchError
from nystra_hub.io.hub import load_pretrained, read_hub_config, save_hub_folder


def _copy_folder(src, dst):
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


@pytest.mark.parametrize("case", all_cases_params())
def test_load_pretrained_local_folder_parity(case):
    model = load_pretrained(converted(case))
    assert isinstance(model, nystra_hub.RestorationModel) and not model.training
    x, _, _ = reference(case)
    with torch.no_grad():
        check_parity(case, model(x))


@pytest.mark.parametrize("case", all_cases_params())
def test_load_pretrained_by_repo_id_offline(case):
    res = offline_results()
    assert res["offline"] is True and res["cache"] == res["cache_dir"]
    check_parity(case, offline_output(case, "hub"))


def test_offline_missing_repo_and_variant_name():
    runs = offline_results()["runs"]
    assert runs["missing/hub"]["error"] in ("LocalEntryNotFoundError", "OfflineModeIsEnabled", "FileNotFoundError")
    assert "nystra-test/not-in-cache" in runs["missing/hub"]["message"]
    # a bare catalogue name means the repo nystra/<variant>
    assert runs["variant/hub"] == {"attn": "nystra"}


def test_load_pretrained_attention_arguments():
    case = available_cases()[0]
    model = load_pretrained(converted(case), attn_impl="nystra", landmarks=4, iters=3)
    mods = [m for _, m in attention_modules(model)]
    assert mods and all(m.attn_impl == "nystra" and m.nystra.landmarks == 4 and m.nystra.iters == 3 for m in mods)
    with pytest.raises(ValueError, match="attn_impl"):
        load_pretrained(converted(case), attn_impl="flash")
    with pytest.raises(ValueError, match="landmarks"):
        load_pretrained(converted(case), landmarks=0)
    with pytest.raises(TypeError, match="unknown argument"):
        load_pretrained(converted(case), landmark=4)


def test_config_json_layout():
    case = "swinir_sr_x2_pixelshuffle"
    cfg = json.loads((converted(case) / "config.json").read_text())
    model, _, info = load_golden(case)
    assert cfg["model_type"] == "nystra_swinir" and cfg["architectures"] == ["NystraSwinIRModel"]
    assert cfg["arch"] == "swinir" and cfg["variant"] is None
    assert cfg["official_kwargs"] == json.loads(json.dumps(model.official_kwargs))
    assert cfg["attn_impl"] == "softmax" and cfg["nystra"] == model.default_nystra.as_dict()
    # timm reads these three
    assert cfg["architecture"] == "nystra_swinir"
    assert {k: cfg["model_args"][k] for k in info["official_constructor_kwargs"]} == info["official_constructor_kwargs"]
    assert cfg["pretrained_cfg"]["input_size"] == [3, 16, 16] and cfg["pretrained_cfg"]["num_classes"] is None
    assert sorted(p.name for p in converted(case).iterdir()) == ["README.md", "config.json", "model.safetensors"]


def test_plan_is_stored_and_reapplied(tmp_path):
    case = "swinir_sr_x2_pixelshuffle"
    model, _, _ = load_golden(case)
    names = [n for n, _ in attention_modules(model)]
    model.get_submodule(names[0]).set_attn_impl("nystra", nystra_hub.NystraParams(landmarks=4))
    save_hub_folder(model, tmp_path / "mixed", card=False)
    cfg = read_hub_config(tmp_path / "mixed")
    assert cfg["nystra_plan"]["attention"][names[0]] == {"attn_impl": "nystra", **nystra_hub.NystraParams(
        landmarks=4).as_dict()}
    loaded = load_pretrained(tmp_path / "mixed")
    impls = {n: (m.attn_impl, m.nystra.landmarks) for n, m in attention_modules(loaded)}
    assert impls[names[0]] == ("nystra", 4) and all(v[0] == "softmax" for n, v in impls.items() if n != names[0])
    # explicit attention arguments replace the stored plan; use_plan=False ignores it
    assert loaded.provenance.plan == cfg["nystra_plan"]
    assert load_pretrained(tmp_path / "mixed", attn_impl="sdpa").attn_impl == "sdpa"
    assert load_pretrained(tmp_path / "mixed", use_plan=False).attn_impl == "softmax"


def test_strict_load_names_keys(tmp_path):
    case = "swinir_sr_x2_pixelshuffle"
    folder = _copy_folder(converted(case), tmp_path / "broken")
    state = load_file(str(folder / "model.safetensors"))
    state.pop("conv_first.bias")
    state["extra.weight"] = torch.zeros(1)
    state["conv_last.weight"] = torch.zeros(1, 2, 3, 3)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError) as err:
        load_pretrained(folder)
    assert err.value.missing == ["conv_first.bias"] and err.value.unexpected == ["extra.weight"]
    assert [m[0] for m in err.value.mismatched] == ["conv_last.weight"]
    assert "conv_first.bias" in str(err.value) and "extra.weight" in str(err.value)


def test_bad_config_values_raise(tmp_path):
    case = "swinir_sr_x2_pixelshuffle"
    for key, value, match in [("attn_impl", "flash", "attn_impl"), ("nystra", {"tau": "x"}, "tau"),
                              ("official_kwargs", {"embed_dims": 3}, "embed_dims"),
                              ("nystra_plan", {"layers": {}}, "nystra_plan"), ("model_type", "swin2sr", "model_type")]:
        folder = _copy_folder(converted(case), tmp_path / key)
        cfg = json.loads((folder / "config.json").read_text())
        cfg[key] = value
        (folder / "config.json").write_text(json.dumps(cfg))
        with pytest.raises(ValueError, match=match):
            load_pretrained(folder)
    with pytest.raises(FileNotFoundError, match="repo id"):
        load_pretrained(str(tmp_path / "no" / "such" / "folder"))


def test_save_hub_folder_round_trip_is_bit_identical(tmp_path):
    case = "swinir_denoise_gray_3conv"
    model = load_pretrained(converted(case))
    save_hub_folder(model, tmp_path / "again")
    a, b = load_file(str(converted(case) / "model.safetensors")), load_file(str(tmp_path / "again" /
                                                                               "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x, _, _ = reference(case)
    with torch.no_grad():
        assert torch.equal(model(x), load_pretrained(tmp_path / "again")(x))
    with pytest.raises(ValueError, match="variant swinir-x2"):
        save_hub_folder(model, tmp_path / "wrong", variant="swinir-x2")


def test_hub_loading_works_without_transformers():
    """load_pretrained is transformers-free: with transformers unimportable, nystra_hub imports (skipping the
    transformers glue) and loads a hub folder."""
    case = available_cases()[0]
    script = (
        "import sys; sys.modules['transformers'] = None\n"
        "import nystra_hub\n"
        f"m = nystra_hub.load_pretrained({str(converted(case))!r})\n"
        "assert 'nystra_hub.integrations.transformers' not in sys.modules and sys.modules['transformers'] is None\n"
        "print(type(m).__name__)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "not registered" not in proc.stderr  # a missing transformers is skipped silently
    assert proc.stdout.strip() in {cls.__name__ for cls in nystra_hub.ARCHITECTURES.values()}
