"""Deprecated: ``nystra_hub.calibration`` moved to :mod:`nystra_hub.measure.calibration`. This module re-exports
its public names for a deprecation period (``nystra_hub.calibrate`` is the stable entry point)."""

from __future__ import annotations

import warnings

from .measure.calibration import (
    EXACT_IMPLS,
    Candidate,
    LayerReport,
    add_arguments,
    calibrate,
    default_candidates,
    run,
)

warnings.warn("nystra_hub.calibration is deprecated: use nystra_hub.measure.calibration (or nystra_hub.calibrate)",
              DeprecationWarning, stacklevel=2)

__all__ = ["EXACT_IMPLS", "Candidate", "LayerReport", "add_arguments", "calibrate", "default_candidates", "run"]
