"""``nystra-hub`` command line: one subcommand per module, imported only when used.

Each subcommand module provides ``add_arguments(parser)`` and ``run(args) -> int`` (the exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "list": ("nystra_hub.cli_list", "list the catalogue of variants"),
    "restore": ("nystra_hub.restore_cli", "restore images or folders with a variant or hub folder"),
    "convert": ("nystra_hub.convert", "turn a released checkpoint into a hub folder (config, safetensors, card)"),
    "bench": ("nystra_hub.bench", "measure speed of the attention arms (a command, not a test)"),
    "fidelity": ("nystra_hub.fidelity", "measure quality of the attention arms against the exact model"),
    "train-reference": ("nystra_hub.training", "train the small reference models used for fidelity"),
    "calibrate": ("nystra_hub.calibration", "choose per-layer nystra settings under a quality budget"),
    "cards": ("nystra_hub.cards", "render model cards from measurement JSON"),
}


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(
        prog="nystra-hub", description="Pretrained window-transformer restoration with exact and PnP-Nystra attention."
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = {}
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:  # a real missing dependency inside the module: surface it
                raise
            continue
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub)
        modules[name] = module
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if not args.command:
        parser.print_help()
        return 2
    return int(modules[args.command].run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
