"""quality of tail variants: argv[1] = reference folder, argv[2] = comma list of variants: none | full | noconv | module:<name>"""
import sys, tempfile
from pathlib import Path
import torch
import nystra_hub
import nystra_hub.inference.export as ex
import nystra_hub.inference.float32_layers as ft
from nystra_hub.measure.metrics import psnr, quantise, score
from nystra_hub.measure.references import load_reference, recipe_task
torch.set_num_threads(2)
model, info = load_reference(Path("/work/main/reference_models") / sys.argv[1])
task = recipe_task(info)
pairs = [task.heldout_pair(n)[:2] for n in list(info["heldout_images"])[:4]]
cls = type(model)
orig_tail, orig_keep, skip = cls.float32_tail, ft.keep_float32, set()
ORIG_UNMARKED = ft.UNMARKED_LAYER_TYPES; ORIGC = ft.COMPUTE_LAYER_TYPES
with tempfile.TemporaryDirectory() as c:
    f32s = [nystra_hub.restore(model, lq, tile=0, backend="openvino", dtype="float32", cache_dir=Path(c)) for lq, gt in pairs]
for variant in sys.argv[2].split(","):
    cls.float32_tail = orig_tail
    ft.UNMARKED_LAYER_TYPES = ORIG_UNMARKED
    if variant == "none":
        cls.float32_tail = lambda self: None
    elif variant == "noconv":
        ft.UNMARKED_LAYER_TYPES = ORIG_UNMARKED + ("Convolution", "MatMul", "GroupConvolution")
    elif variant.startswith("module:"):
        cls.float32_tail = lambda self, m=variant[7:]: m
    ft.COMPUTE_LAYER_TYPES = ORIGC
    if variant.startswith("full:"):
        cls.float32_tail = lambda self, m=variant[5:]: m; ft.COMPUTE_LAYER_TYPES = ()
    with tempfile.TemporaryDirectory() as c:
        rows = []
        for (lq, gt), f32 in zip(pairs, f32s):
            bf16 = nystra_hub.restore(model, lq, tile=0, backend="openvino", dtype="bfloat16", cache_dir=Path(c))
            s32, s16 = (score(o, gt, task.protocol, task.scale)["psnr"] for o in (f32, bf16))
            rows.append((round(psnr(quantise(bf16), quantise(f32)), 2), round(s16 - s32, 4)))
    print(sys.argv[1], variant, rows, "mean delta", round(sum(r[1] for r in rows) / len(rows), 4), "worst", min(r[0] for r in rows), flush=True)
