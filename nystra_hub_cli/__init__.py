"""The ``nystra-hub`` console script: lists the commands and answers ``--help``/``--version`` without importing
torch, and hands every command to :mod:`nystra_hub.cli`.

This package sits outside ``nystra_hub`` on purpose: importing any ``nystra_hub.*`` module runs the package's
``__init__``, which imports torch, transformers and timm (several seconds), and a help listing should not wait
for that. It is the one place the command table is written; ``nystra_hub.cli`` imports it from here.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import runpy
import sys
from collections.abc import Callable
from pathlib import Path

PROG = "nystra-hub"
DESCRIPTION = "Pretrained window-transformer restoration with exact and PnP-Nystra attention."
EPILOG = ("Run 'nystra-hub COMMAND --help' for the options of a command (that imports torch: a few seconds).\n"
          "Example: nystra-hub restore --model reference_models/swinir-ref-x2 photo.png --out restored/")

# command -> (module implementing it: add_arguments(parser) and run(args) -> exit code, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "list": ("nystra_hub.cli.catalogue", "list the catalogue of variants"),
    "restore": ("nystra_hub.cli.restore", "restore images or folders with a variant or hub folder"),
    "eval": ("nystra_hub.cli.evaluate", "score a model on your own (degraded, ground truth) image folders"),
    "export": ("nystra_hub.cli.export", "export a model to ONNX or OpenVINO IR for one input size"),
    "convert": ("nystra_hub.cli.convert", "turn a released checkpoint into a hub folder (config, safetensors, card)"),
    "bench": ("nystra_hub.measure.bench", "measure speed of the attention arms (a command, not a test)"),
    "fidelity": ("nystra_hub.measure.fidelity", "measure quality of the attention arms against the exact model"),
    "train-reference": ("nystra_hub.training.reference", "train the small reference models used for fidelity"),
    "calibrate": ("nystra_hub.measure.calibration", "choose per-layer nystra settings under a quality budget"),
    "cards": ("nystra_hub.io.cards", "render model cards from measurement JSON"),
}


def package_version() -> str:
    """``nystra_hub.__version__``, read from its own module file without running the package's ``__init__``."""
    spec = importlib.util.find_spec("nystra_hub")  # locating a top-level package does not import it
    if spec is None or not spec.submodule_search_locations:
        return "unknown (nystra_hub is not importable)"
    version_file = Path(next(iter(spec.submodule_search_locations))) / "_version.py"
    return str(runpy.run_path(str(version_file))["__version__"])


def requested_command(argv: list[str]) -> str | None:
    """The command named on the command line: the first argument that is not an option (the top-level options
    take no values), or None."""
    return next((str(arg) for arg in argv if not str(arg).startswith("-")), None)


def build_parser(add_command_arguments: Callable[[str, argparse.ArgumentParser], None] | None = None,
                 ) -> argparse.ArgumentParser:
    """The top-level parser with every command listed; ``add_command_arguments(name, subparser)`` (from
    :mod:`nystra_hub.cli`) adds a command's own options."""
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if add_command_arguments is not None:
            add_command_arguments(name, sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if requested_command(argv) in SUBCOMMANDS:
        return importlib.import_module("nystra_hub.cli").main(argv)
    parser = build_parser()
    args = parser.parse_args(argv)  # --help, and an unknown command, exit here
    if args.version:
        print(package_version())
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
