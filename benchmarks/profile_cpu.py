"""Where the CPU time of one forward goes, and what a fresh allocation costs (a command, not a test).

    python benchmarks/profile_cpu.py --model uformer-b-sidd --size 256 --threads 2

Prints torch.profiler's per-operator self time over one exact forward (random weights, official protocol, after a
warm-up forward), the share of the main groups, and a GELU on a 65536x128 tensor written into a new tensor vs in
place. Run it under different allocator settings (e.g. MALLOC_MMAP_MAX_=0) to compare them.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from nystra_hub.io.variants import build_variant

GROUPS = {"linear (addmm)": ("aten::addmm",), "copies": ("aten::copy_",), "GELU": ("aten::gelu", "aten::gelu_"),
          "convolutions": ("aten::mkldnn_convolution",), "attention (bmm + softmax)": ("aten::bmm", "aten::_softmax")}


def _ms(fn, runs: int = 20) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(runs):
        fn()
    return (time.perf_counter() - start) / runs * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="uformer-b-sidd")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = build_variant(args.model, attn_impl="softmax").eval()
    x = torch.rand(1, model.in_channels, args.size, args.size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        model.official_inference(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model.official_inference(x)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print(f"{args.model} {args.size}x{args.size}, {args.threads} threads: {total / 1e3:.0f} ms self CPU in total")
    for group, names in GROUPS.items():
        share = sum(e.self_cpu_time_total for e in events if e.key in names) / total
        print(f"  {group:<28} {100 * share:5.1f} %")
    print(events.table(sort_by="self_cpu_time_total", row_limit=10))
    t = torch.randn(65536, 128)
    fresh, inplace = t.clone(), t.clone()
    print(f"GELU on 65536x128 floats: into a new tensor {_ms(lambda: torch.nn.functional.gelu(fresh)):.1f} ms, "
          f"in place {_ms(lambda: torch.ops.aten.gelu_(inplace)):.1f} ms")
    a, w, b = torch.randn(4096, 256), torch.randn(1024, 256), torch.randn(1024)
    ms = _ms(lambda: torch.nn.functional.linear(a, w, b))
    print(f"linear 4096x256 -> 1024: {ms:.1f} ms = {2 * 4096 * 256 * 1024 / ms / 1e6:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
