"""The package's import graph, read from the source: no import cycles, no imports hidden inside functions.

Every ``import``/``from ... import`` of a ``nystra_hub`` module counts, at any depth (module level, class bodies,
functions), except those under ``if TYPE_CHECKING:`` (they never run). ``from package import name`` is an edge to
the module ``package.name`` when that is a module, else to ``package`` itself (``from . import __version__``
depends on ``nystra_hub/__init__.py``). Importing ``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``; those
implicit parent edges are left out, since a package's own ``__init__`` always imports before its modules and
would otherwise close a trivial loop with every module it re-exports.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = "nystra_hub"
SOURCE = REPO / PACKAGE

# (importing module, imported module) -> why the import sits inside a function. None remain: every package import
# is at the top of its module (optional heavy dependencies such as matplotlib or spandrel are not package imports).
FUNCTION_LEVEL_ALLOWED: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    in_function: bool


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(SOURCE.rglob("*.py"))}


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _targets(node: ast.Import | ast.ImportFrom, importer: str) -> list[str]:
    """The package modules an import statement loads (see the module docstring for the rules)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name in MODULES]
    if node.level:
        package = importer.split(".") if MODULES[importer].name == "__init__.py" else importer.split(".")[:-1]
        base = package[: len(package) - (node.level - 1)]
        target = ".".join(base + (node.module.split(".") if node.module else []))
    else:
        target = node.module or ""
    found = []
    for alias in node.names:
        submodule = f"{target}.{alias.name}"
        if submodule in MODULES:
            found.append(submodule)
        elif target in MODULES:
            found.append(target)
    return found


def package_imports() -> list[Import]:
    imports = []

    def visit(node: ast.AST, importer: str, in_function: bool) -> None:
        if _is_type_checking(node):
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for target in dict.fromkeys(_targets(node, importer)):
                imports.append(Import(importer, target, node.lineno, in_function))
        inside = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, importer, inside)

    for name, path in MODULES.items():
        visit(ast.parse(path.read_text(), str(path)), name, False)
    return imports


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def connect(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return cycles


def test_the_graph_reader_sees_relative_imports_at_any_depth():
    imports = package_imports()
    edges = {(i.importer, i.imported) for i in imports}
    assert ("nystra_hub.measure.bench", "nystra_hub.measure.arms") in edges  # from nystra_hub.measure.arms import
    assert ("nystra_hub.io.hub", "nystra_hub.io.cards") in edges  # the card renderer sits beside hub in io/
    assert ("nystra_hub.io.cards.variant", "nystra_hub.io.cards.format") in edges
    assert ("nystra_hub.measure.environment", "nystra_hub._version") in edges
    assert ("nystra_hub", "nystra_hub.models") in edges  # the package's own __init__
    # a cycle through a function-level import is a cycle
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"a"}}) == [["a"]] and find_cycles({"a": {"b"}}) == []


def test_no_import_cycles():
    """Every import counts, function-level ones included: hiding an import in a function does not remove the
    dependency. The allow-listed function-level imports are the exception, as known debts of files under another
    change; one of them closes a loop today (``nystra_hub/__init__`` imports hub, hub_config imports
    ``__version__`` from ``nystra_hub``), which goes once ``__version__`` has a module of its own."""
    edges: dict[str, set[str]] = {}
    for imp in package_imports():
        if not (imp.in_function and (imp.importer, imp.imported) in FUNCTION_LEVEL_ALLOWED):
            edges.setdefault(imp.importer, set()).add(imp.imported)
    assert find_cycles(edges) == []


def test_no_package_imports_inside_functions():
    """Imports of the package's own modules sit at the top of the module (heavy optional third-party ones, such
    as matplotlib and spandrel, may stay in the function that needs them); the CLI loads its subcommands through
    importlib, which is no import statement."""
    hidden = [f"{i.importer}:{i.line} imports {i.imported}" for i in package_imports()
              if i.in_function and (i.importer, i.imported) not in FUNCTION_LEVEL_ALLOWED]
    assert hidden == []


# The package's layers, top first: a module imports from its own layer or those below, never above. The tree
# shows them (nystra_hub/<layer>/); the top-level __init__ sits above all of them and re-exports the public API.
PACKAGE_LAYERS = ["cli", "training", "measure", "integrations", "inference", "io", "models", "attention",
                  "errors", "_version"]

# nystra_hub/measure/, top layer first (its __init__ documents the same order).
MEASURE_LAYERS = [
    ("bench", "fidelity", "calibration", "gpu"),
    ("arms",),
    ("references",),
    ("data",),
    ("metrics", "environment", "timing"),
]


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return PACKAGE_LAYERS.index(parts[1]) if len(parts) > 1 else None


def test_every_module_sits_in_a_layer_and_imports_downwards_only():
    assert {m.split(".")[1] for m in MODULES if "." in m} == set(PACKAGE_LAYERS)  # every module placed
    upward = [f"{i.importer} imports {i.imported}" for i in package_imports()
              if _layer(i.importer) is not None and _layer(i.imported) is not None
              and _layer(i.imported) < _layer(i.importer)]
    assert upward == []


def test_measurement_modules_import_downwards_only():
    layer_of = {f"{PACKAGE}.measure.{m}": depth for depth, layer in enumerate(MEASURE_LAYERS) for m in layer}
    assert {m for m in MODULES if m.startswith(f"{PACKAGE}.measure.")} == set(layer_of)  # every module placed
    imports = package_imports()
    sideways_or_up = [f"{i.importer} imports {i.imported}" for i in imports
                      if i.importer in layer_of and i.imported in layer_of
                      and layer_of[i.imported] <= layer_of[i.importer]]
    assert sideways_or_up == []
    init = ast.parse(MODULES[f"{PACKAGE}.measure"].read_text())
    assert not any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(init))  # a docstring only


# nystra_hub/io/cards/, top layer first: the renderers, the variant card's measured sections, what all share.
CARDS_LAYERS = [
    ("variant", "runs", "reference"),
    ("measurements",),
    ("format",),
]


def test_card_modules_import_downwards_only():
    """The renderers (variant card, run pages, reference card) build on ``format``, the variant card also on
    ``measurements``; no card module imports the package ``__init__`` that re-exports them."""
    layer_of = {f"{PACKAGE}.io.cards.{m}": depth for depth, layer in enumerate(CARDS_LAYERS) for m in layer}
    assert {m for m in MODULES if m.startswith(f"{PACKAGE}.io.cards.")} == set(layer_of)  # every module placed
    sideways_or_up = [f"{i.importer} imports {i.imported}" for i in package_imports()
                      if i.importer in layer_of and i.imported in layer_of
                      and layer_of[i.imported] <= layer_of[i.importer]]
    assert sideways_or_up == []
    assert not [i for i in package_imports() if i.importer in layer_of and i.imported == f"{PACKAGE}.io.cards"]


def test_no_deprecation_shims_remain():
    """Nothing was ever released: the old flat module paths are gone, not forwarded."""
    for old in ("bench", "fidelity", "calibration", "cards", "restore_cli", "export_cli", "cli_options", "cli_list",
                "hf", "timm_models", "imageio", "measure.training", "measure.cards"):
        assert f"{PACKAGE}.{old}" not in MODULES
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(f"{PACKAGE}.{old}")


CLI_PROBE = """
import json, sys
from nystra_hub.cli import main
loaded = [set(sys.modules)]
for argv in (["--help"], ["bench", "--help"]):
    try:
        main(argv)
    except SystemExit:
        pass
    loaded.append(set(sys.modules))
print("MODULES " + json.dumps([sorted(b - a) for a, b in zip(loaded, loaded[1:])]))
for module in ("cli.calibrate", "cli.cards", "cli.fidelity", "cli.train_reference"):
    __import__(f"nystra_hub.{module}")  # every command module imports without a cycle
"""


def test_cli_imports_only_the_subcommand_that_runs():
    """``nystra-hub --help`` lists the subcommands without importing them; ``nystra-hub bench`` imports the bench
    module (and what it needs), no other subcommand's."""
    from nystra_hub.cli import SUBCOMMANDS

    proc = subprocess.run([sys.executable, "-c", CLI_PROBE],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("MODULES "))
    by_help, by_bench = json.loads(line[len("MODULES "):])
    commands = {module for module, _ in SUBCOMMANDS.values()}
    assert not commands & set(by_help)
    assert commands & set(by_bench) == {"nystra_hub.cli.bench"}
    for name in ("list", "bench", "train-reference", "cards"):
        assert name in proc.stdout  # the help lists every subcommand


LAUNCHER = "nystra_hub_cli"


def _names_the_launcher(node: ast.AST) -> bool:
    """An import of the launcher, or its name as a string (what importlib or runpy would be given)."""
    if isinstance(node, ast.Import):
        return any(alias.name.split(".")[0] == LAUNCHER for alias in node.names)
    if isinstance(node, ast.ImportFrom):
        return (node.module or "").split(".")[0] == LAUNCHER
    return isinstance(node, ast.Constant) and re.fullmatch(rf"{LAUNCHER}(\.\w+)*", str(node.value)) is not None


def test_the_launcher_is_imported_by_nothing_in_the_package():
    """Imports run one way: the console script's launcher (outside the package, torch-free) reads the package's
    command table and hands commands to ``nystra_hub.cli``; nothing in ``nystra_hub`` reaches back for it."""
    found = [f"{name}:{node.lineno}" for name, path in MODULES.items()
             for node in ast.walk(ast.parse(path.read_text())) if _names_the_launcher(node)]
    assert found == []
    assert _names_the_launcher(ast.parse("import nystra_hub_cli").body[0])  # the check sees what it looks for
    assert _names_the_launcher(ast.parse("importlib.import_module('nystra_hub_cli')").body[0].value.args[0])


def test_the_command_table_imports_the_standard_library_only():
    """The launcher runs nystra_hub/cli/commands.py by path without the package's __init__ (torch): an import of
    anything else there would bring torch back into ``nystra-hub --help``."""
    tree = ast.parse(MODULES[f"{PACKAGE}.cli.commands"].read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported - {"__future__"} <= set(sys.stdlib_module_names), imported


def test_argparse_lives_in_cli_only():
    """One home for the command line: library modules hold the functions a command calls, never its options."""
    found = [name for name, path in MODULES.items() if not name.startswith(f"{PACKAGE}.cli")
             and any(isinstance(node, (ast.Import, ast.ImportFrom)) and "argparse" in
                     ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module])
                     for node in ast.walk(ast.parse(path.read_text())))]
    assert found == []


def test_no_architecture_name_branches_outside_models():
    """Architecture facts live in each model's spec: code outside models/ never compares an arch with a name."""
    branch = re.compile(r"""\barch\s*(?:==|!=|\bin\b|\bnot in\b)\s*[(\[{]?\s*[\"']""")  # against a literal name
    found = [f"{path.relative_to(REPO)}:{number}: {line.strip()}"
             for path in sorted(SOURCE.rglob("*.py")) if "models" not in path.relative_to(SOURCE).parts
             for number, line in enumerate(path.read_text().splitlines(), 1) if branch.search(line)]
    assert not found, "\n".join(found)
