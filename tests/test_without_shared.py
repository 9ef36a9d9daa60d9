"""A copy of the repository alone (no ../shared): the tests that need the shared material are skipped, saying why;
nothing fails or errors at collection."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO

# modules that mix tests needing ../shared (golden cases, manifests, test images) with tests that do not
MODULES = ["tests/cli/test_convert.py", "tests/io/test_hub.py", "tests/io/test_detect.py", "tests/cli/test_eval.py",
           "tests/models/test_uformer.py", "tests/models/test_dehazeformer.py"]


def test_tests_needing_shared_are_skipped_with_the_reason(tmp_path):
    absent = tmp_path / "no-shared"
    env = {**os.environ, "NYSTRA_HUB_SHARED": str(absent), "NYSTRA_HUB_TESTSETS": str(absent / "testsets")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", *MODULES],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    summary = proc.stdout.strip().splitlines()[-1]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "passed" in summary and "skipped" in summary and "failed" not in summary and "error" not in summary
    skips = [line for line in proc.stdout.splitlines() if line.startswith("SKIPPED")]
    assert skips and all(f"at {absent}, which is absent" in line for line in skips), skips
