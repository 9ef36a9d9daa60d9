"""Small reference models of each architecture, trained on the shared test images, for the quality measurements.

Random weights say little about how well an approximation reproduces *trained* attention, and no real
pretrained SwinIR/Uformer/DehazeFormer checkpoint can be downloaded here. ``nystra-hub train-reference`` trains
small models with the official module structure (window 8, relative-position bias, shifted windows, several
heads) on CPU in minutes, on synthetic degradations of ``../shared/testsets`` images:

- ``swinir-ref-x2``: a SwinIR-S-like x2 super-resolver (bicubic degradation: PIL bicubic downscaling, which
  matches the MATLAB-made Set5 LR images to a mean of 0.2 grey levels);
- ``uformer-ref-denoise25``: a small Uformer for color Gaussian denoising, σ = 25/255, noise not clipped;
- ``dehazeformer-ref-t``: DehazeFormer-t (the official t configuration) on synthetic haze, see
  :func:`nystra_hub.measure.data.synthetic_haze`.

``--init-from FOLDER`` fine-tunes a shipped model instead of starting afresh, and ``--bias-lr-scale X`` gives the
position-bias parameters X times the learning rate: a short run leaves the bias tables near their 0.02-std
initialisation, so dropping the bias changes nothing, where the released models owe it about a decibel (the
reference models must show how approximations that mishandle the bias fare).

Every recipe trains on CBSD68 + Kodak24 and holds out Set5 + Set14 (never seen in training). Random crops with
the 8 flips/rotations, Adam, L1 loss, cosine learning-rate decay, a fixed seed, deterministic algorithms. The
folder written (``reference_models/<name>/``) holds ``model.safetensors`` (official state-dict keys, float32)
and ``reference.json`` (architecture, official constructor kwargs, task, degradation, the exact command, seed,
steps, time, image lists, held-out PSNR/SSIM of the model and of the degraded input).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor

from nystra_hub.attention import attention_modules, position_bias_parameters, set_position_bias
from nystra_hub.io.hub import CONFIG_NAME, model_hub_config
from nystra_hub.io.images import atomic_write_json
from nystra_hub.measure.data import Task, bicubic_downscale, list_images, load_rgb, modcrop, synthetic_haze, to_tensor
from nystra_hub.measure.environment import REPO_ROOT
from nystra_hub.measure.metrics import PROTOCOLS, score
from nystra_hub.measure.references import REFERENCE_INFO, REFERENCE_WEIGHTS, load_reference
from nystra_hub.models import build_model

DEFAULT_REFERENCE_DIR = REPO_ROOT / "reference_models"
TRAIN_SETS = ("CBSD68", "Kodak24")
HELDOUT_SETS = ("Set5", "Set14")


# -- recipes -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recipe:
    name: str
    arch: str
    task_name: str  # the variants.TASKS key
    task: Task
    kwargs: dict
    patch: int  # training crop of the model input (LR side for SR)
    batch: int
    steps: int
    lr: float
    notes: str = ""
    train_sets: tuple[str, ...] = TRAIN_SETS
    heldout_sets: tuple[str, ...] = HELDOUT_SETS
    extra: dict = field(default_factory=dict)


RECIPES: dict[str, Recipe] = {}


def _add(recipe: Recipe) -> None:
    RECIPES[recipe.name] = recipe


_add(Recipe(
    name="swinir-ref-x2", arch="swinir", task_name="lightweight-sr",
    task=Task("sr", scale=2, protocol="swinir-sr",
              description="x2 super-resolution, bicubic degradation"),
    kwargs=dict(upscale=2, in_chans=3, img_size=16, window_size=8, img_range=1.0, depths=[6, 6, 6, 6],
                embed_dim=60, num_heads=[6, 6, 6, 6], mlp_ratio=2, upsampler="pixelshuffledirect",
                resi_connection="1conv"),
    patch=64, batch=32, steps=4000, lr=5e-4,
    notes="the SwinIR-S (lightweight) x2 configuration of the release: 4 RSTBs of 6 blocks, embed 60, 6 heads "
          "of dim 10, window 8, shifted windows in every other block, pixelshuffledirect x2, LR patch 64; "
          "img_size 16 instead of 64 only sizes the attn_mask buffers kept for state-dict compatibility (the "
          "forward builds the masks of the actual size): 0.8 MB of them instead of 12",
))
_add(Recipe(
    name="swinir-ref-denoise50", arch="swinir", task_name="denoise-color",
    task=Task("denoise", sigma=50.0, protocol="rgb-uint8",
              description="color Gaussian denoising σ=50 (synthetic, not clipped)"),
    kwargs=dict(upscale=1, in_chans=3, img_size=16, window_size=8, img_range=1.0, depths=[4, 4, 4, 4],
                embed_dim=60, num_heads=[6, 6, 6, 6], mlp_ratio=2, upsampler="", resi_connection="1conv"),
    patch=64, batch=8, steps=4000, lr=5e-4,
    notes="the SwinIR colour-denoising configuration of the release (no upsampler, window 8, shifted windows "
          "in every other block, 1conv) at the lightweight width and a smaller depth, so that a 2-core CPU trains "
          "it in an hour: 4 RSTBs of 4 blocks, embed 60, 6 heads of dim 10; trained on 64 crops instead of 128; "
          "img_size 16 only sizes the attn_mask buffers kept for state-dict compatibility (the forward builds the "
          "masks of the actual size)",
))
_add(Recipe(
    name="uformer-ref-denoise25", arch="uformer", task_name="denoise-color",
    task=Task("denoise", sigma=25.0, protocol="rgb-uint8",
              description="color Gaussian denoising σ=25 (synthetic, not clipped)"),
    kwargs=dict(img_size=128, in_chans=3, dd_in=3, embed_dim=8, depths=[2, 2, 2, 2, 1, 1, 2, 2, 2],
                num_heads=[1, 1, 2, 4, 8, 8, 4, 2, 1], win_size=8, mlp_ratio=4.0, token_projection="linear",
                token_mlp="leff", modulator=True, shift_flag=True),
    patch=128, batch=16, steps=4000, lr=1e-3,
    notes="Uformer-T structure (LeFF, modulator, window 8, shifted windows, img_size 128 like the SIDD release) "
          "at embed 8 with heads [1,1,2,4,8,8,4,2,1] (head dim 16 as Uformer-T, 8 in the first stage) and "
          "depth 1 in the bottleneck and the first decoder stage (2 elsewhere) to stay under 5 MB",
))
_add(Recipe(
    name="dehazeformer-ref-t", arch="dehazeformer", task_name="dehaze",
    task=Task("dehaze", protocol="dehazeformer",
              description="dehazing of synthetic haze (atmospheric scattering, random smooth depth)"),
    kwargs=dict(in_chans=3, out_chans=4, window_size=8, norm_layer=["RLN"] * 5, embed_dims=[24, 48, 96, 48, 24],
                mlp_ratios=[2.0, 4.0, 4.0, 2.0, 2.0], num_heads=[2, 4, 6, 1, 1], depths=[4, 4, 4, 2, 2],
                attn_ratio=[0.0, 0.5, 1.0, 0.0, 0.0], conv_type=["DWConv"] * 5),
    patch=128, batch=16, steps=4000, lr=1e-3,
    notes="the official DehazeFormer-t configuration (0.69 M parameters), trained on 128 crops instead of 256",
))


# -- training ----------------------------------------------------------------------------------------------------
class PairSampler:
    """Deterministic random training pairs (model input, target) from the training images."""

    def __init__(self, recipe: Recipe, names: list[str], seed: int, root=None) -> None:
        self.recipe = recipe
        self.task = recipe.task
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.images = [load_rgb(n, root) for n in names]
        scale = self.task.scale
        if self.task.name == "sr":
            self.images = [modcrop(im, scale) for im in self.images]
            self.lowres = [bicubic_downscale(im, scale) for im in self.images]
        side = recipe.patch
        self.images = [im for im in self.images if min(im.shape[:2]) >= side * scale]
        if not self.images:
            raise ValueError(f"no training image is at least {side * scale} px")

    def _augment(self, *arrays: np.ndarray) -> list[np.ndarray]:
        k = int(self.rng.integers(8))
        out = []
        for a in arrays:
            if k & 1:
                a = a[:, ::-1]
            if k & 2:
                a = a[::-1]
            if k & 4:
                a = a.transpose(1, 0, 2)
            out.append(np.ascontiguousarray(a))
        return out

    def batch(self, size: int) -> tuple[Tensor, Tensor]:
        inputs, targets = [], []
        p, s = self.recipe.patch, self.task.scale
        for _ in range(size):
            i = int(self.rng.integers(len(self.images)))
            if self.task.name == "sr":
                lr = self.lowres[i]
                y = int(self.rng.integers(lr.shape[0] - p + 1))
                x = int(self.rng.integers(lr.shape[1] - p + 1))
                lr_patch, hr_patch = self._augment(
                    lr[y:y + p, x:x + p], self.images[i][y * s:(y + p) * s, x * s:(x + p) * s]
                )
                inputs.append(to_tensor(lr_patch))
                targets.append(to_tensor(hr_patch))
                continue
            im = self.images[i]
            y = int(self.rng.integers(im.shape[0] - p + 1))
            x = int(self.rng.integers(im.shape[1] - p + 1))
            (clean,) = self._augment(im[y:y + p, x:x + p])
            clean = to_tensor(clean)
            if self.task.name == "denoise":
                noisy = clean + torch.randn(clean.shape, generator=self.gen) * (self.task.sigma / 255.0)
                inputs.append(noisy)
            else:
                inputs.append(synthetic_haze(clean, self.gen)[0])
            targets.append(clean)
        return torch.stack(inputs), torch.stack(targets)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def evaluate_heldout(model, recipe: Recipe, names: list[str], root=None, log=print) -> dict:
    """Held-out scores of ``model`` (official inference protocol) and of the degraded input."""
    protocol = PROTOCOLS[recipe.task.protocol]
    rows = []
    model.eval()
    for name in names:
        degraded, gt, info = recipe.task.heldout_pair(name, root)
        with torch.no_grad():
            out = model.official_inference(degraded.unsqueeze(0))[0]
        model_scores = score(out, gt, protocol, scale=recipe.task.scale)
        input_scores = score(recipe.task.input_baseline(degraded, gt), gt, protocol, scale=recipe.task.scale)
        rows.append({"image": name, "psnr": model_scores["psnr"], "ssim": model_scores["ssim"],
                     "input_psnr": input_scores["psnr"], "input_ssim": input_scores["ssim"], **info})
        log(f"  {name}: {model_scores['psnr']:.2f} dB (input {input_scores['psnr']:.2f} dB)")
    mean = lambda key: float(np.mean([r[key] for r in rows]))  # noqa: E731
    return {
        "protocol": protocol.describe(recipe.task.scale),
        "input_baseline": recipe.task.baseline_name,
        "psnr": mean("psnr"), "ssim": mean("ssim"), "input_psnr": mean("input_psnr"),
        "input_ssim": mean("input_ssim"), "per_image": rows,
    }


OPTIMIZER_NOTE = "Adam(betas=(0.9, 0.99)), linear warm-up over 5 % of the steps, cosine decay to 1 %"
AMP_MODES = ("none", "bf16")


def lr_at(step: int, steps: int, lr: float) -> float:
    """Linear warm-up over the first 5 % of the steps, then cosine decay to 1 % of ``lr``."""
    warmup = max(1, steps // 20)
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclass
class TrainRun:
    """What a (possibly resumed) training run has done so far; saved with the weights in the state file."""

    settings: dict  # recipe, kwargs, patch, steps, batch, lr, seed: a resume must match them
    step: int = 0
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    pieces: list[dict] = field(default_factory=list)  # one per run of the command: steps, device, amp, seconds


def save_train_state(path: str | os.PathLike, run: TrainRun, model, optimizer, sampler: PairSampler) -> Path:
    """Weights, optimizer, data-sampler and RNG state at ``run.step``, written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "run": dataclasses.asdict(run),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "sampler": {"numpy": sampler.rng.bit_generator.state, "torch": sampler.gen.get_state()},
        "torch_rng": torch.get_rng_state(),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_train_state(path: str | os.PathLike, settings: dict, model, optimizer, sampler: PairSampler) -> TrainRun:
    """Restore a run saved by :func:`save_train_state`; its settings must equal ``settings``."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    run = TrainRun(**state["run"])
    differ = sorted(k for k in set(settings) | set(run.settings) if settings.get(k) != run.settings.get(k))
    if differ:
        details = ", ".join(f"{k}: saved {run.settings.get(k)!r} vs asked {settings.get(k)!r}" for k in differ)
        raise ValueError(f"cannot resume from {path}: the settings differ ({details})")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    sampler.rng.bit_generator.state = state["sampler"]["numpy"]
    sampler.gen.set_state(state["sampler"]["torch"])
    torch.set_rng_state(state["torch_rng"])
    return run


def _amp_context(device: torch.device, amp: str):
    if amp == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


ABLATION_THRESHOLDS_DB = {"position_bias_dropped": 0.3, "window_x2": 0.05}


def attention_ablations(model, recipe: Recipe, names: list[str], trained_psnr: float, root=None, log=print) -> dict:
    """How much the trained model owes its attention, in held-out GT-PSNR: the position bias dropped, and exact
    attention at twice the trained window (bias tables resized bicubically). A model for which both change
    little cannot tell attention approximations apart (thresholds: :data:`ABLATION_THRESHOLDS_DB`)."""
    window = max(model.window_sizes())
    no_bias = set_position_bias(copy.deepcopy(model), False)
    wide = copy.deepcopy(model)
    wide.set_window_size(2 * window, method="bicubic")
    out = {"trained_psnr": trained_psnr, "thresholds_db": ABLATION_THRESHOLDS_DB}
    for key, variant, what in (("position_bias_dropped", no_bias, "position bias dropped"),
                               ("window_x2", wide, f"exact at window {2 * window} (bicubic bias resize)")):
        log(f"ablation: {what}")
        psnr = evaluate_heldout(variant, recipe, names, root, log=lambda m: None)["psnr"]
        change = psnr - trained_psnr
        out[key] = {"what": what, "psnr": psnr, "change_db": change,
                    "matters": abs(change) >= ABLATION_THRESHOLDS_DB[key]}
        log(f"  {psnr:.3f} dB ({change:+.3f} dB)")
    return out


def train(
    recipe: Recipe, *, steps: int | None = None, batch: int | None = None, lr: float | None = None, seed: int = 0,
    threads: int | None = None, stop_at: int | None = None, max_minutes: float | None = None,
    root=None, log_every: int = 25, log=print, device: str = "cpu", amp: str | None = None,
    state_path: str | os.PathLike | None = None, save_every: int | None = None, resume: bool = False,
    init_from: str | os.PathLike | None = None, bias_lr_scale: float = 1.0, bias_init: str = "trained",
    attention_lr_scale: float = 1.0, locality_strength: float = 1.0,
) -> tuple[torch.nn.Module, dict]:
    """Train ``recipe``; returns (model in eval mode on the CPU, training record).

    On CPU the run is deterministic for fixed arguments and thread count (``stop_at``/``max_minutes`` end early
    without changing the learning-rate schedule). On CUDA it runs under bf16 autocast by default (``amp``) and
    is not bit-reproducible (atomic adds in the backward of the window gathers). With ``state_path`` the run is
    saved every ``save_every`` steps and at the end, and ``resume`` continues a saved run exactly where it
    stopped, so it can be trained in pieces. ``init_from`` (a reference folder of the recipe) fine-tunes its
    weights instead of a fresh initialisation; ``bias_lr_scale`` multiplies the learning rate of the position-bias
    parameters (:func:`nystra_hub.attention.position_bias_parameters`), ``attention_lr_scale`` that of the
    attention modules' other parameters (q/k/v and output projections); ``bias_init="locality"`` starts the bias
    tables from :func:`apply_locality_prior` (slope of head 0: ``locality_strength``) instead of their
    initialisation (or ``init_from``'s tables)."""
    steps = recipe.steps if steps is None else steps
    batch = recipe.batch if batch is None else batch
    lr = recipe.lr if lr is None else lr
    device = torch.device(device)
    amp = amp or ("bf16" if device.type == "cuda" else "none")
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(device.type == "cpu", warn_only=True)
    names = [n for s in recipe.train_sets for n in list_images(s, root)]
    sampler = PairSampler(recipe, names, seed, root)
    model, start = _starting_model(recipe, init_from, bias_init, locality_strength)
    model = model.to(device).train()
    optimizer = torch.optim.Adam(_param_groups(model, bias_lr_scale, attention_lr_scale), lr=lr, betas=(0.9, 0.99))
    options = {"init_from_sha256": start["weights_sha256"] if start else None, "bias_lr_scale": bias_lr_scale,
               "bias_init": bias_init, "attention_lr_scale": attention_lr_scale,
               "locality_strength": locality_strength}
    defaults = {"init_from_sha256": None, "bias_lr_scale": 1.0, "bias_init": "trained", "attention_lr_scale": 1.0,
                "locality_strength": 1.0}
    # options left at their defaults are absent, so states saved before these options existed still resume
    settings = {"recipe": recipe.name, "kwargs": recipe.kwargs, "patch": recipe.patch, "steps": steps,
                "batch": batch, "lr": lr, "seed": seed, **{k: v for k, v in options.items() if v != defaults[k]}}
    run = TrainRun(settings)
    if resume and state_path and Path(state_path).is_file():
        run = load_train_state(state_path, settings, model, optimizer, sampler)
        log(f"resumed {recipe.name} at step {run.step}/{steps} from {state_path}")
    last = steps if stop_at is None else min(steps, stop_at)
    if run.step < last:  # a piece that trains (a resume that only evaluates adds none)
        run.pieces.append({"from_step": run.step, "device": device.type, "device_name": _device_name(device),
                           "amp": amp, "deterministic": device.type == "cpu"})
    stopped = _train_steps(model, optimizer, sampler, run, last, device, amp, max_minutes, log_every, log,
                           save=(lambda: save_train_state(state_path, run, model, optimizer, sampler))
                           if state_path else None, save_every=save_every)
    record = _training_record(run, recipe, device, amp, log_every, stopped)
    record.update(init_from=start, position_bias_lr_scale=bias_lr_scale, position_bias_init=bias_init,
                  attention_lr_scale=attention_lr_scale)
    if bias_init == "locality":
        record["locality_strength"] = locality_strength
    return model.cpu().eval(), record


def _training_record(run: TrainRun, recipe: Recipe, device: torch.device, amp: str, log_every: int,
                     stopped: str | None) -> dict:
    """What reference.json records of the training: settings, pieces, time and the loss curve."""
    settings, losses, pieces = run.settings, run.losses, run.pieces
    return {
        "steps": run.step, "planned_steps": settings["steps"], "batch": settings["batch"], "lr": settings["lr"],
        "patch": recipe.patch, "seed": settings["seed"], "optimizer": OPTIMIZER_NOTE,
        "loss": "L1 on [0, 1] images (outputs mapped from the model's value range)",
        "augmentation": "random crops, 8 flips/rotations",
        "device": pieces[0]["device"] if pieces else device.type,
        "amp": pieces[0]["amp"] if pieces else amp,
        "pieces": pieces,
        "threads": torch.get_num_threads(), "train_seconds": round(run.seconds, 1),
        "loss_first": float(np.mean(losses[: max(1, log_every)])) if losses else None,
        "loss_last": float(np.mean(losses[-max(1, log_every):])) if losses else None,
        "loss_curve": [round(v, 6) for v in losses],
        "stopped_early": stopped,
    }


def _starting_model(recipe: Recipe, init_from, bias_init: str,
                    locality_strength: float = 1.0) -> tuple[torch.nn.Module, dict | None]:
    """(the model training starts from, the description of ``init_from``'s weights or None): a fresh
    initialisation or a reference folder's weights, with the bias tables set to the locality prior if asked."""
    if bias_init not in BIAS_INITS:
        raise ValueError(f"bias_init must be one of {BIAS_INITS}, got {bias_init!r}")
    if not locality_strength > 0:
        raise ValueError(f"the locality strength must be positive, got {locality_strength!r}")
    if locality_strength != 1.0 and bias_init != "locality":
        raise ValueError("a locality strength only applies with bias_init='locality' (--bias-init locality)")
    if init_from is None:
        model, start = build_model(recipe.arch, **recipe.kwargs), None
    else:
        model, start = _reference_start(recipe, init_from)
    if bias_init == "locality" and not apply_locality_prior(model, locality_strength):
        raise ValueError(f"{recipe.arch} has no bias tables for the locality prior (its bias is computed by an MLP)")
    return model, start


def display_path(path: Path) -> str:
    """``path`` relative to the current folder where it lies below it (as a command line would spell it)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _reference_start(recipe: Recipe, folder: str | os.PathLike) -> tuple[torch.nn.Module, dict]:
    """(the reference folder's model, loaded strictly by :func:`load_reference`; its description for the training
    record: folder, weights' sha256, the command that trained them). The folder must hold this recipe's model."""
    folder = Path(folder)
    model, info = load_reference(folder)
    as_json = lambda value: json.dumps(value, sort_keys=True, default=str)  # noqa: E731 - tuples and lists alike
    differ = sorted(k for k, v in recipe.kwargs.items() if as_json(model.official_kwargs.get(k)) != as_json(v))
    if info.get("name") != recipe.name or info.get("arch") != recipe.arch or differ:
        raise ValueError(f"--init-from {folder} holds {info.get('name')!r}, not the recipe {recipe.name!r}"
                         + (f" (constructor arguments differ: {', '.join(differ)})" if differ else ""))
    weights = folder / REFERENCE_WEIGHTS
    return model, {"folder": display_path(folder), "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
                   "command": info.get("command"), "steps": info.get("training", {}).get("steps")}


BIAS_INITS = ("trained", "locality")


def apply_locality_prior(model, strongest: float = 1.0) -> int:
    """Set every learned bias table to a distance penalty, ``bias_h(dy, dx) = −strongest · 2^−h · √(dy² + dx²)``
    for head ``h`` (ALiBi-like slopes: head 0 attends to its neighbours, the last almost uniformly). Returns the
    number of tables set. Architectures whose bias is computed by an MLP (DehazeFormer's ``meta``) have none."""
    count = 0
    for _, module in attention_modules(model):
        table = getattr(module, "relative_position_bias_table", None)
        if table is None:
            continue
        wh, ww = module.window_size
        dy = torch.arange(-(wh - 1), wh, dtype=torch.float32)[:, None].expand(2 * wh - 1, 2 * ww - 1)
        dx = torch.arange(-(ww - 1), ww, dtype=torch.float32)[None, :].expand(2 * wh - 1, 2 * ww - 1)
        distance = torch.sqrt(dy**2 + dx**2).reshape(-1, 1)  # rows in relative_position_index order
        slopes = strongest * 2.0 ** -torch.arange(table.shape[1], dtype=torch.float32)
        with torch.no_grad():
            table.copy_(-distance * slopes)
        count += 1
    return count


def _param_groups(model, bias_lr_scale: float, attention_lr_scale: float = 1.0) -> list[dict]:
    """Adam parameter groups with their ``lr_scale``: the position-bias parameters ``bias_lr_scale``, the attention
    modules' other parameters ``attention_lr_scale``, the rest 1."""
    for what, scale in (("position-bias", bias_lr_scale), ("attention", attention_lr_scale)):
        if not scale > 0:
            raise ValueError(f"the {what} learning-rate scale must be positive, got {scale!r}")
    bias = position_bias_parameters(model)
    taken = {id(p) for p in bias}
    attention = [p for _, m in attention_modules(model) for p in m.parameters() if id(p) not in taken]
    attention = list({id(p): p for p in attention}.values())
    taken |= {id(p) for p in attention}
    rest = [p for p in model.parameters() if id(p) not in taken]
    return [{"params": rest, "lr_scale": 1.0}, {"params": bias, "lr_scale": bias_lr_scale},
            {"params": attention, "lr_scale": attention_lr_scale}]


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def _train_steps(model, optimizer, sampler, run: TrainRun, last: int, device, amp: str, max_minutes, log_every,
                 log, save, save_every) -> str | None:
    """Optimizer steps from ``run.step`` to ``last``; the loss is read back only when logged (no sync per step)."""
    to_input, from_output = model.to_model_range, model.from_model_range
    steps, lr, batch = run.settings["steps"], run.settings["lr"], run.settings["batch"]
    start = time.perf_counter() - run.seconds  # run.seconds counts every piece
    piece_start = time.perf_counter()  # max_minutes limits this piece (a resumed run gets its own budget)
    pending: list[Tensor] = []
    stopped = None

    def flush() -> None:
        if pending:
            run.losses.extend(torch.stack(pending).float().cpu().tolist())
            pending.clear()
        run.seconds = time.perf_counter() - start
        if run.pieces:
            run.pieces[-1].update(to_step=run.step, total_seconds=round(run.seconds, 1))

    while run.step < last:
        if max_minutes is not None and time.perf_counter() - piece_start > max_minutes * 60:
            stopped = f"time limit of {max_minutes:g} min reached after {run.step} steps"
            break
        for group in optimizer.param_groups:
            group["lr"] = lr_at(run.step, steps, lr) * group.get("lr_scale", 1.0)
        inputs, targets = (t.to(device, non_blocking=True) for t in sampler.batch(batch))
        with _amp_context(device, amp):
            out = from_output(model(to_input(inputs)))
        loss = F.l1_loss(out.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        pending.append(loss.detach())
        run.step += 1
        if log_every and (run.step % log_every == 0 or run.step == 1):
            flush()
            log(f"step {run.step}/{steps}  L1 {np.mean(run.losses[-log_every:]):.5f}  "
                f"lr {lr_at(run.step - 1, steps, lr):.2e}  {run.seconds:.0f}s")
        if save and save_every and run.step % save_every == 0:
            flush()
            save()
    flush()
    if save:
        save()
    return stopped


def probe_step_seconds(recipe: Recipe, batch: int, device: str, amp: str | None, root=None, steps: int = 12) -> float:
    """Seconds per training step of ``recipe`` on ``device`` (median of the steps after two warm-up steps);
    the model is thrown away (``--steps auto`` sizes a run to its time budget with it)."""
    device_ = torch.device(device)
    amp = amp or ("bf16" if device_.type == "cuda" else "none")
    names = [n for s in recipe.train_sets for n in list_images(s, root)][:8]
    sampler = PairSampler(recipe, names, 12345, root)
    model = build_model(recipe.arch, **recipe.kwargs).to(device_).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    to_input, from_output = model.to_model_range, model.from_model_range
    times = []
    for _ in range(steps + 2):
        t0 = time.perf_counter()
        inputs, targets = (t.to(device_) for t in sampler.batch(batch))
        with _amp_context(device_, amp):
            loss = F.l1_loss(from_output(model(to_input(inputs))).float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()
        times.append(time.perf_counter() - t0)
    return float(np.median(times[2:]))


def save_reference(model: torch.nn.Module, folder: str | os.PathLike, info: dict) -> Path:
    """Write a reference folder (read back by :func:`nystra_hub.measure.references.load_reference`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(folder / REFERENCE_WEIGHTS), metadata={"format": "pt", "arch": info["arch"]})
    os.chmod(folder / REFERENCE_WEIGHTS, 0o644)  # safetensors writes 0600; these are shared files
    atomic_write_json(folder / REFERENCE_INFO, info)
    write_reference_config(model, folder)
    return folder


def write_reference_config(model: torch.nn.Module, folder: str | os.PathLike) -> Path:
    """Add the hub ``config.json`` so the folder also loads with load_pretrained / AutoModel / the restore CLI."""
    path = Path(folder) / CONFIG_NAME
    return atomic_write_json(path, model_hub_config(model))


def write_reference_folder(model, recipe: Recipe, record: dict, folder: str | os.PathLike, *, command: str,
                           argv: str | None = None, testsets=None, heldout_limit: int | None = None,
                           log=print) -> Path:
    """Evaluate on the held-out images (the first ``heldout_limit``) and write ``model.safetensors``,
    ``reference.json`` and ``config.json`` into ``folder``. ``command`` is recorded as the command that trains
    this model from scratch in one go, ``argv`` as the command line that ran."""
    train_names = [n for s in recipe.train_sets for n in list_images(s, testsets)]
    heldout = [n for s in recipe.heldout_sets for n in list_images(s, testsets)]
    if heldout_limit is not None:
        heldout = heldout[:heldout_limit]
    overlap = sorted(set(train_names) & set(heldout))
    if overlap:
        raise RuntimeError(f"held-out images used in training: {overlap}")
    log(f"evaluating on {len(heldout)} held-out images")
    evaluation = evaluate_heldout(model, recipe, heldout, testsets, log=log)
    ablations = attention_ablations(model, recipe, heldout, evaluation["psnr"], testsets, log=log)
    task = recipe.task
    info = {
        "name": recipe.name,
        "arch": recipe.arch,
        "kwargs": model.official_kwargs,
        "task": recipe.task_name,
        "scale": task.scale,
        "window": 8,
        "degradation": {"name": task.name, "scale": task.scale, "sigma": task.sigma, "protocol": task.protocol,
                        "description": task.description,
                        **({"haze": synthetic_haze.__doc__.split("\n\n")[1].strip()} if task.name == "dehaze"
                           else {})},
        "parameters": count_parameters(model),
        "notes": recipe.notes,
        "command": command,
        "argv": argv,
        "training": record,
        "train_images": train_names,
        "heldout_images": heldout,
        "heldout": evaluation,
        "ablations": ablations,
        "environment": {"torch": torch.__version__, "python": platform.python_version(),
                        "platform": platform.platform(), "threads": torch.get_num_threads()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    folder = save_reference(model, folder, info)
    log(f"held-out {evaluation['protocol']['name']}: model {evaluation['psnr']:.2f} dB / SSIM "
        f"{evaluation['ssim']:.4f}, {evaluation['input_baseline']} {evaluation['input_psnr']:.2f} dB / "
        f"{evaluation['input_ssim']:.4f}")
    return folder


__all__ = [
    "HELDOUT_SETS", "RECIPES", "TRAIN_SETS", "PairSampler", "Recipe", "attention_ablations", "evaluate_heldout",
    "save_reference", "train", "write_reference_config", "write_reference_folder",
]
