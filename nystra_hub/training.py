"""Deprecated: ``nystra_hub.training`` moved to :mod:`nystra_hub.measure.training` (recipes, training, the
train-reference command), with the test images and degradations in :mod:`nystra_hub.measure.data` and the
reading of reference folders in :mod:`nystra_hub.measure.references`. This module re-exports their public names
for a deprecation period."""

from __future__ import annotations

import warnings

from .measure.data import (
    DEFAULT_TESTSETS,
    HAZE_AIRLIGHT,
    HAZE_AIRLIGHT_TINT,
    HAZE_BETA,
    HAZE_DEPTH_GRID,
    NOISE_SEED,
    Task,
    bicubic_downscale,
    bicubic_resize,
    gaussian_noise_input,
    heldout_seed,
    list_images,
    load_rgb,
    modcrop,
    synthetic_haze,
    testsets_root,
    to_tensor,
)
from .measure.environment import REPO_ROOT
from .measure.references import load_reference, recipe_task
from .measure.training import (
    ABLATION_THRESHOLDS_DB,
    AMP_MODES,
    DEFAULT_REFERENCE_DIR,
    HELDOUT_SETS,
    OPTIMIZER_NOTE,
    RECIPES,
    TRAIN_SETS,
    PairSampler,
    Recipe,
    TrainRun,
    add_arguments,
    attention_ablations,
    count_parameters,
    evaluate_heldout,
    load_train_state,
    lr_at,
    probe_step_seconds,
    run,
    save_reference,
    save_train_state,
    train,
    write_reference_config,
    write_reference_folder,
)

warnings.warn("nystra_hub.training is deprecated: use nystra_hub.measure.training, nystra_hub.measure.data and "
              "nystra_hub.measure.references", DeprecationWarning, stacklevel=2)

__all__ = [
    "ABLATION_THRESHOLDS_DB", "AMP_MODES", "DEFAULT_REFERENCE_DIR", "DEFAULT_TESTSETS", "HAZE_AIRLIGHT",
    "HAZE_AIRLIGHT_TINT", "HAZE_BETA", "HAZE_DEPTH_GRID", "HELDOUT_SETS", "NOISE_SEED", "OPTIMIZER_NOTE", "RECIPES",
    "REPO_ROOT", "TRAIN_SETS", "PairSampler", "Recipe", "Task", "TrainRun", "add_arguments", "attention_ablations",
    "bicubic_downscale", "bicubic_resize", "count_parameters", "evaluate_heldout", "gaussian_noise_input",
    "heldout_seed", "list_images", "load_reference", "load_rgb", "load_train_state", "lr_at", "modcrop",
    "probe_step_seconds", "recipe_task", "run", "save_reference", "save_train_state", "synthetic_haze",
    "testsets_root", "to_tensor", "train", "write_reference_config", "write_reference_folder",
]
