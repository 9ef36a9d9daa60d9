"""Deprecated: ``nystra_hub.fidelity`` moved to :mod:`nystra_hub.measure.fidelity` (the command and the per-layer
diagnostic), with PSNR/SSIM and the evaluation protocols in :mod:`nystra_hub.measure.metrics` and the plot in
:mod:`nystra_hub.measure.plots`. This module re-exports their public names for a deprecation period."""

from __future__ import annotations

import warnings

from .measure.fidelity import (
    CHUNKED,
    SCHEMA_FIDELITY,
    add_arguments,
    layer_errors,
    memory_bounded,
    run,
    run_fidelity,
    task_for,
)
from .measure.metrics import (
    PROTOCOLS,
    Y_WEIGHTS,
    Protocol,
    crop_border,
    gaussian_window,
    psnr,
    quantise,
    rgb_to_y,
    score,
    ssim,
)
from .measure.plots import plot_fidelity

warnings.warn("nystra_hub.fidelity is deprecated: use nystra_hub.measure.fidelity and nystra_hub.measure.metrics",
              DeprecationWarning, stacklevel=2)

__all__ = [
    "CHUNKED", "PROTOCOLS", "SCHEMA_FIDELITY", "Y_WEIGHTS", "Protocol", "add_arguments", "crop_border",
    "gaussian_window", "layer_errors", "memory_bounded", "plot_fidelity", "psnr", "quantise", "rgb_to_y", "run",
    "run_fidelity", "score", "ssim", "task_for",
]
