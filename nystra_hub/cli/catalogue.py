"""``nystra-hub list``: the variant catalogue, and the reference models shipped in a checkout (the only weights
that come with the code). ``--json`` prints ``{"variants": [...], "reference_models": [...]}``."""

from __future__ import annotations

import json

from nystra_hub.io.hub import HUB_ORG, HUB_ORG_PUBLISHED
from nystra_hub.io.variants import REFERENCE_MODELS_DIR, VARIANTS, reference_models
from nystra_hub.models import ARCHITECTURES

VARIANT_HEADER = ("VARIANT", "ARCH", "TASK", "SCALE", "WINDOW", "PATCH", "RELEASED CHECKPOINT (pass as --weights)")
REFERENCE_HEADER = ("REFERENCE MODEL", "ARCH", "TASK", "SCALE", "--model")


def add_arguments(parser) -> None:
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), help="only this architecture")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args) -> int:
    variants = [v for v in VARIANTS.values() if args.arch in (None, v.arch)]
    references = [r for r in reference_models() if args.arch in (None, r.arch)]
    if args.json:
        print(json.dumps({
            "variants": [dict(name=v.name, arch=v.arch, task=v.task, scale=v.scale, window=v.window, patch=v.patch,
                              official_file=v.official_file, released=v.released, source=v.source, kwargs=v.kwargs)
                         for v in variants],
            "reference_models": [dict(name=r.name, arch=r.arch, task=r.task, scale=r.scale, model=r.model_argument)
                                 for r in references],
        }, indent=2))
        return 0
    print_table(VARIANT_HEADER, [(v.name, v.arch, v.task, f"x{v.scale}", v.window, v.patch, _file(v))
                                 for v in variants])
    if not HUB_ORG_PUBLISHED:  # a name alone loads nothing yet: say so where the names are read
        print(f"\nThe variants' weights are not bundled, and {HUB_ORG}/<variant> is not on the Hugging Face Hub yet:\n"
              "download the released file, then --model VARIANT --weights FILE (or nystra-hub convert FILE --out DIR).")
    if references:
        print(f"\nShipped with this checkout ({REFERENCE_MODELS_DIR}), weights included: pass the path as --model.")
        print_table(REFERENCE_HEADER, [(r.name, r.arch, r.task, f"x{r.scale}", r.model_argument) for r in references])
    return 0


def _file(v) -> str:
    return v.official_file + ("" if v.released else "  (configuration only, no released checkpoint)")


def print_table(header: tuple[str, ...], rows: list[tuple]) -> None:
    """``rows`` under ``header``, each column as wide as its widest cell, the last one left ragged."""
    cells = [tuple(str(c) for c in row) for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header) - 1)]
    for row in cells:
        print("  ".join([*(c.ljust(w) for c, w in zip(row, widths)), row[-1]]).rstrip())
