"""Strict loading of released checkpoint containers, and clear errors for everything else."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import GOLDEN, load_golden
from safetensors.torch import save_file

import nystra_hub
from nystra_hub.io.checkpoints import CheckpointError, CheckpointMismatchError, read_state_dict

CASE = "swinir_sr_x2_pixelshuffle"


def fresh_model(case=CASE, **overrides):
    info = json.loads((GOLDEN / case / "case.json").read_text())
    return nystra_hub.build_model(info["arch"], **{**info["official_constructor_kwargs"], **overrides}).eval()


def golden_state(case=CASE):
    return read_state_dict(GOLDEN / case / "checkpoint.pth")


def run(model, case=CASE):
    from safetensors.torch import load_file

    x = load_file(str(GOLDEN / case / "io.safetensors"))["input"]
    with torch.no_grad():
        return model(x)


def test_params_ema_preferred_over_params():
    raw = torch.load(GOLDEN / "swinir_realsr_x4_nearest" / "checkpoint.pth", weights_only=True)
    assert set(raw) == {"params_ema", "params"}
    model, io, _ = load_golden("swinir_realsr_x4_nearest")  # loads params_ema: reproduces the official output
    with torch.no_grad():
        assert (model(io["input"]) - io["output"]).abs().max() < 1e-4
    other = fresh_model("swinir_realsr_x4_nearest")
    other.load_state_dict(raw["params"], strict=True)
    with torch.no_grad():
        assert (other(io["input"]) - io["output"]).abs().max() > 1e-3  # the golden params differ on purpose


@pytest.mark.parametrize("container", ["raw", "params", "state_dict_module", "safetensors"])
def test_containers_and_formats(tmp_path, container):
    state = golden_state()
    if container == "raw":
        path = tmp_path / "w.pth"
        torch.save(state, path)
    elif container == "params":
        path = tmp_path / "w.pth"
        torch.save({"params": state}, path)
    elif container == "state_dict_module":
        path = tmp_path / "w.pth"
        torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in state.items()}, "optimizer": {}}, path)
    else:
        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    model = nystra_hub.load_original_checkpoint(fresh_model(), path)
    expected, _, _ = load_golden(CASE)
    assert torch.equal(run(model), run(expected))


def test_missing_unexpected_and_misshaped_keys_are_named(tmp_path):
    state = golden_state()
    state.pop("conv_first.bias")
    state["extra.weight"] = torch.zeros(1)
    state["conv_last.weight"] = torch.zeros(3, 64, 5, 5)
    path = tmp_path / "bad.pth"
    torch.save({"params": state}, path)
    with pytest.raises(CheckpointMismatchError) as err:
        nystra_hub.load_original_checkpoint(fresh_model(), path)
    message = str(err.value)
    assert "conv_first.bias" in message and "extra.weight" in message and "conv_last.weight" in message
    assert err.value.missing == ["conv_first.bias"] and err.value.unexpected == ["extra.weight"]
    assert "(3, 64, 5, 5)" in message


def test_checkpoint_for_another_variant_is_refused():
    with pytest.raises(CheckpointMismatchError, match="layers.1"):
        nystra_hub.load_original_checkpoint(fresh_model(depths=[2], num_heads=[2]), GOLDEN / CASE / "checkpoint.pth")


def test_attn_mask_for_another_training_patch_is_accepted_only_if_official():
    # Built for 24x24 training patches (9 windows); the checkpoint's masks are for 16x16 (4 windows).
    model = fresh_model(img_size=24)
    nystra_hub.load_original_checkpoint(model, GOLDEN / CASE / "checkpoint.pth")
    expected, _, _ = load_golden(CASE)
    assert torch.allclose(run(model), run(expected), atol=1e-6)
    assert model.state_dict()["layers.0.residual_group.blocks.1.attn_mask"].shape[0] == 9
    tampered = golden_state()
    tampered["layers.0.residual_group.blocks.1.attn_mask"][0, 0, 1] = -100.0
    with pytest.raises(CheckpointMismatchError, match="blocks.1.attn_mask"):
        nystra_hub.io.checkpoints.load_state_dict_strict(fresh_model(img_size=24), tampered)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_corrupt_files(tmp_path, content):
    path = tmp_path / "corrupt.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="cannot read"):
        nystra_hub.load_original_checkpoint(fresh_model(), path)
    bad_st = tmp_path / "corrupt.safetensors"
    bad_st.write_bytes(content)
    with pytest.raises(CheckpointError, match="cannot read"):
        nystra_hub.load_original_checkpoint(fresh_model(), bad_st)


def test_truncated_checkpoint(tmp_path):
    data = (GOLDEN / CASE / "checkpoint.pth").read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        nystra_hub.load_original_checkpoint(fresh_model(), path)


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="dict"):
        nystra_hub.load_original_checkpoint(fresh_model(), path)
    path = tmp_path / "mixed.pth"
    torch.save({"params": {"a": torch.zeros(1), "b": 3}}, path)
    with pytest.raises(CheckpointError, match="non-tensor"):
        nystra_hub.load_original_checkpoint(fresh_model(), path)


def test_non_finite_weights_refused(tmp_path):
    state = golden_state()
    state["conv_first.weight"][0, 0, 0, 0] = float("nan")
    path = tmp_path / "nan.pth"
    torch.save({"params": state}, path)
    model = fresh_model()
    before = model.conv_first.weight.clone()
    with pytest.raises(CheckpointError, match="conv_first.weight"):
        nystra_hub.load_original_checkpoint(model, path)
    assert torch.equal(model.conv_first.weight, before)  # nothing was loaded


def test_missing_file():
    with pytest.raises(FileNotFoundError):
        nystra_hub.load_original_checkpoint(fresh_model(), GOLDEN / "nope.pth")


def test_integer_or_bool_weights_are_refused_naming_the_keys(tmp_path):
    """float weights stored as int32 (values truncated, or not these weights at all) once loaded without a word."""
    state = golden_state()
    state["conv_first.weight"] = (state["conv_first.weight"] * 1000).to(torch.int32)
    state["conv_first.bias"] = state["conv_first.bias"] > 0
    path = tmp_path / "int.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    model = fresh_model()
    before = model.conv_first.weight.clone()
    with pytest.raises(CheckpointError, match=r"conv_first\.bias \(torch\.bool .*conv_first\.weight \(torch\.int32"):
        nystra_hub.load_original_checkpoint(model, path)
    assert torch.equal(model.conv_first.weight, before)  # nothing was loaded
    with pytest.raises(CheckpointError, match="conv_first.weight"):  # every loader checks: hub folders too
        nystra_hub.io.checkpoints.check_state_dict(model, state)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_checkpoints_load_cast_to_the_model(tmp_path, dtype):
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in golden_state().items()}
    path = tmp_path / "half.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    model = nystra_hub.load_original_checkpoint(fresh_model(), path)
    assert model.conv_first.weight.dtype == torch.float32
    assert torch.equal(model.conv_first.weight, state["conv_first.weight"].float())
    expected, _, _ = load_golden(CASE)
    assert (run(model) - run(expected)).abs().max() < 0.1  # the weights, rounded to half precision
