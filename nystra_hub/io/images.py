"""Reading and writing images for restoration: 8/16-bit, gray/RGB with or without alpha, atomic writes; the one
conversion of a user's image (PIL, NumPy, tensor) to the float [0, 1] batch models take, and back.

Arrays are NumPy, height first: ``(H, W)`` gray, ``(H, W, 2)`` gray + alpha, ``(H, W, 3)`` RGB, ``(H, W, 4)`` RGBA;
dtype ``uint8`` or ``uint16`` as stored in the file (``float32`` for Pillow's ``F`` mode).

- Pillow decodes 16-bit *colour* PNGs to 8 bits, so 16-bit RGB/RGBA/gray+alpha PNGs are decoded and encoded by
  OpenCV (libpng; ``opencv-python-headless``). OpenCV cannot write gray+alpha: such 16-bit images are written as
  RGBA with the gray value in R, G and B. 16-bit gray is read through Pillow (``I;16``).
- The size is read from the header before any pixel is decoded, and images over ``max_pixels``
  (:data:`MAX_IMAGE_PIXELS` by default) are refused; corrupt or truncated files raise :class:`ImageReadError`
  naming the file.
- EXIF orientation is applied on reading (as OpenCV's ``imread`` does), so outputs are upright.
- Palette images become RGB (RGBA when they carry transparency), 1-bit images gray, CMYK/YCbCr/LAB/HSV RGB.
- :func:`write_image` is atomic: the file is encoded in memory, written to a temporary file in the target folder,
  fsynced and renamed over the target (``os.replace``), so a crash or kill never leaves a partial image under the
  final name (at worst a ``.<name>.*.partial`` file next to it).
- :func:`to_float_batch` is the one converter from a user's image to a ``(B, C, H, W)`` float batch in [0, 1]
  (``nystra_hub.restore``, the transformers image processor, ``nystra-hub eval`` and the measurements' test images
  all go through it); :func:`split_alpha` and :func:`to_model_channels` fit its channels to a model, and
  :func:`from_float_batch` gives a result back in the form the image came in.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import sys
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm", ".tga")
PARTIAL_SUFFIX = ".partial"
MAX_IMAGE_PIXELS = 2**27
"""Default pixel limit of :func:`read_image` (134 million, e.g. 11585x11585), below Pillow's decompression-bomb
error (2 x ``Image.MAX_IMAGE_PIXELS``); 16-bit RGBA at this size is 1 GiB of pixels before any float copy."""
ORIENTATION_TAG = 0x0112  # EXIF orientation
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_HEADER_BYTES = 33  # signature, then the IHDR chunk: length, type, 13 bytes of data, CRC
_PNG16_COLOUR_CHANNELS = {2: 3, 4: 2, 6: 4}  # PNG colour type -> samples per pixel (16-bit colour only)
_FORMAT_BY_EXT = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF",
                  ".webp": "WEBP", ".ppm": "PPM", ".pgm": "PPM", ".pnm": "PPM", ".tga": "TGA"}


class ImageReadError(ValueError):
    """A file that is not a readable image (or one in a form this module refuses)."""


# -- PIL <-> arrays ------------------------------------------------------------------------------------------------
def pil_to_array(image: Image.Image) -> np.ndarray:
    """Pixels of a PIL image as an array (see module doc for layouts); palette/1-bit/CMYK... are converted."""
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode == "PA":
        image = image.convert("RGBA")
    elif mode == "1":
        image = image.convert("L")
    elif mode in ("La",):
        image = image.convert("LA")
    elif mode in ("RGBa",):
        image = image.convert("RGBA")
    elif mode.startswith("I;16"):
        return np.asarray(image).astype(np.uint16, copy=False)
    elif mode == "I":
        arr = np.asarray(image)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ImageReadError(f"32-bit integer image with values outside 0..65535 ({arr.min()}..{arr.max()})")
        return arr.astype(np.uint16)
    elif mode == "F":
        return np.asarray(image, dtype=np.float32)
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        image = image.convert("RGB")
    return np.asarray(image)


def array_to_pil(array: np.ndarray, mode: str | None = None) -> Image.Image:
    """Inverse of :func:`pil_to_array`. ``mode`` picks the PIL mode for ambiguous cases (``I`` for 16-bit data
    that came from an ``I`` image, ``CMYK``/``YCbCr`` to convert RGB back)."""
    array = np.ascontiguousarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.dtype == np.uint16:
        if array.ndim != 2:
            raise ValueError("PIL has no 16-bit colour mode; keep 16-bit colour images as arrays (write_image)")
        if mode == "I":
            return Image.fromarray(array.astype(np.int32), mode="I")
        return Image.fromarray(array)  # I;16
    if array.dtype == np.float32:
        return Image.fromarray(array, mode="F") if array.ndim == 2 else Image.fromarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"cannot make a PIL image from {array.dtype} data")
    image = Image.fromarray(array)
    if mode in ("CMYK", "YCbCr") and image.mode == "RGB":
        image = image.convert(mode)
    return image


# -- images <-> float batches --------------------------------------------------------------------------------------
FLOAT_RANGE = (-1.0, 2.0)
"""Float images with values outside this are refused (with ``check_range``): almost certainly not [0, 1] data
(8-bit values stored as float, say). Values inside it but outside [0, 1] (unclipped noisy images) warn."""
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as Pillow's convert("L")
_INTEGER_MAX = {np.uint8: 255.0, np.uint16: 65535.0, torch.uint8: 255.0, torch.uint16: 65535.0}
_NUMPY_DTYPES = (np.uint8, np.uint16, np.float16, np.float32, np.float64)
_TORCH_DTYPES = (torch.uint8, torch.uint16, torch.float16, torch.bfloat16, torch.float32, torch.float64)
_PIL_MODES_GIVEN_BACK = ("I", "CMYK", "YCbCr")  # modes pil_to_array's array alone would not bring back
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ImageLayout(NamedTuple):  # not a dataclass: the module must load standalone (see the atomic-write kill test)
    """How a caller gave an image, so that a result goes back in the same form (:func:`from_float_batch`)."""

    container: str  # "pil", "numpy", "tensor"
    dtype: object  # NumPy scalar type or torch dtype of the pixels (a PIL image's: of pil_to_array's array)
    ndim: int
    pil_mode: str | None = None  # a PIL image's mode where the array's dtype and channels do not imply it
    device: torch.device | None = None


def to_float_batch(image, *, dtype: torch.dtype = torch.float32, check_range: bool = True,
                   exif_orientation: bool = True) -> tuple[Tensor, ImageLayout]:
    """A user's image as a ``(B, C, H, W)`` float batch in [0, 1], and how it was given.

    Takes a PIL image (any mode, through :func:`pil_to_array`; its EXIF orientation applied unless
    ``exif_orientation=False``), a NumPy array ``(H, W)`` / ``(H, W, C)`` or a tensor ``(H, W)`` / ``(C, H, W)`` /
    ``(B, C, H, W)``, with C = 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA). ``uint8`` is divided by 255,
    ``uint16`` (PIL ``I;16``/``I``) by 65535, float data is taken as [0, 1]. The batch is contiguous, in ``dtype``.

    Refused with a message saying what to do: other types (TypeError), other dtypes (TypeError), other numbers of
    dimensions, other channel counts, an (H, W, C) tensor or a (C, H, W) array, empty images, NaN/Inf, tensors on
    the meta device and, with ``check_range``, float values outside :data:`FLOAT_RANGE`; float values inside it
    but outside [0, 1] pass unchanged with a warning giving their fraction. ``check_range=False`` takes float data
    as it is, for callers whose inputs are unclipped by protocol (the measurements' noisy test images).
    """
    if isinstance(image, Image.Image):
        array = pil_to_array(upright(image) if exif_orientation else image)
        batch, layout = to_float_batch(array, dtype=dtype, check_range=check_range)
        mode = image.mode if image.mode in _PIL_MODES_GIVEN_BACK else None
        return batch, ImageLayout("pil", layout.dtype, layout.ndim, pil_mode=mode)
    if isinstance(image, np.ndarray):
        batch = _numpy_to_batch(image)
        return _to_unit_range(batch, image.dtype.type, dtype, check_range), ImageLayout("numpy", image.dtype.type,
                                                                                         image.ndim)
    if isinstance(image, Tensor):
        batch = _tensor_to_batch(image)
        layout = ImageLayout("tensor", image.dtype, image.dim(), device=image.device)
        return _to_unit_range(batch, image.dtype, dtype, check_range), layout
    raise TypeError(f"an image must be a PIL image, a NumPy array or a torch tensor, got {type(image).__name__}")


def upright(image: Image.Image) -> Image.Image:
    """The image as displayed: its EXIF orientation applied (as :func:`read_image` applies it)."""
    if image.getexif().get(ORIENTATION_TAG, 1) in range(2, 9):
        return ImageOps.exif_transpose(image)
    return image


def _numpy_to_batch(image: np.ndarray) -> Tensor:
    """(H, W) / (H, W, C) array → (1, C, H, W) tensor of its dtype (a view where NumPy allows one)."""
    if image.dtype.type not in _NUMPY_DTYPES:
        raise TypeError(f"unsupported NumPy dtype {image.dtype}; use uint8, uint16 or float in [0, 1]")
    if image.ndim == 2:
        image = image[:, :, None]
    elif image.ndim == 3:
        if image.shape[2] not in (1, 2, 3, 4) and image.shape[0] in (1, 2, 3, 4):
            raise ValueError(f"NumPy images are (H, W) or (H, W, C); shape {image.shape} looks like (C, H, W): "
                             f"pass image.transpose(1, 2, 0)")
        _check_channels(image.shape[2], image.shape)
    else:
        raise ValueError(f"NumPy images must be (H, W) or (H, W, C), got shape {image.shape}")
    array = np.ascontiguousarray(image)
    if not array.flags.writeable:  # torch warns about read-only arrays (np.asarray of a PIL image)
        array = array.copy()
    return torch.from_numpy(array).permute(2, 0, 1)[None]


def _tensor_to_batch(image: Tensor) -> Tensor:
    """(H, W) / (C, H, W) / (B, C, H, W) tensor → (B, C, H, W), detached, of its dtype."""
    if image.dtype not in _TORCH_DTYPES:
        raise TypeError(f"unsupported tensor dtype {image.dtype}; use uint8, uint16 or a float type in [0, 1]")
    if image.is_meta:
        raise ValueError("the image is a tensor on the meta device (a shape without data); create it on a real "
                         "device (cpu, cuda) first")
    if image.dim() == 2:
        batch = image[None, None]
    elif image.dim() == 3:
        if image.shape[0] not in (1, 2, 3, 4) and image.shape[-1] in (1, 2, 3, 4):
            raise ValueError(f"tensors are (C, H, W) or (B, C, H, W); shape {tuple(image.shape)} looks like "
                             f"(H, W, C): pass image.permute(2, 0, 1)")
        batch = image[None]
    elif image.dim() == 4:
        batch = image
    else:
        raise ValueError(f"tensors must be (H, W), (C, H, W) or (B, C, H, W), got shape {tuple(image.shape)}")
    _check_channels(batch.shape[1], image.shape)
    return batch.detach()


def _check_channels(channels: int, shape) -> None:
    if channels not in (1, 2, 3, 4):
        raise ValueError(f"images need 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA) channels; got {channels} "
                         f"(shape {tuple(shape)})")


def _to_unit_range(batch: Tensor, source_dtype, dtype: torch.dtype, check_range: bool) -> Tensor:
    """Integer pixels divided by their maximum; float pixels checked (NaN/Inf always, the range if asked)."""
    if batch.numel() == 0:
        raise ValueError(f"empty image (shape {tuple(batch.shape)})")
    batch = batch.to(dtype, memory_format=torch.contiguous_format)
    top = _INTEGER_MAX.get(source_dtype)
    if top is not None:
        return batch.div_(top)  # a new tensor: the conversion from integers copied
    if not bool(torch.isfinite(batch).all()):
        raise ValueError("image contains NaN or Inf values")
    if check_range:
        _check_float_range(batch)
    return batch


def _check_float_range(batch: Tensor) -> None:
    low, high = float(batch.min()), float(batch.max())
    if low < FLOAT_RANGE[0] or high > FLOAT_RANGE[1]:
        raise ValueError(f"float images must be in [0, 1]; got values in [{low:.3g}, {high:.3g}] "
                         f"(8-bit data as float? divide by 255)")
    if low < 0 or high > 1:
        outside = float(((batch < 0) | (batch > 1)).float().mean())
        warnings.warn(f"{outside:.2%} of the float image's values are outside [0, 1] (range [{low:.3g}, {high:.3g}]); "
                      f"the model gets them unchanged (as test protocols give unclipped noisy images) and the "
                      f"restored image is clipped to [0, 1]", stacklevel=_first_caller_outside_package())


def _first_caller_outside_package() -> int:
    """The ``stacklevel``, for a warning issued by the calling function, of the first frame outside nystra_hub:
    the warning points at the user's line however deep inside the package the image was converted."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR + os.sep):
        frame, level = frame.f_back, level + 1
    return level


def split_alpha(batch: Tensor) -> tuple[Tensor, Tensor | None]:
    """(colour channels, alpha channel or None) of a (B, C, H, W) batch: alpha is the last of 2 or 4 channels."""
    if batch.shape[1] in (2, 4):
        return batch[:, :-1], batch[:, -1:]
    return batch, None


def luma(rgb: Tensor) -> Tensor:
    """(B, 3, H, W) RGB → (B, 1, H, W) with the BT.601 weights (:data:`LUMA`), unrounded."""
    weights = torch.tensor(LUMA, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    return (rgb * weights).sum(1, keepdim=True)


def to_model_channels(colour: Tensor, channels: int, *, gray: str = "replicate", color: str = "error",
                      model: str = "the model") -> tuple[Tensor, bool]:
    """(B, C, H, W) colour channels (alpha split off) → the ``channels`` a model takes, and whether gray was
    replicated to RGB (so that a caller can turn the RGB result back into gray).

    ``gray``: gray into an RGB model, "replicate" or "error"; ``color``: RGB into a gray model, "error" or "luma"
    (:func:`luma`). ``model`` names the model in the messages."""
    given = colour.shape[1]
    if given == channels:
        return colour, False
    if given == 1 and channels == 3:
        if gray == "error":
            raise ValueError(f"gray image given to an RGB model ({model}); convert it to RGB first or pass "
                             f"gray='replicate'")
        return colour.repeat(1, 3, 1, 1), True
    if given == 3 and channels == 1:
        if color == "error":
            raise ValueError(f"RGB image given to a gray model ({model}, 1 input channel); convert it to gray "
                             f"first or pass color='luma' (the result is then gray)")
        return luma(colour), False
    raise ValueError(f"the model takes {channels} channel(s), the image has {given} colour channel(s)")


def from_float_batch(batch: Tensor, layout: ImageLayout):
    """A (B, C, H, W) float batch in [0, 1] → the form ``layout`` describes (integers rounded and clamped; the
    batch may be changed in place). NumPy and PIL results take the first image of the batch."""
    top = _INTEGER_MAX.get(layout.dtype)
    if top is not None:
        batch = batch.mul_(top).round_().clamp_(0, top)
    if layout.container == "tensor":
        out = batch.to(device=layout.device, dtype=layout.dtype)
        return {2: lambda t: t[0, 0], 3: lambda t: t[0], 4: lambda t: t}[layout.ndim](out)
    target = {np.uint8: torch.uint8, np.uint16: torch.uint16}.get(layout.dtype, torch.float32)
    array = np.ascontiguousarray(batch[0].to(target).permute(1, 2, 0).cpu().numpy()).astype(layout.dtype, copy=False)
    if layout.container == "numpy":
        return array[:, :, 0] if layout.ndim == 2 else array
    return array_to_pil(array, layout.pil_mode)


# -- reading -------------------------------------------------------------------------------------------------------
def read_image(path: str | os.PathLike, *, max_pixels: int | None = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read an image file into an array (uint8 or uint16 as stored; see module doc)."""
    return read_image_with_meta(path, max_pixels=max_pixels)[0]


def read_image_with_meta(
    path: str | os.PathLike, *, max_pixels: int | None = MAX_IMAGE_PIXELS
) -> tuple[np.ndarray, dict]:
    """(array, meta) where meta may hold ``icc_profile`` (bytes) and always ``bits`` (8 or 16 or 32).

    The header is read first: a file declaring more than ``max_pixels`` pixels (None: no limit beyond Pillow's
    decompression-bomb check) is refused before any pixel is decoded. Unreadable, corrupt or truncated files raise
    :class:`ImageReadError` naming the file."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(_PNG_HEADER_BYTES)
    except OSError as err:
        raise ImageReadError(f"{path}: cannot open ({err.strerror or err})") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # max_pixels is the limit here
            array, meta = _read_checked(path, head, max_pixels)
    except ImageReadError as err:
        raise ImageReadError(f"{path}: {err}") from None
    except Image.DecompressionBombError as err:
        raise ImageReadError(f"{path}: too large to decode ({err})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as err:
        raise ImageReadError(f"{path}: not a readable image ({err})") from None
    if array.size == 0:
        raise ImageReadError(f"{path}: empty image {array.shape}")
    return array, meta


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of the image as :func:`read_image` returns it (EXIF orientation applied), from the header
    alone: no pixel is decoded. Raises :class:`ImageReadError` naming the file."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
            turned = image.getexif().get(ORIENTATION_TAG, 1) in (5, 6, 7, 8)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
        raise ImageReadError(f"{path}: not a readable image ({err})") from None
    return (width, height) if turned else (height, width)


def _read_checked(path: Path, head: bytes, max_pixels: int | None) -> tuple[np.ndarray, dict]:
    """Check the declared size (a PNG's IHDR, else the header Pillow reads lazily), then decode: 16-bit colour
    PNGs with OpenCV, the rest with Pillow. EXIF orientation is applied either way."""
    png = _png_header(head)
    if png is not None:
        _check_pixels(png[0], png[1], max_pixels)
    with Image.open(path) as image:
        _check_pixels(*image.size, max_pixels)
        meta = {"icc_profile": image.info["icc_profile"]} if image.info.get("icc_profile") else {}
        if png is not None and png[2] == 16 and png[3] in _PNG16_COLOUR_CHANNELS:
            array = _apply_orientation(_decode_png16(path, png[3], (png[1], png[0])),
                                       image.getexif().get(ORIENTATION_TAG, 1))
        else:
            image.load()
            array = pil_to_array(ImageOps.exif_transpose(image))
    meta["bits"] = 16 if array.dtype == np.uint16 else (32 if array.dtype == np.float32 else 8)
    return array, meta


def _check_pixels(width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise ImageReadError(f"{width}x{height} = {width * height} pixels is over the limit of {max_pixels} "
                             f"(max_pixels); refused before decoding")


def _png_header(head: bytes) -> tuple[int, int, int, int] | None:
    """(width, height, bit depth, colour type) from a PNG's IHDR, the first chunk (13 data bytes); None for a
    file that is not a PNG. A PNG whose IHDR is missing or short is left to Pillow, which refuses it."""
    if not head.startswith(_PNG_SIGNATURE) or len(head) < _PNG_HEADER_BYTES or head[12:16] != b"IHDR":
        return None
    if int.from_bytes(head[8:12], "big") != 13:
        return None
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    return width, height, head[24], head[25]


def _decode_png16(path: Path, colour_type: int, size: tuple[int, int]) -> np.ndarray:
    import cv2  # a heavy import (0.15-0.3 s) needed only here and in encode_png16

    try:
        pixels = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as err:
        raise ImageReadError(f"corrupt 16-bit PNG data ({err})") from None
    channels = _PNG16_COLOUR_CHANNELS[colour_type]
    if pixels is None or pixels.dtype != np.uint16 or pixels.shape[:2] != size:
        raise ImageReadError(f"corrupt or truncated 16-bit PNG data (the header declares {size[1]}x{size[0]})")
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise ImageReadError(f"16-bit PNG decoded to an unexpected shape {pixels.shape}")
    if channels == 2:  # OpenCV expands gray+alpha to BGRA with the gray value in B, G and R
        return np.ascontiguousarray(pixels[:, :, [0, 3]])
    return np.ascontiguousarray(pixels[:, :, [2, 1, 0, 3][:channels]])  # BGR(A) -> RGB(A)


def _apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """The EXIF orientation applied to an (H, W[, C]) array exactly as ``ImageOps.exif_transpose`` applies it."""
    if orientation not in range(2, 9):
        return array
    turned = array.swapaxes(0, 1)
    upright = {2: array[:, ::-1], 3: array[::-1, ::-1], 4: array[::-1], 5: turned, 6: turned[:, ::-1],
               7: turned[::-1, ::-1], 8: turned[::-1]}[orientation]
    return np.ascontiguousarray(upright)


# -- writing -------------------------------------------------------------------------------------------------------
def format_for(path: str | os.PathLike) -> str:
    ext = Path(path).suffix.lower()
    try:
        return _FORMAT_BY_EXT[ext]
    except KeyError:
        raise ValueError(f"unsupported output extension {ext!r}; use one of {sorted(set(_FORMAT_BY_EXT))}") from None


def encode_png16(array: np.ndarray, icc_profile: bytes | None = None, compress_level: int = 6) -> bytes:
    """A 16-bit PNG from a uint16 array, encoded by OpenCV (libpng): gray, RGB and RGBA as they are; gray+alpha,
    which OpenCV cannot write, as RGBA with the gray value in R, G and B (the values are kept exactly)."""
    import cv2  # a heavy import (0.15-0.3 s) needed only here and for reading 16-bit colour PNGs

    if array.dtype != np.uint16:
        raise ValueError(f"encode_png16 needs uint16 data, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 3:
        order = {2: [0, 0, 0, 1], 3: [2, 1, 0], 4: [2, 1, 0, 3]}[array.shape[2]]  # RGB(A) -> OpenCV's BGR(A)
        array = array[:, :, order]
    array = np.ascontiguousarray(array)
    params = [cv2.IMWRITE_PNG_COMPRESSION, compress_level]
    if icc_profile:
        try:
            ok, data = cv2.imencodeWithMetadata(".png", array, [cv2.IMAGE_METADATA_ICCP],
                                                [np.frombuffer(icc_profile, np.uint8)], params)
            if ok:
                return data.tobytes()
        except cv2.error:
            pass
        # libpng validates profiles; one it refuses (malformed, from some input file) must not cost the image
        warnings.warn("libpng refused the ICC profile; the 16-bit PNG is written without it", stacklevel=3)
    try:
        ok, data = cv2.imencode(".png", array, params)
    except cv2.error as err:
        raise ValueError(f"OpenCV could not encode a {array.shape} 16-bit PNG: {err}") from None
    if not ok:
        raise ValueError(f"OpenCV could not encode a {array.shape} 16-bit PNG")
    return data.tobytes()


def encode_image(
    array: np.ndarray, fmt: str = "PNG", *, icc_profile: bytes | None = None, quality: int = 95,
    compress_level: int = 6,
) -> bytes:
    """Encode an array (uint8, or uint16 for PNG/TIFF gray) in ``fmt``. 16-bit data is written as 16-bit PNG;
    other formats refuse it rather than silently dropping to 8 bits."""
    fmt = fmt.upper()
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 2, 3, 4)):
        raise ValueError(f"cannot encode an array of shape {array.shape} as an image")
    if array.dtype == np.uint16:
        if fmt == "PNG":
            return encode_png16(array, icc_profile, compress_level)
        if fmt == "TIFF" and (array.ndim == 2 or array.shape[2] == 1):
            buffer = io.BytesIO()
            array_to_pil(array).save(buffer, "TIFF")
            return buffer.getvalue()
        raise ValueError(f"16-bit images can only be written as PNG (or gray TIFF), not {fmt}; use .png")
    if array.dtype != np.uint8:
        raise ValueError(f"can only encode uint8 or uint16 images, got {array.dtype}")
    image = array_to_pil(array)
    if fmt == "JPEG" and image.mode in ("LA", "RGBA"):
        raise ValueError(f"JPEG cannot store an alpha channel ({image.mode}); use .png")
    kwargs: dict = {}
    if icc_profile:
        kwargs["icc_profile"] = icc_profile
    if fmt == "PNG":
        kwargs["compress_level"] = compress_level
    elif fmt in ("JPEG", "WEBP"):
        kwargs["quality"] = quality
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def atomic_write_json(path: str | os.PathLike, obj, indent: int = 2) -> Path:
    """``obj`` as JSON through :func:`atomic_write_bytes` (reports, configs: never left half-written)."""
    return atomic_write_bytes(path, (json.dumps(obj, indent=indent) + "\n").encode())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that ``path`` is either absent/old or complete: temporary file in the same
    folder, fsync, ``os.replace``, fsync of the folder. The temporary file is removed on any error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:  # like mkstemp, but honouring the umask (mkstemp files are 0600)
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}{PARTIAL_SUFFIX}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable; not possible on every platform/filesystem
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
    return path


def write_image(
    path: str | os.PathLike, array: np.ndarray | Image.Image, *, icc_profile: bytes | None = None,
    quality: int = 95, compress_level: int = 6,
) -> Path:
    """Encode ``array`` (or a PIL image) in the format of ``path``'s extension and write it atomically."""
    if isinstance(array, Image.Image):
        array = pil_to_array(array)
    data = encode_image(np.asarray(array), format_for(path), icc_profile=icc_profile, quality=quality,
                        compress_level=compress_level)
    return atomic_write_bytes(path, data)


__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_IMAGE_PIXELS",
    "PARTIAL_SUFFIX",
    "ImageReadError",
    "array_to_pil",
    "atomic_write_bytes",
    "atomic_write_json",
    "encode_image",
    "encode_png16",
    "format_for",
    "pil_to_array",
    "read_image",
    "read_image_with_meta",
    "write_image",
]
