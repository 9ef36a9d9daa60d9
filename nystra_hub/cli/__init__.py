"""``nystra-hub`` command line: one module per command, imported only when that command runs.

Each command module provides ``add_arguments(parser)`` and ``run(args) -> int`` (the exit code); the library
modules it calls hold no argparse code. The command table and the torch-free parts (top-level parser, typo
answers) are in :mod:`nystra_hub.cli.commands`. The console script is the launcher ``nystra_hub_cli``, outside
this package so that ``nystra-hub --help`` never imports torch: it reads that table from its file and calls
:func:`main` here, by name, for every command. Nothing in ``nystra_hub`` imports the launcher.
``python -m nystra_hub.cli COMMAND ...`` (what torchrun and accelerate launch) runs the same :func:`main`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

from nystra_hub._version import __version__
from nystra_hub.cli.commands import SUBCOMMANDS, refuse_typos, requested_command, unknown_options
from nystra_hub.cli.commands import build_parser as build_command_table
from nystra_hub.cli.options import fill_missing_help

__all__ = ["SUBCOMMANDS", "build_parser", "command_parser", "load_subcommand", "main", "parse", "requested_command"]


def load_subcommand(name: str) -> ModuleType:
    """Import the module of subcommand ``name``: done only for the subcommand that runs."""
    return importlib.import_module(SUBCOMMANDS[name][0])


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every subcommand listed (nothing imported) and the arguments of ``command`` only, whose
    module is imported for them."""

    def add_arguments(name: str, subparser: argparse.ArgumentParser) -> None:
        if name == command:
            load_subcommand(name).add_arguments(subparser)
            fill_missing_help(subparser)

    return build_command_table(add_arguments)


def command_parser(parser: argparse.ArgumentParser, command: str | None) -> argparse.ArgumentParser:
    """The sub-parser of ``command`` in ``parser`` (the parser itself for no command)."""
    if command is None:
        return parser
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``parser.parse_args``, but what is left over is refused by the command's own parser (its usage, not the
    top-level one) with the closest spelling of each unknown option."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        sub = command_parser(parser, args.command)
        unknown = unknown_options(extra, set(sub._option_string_actions))
        others = [token for token in extra if not token.startswith("-")]
        sub.error("unrecognized arguments: " + ", ".join(unknown + others or extra))
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if refuse_typos(argv):  # the console script checked already; python -m nystra_hub.cli (torchrun) comes here
        return 2
    command = requested_command(argv)
    parser = build_parser(command if command in SUBCOMMANDS else None)
    args = parse(parser, argv)
    if args.version:
        print(__version__)
        return 0
    if not args.command:
        parser.print_help()
        return 2
    try:
        return int(load_subcommand(args.command).run(args) or 0)
    except FileNotFoundError as err:  # a missing input, model or data folder: say which, without a traceback
        print(f"nystra-hub {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
