"""Reading and writing images for restoration: 8/16-bit, gray/RGB with or without alpha, atomic writes.

Arrays are NumPy, height first: ``(H, W)`` gray, ``(H, W, 2)`` gray + alpha, ``(H, W, 3)`` RGB, ``(H, W, 4)`` RGBA;
dtype ``uint8`` or ``uint16`` as stored in the file (``float32`` for Pillow's ``F`` mode).

- Pillow decodes 16-bit *colour* PNGs to 8 bits, so 16-bit RGB/RGBA/gray+alpha PNGs are read and written by the
  small PNG codec here (non-interlaced; every filter type). 16-bit gray goes through Pillow (``I;16``).
- EXIF orientation is applied on reading (as OpenCV's ``imread`` does), so outputs are upright.
- Palette images become RGB (RGBA when they carry transparency), 1-bit images gray, CMYK/YCbCr/LAB/HSV RGB.
- :func:`write_image` is atomic: the file is encoded in memory, written to a temporary file in the target folder,
  fsynced and renamed over the target (``os.replace``), so a crash or kill never leaves a partial image under the
  final name (at worst a ``.<name>.*.partial`` file next to it).
"""

from __future__ import annotations

import io
import os
import secrets
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm", ".tga")
PARTIAL_SUFFIX = ".partial"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOR_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG colour type -> samples per pixel (palette excluded)
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
def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file into an array (uint8 or uint16 as stored; see module doc)."""
    return read_image_with_meta(path)[0]


def read_image_with_meta(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """(array, meta) where meta may hold ``icc_profile`` (bytes) and always ``bits`` (8 or 16 or 32)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(33)
    except OSError as err:
        raise ImageReadError(f"{path}: cannot open ({err.strerror or err})") from None
    if head.startswith(_PNG_SIGNATURE) and len(head) >= 33:
        depth, color_type = head[24], head[25]
        if depth == 16 and color_type in (2, 4, 6):
            array, meta = _read_png16(path)
            return array, meta
    try:
        with Image.open(path) as image:
            image.load()
            meta = {}
            if image.info.get("icc_profile"):
                meta["icc_profile"] = image.info["icc_profile"]
            image = ImageOps.exif_transpose(image)
            array = pil_to_array(image)
    except ImageReadError as err:
        raise ImageReadError(f"{path}: {err}") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ImageReadError(f"{path}: not a readable image ({err})") from None
    meta["bits"] = 16 if array.dtype == np.uint16 else (32 if array.dtype == np.float32 else 8)
    if array.size == 0:
        raise ImageReadError(f"{path}: empty image {array.shape}")
    return array, meta


def _png_chunks(data: bytes, source: str):
    if not data.startswith(_PNG_SIGNATURE):
        raise ImageReadError(f"{source}: not a PNG file")
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if len(body) != length:
            raise ImageReadError(f"{source}: truncated PNG chunk {kind!r}")
        yield kind, body
        pos += 12 + length
        if kind == b"IEND":
            return
    raise ImageReadError(f"{source}: truncated PNG (no IEND)")


def _read_png16(path: Path) -> tuple[np.ndarray, dict]:
    """16-bit colour PNG (types 2, 4, 6), which Pillow would reduce to 8 bits."""
    data = path.read_bytes()
    header, idat, meta = None, [], {"bits": 16}
    for kind, body in _png_chunks(data, str(path)):
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"iCCP":
            name_end = body.find(b"\x00")
            try:
                meta["icc_profile"] = zlib.decompress(body[name_end + 2:])
            except zlib.error:
                pass
    if header is None:
        raise ImageReadError(f"{path}: PNG without IHDR")
    width, height, depth, color_type, _, _, interlace = header
    if interlace:
        raise ImageReadError(f"{path}: interlaced 16-bit colour PNG is not supported; re-save it non-interlaced")
    channels = _PNG_COLOR_CHANNELS[color_type]
    if width == 0 or height == 0:
        raise ImageReadError(f"{path}: empty image {height}x{width}")
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as err:
        raise ImageReadError(f"{path}: corrupt PNG data ({err})") from None
    bpp = channels * 2
    stride = width * bpp
    if len(raw) < height * (stride + 1):
        raise ImageReadError(f"{path}: truncated PNG data")
    rows = np.frombuffer(raw, np.uint8, count=height * (stride + 1)).reshape(height, stride + 1)
    pixels = _png_unfilter(rows[:, 0], rows[:, 1:], bpp, str(path))
    array = pixels.view(">u2").reshape(height, width, channels).astype(np.uint16)
    return (array[:, :, 0] if channels == 1 else array), meta


def _png_unfilter(filters: np.ndarray, rows: np.ndarray, bpp: int, source: str) -> np.ndarray:
    """Undo PNG row filters. Sub/Up are vectorised; Average/Paeth run per byte (only for 16-bit colour PNGs)."""
    height, stride = rows.shape
    out = np.empty_like(rows)
    prev = np.zeros(stride, np.uint8)
    for y in range(height):
        kind, row = int(filters[y]), rows[y]
        if kind == 0:
            out[y] = row
        elif kind == 1:
            out[y] = row.reshape(-1, bpp).cumsum(axis=0, dtype=np.uint8).reshape(-1)
        elif kind == 2:
            out[y] = row + prev
        elif kind in (3, 4):
            cur = bytearray(row.tobytes())
            up = prev.tobytes()
            if kind == 3:
                for x in range(stride):
                    left = cur[x - bpp] if x >= bpp else 0
                    cur[x] = (cur[x] + ((left + up[x]) >> 1)) & 0xFF
            else:
                for x in range(stride):
                    a = cur[x - bpp] if x >= bpp else 0
                    b = up[x]
                    c = up[x - bpp] if x >= bpp else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
                    cur[x] = (cur[x] + pred) & 0xFF
            out[y] = np.frombuffer(bytes(cur), np.uint8)
        else:
            raise ImageReadError(f"{source}: bad PNG filter type {kind} in row {y}")
        prev = out[y]
    return out


# -- writing -------------------------------------------------------------------------------------------------------
def format_for(path: str | os.PathLike) -> str:
    ext = Path(path).suffix.lower()
    try:
        return _FORMAT_BY_EXT[ext]
    except KeyError:
        raise ValueError(f"unsupported output extension {ext!r}; use one of {sorted(set(_FORMAT_BY_EXT))}") from None


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def encode_png16(array: np.ndarray, icc_profile: bytes | None = None, compress_level: int = 6) -> bytes:
    """A 16-bit PNG (gray, gray+alpha, RGB, RGBA) from a uint16 array; rows use the Up filter."""
    if array.dtype != np.uint16:
        raise ValueError(f"encode_png16 needs uint16 data, got {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    height, width, channels = array.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = np.ascontiguousarray(array).astype(">u2").view(np.uint8).reshape(height, width * channels * 2)
    filtered = np.empty((height, rows.shape[1] + 1), np.uint8)
    filtered[:, 0] = 2  # Up
    filtered[0, 1:] = rows[0]
    filtered[1:, 1:] = rows[1:] - rows[:-1]  # uint8 arithmetic wraps modulo 256, as the filter requires
    parts = [_PNG_SIGNATURE, _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0))]
    if icc_profile:
        parts.append(_png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc_profile)))
    parts.append(_png_chunk(b"IDAT", zlib.compress(filtered.tobytes(), compress_level)))
    parts.append(_png_chunk(b"IEND", b""))
    return b"".join(parts)


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
    import json

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
