"""``nystra_hub.restore(model, image)``: one call from a PIL image, NumPy array or tensor to the restored image.

What it does, in order:

1. **Input → float.** PIL images, NumPy arrays (``HW`` / ``HWC``) and tensors (``HW`` / ``CHW`` / ``BCHW``) of
   ``uint8`` (÷255), 16-bit (``uint16``, PIL ``I;16``/``I``: ÷65535) or floating point (taken as [0, 1]) become a
   float batch. A PIL image's EXIF orientation is applied first (``ImageOps.exif_transpose``, as ``read_image``
   does), so the image is restored as displayed and the result is upright (the tag is applied, not copied).
   NaN/Inf, empty images, >4 channels, other dtypes, tensors on the meta device and float data far outside
   [0, 1] are refused; float values slightly outside [0, 1] (within [−1, 2], e.g. unclipped noisy images) reach
   the model unchanged with a warning giving their fraction, and the result is clipped to [0, 1]. The conversion
   is :func:`nystra_hub.io.images.to_float_batch`, shared with the image processor and ``nystra-hub eval``.
2. **Channels, explicitly.** Alpha (RGBA, gray+alpha) is split off; the colour channels go through the model.
   ``alpha="resize"`` (default) keeps alpha unchanged for scale-1 models and upsamples it bicubically
   (clamped to [0, 1]) for super-resolution; ``alpha="drop"`` returns the image without it. A gray image given to
   an RGB model is replicated to three channels and the RGB result is turned back into gray with the BT.601 luma
   weights Pillow uses (``gray="replicate"``, default) or refused (``gray="error"``). An RGB image given to a
   gray model is refused (``color="error"``, default) or converted to luma first (``color="luma"``; the result
   is then gray).
3. **The protocol** (``protocol=``, :data:`PROTOCOLS`): padding, range mapping, the model, crop and clamp, under
   ``torch.inference_mode``, on the model's device and in its dtype, with the model in eval mode (its previous
   mode is restored afterwards). ``"official"`` is ``model.official_inference``, each architecture's test script.
   ``"minimal"`` (default) pads to the smallest size the network runs, mirroring the image's borders; it is the
   official protocol for SwinIR (flip padding to the next window multiple) and DehazeFormer (reflect padding to a
   multiple of 4). For Uformer, whose official scripts pad with zeros to a centred square multiple of 128, it is
   :meth:`~nystra_hub.models.uformer.Uformer.minimal_pad`: the smallest square the forward runs (16, 32, 64, then
   multiples of 128 at window 8; the forward needs a square), the image mirrored into it; images under 16 px a
   side are refused. Measured with the reference denoiser on 132 crops of Kodak24, CBSD68, Set5 and Set14 at σ=25
   (``benchmarks/uformer-padding-ref-denoise25-cpu.json``): never worse than the official zeros, +1.4 dB on
   average (per test set: +0.1 to +0.3 dB on whole images, +1.5 to +4.6 dB on 24–56 px crops, which also run a
   4–16x smaller square); repeating the border pixels instead of mirroring them is 0.08 dB worse on average.
4. **Tiles when the image is large** (see :func:`plan_tiles`); results blended with smooth weights.
5. **Back to the caller's type**: PIL → PIL of the same mode for L, LA, RGB, RGBA, I;16, I, F, CMYK and YCbCr
   (palette and 1-bit images come back RGB/RGBA/L, big-endian I;16B as I;16, other modes as RGB), NumPy → same
   dtype and layout, tensor → same dtype, layout and device. Size is ``(H·scale, W·scale)``; channels change only
   through ``alpha="drop"`` or ``color="luma"``.

Memory model (:func:`estimate_activation_mb`). The activation memory of one forward over an ``h×w`` input (after
the protocol's padding) is estimated as::

    bytes ≈ dtype_bytes · Σ_stages (h·w / 4^level) · [ (8 + 2·mlp_ratio) · dim + 4 · heads · window² ]
          + dtype_bytes · h·w · 2 · scale² · out_width

per architecture stage (SwinIR: one stage of ``embed_dim``; Uformer: the nine U stages, decoder stages counted
with their concatenated width; DehazeFormer: its five stages); ``out_width`` is the width of the upsampler's
high-resolution tensors (64 for ``pixelshuffle``/``nearest+conv``, the image channels otherwise). The constants
were fitted on CPU peak-RSS measurements of SwinIR-S/M (softmax attention) and err on the high side (about 1.5–2×
the measured marginal cost), so that the budget is respected rather than exceeded. Tiling is chosen when the
whole image's estimate exceeds ``memory_budget_mb`` (default :data:`DEFAULT_MEMORY_BUDGET_MB` on CPU, half of the
free device memory on CUDA); the tile is then the largest allowed size whose estimate fits the budget, and the
default overlap shrinks to at most half a small tile (:data:`MAX_TILE_REDUNDANCY`: no pixel computed more than
about 4 times).
Measured (``examples/measure_tiled_memory.py``): a 2048×2048 SwinIR-S x2 restore on CPU with the default budget
runs 49 tiles of 336 px and peaks at 2.5 GB RSS for the whole process (0.78 GB of it before the restore: Python,
torch, transformers/timm imports and the model); the whole-image estimate would be 36 GB.

Tiling per architecture:

- **SwinIR**: the official test script's tile mode, with better blending: the whole image is flip-padded once as
  the official protocol does, tiles whose side and overlap are multiples of the window (so every tile's windows
  coincide with the whole image's windows) run through the model, the weighted results are cropped and clamped.
  A single tile covering the image is exactly ``official_inference``.
- **Uformer**: each tile (side a multiple of the model's 128-px padding unit) runs the protocol itself (padding
  to a square, model, crop, clamp).
- **DehazeFormer**: refused. Its RLN layers normalise every feature map with whole-image mean and std, so tiles
  would change the output; large images must be run whole (``tile=0``) or downscaled.

Blending (:func:`_axis_weights`): separable weights per tile. Where two neighbouring tiles overlap (over the
*actual* overlap ``L``, which is larger than the nominal one for the last tile of a row or column), one tile's
weight rises as ``sin²`` while the other's falls as ``cos²`` (they sum to 1), over the middle third of the
overlap: in the outer thirds the tile whose border is near gets (almost) no weight. Elsewhere, and along image
borders, the weight is 1. The blended result is the weighted sum divided by the summed weights. The weights are
continuous, so there are no seams, and pixels near a tile border, which lack context, barely count: on the golden
SwinIR x2 model the largest tiled-vs-whole difference is 0.0011 (tile 128, overlap 48) where the official plain
averaging gives 0.66.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from nystra_hub.inference.backends import Runner, auto_backend, make_runner, route_precision, shared_runner
from nystra_hub.inference.precision import resolve_dtype, run_guarded
from nystra_hub.io.images import from_float_batch, luma, split_alpha, to_float_batch, to_model_channels
from nystra_hub.models.common import RestorationModel, unwrap_model

DEFAULT_MEMORY_BUDGET_MB = 1024
"""Default activation-memory budget (MB) of one forward on CPU; see the module doc."""

PROTOCOLS = ("minimal", "official")
"""How an image is padded to a size the network runs (see the module doc): ``"minimal"`` (default) pads to the
smallest such size, mirroring the image; ``"official"`` is each architecture's test script. They differ for
Uformer only: SwinIR's and DehazeFormer's official padding already mirrors to the next window multiple."""

MAX_TILE_REDUNDANCY = 4
"""With the default overlap, tiles overlap at most half their side, so no pixel is computed more than about this
many times (a tiny memory budget once kept SwinIR's 48-px overlap on 56-px tiles: 15,129 tiles, ~49x the work)."""


# -- the model -----------------------------------------------------------------------------------------------------
def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for p in model.parameters():
        return p.device, p.dtype
    return torch.device("cpu"), torch.float32


# -- memory model --------------------------------------------------------------------------------------------------
def _bytes_per_pixel(model: RestorationModel, dtype_bytes: int) -> float:
    """Estimated activation bytes per input pixel of the (padded) forward."""
    floats = 0.0
    for level, width, heads, window, mlp_ratio in model.activation_stages():
        floats += ((8 + 2 * mlp_ratio) * width + 4 * heads * window * window) / 4**level
    floats += 2 * model.scale**2 * model.high_res_width
    return floats * dtype_bytes


def _protocol(model: RestorationModel, protocol: str) -> tuple[Callable, Callable]:
    """(size function, pad function) of ``protocol`` for ``model`` (see :data:`PROTOCOLS`)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if protocol == "minimal" and hasattr(model, "minimal_pad"):  # Uformer: its official padding is zeros to 128·k
        return model.minimal_size, model.minimal_pad
    return model.official_size, model.official_pad


def _inference(model: RestorationModel, protocol: str, forward: Runner) -> Callable[[Tensor], Tensor]:
    """The whole-image function of ``protocol``: [0, 1] batch → [0, 1] batch of (H·scale, W·scale), the raw
    forward run by ``forward``."""
    _, pad = _protocol(model, protocol)
    if pad == model.official_pad:
        return functools.partial(model.official_inference, forward=forward)
    return functools.partial(_padded_inference, model, pad, forward)


def _padded_inference(model: RestorationModel, pad: Callable, forward: Runner, x: Tensor) -> Tensor:
    """``model.official_inference`` with another padding: pad, forward, crop, clamp."""
    model.check_input(x, model.in_channels, 1)
    h, w = x.shape[-2:]
    padded, (top, left) = pad(x)
    s = model.scale
    out = forward(model.to_model_range(padded))[..., top * s:(top + h) * s, left * s:(left + w) * s]
    return model.from_model_range(out).clamp(0, 1)


def _check_not_meta(x: Tensor, model: RestorationModel) -> None:
    """Tensors on the meta device have shapes but no values: say so instead of failing deep inside."""
    if x.is_meta:
        raise ValueError("the image is a tensor on the meta device (a shape without data); create it on a real "
                         "device (cpu, cuda) first")
    if _model_device_dtype(model)[0].type == "meta":
        raise ValueError("the model's weights are on the meta device (built without data); load its weights first, "
                         "e.g. nystra_hub.load(...) or from_pretrained(...)")


def estimate_activation_mb(model, height: int, width: int, dtype: torch.dtype | None = None,
                           protocol: str = "minimal") -> float:
    """Estimated activation memory (MB) of ``protocol`` on one ``height×width`` image (module doc)."""
    model = unwrap_model(model)
    dtype = dtype or _model_device_dtype(model)[1]
    h, w = _protocol(model, protocol)[0](height, width)
    return h * w * _bytes_per_pixel(model, torch.empty((), dtype=dtype).element_size()) / 2**20


def _tile_mb(model: RestorationModel, tile_h: int, tile_w: int, dtype_bytes: int, protocol: str) -> float:
    """Estimate for one tile (padded by the protocol unless the tiles share the image's padding)."""
    padded = model.spec.tiles_share_padding
    h, w = (tile_h, tile_w) if padded else _protocol(model, protocol)[0](tile_h, tile_w)
    return h * w * _bytes_per_pixel(model, dtype_bytes) / 2**20


def default_memory_budget_mb(device: torch.device | str | None = None) -> float:
    """:data:`DEFAULT_MEMORY_BUDGET_MB` on CPU; half of the currently free memory on a CUDA device."""
    device = torch.device(device or "cpu")
    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        return free / 2**20 / 2
    return float(DEFAULT_MEMORY_BUDGET_MB)


@dataclass(frozen=True)
class TilePlan:
    """How one image will be run. ``tile`` is None for a whole-image run."""

    tile: int | None
    overlap: int
    tiles: int
    estimate_mb: float  # whole image
    tile_estimate_mb: float | None
    budget_mb: float | None
    reason: str
    progress: bool | Callable[[int, int], None] = False  # a bar over the tiles, or progress(done, total)
    batch: int = 1  # tiles stacked into one forward (all tiles of an image have one shape)


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    stride = tile - overlap
    return [*range(0, size - tile, stride), size - tile]


def plan_tiles(
    model, height: int, width: int, *, tile: int | None = None, tile_overlap: int | None = None,
    memory_budget_mb: float | None = None, dtype: torch.dtype | None = None, protocol: str = "minimal",
    tile_batch: int | None = None,
) -> TilePlan:
    """Decide whole-image vs tiled inference for an image of ``height×width`` input pixels.

    ``tile=None``: automatic (tiles only when the whole-image estimate exceeds ``memory_budget_mb``);
    ``tile=0``: never tile (whole image, whatever the estimate); ``tile=N``: tiles of ``N`` input pixels, rounded
    up to the architecture's multiple (the window for SwinIR, 128 px for Uformer). ``tile_overlap`` defaults to
    the architecture's ``spec.tile_overlap`` (rounded up to a window multiple when the tiles share the padded
    image's windows, as SwinIR's do), reduced to half the tile for small tiles (:data:`MAX_TILE_REDUNDANCY`).
    ``tile_batch``: tiles stacked into one forward; None = automatic (:func:`_tile_batch`), N >= 1 = at most N.
    """
    if tile_batch is not None and (isinstance(tile_batch, bool) or not isinstance(tile_batch, int)
                                   or tile_batch < 1):
        raise ValueError(f"tile_batch must be None (automatic) or a positive int, got {tile_batch!r}")
    model = unwrap_model(model)
    device, weights_dtype = _model_device_dtype(model)
    dtype_bytes = torch.empty((), dtype=dtype or weights_dtype).element_size()
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 0):
        raise ValueError(f"tile must be None (automatic), 0 (never tile) or a positive int, got {tile!r}")
    budget = _budget(memory_budget_mb, device)
    whole_mb = estimate_activation_mb(model, height, width, dtype, protocol)
    if tile == 0:
        return TilePlan(None, 0, 1, whole_mb, None, budget, "tiling disabled (tile=0)")
    spec = model.spec
    if spec.tile_overlap is None:
        return _untiled_plan(spec, height, width, tile, whole_mb, budget)
    if tile is None and whole_mb <= budget:
        return TilePlan(None, _overlap(model, tile_overlap), 1, whole_mb, None, budget,
                        f"whole image: estimate {whole_mb:.0f} MB <= budget {budget:.0f} MB")
    multiple = model.official_multiple
    smallest = _smallest_tile(model)
    if tile is None:
        side = math.isqrt(int(budget * 2**20 / _bytes_per_pixel(model, dtype_bytes)))
        room = 2 * multiple if spec.tiles_share_padding else multiple  # for a window of overlap
        chosen = max(side // multiple * multiple, smallest, room)
        why = f"tiled: whole-image estimate {whole_mb:.0f} MB > budget {budget:.0f} MB"
    else:
        chosen = max(math.ceil(tile / multiple) * multiple, multiple)
        if chosen < smallest:
            raise ValueError(f"tile={tile} ({chosen} px after rounding to a multiple of {multiple}) is below this "
                             f"model's smallest tile, {smallest} px: smaller tiles change the output (measured "
                             f"by benchmarks/tile_minimum.py); use tile >= {smallest}, or tile=0 for the whole image")
        why = f"tiled: tile={tile} requested"
    overlap, note = _tile_overlap(model, chosen, tile_overlap)
    if tile is None and tile_overlap is not None:
        chosen = max(chosen, (overlap // multiple + 1) * multiple)  # the asked overlap needs a positive stride
    if chosen <= overlap:
        raise ValueError(f"tile ({chosen} px after rounding to a multiple of {multiple}) must be larger than "
                         f"tile_overlap ({overlap})")
    tile_mb = _tile_mb(model, chosen, chosen, dtype_bytes, protocol)
    if tile is None and tile_mb > budget and memory_budget_mb is None:  # the default budget is not a promise
        note += (f"; the smallest trustworthy tile ({chosen} px, estimated {tile_mb:.0f} MB) is over the default "
                 f"budget and runs anyway (the estimate errs high; memory_budget_mb= makes the budget a limit)")
    elif tile is None and tile_mb > budget:
        raise ValueError(f"memory_budget_mb={budget:g} cannot hold this model's smallest tile ({chosen} px with "
                         f"overlap {overlap}, estimated {tile_mb:.0f} MB; smaller tiles change the output): "
                         f"use memory_budget_mb >= {math.ceil(tile_mb)}, or tile=0 for the whole image")
    # the image the tiles cover: the once-padded image when the tiles share its padding, else the image itself
    cover_h, cover_w = model.official_size(height, width) if spec.tiles_share_padding else (height, width)
    count = len(_starts(cover_h, chosen, overlap)) * len(_starts(cover_w, chosen, overlap))
    if count == 1:
        return TilePlan(None, overlap, 1, whole_mb, None, budget, f"whole image: one {chosen}-px tile covers it")
    tile_mb = _tile_mb(model, min(chosen, cover_h), min(chosen, cover_w), dtype_bytes, protocol)
    batch = _tile_batch(tile_batch, device, budget, tile_mb, count)
    return TilePlan(chosen, overlap, count, whole_mb, tile_mb, budget, why + note, batch=batch)


def _smallest_tile(model) -> int:
    """The smallest tile side, in input pixels, that the architecture declares trustworthy."""
    return (model.spec.min_tile_multiples or 1) * model.official_multiple


def _tile_batch(asked: int | None, device: torch.device, budget: float, tile_mb: float, count: int) -> int:
    """How many tiles one forward stacks: ``asked`` (at most the tile count), or automatically on a GPU as many
    as the memory budget holds (a small tile leaves most of a GPU idle, and each call costs launch overhead), one
    on a CPU, where stacking was measured slower: SwinIR-S x2 on a 384² image in 128-px tiles, 2 threads, took
    11.2 s with one tile per forward, 19.0 s with four and 25.4 s with sixteen (``benchmarks/tile_batch_cpu.py``)."""
    if asked is not None:
        return min(asked, count)
    if device.type != "cuda":
        return 1
    return max(1, min(count, int(budget // max(tile_mb, 1e-6))))


def _budget(memory_budget_mb: float | None, device: torch.device) -> float:
    if memory_budget_mb is None:
        return default_memory_budget_mb(device)
    budget = float(memory_budget_mb)
    if not budget > 0:
        raise ValueError(f"memory_budget_mb must be positive, got {memory_budget_mb!r}")
    return budget


def _untiled_plan(spec, height: int, width: int, tile: int | None, whole_mb: float, budget: float) -> TilePlan:
    """An architecture that must not be tiled: the whole image, or a clear refusal."""
    reason = spec.tiling_refusal
    if tile is not None:
        raise ValueError(f"{reason}; run the whole image with tile=0 (or tile=None)")
    if whole_mb > budget:
        raise ValueError(
            f"{reason}, and the whole {height}x{width} image needs an estimated {whole_mb:.0f} MB of "
            f"activations, over memory_budget_mb={budget:.0f}; raise memory_budget_mb, pass tile=0 to run "
            f"it whole anyway, or downscale the image"
        )
    return TilePlan(None, 0, 1, whole_mb, None, budget, f"whole image ({spec.title} is never tiled)")


def _overlap(model: RestorationModel, tile_overlap: int | None) -> int:
    """The asked overlap, or the architecture's, rounded up to the window grid when tiles share the padding."""
    overlap = model.spec.tile_overlap if tile_overlap is None else tile_overlap
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
        raise ValueError(f"tile_overlap must be a non-negative int, got {tile_overlap!r}")
    if model.spec.tiles_share_padding:  # keep tile starts on the window grid of the padded image
        overlap = math.ceil(overlap / model.official_multiple) * model.official_multiple
    return overlap


def _tile_overlap(model: RestorationModel, tile: int, tile_overlap: int | None) -> tuple[int, str]:
    """(overlap, note for the plan's reason). The default overlap shrinks to half a small tile, so that no pixel
    is computed more than about :data:`MAX_TILE_REDUNDANCY` times; an asked overlap is kept."""
    overlap = _overlap(model, tile_overlap)
    if tile_overlap is not None:
        return overlap, ""
    unit = model.official_multiple if model.spec.tiles_share_padding else 1
    # (tile / stride)² <= MAX_TILE_REDUNDANCY: overlap at most half the tile for 4
    most = int(tile * (1 - 1 / math.sqrt(MAX_TILE_REDUNDANCY))) // unit * unit
    if overlap <= most:
        return overlap, ""
    return most, (f"; overlap {overlap} -> {most} px so that tiles of {tile} px repeat at most "
                  f"{MAX_TILE_REDUNDANCY}x the work")


# -- tiled execution -----------------------------------------------------------------------------------------------
def _axis_weights(size: int, tile: int, starts: list[int], scale: int, device) -> list[Tensor]:
    """1-D blending weights (output pixels) of the tiles starting at ``starts`` along one axis.

    In the zone where tile ``i`` overlaps its predecessor (length ``L``, the *actual* overlap, larger than the
    nominal one for the last tile), tile ``i`` rises and the predecessor falls with the complementary weight,
    ``r(d) = sin²(π/2 · clamp((d + ½ − m)/(L − 2m), 0, 1))`` with a margin ``m = BLEND_MARGIN · L`` in which the
    tile whose border is near gets (almost) no weight. Away from overlaps the weight is 1."""
    weights = []
    for i, start in enumerate(starts):
        length = min(tile, size) * scale
        w = torch.ones(length, device=device)
        d = torch.arange(length, device=device, dtype=torch.float32)
        if i > 0:
            overlap = (starts[i - 1] + tile - start) * scale
            w = w * _rise(d, overlap)
        if i + 1 < len(starts):
            overlap = (start + tile - starts[i + 1]) * scale
            w = w * (1 - _rise(d - (starts[i + 1] - start) * scale, overlap))
        weights.append(w.clamp_(min=1e-6))
    return weights


BLEND_MARGIN = 1 / 3
"""Fraction of each overlap, at either end, in which the tile whose border is near gets almost no weight."""


def _rise(d: Tensor, overlap: int) -> Tensor:
    margin = BLEND_MARGIN * overlap
    span = max(overlap - 2 * margin, 1.0)
    return torch.sin(0.5 * math.pi * ((d + 0.5 - margin) / span).clamp(0, 1)) ** 2


def _blend_tiles(fn: Callable[[Tensor], Tensor], x: Tensor, tile: int, overlap: int, scale: int,
                 progress: bool | Callable[[int, int], None] = False, batch: int = 1) -> Tensor:
    """Run ``fn`` (batch of input tiles → batch of output tiles of ``scale``× the size) over overlapping tiles of
    the (1, C, H, W) batch ``x``, ``batch`` tiles per call (every tile has the same shape), and blend the results
    with separable weights (:func:`_axis_weights`), normalised by their sum. ``progress``: True shows a tqdm bar;
    a callable is called as ``progress(done, total)`` after each call. Returns float32 (1, C', H·s, W·s)."""
    _, _, height, width = x.shape
    th, tw = min(tile, height), min(tile, width)
    ys, xs = _starts(height, tile, overlap), _starts(width, tile, overlap)
    device = x.device
    row_w = _axis_weights(height, tile, ys, scale, device)
    col_w = _axis_weights(width, tile, xs, scale, device)
    # the summed weight is separable too: (Σ_i row_i)(y) · (Σ_j col_j)(x)
    sum_y = torch.zeros(height * scale, device=device)
    sum_x = torch.zeros(width * scale, device=device)
    for y, wgt in zip(ys, row_w):
        sum_y[y * scale:(y + th) * scale] += wgt
    for x0, wgt in zip(xs, col_w):
        sum_x[x0 * scale:(x0 + tw) * scale] += wgt
    out = None
    jobs = [(i, j) for i in range(len(ys)) for j in range(len(xs))]
    groups = [jobs[k:k + batch] for k in range(0, len(jobs), batch)]
    report = progress if callable(progress) else None
    bar = tqdm(total=len(jobs), desc="tiles", leave=False) if progress is True else None
    done = 0
    for group in groups:
        crops = [x[:, :, ys[i]:ys[i] + th, xs[j]:xs[j] + tw] for i, j in group]
        results = fn(torch.cat(crops) if len(crops) > 1 else crops[0]).float()
        if results.shape[0] != len(group) or results.shape[-2:] != (th * scale, tw * scale):
            raise RuntimeError(f"tile output {tuple(results.shape)} is not {len(group)} tile(s) {scale}x the "
                               f"tile {th}x{tw}")
        if out is None:
            out = torch.zeros(1, results.shape[1], height * scale, width * scale, device=device)
        for (i, j), result in zip(group, results):
            y, x0 = ys[i], xs[j]
            out[0, :, y * scale:(y + th) * scale, x0 * scale:(x0 + tw) * scale] += (
                result * (row_w[i][:, None] * col_w[j][None, :]))
        done += len(group)
        if bar is not None:
            bar.update(len(group))
        if report is not None:
            report(done, len(jobs))
    if bar is not None:
        bar.close()
    out.div_(sum_y.view(1, 1, -1, 1))
    out.div_(sum_x.view(1, 1, 1, -1))
    return out


def _run(model: RestorationModel, x: Tensor, plan: TilePlan, compute: Callable, protocol: str,
         forward: Runner) -> Tensor:
    """One (1, C, H, W) image on the model's device → float (1, C', H·s, W·s) in [0, 1]. ``compute`` runs each
    call (the whole image, or one tile) in the chosen precision; each runs ``protocol``'s padding and the raw
    forward through ``forward``."""
    inference = _inference(model, protocol, forward)
    if plan.tile is None:
        return compute(inference, x)
    scale = model.scale
    h, w = x.shape[-2:]
    if not model.spec.tiles_share_padding:
        tiles = functools.partial(compute, inference)
        return _blend_tiles(tiles, x, plan.tile, plan.overlap, scale, plan.progress, plan.batch).clamp_(0, 1)
    padded, (top, left) = model.official_pad(x)
    tiles = functools.partial(compute, lambda t: forward(model.to_model_range(t)))
    out = _blend_tiles(tiles, padded, plan.tile, plan.overlap, scale, plan.progress, plan.batch)
    out = out[:, :, top * scale:(top + h) * scale, left * scale:(left + w) * scale]
    return model.from_model_range(out).clamp_(0, 1)


def _compute_dtype(model: RestorationModel, dtype) -> torch.dtype:
    """The weights' dtype for a model cast to half precision, else ``dtype`` resolved for the model's device."""
    device, weights = _model_device_dtype(model)
    return weights if weights != torch.float32 else resolve_dtype(dtype, device)


def _precision(model: RestorationModel, dtype, backend: str | Runner = "torch"
               ) -> tuple[torch.dtype, Callable]:
    """(the compute dtype, how one call runs in it). A float32 model runs half precision under autocast with the
    non-finite check of :func:`~nystra_hub.inference.precision.run_guarded` per call (per tile); a model whose
    weights were cast to half precision runs as it is."""
    device, weights = _model_device_dtype(model)
    compute = _compute_dtype(model, dtype)
    if weights != torch.float32:
        return compute, lambda fn, t: fn(t)
    own_kernels = backend == "openvino" or getattr(backend, "precision", "float32") != "float32"
    if compute != torch.float32 and device.type == "cpu" and dtype not in (None, "auto") and not own_kernels:
        warnings.warn(f"{compute} on a CPU is usually several times slower than float32 (7-8x measured on this "
                      f"project's machines); pass dtype='auto' for float32", stacklevel=4)
    return compute, lambda fn, t: run_guarded(fn, t, compute, what="restored image or tile")


def _openvino_auto_dtype(model: RestorationModel, dtype, backend: str | Runner):
    """``dtype``, except that "auto" on the OpenVINO route is bfloat16 where the architecture's bfloat16 was measured
    within budget and the CPU has it natively (:func:`~nystra_hub.inference.backends.route_precision`)."""
    device, weights = _model_device_dtype(model)
    name = auto_backend(device) if backend == "auto" else backend
    if dtype in (None, "auto") and name == "openvino" and weights == torch.float32:
        return route_precision("auto", model)
    return dtype


def restore_tensor(
    model, x: Tensor, *, tile: int | None = None, tile_overlap: int | None = None,
    memory_budget_mb: float | None = None, progress: bool | Callable[[int, int], None] = False,
    dtype: str | torch.dtype | None = "auto", protocol: str = "minimal", backend: str | Runner = "torch",
    cache_dir: str | None = None, tile_batch: int | None = None,
) -> Tensor:
    """Float (B, C, H, W) batch in [0, 1] with the model's input channels → float32 (B, C', H·s, W·s) in [0, 1]
    on the model's device. The image-kind and channel handling of :func:`restore` are skipped; ``progress``,
    ``dtype``, ``protocol``, ``backend``, ``cache_dir`` and ``tile_batch`` as in :func:`restore`."""
    model = unwrap_model(model)
    if not isinstance(x, Tensor) or x.dim() != 4 or not torch.is_floating_point(x):
        raise ValueError("restore_tensor expects a float (B, C, H, W) tensor")
    _check_not_meta(x, model)
    device, weights = _model_device_dtype(model)
    dtype = _openvino_auto_dtype(model, dtype, backend)
    compute_dtype, compute = _precision(model, dtype, backend)
    forward = _runner(model, backend, cache_dir, compute_dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            outs = []
            for b in range(x.shape[0]):
                xb = x[b:b + 1].to(device=device, dtype=weights)
                plan = plan_tiles(model, xb.shape[-2], xb.shape[-1], tile=tile, tile_overlap=tile_overlap,
                                  memory_budget_mb=memory_budget_mb, dtype=compute_dtype, protocol=protocol,
                                  tile_batch=tile_batch)
                plan = dataclasses.replace(plan, progress=progress)
                outs.append(_run(model, xb, plan, compute, protocol, forward).float())
            return outs[0] if len(outs) == 1 else torch.cat(outs)
    finally:
        model.train(was_training)


class _ShapeCounter(Runner):
    """Counts the input shapes that reach the raw forward and answers with blank outputs of the right shape: the
    real padding and tiling code run on meta tensors, the network not at all."""

    def __init__(self, model: RestorationModel) -> None:
        super().__init__(model)
        self.calls: Counter[tuple[int, ...]] = Counter()

    def forward(self, x: Tensor) -> Tensor:
        self.calls[tuple(x.shape)] += 1
        scale = self.model.scale
        return x.new_zeros(x.shape[0], self.model.out_channels, x.shape[-2] * scale, x.shape[-1] * scale)


def forward_shapes(model, sizes, *, tile: int | None = None, tile_overlap: int | None = None,
                   memory_budget_mb: float | None = None, dtype: str | torch.dtype | None = "auto",
                   protocol: str = "minimal", tile_batch: int | None = None) -> Counter[tuple[int, ...]]:
    """How many times each input shape reaches the raw forward when :func:`restore` runs images of ``sizes``
    ((height, width) pairs) with these options: whole padded images and tiles. What decides whether exporting a
    shape repays itself (:func:`~nystra_hub.inference.backends.choose_route`)."""
    model = copy.copy(unwrap_model(model))  # shares the modules; only the flag below differs
    model.validate_inputs = False  # a blank meta image has no values to check
    counter = _ShapeCounter(model)
    compute_dtype = _compute_dtype(model, dtype)
    for height, width in sizes:
        plan = plan_tiles(model, height, width, tile=tile, tile_overlap=tile_overlap,
                          memory_budget_mb=memory_budget_mb, dtype=compute_dtype, protocol=protocol,
                          tile_batch=tile_batch)
        blank = torch.empty(1, model.in_channels, height, width, device="meta")
        _run(model, blank, plan, lambda fn, t: fn(t), protocol, counter)
    return counter.calls


def one_shape_tilings(model, sizes, *, tile_overlap: int | None = None, memory_budget_mb: float | None = None,
                      dtype: str | torch.dtype | None = "auto", protocol: str = "minimal",
                      tile_batch: int | None = None, most: int = 12) -> dict[int, Counter[tuple[int, ...]]]:
    """Tile sides with which every image of ``sizes`` runs as tiles of one input shape, each with its forward calls
    (:func:`forward_shapes`): what lets one export serve a folder of mixed sizes. Edge tiles are moved inward, as
    in the official tile mode, so no tile reaches past an image and the output stays that of tiling (no extra
    padding). Sides run from the architecture's smallest trustworthy tile to the smallest image side (padded,
    where the tiles share the padding), in the architecture's multiple, at most ``most`` of them spread evenly,
    within the memory budget; none for an architecture that does not tile or images below the smallest tile."""
    model = unwrap_model(model)
    if model.spec.tile_overlap is None or not sizes:
        return {}
    multiple, smallest = model.official_multiple, _smallest_tile(model)
    covers = [model.official_size(h, w) if model.spec.tiles_share_padding else (h, w) for h, w in sizes]
    largest = min(min(cover) for cover in covers) // multiple * multiple
    sides = list(range(smallest, largest + 1, multiple))
    if len(sides) > most:
        sides = sorted({sides[round(i * (len(sides) - 1) / (most - 1))] for i in range(most)})
    budget = _budget(memory_budget_mb, _model_device_dtype(model)[0])
    dtype_bytes = torch.empty((), dtype=_compute_dtype(model, dtype)).element_size()
    tilings = {}
    for side in sides:
        if _tile_mb(model, side, side, dtype_bytes, protocol) > budget:
            break
        calls = forward_shapes(model, sizes, tile=side, tile_overlap=tile_overlap, memory_budget_mb=memory_budget_mb,
                               dtype=dtype, protocol=protocol, tile_batch=tile_batch)
        if len(calls) == 1:
            tilings[side] = calls
    return tilings


def _runner(model: RestorationModel, backend: str | Runner, cache_dir, compute_dtype: torch.dtype) -> Runner:
    """What runs the raw forward of every call (the image, each tile): ``backend`` by name
    (:func:`~nystra_hub.inference.backends.make_runner`), or a runner made once by the caller and reused across
    images (its compiled graphs and loaded sessions with it)."""
    if isinstance(backend, Runner):
        if backend.model is not model:
            raise ValueError("the runner passed as backend= runs another model")
        return backend
    if backend == "auto":
        backend = auto_backend(next(model.parameters()).device)
    if backend == "torch":
        return make_runner(model, backend)
    if backend == "openvino" and compute_dtype == torch.bfloat16:  # OpenVINO's own bfloat16 kernels
        return shared_runner(model, backend, cache_dir=cache_dir, precision="bfloat16")
    if backend != "cudagraphs" and compute_dtype != torch.float32:
        raise ValueError(f"backend {backend!r} runs float32 only (openvino: bfloat16 too; torch and cudagraphs: "
                         "any dtype); pass dtype='float32' (or 'auto' on a CPU)")
    return shared_runner(model, backend, cache_dir=cache_dir)


# -- the API -------------------------------------------------------------------------------------------------------
def restore(
    model,
    image,
    *,
    tile: int | None = None,
    tile_overlap: int | None = None,
    memory_budget_mb: float | None = None,
    gray: str = "replicate",
    color: str = "error",
    alpha: str = "resize",
    progress: bool | Callable[[int, int], None] = False,
    dtype: str | torch.dtype | None = "auto",
    protocol: str = "minimal",
    backend: str | Runner = "torch",
    cache_dir: str | None = None,
    tile_batch: int | None = None,
):
    """Restore ``image`` with ``model`` using the model's pre/post-processing (``protocol``); see the module doc.

    Args:
        model: a nystra_hub model (``build_model``, ``load_variant``, ``load_pretrained``, transformers
            ``AutoModel``, timm ``create_model``), on any device and dtype.
        image: PIL image, NumPy array ``(H, W)``/``(H, W, C)`` or tensor ``(H, W)``/``(C, H, W)``/``(B, C, H, W)``;
            uint8, uint16 or float in [0, 1]; C = 1, 2 (gray+alpha), 3 or 4 (RGBA). A PIL image's EXIF
            orientation is applied first (the image is restored as displayed); the returned image is upright
            and carries no orientation tag (applied, not copied). Float values outside [0, 1] (up to
            [−1, 2]) reach the model unchanged, with a warning giving their fraction; the result is clipped.
        tile: None = automatic (tiles when the estimate exceeds ``memory_budget_mb``), 0 = never tile, N = tile
            side in input pixels (rounded up to the architecture's multiple).
        tile_overlap: overlap of neighbouring tiles in input pixels (default: the architecture's
            ``spec.tile_overlap``, 48 for SwinIR, 64 for Uformer).
        memory_budget_mb: activation-memory budget of one forward (default :func:`default_memory_budget_mb`).
        gray: gray image into an RGB model: "replicate" (default; result converted back to gray) or "error".
        color: RGB image into a gray model: "error" (default) or "luma" (converted to gray; the result is gray).
        alpha: "resize" (default; kept for scale 1, bicubic-upsampled otherwise) or "drop".
        progress: True shows a tqdm bar over tiles; a callable is called as ``progress(done, total)`` after each
            tile (the CLI shows it in its one bar).
        dtype: compute precision of a float32 model: "auto" (default: bfloat16 on a GPU that supports it, float32
            otherwise), "float32", "bfloat16" or "float16". Half precision runs under autocast with the residual
            stream, norms and softmax in float32 (:mod:`nystra_hub.inference.precision`); a call (the image or one tile)
            that still gives a NaN or Inf is recomputed in float32 with a warning, so no output is ever black.
            A model whose weights were cast to half precision runs in its own dtype.
        protocol: "minimal" (default): pad to the smallest size the network runs, mirroring the image's borders;
            "official": each architecture's test-script padding. They differ for Uformer only (its official
            padding is zeros around the image, to a square multiple of 128): see the module doc.
        backend: what runs the raw forward of the padded image or each tile (:mod:`nystra_hub.inference.backends`):
            "torch" (default, eager), "compile" (torch.compile, compiled per shape), "cudagraphs" (CUDA only:
            the eager model captured once per tile shape and precision, then replayed), "onnxruntime" or
            "openvino" (the exported graph, exported on first use of a shape into ``cache_dir``; float32 on the
            CPU, and for openvino ``dtype="bfloat16"`` runs its bfloat16 kernels: 1.9-2.1x its float32 on an
            AVX-512 BF16 CPU; ``dtype="auto"`` does too where the CPU has them and the architecture's bfloat16 was
            measured within the quality budget, SwinIR and DehazeFormer:
            ``nystra_hub.inference.backends.BFLOAT16_BUDGET``), "auto" (OpenVINO,
            else ONNX Runtime, on a CPU where installed: the fastest routes measured; eager torch on a GPU), or
            a runner from ``make_runner(model, ...)``. A runner made by name is kept for the next calls on the
            same model while its weights and attention settings are unchanged (its graphs stay compiled).
        cache_dir: where the export backends keep their graphs (default ``~/.cache/nystra_hub/exports``).
        tile_batch: tiles stacked into one forward when tiling: None (default) = as many as ``memory_budget_mb``
            holds on a GPU (fewer, larger calls), one on a CPU; N = at most N. The result does not depend on it
            beyond float rounding.

    Returns:
        The restored image, of the same kind as ``image`` (see the module doc), ``scale`` times larger.
    """
    if gray not in ("replicate", "error"):
        raise ValueError(f"gray must be 'replicate' or 'error', got {gray!r}")
    if color not in ("error", "luma"):
        raise ValueError(f"color must be 'error' or 'luma', got {color!r}")
    if alpha not in ("resize", "drop"):
        raise ValueError(f"alpha must be 'resize' or 'drop', got {alpha!r}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    net = unwrap_model(model)
    with torch.inference_mode():
        result, kind = _restore(net, image, dict(tile=tile, tile_overlap=tile_overlap,
                                memory_budget_mb=memory_budget_mb, progress=progress, dtype=dtype,
                                protocol=protocol, backend=backend, cache_dir=cache_dir,
                                tile_batch=tile_batch), gray, color, alpha)
    if isinstance(result, Tensor) and result.is_inference():
        result = result.clone()  # a normal tensor, usable with autograd and in-place ops outside inference mode
    return result


def _restore(net: RestorationModel, image, run_options: dict, gray: str, color: str, alpha: str):
    batch, layout = to_float_batch(image)
    colour, alpha_plane = split_alpha(batch)
    colour, back_to_gray = to_model_channels(colour, net.in_channels, gray=gray, color=color, model=net.arch)
    out = restore_tensor(net, colour, **run_options)
    out = out.cpu() if layout.container != "tensor" else out
    if back_to_gray:
        out = luma(out).clamp_(0, 1)
    if alpha_plane is not None and alpha == "resize":
        if net.scale != 1:
            alpha_plane = F.interpolate(alpha_plane, scale_factor=net.scale, mode="bicubic", align_corners=False)
            alpha_plane = alpha_plane.clamp_(0, 1)
        out = torch.cat([out, alpha_plane.to(out.device)], 1)
    return from_float_batch(out, layout), layout


__all__ = [
    "DEFAULT_MEMORY_BUDGET_MB",
    "MAX_TILE_REDUNDANCY",
    "PROTOCOLS",
    "TilePlan",
    "default_memory_budget_mb",
    "estimate_activation_mb",
    "plan_tiles",
    "restore",
    "restore_tensor",
    "unwrap_model",
]
