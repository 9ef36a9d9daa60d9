"""``nystra-hub list``: the variant catalogue."""

from __future__ import annotations

import json

from nystra_hub.io.variants import VARIANTS
from nystra_hub.models import ARCHITECTURES


def add_arguments(parser) -> None:
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), help="only this architecture")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args) -> int:
    rows = [v for v in VARIANTS.values() if args.arch in (None, v.arch)]
    if args.json:
        print(json.dumps([
            dict(name=v.name, arch=v.arch, task=v.task, scale=v.scale, window=v.window, patch=v.patch,
                 official_file=v.official_file, released=v.released, kwargs=v.kwargs) for v in rows
        ], indent=2))
        return 0
    width = max(len(v.name) for v in rows)
    for v in rows:
        flag = "" if v.released else "  (configuration only, no released checkpoint)"
        print(f"{v.name:<{width}}  {v.task:<14} x{v.scale}  window {v.window}  patch {v.patch:<4} "
              f"{v.official_file}{flag}")
    return 0
