"""Two CPU processes (torchrun, gloo) split a folder: every input handled exactly once, one summary."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
from conftest import GOLDEN, REPO

from nystra_hub.io.images import read_image, write_image


def test_two_cpu_processes_split_the_inputs_exactly_once(tmp_path):
    src, out, logs = tmp_path / "in", tmp_path / "out", tmp_path / "logs"
    rng = np.random.default_rng(0)
    names = [f"img{i}.png" for i in range(7)]
    for i, name in enumerate(names):
        write_image(src / ("sub" if i % 3 == 0 else "") / name, rng.integers(0, 256, (10 + i, 12, 3), np.uint8))
    (src / "zz_broken.png").write_bytes(b"not a png")
    # outputs of an earlier, interrupted run: skipped by whichever process owns them
    write_image(out / "img1.png", np.zeros((4, 4, 3), np.uint8))
    write_image(out / "sub" / "img3.png", np.zeros((4, 4, 3), np.uint8))

    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "nystra_hub.cli", "restore", "--model", str(GOLDEN / "swinir_sr_x2_pixelshuffle"),
           "--device", "cpu", str(src), "-r", "--out", str(out), "--log-dir", str(logs), "--no-progress"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr  # the broken file fails the run

    per_process = {}
    for rank in (0, 1):
        lines = (logs / f"process-{rank}.jsonl").read_text().splitlines()
        per_process[rank] = [json.loads(line) for line in lines]
    done = [{r["input"] for r in per_process[rank]} for rank in (0, 1)]
    assert done[0] and done[1]  # both processes worked
    assert not done[0] & done[1]  # nothing done twice
    inputs = {str(p) for p in src.rglob("*.png")}
    assert done[0] | done[1] == inputs  # nothing lost
    status = {os.path.basename(r["input"]): r["status"] for rows in per_process.values() for r in rows}
    assert status == {**{n: "restored" for n in names}, "img1.png": "skipped", "img3.png": "skipped",
                      "zz_broken.png": "failed"}
    assert read_image(out / "sub" / "img6.png").shape == (32, 24, 3)

    summaries = [line for line in result.stdout.splitlines() if line.startswith("nystra-hub restore:")]
    assert summaries == [summaries[0]] and "8 image(s): 5 restored, 2 skipped (output exists), 1 failed" in \
        summaries[0] and "[2 processes" in summaries[0]  # printed once, by the main process, for both
    assert result.stdout.count("zz_broken.png: ImageReadError") == 1  # gathered failure list


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_machines_split_a_shared_folder_exactly_once(tmp_path):
    """What the README's two-machine command does, with both "machines" on this one: two torchrun launchers, one
    process each, meet at a c10d rendezvous endpoint and split one shared folder."""
    src, out, logs = tmp_path / "in", tmp_path / "out", tmp_path / "logs"
    rng = np.random.default_rng(1)
    names = [f"img{i:02d}.png" for i in range(12)]
    for i, name in enumerate(names):
        write_image(src / name, rng.integers(0, 256, (8 + i % 4, 12, 3), np.uint8))
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    endpoint = f"127.0.0.1:{_free_port()}"
    launchers = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
             "--rdzv_backend", "c10d", "--rdzv_endpoint", endpoint, "--rdzv_id", "nystra-test",
             "-m", "nystra_hub.cli", "restore", "--model", str(GOLDEN / "swinir_sr_x2_pixelshuffle"),
             "--device", "cpu", str(src), "--out", str(out), "--log-dir", str(logs), "--no-progress"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=env)
        for _ in range(2)
    ]
    outputs = [launcher.communicate(timeout=300)[0] for launcher in launchers]
    assert [launcher.returncode for launcher in launchers] == [0, 0], "\n".join(outputs)

    rows = [json.loads(line) for log in sorted(logs.glob("process-*.jsonl")) for line in log.read_text().splitlines()]
    assert len(list(logs.glob("process-*.jsonl"))) == 2
    assert all(log.read_text().strip() for log in logs.glob("process-*.jsonl"))  # both machines worked
    per_input = {}
    for row in rows:
        per_input.setdefault(os.path.basename(row["input"]), []).append(row["status"])
    assert per_input == {name: ["restored"] for name in names}  # each image once, by one of the two
    assert sorted(p.name for p in out.iterdir()) == names  # nothing missing, nothing left over
    summaries = [line for text in outputs for line in text.splitlines() if line.startswith("nystra-hub restore:")]
    assert len(summaries) == 1 and "12 image(s): 12 restored" in summaries[0] and "[2 processes" in summaries[0]
