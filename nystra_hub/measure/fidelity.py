"""How close each attention arm stays to the exact model, and to the ground truth (:func:`run_fidelity`; the
command is ``nystra-hub fidelity``, :mod:`nystra_hub.cli.fidelity`).

Metrics follow the official evaluation protocols of each architecture (PSNR and SSIM on Y or RGB, 8-bit or
float, border crop): :mod:`nystra_hub.measure.metrics`.

Each arm is scored against the exact model's own output (how much the approximation changes the function) and
against the ground truth; the per-layer diagnostic replays each attention module's exact-run inputs through the
arm's implementation (:func:`layer_errors`).

JSON (``schema: "nystra_hub.fidelity/1"``, one file per model; PSNR in dB, null where infinite)::

    {schema, created, command, model: {... as in bench ...},
     training: {command, steps, train_seconds, heldout_psnr, heldout_input_psnr,
                ablations (reference.json's: position bias dropped, exact at twice the window)} | null,
     task: {name: "sr"|"denoise"|"dehaze", scale, sigma, description},
     protocol: {name, channel, quantisation, border_crop, ssim, source},
     recipe: {window, landmarks, iters, tau, source},
     images: [{image, input_shape, gt_shape, input, ...degradation parameters}],
     input_baseline: {description, psnr_gt, ssim_gt, per_image: [...]},
     reference_arm: "exact",
     arms: {<name>: {config: {... arm as in bench ...}, error, seconds, [evaluated_with], [same_as],
                     psnr_vs_exact, ssim_vs_exact, identical_images, psnr_gt, ssim_gt,
                     delta_psnr_gt, delta_ssim_gt,                       # arm minus exact, vs ground truth
                     per_image: [{image, psnr_gt, ssim_gt, psnr_vs_exact, ssim_vs_exact, identical_to_exact}],
                     layer_diagnostic: {rel_error_mean, rel_error_max,
                                        layers: [{module, window, tokens, rel_error, max_abs_error}],
                                        [attention_stats: [{module, tokens, entropy_normalised,
                                                            max_prob_mean}]]}}},   # stats: exact arm only
     sweep: {landmarks_trained_window: {"<m>": <arm>}, landmarks_enlarged_window: {"<m>": <arm>},
             enlarged_window, enlarged_form},
     diagnostic: {images, method}, environment: {...}}
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from nystra_hub.attention import attention_modules
from nystra_hub.attention.baselines import set_performer_features
from nystra_hub.io.variants import get_variant
from nystra_hub.measure.arms import (
    FIDELITY_DEFAULT,
    Arm,
    ModelSource,
    forward_fn,
    make_arm_model,
    paper_recipe,
    plan_arms,
    resolve_model,
    select_arms,
    standard_arms,
    sweep_arm,
)
from nystra_hub.measure.data import Task, list_images
from nystra_hub.measure.environment import environment
from nystra_hub.measure.metrics import PROTOCOLS, Protocol, score
from nystra_hub.measure.references import recipe_task

SCHEMA_FIDELITY = "nystra_hub.fidelity/1"
DEFAULT_LANDMARKS = (4, 8, 16, 32)  # the landmarks sweep at the trained window
DEFAULT_LANDMARKS_ENLARGED = (8, 16, 32, 64)  # ... and at the recipe's enlarged window, paper form


@dataclass(frozen=True)
class FidelitySettings:
    """What one fidelity run scores, besides the model (the options of ``nystra-hub fidelity``, which records its
    command line in ``command``)."""

    checkpoint: str | None = None  # the released checkpoint of a variant model
    arms: list[str] | None = None  # names or letters; None: FIDELITY_DEFAULT
    plans: list[str] = field(default_factory=list)  # per-layer plan files, one extra arm each
    landmarks: list[int] = field(default_factory=lambda: list(DEFAULT_LANDMARKS))
    landmarks_enlarged: list[int] = field(default_factory=lambda: list(DEFAULT_LANDMARKS_ENLARGED))
    images: int | None = None  # only the first N held-out images (None: all)
    diag_images: int = 1  # images for the per-layer diagnostic (0: off)
    seed: int = 0  # for building the model (its weights where none are loaded)
    testsets: str | None = None  # the standard test sets' folder (None: $NYSTRA_HUB_TESTSETS, else ../shared)
    command: str = "nystra-hub fidelity"  # what the report records as the command that made it


# -- per-layer diagnostic ----------------------------------------------------------------------------------------
class _Capture:
    """Forward hooks on every attention module: record (args, kwargs, output) of each call."""

    def __init__(self, model: nn.Module, stats: bool = False) -> None:
        self.calls: list[tuple[str, nn.Module, tuple, dict, Tensor]] = []
        self.stats: dict[str, list[tuple[float, float, int]]] = {}
        self.handles = []
        for name, module in attention_modules(model):
            self.handles.append(module.register_forward_hook(self._hook(name), with_kwargs=True))
            if stats:
                self.handles.append(module.register_attention_hook(self._stats_hook(name)))

    def _hook(self, name: str):
        def hook(module, args, kwargs, output):
            clone = lambda v: v.detach().clone() if isinstance(v, Tensor) else v  # noqa: E731
            self.calls.append((name, module, tuple(clone(a) for a in args),
                               {k: clone(v) for k, v in kwargs.items()}, output.detach().clone()))

        return hook

    def _stats_hook(self, name: str):
        """Record the exact attention's row entropy / max probability (softmax arm only)."""

        def hook(module, q, k, v, bias, mask, window, out):
            logits = (q * module.scale) @ k.transpose(-2, -1)
            if bias is not None:
                logits = logits + bias.unsqueeze(0)
            if mask is not None:
                n_w, n = mask.num_windows, q.shape[-2]
                logits = (logits.view(-1, n_w, module.num_heads, n, n)
                          + mask.additive.unsqueeze(1).unsqueeze(0)).view(-1, module.num_heads, n, n)
            p = logits.softmax(dim=-1)
            entropy = -(p * p.clamp_min(1e-30).log()).sum(-1) / math.log(q.shape[-2])
            self.stats.setdefault(name, []).append((float(entropy.mean()), float(p.amax(-1).mean()),
                                                    q.shape[-2]))

        return hook

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


CHUNKED = {"softmax": "exact-chunked", "sdpa": "exact-chunked", "exact-paper": "exact-paper-chunked"}


def memory_bounded(arm: Arm) -> Arm:
    """The arm evaluated with the same function but a memory-bounded exact implementation at enlarged windows
    (a window-64 score matrix of a whole image does not fit in memory); unchanged otherwise."""
    if arm.window is not None and arm.attn_impl in CHUNKED:
        return dataclasses.replace(arm, attn_impl=CHUNKED[arm.attn_impl])
    return arm


def layer_errors(base: nn.Module, arm: Arm, x01: Tensor, with_stats: bool = False) -> dict:
    """Per-layer attention-output error of ``arm`` on the same inputs as exact attention.

    The model is set up with the arm's window (bias resized, modulators dropped when the arm drops them) but
    exact softmax attention with bias and mask; every attention module's inputs and outputs are captured on
    ``x01`` (official inference), then each module is re-run on its captured inputs with the arm's
    implementation. Error: ‖approx − exact‖_F / ‖exact‖_F and max |approx − exact| per module call (after the
    module's output projection where it has one). 0 for the exact arm by construction.
    """
    arm = memory_bounded(arm)
    reference_arm = memory_bounded(Arm(name="reference", letter="", description="", attn_impl="softmax",
                                       window=arm.window, window_method=arm.window_method,
                                       drop_modulator=arm.drop_modulator))
    model = make_arm_model(base, reference_arm)
    capture = _Capture(model, stats=with_stats)
    try:
        with torch.no_grad():
            model.official_inference(x01)
    finally:
        capture.close()
    model.set_attn_impl(arm.attn_impl, **(arm.nystra or {}))
    if arm.performer_features is not None:
        set_performer_features(model, arm.performer_features)
    layers = []
    with torch.no_grad():
        for name, module, args, kwargs, exact in capture.calls:
            approx = module(*args, **kwargs)
            diff = (approx.double() - exact.double())
            norm = float(exact.double().norm())
            layers.append({"module": name, "window": list(module.window_size), "tokens": int(exact.shape[-2]),
                           "rel_error": float(diff.norm()) / norm if norm else 0.0,
                           "max_abs_error": float(diff.abs().max())})
    rel = [row["rel_error"] for row in layers]
    result = {"layers": layers, "rel_error_mean": float(np.mean(rel)) if rel else None,
              "rel_error_max": float(np.max(rel)) if rel else None}
    if with_stats:
        result["attention_stats"] = [
            {"module": name, "tokens": vals[0][2], "entropy_normalised": float(np.mean([v[0] for v in vals])),
             "max_prob_mean": float(np.mean([v[1] for v in vals]))}
            for name, vals in capture.stats.items()
        ]
    return result


# -- the measurement ---------------------------------------------------------------------------------------------
def task_for(source: ModelSource) -> tuple[Task, list[str]]:
    """(Task, images) for a reference folder (from its reference.json) or a released SR/denoise variant."""
    if source.kind == "reference":
        return recipe_task(source.info), list(source.info["heldout_images"])
    if source.task in ("classical-sr", "lightweight-sr"):
        task = Task("sr", scale=source.scale, protocol="swinir-sr", description="bicubic SR")
    elif source.task == "denoise-color":
        task = Task("denoise", sigma=float(get_variant(source.name).level), protocol="rgb-uint8",
                    description="color Gaussian denoising")
    else:
        raise SystemExit(f"fidelity: no degradation defined for task {source.task!r}; use a reference model")
    return task, list_images("Set5") + list_images("Set14")


def _arm_key(base: nn.Module, arm: Arm) -> tuple:
    exact = arm.attn_impl in ("softmax", "sdpa", "exact-paper")
    params = None
    if not exact:
        first = next(attention_modules(base))[1]
        effective = first.nystra.replace(**(arm.nystra or {})).as_dict()
        if not base.spec.shift_masks:
            effective["mask"] = None  # no shift masks: the mask mode changes nothing
        params = tuple(sorted(effective.items()))
    features = arm.performer_features if arm.attn_impl == "performer" else None
    plan = json.dumps(arm.plan, sort_keys=True) if getattr(arm, "plan", None) else None  # a plan changes layers
    return (arm.backend, arm.attn_impl, arm.window, arm.window_method if arm.window else None, arm.drop_modulator,
            params, features, plan, arm.dtype)


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def run_fidelity(model_spec: str, settings: FidelitySettings, log=print) -> dict:
    source = resolve_model(model_spec, settings.checkpoint)
    recipe = paper_recipe(source.arch, source.task)
    task, images = task_for(source)
    if settings.images:
        images = images[: settings.images]
    protocol = PROTOCOLS[task.protocol]
    base = source.build(settings.seed)
    arms, sweep = _fidelity_arms(source, recipe, settings)
    pairs = []
    for name in images:
        degraded, gt, info = task.heldout_pair(name, settings.testsets)
        pairs.append((name, degraded.unsqueeze(0), gt, info))
    log(f"{source.name}: {len(arms)} arms x {len(pairs)} images ({protocol.name})")
    session = FidelitySession(source, task, protocol, base, pairs, settings.diag_images, log)
    results = _score_arms(session, arms)
    baseline_rows = _input_baseline(session)
    _add_deltas_to_exact(results)
    return _fidelity_report(session, settings, recipe, results, baseline_rows, sweep)


@dataclass
class FidelitySession:
    """What scoring every arm of one model shares: the model, its task and protocol, the held-out pairs."""

    source: ModelSource
    task: Task
    protocol: Protocol
    base: nn.Module
    pairs: list[tuple[str, Tensor, Tensor, dict]]  # (image, degraded (1, C, h, w), ground truth (C, H, W), info)
    diag_images: int  # images for the per-layer diagnostic (0: off)
    log: Callable[[str], None]


def _fidelity_arms(source: ModelSource, recipe: dict, settings: FidelitySettings) -> tuple[list[Arm], dict]:
    """(the arms to score, exact first; the landmarks sweeps {"trained_window"|"enlarged_window": {m: arm}})."""
    available = standard_arms(source, recipe)
    arms = select_arms(available, settings.arms or FIDELITY_DEFAULT, recipe) + plan_arms(settings.plans)
    uformer = source.spec_of_arch.modulators  # the paper's recipe drops the decoder modulators too
    sweep = {"trained_window": {}, "enlarged_window": {}}
    for m in settings.landmarks:
        arm = sweep_arm(m, None, recipe, paper_form=False, uformer=uformer)
        sweep["trained_window"][m] = arm.name
        arms.append(arm)
    for m in settings.landmarks_enlarged:
        arm = sweep_arm(m, recipe["window"], recipe, paper_form=True, uformer=uformer)
        sweep["enlarged_window"][m] = arm.name
        arms.append(arm)
    if arms[0].name != "exact":
        arms.insert(0, available["exact"])
    return arms, sweep


def _score_arms(session: FidelitySession, arms: list[Arm]) -> dict[str, dict]:
    """Every arm's entry; an arm computing the same function as one already scored copies its scores."""
    exact_outputs: list[Tensor] = []  # filled by the exact arm, which comes first
    results: dict[str, dict] = {}
    done: dict[tuple, str] = {}
    for arm in arms:
        key = _arm_key(session.base, arm)
        if key in done:
            results[arm.name] = {**copy.deepcopy(results[done[key]]), "same_as": done[key], "config": arm.config()}
            continue
        results[arm.name] = _score_arm(session, arm, exact_outputs)
        done[key] = arm.name
    return results


def _score_arm(session: FidelitySession, arm: Arm, exact_outputs: list[Tensor]) -> dict:
    """One arm's entry: scores per image and their means, the per-layer diagnostic; or the error it failed with."""
    entry = {"config": arm.config(), "per_image": [], "error": None}
    start = time.perf_counter()
    try:
        evaluated = memory_bounded(arm)
        if evaluated is not arm:
            entry["evaluated_with"] = evaluated.attn_impl
        model = make_arm_model(session.base, evaluated)
        fn = forward_fn(model, session.source, "official", getattr(torch, arm.dtype or "float32"))
        for idx, (name, degraded, gt, _) in enumerate(session.pairs):
            with torch.no_grad():
                out = fn(degraded)[0].float()
            if arm.name == "exact":
                exact_outputs.append(out)
            entry["per_image"].append(_image_scores(session, name, out, gt, exact_outputs[idx]))
        del model
    except Exception as err:  # noqa: BLE001 - an arm that fails is reported, the others still run
        entry["error"] = f"{type(err).__name__}: {err}"
        session.log(f"  {arm.name}: failed ({entry['error'][:200]})")
        return entry
    entry["seconds"] = round(time.perf_counter() - start, 2)
    rows = entry["per_image"]
    entry.update(
        psnr_gt=_mean([r["psnr_gt"] for r in rows]), ssim_gt=_mean([r["ssim_gt"] for r in rows]),
        psnr_vs_exact=_mean([r["psnr_vs_exact"] for r in rows]),
        ssim_vs_exact=_mean([r["ssim_vs_exact"] for r in rows]),
        identical_images=sum(r["identical_to_exact"] for r in rows),
    )
    if arm.backend != "spandrel" and session.diag_images:
        diags = [layer_errors(session.base, arm, session.pairs[i][1], with_stats=arm.name == "exact")
                 for i in range(min(session.diag_images, len(session.pairs)))]
        entry["layer_diagnostic"] = _merge_diagnostics(diags)
    layer_error = entry.get("layer_diagnostic", {}).get("rel_error_mean")
    session.log(f"  {arm.name:<28} vs exact {format_number(entry['psnr_vs_exact'])} dB / "
                f"{entry['ssim_vs_exact']:.4f}   vs GT {format_number(entry['psnr_gt'])} dB / {entry['ssim_gt']:.4f}"
                f"   layer err {format_number(layer_error, '.2e')}   {entry['seconds']:.0f}s")
    return entry


def _image_scores(session: FidelitySession, name: str, out: Tensor, gt: Tensor, exact: Tensor) -> dict:
    """One image's row: scores against the ground truth and against the exact model's output."""
    protocol, scale = session.protocol, session.task.scale
    vs_gt = score(out, gt, protocol, scale)
    vs_exact = score(out, exact, protocol, scale)
    return {"image": name, "psnr_gt": vs_gt["psnr"], "ssim_gt": vs_gt["ssim"],
            "psnr_vs_exact": _finite(vs_exact["psnr"]), "ssim_vs_exact": vs_exact["ssim"],
            "identical_to_exact": math.isinf(vs_exact["psnr"])}


def _input_baseline(session: FidelitySession) -> list[dict]:
    """Per image: the degraded input brought to the ground truth's size, scored against it."""
    task, rows = session.task, []
    for name, degraded, gt, info in session.pairs:
        base_scores = score(task.input_baseline(degraded[0], gt), gt, session.protocol, task.scale)
        rows.append({"image": name, "psnr_gt": base_scores["psnr"], "ssim_gt": base_scores["ssim"], **info})
    return rows


def _add_deltas_to_exact(results: dict[str, dict]) -> None:
    """Each arm's ground-truth PSNR/SSIM minus the exact arm's."""
    exact = results["exact"]
    for entry in results.values():
        if entry.get("psnr_gt") is not None and exact.get("psnr_gt") is not None:
            entry["delta_psnr_gt"] = entry["psnr_gt"] - exact["psnr_gt"]
            entry["delta_ssim_gt"] = entry["ssim_gt"] - exact["ssim_gt"]


def _fidelity_report(session: FidelitySession, settings: FidelitySettings, recipe: dict, results: dict,
                     baseline_rows: list[dict], sweep: dict) -> dict:
    task, pairs = session.task, session.pairs
    return {
        "schema": SCHEMA_FIDELITY,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": settings.command,
        "model": session.source.describe(session.base),
        "training": _training_summary(session.source),
        "task": {"name": task.name, "scale": task.scale, "sigma": task.sigma, "description": task.description},
        "protocol": session.protocol.describe(task.scale),
        "recipe": recipe,
        "images": [{"image": n, "input_shape": list(d.shape[1:]), "gt_shape": list(g.shape), **i}
                   for n, d, g, i in pairs],
        "input_baseline": {"description": task.baseline_name, "psnr_gt": _mean([r["psnr_gt"] for r in baseline_rows]),
                           "ssim_gt": _mean([r["ssim_gt"] for r in baseline_rows]), "per_image": baseline_rows},
        "reference_arm": "exact",
        "arms": results,
        "sweep": {"landmarks_trained_window": {str(k): v for k, v in sweep["trained_window"].items()},
                  "landmarks_enlarged_window": {str(k): v for k, v in sweep["enlarged_window"].items()},
                  "enlarged_window": recipe["window"], "enlarged_form": "paper (bias, masks dropped)"},
        "diagnostic": {"images": min(settings.diag_images, len(pairs)),
                       "method": layer_errors.__doc__.split("\n\n")[1].strip().replace("\n", " ")},
        "environment": environment(torch.device("cpu")),
    }


def _training_summary(source: ModelSource) -> dict | None:
    if source.kind != "reference":
        return None
    info = source.info
    held = info.get("heldout", {})
    return {"command": info.get("command"), "steps": info.get("training", {}).get("steps"),
            "train_seconds": info.get("training", {}).get("train_seconds"),
            "heldout_psnr": held.get("psnr"), "heldout_input_psnr": held.get("input_psnr"),
            "ablations": info.get("ablations")}


def _merge_diagnostics(diags: list[dict]) -> dict:
    if len(diags) == 1:
        return diags[0]
    merged = copy.deepcopy(diags[0])
    for i, row in enumerate(merged["layers"]):
        row["rel_error"] = float(np.mean([d["layers"][i]["rel_error"] for d in diags]))
        row["max_abs_error"] = float(np.max([d["layers"][i]["max_abs_error"] for d in diags]))
    rel = [row["rel_error"] for row in merged["layers"]]
    merged["rel_error_mean"], merged["rel_error_max"] = float(np.mean(rel)), float(np.max(rel))
    return merged


def format_number(value, spec: str = ".2f") -> str:
    """``value`` formatted by ``spec``; "  n/a" for None (an arm or score that was not measured)."""
    return "  n/a" if value is None else format(value, spec)
