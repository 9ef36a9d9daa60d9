"""Where OpenVINO spends the time of two IRs of the same network, layer type by layer type (issue 24: our graph
against the official one in bfloat16).

    python benchmarks/ov_layer_profile.py OURS_FOLDER OFFICIAL_FOLDER [--precision bf16] [--threads 2] \
        [--runs 5] [--out benchmarks/ov-layers-swinir-x2-128-cpu.json]

Each folder is an export-cache folder (``model.xml`` + ``model.bin``, as ``nystra-hub bench`` leaves them under
``~/.cache/nystra_hub/exports``). Both IRs are compiled with ``PERF_COUNT`` on, run alternately ``--runs`` times
after one warm-up on the same random input (which one goes first alternates), and OpenVINO's per-layer profiling
(``InferRequest.profiling_info``) is summed per (layer type, kernel) in each run, the median over the runs reported,
with each request's wall time (median over the runs). The other ``ov-layers-*`` reports in benchmarks/ (all
but ``ov-layers-uformer-b-256-cpu.json``) were written by its earlier version, which ran the two in a fixed order
and summed the last run's profile only.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time
from pathlib import Path

import numpy as np
import openvino as ov
import torch

from nystra_hub.io.images import atomic_write_json
from nystra_hub.measure.environment import environment
from nystra_hub.measure.timing import rotated


def compile_ir(folder: Path, precision: str, threads: int) -> ov.CompiledModel:
    config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
              "PERF_COUNT": True}
    return ov.Core().compile_model(str(folder / "model.xml"), "CPU", config)


def layer_times(request: ov.InferRequest) -> dict[str, dict]:
    """{"<layer type> / <kernel>": {"ms": summed real time, "layers": count}} of the request's last inference."""
    totals: dict[str, dict] = collections.defaultdict(lambda: {"ms": 0.0, "layers": 0})
    for info in request.profiling_info:
        if info.status != ov.ProfilingInfo.Status.EXECUTED:
            continue
        key = f"{info.node_type} / {info.exec_type}"
        totals[key]["ms"] += info.real_time.total_seconds() * 1e3
        totals[key]["layers"] += 1
    return dict(totals)


def median_layer_times(runs: list[dict[str, dict]]) -> dict[str, dict]:
    """Per (layer type, kernel): the median over ``runs`` (:func:`layer_times` of each) of its summed time."""
    return {key: {"ms": statistics.median(run.get(key, {"ms": 0.0})["ms"] for run in runs),
                  "layers": runs[-1].get(key, {"layers": 0})["layers"]}
            for key in {key for run in runs for key in run}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ours", type=Path)
    parser.add_argument("official", type=Path)
    parser.add_argument("--precision", default="bf16", choices=["bf16", "f32"],
                        help="OpenVINO's INFERENCE_PRECISION_HINT")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    graphs = {"ours": args.ours, "official": args.official}
    compiled = {name: compile_ir(folder, args.precision, args.threads) for name, folder in graphs.items()}
    shape = tuple(compiled["ours"].input(0).shape)
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    requests = {name: c.create_infer_request() for name, c in compiled.items()}
    walls: dict[str, list[float]] = {name: [] for name in graphs}
    profiles: dict[str, list[dict]] = {name: [] for name in graphs}
    for run in range(args.runs + 1):
        # the order alternates, so that neither graph always runs right after the other
        for name in rotated(list(requests), run):
            start = time.perf_counter()
            requests[name].infer({0: x})
            if run:
                walls[name].append((time.perf_counter() - start) * 1e3)
                profiles[name].append(layer_times(requests[name]))
    report = {"command": "python benchmarks/ov_layer_profile.py " + " ".join(
                  f"{a}" for a in (args.ours.name, args.official.name, "--precision", args.precision)),
              "input_shape": list(shape), "precision": args.precision, "threads": args.threads,
              "environment": environment(torch.device("cpu")), "openvino": ov.__version__, "graphs": {}}
    for name in requests:
        layers = median_layer_times(profiles[name])
        report["graphs"][name] = {"folder": graphs[name].name, "median_ms": statistics.median(walls[name]),
                                  "wall_ms": walls[name], "layer_ms_total": sum(v["ms"] for v in layers.values()),
                                  "by_type": dict(sorted(layers.items(), key=lambda kv: -kv[1]["ms"]))}
    print_table(report)
    if args.out:
        atomic_write_json(args.out, report, indent=1)


def print_table(report: dict) -> None:
    ours, official = (report["graphs"][n] for n in ("ours", "official"))
    print(f"median ms: ours {ours['median_ms']:.1f}, official {official['median_ms']:.1f}")
    keys = sorted(set(ours["by_type"]) | set(official["by_type"]),
                  key=lambda k: -max(g["by_type"].get(k, {"ms": 0})["ms"] for g in (ours, official)))
    print(f"{'layer type / kernel':60s} {'ours ms':>9s} {'n':>5s} {'official ms':>12s} {'n':>5s}")
    for key in keys[:30]:
        a, b = (g["by_type"].get(key, {"ms": 0.0, "layers": 0}) for g in (ours, official))
        print(f"{key[:60]:60s} {a['ms']:9.1f} {a['layers']:5d} {b['ms']:12.1f} {b['layers']:5d}")


if __name__ == "__main__":
    main()
