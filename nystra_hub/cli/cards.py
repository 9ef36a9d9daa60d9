"""``nystra-hub cards VARIANT ... [--all] [--out-dir model_cards]``: render the model cards of catalogue variants
(:mod:`nystra_hub.io.cards`), with the measurements of bench, fidelity and GPU reports when given, into
``<out-dir>/<variant>.md``; ``--run-pages`` also writes the page of each report next to its JSON (``x.json`` ->
``x.md``), which the card links. ``nystra-hub cards --reference-model DIR [--fidelity JSON ...]`` writes the card
of a reference model folder, ``DIR/README.md``, from its ``reference.json``."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from nystra_hub.io.cards import (
    build_model_card,
    build_reference_card,
    measurements_from_files,
    read_reference,
    read_report,
    write_run_page,
)
from nystra_hub.io.variants import VARIANTS, get_variant

MEASUREMENT_OPTIONS = ("bench", "fidelity", "gpu", "reference")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("variants", nargs="*", metavar="VARIANT", help="catalogue variants (see nystra-hub list)")
    parser.add_argument("--all", action="store_true", help="every catalogue variant")
    parser.add_argument("--out-dir", default=None, help="output folder (default: model_cards; with "
                                                        "--reference-model: the model's folder)")
    parser.add_argument("--bench", nargs="+", metavar="JSON", help="nystra-hub bench reports of the (one) variant")
    parser.add_argument("--fidelity", nargs="+", metavar="JSON",
                        help="nystra-hub fidelity reports of the reference model(s) standing in for the variant")
    parser.add_argument("--gpu", nargs="+", metavar="JSON", help="benchmarks/gpu.sh reports (gpu-bench.json)")
    parser.add_argument("--reference", nargs="+", metavar="DIR",
                        help="reference model folders of the fidelity reports (their reference.json says whether "
                             "their attention matters)")
    parser.add_argument("--reference-model", metavar="DIR",
                        help="write the card of this reference model folder (DIR/README.md) instead of a variant's")
    parser.add_argument("--run-pages", action="store_true",
                        help="also write each report's page next to its JSON (x.json -> x.md)")


def _relative(path: str) -> str:
    """A path as the card records it: relative to the working directory when it lies under it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def measurement_arguments(args: argparse.Namespace) -> list[str]:
    """The options that name the card's inputs, as the card's command records them."""
    out = ["--out-dir", _relative(args.out_dir)] if args.out_dir else []
    for flag in MEASUREMENT_OPTIONS:
        if getattr(args, flag, None):
            out += [f"--{flag}", *map(_relative, map(str, getattr(args, flag)))]
    return out + (["--run-pages"] if args.run_pages else [])


def _run_pages(args: argparse.Namespace) -> None:
    for flag, kind in (("bench", "bench"), ("fidelity", "fidelity"), ("gpu", "gpu_bench")):
        for path in getattr(args, flag) or []:
            print(write_run_page(path, read_report(Path(path), kind)))


def _reference_card(args: argparse.Namespace) -> int:
    folder = Path(args.reference_model)
    try:
        info = read_reference(folder)
        fidelity = [read_report(Path(p), "fidelity") for p in args.fidelity or []]
        for report in fidelity:
            report["_page"] = "../../" + report["_page"].removeprefix("../")
        command = shlex.join(["nystra-hub", "cards", "--reference-model", _relative(str(folder)),
                              *measurement_arguments(args)])
        card = build_reference_card(info, fidelity, command=command)
        out = Path(args.out_dir) if args.out_dir else folder
        out.mkdir(parents=True, exist_ok=True)
        card.save(str(out / "README.md"))
        if args.run_pages:
            _run_pages(args)
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(out / "README.md")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.reference_model:
        if args.variants or args.all or args.bench or args.gpu:
            print("error: --reference-model takes only --fidelity (and --out-dir, --run-pages)", file=sys.stderr)
            return 2
        return _reference_card(args)
    names = list(VARIANTS) if args.all else args.variants
    if not names:
        print("error: name at least one variant or pass --all", file=sys.stderr)
        return 2
    measured = any(getattr(args, flag, None) for flag in MEASUREMENT_OPTIONS)
    if measured and len(names) != 1:
        print("error: --bench/--fidelity/--gpu/--reference describe one variant; name exactly one", file=sys.stderr)
        return 2
    try:
        variants = [get_variant(n) for n in names]
    except KeyError as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 2
    out = Path(args.out_dir or "model_cards")
    out.mkdir(parents=True, exist_ok=True)
    for v in variants:
        path = out / f"{v.name}.md"
        try:
            measurements = measurements_from_files(v.name, args.bench, args.fidelity, out, args.gpu, args.reference)
            if measurements is not None:
                measurements["command"] = shlex.join(["nystra-hub", "cards", v.name, *measurement_arguments(args)])
            card = build_model_card(v, measurements)
            if args.run_pages:
                _run_pages(args)
        except (OSError, ValueError, KeyError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        card.save(str(path))
        print(path)
    return 0
