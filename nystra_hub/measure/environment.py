"""Where and how a measurement ran: the machine, the library versions, the git commit, the command line.

Every measurement JSON (bench, fidelity, the GPU script) records this block, so a number can be traced to the
machine and code that produced it.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

from nystra_hub._version import __version__

REPO_ROOT = Path(__file__).resolve().parents[2]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def environment(device: torch.device) -> dict:
    env = {
        "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
        "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(), "device": str(device),
        "load_average": load_average(),
    }
    if device.type == "cuda":
        env.update(device_name=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(), tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
    else:
        env["device_name"] = env["cpu_model"]
    env["spandrel"] = spandrel_version()
    env["nystra_hub"] = __version__
    env["git_commit"] = git_commit()
    return env


def spandrel_version() -> str | None:
    try:
        import spandrel  # optional: only the comparison arms need it
    except ImportError:
        return None
    return getattr(spandrel, "__version__", "unknown")


def git_commit() -> str | None:
    """HEAD of the repository this package runs from, ``+dirty`` with uncommitted changes; None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True,
                               timeout=10)
        if head.returncode:
            return None
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def argv_after(command: str) -> list[str]:
    """The arguments after ``command`` on this process's command line (what a report records as its command)."""
    argv = sys.argv[1:]
    return argv[argv.index(command) + 1:] if command in argv else argv
