"""``nystra-hub`` command line: one subcommand per module, imported only when used.

Each subcommand module provides ``add_arguments(parser)`` and ``run(args) -> int`` (the exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

from ._version import __version__

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "list": ("nystra_hub.cli_list", "list the catalogue of variants"),
    "restore": ("nystra_hub.restore_cli", "restore images or folders with a variant or hub folder"),
    "convert": ("nystra_hub.convert", "turn a released checkpoint into a hub folder (config, safetensors, card)"),
    "bench": ("nystra_hub.measure.bench", "measure speed of the attention arms (a command, not a test)"),
    "fidelity": ("nystra_hub.measure.fidelity", "measure quality of the attention arms against the exact model"),
    "train-reference": ("nystra_hub.measure.training", "train the small reference models used for fidelity"),
    "calibrate": ("nystra_hub.measure.calibration", "choose per-layer nystra settings under a quality budget"),
    "cards": ("nystra_hub.measure.cards", "render model cards from measurement JSON"),
}


def requested_command(argv: list[str]) -> str | None:
    """The subcommand named on the command line: the first argument that is not an option (the top-level
    parser's options take no values), or None."""
    return next((str(arg) for arg in argv if not str(arg).startswith("-")), None)


def load_subcommand(name: str) -> ModuleType:
    """Import the module of subcommand ``name``: done only for the subcommand that runs."""
    return importlib.import_module(SUBCOMMANDS[name][0])


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every subcommand listed (from :data:`SUBCOMMANDS`, nothing imported) and the arguments of
    ``command`` only, whose module is imported for them."""
    parser = argparse.ArgumentParser(
        prog="nystra-hub", description="Pretrained window-transformer restoration with exact and PnP-Nystra attention."
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == command:
            load_subcommand(name).add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = requested_command(argv)
    parser = build_parser(command if command in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    if args.version:
        print(__version__)
        return 0
    if not args.command:
        parser.print_help()
        return 2
    return int(load_subcommand(args.command).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
