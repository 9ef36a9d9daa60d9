"""Where the measurement commands (``bench``, ``fidelity``) write their JSON reports unless told."""

from __future__ import annotations

from pathlib import Path


def default_output(stem: str) -> Path:
    """``benchmarks/<stem>.json`` where that folder exists (a repository checkout), else ``<stem>.json`` here."""
    folder = Path("benchmarks")
    return folder / f"{stem}.json" if folder.is_dir() else Path(f"{stem}.json")
