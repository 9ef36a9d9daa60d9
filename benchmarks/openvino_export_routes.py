"""OpenVINO IR straight from torch.export (what ``export(..., "openvino")`` does) against through ONNX (what it did):
export time, and run time of both graphs in float32 and bfloat16 (arms interleaved, medians of 7, 2 threads).

    python benchmarks/openvino_export_routes.py swinir-x2 128   # one JSON line
    (results of this project's CPU machine: benchmarks/openvino-export-routes-cpu.json)
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import openvino as ov
import torch

import nystra_hub
from nystra_hub.inference.export import example_input, export, to_openvino

RUNS = 7


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(variant: str, size: int) -> dict:
    torch.set_num_threads(2)
    model = nystra_hub.build_variant(variant).eval()
    folder = Path(tempfile.mkdtemp())
    export_s = {"direct": timed(lambda: export(model, folder / "direct", "openvino", size=size)),
                "via_onnx": timed(lambda: (export(model, folder / "onnx", "onnx", size=size),
                                           to_openvino(folder / "onnx", folder / "via_onnx")))}
    x = example_input(model, (1, 3, size, size)).numpy()
    core = ov.Core()
    arms = {f"{route}-{precision}": core.compile_model(str(folder / route / "model.xml"), "CPU", {
        "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": 2})
        for route in ("direct", "via_onnx") for precision in ("f32", "bf16")}
    outputs = {name: compiled(x)[0] for name, compiled in arms.items()}  # also the warm-up
    times = {name: [] for name in arms}
    for _ in range(RUNS):
        for name, compiled in arms.items():
            times[name].append(timed(lambda compiled=compiled: compiled(x)))
    return dict(variant=variant, size=size, export_s={k: round(v, 1) for k, v in export_s.items()},
                run_ms={k: round(1000 * statistics.median(v), 1) for k, v in times.items()},
                max_diff_direct_vs_onnx_f32=float(np.abs(outputs["direct-f32"] - outputs["via_onnx-f32"]).max()),
                cpu=platform.processor() or platform.machine(), threads=2, openvino=ov.__version__,
                torch=torch.__version__)


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]))))
