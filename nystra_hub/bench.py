"""Deprecated: ``nystra_hub.bench`` moved to :mod:`nystra_hub.measure.bench` (the command), with the arms and the
model under test in :mod:`nystra_hub.measure.arms`, the machine description in :mod:`nystra_hub.measure.environment`
and the plots in :mod:`nystra_hub.measure.plots`. This module re-exports their public names for a deprecation
period."""

from __future__ import annotations

import warnings

from .measure.arms import (
    BENCH_DEFAULT,
    FIDELITY_DEFAULT,
    Arm,
    ModelSource,
    forward_fn,
    make_arm_model,
    make_input,
    paper_recipe,
    plan_arms,
    resolve_model,
    select_arms,
    spandrel_model,
    standard_arms,
    sweep_arm,
)
from .measure.bench import (
    CPU_MEMORY_METHOD,
    CUDA_MEMORY_METHOD,
    DEFAULT_SIZES,
    REFERENCE_ARMS,
    SCHEMA_BENCH,
    add_arguments,
    count_flops,
    measure_cpu_memory,
    measure_cuda_memory,
    ratios,
    run,
    run_bench,
    summarise,
)
from .measure.environment import cpu_model, environment
from .measure.plots import plot_bench, save_figure

warnings.warn("nystra_hub.bench is deprecated: use nystra_hub.measure.bench and nystra_hub.measure.arms",
              DeprecationWarning, stacklevel=2)

__all__ = [
    "BENCH_DEFAULT", "CPU_MEMORY_METHOD", "CUDA_MEMORY_METHOD", "DEFAULT_SIZES", "FIDELITY_DEFAULT", "REFERENCE_ARMS",
    "SCHEMA_BENCH", "Arm", "ModelSource", "add_arguments", "count_flops", "cpu_model", "environment", "forward_fn",
    "make_arm_model", "make_input", "measure_cpu_memory", "measure_cuda_memory", "paper_recipe", "plan_arms",
    "plot_bench", "ratios", "resolve_model", "run", "run_bench", "save_figure", "select_arms", "spandrel_model",
    "standard_arms", "summarise", "sweep_arm",
]
