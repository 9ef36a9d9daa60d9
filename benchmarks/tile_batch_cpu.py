"""Tiles per forward on the CPU: ``python benchmarks/tile_batch_cpu.py``.

Restores one 384² image with SwinIR-S x2 (random seeded weights) in 128-px tiles, 1, 4 or 16 tiles per forward
(``restore(..., tile_batch=N)``), 2 threads, arms interleaved (order reversed every other round), one warm-up round
then 3 timed rounds; prints the medians in seconds. Every arm's output must match the first within 1e-4.
"""

from __future__ import annotations

import statistics
import time

import torch

import nystra_hub

BATCHES = (1, 4, 16)


def main(rounds: int = 4) -> dict[int, float]:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = nystra_hub.build_variant("swinir-s-x2").eval()
    image = torch.rand(3, 384, 384, generator=torch.Generator().manual_seed(0))
    times: dict[int, list[float]] = {b: [] for b in BATCHES}
    first = None
    for rnd in range(rounds):
        for batch in BATCHES if rnd % 2 == 0 else BATCHES[::-1]:
            start = time.perf_counter()
            out = nystra_hub.restore(model, image, tile=128, tile_batch=batch)
            if rnd:  # round 0 warms up
                times[batch].append(time.perf_counter() - start)
            first = out if first is None else first
            assert (out - first).abs().max() < 1e-4
    return {batch: round(statistics.median(t), 3) for batch, t in times.items()}


if __name__ == "__main__":
    print(main())
