"""The public API as users meet it: every ``nystra_hub.X`` the README and the examples use resolves after
``import nystra_hub``, ``__all__`` and the package docstring list the same names, and every model constructor
documents each of its arguments."""

from __future__ import annotations

import importlib.util
import inspect
import json
import re
import subprocess
import sys

from conftest import REPO

import nystra_hub

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "examples").glob("*.py")), *sorted((REPO / "examples").glob("*.sh"))]
DOTTED = re.compile(r"\bnystra_hub(?:\.[A-Za-z_]\w*)+")
FROM_IMPORT = re.compile(r"^\s*from (nystra_hub(?:\.\w+)*) import ([\w, ]+)", re.M)  # one-line imports

# In a fresh process, so that no other test's imports make a name resolve: the attribute chain after
# ``import nystra_hub`` (what ``nystra_hub.load(...)`` needs), else the longest importable module prefix followed
# by attributes (what ``-m nystra_hub.cli`` and ``from nystra_hub.io.hub import ...`` need).
RESOLVE = """
import importlib, json, sys
import nystra_hub

def resolve(dotted):
    parts = dotted.split(".")
    try:
        obj = nystra_hub
        for part in parts[1:]:
            obj = getattr(obj, part)
        return "attribute"
    except AttributeError:
        pass
    for cut in range(len(parts), 1, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part, None)
        return "module" if obj is not None else "missing"
    return "missing"

print("RESOLVED " + json.dumps({name: resolve(name) for name in json.loads(sys.argv[1])}))
"""


def used_names() -> dict[str, list[str]]:
    """Every dotted ``nystra_hub.X`` in the README and the examples, with the files that use it."""
    found: dict[str, list[str]] = {}
    for path in DOCUMENTS:
        text = path.read_text()
        imported = {f"{module}.{name.strip()}" for module, names in FROM_IMPORT.findall(text)
                    for name in names.split(",") if name.strip()}
        for name in sorted(set(DOTTED.findall(text)) | imported):
            found.setdefault(name, []).append(path.name)
    return found


def test_the_readme_and_the_examples_use_the_package_by_name():
    names = used_names()
    assert {"nystra_hub.load", "nystra_hub.restore", "nystra_hub.build_model"} <= set(names)  # the scan works
    assert "nystra_hub.inference.restore.plan_tiles" in names  # from ... import ..., in an example


def test_every_nystra_hub_name_in_the_readme_and_examples_resolves():
    names = used_names()
    proc = subprocess.run([sys.executable, "-c", RESOLVE, json.dumps(sorted(names))], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESOLVED "))
    resolved = json.loads(line[len("RESOLVED "):])
    missing = {name: names[name] for name, how in resolved.items() if how == "missing"}
    assert missing == {}, f"used in these files but not resolvable: {missing}"


def test_top_level_names_the_documents_use_are_public():
    """``nystra_hub.load(...)``-style uses name the package's own API, so each is in ``__all__`` (modules such
    as ``nystra_hub.io`` are reached through the package, not exported)."""
    top = {name.split(".")[1] for name in used_names()}
    functions = {name for name in top if importlib.util.find_spec(f"nystra_hub.{name}") is None}
    assert functions - set(nystra_hub.__all__) == set()


def test_all_resolves_and_the_package_docstring_lists_every_public_name():
    for name in nystra_hub.__all__:
        assert getattr(nystra_hub, name) is not None
    assert len(set(nystra_hub.__all__)) == len(nystra_hub.__all__)
    doc = nystra_hub.__doc__
    for group in ("Get a model:", "Run it:", "Attention:", "Lower-level loaders"):
        assert group in doc
    undocumented = [name for name in [*nystra_hub.__all__, "calibrate"] if f"``{name}" not in doc]
    assert undocumented == []
    assert callable(nystra_hub.calibrate)  # loaded on first use, not in __all__


def test_the_loaders_are_grouped_one_way_in_and_the_rest_below_it():
    """``load`` is the first name of ``__all__``; the steps it takes come after every other group."""
    public = nystra_hub.__all__
    assert public[0] == "load"
    lower = ("load_pretrained", "load_variant", "load_checkpoint", "load_original_checkpoint", "read_state_dict")
    first_lower = min(public.index(name) for name in lower)
    assert all(public.index(name) < first_lower for name in ("build_model", "restore", "export", "NystraParams"))


def test_every_model_constructor_documents_each_argument_in_order():
    """Args blocks in the Google style of transformers' configurations and timm: one entry per argument."""
    for cls in nystra_hub.ARCHITECTURES.values():
        doc = inspect.getdoc(cls)
        assert "\nArgs:\n" in doc, cls.__name__
        listed = re.findall(r"^    (\w+) \(", doc.split("\nArgs:\n")[1], flags=re.M)
        arguments = [name for name in inspect.signature(cls.__init__).parameters if name != "self"]
        assert listed == arguments, cls.__name__
