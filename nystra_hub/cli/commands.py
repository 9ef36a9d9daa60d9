"""The command table, and what the command line can do before torch is imported: the top-level parser, the
command named on a command line, and the closest spelling of a mistyped command or option.

This module imports the standard library only. The console script's launcher, ``nystra_hub_cli`` (outside the
package, see its docstring), runs this file by path, without importing ``nystra_hub``, whose ``__init__`` imports
torch, transformers and timm; :mod:`nystra_hub.cli` imports it as usual. So the table is written once, here, and
imports run one way: the launcher reads the package, the package never imports the launcher. Run that way, the
module has no entry in ``sys.modules``: it defines functions and constants only (a dataclass looks its module up
there).

Typos are answered from the source: an unknown command, or an option that no ``add_argument`` call of the
command's module (or of ``nystra_hub/cli/options.py``, which the commands share) spells, fails at once with the
closest spelling (:func:`typo_message`). The option names are read from those files with :mod:`ast`, so they are
written once, in the ``add_argument`` calls; what passes here, argparse checks again after the import.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import sys
from collections.abc import Callable
from pathlib import Path

PROG = "nystra-hub"
DESCRIPTION = "Pretrained window-transformer restoration with exact and PnP-Nystra attention."
EPILOG = ("Run 'nystra-hub COMMAND --help' for the options of a command (that imports torch: a few seconds).\n"
          "Example: nystra-hub restore --model reference_models/swinir-ref-x2 photo.png --out restored/")

# command -> (module implementing it: add_arguments(parser) and run(args) -> exit code, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "list": ("nystra_hub.cli.catalogue", "list the catalogue of variants and the reference models shipped with it"),
    "restore": ("nystra_hub.cli.restore", "restore images or folders with a variant or hub folder"),
    "eval": ("nystra_hub.cli.evaluate", "score a model on your own (degraded, ground truth) image folders"),
    "export": ("nystra_hub.cli.export", "export a model to ONNX or OpenVINO IR for one input size"),
    "convert": ("nystra_hub.cli.convert", "turn a released checkpoint into a hub folder (config, safetensors, card)"),
    "bench": ("nystra_hub.cli.bench", "measure speed of the attention arms (a command, not a test)"),
    "fidelity": ("nystra_hub.cli.fidelity", "measure quality of the attention arms against the exact model"),
    "train-reference": ("nystra_hub.cli.train_reference", "train the small reference models used for fidelity"),
    "calibrate": ("nystra_hub.cli.calibrate", "choose per-layer nystra settings under a quality budget"),
    "cards": ("nystra_hub.cli.cards", "render model cards from measurement JSON"),
}
TOP_LEVEL_OPTIONS = ("-h", "--help", "--version")
SHARED_OPTIONS_MODULE = "nystra_hub.cli.options"  # add_attention_arguments and friends: --attn, --nystra, --model
PACKAGE_FOLDER = Path(__file__).resolve().parents[1]  # nystra_hub/, whether imported or run by path


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


def requested_command(argv: list[str]) -> str | None:
    """The command named on the command line: the first argument that is not an option (the top-level options
    take no values), or None."""
    return next((str(arg) for arg in argv if not str(arg).startswith("-")), None)


# -- typos, answered from the source ------------------------------------------------------------------------------
def _source_tree(module: str) -> ast.Module | None:
    """The syntax tree of ``nystra_hub`` module ``module``, read without importing it; None when unreadable."""
    parts = module.split(".")[1:]
    if not parts:
        return None
    try:
        return ast.parse(PACKAGE_FOLDER.joinpath(*parts).with_suffix(".py").read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None


def _option_strings(tree: ast.Module) -> set[str]:
    """The option strings of every ``.add_argument("-x", "--xx", ...)`` call in ``tree``."""
    return {arg.value for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument"
            for arg in node.args if isinstance(arg, ast.Constant) and str(arg.value).startswith("-")}


def command_options(command: str) -> set[str]:
    """The options ``command`` may take: those its module's source spells, and the shared module's when it
    imports from it; empty (nothing can be checked) when its source is not readable."""
    tree = _source_tree(SUBCOMMANDS[command][0])
    if tree is None:
        return set()
    options = _option_strings(tree) | set(TOP_LEVEL_OPTIONS[:2])
    shared = _source_tree(SHARED_OPTIONS_MODULE)
    if shared is not None and any(isinstance(node, ast.ImportFrom) and node.module == SHARED_OPTIONS_MODULE
                                  for node in ast.walk(tree)):
        options |= _option_strings(shared)
    return options


def _known(token: str, options: set[str]) -> bool:
    """Whether argparse would take ``token`` as one of ``options`` (exactly, as ``--opt=value``, as an unambiguous
    or ambiguous prefix, or a short option with its value attached), or as a value (a negative number, ``-``, or
    anything with a space)."""
    name = token.split("=", 1)[0]
    if name in options or token == "-" or " " in token or _is_number(token):
        return True
    if token.startswith("--"):
        return any(option.startswith(name) for option in options if option.startswith("--"))
    return token[:2] in options


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def unknown_options(tokens: list[str], options: set[str]) -> list[str]:
    """The option-like tokens (before a ``--``) that are none of ``options``, each with its closest spelling."""
    found = []
    for token in tokens:
        if token == "--":
            break
        if token.startswith("-") and not _known(token, options):
            name = token.split("=", 1)[0]
            close = difflib.get_close_matches(name, sorted(options), n=1)
            found.append(f"{name} (did you mean {close[0]}?)" if close else name)
    return found


def typo_message(argv: list[str]) -> str | None:
    """What is mistyped on the command line, said with the closest spelling; None when nothing is (or nothing can
    be checked without importing the command)."""
    command = requested_command(argv)
    split = argv.index(command) if command is not None else len(argv)
    if command is not None and command not in SUBCOMMANDS:
        close = difflib.get_close_matches(command, list(SUBCOMMANDS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown command {command!r}{hint} (commands: {', '.join(SUBCOMMANDS)})"
    unknown = unknown_options(argv[:split], set(TOP_LEVEL_OPTIONS))
    options = command_options(command) if command is not None else set()
    if options:
        unknown += unknown_options(argv[split + 1:], options)
    if not unknown:
        return None
    where = f"{PROG} {command} --help" if command else f"{PROG} --help"
    return f"unrecognized option{'s' * (len(unknown) > 1)} {', '.join(unknown)}; '{where}' lists them"


def refuse_typos(argv: list[str]) -> bool:
    """Print what :func:`typo_message` finds, worded as argparse words its errors; True when it found something."""
    problem = typo_message(argv)
    if problem:
        command = requested_command(argv)
        print(f"{PROG}{' ' + command if command in SUBCOMMANDS else ''}: error: {problem}", file=sys.stderr)
    return problem is not None
