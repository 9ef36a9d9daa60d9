"""The bench command: arms, recipes, the JSON it writes (tiny model, tiny sizes), memory worker, plots."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import bench_args as parse
from helpers import make_reference

import nystra_hub
from nystra_hub.cli import bench as bench_cli
from nystra_hub.io.cards import build_model_card, fmt_time, render_run_page
from nystra_hub.measure import bench, timing
from nystra_hub.measure.arms import (
    Arm,
    make_arm_model,
    paper_recipe,
    plan_arms,
    resolve_model,
    select_arms,
    standard_arms,
)
from nystra_hub.measure.bench import ratios
from nystra_hub.measure.timing import achieved_rates, gemm_roofline

DEFAULT_LETTERS = ["a", "b", "c", "c'", "d", "e", "e'", "f"]


def test_recipes_follow_the_paper():
    assert paper_recipe("swinir", "classical-sr")["window"] == 32
    sidd = paper_recipe("uformer", "denoise-real")
    assert (sidd["window"], sidd["landmarks"], sidd["iters"], sidd["tau"]) == (64, 32, 6, 0.0)
    gopro = paper_recipe("uformer", "deblur")
    assert (gopro["window"], gopro["landmarks"], gopro["iters"], gopro["tau"]) == (32, 16, 3, 0.0)
    dehaze = paper_recipe("dehazeformer", "dehaze")
    assert (dehaze["window"], dehaze["landmarks"], dehaze["iters"], dehaze["tau"]) == (32, 16, 2, 5.0)
    assert "no recipe" in dehaze["source"]


@pytest.mark.parametrize("variant,window,spandrel", [("swinir-x2", 32, True), ("uformer-b-sidd", 64, True),
                                                     ("uformer-b-gopro", 32, True),
                                                     ("dehazeformer-b-indoor", 32, False)])
def test_standard_arms(variant, window, spandrel):
    source = resolve_model(variant)
    arms = standard_arms(source)
    chosen = select_arms(arms, DEFAULT_LETTERS, paper_recipe(source.arch, source.task))
    letters = [a.letter for a in chosen]
    assert letters == (DEFAULT_LETTERS if spandrel else DEFAULT_LETTERS[:-1])
    by_letter = {a.letter: a for a in chosen}
    assert by_letter["a"].attn_impl == "softmax" and by_letter["a"].window is None
    assert by_letter["c"].name == f"exact-w{window}-paper" and by_letter["c"].attn_impl == "exact-paper"
    assert by_letter["e"].nystra["bias"] == "drop" and by_letter["e"].nystra["mask"] == "drop"
    assert by_letter["e'"].nystra["bias"] == "pooled" and by_letter["e'"].nystra["mask"] == "exact"
    assert by_letter["c"].drop_modulator == (source.arch == "uformer")
    assert select_arms(arms, ["nystra-wW-paper"], paper_recipe(source.arch, source.task))[0].window == window
    maskdrop = select_arms(arms, ["nystra-wW-maskdrop"], paper_recipe(source.arch, source.task))[0]
    assert maskdrop.window == window and maskdrop.nystra["bias"] == "pooled" and maskdrop.nystra["mask"] == "drop"
    assert maskdrop.nystra["landmarks"] == by_letter["e"].nystra["landmarks"] and not maskdrop.drop_modulator
    with pytest.raises(ValueError, match="unknown arm"):
        select_arms(arms, ["nonsense"], paper_recipe(source.arch, source.task))


def test_make_arm_model_switches_a_copy():
    model = nystra_hub.build_model("uformer", img_size=32, embed_dim=8, depths=[2, 2, 2, 2, 1, 1, 2, 2, 2],
                                   num_heads=[1, 1, 2, 4, 8, 8, 4, 2, 1], win_size=8, modulator=True)
    source = resolve_model("uformer-b-sidd")
    arms = standard_arms(source)
    paper = make_arm_model(model, arms["nystra-w64-paper"])
    assert paper.attn_impl == "nystra" and model.attn_impl == "softmax"
    assert all(blk.modulator is None for _, blk in paper.blocks())
    assert any(blk.modulator is not None for _, blk in model.blocks())
    ours = make_arm_model(model, arms["nystra-w64"])
    assert any(blk.modulator is not None for _, blk in ours.blocks())
    params = next(nystra_hub.attention.attention_modules(ours))[1].nystra
    assert (params.landmarks, params.iters, params.tau, params.bias, params.mask) == (32, 6, 0.0, "pooled", "exact")


def test_plan_arm_applies_a_calibrated_plan(tmp_path):
    model = nystra_hub.build_model("swinir", img_size=16, window_size=8, depths=[2], num_heads=[2], embed_dim=8,
                                   upscale=2, upsampler="pixelshuffledirect")
    modules = [name for name, _ in nystra_hub.attention.attention_modules(model)]
    plan = {"attention": {modules[0]: {"attn_impl": "nystra", "landmarks": 8, "iters": 2, "tau": 5.0,
                                       "bias": "pooled", "mask": "exact"}}}
    path = tmp_path / "plan-a.json"
    path.write_text(json.dumps({"plan": plan, "report": {"budget_db": 0.1}}))
    (arm,) = plan_arms([str(path)])
    assert arm.name == "calibrated-plan-a" and "1/1 attention layers nystra, calibrated to a 0.1 dB" in arm.description
    switched = dict(nystra_hub.attention.attention_modules(make_arm_model(model, arm)))
    assert switched[modules[0]].attn_impl == "nystra" and switched[modules[0]].nystra.landmarks == 8
    assert switched[modules[1]].attn_impl == "softmax" and model.attn_impl == "softmax"
    path.write_text(json.dumps({"attention": {"no.such.layer": {"attn_impl": "sdpa"}}}))
    with pytest.raises(ValueError, match="not an attention module"):
        make_arm_model(model, plan_arms([str(path)])[0])


def test_ratios_and_summary():
    results = {"exact": {"times_s": [2.0, 4.0], "median_s": 3.0}, "fast": {"times_s": [1.0, 1.0], "median_s": 1.0}}
    ratios(results, {"a": "exact"})
    assert results["fast"]["speedup"] == {"a:exact": 3.0}
    assert results["fast"]["paired_speedup"] == {"a:exact": 3.0}  # median of 2 and 4
    summary = timing.summarise([3.0, 1.0, 2.0])
    assert summary["median_s"] == 2.0 and summary["min_s"] == 1.0 and summary["max_s"] == 3.0


def test_bench_json_all_default_arms(tmp_path):
    folder = make_reference(tmp_path / "tiny")
    out = tmp_path / "bench.json"
    args = parse("--model", str(folder), "--sizes", "40", "24", "--runs", "2", "--warmup", "1", "--threads", "1",
                 "--memory", "off", "--out", str(out))
    assert bench_cli.run(args) == 0
    report = json.loads(out.read_text())
    assert report["schema"] == "nystra_hub.bench/1"
    assert report["references"] == {"a": "exact", "f": "spandrel", "c": "exact-w32-paper"}
    assert [a["letter"] for a in report["arms"].values()] == DEFAULT_LETTERS
    env = report["environment"]
    assert env["torch"] == torch.__version__ and env["torch_threads"] == 1 and env["cpu_model"]
    assert report["settings"]["runs"] == 2 and report["model"]["kind"] == "reference"
    assert [r["size"] for r in report["results"]] == [40, 24]
    # at 24 px the window-32 arms cannot run (SwinIR reflect-pads to the window): recorded, not fatal
    small = report["results"][1]["arms"]
    assert "needs at least 32x32" in small["exact-w32-paper"]["error"] and not small["exact-w32-paper"]["times_s"]
    assert small["nystra"]["error"] is None and set(small["nystra"]["speedup"]) == {"a:exact", "f:spandrel"}
    for result in report["results"][:1]:
        arms = result["arms"]
        assert set(arms) == set(report["arms"])
        for name, entry in arms.items():
            assert entry["error"] is None, (name, entry["error"])
            assert len(entry["times_s"]) == 2 and len(entry["warmup_times_s"]) == 1
            assert entry["median_s"] > 0 and entry["flops"] > 0
            assert set(entry["speedup"]) == {"a:exact", "f:spandrel", "c:exact-w32-paper"}
            assert set(entry["paired_speedup"]) == set(entry["speedup"])
        assert arms["exact"]["speedup"]["a:exact"] == 1.0
        assert arms["exact"]["max_abs_diff_vs_a"] == 0.0
        assert arms["sdpa"]["max_abs_diff_vs_a"] < 1e-4
        assert arms["spandrel"]["max_abs_diff_vs_a"] < 1e-4  # same weights, same function
        assert arms["nystra"]["max_abs_diff_vs_a"] > 0
        # the enlarged window costs more attention FLOPs, PnP-Nystra at that window fewer
        assert arms["exact-w32-paper"]["flops"] > arms["exact"]["flops"]
        assert arms["exact-w32-paper"]["flops"] > 2 * arms["nystra-w32-paper"]["flops"]
    assert out.with_suffix(".png").stat().st_size > 10_000
    # the model card renders the same JSON: one table per size, named baselines, no invented GPU numbers
    card = build_model_card("swinir-s-x2", {"bench": [report]}).text
    exact = report["results"][0]["arms"]["exact"]["median_s"]
    assert "| our exact, eager | default |" in card and f"| {fmt_time(exact)} |" in card
    assert "GPU: not measured on GPU" in card
    # the run's own page: one table per size, named baselines, a failed arm is one line
    page = render_run_page(report, "bench.json")
    assert f"| (a) exact | {exact * 1e3:.0f} | 1.00× |" in page
    assert "speedup vs (f) spandrel" in page and "speedup vs (c) exact-w32-paper" in page
    assert "Split of (d) nystra vs (f) spandrel" in page and "not measured on this device" in page
    # redraw from JSON only
    plot = tmp_path / "again.png"
    assert bench_cli.run(parse("--plot-only", str(out), "--plot", str(plot))) == 0
    assert plot.stat().st_size > 10_000


def test_the_measurement_runs_without_the_command_line(tmp_path):
    """run_bench takes its settings as a dataclass: a script measures without argparse (and without a file)."""
    folder = make_reference(tmp_path / "tiny")
    settings = bench.BenchSettings(model=str(folder), sizes=[24], arms=["a", "d"], runs=1, warmup=0, threads=1,
                                   memory=False, flops=False)
    report = bench.run_bench(settings, log=lambda message: None)
    assert report["command"] == "nystra-hub bench" and report["settings"]["sizes"] == [24]
    assert list(report["results"][0]["arms"]) == ["exact", "nystra"]
    assert report["results"][0]["arms"]["nystra"]["speedup"]["a:exact"] > 0
    assert report["settings"]["memory"] == "off" and "flops" not in report["results"][0]["arms"]["exact"]
    assert not list(tmp_path.glob("*.json"))


def test_bench_cpu_memory_worker(tmp_path):
    folder = make_reference(tmp_path / "tiny")
    out = tmp_path / "bench.json"
    args = parse("--model", str(folder), "--sizes", "24", "--runs", "1", "--warmup", "0", "--threads", "1",
                 "--arms", "a", "--out", str(out))
    assert bench_cli.run(args) == 0
    entry = json.loads(out.read_text())["results"][0]["arms"]["exact"]
    assert "memory_error" not in entry, entry.get("memory_error")
    assert entry["peak_rss_bytes"] >= entry["rss_before_bytes"] > 50 * 2**20  # torch itself is resident
    assert entry["peak_increase_bytes"] >= 0 and "VmHWM" in entry["memory_method"]
    assert entry["flops"] > 0 and any("mm" in op or "conv" in op for op in entry["flops_by_op"])


def test_arm_config_roundtrip_for_worker():
    arm = standard_arms(resolve_model("swinir-x4"))["nystra-w32-paper"]
    assert Arm(**json.loads(json.dumps(arm.config()))) == arm


def test_bench_half_precision_arms(tmp_path):
    """--dtype runs every arm in that precision: ours under autocast (weights float32), spandrel cast whole; an
    arm may name its own precision (exact-bf16)."""
    folder = make_reference(tmp_path / "tiny")
    out = tmp_path / "bench.json"
    args = parse("--model", str(folder), "--sizes", "24", "--runs", "1", "--warmup", "0", "--threads", "1",
                 "--memory", "off", "--flops", "off", "--arms", "a", "f", "exact-fp16", "--dtype", "bfloat16",
                 "--out", str(out))
    assert bench_cli.run(args) == 0
    report = json.loads(out.read_text())
    assert report["settings"]["dtype"] == "bfloat16" and "autocast" in report["settings"]["precision"]
    arms = report["results"][0]["arms"]
    assert report["arms"]["exact-fp16"]["dtype"] == "float16"
    for name in ("exact", "exact-fp16"):
        assert arms[name]["error"] is None and arms[name]["times_s"], name
    assert arms["exact-fp16"]["max_abs_diff_vs_a"] < 0.1  # half precision, close to the bf16 exact arm
    # spandrel's SwinIR cast to bfloat16 fails on its float32 buffers (also seen on the H200): recorded, not fatal
    assert "dtype" in arms["spandrel"]["error"] and not arms["spandrel"]["times_s"]


def test_roofline_and_achieved_rates_with_flops_borrowed_by_runtime_arms():
    roofline = gemm_roofline(torch.device("cpu"), torch.float32, bench.ROOFLINE_SHAPES, runs=1)
    assert set(roofline["gflops_per_s"]) == {"4096x180@180x540", "1024x1024@1024x1024"}
    assert roofline["best_gflops_per_s"] == max(roofline["gflops_per_s"].values()) > 0
    arms = [Arm("exact", "a", ""), Arm("nystra", "d", "", attn_impl="nystra"),
            Arm("openvino", "", "", runtime="openvino"), Arm("openvino-nystra", "", "", attn_impl="nystra",
                                                              runtime="openvino")]
    entries = {"exact": {"flops": 4e9, "median_s": 2.0}, "nystra": {"flops": 3e9, "median_s": 2.0},
               "openvino": {"median_s": 1.0}, "openvino-nystra": {"median_s": 1.5}}
    bench.borrow_flops(entries, arms)
    assert entries["openvino"]["flops_from"] == "exact" and entries["openvino-nystra"]["flops_from"] == "nystra"
    achieved_rates(entries, {"best_gflops_per_s": 8.0})
    assert entries["openvino"]["gflops_per_s"] == pytest.approx(4.0)
    assert entries["exact"]["roofline_fraction"] == pytest.approx(0.25)
    assert entries["openvino-nystra"]["gflops_per_s"] == pytest.approx(2.0)


def test_openvino_official_is_a_reference_when_it_runs():
    arms = [Arm("exact", "a", ""), Arm("spandrel", "f", "", backend="spandrel"),
            Arm("openvino-official", "", "", backend="spandrel", runtime="openvino")]
    assert bench.reference_arms(arms) == {"a": "exact", "f": "spandrel", "o": "openvino-official"}
    assert "o" not in bench.reference_arms(arms[:2])
