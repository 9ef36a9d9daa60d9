"""What OpenVINO's bfloat16 kernels cost in quality, against its float32 on the same exported graph.

For each reference model (reference_models/*, held-out images of its recipe) and each golden case
(../shared/golden, its recorded input): the output through ``restore(..., backend="openvino")`` in float32 and in
bfloat16 (whole image; the export keeps the architecture's float32 layers,
``nystra_hub.inference.float32_layers``), scored by the model's protocol against float32 and against the ground
truth. The budget the CLI's automatic route checks is :data:`nystra_hub.inference.backends.BFLOAT16_BUDGET`; this
script writes the numbers each architecture's verdict (``ArchitectureSpec.cpu_bfloat16_within_budget``) rests on.

    python benchmarks/openvino_bf16_quality.py --out benchmarks/openvino-bf16-quality.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

import nystra_hub
from nystra_hub.inference.backends import BFLOAT16_BUDGET, cpu_has_native_bfloat16
from nystra_hub.measure.environment import environment
from nystra_hub.measure.metrics import psnr, quantise, score
from nystra_hub.measure.references import load_reference, recipe_task

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO.parent / "shared" / "golden"


def both_precisions(model, image: torch.Tensor, cache: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(float32, bfloat16) outputs of OpenVINO on ``image`` (C, H, W) in [0, 1]."""
    f32 = nystra_hub.restore(model, image, tile=0, backend="openvino", dtype="float32", cache_dir=cache)
    bf16 = nystra_hub.restore(model, image, tile=0, backend="openvino", dtype="bfloat16", cache_dir=cache)
    return f32, bf16


def reference_rows(cache: Path, images: int) -> list[dict]:
    rows = []
    for folder in sorted((REPO / "reference_models").iterdir()):
        model, info = load_reference(folder)
        task = recipe_task(info)
        for name in list(info["heldout_images"])[:images]:
            lq, gt, _ = task.heldout_pair(name)
            f32, bf16 = both_precisions(model, lq, cache)
            s32, s16 = (score(out, gt, task.protocol, task.scale) for out in (f32, bf16))
            rows.append(dict(model=folder.name, arch=model.arch, image=name, shape=list(lq.shape),
                             psnr_bf16_vs_f32=round(psnr(quantise(bf16), quantise(f32)), 2),
                             psnr_gt_f32=round(s32["psnr"], 4), psnr_gt_bf16=round(s16["psnr"], 4),
                             delta_db=round(s16["psnr"] - s32["psnr"], 4)))
            print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def golden_rows(cache: Path) -> list[dict]:
    rows = []
    for case in sorted(p.name for p in GOLDEN.iterdir() if (p / "case.json").exists()):
        info = json.loads((GOLDEN / case / "case.json").read_text())
        model = nystra_hub.build_model(info["arch"], **info["official_constructor_kwargs"])
        nystra_hub.load_original_checkpoint(model, GOLDEN / case / "checkpoint.pth")
        x = next(iter(load_file(str(GOLDEN / case / "io.safetensors")).values()))[0].clamp(0, 1)
        f32, bf16 = both_precisions(model.eval(), x, cache)
        rows.append(dict(model=case, arch=model.arch, shape=list(x.shape), psnr_bf16_vs_f32=round(psnr(quantise(bf16),
                                                                                         quantise(f32)), 2)))
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def summarise(references: list[dict], golden: list[dict]) -> dict:
    """The worst image against float32, each reference model's held-out PSNR change (mean over its images), and
    for each architecture whether its reference models are within :data:`BFLOAT16_BUDGET` (the verdict its spec's
    ``cpu_bfloat16_within_budget`` records). The golden cases (small models with deliberately perturbed weights,
    inputs of 16-28 pixels) are reported as a stress check, not judged: they are not trained models."""
    models = sorted({row["model"] for row in references})
    heldout_delta = {m: round(sum(r["delta_db"] for r in references if r["model"] == m)
                              / sum(r["model"] == m for r in references), 4) for m in models}
    within: dict[str, bool] = {}
    for model in models:  # an architecture is within budget when each of its reference models is
        rows = [r for r in references if r["model"] == model]
        verdict = (min(r["psnr_bf16_vs_f32"] for r in rows) >= BFLOAT16_BUDGET["min_psnr_vs_float32_db"]
                   and abs(heldout_delta[model]) <= BFLOAT16_BUDGET["max_heldout_delta_db"])
        within[rows[0]["arch"]] = within.get(rows[0]["arch"], True) and verdict
    return dict(worst_psnr_bf16_vs_f32_references=min(r["psnr_bf16_vs_f32"] for r in references),
                heldout_delta_db=heldout_delta,
                worst_psnr_bf16_vs_f32_golden=min(r["psnr_bf16_vs_f32"] for r in golden),
                within_budget_by_arch=within)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4, help="held-out images per reference model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/openvino-bf16-quality.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as cache:
        references, golden = reference_rows(Path(cache), args.images), golden_rows(Path(cache))
    report = dict(schema="nystra_hub.openvino_bf16_quality/2", budget=BFLOAT16_BUDGET,
                  native_bfloat16=cpu_has_native_bfloat16(), machine=environment(torch.device("cpu")),
                  python=platform.python_version(), references=references, golden=golden,
                  **summarise(references, golden))
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k.startswith(("worst", "within", "native", "heldout"))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
