"""The CLI's automatic route: OpenVINO where a run repays the export, bfloat16 where the CPU has it, and why."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from conftest import REPO

from nystra_hub.cli import main
from nystra_hub.inference import backends
from nystra_hub.inference.backends import choose_route
from nystra_hub.io.images import read_image, write_image

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
X2 = REPO / "reference_models" / "swinir-ref-x2"


@pytest.fixture
def native_bf16(monkeypatch):
    def set_native(value: bool) -> None:
        monkeypatch.setattr(backends, "cpu_has_native_bfloat16", lambda: value)
    return set_native


@pytest.mark.skipif(not HAS_OPENVINO, reason="OpenVINO is not installed")
def test_route_on_a_cpu(native_bf16, monkeypatch):
    native_bf16(True)
    one = choose_route("cpu", images=1)
    assert (one.backend, one.precision) == ("torch", "float32") and "one image" in one.reason
    many = choose_route("cpu", images=6)  # bfloat16 measured outside its budget: float32, and how to ask
    assert (many.backend, many.precision) == ("openvino", "float32") and "--dtype bfloat16" in many.reason
    assert choose_route("cpu", images=6, dtype="bfloat16").precision == "bfloat16"
    monkeypatch.setattr(backends, "AUTO_BFLOAT16", True)  # were it within budget
    assert choose_route("cpu", images=6).precision == "bfloat16"
    assert choose_route("cpu", images=6, dtype="float32").precision == "float32"
    native_bf16(False)
    assert (choose_route("cpu", images=6).backend, choose_route("cpu", images=6).precision) == ("openvino", "float32")


def test_route_without_openvino_or_on_a_gpu(monkeypatch):
    assert choose_route("cuda", images=6).backend == "torch"
    monkeypatch.setattr(backends, "auto_backend", lambda device: "torch")
    route = choose_route("cpu", images=6)
    assert route.backend == "torch" and 'pip install "nystra_hub[openvino]"' in route.reason


def test_the_bfloat16_budget_rests_on_a_measurement():
    """The automatic route's bfloat16 is backed by benchmarks/openvino_bf16_quality.py's numbers for this budget."""
    report = json.loads((REPO / backends.BFLOAT16_MEASUREMENT).read_text())
    assert report["budget"] == backends.BFLOAT16_BUDGET and report["within_budget"] == backends.AUTO_BFLOAT16
    assert {row["model"] for row in report["references"]} == {p.name for p in (REPO / "reference_models").iterdir()}


def test_a_backend_from_the_environment_is_checked(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NYSTRA_HUB_BACKEND", "tensorrt")
    write_image(tmp_path / "a.png", np.zeros((16, 16, 3), np.uint8))
    assert main(["restore", "--no-progress", "--model", str(X2), str(tmp_path / "a.png"), "--out",
                 str(tmp_path / "out")]) != 0
    assert "unknown backend 'tensorrt'" in capsys.readouterr().err


@pytest.mark.skipif(not HAS_OPENVINO, reason="OpenVINO is not installed")
def test_a_folder_goes_through_openvino_by_default(tmp_path, monkeypatch, capsys, native_bf16):
    """Default options on a folder of two images: OpenVINO, said in one line, the exporter's chatter kept off the
    screen; 8-bit outputs within 2 levels of eager float32 (and so with --dtype bfloat16)."""
    monkeypatch.delenv("NYSTRA_HUB_BACKEND", raising=False)
    monkeypatch.setenv("NYSTRA_HUB_CACHE", str(tmp_path / "cache"))
    native_bf16(True)
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):  # one size: one export
        write_image(tmp_path / "in" / name, rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    common = ["restore", "--no-progress", "--model", str(X2), str(tmp_path / "in")]
    assert main([*common, "--out", str(tmp_path / "auto")]) == 0
    err = capsys.readouterr().err
    assert "route: OpenVINO float32" in err and "exporting the graph" in err
    assert "Skipping constant folding" not in err and err.count("exporting the graph") == 1
    assert main([*common, "--out", str(tmp_path / "bf16"), "--dtype", "bfloat16"]) == 0
    assert "route: OpenVINO bfloat16 (asked for)" in capsys.readouterr().err
    assert main([*common, "--out", str(tmp_path / "eager"), "--backend", "torch"]) == 0
    for name in ("a.png", "b.png"):
        eager = read_image(tmp_path / "eager" / name).astype(int)
        for route in ("auto", "bf16"):
            assert np.abs(read_image(tmp_path / route / name).astype(int) - eager).max() <= 2
