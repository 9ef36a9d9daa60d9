"""Shared fixtures: the read-only golden cases and manifests in ../shared."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GOLDEN = SHARED / "golden"
MANIFESTS = SHARED / "manifests"
TESTSETS = SHARED / "testsets"


def golden_cases(arch: str | None = None) -> list[str]:
    cases = sorted(p.parent.name for p in GOLDEN.glob("*/case.json"))
    if arch is None:
        return cases
    return [c for c in cases if json.loads((GOLDEN / c / "case.json").read_text()).get("arch") == arch]


def load_golden(case: str, attn_impl: str = "softmax"):
    """(model with the golden checkpoint loaded through our loader, io tensors, case dict)."""
    from safetensors.torch import load_file

    import nystra_hub

    info = json.loads((GOLDEN / case / "case.json").read_text())
    model = nystra_hub.build_model(info["arch"], attn_impl=attn_impl, **info["official_constructor_kwargs"])
    nystra_hub.load_original_checkpoint(model, GOLDEN / case / "checkpoint.pth")
    return model.eval(), load_file(str(GOLDEN / case / "io.safetensors")), info


def read_manifest(name: str) -> dict[str, tuple[str, str, str]]:
    rows = {}
    for line in (MANIFESTS / f"{name}.tsv").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, dtype, kind = line.split("\t")
        rows[key] = (shape, dtype, kind)
    return rows


def state_dict_listing(model: torch.nn.Module) -> dict[str, tuple[str, str]]:
    return {k: (str(tuple(v.shape)), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()}


# The test models are tiny: one thread avoids threading overhead and keeps runs stable on shared 2-core machines.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session", autouse=True)
def _require_shared():
    if not GOLDEN.is_dir():
        pytest.exit(f"../shared/golden not found at {GOLDEN}: the tests need the read-only shared material", 3)
