"""The GPU measurement behind the model cards' GPU columns: the options of ``benchmarks/gpu.sh``, which runs this
script on a bare GPU machine (no network, the checkout on PYTHONPATH).

The measurement itself, its arms and its JSON are :mod:`nystra_hub.measure.gpu`; this script only reads the
options and names the output folder. ``--dry-run`` runs every code path on the CPU with tiny models and sizes in
seconds (CI runs it).
"""

from __future__ import annotations

import argparse
import sys

from nystra_hub.measure.gpu import GpuBenchSettings, run_gpu_bench


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (gpu-bench.json)")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny models and sizes, 1 run: seconds")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--budget-s", type=float, default=300, help="stop starting new sizes after this")
    parser.add_argument("--arms", nargs="*", help="only these arms")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stress-bias", type=float, default=None,
                        help="added to every MLP output bias in the fp16 stress (default 3000; dry run 40000)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    settings = GpuBenchSettings(dry_run=args.dry_run, runs=args.runs, budget_s=args.budget_s, arms=args.arms,
                                seed=args.seed, stress_bias=args.stress_bias,
                                command=" ".join(["benchmarks/gpu.sh", *argv]))
    run_gpu_bench(settings, args.out, log=lambda message: print(message, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
