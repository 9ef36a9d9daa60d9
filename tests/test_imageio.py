"""nystra_hub.imageio: 8/16-bit gray/RGB(A) round trips, the 16-bit PNG codec, conversions, atomic writes."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nystra_hub import imageio
from nystra_hub.imageio import ImageReadError, read_image, read_image_with_meta, write_image

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
    decoded, meta = imageio._read_png16(path)
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
    profile = b"fake icc profile bytes" * 4
    path = write_image(tmp_path / "icc.png", _random((3, 3, 3), np.uint16), icc_profile=profile)
    assert read_image_with_meta(path)[1]["icc_profile"] == profile


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
    from nystra_hub.imageio import atomic_write_json

    path = tmp_path / "report.json"
    atomic_write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    with pytest.raises(TypeError):
        atomic_write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1} and sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
