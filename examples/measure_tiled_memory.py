"""Measure the peak resident memory (RSS) of one large restore on CPU, in a fresh process.

    python examples/measure_tiled_memory.py                       # 2048x2048 SwinIR-S x2, default budget (minutes)
    python examples/measure_tiled_memory.py --size 1024 --budget 512 --threads 2
    python examples/measure_tiled_memory.py --size 256 --budget 128  # seconds: 9 tiles of 120 px

The child process imports nystra_hub, builds the variant with random weights, then runs
``nystra_hub.inference.restore`` on a random uint8 RGB image; it reports ``ru_maxrss`` (peak RSS, which sees torch's
allocations, unlike tracemalloc) before and after the restore, the tile plan and the time. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def child(args) -> dict:
    import numpy as np
    import torch

    import nystra_hub
    from nystra_hub.inference.restore import plan_tiles, restore

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = nystra_hub.build_variant(args.variant, attn_impl=args.attn)
    image = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    plan = plan_tiles(model, args.size, args.size, memory_budget_mb=args.budget)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux -> MiB
    start = time.perf_counter()
    out = restore(model, image, memory_budget_mb=args.budget)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return dict(
        variant=args.variant, attn=args.attn, size=args.size, output_shape=list(out.shape),
        budget_mb=plan.budget_mb, tile=plan.tile, overlap=plan.overlap, tiles=plan.tiles,
        whole_image_estimate_mb=round(plan.estimate_mb), tile_estimate_mb=plan.tile_estimate_mb and round(
            plan.tile_estimate_mb), rss_before_restore_mb=round(before), peak_rss_mb=round(peak),
        threads=torch.get_num_threads(), seconds=round(seconds, 1), torch=torch.__version__,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="swinir-s-x2", help="catalogue variant (random weights)")
    parser.add_argument("--attn", default="softmax", choices=["softmax", "sdpa", "nystra"], help="attention")
    parser.add_argument("--size", type=int, default=2048, help="side of the square input image in pixels")
    parser.add_argument("--budget", type=float, default=None, help="memory_budget_mb (default: restore's default)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return 0
    # a fresh interpreter, so that nothing this process allocated counts
    cmd = [sys.executable, __file__, "--child", "--variant", args.variant, "--attn", args.attn,
           "--size", str(args.size), "--threads", str(args.threads)]
    if args.budget is not None:
        cmd += ["--budget", str(args.budget)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode:
        sys.stderr.write(result.stderr)
        return result.returncode
    print(result.stdout.strip().splitlines()[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
