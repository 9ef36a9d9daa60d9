"""The CLI's automatic route: OpenVINO where a run repays the export, bfloat16 where the CPU has it, and why."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
from collections import Counter

import numpy as np
import pytest
import torch
from conftest import REPO

import nystra_hub
from nystra_hub.cli import main
from nystra_hub.inference import backends
from nystra_hub.inference.backends import (
    EXPORT_REPAID_AFTER,
    EXPORT_SPEEDUP,
    Runner,
    choose_route,
    make_runner,
    plan_cost,
)
from nystra_hub.inference.restore import forward_shapes, one_shape_tilings, restore_tensor
from nystra_hub.io.images import read_image, write_image
from nystra_hub.models import ARCHITECTURES

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
X2 = REPO / "reference_models" / "swinir-ref-x2"


@pytest.fixture
def native_bf16(monkeypatch):
    def set_native(value: bool) -> None:
        monkeypatch.setattr(backends, "cpu_has_native_bfloat16", lambda: value)
    return set_native


ONE_IMAGE = {(1, 3, 208, 304): 1}
TILED = {(1, 3, 96, 96): 48, (1, 3, 104, 136): 1}  # a tiled image, and one small image whole


@pytest.mark.skipif(not HAS_OPENVINO, reason="OpenVINO is not installed")
def test_route_on_a_cpu(native_bf16, monkeypatch):
    """OpenVINO for the shapes whose export is cached or repaid by the run's calls; eager torch when none is."""
    native_bf16(True)
    uformer = nystra_hub.load(REPO / "reference_models" / "uformer-ref-denoise25")
    # an architecture whose bfloat16 was measured outside its budget
    outside = dataclasses.replace(type(uformer).spec, cpu_bfloat16_within_budget=False)
    monkeypatch.setattr(type(uformer), "spec", outside)
    one = choose_route("cpu", calls=ONE_IMAGE, model=uformer)
    assert (one.backend, one.precision) == ("torch", "float32")
    assert f"none cached or called {EXPORT_REPAID_AFTER['float32']} times" in one.reason
    tiled = choose_route("cpu", calls=TILED, model=uformer)  # bfloat16 measured outside its budget: float32
    assert (tiled.backend, tiled.precision) == ("openvino", "float32") and "--dtype bfloat16" in tiled.reason
    assert tiled.export_shapes == {(1, 3, 96, 96)} and "OpenVINO float32 for 48 of 49 forward call(s)" in tiled.reason
    assert choose_route("cpu", calls=TILED).precision == "float32"  # a model of unknown architecture
    cached = choose_route("cpu", calls=ONE_IMAGE, cached=[(1, 3, 208, 304), (1, 3, 64, 64)], model=uformer)
    assert cached.backend == "openvino" and cached.export_shapes == {(1, 3, 208, 304)}
    assert "1 input shape(s) exported before, 0 exported now" in cached.reason
    asked = choose_route("cpu", calls=ONE_IMAGE, dtype="bfloat16")  # OpenVINO's kernels, the one shape eager
    assert (asked.backend, asked.precision, asked.export_shapes) == ("openvino", "bfloat16", frozenset())
    repays = {(1, 3, 96, 96): EXPORT_REPAID_AFTER["bfloat16"]}
    assert choose_route("cpu", calls=repays, dtype="bfloat16").export_shapes == {(1, 3, 96, 96)}


@pytest.mark.skipif(not HAS_OPENVINO, reason="OpenVINO is not installed")
def test_bfloat16_by_default_where_the_architecture_was_measured_within_budget(native_bf16):
    """SwinIR (its float32 tail kept), Uformer (its full-resolution residual stream kept float32) and DehazeFormer
    run OpenVINO in bfloat16 under dtype "auto" on a CPU with native bfloat16; float32 when asked, on a CPU without
    it, or eager when no shape repays its export."""
    native_bf16(True)
    swinir = nystra_hub.load(X2)
    assert swinir.spec.cpu_bfloat16_within_budget
    uformer = nystra_hub.load(REPO / "reference_models" / "uformer-ref-denoise25")
    assert choose_route("cpu", calls=TILED, model=uformer).precision == "bfloat16"
    tiled = choose_route("cpu", calls={(1, 3, 96, 96): 24, (1, 3, 104, 136): 1}, model=swinir)
    assert (tiled.backend, tiled.precision) == ("openvino", "bfloat16") and "--dtype bfloat16" not in tiled.reason
    assert tiled.export_shapes == {(1, 3, 96, 96)}
    one = choose_route("cpu", calls=ONE_IMAGE, model=swinir)
    assert (one.backend, one.precision) == ("torch", "float32")
    assert f"none cached or called {EXPORT_REPAID_AFTER['bfloat16']} times" in one.reason
    assert choose_route("cpu", calls=TILED, dtype="float32", model=swinir).precision == "float32"
    native_bf16(False)
    assert choose_route("cpu", calls=TILED, model=swinir).precision == "float32"


def test_route_without_openvino_or_on_a_gpu(monkeypatch):
    assert choose_route("cuda", calls=TILED).backend == "torch"
    monkeypatch.setattr(backends, "auto_backend", lambda device: "torch")
    route = choose_route("cpu", calls=TILED)
    assert route.backend == "torch" and 'pip install "nystra_hub[openvino]"' in route.reason


@pytest.mark.parametrize("options", [{}, {"tile": 256}, {"memory_budget_mb": 450}], ids=["whole", "tile", "budget"])
@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "reference_models").iterdir()))
def test_forward_shapes_are_the_shapes_restore_runs(name, options):
    """The shapes counted on blank meta images are those the real forward receives, call for call."""
    model = nystra_hub.load(REPO / "reference_models" / name)
    if model.spec.tile_overlap is None and options:
        pytest.skip(f"{model.spec.title} is never tiled")
    seen = Counter()

    class Recorder(Runner):
        def forward(self, x):
            seen[tuple(x.shape)] += 1
            return self.model(x)

    sizes = [(40, 56), (300, 200)]
    for height, width in sizes:
        restore_tensor(model, torch.rand(1, model.in_channels, height, width), backend=Recorder(model), **options)
    assert forward_shapes(model, sizes, **options) == seen and (not options or max(seen.values()) > 1)


@pytest.mark.skipif(not HAS_OPENVINO, reason="OpenVINO is not installed")
def test_a_shape_not_worth_exporting_runs_eagerly(tmp_path):
    """An export runner told to export no new shape runs an uncached one eagerly, in float32 under a bfloat16
    autocast too, and writes nothing."""
    model = nystra_hub.load(X2)
    runner = make_runner(model, "openvino", cache_dir=tmp_path, export_shapes=(), precision="bfloat16")
    x = torch.rand(1, 3, 24, 32)
    assert not runner.is_cached(tuple(x.shape))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = runner(x)
    assert out.dtype == torch.float32 and torch.allclose(out, model(x), atol=1e-6) and not any(tmp_path.iterdir())


def test_the_bfloat16_budget_rests_on_a_measurement():
    """Each architecture's bfloat16 verdict is benchmarks/openvino_bf16_quality.py's, for this budget, on the
    reference models of this tree (but those listed as not measured yet)."""
    report = json.loads((REPO / backends.BFLOAT16_MEASUREMENT).read_text())
    assert report["budget"] == backends.BFLOAT16_BUDGET and report["native_bfloat16"]
    shipped = {p.name for p in (REPO / "reference_models").iterdir()}
    assert {row["model"] for row in report["references"]} == shipped - set(backends.BFLOAT16_NOT_MEASURED)
    assert set(backends.BFLOAT16_NOT_MEASURED) <= shipped  # a model measured since leaves the list
    verdicts = {arch: cls.spec.cpu_bfloat16_within_budget for arch, cls in ARCHITECTURES.items()}
    assert report["within_budget_by_arch"] == verdicts


def test_a_backend_from_the_environment_is_checked(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NYSTRA_HUB_BACKEND", "tensorrt")
    write_image(tmp_path / "a.png", np.zeros((16, 16, 3), np.uint8))
    assert main(["restore", "--no-progress", "--model", str(X2), str(tmp_path / "a.png"), "--out",
                 str(tmp_path / "out")]) != 0
    assert "unknown backend 'tensorrt'" in capsys.readouterr().err


@pytest.mark.skipif(not HAS_OPENVINO, reason="OpenVINO is not installed")
def test_a_folder_takes_openvino_where_it_repays(tmp_path, monkeypatch, capsys, native_bf16):
    """Default options on a folder of two images of one size: eager torch on a cold cache (two calls do not repay
    an export), OpenVINO once the shape's export is cached, said in one line each time, the exporter's chatter
    kept off the screen; bfloat16 by default (SwinIR's was measured within budget), float32 when asked; 8-bit
    outputs within 2 levels of eager float32."""
    monkeypatch.delenv("NYSTRA_HUB_BACKEND", raising=False)
    monkeypatch.setenv("NYSTRA_HUB_CACHE", str(tmp_path / "cache"))
    native_bf16(True)
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):  # one size: one export
        write_image(tmp_path / "in" / name, rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    common = ["restore", "--no-progress", "--model", str(X2), str(tmp_path / "in")]
    assert main([*common, "--out", str(tmp_path / "eager")]) == 0
    err = capsys.readouterr().err
    assert "route: eager torch: 2 forward call(s) over 1 input shape(s)" in err and "exporting" not in err
    assert main([*common, "--out", str(tmp_path / "forced"), "--backend", "openvino"]) == 0
    err = capsys.readouterr().err
    assert "Skipping constant folding" not in err and err.count("exporting the graph") == 1
    assert main([*common, "--out", str(tmp_path / "auto")]) == 0
    err = capsys.readouterr().err
    # SwinIR's bfloat16 was measured within budget: the default on a CPU with native bfloat16
    assert "route: OpenVINO bfloat16 for 2 of 2 forward call(s): 1 input shape(s) exported before" in err
    assert "exporting" not in err
    assert main([*common, "--out", str(tmp_path / "f32"), "--dtype", "float32"]) == 0
    assert "route: OpenVINO float32 for 2 of 2" in capsys.readouterr().err
    for name in ("a.png", "b.png"):
        eager = read_image(tmp_path / "eager" / name).astype(int)
        for route in ("forced", "auto", "f32"):
            assert np.abs(read_image(tmp_path / route / name).astype(int) - eager).max() <= 2


@pytest.mark.skipif(not HAS_OPENVINO or not backends.cpu_has_native_bfloat16(),
                    reason="needs OpenVINO and a CPU with native bfloat16")
def test_restore_on_openvino_takes_the_measured_precision_by_default(tmp_path, native_bf16):
    """restore(..., backend="openvino") with dtype "auto": bfloat16 for SwinIR (measured within budget), float32
    where the CPU lacks it natively or when asked."""
    model = nystra_hub.load(X2)
    image = torch.rand(3, 24, 32, generator=torch.Generator().manual_seed(0))
    run = lambda **options: nystra_hub.restore(model, image, tile=0, backend="openvino", cache_dir=tmp_path, **options)  # noqa: E731
    auto, bf16, f32 = run(), run(dtype="bfloat16"), run(dtype="float32")
    assert torch.equal(auto, bf16) and not torch.equal(auto, f32) and (auto - f32).abs().max() < 0.02
    native_bf16(False)
    assert torch.equal(run(), f32)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_plan_cost_exports_exactly_the_shapes_choose_route_exports(precision):
    """A shape costs its eager pixels below the repay count and less from it on; a cached shape costs its pixels
    divided by the export's speedup."""
    shape, repays, pixels = (1, 3, 64, 80), EXPORT_REPAID_AFTER[precision], 64 * 80
    below, at = plan_cost({shape: repays - 1}, (), precision), plan_cost({shape: repays}, (), precision)
    assert below == (repays - 1) * pixels and at == pytest.approx(repays * pixels)  # the break-even point
    assert plan_cost({shape: 2 * repays}, (), precision) < 2 * repays * pixels
    assert plan_cost({shape: 3}, [shape], precision) == pytest.approx(3 * pixels / EXPORT_SPEEDUP[precision])
    assert plan_cost({shape: 3, (1, 3, 8, 8): 1}, [shape], precision) == pytest.approx(
        3 * pixels / EXPORT_SPEEDUP[precision] + 64)


def test_one_shape_tilings_give_every_image_the_same_tile_shape():
    """Each side runs a folder of mixed sizes in tiles of one shape, from the smallest trustworthy tile up to the
    smallest (padded) image side, in the window's multiple; none for images below the smallest tile or for an
    architecture that is never tiled."""
    model = nystra_hub.load(X2)
    sizes = [(100, 130), (120, 110), (97, 200)]
    tilings = one_shape_tilings(model, sizes)
    smallest = model.spec.min_tile_multiples * model.official_multiple
    assert tilings and min(tilings) == smallest and max(tilings) <= 104  # 97 is padded to 104
    for side, calls in tilings.items():
        assert side % model.official_multiple == 0 and list(calls) == [(1, 3, side, side)]
        assert calls == forward_shapes(model, sizes, tile=side)
    assert one_shape_tilings(model, [(40, 48), (200, 200)]) == {}
    dehaze = nystra_hub.load(REPO / "reference_models" / "dehazeformer-ref-t")
    assert one_shape_tilings(dehaze, sizes) == {}


@pytest.mark.skipif(not HAS_OPENVINO, reason="OpenVINO is not installed")
def test_a_folder_of_mixed_sizes_shares_one_export_when_that_is_cheaper(tmp_path, monkeypatch, capsys, native_bf16):
    """Images of three sizes, each called once: no shape of their own repays an export, one tile side for all of
    them does (the repay count lowered so that a few small images show it): one export, the route says so, and
    the 8-bit outputs stay within 2 levels of eager float32."""
    monkeypatch.delenv("NYSTRA_HUB_BACKEND", raising=False)
    monkeypatch.setenv("NYSTRA_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(EXPORT_REPAID_AFTER, "bfloat16", 2)
    native_bf16(True)
    rng = np.random.default_rng(0)
    for name, (height, width) in {"a.png": (100, 180), "b.png": (104, 170), "c.png": (98, 190)}.items():
        write_image(tmp_path / "in" / name, rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    common = ["restore", "--no-progress", "--model", str(X2), str(tmp_path / "in")]
    assert main([*common, "--out", str(tmp_path / "eager"), "--backend", "torch", "--dtype", "float32"]) == 0
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "auto")]) == 0
    err = capsys.readouterr().err
    side = int(re.search(r"every image in (\d+)-px tiles, so that one export serves them all", err)[1])
    calls = sum(forward_shapes(nystra_hub.load(X2), [(100, 180), (104, 170), (98, 190)], tile=side).values())
    assert f"route: OpenVINO bfloat16 for {calls} of {calls} forward call(s): 0 input shape(s) exported before, " \
        "1 exported now" in err and side in (96, 104)
    assert err.count("exporting the graph") == 1
    for name in ("a.png", "b.png", "c.png"):
        difference = read_image(tmp_path / "auto" / name).astype(int) - read_image(tmp_path / "eager" / name)
        assert np.abs(difference).max() <= 2
