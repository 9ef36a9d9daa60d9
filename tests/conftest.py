"""Shared fixtures: the read-only golden cases, manifests and test images in ../shared.

Without ../shared (a copy of the repository alone), every test that reads it is skipped, saying why, and the others
run: :func:`pytest_collection_modifyitems` finds those tests by reading each test module (see
:func:`shared_users`); :func:`pytest_runtest_makereport` catches the few that reach it through the package's own
default paths. ``NYSTRA_HUB_SHARED=/nowhere NYSTRA_HUB_TESTSETS=/nowhere/testsets`` simulates the absence.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import nystra_hub

REPO = Path(__file__).resolve().parents[1]
# The read-only material next to the repository (NYSTRA_HUB_SHARED points elsewhere, e.g. to test its absence)
# The CLI's default route exports a graph on first use of a shape (tens of seconds); the tests of the CLI's other
# behaviour run eager torch, and the route's own tests (test_route.py) clear this.
os.environ.setdefault("NYSTRA_HUB_BACKEND", "torch")
SHARED = Path(os.environ.get("NYSTRA_HUB_SHARED") or REPO.parent / "shared")
GOLDEN = SHARED / "golden"
MANIFESTS = SHARED / "manifests"
TESTSETS = SHARED / "testsets"
SHARED_MISSING = (f"needs the read-only shared material (golden cases, manifests, test images) at {SHARED}, which "
                  "is absent; see ../shared/README.md of a project checkout")
requires_shared = pytest.mark.skipif(not GOLDEN.is_dir(), reason=SHARED_MISSING)


def golden_cases(arch: str | None = None) -> list[str]:
    cases = sorted(p.parent.name for p in GOLDEN.glob("*/case.json"))
    if arch is None:
        return cases
    return [c for c in cases if json.loads((GOLDEN / c / "case.json").read_text()).get("arch") == arch]


def load_golden(case: str, attn_impl: str = "softmax"):
    """(model with the golden checkpoint loaded through our loader, io tensors, case dict)."""
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


# -- without ../shared ---------------------------------------------------------------------------------------------
# The names through which tests reach ../shared: the paths, and the helpers of this file that read them.
SHARED_NAMES = frozenset({"SHARED", "GOLDEN", "MANIFESTS", "TESTSETS", "golden_cases", "load_golden",
                          "read_manifest"})


def shared_users(path: Path, known: frozenset[str]) -> set[str]:
    """The top-level names of the module at ``path`` that reach ../shared: functions (tests, fixtures, helpers,
    their decorators and parameters included) and assignments that use a name of ``known`` or, in turn, of these."""
    uses: dict[str, set[str]] = {}
    for node in ast.parse(path.read_text()).body:
        names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names |= {a.arg for a in node.args.args}  # the fixtures a test requests
            uses[node.name] = names
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                for name in (n.id for n in ast.walk(target) if isinstance(n, ast.Name)):
                    uses.setdefault(name, set()).update(names - {name})
    users = set(known)
    while True:
        found = {name for name, names in uses.items() if names & users} - users
        if not found:
            return users
        users |= found


def pytest_collection_modifyitems(config, items) -> None:
    if GOLDEN.is_dir():
        return
    helpers = frozenset(SHARED_NAMES | shared_users(Path(__file__), SHARED_NAMES)
                        | shared_users(Path(__file__).with_name("conftest_hub.py"), SHARED_NAMES))
    users_by_module: dict[Path, set[str]] = {}
    for item in items:
        module = Path(str(item.fspath))
        if module not in users_by_module:
            users_by_module[module] = shared_users(module, helpers)
        if getattr(item, "originalname", item.name) in users_by_module[module]:
            item.add_marker(pytest.mark.skip(reason=SHARED_MISSING), append=False)  # before "empty parameter set"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """The backstop for tests that reach ../shared where the reading above cannot see it (the package's own
    default paths): a failure whose error names the absent folder is reported as a skip, with the same reason."""
    report = yield
    if report.failed and call.excinfo is not None and not GOLDEN.is_dir() and str(SHARED) in str(call.excinfo.value):
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: {SHARED_MISSING}")
    return report


def without_tile_minimum(model):
    """The same model (shared weights) without its architecture's smallest tile: the tests of the tiling
    mechanics (cover, blend, stacking) use tiles far smaller than the quality minimum to stay fast."""
    model = copy.copy(model)
    model.spec = dataclasses.replace(model.spec, min_tile_multiples=None)
    return model
