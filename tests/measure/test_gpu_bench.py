"""The GPU measurement (nystra_hub.measure.gpu) on the CPU: its harness in process with tiny inputs, and
benchmarks/gpu.sh --dry-run as the GPU machine runs it (every code path, tiny models, 1 run)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO, TESTSETS

from nystra_hub.measure import bench, gpu, timing
from nystra_hub.measure.timing import ArmRecord, compare_outputs, rotated, run_rounds, timed_call

TINY_SWINIR = gpu.CASES_DRY[0]


def test_a_case_measures_its_arms_and_skips_what_needs_cuda():
    arms = ["exact-fp32", "sdpa-bf16", "nystra-bf16", "nystra-exact-count-bf16", "spandrel-fp32", "graph-exact-fp32",
            "triton-bf16"]
    settings = gpu.GpuBenchSettings(dry_run=True, arms=arms)
    case = gpu.run_case(TINY_SWINIR, settings, deadline=time.perf_counter() + 600, log=lambda message: None)
    assert case["skipped_arms"] == {"graph-exact-fp32": "the cudagraphs runner needs CUDA",
                                    "triton-bf16": "attn_impl 'triton' is timed on CUDA only"}
    assert list(case["arms"]) == ["spandrel-fp32", "exact-fp32", "sdpa-bf16", "nystra-bf16",
                                  "nystra-exact-count-bf16"]
    assert case["arms"]["nystra-bf16"]["redo"] == "auto" and case["arms"]["exact-fp32"]["redo"] == "auto"
    (result,) = case["results"]
    assert result["size"] == 32 and result["input_shape"] == [1, 3, 32, 32]
    rows = result["arms"]
    assert rows["exact-fp32"]["psnr_vs_exact_fp32"] == "identical"
    assert rows["spandrel-fp32"]["psnr_vs_exact_fp32"] > 100  # the same weights through the official code
    for name, row in rows.items():
        assert row["error"] is None and len(row["times_s"]) == 1 and row["median_s"] > 0, name
        assert row["nonfinite_values"] == 0 and row["peak_bytes"] is None, name  # peak memory: CUDA only
    assert 40 < rows["sdpa-bf16"]["psnr_vs_exact_fp32"] < 100  # half precision: close, not identical
    # the redo bounded (what "auto" runs on CUDA, and in a dry run) or counted: the same output
    assert rows["nystra-bf16"]["psnr_vs_exact_fp32"] == pytest.approx(rows["nystra-exact-count-bf16"][
        "psnr_vs_exact_fp32"], abs=0.01)
    assert result["flops"] > 0 and "roofline_fraction" not in rows["exact-fp32"]  # no roofline given: rates only


def test_rates_against_the_roofline_of_each_arms_dtype():
    """The exact forward's FLOPs, credited to every arm, over its median; the fraction of the GEMM ceiling of the
    arm's own compute dtype."""
    settings = gpu.GpuBenchSettings(dry_run=True, arms=["exact-fp32", "sdpa-bf16"])
    roofline = {"float32": {"best_gflops_per_s": 2.0}, "bfloat16": {"best_gflops_per_s": 4.0}}
    case = gpu.run_case(TINY_SWINIR, settings, deadline=time.perf_counter() + 600, log=lambda message: None,
                        roofline=roofline)
    (result,) = case["results"]
    model = gpu.build_model("swinir", **TINY_SWINIR["kwargs"]).eval()
    assert result["flops"] == timing.count_flops(model, torch.rand(1, 3, 32, 32))["flops"] > 0
    for name, dtype in (("exact-fp32", "float32"), ("sdpa-bf16", "bfloat16")):
        row = result["arms"][name]
        assert row["gflops_per_s"] == pytest.approx(result["flops"] / row["median_s"] / 1e9)
        assert row["roofline_fraction"] == pytest.approx(row["gflops_per_s"] / roofline[dtype]["best_gflops_per_s"])


def test_compiled_arms_are_built_only_where_a_case_compiles():
    settings = gpu.GpuBenchSettings(dry_run=True, arms=["exact-fp32", "compile-bf16", "flex-compile-bf16"])
    case = gpu.run_case({**TINY_SWINIR, "compile_sizes": []}, settings, deadline=time.perf_counter() - 1,
                        log=lambda message: None)
    assert list(case["arms"]) == ["exact-fp32"]
    full = {c["name"]: c for c in gpu.cases_full() if c["sizes"] == [512]}
    assert {name: c["compile_sizes"] for name, c in full.items()} == {
        "swinir-x2": [512], "uformer-b-sidd": [], "dehazeformer-b-indoor": []}


def test_the_arms_a_gpu_session_must_measure():
    arms = {arm.name: arm for arm in gpu.arms_for("swinir", {"window": 32, "landmarks": 16, "iters": 2, "tau": 5})}
    flex, nystra = arms["flex-compile-bf16"], arms["nystra-compile-bf16"]
    assert (flex.attn_impl, flex.dtype, flex.compile_blocks) == ("flex", "bfloat16", True)
    assert (nystra.attn_impl, nystra.dtype, nystra.compile_blocks, nystra.redo) == ("nystra", "bfloat16", True, "auto")
    assert arms["nystra-exact-count-bf16"].redo == "exact-count" and not arms["nystra-exact-count-bf16"].compile_blocks
    # the report keeps gpu_bench/1's keys for them: runner, compile, precision
    graph, spandrel = gpu.arm_config(arms["graph-exact-bf16"]), gpu.arm_config(arms["spandrel-fp16"])
    assert (graph["runner"], graph["compile"], graph["precision"], graph["dtype"]) == (
        "cudagraphs", False, "autocast", "bfloat16")
    assert (spandrel["backend"], spandrel["precision"]) == ("spandrel", "cast")
    assert gpu.arm_config(arms["exact-fp32"])["dtype"] == "float32" and gpu.arm_config(flex)["compile"]


def test_a_long_error_keeps_its_start_and_its_end():
    message = "g++ command line " + "-D X " * 400 + "fatal error: Python.h: No such file"
    text = timing.error_text(RuntimeError(message))
    assert text.startswith("RuntimeError: g++ command line") and text.endswith("Python.h: No such file")
    assert len(text) < 1600 and timing.error_text(ValueError("short")) == "ValueError: short"


@pytest.mark.slow
def test_compiled_flex_kernels_match_sdpa():
    """The GPU run's flex kernel survey, on the CPU (inductor's C++ flex template, ~6 s per head dim here)."""
    (row,) = gpu.flex_kernels(torch.device("cpu"), head_dims=(12,), windows=4, heads=2)
    assert (row["head_dim"], row["flex_head_dim"]) == (12, 16) and "error" not in row
    assert row["flex_ms"] > 0 and row["sdpa_ms"] > 0 and row["flex_first_call_s"] > 0
    assert row["max_abs_diff_vs_sdpa"] < 0.05  # bfloat16 outputs of two exact kernels


def test_the_triton_kernel_survey_says_why_it_cannot_run_on_the_cpu():
    (row,) = gpu.triton_kernels(torch.device("cpu"), head_dims=(12,), windows=4, heads=2)
    assert row["head_dim"] == 12 and "CUDA" in row["error"] and "TRITON_INTERPRET" in row["error"]


def test_a_spent_budget_skips_the_remaining_sizes():
    settings = gpu.GpuBenchSettings(dry_run=True, arms=["exact-fp32"])
    case = gpu.run_case(TINY_SWINIR, settings, deadline=time.perf_counter() - 1, log=lambda message: None)
    assert case["results"] == [{"size": 32, "skipped": "time budget of the run spent"}]


def test_the_settings_a_dry_run_implies():
    dry, full = gpu.GpuBenchSettings(dry_run=True, runs=5), gpu.GpuBenchSettings()
    assert (dry.device.type, dry.rounds, dry.inflation) == ("cpu", 1, 40000.0)
    assert (full.device.type, full.rounds, full.inflation) == ("cuda", 5, 3000.0)
    assert gpu.GpuBenchSettings(stress_bias=7.0).inflation == 7.0


def test_rounds_rotate_and_calls_are_timed():
    assert [rotated(["a", "b", "c"], r) for r in range(4)] == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"],
                                                              ["a", "b", "c"]]
    assert rotated([], 3) == []
    out, seconds = timed_call(lambda x: (time.sleep(0.01), x * 2)[1], torch.ones(2), torch.device("cpu"))
    assert torch.equal(out, torch.full((2,), 2.0)) and 0.01 <= seconds < 1 and out.is_inference()


def test_bench_and_the_gpu_run_share_one_round_loop():
    assert bench.run_rounds is gpu.run_rounds is run_rounds
    assert bench.compare_outputs is gpu.compare_outputs is compare_outputs
    assert bench.summarise is gpu.summarise is timing.summarise


def _arms_calling(calls: list[str], fail_on_call: int = 2) -> dict:
    """Three arms adding 0, 0.1 and 0.5 to the input, the last failing on its ``fail_on_call``-th call."""
    def arm(name: str, offset: float, fails: int | None = None):
        def fn(x):
            calls.append(name)
            if fails is not None and calls.count(name) == fails:
                raise RuntimeError("out of memory")
            return x + offset
        return fn

    return {"ref": arm("ref", 0.0), "near": arm("near", 0.1), "bad": arm("bad", 0.5, fail_on_call)}


def test_the_round_loop_rotates_keeps_errors_and_compares_to_the_reference():
    calls: list[str] = []
    x = torch.zeros(1, 1, 2, 2)
    records = run_rounds(_arms_calling(calls), x, torch.device("cpu"), warmup=1, runs=2, quality_round=True,
                         log=lambda message: None)
    # warm-up, quality, two timed rounds, each rotated by one; "bad" fails in the quality round, then is left out
    assert calls == ["ref", "near", "bad", "near", "bad", "ref", "ref", "near", "ref", "near"]
    ref, near, bad = records["ref"], records["near"], records["bad"]
    assert len(ref.warmup_times_s) == 1 and len(ref.times_s) == 2 and near.output_shape == [1, 1, 2, 2]
    assert bad.error == "RuntimeError: out of memory" and bad.output is None and len(bad.warmup_times_s) == 1
    assert (bad.times_s, near.nonfinite_values, near.fp32_fallbacks, near.peak_bytes) == ([], 0, 0, None)
    diffs = compare_outputs(records, "ref", data_range=1.0)
    assert set(diffs) == {"ref", "near"} and diffs["ref"]["psnr_db"] == math.inf
    assert diffs["near"]["psnr_db"] == pytest.approx(20.0) and diffs["near"]["max_abs_diff"] == pytest.approx(0.1)
    assert compare_outputs(records, "bad", data_range=1.0) == {}  # no reference output: no comparison


def test_without_a_quality_round_the_first_call_is_kept_and_a_known_error_is_not_called():
    calls: list[str] = []
    records = {"near": ArmRecord(error="skipped: cannot fit")}
    records = run_rounds(_arms_calling(calls, fail_on_call=9), torch.zeros(1, 1, 2, 2), torch.device("cpu"),
                         warmup=0, runs=2, records=records, log=lambda message: None)
    assert calls == ["ref", "bad", "bad", "ref"] and records["near"].times_s == []
    assert records["bad"].output is not None and len(records["bad"].times_s) == 2 and records["bad"].error is None
    assert compare_outputs(records, "ref", 2.0)["bad"]["mean_abs_diff"] == pytest.approx(0.5)


@pytest.mark.slow
def test_gpu_sh_dry_run(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh"), str(tmp_path), "--dry-run"], env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu-bench.json").read_text())
    assert (tmp_path / "gpu-bench.log").is_file()
    assert report["schema"] == "nystra_hub.gpu_bench/1" and report["dry_run"] and not report["errors"]
    stress = report["fp16_stress"]
    assert stress["plain_fp16_nonfinite"] > 0 and stress["ours_fp16_nonfinite"] == 0
    assert [c["arch"] for c in report["cases"]] == ["swinir", "uformer", "dehazeformer"]
    for case in report["cases"]:
        (result,) = case["results"]
        arms = result["arms"]
        assert arms["exact-fp32"]["psnr_vs_exact_fp32"] == "identical"
        for name, row in arms.items():
            assert row["error"] is None, (case["model"], name, row["error"])
            assert len(row["times_s"]) == 1 and row["median_s"] > 0
            if row["fp32_fallbacks"] == 0 and not name.startswith("spandrel"):
                assert row["nonfinite_values"] == 0
        for name in ("sdpa-bf16", "nystra-bf16"):
            assert arms[name]["psnr_vs_exact_fp32"] > 40, (case["model"], name)
    swinir_arms = report["cases"][0]["results"][0]["arms"]
    for name in ("compile-bf16", "flex-compile-bf16", "nystra-compile-bf16", "nystra-exact-count-bf16"):
        assert swinir_arms[name]["psnr_vs_exact_fp32"] > 40, name
    assert "sdpa_kernels" not in report and "flex_kernels" not in report and "host_syncs" not in report  # CUDA
    profiled = report["profile"]
    assert [m["model"] for m in profiled["models"]] == ["tiny-swinir-x2", "tiny-uformer"]
    assert profiled["copy_roofline"]["gb_per_s"] > 0
    for model in profiled["models"]:
        for arm in ("exact-bf16", "sdpa-bf16"):
            row = model[arm]
            assert row["wall_s"] > 0 and row["launches"] > 0 and row["tflops_per_s"] > 0 and row["gb_per_s"] > 0
            assert 0.99 < sum(r["share"] for r in row["top"]) <= 1.0001 or len(row["top"]) == 20
    assert set(report["roofline"]) == {"float32", "bfloat16", "float16"}
    for case in report["cases"]:
        (result,) = case["results"]
        assert result["flops"] > 0 and all(row["roofline_fraction"] > 0 for row in result["arms"].values())


@pytest.mark.skipif(not (TESTSETS / "Kodak24").is_dir(), reason="needs ../shared/testsets")
def test_gpu_session_trains_the_dehazeformer_reference_further_in_pieces(tmp_path):
    """benchmarks/gpu_session.sh's training half on the CPU: from the shipped DehazeFormer weights, a piece stops
    early, the next resumes from its state."""
    first, second = tmp_path / "first", tmp_path / "second"
    env = {**os.environ, "PYTHON": sys.executable, "SKIP_BENCH": "1", "DEVICE": "cpu", "STEPS": "3",
           "TESTSETS": str(TESTSETS), "STATES": str(tmp_path / "none")}
    script = str(REPO / "benchmarks" / "gpu_session.sh")
    for out, extra in ((first, {"TRAIN_ARGS": "--batch 2 --stop-at 1"}),
                       (second, {"TRAIN_ARGS": "--batch 2", "STATES": str(first / "train")})):
        proc = subprocess.run(["bash", script, str(out)], env={**env, **extra}, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    saved = torch.load(second / "train" / "dehazeformer-ref-t.pt", map_location="cpu", weights_only=False)["run"]
    assert saved["settings"]["recipe"] == "dehazeformer-ref-t" and saved["step"] == 3
    assert saved["settings"]["batch"] == 2 and saved["settings"]["init_from_sha256"]  # from the shipped weights
    assert "resumed dehazeformer-ref-t at step 1/3" in (second / "train" / "train.log").read_text()
    assert not (first / "bench").exists()
