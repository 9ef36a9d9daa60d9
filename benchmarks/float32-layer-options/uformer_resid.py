import sys, tempfile
from pathlib import Path
import torch
import nystra_hub
import nystra_hub.inference.export as ex
from nystra_hub.measure.metrics import psnr, quantise, score
from nystra_hub.measure.references import load_reference, recipe_task
torch.set_num_threads(2)
mode = sys.argv[1]
def residual_adds(graph, module):
    names = set()
    for node in graph.nodes:
        if node.op != "call_function" or "add" not in str(node.target):
            continue
        stack = list(node.meta.get("nn_module_stack", {}).values())
        last = stack[-1][1] if stack else ""
        last = getattr(last, "__name__", str(last))
        if mode == "alladd" or "LeWinTransformerBlock" in last or "Uformer" == last.split(".")[-1] or not stack:
            names.add(node.name)
    print("marked fx adds", len(names), file=sys.stderr)
    return names
ex.tail_node_names = residual_adds
model, info = load_reference(Path("/work/main/reference_models/uformer-ref-denoise25"))
task = recipe_task(info)
pairs = [task.heldout_pair(n)[:2] for n in list(info["heldout_images"])[:4]]
rows = []
with tempfile.TemporaryDirectory() as c:
    for lq, gt in pairs:
        f32 = nystra_hub.restore(model, lq, tile=0, backend="openvino", cache_dir=Path(c))
        bf16 = nystra_hub.restore(model, lq, tile=0, backend="openvino", dtype="bfloat16", cache_dir=Path(c))
        s32, s16 = (score(o, gt, task.protocol, task.scale)["psnr"] for o in (f32, bf16))
        rows.append((round(psnr(quantise(bf16), quantise(f32)), 2), round(s16 - s32, 4)))
print(mode, rows, "mean delta", round(sum(r[1] for r in rows) / len(rows), 4), "worst", min(r[0] for r in rows), flush=True)
