"""Reading and writing images for restoration: 8/16-bit, gray/RGB with or without alpha, atomic writes.

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
"""

from __future__ import annotations

import io
import json
import os
import secrets
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

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
