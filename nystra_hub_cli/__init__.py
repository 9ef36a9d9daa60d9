"""The ``nystra-hub`` console script: answers ``--help``, ``--version`` and typos without importing torch, and hands
every command to :mod:`nystra_hub.cli`.

This package sits outside ``nystra_hub`` on purpose: importing any ``nystra_hub.*`` module runs the package's
``__init__``, which imports torch, transformers and timm (several seconds), and a help listing or a "did you mean
--attn?" should not wait for that. So it imports nothing from ``nystra_hub``: it runs the command table,
``nystra_hub/cli/commands.py`` (standard library only), from its file, reads ``__version__`` from
``nystra_hub/_version.py`` the same way, and imports :mod:`nystra_hub.cli` by name only when a command runs.
Dependencies run one way, launcher to package: nothing in ``nystra_hub`` imports this package
(``tests/test_imports.py`` checks it).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import runpy
import sys
from pathlib import Path
from types import ModuleType

COMMANDS_FILE = ("cli", "commands.py")  # the command table, under the package folder
CLI_PACKAGE = "nystra_hub.cli"  # where every command runs: main(argv)


def package_folder() -> Path | None:
    """Where ``nystra_hub`` is, found without importing it (locating a top-level package does not run it)."""
    spec = importlib.util.find_spec("nystra_hub")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def package_version() -> str:
    """``nystra_hub.__version__``, read from its own module file without running the package's ``__init__``."""
    folder = package_folder()
    if folder is None:
        return "unknown (nystra_hub is not importable)"
    return str(runpy.run_path(str(folder / "_version.py"))["__version__"])


@functools.cache
def command_table() -> ModuleType:
    """``nystra_hub/cli/commands.py`` run from its file, not imported: the table and the torch-free helpers,
    without the package's ``__init__`` (the module is not entered in ``sys.modules``)."""
    folder = package_folder()
    if folder is None:
        raise SystemExit("nystra-hub: the nystra_hub package is not importable")
    spec = importlib.util.spec_from_file_location("nystra_hub.cli.commands", folder.joinpath(*COMMANDS_FILE))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = command_table()
    if commands.refuse_typos(argv):
        return 2
    if commands.requested_command(argv) in commands.SUBCOMMANDS:
        return importlib.import_module(CLI_PACKAGE).main(argv)
    parser = commands.build_parser()
    args = parser.parse_args(argv)  # --help, and an unknown command, exit here
    if args.version:
        print(package_version())
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
