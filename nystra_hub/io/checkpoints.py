"""Strict loading of released checkpoints (.pth as published, or .safetensors conversions of them).

Containers understood: ``{'params_ema': ..., 'params': ...}`` (SwinIR GAN/real-SR; params_ema wins, as in the
official test script and spandrel), ``{'params': ...}``, ``{'state_dict': ...}`` (Uformer, DehazeFormer) with or
without ``module.`` prefixes, and a bare state dict. Nothing is ever loaded with ``strict=False`` and nothing is
filtered by shape: any missing, unexpected or mis-shaped key raises :class:`CheckpointMismatchError` naming them.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from nystra_hub.errors import CheckpointError, CheckpointMismatchError

CONTAINER_KEYS = ("params_ema", "params", "state_dict", "model")


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a .pth/.pt/.ckpt or .safetensors file and unwrap it to a flat state dict with official keys."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            raw = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"cannot read {path} as safetensors: {err}") from err
    else:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError, ValueError) as err:
            raise CheckpointError(f"cannot read {path} as a PyTorch checkpoint: {err}") from err
    return unwrap_state_dict(raw, source=str(path))


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file, read in 16 MiB chunks (checkpoints reach gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def unwrap_state_dict(raw: object, source: str = "checkpoint") -> dict[str, Tensor]:
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{source}: expected a dict of tensors, got {type(raw).__name__}")
    state = raw
    for key in CONTAINER_KEYS:
        if key in raw and isinstance(raw[key], Mapping):
            state = raw[key]
            break
    bad = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(
            f"{source}: not a state dict (non-tensor entries {bad[:5]}); containers understood: {CONTAINER_KEYS}"
        )
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def check_state_dict(model: nn.Module, state: Mapping[str, Tensor], source: str = "checkpoint") -> None:
    """Raise unless ``state`` has exactly the model's keys and shapes and only finite values."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(
        (k, tuple(state[k].shape), tuple(own[k].shape)) for k in set(own) & set(state)
        if state[k].shape != own[k].shape
    )
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(source, missing, unexpected, mismatched)
    check_dtypes(own, state, source)
    non_finite = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if non_finite:
        raise CheckpointError(f"{source}: non-finite values (NaN/Inf) in {non_finite[:8]}")


def check_dtypes(own: Mapping[str, Tensor], state: Mapping[str, Tensor | torch.dtype],
                 source: str = "checkpoint") -> None:
    """Raise when the checkpoint stores integer or bool tensors where the model has floating-point ones (copying
    would silently turn weights into whole numbers, or load a file that is not these weights at all). Another
    floating-point dtype (float16, bfloat16, float64) is fine: loading casts it. ``state`` maps keys to tensors or
    to their dtypes (:func:`read_safetensors_dtypes`)."""
    dtypes = {key: value if isinstance(value, torch.dtype) else value.dtype for key, value in state.items()}
    wrong = sorted(
        f"{key} ({dtypes[key]} where the model has {own[key].dtype})" for key in own
        if key in dtypes and own[key].is_floating_point()
        and not (dtypes[key].is_floating_point or dtypes[key].is_complex)
    )
    if wrong:
        shown = ", ".join(wrong[:8]) + (f", ... ({len(wrong) - 8} more)" if len(wrong) > 8 else "")
        raise CheckpointError(f"{source}: integer or bool tensors for floating-point weights: {shown}")


SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "C64": torch.complex64,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_safetensors_dtypes(path: str | os.PathLike) -> dict[str, torch.dtype]:
    """Each tensor's dtype as stored in a ``.safetensors`` file, read from its header alone (8-byte length, then
    JSON), for loaders that cast while loading (transformers' ``from_pretrained``)."""
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        if not 2 <= length <= 100 * 2**20:
            raise CheckpointError(f"{path}: not a safetensors file (header length {length})")
        header = json.loads(f.read(length))
    dtypes = {}
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        if entry.get("dtype") not in SAFETENSORS_DTYPES:
            raise CheckpointError(f"{path}: tensor {key} has dtype {entry.get('dtype')!r}, not one torch loads")
        dtypes[key] = SAFETENSORS_DTYPES[entry["dtype"]]
    return dtypes


def load_state_dict_strict(model: nn.Module, state: Mapping[str, Tensor], source: str = "checkpoint") -> nn.Module:
    """Load ``state`` into ``model`` strictly: exactly the model's keys and shapes, finite values, floating-point
    tensors for floating-point weights (:func:`check_dtypes`). Float16/bfloat16/float64 checkpoints load: their
    tensors are cast to the model's dtype on copy (a half-precision checkpoint's values are kept exactly in a
    float32 model)."""
    state = dict(state)
    adapt = getattr(model, "adapt_state_dict", None)
    if adapt is not None:
        state = adapt(state)
    check_state_dict(model, state, source)
    model.load_state_dict(state, strict=True)
    return model


def load_original_checkpoint(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a released checkpoint (any container above, .pth or .safetensors) into ``model`` strictly (see
    :func:`load_state_dict_strict`: float16/bfloat16 checkpoints are cast to the model's dtype, integer or bool
    tensors for floating-point weights are refused)."""
    return load_state_dict_strict(model, read_state_dict(path), source=str(path))
