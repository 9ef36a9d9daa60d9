"""``nystra-hub cards VARIANT ... [--all] [--out-dir model_cards]``: render the model cards of catalogue variants
(:mod:`nystra_hub.io.cards`), with the measurements of bench, fidelity and GPU reports when given, into
``<out-dir>/<variant>.md``."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from nystra_hub.io.cards import build_model_card, measurements_from_files
from nystra_hub.io.variants import VARIANTS, get_variant

MEASUREMENT_OPTIONS = ("bench", "fidelity", "gpu")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("variants", nargs="*", metavar="VARIANT", help="catalogue variants (see nystra-hub list)")
    parser.add_argument("--all", action="store_true", help="every catalogue variant")
    parser.add_argument("--out-dir", default="model_cards", help="output folder (default: model_cards)")
    parser.add_argument("--bench", nargs="+", metavar="JSON", help="nystra-hub bench reports of the (one) variant")
    parser.add_argument("--fidelity", nargs="+", metavar="JSON",
                        help="nystra-hub fidelity reports of the reference model(s) standing in for the variant")
    parser.add_argument("--gpu", nargs="+", metavar="JSON", help="benchmarks/gpu.sh reports (gpu-bench.json)")


def measurement_arguments(args: argparse.Namespace) -> list[str]:
    """The options that name the card's inputs, as the card's command records them."""
    out = ["--out-dir", str(args.out_dir)]
    for flag in MEASUREMENT_OPTIONS:
        if getattr(args, flag, None):
            out += [f"--{flag}", *map(str, getattr(args, flag))]
    return out


def run(args: argparse.Namespace) -> int:
    names = list(VARIANTS) if args.all else args.variants
    if not names:
        print("error: name at least one variant or pass --all", file=sys.stderr)
        return 2
    measured = any(getattr(args, flag, None) for flag in MEASUREMENT_OPTIONS)
    if measured and len(names) != 1:
        print("error: --bench/--fidelity/--gpu describe one variant; name exactly one", file=sys.stderr)
        return 2
    try:
        variants = [get_variant(n) for n in names]
    except KeyError as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 2
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for v in variants:
        path = out / f"{v.name}.md"
        try:
            measurements = measurements_from_files(v.name, args.bench, args.fidelity, out, args.gpu)
            if measurements is not None:
                measurements["command"] = shlex.join(["nystra-hub", "cards", v.name, *measurement_arguments(args)])
            card = build_model_card(v, measurements)
        except (OSError, ValueError, KeyError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        card.save(str(path))
        print(path)
    return 0
