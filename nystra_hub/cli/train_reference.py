"""``nystra-hub train-reference``: train one of the small reference models
(:mod:`nystra_hub.training.reference`) and write its folder, or train in pieces through a saved state
(``--state``, ``--resume``, ``--no-eval``)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from nystra_hub.measure.references import REFERENCE_WEIGHTS
from nystra_hub.training.reference import (
    AMP_MODES,
    BIAS_INITS,
    DEFAULT_REFERENCE_DIR,
    RECIPES,
    Recipe,
    display_path,
    probe_step_seconds,
    train,
    write_reference_folder,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", required=True, choices=sorted(RECIPES), help="which reference model")
    parser.add_argument("--out", help="output folder (default reference_models/<recipe>)")
    parser.add_argument("--steps", help="optimizer steps (default: the recipe's, or the resumed run's); 'auto' "
                                        "with --max-minutes: as many as fit, from a measured step time")
    parser.add_argument("--batch", type=int, help="batch size (default: the recipe's)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default: the recipe's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--amp", choices=AMP_MODES, default=None,
                        help="mixed precision (default: bf16 autocast on CUDA, none on CPU)")
    parser.add_argument("--state", help="training-state file: saved every --save-every steps and at the end")
    parser.add_argument("--save-every", type=int, default=None, help="save the state every N steps")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run saved in --state (settings must match; steps default to its own)")
    parser.add_argument("--no-eval", action="store_true",
                        help="train and save the state only (evaluate and write the folder later with --resume)")
    parser.add_argument("--stop-at", type=int, default=None,
                        help="stop after this many steps without changing the schedule (reproduces a run that "
                             "hit --max-minutes)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop early after this wall time (of this piece, when resuming)")
    parser.add_argument("--init-from", default=None, metavar="FOLDER",
                        help="fine-tune the weights of this reference folder (of the same recipe) instead of "
                             "training from a fresh initialisation")
    parser.add_argument("--bias-lr-scale", type=float, default=1.0,
                        help="learning-rate multiplier of the position-bias parameters (bias tables, DehazeFormer's "
                             "meta MLPs); default 1")
    parser.add_argument("--attention-lr-scale", type=float, default=1.0,
                        help="learning-rate multiplier of the attention modules' other parameters (q/k/v and "
                             "output projections); default 1")
    parser.add_argument("--bias-init", choices=BIAS_INITS, default="trained",
                        help="trained (default: the initialisation, or --init-from's tables) or locality: bias "
                             "tables set to a per-head distance penalty before training (apply_locality_prior)")
    parser.add_argument("--locality-strength", type=float, default=1.0,
                        help="with --bias-init locality: the slope of head 0's distance penalty (head h gets "
                             "strength·2^−h; default 1)")
    parser.add_argument("--heldout-limit", type=int, default=None,
                        help="evaluate on only the first N held-out images (quick checks)")
    parser.add_argument("--testsets", default=None, help="test image root (default ../shared/testsets)")
    parser.add_argument("--log-every", type=int, default=25, help="print the mean loss every N steps")


def reproducing_command(args: argparse.Namespace, out: Path, record: dict) -> str:
    """The command that trains this model from scratch in one go (the device and precision it was trained in)."""
    parts = ["nystra-hub", "train-reference", "--recipe", args.recipe, "--out", display_path(out),
             "--steps", str(record["planned_steps"]), "--batch", str(record["batch"]), "--lr", repr(record["lr"]),
             "--seed", str(args.seed)]
    if record["device"] == "cpu":
        parts += ["--threads", str(record["threads"])]
    else:
        parts += ["--device", record["device"], "--amp", record["amp"]]
    if record["steps"] < record["planned_steps"]:
        parts += ["--stop-at", str(record["steps"])]
    if record.get("init_from"):
        parts += ["--init-from", record["init_from"]["folder"]]
    if record.get("position_bias_lr_scale", 1.0) != 1.0:
        parts += ["--bias-lr-scale", repr(record["position_bias_lr_scale"])]
    if record.get("attention_lr_scale", 1.0) != 1.0:
        parts += ["--attention-lr-scale", repr(record["attention_lr_scale"])]
    if record.get("position_bias_init", "trained") != "trained":
        parts += ["--bias-init", record["position_bias_init"]]
    if record.get("locality_strength", 1.0) != 1.0:
        parts += ["--locality-strength", repr(record["locality_strength"])]
    if args.heldout_limit is not None:
        parts += ["--heldout-limit", str(args.heldout_limit)]
    return shlex.join(parts)


def resolve_steps(args: argparse.Namespace, recipe: Recipe, batch: int, log) -> int:
    """--steps: a number, the resumed run's, the recipe's, or 'auto' (fill --max-minutes at the measured rate)."""
    if args.steps not in (None, "auto"):
        return int(args.steps)
    if args.resume and args.state and Path(args.state).is_file():
        saved = torch.load(args.state, map_location="cpu", weights_only=False)["run"]["settings"]
        return int(saved["steps"])
    if args.steps is None:
        return recipe.steps
    if not args.max_minutes:
        raise SystemExit("train-reference: --steps auto needs --max-minutes")
    seconds = probe_step_seconds(recipe, batch, args.device, args.amp, args.testsets)
    steps = max(1, int(args.max_minutes * 60 * 0.93 / seconds))  # 7 % slack for start-up, logging, saving
    log(f"measured {seconds * 1e3:.1f} ms per step: {steps} steps fill {args.max_minutes:g} min")
    return steps


def run(args: argparse.Namespace) -> int:
    recipe = RECIPES[args.recipe]
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    out = Path(args.out) if args.out else DEFAULT_REFERENCE_DIR / recipe.name
    batch = recipe.batch if args.batch is None else args.batch
    steps = resolve_steps(args, recipe, batch, log)
    log(f"training {recipe.name} ({recipe.arch}, {recipe.task.description}) for {steps} steps on {args.device}")
    model, record = train(
        recipe, steps=steps, batch=batch, lr=args.lr, seed=args.seed, threads=args.threads, stop_at=args.stop_at,
        max_minutes=args.max_minutes, root=args.testsets, log_every=args.log_every, log=log, device=args.device,
        amp=args.amp, state_path=args.state, save_every=args.save_every, resume=args.resume,
        init_from=args.init_from, bias_lr_scale=args.bias_lr_scale, bias_init=args.bias_init,
        locality_strength=args.locality_strength,
        attention_lr_scale=args.attention_lr_scale,
    )
    log(f"trained {record['steps']} steps in {record['train_seconds']:.0f}s")
    if args.no_eval:
        return 0
    folder = write_reference_folder(
        model, recipe, record, out, command=reproducing_command(args, out, record),
        argv=shlex.join(["nystra-hub", *sys.argv[1:]]) if sys.argv else None, testsets=args.testsets,
        heldout_limit=args.heldout_limit, log=log)
    log(f"wrote {folder} ({(folder / REFERENCE_WEIGHTS).stat().st_size / 1e6:.2f} MB weights)")
    return 0
