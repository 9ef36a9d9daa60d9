"""``nystra-hub bench``: speed, peak memory and FLOPs of the attention arms of one model (a command, not a test).

The measurement, its arms and its JSON are described in :mod:`nystra_hub.measure.bench`; this module turns the
options into :class:`~nystra_hub.measure.bench.BenchSettings`, writes the report and its plot, and prints a table.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from nystra_hub.cli.reports import default_output
from nystra_hub.inference.precision import DTYPE_NAMES
from nystra_hub.io.images import atomic_write_json
from nystra_hub.io.plots import plot_bench
from nystra_hub.measure.arms import paper_recipe, resolve_model, standard_arms
from nystra_hub.measure.bench import DEFAULT_RUNS, DEFAULT_SIZES, FULL_SIZES, BenchSettings, run_bench
from nystra_hub.measure.environment import argv_after


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Speed, peak memory and FLOPs of the attention arms of one model. The defaults are a short run (input "
        f"{' '.join(map(str, DEFAULT_SIZES))} px, {DEFAULT_RUNS} timed rounds: minutes on a CPU); the measurements "
        "in the model cards are the full run, which takes hours on a CPU: --sizes "
        f"{' '.join(map(str, FULL_SIZES))} --runs 5.")
    parser.add_argument("--model", help="catalogue variant (random weights unless --checkpoint; see nystra-hub list) "
                                        "or a reference-model folder")
    parser.add_argument("--checkpoint", help="released checkpoint for the variant (loaded strictly)")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES),
                        help="square input sides (model input: LR side for SR); default "
                             f"{' '.join(map(str, DEFAULT_SIZES))} (the model cards: {' '.join(map(str, FULL_SIZES))})")
    parser.add_argument("--arms", nargs="+", default=None,
                        help="arm names or letters (a b c c' d e e' f); 'wW' stands for the recipe window "
                             "(default: a b c c' d e e' f; --list-arms describes them)")
    parser.add_argument("--list-arms", action="store_true", help="list the arms for --model and exit")
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS,
                        help=f"timed rounds (median over them); default {DEFAULT_RUNS} (the model cards: 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up rounds; default 1")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default cpu)")
    parser.add_argument("--dtype", default="float32", choices=DTYPE_NAMES,
                        help="compute precision of every arm (see the settings' precision note in the JSON); "
                             "auto: bfloat16 on a GPU that supports it, float32 otherwise (default float32)")
    parser.add_argument("--batch", type=int, default=1, help="images per forward (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--protocol", default="forward", choices=["forward", "official"],
                        help="'forward': the raw model on a size x size input (each pads to its window itself); "
                             "'official': the official test protocol (its padding included)")
    parser.add_argument("--window", type=int, default=None, help="override the recipe's enlarged window")
    parser.add_argument("--plan", nargs="+", metavar="JSON",
                        help="extra arms running per-layer plans (nystra-hub calibrate --out files)")
    parser.add_argument("--memory", default="on", choices=["on", "off"],
                        help="peak memory per arm (CPU: one subprocess forward per arm and size); default on")
    parser.add_argument("--flops", default="on", choices=["on", "off"], help="FLOPs per arm (one forward)")
    parser.add_argument("--worker-timeout", type=int, default=3600, help="seconds for a CPU memory subprocess")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs (default 0)")
    parser.add_argument("--out", help="JSON output (default: benchmarks/bench-<model>-<device>.json in a repository "
                                      "checkout, else bench-<model>-<device>.json in the current folder)")
    parser.add_argument("--plot", help="PNG output (default: the JSON path with .png)")
    parser.add_argument("--plot-only", nargs="+", metavar="JSON",
                        help="redraw the plot from existing bench JSON files (to --plot) and exit")


def settings_from(args: argparse.Namespace) -> BenchSettings:
    """The measurement's settings from the parsed options; ``args.argv`` (else this process's command line after
    ``bench``) is recorded as the command."""
    argv = getattr(args, "argv", None) or argv_after("bench")
    return BenchSettings(
        model=args.model, checkpoint=args.checkpoint, sizes=args.sizes, arms=args.arms, plans=args.plan or [],
        runs=args.runs, warmup=args.warmup, device=args.device, dtype=args.dtype, batch=args.batch,
        threads=args.threads, protocol=args.protocol, window=args.window, memory=args.memory == "on",
        flops=args.flops == "on", worker_timeout=args.worker_timeout, seed=args.seed,
        command=shlex.join(["nystra-hub", "bench", *argv]))


def run(args: argparse.Namespace) -> int:
    if args.plot_only:
        reports = [json.loads(Path(p).read_text()) for p in args.plot_only]
        out = args.plot or str(Path(args.plot_only[0]).with_suffix(".png"))
        print(f"wrote {plot_bench(reports, out)}")
        return 0
    if not args.model:
        raise SystemExit("bench: --model is required")
    if args.list_arms:
        source = resolve_model(args.model, args.checkpoint)
        recipe = paper_recipe(source.arch, source.task)
        for arm in standard_arms(source, recipe).values():
            print(f"{arm.letter or '-':>3}  {arm.name:<28} {arm.description}")
        return 0
    if args.runs < 1 or args.warmup < 0:
        raise SystemExit("bench: --runs must be >= 1 and --warmup >= 0")
    name = Path(args.model).name if Path(args.model).is_dir() else args.model
    out = Path(args.out) if args.out else default_output(f"bench-{name}-{args.device.replace(':', '')}")
    print(f"bench: sizes {' '.join(map(str, args.sizes))}, {args.runs} timed rounds; results go to {out}"
          + ("" if args.out or out.parent.name == "benchmarks" else " (no benchmarks/ folder here)"), flush=True)
    report = run_bench(settings_from(args), log=lambda m: print(m, flush=True))
    atomic_write_json(out, report, indent=1)
    plot = plot_bench([report], args.plot or out.with_suffix(".png"))
    print(f"wrote {out} and {plot}")
    print_table(report)
    return 0


def print_table(report: dict) -> None:
    """Per size: each arm's median, its speedups against the reference arms, peak memory and FLOPs."""
    refs = report["references"]
    for result in report["results"]:
        print(f"\nsize {result['size']} ({report['settings']['device']}, {report['settings']['threads']} threads)")
        print(f"{'arm':<26}{'median ms':>11}{'vs a':>8}{'vs f':>8}{'vs c':>8}{'vs o':>8}{'peak MiB':>10}"
              f"{'GFLOP':>9}{'GFLOP/s':>9}")
        for name, entry in result["arms"].items():
            if entry.get("error") and not entry.get("times_s"):
                print(f"{name:<26}  error: {entry['error'][:80]}")
                continue
            cells = []
            for letter in ("a", "f", "c", "o"):
                v = entry.get("speedup", {}).get(f"{letter}:{refs.get(letter)}")
                cells.append(f"{v:8.2f}" if v else f"{'-':>8}")
            peak = entry.get("peak_rss_bytes", entry.get("peak_bytes"))
            print(f"{name:<26}{entry.get('median_s', float('nan')) * 1e3:11.1f}{''.join(cells)}"
                  f"{(peak / 2**20 if peak else float('nan')):10.0f}{(entry.get('flops') or 0) / 1e9:9.2f}"
                  f"{entry.get('gflops_per_s', float('nan')):9.1f}")
