"""argv: variant-name size variants(comma: none|full|noconv|module:X) rounds"""
import sys, time, statistics, tempfile
from pathlib import Path
import numpy as np, torch, openvino as ov
import nystra_hub
import nystra_hub.inference.export as ex
import nystra_hub.inference.float32_layers as ft
torch.manual_seed(0)
model = nystra_hub.build_variant(sys.argv[1]).eval()
size = int(sys.argv[2]); variants = sys.argv[3].split(","); rounds = int(sys.argv[4])
cls = type(model); orig_tail = cls.float32_tail; ORIG = ft.UNMARKED_LAYER_TYPES; ORIGC = ft.COMPUTE_LAYER_TYPES
root = Path(tempfile.mkdtemp())
for v in variants:
    cls.float32_tail = orig_tail; ft.UNMARKED_LAYER_TYPES = ORIG
    if v == "none": cls.float32_tail = lambda self: None
    elif v == "noconv": ft.UNMARKED_LAYER_TYPES = ORIG + ("Convolution", "MatMul", "GroupConvolution")
    elif v.startswith("module:"): cls.float32_tail = lambda self, m=v[7:]: m
    ft.COMPUTE_LAYER_TYPES = ORIGC
    if v.startswith("full:"): cls.float32_tail = lambda self, m=v[5:]: m; ft.COMPUTE_LAYER_TYPES = ()
    ex.export(model, root / v.replace(":", "_"), "openvino", size=size)
core = ov.Core()
cfg = {"INFERENCE_NUM_THREADS": 2, "INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY"}
req = {v: core.compile_model(str(root / v.replace(":", "_") / "model.xml"), "CPU", cfg).create_infer_request() for v in variants}
x = np.random.default_rng(0).random(tuple(req[variants[0]].model_inputs[0].shape), dtype=np.float32)
times = {k: [] for k in req}
for r in range(rounds):
    order = variants[r % len(variants):] + variants[:r % len(variants)]
    for k in order:
        t = time.perf_counter(); req[k].infer({0: x}); dt = time.perf_counter() - t
        if r: times[k].append(dt)
for k, v in times.items(): print(sys.argv[1], size, k, round(statistics.median(v) * 1e3, 1), "ms", [round(a * 1e3) for a in v], flush=True)
