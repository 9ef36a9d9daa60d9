"""Model cards (``README.md`` of a hub folder, ``model_cards/``, ``reference_models/*/``) and the pages of the runs
they cite (``benchmarks/*.md``), rendered with huggingface_hub's ModelCard from the measurement JSON.

A variant's card answers on its first screen (``measurements.summary_table``): the routes a user would pick (our
eager exact path, our fastest CPU route, bfloat16 on a GPU, ``nystra``) with their device, time at a stated input
and ratios against spandrel (the usual way to run the checkpoint) and our exact path, each row saying which run it
comes from (date, machine, commit), then one line on what PnP-Nystra costs in quality (on which reference model, and
whether that model's attention matters at all), one install line and one usage block that runs offline from a
converted folder. Details follow: PnP-Nystra against exact attention run by run, the quality table, the plots (one
run on one machine each), the base model, the list of runs. The raw per-run tables are not in the card: each JSON
gets its own page next to it (:func:`render_run_page`), linked from the card.

Front matter: ``license``, ``library_name: nystra_hub``, ``pipeline_tag: image-to-image``, tags with both papers
as ``arxiv:`` tags, the original release. ``model-index`` only for quality measured on the card's own weights on a
named dataset: a variant card has one only when such ``results`` are given (none are measured yet), never for
speed ratios, random inputs or a stand-in model's numbers; a reference model's card carries its held-out PSNR and
SSIM (:func:`build_reference_card`). No number is printed that the JSON does not hold (ratios of two medians of
one run excepted); a route that failed is "not measured on this device", never an error dump; commands lose their
machine paths and commits their "+dirty" (the run pages say in words that the tree had uncommitted changes).

One module per job; imports run one way, ``format`` below the others and ``measurements`` below ``variant``:

- ``format``: what every card and page shares: front-matter constants, numbers and the facts of one run as the
  cards print them, the reading of reports and ``reference.json``, :func:`check_card`;
- ``measurements``: a variant card's measurements, read from the JSON (plots drawn) and rendered into its sections;
- ``variant``: the card of a catalogue variant (:func:`build_model_card`) or a custom configuration;
- ``runs``: the page of one run (:func:`render_run_page`, :func:`write_run_page`);
- ``reference``: the card of a shipped reference model (:func:`build_reference_card`).

``nystra-hub cards VARIANT ... [--all] [--out-dir model_cards]`` (:mod:`nystra_hub.cli.cards`) writes
``<out-dir>/<variant>.md``; ``benchmarks/make_cards.sh`` renders every committed card and page.
"""

from nystra_hub.io.cards.format import (
    MAX_CARD_LINES,
    PNP_NYSTRA_ARXIV,
    check_card,
    fmt_time,
    read_reference,
    read_report,
)
from nystra_hub.io.cards.measurements import measurements_from_files
from nystra_hub.io.cards.reference import build_reference_card
from nystra_hub.io.cards.runs import render_run_page, write_run_page
from nystra_hub.io.cards.variant import NO_MEASUREMENTS, build_custom_card, build_model_card, card_origin

__all__ = ["MAX_CARD_LINES", "NO_MEASUREMENTS", "PNP_NYSTRA_ARXIV", "build_custom_card", "build_model_card",
           "build_reference_card", "card_origin", "check_card", "fmt_time", "measurements_from_files",
           "read_reference", "read_report", "render_run_page", "write_run_page"]
