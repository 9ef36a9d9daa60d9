"""``nystra_hub.calibrate``: choose, per attention layer, exact or Nyström (landmarks, iterations) by measurement.

The goal is the fastest model whose quality stays within a budget (default 0.1 dB of PSNR) of the exact model,
on calibration images. Everything is measured on this machine, nothing is assumed:

1. **Speed per layer.** During one forward pass at the calibration size, each attention module's enclosing block
   is timed on its own input with every candidate (softmax, sdpa, each Nyström setting); the gain of a candidate
   is the block's time under the fastest exact implementation minus its time under the candidate.
2. **Cost per layer.** Each Nyström candidate is switched on in one layer at a time and the whole model is run
   on the calibration images; its cost is the mean squared change of the output against the exact output.
3. **Greedy selection.** Candidates with a positive gain are taken in order of gain per unit of cost while the
   predicted total (the per-layer costs add up: errors of different layers are nearly uncorrelated) stays under
   the budget; the combination is then verified end to end and trimmed until the measured drop fits.
4. **Speed check.** The whole model is timed with the selection and exact, interleaved. A selection that is not
   faster end to end (per-layer gains of a few percent are easily lost to noise; a larger window in one layer
   makes SwinIR and Uformer pad the whole image to a multiple of it) is retried without its window changes, then
   dropped for all-exact; the report keeps what was rejected under ``speed["rejected"]``.

The budget is a drop in PSNR against ground truth. With ``targets`` it is measured directly: mean PSNR of the
exact model minus that of the calibrated one. Without ground truth the exact model's output stands in for it:
if the approximation's error e is independent of the model's own error r, the drop is 10·log10(1 + ‖e‖²/‖r‖²),
and ‖r‖² is taken from ``reference_psnr_db`` (the model's PSNR on its task; default 35 dB, stricter than the
PSNR of most restoration models, so the budget holds for them).

**Windows.** With ``windows=(16, ...)`` every layer also gets Nyström candidates at those windows: its block is
rebuilt at the window from the trained weights (bias table resized with ``window_resize``, masks and modulators
following), timed in a pass where all such layers run at that window (times are compared per input pixel, since
the model's padding depends on its windows), and costed one layer at a time like the others. At a fixed number of
landmarks Nyström's cost per token barely depends on the window, while exact attention's grows with it, so a
larger window pays only through Nyström, and only where its quality cost is small: that is what gets measured.
The chosen windows go into the plan (``"windows"``), which is applied to the trained model, not to a copy.

The chosen plan is applied to the model (recorded in ``model.provenance.plan``) and returned; saving the model
as a hub folder records it (``config.json`` ``nystra_plan``) so ``from_pretrained`` reproduces it.
"""

from __future__ import annotations

import copy
import functools
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from nystra_hub.attention import NystraParams, WindowAttentionBase, attention_modules
from nystra_hub.io.plan import apply_plan, extract_plan
from nystra_hub.measure.data import Task
from nystra_hub.measure.metrics import psnr

EXACT_IMPLS = ("sdpa", "softmax")


@dataclass(frozen=True)
class Candidate:
    attn_impl: str
    params: NystraParams | None = None
    window: int | None = None  # None: the window the layer was trained with

    @property
    def label(self) -> str:
        label = self.attn_impl if self.params is None else f"nystra m{self.params.landmarks} it{self.params.iters}"
        return label if self.window is None else f"w{self.window} {label}"


def default_candidates(module: WindowAttentionBase, windows: Sequence[int] = ()) -> list[Candidate]:
    """Nyström settings worth trying for one layer: fewer landmarks than tokens, the module's τ/bias/mask; at the
    trained window and at each of ``windows`` (landmarks 16/32/64 there, the iterations that matter most)."""
    n = module.window_size[0] * module.window_size[1]
    base = module.nystra
    out = []
    for landmarks in (8, 16, 32):
        if landmarks >= n:
            continue
        for iters in (2, 4, 6):
            out.append(Candidate("nystra", base.replace(landmarks=landmarks, iters=iters)))
    for window in windows:
        if window * window == n:
            continue
        for landmarks in (16, 32, 64):
            if landmarks < window * window:
                for iters in (2, 4):
                    out.append(Candidate("nystra", base.replace(landmarks=landmarks, iters=iters), window))
    return out


class _Blocks:
    """Each layer's enclosing block (what has ``set_window_size``) as trained and, built on demand, at other
    windows; :meth:`use` swaps the wanted one into the model. Resizing is not invertible (a bias table resized
    to 16 and back is not the trained one), so every variant is made from the trained block, never from another
    variant."""

    def __init__(self, model: nn.Module, names: Sequence[str], method: str) -> None:
        self.model, self.method = model, method
        self.trained = {name: _block_of(model, name) for name in names}
        self.variants: dict[tuple[str, int], nn.Module] = {}
        self.current = dict.fromkeys(names)

    def supports_windows(self, name: str) -> bool:
        return hasattr(self.trained[name], "set_window_size")

    def window_of(self, name: str, window: int | None) -> tuple[int, int]:
        """The attention window layer ``name`` really runs when its block is set to ``window`` (a block may
        clamp it, e.g. Uformer's at a stage smaller than the window)."""
        block = self.trained[name] if window is None else self.variant(name, window)
        return tuple(block.get_submodule(name[len(_block_name(name)):].lstrip(".")).window_size)

    def variant(self, name: str, window: int) -> nn.Module:
        if (name, window) not in self.variants:
            variant = copy.deepcopy(self.trained[name])
            variant.set_window_size(window, self.method)
            self.variants[(name, window)] = variant
        return self.variants[(name, window)]

    def use(self, name: str, window: int | None) -> WindowAttentionBase:
        """Put layer ``name``'s block at ``window`` (None: as trained) and return its attention module."""
        if self.current[name] != window:
            block = self.trained[name] if window is None else self.variant(name, window)
            parent, _, child = _block_name(name).rpartition(".")
            setattr(self.model.get_submodule(parent) if parent else self.model, child, block)
            self.current[name] = window
        return self.model.get_submodule(name)

    def restore(self) -> None:
        for name in self.trained:
            self.use(name, None)


@dataclass
class LayerReport:
    name: str
    exact_impl: str
    exact_ms: float
    times_ms: dict[str, float] = field(default_factory=dict)
    costs: dict[str, float] = field(default_factory=dict)  # mean squared output change (per pixel)
    chosen: str = ""


def _median_ms(fn, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(max(runs, 1)):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _set(module: WindowAttentionBase, candidate: Candidate) -> None:
    module.set_attn_impl(candidate.attn_impl, candidate.params or module.nystra)


def _block_name(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def _block_of(model: nn.Module, name: str) -> nn.Module:
    """The module whose forward wraps the attention module (partition, projection, mask): what gets timed."""
    parent = _block_name(name)
    return model.get_submodule(parent) if parent else model


def _timed_pass(model, x: Tensor, todo: dict[str, list[Candidate]], with_exact: bool, runs: int):
    """One forward pass in which each listed layer's block is timed on its own input with each candidate (and the
    exact implementations if ``with_exact``); inputs are not stored. Returns ({name: {label: ms}}, padded input
    area of the pass)."""
    times: dict[str, dict[str, float]] = {}
    area = []
    hooks = [model.register_forward_pre_hook(lambda _, args: area.append(args[0].shape[-2] * args[0].shape[-1]))]

    def make_hook(name: str):
        def hook(block, args, kwargs):
            module = model.get_submodule(name)
            saved = (module.attn_impl, module.nystra)
            layer_times = times.setdefault(name, {})
            options = [Candidate(impl) for impl in EXACT_IMPLS] if with_exact else []
            for cand in options + todo[name]:
                _set(module, cand)
                layer_times[cand.label] = _median_ms(lambda: block.forward(*args, **kwargs), runs)
            module.set_attn_impl(*saved)

        return hook  # calls block.forward: calling the block would re-enter this hook

    for name in todo:
        hooks.append(_block_of(model, name).register_forward_pre_hook(make_hook(name), with_kwargs=True))
    try:
        with torch.inference_mode():
            model.official_inference(x)
    finally:
        for h in hooks:
            h.remove()
    return times, area[0]


def _time_layers(model, x: Tensor, blocks: _Blocks, candidates: dict[str, list[Candidate]], runs: int, log):
    """Per-layer block timings: one pass at the trained windows (exact implementations and the candidates there),
    then one pass per other candidate window with every layer that has candidates at it switched to it. Times at
    another window are scaled to the trained pass's padded input area: the model pads to a multiple of its
    windows, and the per-pixel cost is what a layer contributes at any size."""
    reports: dict[str, LayerReport] = {}
    windows = sorted({c.window for cands in candidates.values() for c in cands if c.window is not None})
    base_area = None
    for window in [None, *windows]:
        todo = {name: [c for c in cands if c.window == window] for name, cands in candidates.items()}
        if window is not None:
            todo = {name: cands for name, cands in todo.items() if cands}
        for name in todo:
            blocks.use(name, window)
        times, area = _timed_pass(model, x, todo, window is None, runs)
        blocks.restore()
        if window is None:
            base_area = area
            for name, layer_times in times.items():
                exact_impl = min(EXACT_IMPLS, key=layer_times.__getitem__)
                reports[name] = LayerReport(name, exact_impl, layer_times[exact_impl], layer_times)
        else:
            for name, layer_times in times.items():
                reports[name].times_ms.update({k: t * base_area / area for k, t in layer_times.items()})
    for name, report in reports.items():
        best = min((t for k, t in report.times_ms.items() if k not in EXACT_IMPLS), default=float("nan"))
        log(f"  timed {name}: exact {report.exact_impl} {report.exact_ms:.2f} ms, best nystra {best:.2f} ms")
    return reports


def _end_to_end(model, x: Tensor, runs: int, use_calibrated, use_exact) -> dict:
    """Whole-model time of the selection and of the exact model, interleaved in this process (medians)."""
    calibrated_ms, exact_ms = [], []
    with torch.inference_mode():
        for _ in range(runs):
            use_calibrated()
            calibrated_ms.append(_median_ms(lambda: model.official_inference(x), 1))
            use_exact()
            exact_ms.append(_median_ms(lambda: model.official_inference(x), 1))
    exact, calibrated = statistics.median(exact_ms), statistics.median(calibrated_ms)
    return {"input_shape": list(x.shape), "exact_ms": exact, "calibrated_ms": calibrated,
            "speedup": exact / calibrated, "runs": runs}


def _outputs(model, inputs: Sequence[Tensor]) -> list[Tensor]:
    with torch.inference_mode():
        return [model.official_inference(x).double() for x in inputs]


def _mse(a: list[Tensor], b: list[Tensor]) -> float:
    return statistics.fmean(float(((x - y) ** 2).mean()) for x, y in zip(a, b))


def _mean_psnr(outputs: list[Tensor], targets: list[Tensor]) -> float:
    """Mean PSNR of [0, 1] outputs (clamped) against their targets (cropped to the output: SR modcrop)."""
    return statistics.fmean(psnr(out.clamp(0, 1), gt.double()[..., : out.shape[-2], : out.shape[-1]], data_range=1.0)
                            for out, gt in zip(outputs, targets))


def calibrate(
    model: nn.Module,
    images: Sequence[Tensor] | Tensor,
    budget_db: float = 0.1,
    *,
    targets: Sequence[Tensor] | None = None,
    candidates: dict[str, list[Candidate]] | None = None,
    reference_psnr_db: float = 35.0,
    timing_image: Tensor | None = None,
    timing_runs: int = 3,
    windows: Sequence[int] = (),
    window_resize: str = "bicubic",
    log=None,
) -> dict:
    """Choose a per-layer plan for ``model`` (a RestorationModel with trained weights) and apply it.

    ``images``: calibration inputs, [0, 1] (1, C, H, W) tensors (or one batch); ``targets``: their ground truth
    (optional, see the module docs); ``timing_image``: the input size to optimise speed for (default: the first
    image); ``windows``: other windows to try per layer (see the module docs), their position terms resized with
    ``window_resize``. Returns ``{"plan": ..., "report": ...}``; the plan is also recorded in
    ``model.provenance.plan``.
    """
    log = log or (lambda *_: None)
    model = getattr(model, "restoration_model", model)
    inputs = _calibration_inputs(images, targets, budget_db)
    layers = dict(attention_modules(model))
    if not layers:
        raise ValueError("the model has no attention modules to calibrate")
    blocks = _Blocks(model, list(layers), window_resize)
    candidates = _checked_candidates(layers, blocks, windows, candidates)
    original_plan = extract_plan(model)
    model.eval()
    run = _Calibration(model, layers, blocks, inputs, budget_db, log)
    run.measure_exact(targets, reference_psnr_db)
    timing_input = inputs[0] if timing_image is None else timing_image
    run.time_layers(candidates, timing_input, timing_runs)
    chosen, predicted = _greedy_selection(run.layer_options(candidates), run.allowed_mse)
    log(f"greedy selection: {len(chosen)} nystra layers, predicted MSE {predicted:.3g}")
    chosen, drop, speed = run.check_speed(chosen, timing_input, timing_runs)
    plan = run.apply_plan_to_model(chosen, drop, original_plan, window_resize)
    return {"plan": plan, "report": run.report(chosen, drop, speed, reference_psnr_db)}


def _calibration_inputs(images: Sequence[Tensor] | Tensor, targets: Sequence[Tensor] | None,
                        budget_db: float) -> list[Tensor]:
    """The calibration images as a list of (1, C, H, W) tensors; the budget and the targets checked."""
    if budget_db <= 0:
        raise ValueError(f"budget_db must be positive, got {budget_db}")
    inputs = [images[i : i + 1] for i in range(images.shape[0])] if isinstance(images, Tensor) else list(images)
    if not inputs:
        raise ValueError("calibrate needs at least one image")
    if targets is not None and len(targets) != len(inputs):
        raise ValueError(f"{len(inputs)} images but {len(targets)} targets")
    return inputs


def _checked_candidates(layers: dict[str, WindowAttentionBase], blocks: _Blocks, windows: Sequence[int],
                        candidates: dict[str, list[Candidate]] | None) -> dict[str, list[Candidate]]:
    """``candidates``, or the default ones per layer (with ``windows``); a window change a block cannot make
    raises."""
    if any(not isinstance(w, int) or isinstance(w, bool) or w < 2 for w in windows):
        raise ValueError(f"windows must be ints >= 2, got {list(windows)}")
    if candidates is None:
        candidates = {}
        for name, m in layers.items():
            # Only windows that change what the layer runs (a block may clamp a window to its stage's size).
            usable = [w for w in windows if blocks.supports_windows(name)
                      and blocks.window_of(name, w) != blocks.window_of(name, None)]
            candidates[name] = default_candidates(m, usable)
    for name, cands in candidates.items():
        if any(c.window is not None for c in cands) and not blocks.supports_windows(name):
            raise ValueError(f"layer {name!r} cannot change its window (its block has no set_window_size)")
    return candidates


# (candidate, gain in ms, cost in output MSE) per layer
Selection = dict[str, tuple[Candidate, float, float]]


def _greedy_selection(options: list[tuple[float, str, Candidate, float, float]],
                      allowed_mse: float) -> tuple[Selection, float]:
    """Take ``options`` (efficiency, layer, candidate, gain, cost; most efficient first) while the summed costs
    stay within ``allowed_mse``; a later option replaces a layer's earlier one when it gains more and still fits.
    Returns (selection, predicted MSE)."""
    chosen: Selection = {}
    predicted = 0.0
    for _, name, cand, gain, cost in options:
        if name in chosen:
            previous = chosen[name]
            if gain <= previous[1] or predicted - previous[2] + cost > allowed_mse:
                continue
            predicted -= previous[2]
        elif predicted + cost > allowed_mse:
            continue
        chosen[name] = (cand, gain, cost)
        predicted += cost
    return chosen, predicted


class _Calibration:
    """The state of one :func:`calibrate` run: the model and its layers (blocks at other windows included), the
    calibration inputs, the exact outputs they are compared with and the budget derived from them, the per-layer
    timings. Its methods switch layers and measure."""

    def __init__(self, model: nn.Module, layers: dict[str, WindowAttentionBase], blocks: _Blocks,
                 inputs: list[Tensor], budget_db: float, log) -> None:
        self.model, self.layers, self.blocks, self.inputs = model, layers, blocks, inputs
        self.budget_db, self.log = budget_db, log
        self.targets: list[Tensor] | None = None
        self.exact: list[Tensor] = []
        self.exact_psnr: float | None = None
        self.residual_mse = self.allowed_mse = math.nan
        self.reports: dict[str, LayerReport] = {}

    def measure_exact(self, targets: Sequence[Tensor] | None, reference_psnr_db: float) -> None:
        """Exact reference outputs (sdpa: exact and usually the fastest exact path) and the output MSE the budget
        allows: measured against ``targets`` or, without them, assumed from ``reference_psnr_db``."""
        for m in self.layers.values():
            m.set_attn_impl("sdpa")
        self.exact = _outputs(self.model, self.inputs)
        if targets is not None:
            self.targets = [t if t.dim() == 4 else t.unsqueeze(0) for t in targets]
            self.exact_psnr = _mean_psnr(self.exact, self.targets)
            self.residual_mse = statistics.fmean(
                float(((e.clamp(0, 1) - t.double()[..., : e.shape[-2], : e.shape[-1]]) ** 2).mean())
                for e, t in zip(self.exact, self.targets)
            )
        else:
            self.residual_mse = 10 ** (-reference_psnr_db / 10)
        self.allowed_mse = self.residual_mse * (10 ** (self.budget_db / 10) - 1)
        self.log(f"calibrating {len(self.layers)} layers on {len(self.inputs)} image(s); budget {self.budget_db} dB "
                 f"-> allowed output MSE {self.allowed_mse:.3g} ({'measured' if targets is not None else 'assumed'} "
                 f"model MSE {self.residual_mse:.3g})")

    def time_layers(self, candidates: dict[str, list[Candidate]], x: Tensor, runs: int) -> None:
        self.log("timing layers")
        self.reports = _time_layers(self.model, x, self.blocks, candidates, runs, self.log)
        for name, m in self.layers.items():
            m.set_attn_impl(self.reports[name].exact_impl)

    def use(self, name: str, cand: Candidate | None) -> None:
        """Layer ``name`` runs ``cand`` (None: its fastest exact implementation at the trained window)."""
        if cand is None:
            self.blocks.use(name, None).set_attn_impl(self.reports[name].exact_impl)
        else:
            _set(self.blocks.use(name, cand.window), cand)

    def apply(self, selection: Selection) -> None:
        for name in self.layers:
            self.use(name, selection[name][0] if name in selection else None)

    def measured_drop(self) -> float:
        """The PSNR drop of the model as it is now set, against the budget's reference."""
        outputs = _outputs(self.model, self.inputs)
        if self.targets is not None:
            return self.exact_psnr - _mean_psnr(outputs, self.targets)
        return 10 * math.log10(1 + _mse(outputs, self.exact) / self.residual_mse)

    def layer_options(self, candidates: dict[str, list[Candidate]]) -> list[tuple[float, str, Candidate, float, float]]:
        """(gain per unit of cost, layer, candidate, gain ms, cost) of every candidate faster than exact in its
        layer, the cost measured with that layer alone switched; most efficient first."""
        self.log("measuring per-layer costs")
        options = []
        for name in self.layers:
            report = self.reports[name]
            for cand in candidates[name]:
                gain = report.exact_ms - report.times_ms[cand.label]
                if gain <= 0:
                    continue  # slower than exact here: never worth any quality
                self.use(name, cand)
                cost = _mse(_outputs(self.model, self.inputs), self.exact)
                self.use(name, None)
                report.costs[cand.label] = cost
                options.append((gain / max(cost, 1e-30), name, cand, gain, cost))
        options.sort(key=lambda o: o[0], reverse=True)
        return options

    def fit(self, selection: Selection) -> tuple[Selection, float]:
        """Trim ``selection`` until its measured drop fits the budget (the additivity assumption can fail)."""
        selection = dict(selection)
        self.apply(selection)
        drop = self.measured_drop()
        self.log(f"selection: {len(selection)} nystra layers, measured drop {drop:.4f} dB")
        while selection and drop > self.budget_db:  # trim the least efficient choice
            worst = min(selection, key=lambda n: selection[n][1] / max(selection[n][2], 1e-30))
            del selection[worst]
            self.apply(selection)
            drop = self.measured_drop()
            self.log(f"  trimmed {worst}: measured drop {drop:.4f} dB")
        return selection, drop

    def end_to_end(self, selection: Selection, x: Tensor, runs: int) -> dict:
        return _end_to_end(self.model, x, runs, functools.partial(self.apply, selection),
                           functools.partial(self.apply, {}))

    def check_speed(self, chosen: Selection, x: Tensor, runs: int) -> tuple[Selection, float, dict]:
        """(selection, measured drop, end-to-end speed) after fitting ``chosen`` to the budget and timing it.

        Per-layer gains are timed in isolation; what counts is the whole model on this machine. A window change
        can also cost globally (SwinIR and Uformer pad the image to a multiple of every window), so a selection
        that is not faster end to end is retried without its window changes, then given up for all-exact."""
        attempts = [chosen]
        if any(c[0].window is not None for c in chosen.values()):
            attempts.append({n: c for n, c in chosen.items() if c[0].window is None})
        speed: dict = {}
        rejected = []
        for attempt in attempts:
            chosen, drop = self.fit(attempt)
            if not chosen or runs <= 0:
                break
            speed = self.end_to_end(chosen, x, runs)
            self.log(f"end to end: exact {speed['exact_ms']:.1f} ms, calibrated {speed['calibrated_ms']:.1f} ms "
                     f"({speed['speedup']:.3f}x)")
            if speed["speedup"] >= 1.0:
                break
            self.log("  not faster than exact end to end: rejected")
            rejected.append({"layers": {n: c[0].label for n, c in chosen.items()}, **speed})
            chosen, speed = {}, {}
        if not chosen:
            self.apply(chosen)
            drop = self.measured_drop()
            if runs > 0:  # the plan is all-exact: its time is the exact time
                speed = self.end_to_end({}, x, runs)
        if rejected:
            speed["rejected"] = rejected
        return chosen, drop, speed

    def apply_plan_to_model(self, chosen: Selection, drop: float, original_plan: dict, window_resize: str) -> dict:
        """The plan of ``chosen``, applied to the trained blocks the way from_pretrained applies it."""
        for name, report in self.reports.items():
            report.chosen = chosen[name][0].label if name in chosen else report.exact_impl
        self.apply(chosen)
        plan = extract_plan(self.model)
        windows_chosen = {_block_name(n): c[0].window for n, c in sorted(chosen.items()) if c[0].window is not None}
        if windows_chosen:
            plan = {"windows": windows_chosen, "window_resize": window_resize, **plan}
        # The model keeps the plan applied the way from_pretrained applies it: to the trained blocks.
        self.blocks.restore()
        if drop > self.budget_db:  # even all-exact failed (cannot happen: exact has drop 0); keep the invariant
            apply_plan(self.model, original_plan)
            raise RuntimeError(f"calibration could not meet the {self.budget_db} dB budget")
        apply_plan(self.model, plan)
        # With windows in it, the weights are no longer the trained ones: hub saving reads this and refuses.
        self.model.update_provenance(plan=plan)
        return plan

    def report(self, chosen: Selection, drop: float, speed: dict, reference_psnr_db: float) -> dict:
        return {
            "budget_db": self.budget_db,
            "measured_drop_db": drop,
            "quality_reference": "ground truth" if self.targets is not None else
                                 f"exact output, model PSNR assumed {reference_psnr_db} dB",
            "exact_psnr_db": self.exact_psnr,
            "nystra_layers": len(chosen),
            "layers": len(self.layers),
            "predicted_gain_ms": sum(c[1] for c in chosen.values()),
            "speed": speed,
            "threads": torch.get_num_threads(),
            "per_layer": [vars(r) for r in self.reports.values()],
        }


# -- calibration images ----------------------------------------------------------------------------------------------
def calibration_pairs(task: Task, images: Sequence[str], root, crop: int = 0) -> tuple[list[Tensor], list[Tensor]]:
    """(inputs, targets), each a list of (1, C, h, w) tensors: the held-out pairs of ``images`` (paths under the
    testsets ``root``) made with ``task``'s degradation; with ``crop``, the centre ``crop`` pixels of the clean
    image (the input cropped to match: ``crop // scale``)."""
    inputs, targets = [], []
    for name in images:
        degraded, gt, _ = task.heldout_pair(name, root)
        if crop:
            scale = task.scale
            h, w = degraded.shape[-2:]
            c = crop // scale
            top, left = (h - c) // 2, (w - c) // 2
            degraded = degraded[:, top:top + c, left:left + c]
            gt = gt[:, top * scale:(top + c) * scale, left * scale:(left + c) * scale]
        inputs.append(degraded.unsqueeze(0))
        targets.append(gt.unsqueeze(0))
    return inputs, targets
