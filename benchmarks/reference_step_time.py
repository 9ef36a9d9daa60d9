"""What training a reference model further would cost on this machine's CPU (issue 26 item 2: the card says why a
reference model whose window limits it has not been trained further).

    python benchmarks/reference_step_time.py dehazeformer-ref-t --planned-steps 6000 --threads 2 \
        --out reference_models/dehazeformer-ref-t/training-cost.json

Times ``--steps`` training steps of the recipe at its own batch on the CPU (median after two warm-up steps, the
model thrown away: ``nystra_hub.training.reference.probe_step_seconds``) and writes them with the further steps
planned for it (``benchmarks/gpu_session.sh``'s schedule); the cards render the estimate from this file.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from nystra_hub.io.images import atomic_write_json
from nystra_hub.measure.environment import environment
from nystra_hub.training.reference import RECIPES, probe_step_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", choices=sorted(RECIPES))
    parser.add_argument("--planned-steps", type=int, required=True,
                        help="further steps planned for the model (benchmarks/gpu_session.sh: STEPS)")
    parser.add_argument("--steps", type=int, default=12, help="timed steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe = RECIPES[args.recipe]
    seconds = probe_step_seconds(recipe, recipe.batch, "cpu", None, steps=args.steps)
    report = {"schema": 1, "kind": "training_cost", "recipe": recipe.name,
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "command": "python benchmarks/reference_step_time.py " + " ".join(sys.argv[1:]),
              "planned_steps": args.planned_steps, "planned_by": "benchmarks/gpu_session.sh",
              "cpu": {"batch": recipe.batch, "threads": args.threads, "timed_steps": args.steps,
                      "seconds_per_step": seconds, "planned_hours": seconds * args.planned_steps / 3600},
              "environment": environment(torch.device("cpu"))}
    atomic_write_json(args.out, report, indent=1)
    print(f"{recipe.name}: {seconds:.2f} s a step of batch {recipe.batch} on the CPU ({args.threads} threads); "
          f"{args.planned_steps} steps: {report['cpu']['planned_hours']:.1f} h")


if __name__ == "__main__":
    main()
