"""What the CLI's automatic CPU route costs and saves on a folder, and the numbers behind ``EXPORT_REPAID_AFTER``.

Part 1, per model at one shape (SwinIR-M x2 at 128², Uformer-B at 256²; random weights, official configuration):
the first export to OpenVINO IR, then eager torch float32 and OpenVINO float32 / bfloat16 on that graph, arms
interleaved, medians of 5 after one warm-up: how many calls of a shape repay its export.

Part 2, end to end: ``nystra-hub restore`` on a folder of 6 images of mixed sizes around 300x200 with SwinIR-M x2,
one run per arm, in this order: ``--backend torch``; the default (``auto``) on a cold export cache; ``--backend
openvino`` on a cold cache (what ``auto`` did before it counted the calls: one export per image size); the
default again, now on a warm cache. Wall time of each command (the same imports and model loading in every arm)
and the largest 8-bit difference from the eager outputs.

    python benchmarks/folder_route.py > benchmarks/folder-route-cpu.json
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import openvino as ov
import torch

import nystra_hub
from nystra_hub.inference.backends import make_runner
from nystra_hub.inference.export import example_input
from nystra_hub.io.hub import save_hub_folder
from nystra_hub.io.images import read_image, write_image
from nystra_hub.measure.environment import environment

RUNS = 5
THREADS = 2
SIZES = [(200, 300), (204, 296), (192, 320), (212, 288), (200, 304), (216, 280)]  # (height, width)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def repay(variant: str, size: int) -> dict:
    """Export time and per-call times of one shape; the calls after which the export has paid for itself."""
    model = nystra_hub.build_variant(variant).eval()
    x = example_input(model, (1, 3, size, size))
    cache = tempfile.mkdtemp()
    arms = {"eager-f32": make_runner(model, "torch"),
            "openvino-f32": make_runner(model, "openvino", cache_dir=cache),
            "openvino-bf16": make_runner(model, "openvino", cache_dir=cache, precision="bfloat16")}
    with torch.inference_mode():
        export_s = timed(lambda: arms["openvino-f32"](x))  # the first call exports (and compiles) the shape
        for runner in arms.values():
            runner(x)
        times = {name: [] for name in arms}
        for _ in range(RUNS):
            for name, runner in arms.items():
                times[name].append(timed(lambda runner=runner: runner(x)))
    ms = {name: round(1000 * statistics.median(t), 1) for name, t in times.items()}
    calls = {precision: round(export_s / ((ms["eager-f32"] - ms[f"openvino-{precision}"]) / 1000), 1)
             for precision in ("f32", "bf16")}
    return dict(variant=variant, size=size, first_export_and_compile_s=round(export_s, 1), run_ms=ms,
                calls_to_repay_export=calls)


def cli(args: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "nystra_hub.cli", "restore", "--no-progress", *args], env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(done.stderr)
    route = next((line for line in done.stderr.splitlines() if line.startswith("route:")), "")
    return wall, route


def folder(variant: str = "swinir-x2") -> dict:
    work = Path(tempfile.mkdtemp())
    save_hub_folder(nystra_hub.build_variant(variant), work / "model", variant=variant, card=False)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(SIZES):
        write_image(work / "in" / f"{i}.png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    env = {**os.environ, "NYSTRA_HUB_CACHE": str(work / "cache"), "NYSTRA_HUB_BACKEND": "auto"}
    common = ["--model", str(work / "model"), "--threads", str(THREADS), str(work / "in")]
    arms = [("torch", ["--backend", "torch"]), ("auto-cold-cache", []), ("openvino-cold-cache", ["--backend",
            "openvino"]), ("auto-warm-cache", [])]
    rows = []
    for name, extra in arms:
        wall, route = cli([*common, "--out", str(work / name), *extra], env)
        diff = max(int(np.abs(read_image(work / name / f"{i}.png").astype(int)
                              - read_image(work / "torch" / f"{i}.png").astype(int)).max()) for i in range(len(SIZES)))
        rows.append(dict(arm=name, wall_s=round(wall, 1), max_level_diff_vs_torch=diff, route=route))
    eager = rows[0]["wall_s"]
    for row in rows:
        row["speedup_vs_torch"] = round(eager / row["wall_s"], 2)
    return dict(variant=variant, images=[f"{h}x{w}" for h, w in SIZES], runs_per_arm=1, arms=rows)


if __name__ == "__main__":
    torch.set_num_threads(THREADS)
    report = dict(schema="nystra_hub.folder_route/1", command="python benchmarks/folder_route.py",
                  machine=environment(torch.device("cpu")),
                  torch=torch.__version__, openvino=ov.__version__,
                  repay=[repay("swinir-x2", 128), repay("uformer-b-sidd", 256)], folder=folder())
    print(json.dumps(report, indent=1))
