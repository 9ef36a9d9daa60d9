"""Reading a reference-model folder (``nystra-hub train-reference`` writes them, see :mod:`.training`).

A folder holds ``model.safetensors`` (official state-dict keys) and ``reference.json`` (architecture, constructor
kwargs, task, degradation, training record). Bench, fidelity and calibrate read them through this module, which
needs neither the training code nor the hub module.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..checkpoints import load_state_dict_strict, read_state_dict
from ..models import RestorationModel, build_model
from .data import Task

REFERENCE_INFO = "reference.json"
REFERENCE_WEIGHTS = "model.safetensors"


def is_reference_folder(path: str | os.PathLike) -> bool:
    return (Path(path) / REFERENCE_INFO).is_file()


def reference_info(folder: str | os.PathLike) -> dict:
    """The folder's ``reference.json``."""
    return json.loads((Path(folder) / REFERENCE_INFO).read_text())


def load_reference(folder: str | os.PathLike, attn_impl: str = "softmax") -> tuple[RestorationModel, dict]:
    """(model in eval mode with the trained weights loaded strictly, reference.json dict)."""
    folder = Path(folder)
    info = reference_info(folder)
    model = build_model(info["arch"], attn_impl=attn_impl, **info["kwargs"])
    load_state_dict_strict(model, read_state_dict(folder / REFERENCE_WEIGHTS), source=str(folder))
    return model.eval(), info


def recipe_task(info: dict) -> Task:
    """The :class:`Task` a reference.json describes."""
    task = info["degradation"]
    return Task(task["name"], scale=int(task.get("scale", 1)), sigma=float(task.get("sigma", 0.0)),
                protocol=task["protocol"], description=task.get("description", ""))
