"""Precision: which dtype a run uses, and half precision that never returns a non-finite image.

The released SwinIR and Uformer weights give black or NaN images when the whole model is cast to float16
(SwinIR issues #103, #114, #180; spandrel marks both ``supports_half=False``): activations of the residual stream
grow block after block past float16's 65504. Our half-precision runs therefore never cast the weights. They run
the float32 model under ``torch.autocast``, which keeps what overflows in float32 by construction:

- the residual stream: every block adds a half-precision branch to a float32 tensor, so the sum stays float32;
- normalisation and softmax run in float32 (autocast's float32 list); the matrix products that read the residual
  stream read it through a LayerNorm, except a few convolutions (Uformer's down/up-sampling);
- the Nyström kernel and its pseudo-inverse run in float32 (:mod:`nystra_hub.attention.nystrom`).

What is left (a half-precision product overflowing on inputs or weights far outside what training produces) is
caught per call: :func:`run_guarded` checks the output for non-finite values and recomputes that call (one tile,
for tiled restores) in float32 with a warning.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")
HALF_DTYPES = (torch.float16, torch.bfloat16)


class PrecisionFallbackWarning(UserWarning):
    """A half-precision call gave non-finite values and was recomputed in float32."""


def resolve_dtype(name: str | torch.dtype | None, device: torch.device | str) -> torch.dtype:
    """The compute dtype for ``name`` on ``device``.

    ``"auto"`` (or None): bfloat16 on a CUDA device that supports it, float32 everywhere else (on CPU, half
    precision is 7-8x slower than float32 on the machines this project measured)."""
    device = torch.device(device)
    if isinstance(name, torch.dtype):
        if name not in (torch.float32, *HALF_DTYPES):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {name}")
        return name
    if name in (None, "auto"):
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if name not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {DTYPE_NAMES}, got {name!r}")
    return getattr(torch, name)


def autocast(device: torch.device | str, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype`` on ``device``'s type; nothing for float32."""
    device = torch.device(device)
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def run_guarded(fn: Callable[[Tensor], Tensor], x: Tensor, dtype: torch.dtype, what: str = "output") -> Tensor:
    """``fn(x)`` under autocast to ``dtype``, returned in float32.

    ``x`` and the model stay float32. A half-precision result with a NaN or Inf is recomputed in float32 with a
    :class:`PrecisionFallbackWarning`, so a half-precision run never returns a non-finite (black) image."""
    with autocast(x.device, dtype):
        out = fn(x)
    out = out.float()
    if dtype != torch.float32 and not bool(torch.isfinite(out).all()):
        warnings.warn(f"{what}: {dtype} gave non-finite values; recomputed in float32",
                      PrecisionFallbackWarning, stacklevel=2)
        out = fn(x).float()
    return out


__all__ = ["DTYPE_NAMES", "PrecisionFallbackWarning", "autocast", "resolve_dtype", "run_guarded"]
