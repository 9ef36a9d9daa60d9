"""OpenVINO int8 (NNCF post-training quantisation) against float32 and bfloat16 on the same exported graph.

Issue 24 asks for int8 to be explored, not assumed: these CPUs have VNNI and AMX. For each reference model
(reference_models/*): its exported graph at one input shape, quantised by ``nncf.quantize`` (transformer preset)
on 16 crops of its own training images degraded by its recipe; then the held-out images (centre crops of that
shape) restored through float32, bfloat16 and int8 (int8 compiled with float32 and with bfloat16 for the layers
left unquantised: OpenVINO's default on these CPUs is the latter), scored against the ground truth by the
model's protocol and against the float32 output; and the speed of each at that shape (arms interleaved, medians of
5 after a warm-up). The base model SwinIR-M x2 (random weights, quantised on the same kind of crops) gives the
speed at 128². Needs ``pip install nncf`` (not a dependency of the package).

    python benchmarks/openvino_int8.py --out benchmarks/openvino-int8-cpu.json
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import nncf
import numpy as np
import openvino as ov
import torch

import nystra_hub
from nystra_hub.inference.backends import Runner
from nystra_hub.inference.export import export
from nystra_hub.inference.restore import forward_shapes
from nystra_hub.measure.environment import environment
from nystra_hub.measure.metrics import psnr, quantise, score
from nystra_hub.measure.references import load_reference, recipe_task

REPO = Path(__file__).resolve().parents[1]
CROP = {"swinir": 64, "uformer": 128, "dehazeformer": 128}  # input side of the crops (and of the graph)
CALIBRATION, HELDOUT, RUNS = 16, 8, 5
ARMS = {"f32": ("fp32", "f32"), "bf16": ("fp32", "bf16"), "int8-f32": ("int8", "f32"), "int8-bf16": ("int8", "bf16")}


class Recorder(Runner):
    """The eager model, keeping every raw forward input (what the graph and the quantiser see)."""

    def __init__(self, model) -> None:
        super().__init__(model)
        self.inputs: list[np.ndarray] = []

    def forward(self, x):
        self.inputs.append(x.numpy().copy())
        return self.model(x)


class OpenVINORunner(Runner):
    def __init__(self, model, compiled) -> None:
        super().__init__(model)
        self.compiled = compiled

    def forward(self, x):
        return torch.from_numpy(self.compiled(x.numpy())[0].copy())


def centre_crop(lq: torch.Tensor, gt: torch.Tensor, side: int, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    top, left = (lq.shape[-2] - side) // 2, (lq.shape[-1] - side) // 2
    return (lq[:, top:top + side, left:left + side],
            gt[:, top * scale:(top + side) * scale, left * scale:(left + side) * scale])


def raw_inputs(model, images: list[torch.Tensor]) -> list[np.ndarray]:
    recorder = Recorder(model)
    for image in images:
        nystra_hub.restore(model, image, tile=0, backend=recorder)
    return recorder.inputs


def compiled_arms(model, shape: tuple[int, ...], calibration: list[np.ndarray], folder: Path) -> dict:
    export(model, folder, "openvino", size=shape[-2:], batch=shape[0], channels=shape[1])
    core = ov.Core()
    graphs = {"fp32": core.read_model(str(folder / "model.xml"))}
    graphs["int8"] = nncf.quantize(graphs["fp32"], nncf.Dataset(calibration), model_type=nncf.ModelType.TRANSFORMER,
                                   subset_size=len(calibration))
    return {arm: core.compile_model(graphs[graph], "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                           "INFERENCE_NUM_THREADS": torch.get_num_threads()})
            for arm, (graph, hint) in ARMS.items()}


def speed_ms(arms: dict, x: np.ndarray) -> dict:
    for compiled in arms.values():
        compiled(x)
    times = {arm: [] for arm in arms}
    for _ in range(RUNS):
        for arm, compiled in arms.items():
            start = time.perf_counter()
            compiled(x)
            times[arm].append(time.perf_counter() - start)
    return {arm: round(1000 * statistics.median(t), 1) for arm, t in times.items()}


def reference_row(folder: Path, work: Path) -> dict:
    model, info = load_reference(folder)
    task, side = recipe_task(info), CROP[info["arch"]]
    crop = lambda name: centre_crop(*task.heldout_pair(name)[:2], side, task.scale)  # noqa: E731
    calibration = raw_inputs(model, [crop(name)[0] for name in info["train_images"][:CALIBRATION]])
    (shape,) = forward_shapes(model, [(side, side)])
    arms = compiled_arms(model, shape, calibration, work / folder.name)
    psnr_gt = {arm: [] for arm in arms}
    psnr_vs_f32 = {arm: [] for arm in arms}
    for name in info["heldout_images"][:HELDOUT]:
        lq, gt = crop(name)
        outs = {arm: nystra_hub.restore(model, lq, tile=0, backend=OpenVINORunner(model, c)) for arm, c in arms.items()}
        for arm, out in outs.items():
            psnr_gt[arm].append(score(out, gt, task.protocol, task.scale)["psnr"])
            psnr_vs_f32[arm].append(psnr(quantise(out), quantise(outs["f32"])))
    mean = lambda values: round(sum(values) / len(values), 4)  # noqa: E731
    return dict(model=folder.name, input=list(shape), heldout_crops=HELDOUT,
                heldout_psnr={arm: mean(v) for arm, v in psnr_gt.items()},
                heldout_delta_db={arm: round(mean(v) - mean(psnr_gt["f32"]), 4) for arm, v in psnr_gt.items()},
                worst_psnr_vs_f32={arm: round(min(v), 2) for arm, v in psnr_vs_f32.items() if arm != "f32"},
                run_ms=speed_ms(arms, calibration[0]))


def base_row(work: Path, variant: str = "swinir-x2", side: int = 128) -> dict:
    model = nystra_hub.build_variant(variant).eval()
    info = json.loads((REPO / "reference_models" / "swinir-ref-x2" / "reference.json").read_text())
    task = recipe_task(info)
    images = [centre_crop(*task.heldout_pair(name)[:2], side, task.scale)[0]
              for name in info["train_images"][:CALIBRATION]]
    calibration = raw_inputs(model, images)
    (shape,) = forward_shapes(model, [(side, side)])
    arms = compiled_arms(model, shape, calibration, work / variant)
    return dict(model=f"{variant} (random weights: speed only)", input=list(shape),
                run_ms=speed_ms(arms, calibration[0]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/openvino-int8-cpu.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    nncf.set_log_level(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*outside \\[0, 1\\]")  # noisy inputs are unclipped by design
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        rows = [reference_row(folder, Path(tmp)) for folder in sorted((REPO / "reference_models").iterdir())]
        for row in rows:
            print(json.dumps(row), file=sys.stderr)
        base = base_row(Path(tmp))
    report = dict(schema="nystra_hub.openvino_int8/1", command="python benchmarks/openvino_int8.py",
                  nncf=nncf.__version__, openvino=ov.__version__, machine=environment(torch.device("cpu")),
                  references=rows, base=base)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
