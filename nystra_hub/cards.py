"""Deprecated: ``nystra_hub.cards`` moved to :mod:`nystra_hub.measure.cards`. This module re-exports its public
names for a deprecation period."""

from __future__ import annotations

import warnings

from .measure.cards import (
    GPU_ARM_DTYPES,
    LIBRARY_NAME,
    NO_MEASUREMENTS,
    PIPELINE_TAG,
    add_arguments,
    build_custom_card,
    build_model_card,
    card_tags,
    measurements_from_files,
    merge_bench_reports,
    render_gpu,
    render_measurements,
    run,
)

warnings.warn("nystra_hub.cards is deprecated: use nystra_hub.measure.cards", DeprecationWarning, stacklevel=2)

__all__ = [
    "GPU_ARM_DTYPES", "LIBRARY_NAME", "NO_MEASUREMENTS", "PIPELINE_TAG", "add_arguments", "build_custom_card",
    "build_model_card", "card_tags", "measurements_from_files", "merge_bench_reports", "render_gpu",
    "render_measurements", "run",
]
