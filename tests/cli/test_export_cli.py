"""``nystra-hub export`` and ``nystra-hub restore --backend``: the command-line routes to the exported graphs."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from helpers import skip_without
from test_restore_cli import X2, _image

from nystra_hub.cli import main
from nystra_hub.inference import backends
from nystra_hub.inference.backends import make_runner
from nystra_hub.inference.restore import restore
from nystra_hub.io.images import read_image, write_image
from nystra_hub.io.loading import load


def test_export_command_writes_a_folder_the_runner_loads(tmp_path, capsys):
    skip_without("onnxruntime")
    out = tmp_path / "graph"
    assert main(["export", "--model", X2, "--attn", "nystra", "--nystra", "landmarks=4", "--size", "16",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "wrote" in printed.out
    stages = [line.split("] ", 1)[1] for line in printed.err.splitlines() if line.startswith("nystra-hub export: [")]
    assert stages[:2] == ["tracing the forward (torch.export)", "converting the program to ONNX"]  # with the time
    assert stages[-1] == f"done: {out}" and "slower than exact" in printed.err  # and the nystra speed note
    metadata = json.loads((out / "export.json").read_text())
    assert metadata["input"]["shape"][-2:] == [16, 16] and metadata["model"]["attn_impl"] == "nystra"
    model = load(X2, attn_impl="nystra", landmarks=4).eval()
    runner = make_runner(model, "onnxruntime", exported=out)
    x = torch.rand(1, model.in_channels, 16, 16)
    with torch.inference_mode():
        torch.testing.assert_close(runner(x), model(x), atol=1e-4, rtol=0)
    # the folder describes another model than an exact one: refused, naming what differs
    with pytest.raises(ValueError, match="attn_impl"):
        make_runner(load(X2).eval(), "onnxruntime", exported=out)


def test_export_command_refuses_bad_input_and_writes_nothing(tmp_path, capsys):
    skip_without("onnxruntime")
    out = tmp_path / "graph"
    assert main(["export", "--model", X2, "--size", "4", "--out", str(out)]) == 2  # smaller than the window
    assert "error" in capsys.readouterr().err and not out.exists()
    with pytest.raises(SystemExit):
        main(["export", "--model", X2, "--size", "16x", "--out", str(out)])
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_restore_backend_matches_the_torch_backend(tmp_path, backend, monkeypatch):
    skip_without(backend)
    monkeypatch.setenv("NYSTRA_HUB_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "in"
    for name in ("a.png", "b.png"):  # two images of one shape: one export for the run
        write_image(source / name, _image((16, 16, 3)))
    outputs = {}
    for name in ("torch", backend):
        out = tmp_path / name
        assert main(["restore", "--no-progress", "--model", X2, str(source), "--out", str(out),
                     "--backend", name, "--device", "cpu", "--dtype", "float32"]) == 0  # float32: a parity check
        outputs[name] = [read_image(out / f).astype(np.int16) for f in ("a.png", "b.png")]
    for ours, theirs in zip(outputs["torch"], outputs[backend]):
        assert np.abs(ours - theirs).max() <= 1  # 1e-4 in [0, 1] can flip an 8-bit rounding
    assert len([p for p in (tmp_path / "cache").rglob("export.json")]) == 1


def test_auto_backend_prefers_the_installed_runtimes(monkeypatch):
    assert backends.auto_backend("cuda") == "torch"
    installed = {"onnx", "onnxscript", "onnxruntime"}  # no openvino
    monkeypatch.setattr(backends.importlib.util, "find_spec", lambda name: object() if name in installed else None)
    assert backends.auto_backend("cpu") == "onnxruntime"
    installed.clear()
    assert backends.auto_backend("cpu") == "torch"
    assert isinstance(make_runner(load(X2).eval(), "auto"), backends.Runner)


def test_restore_openvino_bfloat16_runs_its_own_kernels_without_the_cpu_warning(tmp_path, monkeypatch):
    skip_without("openvino")
    monkeypatch.setenv("NYSTRA_HUB_CACHE", str(tmp_path / "cache"))
    model = load(X2).eval()
    image = _image((16, 16, 3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # the exporter's own deprecation notices vary with the torch version
        fast = restore(model, image, backend="openvino", dtype="bfloat16")
    # no "bfloat16 on a CPU is slower" warning: OpenVINO's kernels run it
    assert not [w for w in caught if "on a CPU is usually" in str(w.message)], [str(w.message) for w in caught]
    exact = restore(model, image)
    assert fast.shape == exact.shape and np.abs(fast.astype(int) - exact.astype(int)).max() <= 8
    with pytest.raises(ValueError, match="float32 only"):
        restore(model, image, backend="compile", dtype="bfloat16")
