"""``nystra-hub restore``: files and folders, naming, 16-bit, skip/overwrite, per-image errors, atomic writes."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import GOLDEN

from nystra_hub.cli import main
from nystra_hub.cli import restore as restore_cli
from nystra_hub.cli.restore import _accelerate_cpu_trap, add_arguments, collect_items
from nystra_hub.io import images as imageio
from nystra_hub.io.images import read_image, write_image

X2 = str(GOLDEN / "swinir_sr_x2_pixelshuffle")
GRAY = str(GOLDEN / "swinir_denoise_gray_3conv")
RNG = np.random.default_rng(0)
needs_proc = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux /proc")


def _image(shape, dtype=np.uint8):
    return RNG.integers(0, np.iinfo(dtype).max, shape).astype(dtype)


@pytest.fixture()
def folder(tmp_path):
    src = tmp_path / "in"
    write_image(src / "a.png", _image((12, 10, 3)))
    write_image(src / "b.jpg", _image((9, 11, 3)))
    write_image(src / "sub" / "c.png", _image((10, 10, 4)))
    write_image(src / "sub" / "d16.png", _image((8, 9, 3), np.uint16))
    (src / "notes.txt").write_text("not an image, ignored in folders")
    (src / ".hidden.png").write_bytes(b"hidden files are skipped")
    return src


def run_cli(*args) -> int:
    return main(["restore", "--no-progress", *map(str, args)])


def test_folder_recursive_naming_16bit_and_alpha(folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_cli("--model", X2, folder, "--out", out, "-r") == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["a.png", "b.png", "sub/c.png", "sub/d16.png"]
    assert read_image(out / "a.png").shape == (24, 20, 3)
    assert read_image(out / "sub" / "c.png").shape == (20, 20, 4)  # alpha kept (resized)
    sixteen = read_image(out / "sub" / "d16.png")
    assert sixteen.dtype == np.uint16 and sixteen.shape == (16, 18, 3)
    assert "4 image(s): 4 restored, 0 skipped" in capsys.readouterr().out
    # not recursive: only the top level; single files keep their name
    flat = tmp_path / "flat"
    assert run_cli("--model", X2, folder, folder / "sub" / "c.png", "--out", flat) == 0
    assert sorted(p.name for p in flat.iterdir()) == ["a.png", "b.png", "c.png"]


def test_rerun_skips_finished_outputs_and_overwrite_redoes_them(folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_cli("--model", X2, folder, "--out", out) == 0
    stamp = (out / "a.png").stat().st_mtime_ns
    capsys.readouterr()
    assert run_cli("--model", X2, folder, "--out", out) == 0
    assert "0 restored, 2 skipped" in capsys.readouterr().out
    assert (out / "a.png").stat().st_mtime_ns == stamp
    (out / "b.png").unlink()  # e.g. the run was killed before b
    assert run_cli("--model", X2, folder, "--out", out) == 0
    assert "1 restored, 1 skipped" in capsys.readouterr().out
    assert run_cli("--model", X2, folder, "--out", out, "--overwrite") == 0
    assert "2 restored, 0 skipped" in capsys.readouterr().out


def test_per_image_errors_do_not_stop_the_batch(tmp_path, capsys):
    src = tmp_path / "in"
    write_image(src / "good.png", _image((12, 12)))
    write_image(src / "rgb.png", _image((12, 12, 3)))  # wrong mode for a gray model
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")  # unreadable
    missing = tmp_path / "missing.png"
    out = tmp_path / "out"
    assert run_cli("--model", GRAY, src, missing, "--out", out) == 1
    assert sorted(p.name for p in out.iterdir()) == ["good.png"]
    captured = capsys.readouterr()
    assert "4 image(s): 1 restored, 0 skipped (output exists), 3 failed" in captured.out
    summary = captured.out.split("failed:\n", 1)[1]
    assert "broken.png: ImageReadError" in summary and "not a readable image" in summary
    assert "rgb.png: ValueError: RGB image given to a gray model" in summary
    assert "missing.png: ImageReadError" in summary
    # the conversion the error suggests works
    assert run_cli("--model", GRAY, src / "rgb.png", "--out", out, "--color", "luma") == 0
    assert read_image(out / "rgb.png").shape == (12, 12)


@pytest.mark.skipif(not (GOLDEN / "dehazeformer_tiny_conv").is_dir(), reason="no DehazeFormer golden case")
def test_too_small_image_is_a_per_image_error(tmp_path, capsys):
    pytest.importorskip("nystra_hub.models.dehazeformer")
    write_image(tmp_path / "in" / "tiny.png", _image((12, 12, 3)))
    write_image(tmp_path / "in" / "ok.png", _image((32, 40, 3)))
    out = tmp_path / "out"
    assert run_cli("--model", GOLDEN / "dehazeformer_tiny_conv", tmp_path / "in", "--out", out) == 1
    assert [p.name for p in out.iterdir()] == ["ok.png"]
    assert "tiny.png: ValueError: image is 12x12 but" in capsys.readouterr().out


@needs_proc
def test_failed_write_leaves_no_partial_output(folder, tmp_path, monkeypatch, capsys):
    real_fsync = os.fsync

    def fsync_failing_for_a(fd):  # a.png's bytes are in its temporary file when the disk "fills up"
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".a.png."):
            raise OSError("disk full (simulated)")
        return real_fsync(fd)

    monkeypatch.setattr(imageio.os, "fsync", fsync_failing_for_a)
    out = tmp_path / "out"
    assert run_cli("--model", X2, folder, "--out", out) == 1
    assert sorted(p.name for p in out.iterdir()) == ["b.png"]  # nothing named a.png, no temporary left
    assert "a.png: OSError: disk full (simulated)" in capsys.readouterr().out
    monkeypatch.setattr(imageio.os, "fsync", real_fsync)
    assert run_cli("--model", X2, folder, "--out", out) == 0  # the re-run finishes the job
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]


def test_output_name_collisions_fail_both_inputs(tmp_path, capsys):
    write_image(tmp_path / "in" / "x.png", _image((8, 8, 3)))
    write_image(tmp_path / "in" / "x.bmp", _image((8, 8, 3)))
    assert run_cli("--model", X2, tmp_path / "in", "--out", tmp_path / "out") == 1
    assert "output name collision" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


def test_collect_items_is_sorted_and_skips_the_output_folder(folder):
    out = folder / "restored"
    write_image(out / "a.png", _image((4, 4, 3)))  # earlier outputs inside the input folder
    items = collect_items([str(folder)], str(out), recursive=True)
    assert [os_rel(i.target, out) for i in items] == ["a.png", "b.png", "sub/c.png", "sub/d16.png"]
    assert all("restored" not in i.source for i in items)


def os_rel(path, root):
    return os.path.relpath(path, root).replace(os.sep, "/")


def test_setup_errors_exit_2(tmp_path, folder, capsys):
    assert run_cli("--model", "swinir-x9", folder, "--out", tmp_path / "o") == 2
    assert "unknown variant" in capsys.readouterr().err
    assert run_cli("--model", X2, tmp_path / "empty_dir_that_does_not_exist_yet", "--out", tmp_path / "o") == 1
    (tmp_path / "empty").mkdir()
    assert run_cli("--model", X2, tmp_path / "empty", "--out", tmp_path / "o") == 2
    assert "no input images" in capsys.readouterr().err
    assert run_cli("--model", X2, folder, "--out", tmp_path / "o", "--ext", "xyz") == 2


def test_variant_with_released_weights_and_arch_kwargs(tmp_path, capsys):
    import nystra_hub

    model = nystra_hub.build_variant("swinir-s-x2")
    torch.save({"params": model.state_dict()}, tmp_path / "002_lightweightSR_DIV2K_s64w8_SwinIR-S_x2.pth")
    write_image(tmp_path / "in" / "lr.png", _image((16, 16, 3)))
    out = tmp_path / "out"
    assert run_cli("--model", "swinir-s-x2", "--weights", tmp_path / "002_lightweightSR_DIV2K_s64w8_SwinIR-S_x2.pth",
                   "--attn", "nystra", "--nystra", "landmarks=16", tmp_path / "in", "--out", out) == 0
    assert read_image(out / "lr.png").shape == (32, 32, 3)
    case = json.loads((GOLDEN / "swinir_sr_x2_pixelshuffle" / "case.json").read_text())
    assert run_cli("--arch", "swinir", "--kwargs", json.dumps(case["official_constructor_kwargs"]), "--weights",
                   GOLDEN / "swinir_sr_x2_pixelshuffle" / "checkpoint.pth", tmp_path / "in", "--out",
                   tmp_path / "out2") == 0
    assert read_image(tmp_path / "out2" / "lr.png").shape == (32, 32, 3)


def test_hub_folder_model(tmp_path):
    hub = pytest.importorskip("nystra_hub.io.hub")
    from conftest import load_golden

    model = load_golden("swinir_sr_x2_pixelshuffle")[0]
    folder = hub.save_hub_folder(model, tmp_path / "hub", card=False)
    write_image(tmp_path / "in" / "lr.png", _image((10, 14, 3)))
    assert run_cli("--model", folder, "--attn", "softmax", tmp_path / "in", "--out", tmp_path / "out") == 0
    direct = run_cli("--model", X2, tmp_path / "in", "--out", tmp_path / "ref")
    assert direct == 0
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "lr.png"), read_image(tmp_path / "ref" / "lr.png"))


@needs_proc
def test_accelerate_cpu_trap_is_detected(monkeypatch):
    """``accelerate launch --cpu --num_processes 2`` runs one process: recognised from the parent's command line."""
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "--cpu", "--num_processes", "2"])
    try:
        for _ in range(100):  # until the child has exec'd with its arguments
            if b"--num_processes" in Path(f"/proc/{parent.pid}/cmdline").read_bytes():
                break
            time.sleep(0.05)
        monkeypatch.setattr(os, "getppid", lambda: parent.pid)
        monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
        assert _accelerate_cpu_trap() == 2
        monkeypatch.setenv("ACCELERATE_USE_CPU", "False")
        assert _accelerate_cpu_trap() is None
    finally:
        parent.kill()
        parent.wait()


# -- the output folder is checked before any image is computed -----------------------------------------------------
@pytest.fixture()
def counted_restores(monkeypatch):
    """How many images the run computed (restore calls)."""
    calls = []
    real = restore_cli.restore
    monkeypatch.setattr(restore_cli, "restore", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_out_equal_to_or_holding_an_input_folder_says_so(folder, counted_restores, capsys):
    assert run_cli("--model", X2, folder, "--out", folder) == 2
    assert f"--out {folder} is the input folder" in capsys.readouterr().err  # not "no input images found"
    assert run_cli("--model", X2, folder / "sub", "--out", folder) == 2
    assert "is inside --out" in capsys.readouterr().err
    assert not counted_restores


def test_invalid_or_unwritable_out_fails_before_any_work(folder, tmp_path, counted_restores, monkeypatch, capsys):
    (tmp_path / "a_file").write_text("x")
    assert run_cli("--model", X2, folder, "--out", tmp_path / "a_file") == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert run_cli("--model", X2, folder, "--out", tmp_path / "a_file" / "sub") == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    (tmp_path / "ro").mkdir()

    def read_only(*args, **kwargs):  # what a read-only mount answers (root ignores permission bits)
        raise PermissionError(30, "Read-only file system")

    monkeypatch.setattr(restore_cli.tempfile, "mkstemp", read_only)
    assert run_cli("--model", X2, folder, "--out", tmp_path / "ro") == 2
    assert "ro is not writable (Read-only file system)" in capsys.readouterr().err
    assert not counted_restores
    assert run_cli("--model", X2, folder, "--out", tmp_path / "out", "--suffix", "a/b") == 2
    assert "path separator" in capsys.readouterr().err


# -- naming, threads, progress -------------------------------------------------------------------------------------
def test_suffix_names_the_outputs(folder, tmp_path):
    out = tmp_path / "out"
    assert run_cli("--model", X2, folder, "--out", out, "-r", "--suffix", "_x2") == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["a_x2.png", "b_x2.png", "sub/c_x2.png", "sub/d16_x2.png"]
    assert run_cli("--model", X2, folder / "a.png", "--out", out, "--suffix", "_x2") == 0  # exists: skipped
    assert collect_items([str(folder / "a.png")], str(out), name_suffix="_x2")[0].target == str(out / "a_x2.png")


def test_threads_option_sets_torch_threads(folder, tmp_path, monkeypatch):
    set_to = []
    monkeypatch.setattr(torch, "set_num_threads", set_to.append)
    assert run_cli("--model", X2, folder / "a.png", "--out", tmp_path / "out", "--threads", "1") == 0
    assert set_to == [1]
    assert run_cli("--model", X2, folder / "a.png", "--out", tmp_path / "out", "--threads", "0") == 2


def test_every_option_has_a_help_text():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    missing = [a.dest for a in parser._actions if not a.help]
    assert not missing


def test_one_progress_bar_shows_the_tiles_in_its_postfix(folder, tmp_path, capsys):
    write_image(tmp_path / "big" / "big.png", _image((150, 150, 3)))
    assert main(["restore", "--model", X2, str(tmp_path / "big"), "--out", str(tmp_path / "out"), "--tile", "96",
                 "--tile-overlap", "48"]) == 0
    err = capsys.readouterr().err
    done = re.findall(r"big\.png: tile (\d+)/(\d+)\]", err)
    assert done and done[-1][0] == done[-1][1] and int(done[-1][1]) > 1
    assert "tiles:" not in err  # no second bar


def test_protocol_option_reaches_restore(folder, tmp_path, monkeypatch):
    seen = []
    real = restore_cli.restore
    monkeypatch.setattr(restore_cli, "restore", lambda *a, **k: seen.append(k["protocol"]) or real(*a, **k))
    assert run_cli("--model", X2, folder / "a.png", "--out", tmp_path / "o1") == 0
    assert run_cli("--model", X2, folder / "a.png", "--out", tmp_path / "o2", "--protocol", "official") == 0
    assert seen == ["minimal", "official"]


def test_tile_batch_option_stacks_tiles_and_refuses_non_positive(tmp_path, capsys):
    src = tmp_path / "in"
    write_image(src / "a.png", _image((150, 150, 3)))
    out_one, out_stacked = tmp_path / "one", tmp_path / "stacked"
    assert run_cli("--model", X2, src, "--out", out_one, "--tile", "96", "--tile-overlap", "48") == 0
    assert run_cli("--model", X2, src, "--out", out_stacked, "--tile", "96", "--tile-overlap", "48",
                   "--tile-batch", "6") == 0
    one, stacked = read_image(out_one / "a.png").astype(int), read_image(out_stacked / "a.png").astype(int)
    assert np.abs(one - stacked).max() <= 1  # 8-bit rounding of float sums that differ by ~1e-6
    with pytest.raises(SystemExit):
        run_cli("--model", X2, src, "--out", tmp_path / "o", "--tile-batch", "0")
    assert "expected a positive integer, got 0" in capsys.readouterr().err
