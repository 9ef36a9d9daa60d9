"""benchmarks/gpu.sh --dry-run: every code path of the GPU measurement runs on the CPU (tiny models, 1 run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO, TESTSETS


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
    assert "compile-bf16" in report["cases"][0]["results"][0]["arms"]
    profiled = report["profile"]
    assert profiled["exact-bf16"]["top"] and profiled["sdpa-bf16"]["wall_s"] > 0


@pytest.mark.skipif(not (TESTSETS / "Kodak24").is_dir(), reason="needs ../shared/testsets")
def test_gpu_session_trains_the_swinir_reference_in_pieces(tmp_path):
    """benchmarks/gpu_session.sh's training half on the CPU: a piece stops early, the next resumes from its state."""
    first, second = tmp_path / "first", tmp_path / "second"
    env = {**os.environ, "PYTHON": sys.executable, "SKIP_BENCH": "1", "DEVICE": "cpu", "STEPS": "3",
           "TESTSETS": str(TESTSETS), "STATES": str(tmp_path / "none")}
    script = str(REPO / "benchmarks" / "gpu_session.sh")
    for out, extra in ((first, {"TRAIN_ARGS": "--batch 2 --stop-at 1"}),
                       (second, {"TRAIN_ARGS": "--batch 2", "STATES": str(first / "train")})):
        proc = subprocess.run(["bash", script, str(out)], env={**env, **extra}, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    saved = torch.load(second / "train" / "swinir-ref-x2.pt", map_location="cpu", weights_only=False)["run"]
    assert saved["step"] == 3 and saved["settings"]["bias_init"] == "locality" and saved["settings"]["batch"] == 2
    assert "resumed swinir-ref-x2 at step 1/3" in (second / "train" / "train.log").read_text()
    assert not (first / "bench").exists()
