"""Timing one call on a device, shared by the measurements (``bench`` on a CPU or GPU, the GPU run of
:mod:`nystra_hub.measure.gpu`).

CUDA runs asynchronously: a call returns when its kernels are queued, not done. So a call is timed between two
synchronisations, and the CPU clock measures the device's work with the launch overhead a user also pays. Arms
are run in rounds whose order rotates by one each round, so drift over a run (clocks, temperature, other load)
hits every arm alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import Tensor


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (a no-op on the CPU, which runs synchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_call(fn: Callable[[Tensor], Tensor], x: Tensor, device: torch.device) -> tuple[Tensor, float]:
    """(output, seconds) of one call ``fn(x)`` under inference mode, ``device`` synchronised before and after."""
    synchronize(device)
    with torch.inference_mode():
        start = time.perf_counter()
        out = fn(x)
        synchronize(device)
        elapsed = time.perf_counter() - start
    return out, elapsed


def rotated(names: list[str], round_index: int) -> list[str]:
    """The order of ``names`` in round ``round_index``: rotated left by one per round (empty stays empty)."""
    if not names:
        return []
    shift = round_index % len(names)
    return names[shift:] + names[:shift]
