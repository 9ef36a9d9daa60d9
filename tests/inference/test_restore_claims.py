"""``nystra-hub restore`` runs started separately on the same folder share the work through per-output claims
(lock files next to the outputs), and a crashed run's claims are taken over by the next run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from conftest import GOLDEN, REPO

from nystra_hub.cli import main
from nystra_hub.cli.restore import claim, lock_is_stale, lock_path, release
from nystra_hub.io.images import read_image, write_image

X2 = str(GOLDEN / "swinir_sr_x2_pixelshuffle")

# A restore run whose images each take a moment, started together with its twin: the first image waits until
# both runs are at work (a barrier of files), so that they really run side by side; "crash" makes it hang on
# its first image instead (holding that image's claim) until it is killed.
RUNNER = """
import sys, time
from pathlib import Path
from nystra_hub.cli import restore as restore_cli
from nystra_hub.cli import main

barrier, me, mode = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
real_one = restore_cli._one
def slow_one(model, item, args, progress=None):
    if mode == "crash":
        print("claimed", item.source, flush=True)
        time.sleep(120)
    if not (barrier / me).exists():
        (barrier / me).touch()
        while len(list(barrier.iterdir())) < 2:
            time.sleep(0.01)
    time.sleep(0.3)
    return real_one(model, item, args, progress)
restore_cli._one = slow_one
sys.exit(main(["restore", "--no-progress", *sys.argv[4:]]))
"""


def _inputs(folder: Path, count: int) -> list[str]:
    rng = np.random.default_rng(0)
    for i in range(count):
        write_image(folder / f"img{i}.png", rng.integers(0, 256, (12, 10, 3), np.uint8))
    return sorted(f"img{i}.png" for i in range(count))


def _runner(tmp_path: Path, name: str, mode: str, src: Path, out: Path) -> subprocess.Popen:
    barrier = tmp_path / "barrier"
    barrier.mkdir(exist_ok=True)
    cmd = [sys.executable, "-c", RUNNER, str(barrier), name, mode, "--model", X2, "--device", "cpu", str(src),
           "--out", str(out), "--log-dir", str(tmp_path / f"log-{name}")]
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _log(tmp_path: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / f"log-{name}" / "process-0.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_runs_on_one_folder_restore_every_image_exactly_once(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    names = _inputs(src, 8)
    runs = [_runner(tmp_path, name, "share", src, out) for name in ("a", "b")]
    results = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], results
    restored = [[Path(r["input"]).name for r in _log(tmp_path, name) if r["status"] == "restored"]
                for name in ("a", "b")]
    assert restored[0] and restored[1]  # both runs worked
    assert sorted(restored[0] + restored[1]) == names  # every image exactly once
    assert sorted(p.name for p in out.iterdir()) == names  # no lock or temporary file left
    assert all(read_image(out / name).shape == (24, 20, 3) for name in names)
    assert any("left to another run (claimed)" in stdout for stdout, _ in results)


@pytest.mark.slow
def test_a_crashed_runs_claim_is_taken_over_by_the_next_run(tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    names = _inputs(src, 3)
    crashed = _runner(tmp_path, "crashed", "crash", src, out)
    try:
        line = crashed.stdout.readline()
        assert line.startswith("claimed") and line.strip().endswith("img0.png"), crashed.stderr.read()
        assert lock_path(out / "img0.png").exists()
        os.kill(crashed.pid, signal.SIGKILL)
        crashed.wait(timeout=30)
    finally:
        if crashed.poll() is None:
            crashed.kill()
    assert lock_path(out / "img0.png").exists()  # the claim outlives its process
    assert main(["restore", "--no-progress", "--model", X2, "--device", "cpu", str(src), "--out", str(out)]) == 0
    assert "3 image(s): 3 restored" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == names


def _exited_process() -> tuple[int, float]:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    started = psutil.Process(child.pid).create_time()
    child.wait()
    return child.pid, started


def _write_lock(target: Path, **holder) -> Path:
    lock = lock_path(target)
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"pid": os.getpid(), "started": psutil.Process().create_time(),
                                "host": socket.gethostname(), "claimed": time.time(), **holder}))
    return lock


def test_when_a_claim_counts_as_abandoned(tmp_path):
    target = tmp_path / "out" / "x.png"
    lock = claim(target)
    assert lock == lock_path(target) and json.loads(lock.read_text())["pid"] == os.getpid()
    assert claim(target) is None and not lock_is_stale(lock, 3600)  # held by a live process
    release(lock)
    assert not lock.exists()
    pid, started = _exited_process()
    _write_lock(target, pid=pid, started=started)
    assert lock_is_stale(lock, 3600)  # its process is gone
    _write_lock(target, started=psutil.Process().create_time() - 100)  # our PID, another start time: reused
    assert lock_is_stale(lock, 3600)
    _write_lock(target, host="another-machine")
    assert not lock_is_stale(lock, 3600)
    os.utime(lock, (time.time() - 7200, time.time() - 7200))
    assert lock_is_stale(lock, 3600)  # another machine's claim, older than the timeout
    lock.write_text("{half written")
    assert not lock_is_stale(lock, 3600)
    os.utime(lock, (time.time() - 120, time.time() - 120))
    assert lock_is_stale(lock, 3600)
    taken = claim(target)  # an abandoned claim is taken over
    assert taken == lock and json.loads(lock.read_text())["pid"] == os.getpid()
    _write_lock(target, pid=pid)  # another run's claim now: not ours to release
    release(lock)
    assert lock.exists()
