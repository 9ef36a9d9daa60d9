import json, sys, tempfile, time
from pathlib import Path
import torch
import nystra_hub
from nystra_hub.models.uformer import Uformer
from nystra_hub.measure.metrics import psnr, quantise, score
from nystra_hub.measure.references import load_reference, recipe_task
torch.set_num_threads(2)
REPO = Path("/work/main")
model, info = load_reference(REPO / "reference_models" / "uformer-ref-denoise25")
task = recipe_task(info)
names = list(info["heldout_images"])[:int(sys.argv[2]) if len(sys.argv) > 2 else 4]
tails = sys.argv[1].split(",")
pairs = [task.heldout_pair(n)[:2] for n in names]
with tempfile.TemporaryDirectory() as c32:
    f32s = [nystra_hub.restore(model, lq, tile=0, backend="openvino", cache_dir=Path(c32)) for lq, gt in pairs]
for tail in tails:
    Uformer.float32_tail = (lambda self, t=tail: None if t == "none" else t)
    with tempfile.TemporaryDirectory() as c:
        rows = []
        for (lq, gt), f32 in zip(pairs, f32s):
            bf16 = nystra_hub.restore(model, lq, tile=0, backend="openvino", dtype="bfloat16", cache_dir=Path(c))
            s32, s16 = (score(o, gt, task.protocol, task.scale)["psnr"] for o in (f32, bf16))
            rows.append((round(psnr(quantise(bf16), quantise(f32)), 2), round(s16 - s32, 4)))
    print(tail, rows, "mean delta", round(sum(r[1] for r in rows) / len(rows), 4), "worst", min(r[0] for r in rows), flush=True)
