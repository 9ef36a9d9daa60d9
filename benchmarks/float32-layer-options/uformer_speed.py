import sys, time, statistics, tempfile
from pathlib import Path
import numpy as np, torch, openvino as ov
import nystra_hub
import nystra_hub.inference.export as ex
torch.manual_seed(0)
model = nystra_hub.build_variant(sys.argv[1]).eval()
size = int(sys.argv[2])
orig = ex.tail_node_names
def residual_adds(graph, module):
    names = set()
    for node in graph.nodes:
        if node.op != "call_function" or "add" not in str(node.target):
            continue
        stack = list(node.meta.get("nn_module_stack", {}).values())
        last = stack[-1][1] if stack else ""
        last = getattr(last, "__name__", str(last))
        import re; path = stack[-1][0] if stack else ""
        if ("LeWinTransformerBlock" in last and re.search(sys.argv[3], path)) or not stack:
            names.add(node.name)
    return names
root = Path(tempfile.mkdtemp())
t = time.time(); ex.export(model, root / "plain", "openvino", size=size); print("export", time.time() - t, flush=True)
ex.tail_node_names = residual_adds
ex.export(model, root / "resid", "openvino", size=size)
core = ov.Core()
cfg = {"INFERENCE_NUM_THREADS": 2, "INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY"}
comp = {k: core.compile_model(str(root / k / "model.xml"), "CPU", cfg) for k in ("plain", "resid")}
x = np.random.default_rng(0).random(tuple(comp["plain"].input(0).shape), dtype=np.float32)
req = {k: c.create_infer_request() for k, c in comp.items()}
times = {k: [] for k in req}
for r in range(int(sys.argv[4]) if len(sys.argv) > 4 else 7):
    for k in (list(req) if r % 2 else list(req)[::-1]):
        t = time.perf_counter(); req[k].infer({0: x}); dt = time.perf_counter() - t
        if r: times[k].append(dt)
for k, v in times.items(): print(k, round(statistics.median(v) * 1e3, 1), "ms", [round(a * 1e3) for a in v])
