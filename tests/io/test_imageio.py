"""nystra_hub.io.images: 8/16-bit gray/RGB(A) round trips, the 16-bit PNG codec, conversions, atomic writes."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import struct
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nystra_hub.io import images as imageio
from nystra_hub.io.images import ImageReadError, read_image, read_image_size, read_image_with_meta, write_image

RNG = np.random.default_rng(0)


def _random(shape, dtype):
    top = np.iinfo(dtype).max
    return RNG.integers(0, top + 1, shape, dtype=np.int64).astype(dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("shape", [(7, 9), (7, 9, 2), (7, 9, 3), (7, 9, 4)])
def test_png_round_trip_is_exact(tmp_path, dtype, shape):
    array = _random(shape, dtype)
    path = write_image(tmp_path / "x.png", array)
    back = read_image(path)
    if dtype == np.uint16 and shape[-1] == 2:  # OpenCV writes 16-bit gray+alpha as RGBA, gray in R, G and B
        assert back.shape == (*shape[:2], 4)
        back = back[:, :, [0, 3]]
        assert (read_image(path)[:, :, :3] == array[:, :, :1]).all()
    assert back.dtype == dtype and back.shape == shape
    np.testing.assert_array_equal(back, array)


def test_16bit_colour_png_is_a_valid_png_for_other_readers(tmp_path):
    array = _random((5, 6, 3), np.uint16)
    path = write_image(tmp_path / "rgb16.png", array)
    with Image.open(path) as im:  # Pillow reads 16-bit colour as 8-bit: it must at least parse our file
        assert im.size == (6, 5)
        eight = np.asarray(im.convert("RGB"))
    assert np.abs(eight.astype(int) - (array >> 8).astype(int)).max() <= 1


def _filter_row(kind: int, row: bytes, prev: bytes, bpp: int) -> bytes:
    """PNG row filters, written the slow obvious way (the test's independent encoder)."""
    out = bytearray(len(row))
    for x in range(len(row)):
        a = row[x - bpp] if x >= bpp else 0
        b = prev[x]
        c = prev[x - bpp] if x >= bpp else 0
        if kind == 0:
            pred = 0
        elif kind == 1:
            pred = a
        elif kind == 2:
            pred = b
        elif kind == 3:
            pred = (a + b) >> 1
        else:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
        out[x] = (row[x] - pred) & 0xFF
    return bytes(out)


@pytest.mark.parametrize("channels,color_type", [(1, 0), (2, 4), (3, 2), (4, 6)])
def test_16bit_png_decoder_handles_every_filter_type(tmp_path, channels, color_type):
    h, w = 10, 6
    array = _random((h, w, channels), np.uint16)
    raw_rows = array.astype(">u2").view(np.uint8).reshape(h, -1)
    prev = bytes(raw_rows.shape[1])
    body = b""
    for y in range(h):
        kind = y % 5  # None, Sub, Up, Average, Paeth
        row = raw_rows[y].tobytes()
        body += bytes([kind]) + _filter_row(kind, row, prev, channels * 2)
        prev = row

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(body)) + chunk(b"IEND", b""))
    path = tmp_path / "filtered.png"
    path.write_bytes(png)
    decoded, meta = read_image_with_meta(path)
    np.testing.assert_array_equal(decoded, array[:, :, 0] if channels == 1 else array)
    assert meta["bits"] == 16


def test_pillow_modes_are_converted_explicitly(tmp_path):
    palette = Image.fromarray(_random((4, 5), np.uint8)).convert("P")
    assert read_image(_save(palette, tmp_path / "p.png")).shape == (4, 5, 3)
    transparent = Image.new("P", (5, 4))
    transparent.info["transparency"] = 0
    assert read_image(_save(transparent, tmp_path / "pt.png", transparency=0)).shape == (4, 5, 4)
    bilevel = Image.fromarray(_random((4, 5), np.uint8) > 127)
    assert read_image(_save(bilevel, tmp_path / "one.png")).dtype == np.uint8
    gray16 = Image.fromarray(_random((4, 5), np.uint16))
    assert read_image(_save(gray16, tmp_path / "g16.png")).dtype == np.uint16


def _save(image, path, **kwargs):
    image.save(path, **kwargs)
    return path


def test_exif_orientation_is_applied(tmp_path):
    image = Image.fromarray(_random((4, 6, 3), np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    image.save(tmp_path / "rot.png", exif=exif)
    assert read_image(tmp_path / "rot.png").shape == (6, 4, 3)
    assert read_image_size(tmp_path / "rot.png") == (6, 4)  # from the header, as the pixels will be read
    (tmp_path / "garbage.png").write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match="garbage.png"):
        read_image_size(tmp_path / "garbage.png")


def test_unreadable_and_truncated_files_raise_clear_errors(tmp_path):
    (tmp_path / "garbage.png").write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match="garbage.png"):
        read_image(tmp_path / "garbage.png")
    good = write_image(tmp_path / "good16.png", _random((8, 8, 3), np.uint16)).read_bytes()
    (tmp_path / "cut16.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(ImageReadError, match="cut16.png"):
        read_image(tmp_path / "cut16.png")
    with pytest.raises(ImageReadError, match="cannot open"):
        read_image(tmp_path / "missing.png")


def test_formats_refuse_what_they_cannot_store(tmp_path):
    with pytest.raises(ValueError, match="16-bit"):
        write_image(tmp_path / "x.jpg", _random((4, 4, 3), np.uint16))
    with pytest.raises(ValueError, match="alpha"):
        write_image(tmp_path / "x.jpg", _random((4, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="extension"):
        write_image(tmp_path / "x.xyz", _random((4, 4, 3), np.uint8))
    assert not list(tmp_path.iterdir())


def test_icc_profile_survives_16bit_png(tmp_path):
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    path = write_image(tmp_path / "icc.png", _random((3, 3, 3), np.uint16), icc_profile=profile)
    assert read_image_with_meta(path)[1]["icc_profile"] == profile
    # libpng refuses a malformed profile: the image is still written, without it
    with pytest.warns(UserWarning, match="ICC profile"):
        path = write_image(tmp_path / "bad_icc.png", _random((3, 3, 3), np.uint16), icc_profile=b"fake" * 8)
    assert "icc_profile" not in read_image_with_meta(path)[1]


def test_atomic_write_leaves_no_partial_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    write_image(target, _random((4, 4, 3), np.uint8))
    old = target.read_bytes()

    def broken_fsync(fd):  # the data is half on its way to disk when this fails
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(imageio.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="simulated"):
        write_image(target, _random((40, 40, 3), np.uint8))
    with pytest.raises(OSError, match="simulated"):
        write_image(tmp_path / "new.png", _random((40, 40, 3), np.uint8))
    assert target.read_bytes() == old  # the previous complete file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]  # no new file, no temporary left


def test_atomic_write_survives_a_kill(tmp_path):
    """A writer killed (SIGKILL) mid-write leaves no file under the final name."""
    module = Path(imageio.__file__)
    script = f"""
import importlib.util, os, sys, time
spec = importlib.util.spec_from_file_location("imageio_standalone", {str(module)!r})
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
real_fsync = os.fsync
def slow_fsync(fd):
    print("writing", flush=True); time.sleep(60)
mod.os.fsync = slow_fsync
mod.atomic_write_bytes(sys.argv[1], b"x" * 100000)
"""
    target = tmp_path / "killed.png"
    proc = subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(0.05)
    assert not target.exists()
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert all(name.startswith(".killed.png.") and name.endswith(imageio.PARTIAL_SUFFIX) for name in leftovers)


def test_imageio_module_imports_standalone():
    """imageio has no package-relative imports (the kill test loads it alone)."""
    spec = importlib.util.spec_from_file_location("imageio_alone", imageio.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.PARTIAL_SUFFIX == imageio.PARTIAL_SUFFIX


def test_atomic_write_json_keeps_the_old_file_when_serialising_fails(tmp_path):
    from nystra_hub.io.images import atomic_write_json

    path = tmp_path / "report.json"
    atomic_write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    with pytest.raises(TypeError):
        atomic_write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1} and sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


# -- headers first: the pixel limit, malformed headers, EXIF on 16-bit colour PNGs ---------------------------------
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(ihdr: bytes, *chunks: bytes) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + b"".join(chunks) + _chunk(b"IEND", b"")


def test_declared_size_is_refused_before_any_pixel_is_decoded(tmp_path, monkeypatch):
    """A small 16-bit PNG declaring 100000x100000 (the old codec inflated the whole IDAT first: +4 GB for 9 MB)."""
    import tracemalloc

    import cv2

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded before the size check")

    monkeypatch.setattr(cv2, "imdecode", no_decoding)
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 16, 2, 0, 0, 0)
    path = tmp_path / "bomb16.png"
    path.write_bytes(_png(ihdr, _chunk(b"IDAT", zlib.compress(bytes(32 * 2**20), 9))))  # 32 MB inflated
    tracemalloc.start()
    try:
        with pytest.raises(ImageReadError, match=r"bomb16\.png: 100000x100000 = .* over the limit"):
            read_image(path)
        assert tracemalloc.get_traced_memory()[1] < 4 * 2**20
    finally:
        tracemalloc.stop()


def test_pixel_limit_holds_for_every_format(tmp_path):
    image = Image.fromarray(_random((40, 50, 3), np.uint8))
    for name in ("x.jpg", "x.bmp", "x.webp", "x.png", "x.tif"):
        image.save(tmp_path / name)
        with pytest.raises(ImageReadError, match=f"{name}: 50x40 = 2000 pixels is over the limit of 1999"):
            read_image(tmp_path / name, max_pixels=1999)
        assert read_image(tmp_path / name, max_pixels=2000).shape == (40, 50, 3)
    write_image(tmp_path / "x16.png", _random((40, 50, 3), np.uint16))
    with pytest.raises(ImageReadError, match="over the limit"):
        read_image(tmp_path / "x16.png", max_pixels=1999)


def test_malformed_16bit_headers_and_data_name_the_file(tmp_path):
    # an IHDR of 10 bytes declaring 16-bit RGB: the old codec raised struct.error
    short = tmp_path / "short_ihdr.png"
    short.write_bytes(_png(struct.pack(">IIBB", 8, 8, 16, 2), _chunk(b"IDAT", zlib.compress(bytes(100)))))
    with pytest.raises(ImageReadError, match="short_ihdr.png"):
        read_image(short)
    garbage = tmp_path / "garbage16.png"
    garbage.write_bytes(_png(struct.pack(">IIBBBBB", 8, 8, 16, 2, 0, 0, 0), _chunk(b"IDAT", b"not zlib data")))
    with pytest.raises(ImageReadError, match="garbage16.png: corrupt or truncated 16-bit PNG"):
        read_image(garbage)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_of_arrays_is_pillows(orientation):
    from PIL import ImageOps

    array = _random((4, 6, 3), np.uint8)
    image = Image.fromarray(array)
    image.getexif()[imageio.ORIENTATION_TAG] = orientation
    expected = np.asarray(ImageOps.exif_transpose(image))
    np.testing.assert_array_equal(imageio._apply_orientation(array, orientation), expected)


def test_exif_orientation_is_applied_to_16bit_colour_pngs(tmp_path):
    array = _random((4, 6, 3), np.uint16)
    encoded = write_image(tmp_path / "plain.png", array).read_bytes()
    exif = Image.Exif()
    exif[imageio.ORIENTATION_TAG] = 6  # rotate 90° clockwise to display
    rotated = tmp_path / "rot16.png"
    rotated.write_bytes(encoded[:33] + _chunk(b"eXIf", exif.tobytes()[6:]) + encoded[33:])  # after IHDR
    np.testing.assert_array_equal(read_image(rotated), np.rot90(array, -1))


# -- the one converter: a user's image -> float (B, C, H, W) in [0, 1], and back -----------------------------------
def _rgb8() -> np.ndarray:
    return _random((5, 7, 3), np.uint8)


def test_every_form_of_one_image_gives_the_same_batch():
    rgb = _rgb8()
    expected = torch.from_numpy(rgb.astype(np.float32) / 255).permute(2, 0, 1)[None]
    chw = torch.from_numpy(rgb).permute(2, 0, 1)
    forms = {"numpy uint8": rgb, "PIL RGB": Image.fromarray(rgb), "tensor CHW uint8": chw,
             "tensor BCHW float64": chw[None].double() / 255, "numpy uint16": rgb.astype(np.uint16) * 257}
    for name, image in forms.items():
        batch, _ = imageio.to_float_batch(image)
        assert batch.dtype == torch.float32 and batch.is_contiguous(), name
        torch.testing.assert_close(batch, expected, atol=1e-7, rtol=0, msg=name)
    gray, _ = imageio.to_float_batch(rgb[:, :, 0])
    assert gray.shape == (1, 1, 5, 7)


def test_the_batch_is_divided_exactly_in_the_dtype_asked_for():
    """eval scores in float64 and the measurements in float32: each as NumPy divides, bit for bit."""
    levels8, levels16 = np.arange(256, dtype=np.uint8)[None], np.arange(65536, dtype=np.uint16).reshape(256, 256)
    for levels, top in ((levels8, 255.0), (levels16, 65535.0)):
        for dtype, np_dtype in ((torch.float32, np.float32), (torch.float64, np.float64)):
            batch = imageio.to_float_batch(levels, dtype=dtype)[0]
            assert batch.dtype == dtype
            np.testing.assert_array_equal(batch[0, 0].numpy(), levels.astype(np_dtype) / np_dtype(top))


@pytest.mark.parametrize("image", [
    _random((6, 5), np.uint8), _random((6, 5, 2), np.uint16), np.random.default_rng(1).random((6, 5, 4)),
    torch.rand(2, 3, 6, 5, dtype=torch.bfloat16), torch.randint(0, 256, (6, 5), dtype=torch.uint8),
    Image.fromarray(_random((6, 5, 4), np.uint8)), Image.fromarray(_random((6, 5, 3), np.uint8)).convert("CMYK"),
    Image.fromarray(_random((6, 5), np.uint16).astype(np.int32), mode="I"),
], ids=["np-gray8", "np-la16", "np-rgba-f64", "pt-bchw-bf16", "pt-hw-u8", "pil-rgba", "pil-cmyk", "pil-I"])
def test_the_layout_brings_an_unchanged_batch_back_to_the_given_form(image):
    batch, layout = imageio.to_float_batch(image)
    back = imageio.from_float_batch(batch.clone(), layout)
    if isinstance(image, Image.Image):
        assert isinstance(back, Image.Image) and back.mode == image.mode and back.size == image.size
        np.testing.assert_array_equal(np.asarray(back), np.asarray(image))
        return
    assert type(back) is type(image) and back.dtype == image.dtype and back.shape == image.shape
    if isinstance(image, torch.Tensor):
        torch.testing.assert_close(back, image, atol=0, rtol=0)
    else:
        np.testing.assert_allclose(back, image, atol=1e-6, rtol=0)  # float64 went through float32


@pytest.mark.parametrize("image,error,match", [
    (torch.full((3, 8, 8), float("nan")), ValueError, "NaN"),
    (np.full((8, 8, 3), np.inf, np.float32), ValueError, "NaN or Inf"),
    (torch.rand(8), ValueError, r"must be \(H, W\), \(C, H, W\) or \(B, C, H, W\)"),
    (np.zeros((2, 8, 8, 3), np.uint8), ValueError, r"must be \(H, W\) or \(H, W, C\)"),
    (np.zeros((0, 8, 3), np.uint8), ValueError, "empty image"),
    (np.zeros((8, 8, 3), np.int32), TypeError, "unsupported NumPy dtype int32; use uint8, uint16 or float"),
    (torch.zeros(3, 8, 8, dtype=torch.int64), TypeError, "unsupported tensor dtype torch.int64"),
    (np.zeros((8, 8, 5), np.uint8), ValueError,
     r"1 \(gray\), 2 \(gray\+alpha\), 3 \(RGB\) or 4 \(RGBA\) channels; got 5"),
    (torch.zeros(2, 6, 8, 8), ValueError, "got 6"),
    (np.zeros((3, 8, 8), np.uint8), ValueError, r"looks like \(C, H, W\): pass image.transpose\(1, 2, 0\)"),
    (torch.zeros(8, 8, 3), ValueError, r"looks like \(H, W, C\): pass image.permute\(2, 0, 1\)"),
    (torch.empty(3, 8, 8, device="meta"), ValueError, "meta device"),
    (np.full((8, 8, 3), 200.0, np.float32), ValueError, r"must be in \[0, 1\].*divide by 255"),
    ("image.png", TypeError, "PIL image, a NumPy array or a torch tensor, got str"),
])
def test_bad_images_are_refused_saying_what_to_do(image, error, match):
    with pytest.raises(error, match=match):
        imageio.to_float_batch(image)


def test_unchecked_floats_pass_as_they_are_but_never_nan():
    noisy = np.array([[[-1.5, 0.5, 2.5]]], np.float32)  # an unclipped noisy test input, far out
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no range warning either
        batch, _ = imageio.to_float_batch(noisy, check_range=False)
    assert batch.flatten().tolist() == [-1.5, 0.5, 2.5]
    with pytest.raises(ValueError, match="NaN"):
        imageio.to_float_batch(np.full((2, 2), np.nan, np.float32), check_range=False)
    with pytest.warns(UserWarning, match=r"50\.00% of the float image's values are outside \[0, 1\]"):
        imageio.to_float_batch(torch.tensor([[0.5, 1.5]]))


def test_exif_orientation_is_applied_unless_declined(tmp_path):
    image = Image.fromarray(_random((4, 6, 3), np.uint8))
    exif = image.getexif()
    exif[imageio.ORIENTATION_TAG] = 6  # displayed rotated 90° clockwise
    image.save(tmp_path / "turned.png", exif=exif)
    with Image.open(tmp_path / "turned.png") as turned:
        assert imageio.to_float_batch(turned)[0].shape == (1, 3, 6, 4)  # as displayed
        assert imageio.to_float_batch(turned, exif_orientation=False)[0].shape == (1, 3, 4, 6)  # as stored


def test_channels_are_fitted_to_the_model_or_refused():
    rgba = torch.rand(1, 4, 3, 3)
    colour, alpha = imageio.split_alpha(rgba)
    assert colour.shape[1] == 3 and torch.equal(alpha, rgba[:, 3:])
    assert imageio.split_alpha(colour)[1] is None
    gray, replicated = imageio.to_model_channels(colour[:, :1], 3)
    assert replicated and torch.equal(gray, colour[:, :1].repeat(1, 3, 1, 1))
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    luma, replicated = imageio.to_model_channels(colour, 1, color="luma")
    assert not replicated and torch.allclose(luma, (colour * weights).sum(1, keepdim=True))
    assert imageio.to_model_channels(colour, 3)[0] is colour
    with pytest.raises(ValueError, match=r"gray image given to an RGB model \(swinir\)"):
        imageio.to_model_channels(colour[:, :1], 3, gray="error", model="swinir")
    with pytest.raises(ValueError, match="color='luma'"):
        imageio.to_model_channels(colour, 1)
