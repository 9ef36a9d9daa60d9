"""The README's first Python block and every example script run as documented: from the repository root, on a
fresh install, offline (HF_HUB_OFFLINE=1), each in its own process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from PIL import Image

EXAMPLE_IMAGE = REPO / "examples" / "images" / "butterfly_x2_lr.png"
# the interpreter's folder first on PATH: nystra-hub, torchrun and accelerate of this environment
ENV = {**{k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}, "HF_HUB_OFFLINE": "1",
       "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def run(*argv, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{argv}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """A 32×32 crop of the example image, so that each example restores in a second."""
    folder = tmp_path_factory.mktemp("tiny")
    Image.open(EXAMPLE_IMAGE).crop((40, 40, 72, 72)).save(folder / "crop.png")
    return folder


def readme_first_python_block() -> str:
    return re.search(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S).group(1)


def test_readme_first_block_runs_as_written():
    proc = run(sys.executable, "-c", readme_first_python_block())
    assert "(128, 128) -> (256, 256) and (256, 256)" in proc.stdout


@pytest.mark.parametrize("script", ["restore_transformers.py", "restore_timm.py"])
def test_restore_one_image_examples(script, tiny_folder, tmp_path):
    out = tmp_path / "restored.png"
    proc = run(sys.executable, f"examples/{script}", tiny_folder / "crop.png", out)
    assert Image.open(out).size == (64, 64) and "nystra attention" in proc.stdout


def test_restore_examples_default_to_the_shipped_model():
    for script in ("restore_transformers.py", "restore_timm.py"):
        assert "reference_models/swinir-ref-x2" in (REPO / "examples" / script).read_text()


def test_measure_tiled_memory_example():
    proc = run(sys.executable, "examples/measure_tiled_memory.py", "--size", "256", "--budget", "128", "--threads", "1")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["output_shape"] == [512, 512, 3] and result["tiles"] > 1


@pytest.mark.parametrize("mode", ["single", "gpus", "cpu2"])
def test_restore_folder_example(mode, tiny_folder, tmp_path):
    proc = run("bash", "examples/restore_folder.sh", "reference_models/swinir-ref-x2", tiny_folder, tmp_path, mode)
    assert Image.open(tmp_path / "crop.png").size == (64, 64)
    assert "1 restored" in proc.stdout
    if mode == "gpus" and "GPU(s) found" in proc.stderr:  # fewer than two GPUs: one process instead
        assert "running one process" in proc.stderr
