"""Reading a reference-model folder (``nystra-hub train-reference`` writes them, see :mod:`.training`).

A folder holds ``model.safetensors`` (official state-dict keys) and ``reference.json`` (architecture, constructor
kwargs, task, degradation, training record). Bench, fidelity and calibrate read them through this module, which
needs neither the training code nor the hub module.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from nystra_hub.io.loading import load
from nystra_hub.measure.data import Task
from nystra_hub.models import RestorationModel

REFERENCE_INFO = "reference.json"
REFERENCE_WEIGHTS = "model.safetensors"


def is_reference_folder(path: str | os.PathLike) -> bool:
    return (Path(path) / REFERENCE_INFO).is_file()


def reference_info(folder: str | os.PathLike) -> dict:
    """The folder's ``reference.json``."""
    return json.loads((Path(folder) / REFERENCE_INFO).read_text())


def load_reference(folder: str | os.PathLike, attn_impl: str = "softmax") -> tuple[RestorationModel, dict]:
    """(model in eval mode with the trained weights loaded strictly, reference.json dict). The folder is also a hub
    folder, so it loads through the one loading path; its configuration must be the one reference.json records."""
    info = reference_info(folder)
    model = load(folder, attn_impl=attn_impl)
    as_json = lambda kwargs: json.dumps(kwargs, sort_keys=True, default=str)  # noqa: E731 - tuples and lists alike
    if model.arch != info["arch"] or as_json(model.official_kwargs) != as_json(info["kwargs"]):
        raise ValueError(f"{folder}: config.json and {REFERENCE_INFO} describe different models")
    return model, info


def recipe_task(info: dict) -> Task:
    """The :class:`Task` a reference.json describes."""
    task = info["degradation"]
    return Task(task["name"], scale=int(task.get("scale", 1)), sigma=float(task.get("sigma", 0.0)),
                protocol=task["protocol"], description=task.get("description", ""))
