"""What the measurements compare: the model under test (:class:`ModelSource`) and its attention arms.

An :class:`Arm` is one way of running the same trained weights: an attention implementation, a window, PnP-Nystra
parameters, the paper's bias/mask/modulator choices, a per-layer plan, another library (spandrel), or another
runtime (torch.compile, ONNX Runtime, OpenVINO: :func:`runtime_arms`; CUDA graphs), compiled per block, or in
tiles. The arm table (letters (a)-(f), the paper's recipe per architecture) is documented in
:mod:`nystra_hub.measure.bench`, the GPU run's arms in :func:`nystra_hub.measure.gpu.arms_for`; bench and the GPU
run time the arms (:func:`~nystra_hub.measure.timing.run_rounds`), fidelity scores them.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from nystra_hub.attention.baselines import register_baselines, set_performer_features
from nystra_hub.inference.backends import Runner, make_runner
from nystra_hub.inference.export import as_restoration_model
from nystra_hub.inference.precision import run_guarded
from nystra_hub.inference.restore import restore_tensor
from nystra_hub.io.loading import load
from nystra_hub.io.plan import apply_plan
from nystra_hub.io.variants import build_variant, get_variant
from nystra_hub.measure.references import is_reference_folder, load_reference, reference_info
from nystra_hub.models import ARCHITECTURES, RestorationModel, build_model
from nystra_hub.models.common import ArchitectureSpec


@dataclass
class ModelSource:
    """What is measured: a catalogue variant (random weights unless a checkpoint is given) or a reference folder."""

    spec: str
    kind: str  # "variant" or "reference"
    name: str
    arch: str
    task: str
    scale: int
    window: int
    kwargs: dict
    checkpoint: str | None = None
    info: dict = field(default_factory=dict)

    def build(self, seed: int = 0) -> nn.Module:
        if self.kind == "reference":
            return load_reference(self.spec)[0]
        torch.manual_seed(seed)
        if self.checkpoint:
            return load(self.name, weights=self.checkpoint)
        return build_variant(self.name).eval()

    @functools.cached_property
    def protocol_model(self) -> RestorationModel:
        """The configuration built on the meta device (no memory): input channels, value range, the official
        padding around another implementation's forward (spandrel's)."""
        with torch.device("meta"):
            return build_model(self.arch, **self.kwargs)

    @property
    def spec_of_arch(self) -> ArchitectureSpec:
        return ARCHITECTURES[self.arch].spec

    @property
    def weights(self) -> str:
        if self.kind == "reference":
            return f"trained reference model {self.spec}"
        return f"checkpoint {self.checkpoint}" if self.checkpoint else "random (seeded) initialisation"

    def describe(self, model: nn.Module | None = None) -> dict:
        out = {"spec": self.spec, "kind": self.kind, "name": self.name, "arch": self.arch, "task": self.task,
               "scale": self.scale, "trained_window": self.window, "kwargs": self.kwargs, "weights": self.weights}
        if model is not None:
            out["parameters"] = sum(p.numel() for p in model.parameters())
        return out


def resolve_model(spec: str, checkpoint: str | None = None) -> ModelSource:
    """A variant name (``swinir-x2``) or a reference-model folder (with ``reference.json``)."""
    path = Path(spec)
    if is_reference_folder(path):
        info = reference_info(path)
        return ModelSource(spec=str(path), kind="reference", name=info.get("name", path.name), arch=info["arch"],
                           task=info["task"], scale=int(info.get("scale", 1)), window=int(info.get("window", 8)),
                           kwargs=info["kwargs"], info=info)
    variant = get_variant(spec)
    return ModelSource(spec=spec, kind="variant", name=variant.name, arch=variant.arch, task=variant.task,
                       scale=variant.scale, window=variant.window, kwargs=variant.kwargs, checkpoint=checkpoint)


def paper_recipe(arch: str, task: str) -> dict:
    """The reference's enlarged-window recipe for a model (pnp-nystra.md), as the architecture declares it."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"no recipe for architecture {arch!r}")
    return ARCHITECTURES[arch].spec.paper_recipe(task).as_dict()


# -- arms --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Arm:
    name: str
    letter: str
    description: str
    attn_impl: str = "softmax"
    window: int | None = None  # None: the trained window
    nystra: dict | None = None  # NystraParams overrides on top of the architecture's default
    window_method: str = "bicubic"
    drop_modulator: bool = False
    backend: str = "nystra_hub"  # or "spandrel"
    performer_features: int | None = None
    plan: dict | None = None  # a per-layer plan (nystra_hub.calibrate), applied last
    dtype: str | None = None  # compute precision (see PRECISION_NOTE); None: the run's (bench --dtype, or float32)
    # "torch" (eager) or an inference.backends runner: compile, onnxruntime, openvino (runtime_arms), cudagraphs
    runtime: str = "torch"
    runtime_precision: str = "float32"  # the runner's own precision (openvino: "bfloat16" runs its bf16 kernels)
    compile_blocks: bool = False  # torch.compile per transformer block (RestorationModel.compile_blocks)
    redo: str = "auto"  # nystra's redo of untrustworthy windows (RestorationModel.redo; "auto": the model's default)
    tiled: bool = False  # through restore_tensor in tiles (the run names the tile side: forward_fn's tile)
    tile_batch: int | None = None  # tiles per forward (None: as many as half the free GPU memory holds)

    @property
    def precision(self) -> str:
        """How :func:`forward_fn` runs half precision: ours under autocast with the non-finite guard, spandrel's
        model and input cast (:data:`PRECISION_NOTE`)."""
        return "cast" if self.backend == "spandrel" else "autocast"

    def config(self) -> dict:
        return dataclasses.asdict(self)


def plan_arms(paths: list[str] | None) -> list[Arm]:
    """One arm per plan file: ``nystra-hub calibrate --out`` JSON (its ``plan``) or a bare plan."""
    arms = []
    for path in paths or []:
        data = json.loads(Path(path).read_text())
        plan = data.get("plan", data)
        layers = plan.get("attention", {})
        nystra = sum(1 for s in layers.values() if s.get("attn_impl") == "nystra")
        budget = data.get("report", {}).get("budget_db")
        arms.append(Arm(f"calibrated-{Path(path).stem}", "",
                        f"per-layer plan from {Path(path).name}: {nystra}/{len(layers)} attention layers nystra"
                        + (f", calibrated to a {budget} dB budget" if budget is not None else ""), plan=plan))
    return arms


BENCH_DEFAULT = ("a", "b", "c", "c'", "d", "e", "e'", "f")
FIDELITY_DEFAULT = ("a", "b", "c", "c'", "d", "e", "e'", "f", "nystra-biaspooled-maskdrop",
                    "nystra-biasdrop-maskexact", "nystra-biasdrop-maskdrop", "nystromformer", "performer",
                    "nystromformer-wW-paper", "performer-wW-paper")


def standard_arms(source: ModelSource, recipe: dict | None = None) -> dict[str, Arm]:
    """Every named arm for ``source`` (ordered); W is the recipe's enlarged window."""
    recipe = recipe or paper_recipe(source.arch, source.task)
    w = recipe["window"]
    params = {k: recipe[k] for k in ("landmarks", "iters", "tau")}
    spec = source.spec_of_arch
    uformer = spec.modulators  # the paper's recipe drops the decoder modulators too
    paper = {"bias": "drop", "mask": "drop"}
    ours = {"bias": "pooled", "mask": "exact"}
    modulator = " and the decoder modulators" if uformer else ""
    resized = spec.bias_resize
    arms = [
        Arm("exact", "a", "the model as trained: exact softmax attention at the trained window"),
        Arm("sdpa", "b", "exact attention through fused scaled_dot_product_attention at the trained window",
            attn_impl="sdpa"),
        Arm(f"exact-w{w}-paper", "c", f"exact attention at window {w} with the position bias, the masks"
            f"{modulator} dropped: the paper's 'Original'", attn_impl="exact-paper", window=w,
            drop_modulator=uformer),
        Arm(f"exact-w{w}", "c'", f"exact attention at window {w}, {resized}, masks kept", window=w),
        Arm("nystra", "d", "PnP-Nystra at the trained window, the architecture's default parameters, bias pooled,"
            " cut windows exact", attn_impl="nystra", nystra=dict(ours)),
        Arm(f"nystra-w{w}-paper", "e", f"PnP-Nystra at window {w} with the paper's recipe, bias, masks{modulator}"
            f" dropped (the paper's method)", attn_impl="nystra", window=w, nystra={**params, **paper},
            drop_modulator=uformer),
        Arm(f"nystra-w{w}", "e'", f"PnP-Nystra at window {w} with the paper's recipe, {resized}, bias pooled, "
            f"cut windows exact", attn_impl="nystra", window=w, nystra={**params, **ours}),
    ]
    if spec.spandrel:
        note = (" (spandrel builds Uformer with img_size=256, which the state dict does not record: for models "
                "built at 128, like the SIDD release, a deep block then shifts where the original does not)"
                if uformer else "")
        arms.append(Arm("spandrel", "f", "the same weights loaded through spandrel (official code path)" + note,
                        backend="spandrel"))
    arms += [
        Arm(f"nystra-w{w}-maskdrop", "", f"PnP-Nystra at window {w} with the paper's recipe, {resized}, bias pooled, "
            f"masks dropped (the paper's masks choice, the position bias kept)", attn_impl="nystra", window=w,
            nystra={**params, "bias": "pooled", "mask": "drop"}),
        Arm(f"sdpa-w{w}", "", f"exact fused attention at window {w}, {resized}, masks kept", attn_impl="sdpa",
            window=w),
        Arm("nystromformer", "", "windowed softmax-normalised Nystromformer at the trained window (same landmarks,"
            " bias pooled, cut windows exact)", attn_impl="nystromformer", nystra=dict(ours)),
        Arm("performer", "", "Performer FAVOR+ random features at the trained window (features = landmarks, bias "
            "dropped, cut windows exact)", attn_impl="performer", nystra=dict(ours)),
        Arm(f"nystromformer-w{w}-paper", "", f"windowed Nystromformer at window {w} with the recipe's landmarks "
            f"and iterations, bias/masks{modulator} dropped", attn_impl="nystromformer", window=w,
            nystra={**params, **paper}, drop_modulator=uformer),
        Arm(f"performer-w{w}-paper", "", f"Performer FAVOR+ at window {w}, features = the recipe's landmarks, "
            f"bias/masks{modulator} dropped", attn_impl="performer", window=w, nystra={**params, **paper},
            drop_modulator=uformer),
    ]
    for bias in ("pooled", "drop"):
        for mask in ("exact", "drop"):
            arms.append(Arm(f"nystra-bias{bias}-mask{mask}", "", f"PnP-Nystra at the trained window, default "
                            f"parameters, bias {bias}, mask {mask}", attn_impl="nystra",
                            nystra={"bias": bias, "mask": mask}))
    for dtype, tag in (("bfloat16", "bf16"), ("float16", "fp16")):
        arms += [
            Arm(f"exact-{tag}", "", f"the model as trained in {dtype} ({PRECISION_NOTE})", dtype=dtype),
            Arm(f"sdpa-{tag}", "", f"exact fused attention in {dtype}", attn_impl="sdpa", dtype=dtype),
            Arm(f"nystra-{tag}", "", f"PnP-Nystra at the trained window (default parameters) in {dtype}",
                attn_impl="nystra", nystra=dict(ours), dtype=dtype),
        ]
    arms += runtime_arms(spec.spandrel, ours)
    return {a.name: a for a in arms}


RUNTIME_NOTE = ("float32 on the CPU, one graph per input shape; exporting or compiling a shape happens before the "
                "timing (prepare_s)")
# Arms that need spandrel's copy of the architecture: left out, like (f), where spandrel has none.
SPANDREL_ARMS = ("f", "spandrel", "onnxruntime-official", "openvino-official", "openvino-official-bf16")


def runtime_arms(spandrel: bool, ours: dict) -> list[Arm]:
    """The faster CPU routes (:mod:`~nystra_hub.inference.backends`): torch.compile of our exact model, and ONNX
    Runtime / OpenVINO running our exported graph (exact, PnP-Nystra) and the official one (spandrel's model exported to
    ONNX at opset 18, how users get CPU speed from these checkpoints today)."""
    arms = [Arm("compile", "", f"the model as trained (exact softmax) through torch.compile with inductor freezing "
                f"({RUNTIME_NOTE})", runtime="compile", dtype="float32")]
    for runtime, route in (("onnxruntime", "exported to ONNX, run by ONNX Runtime"),
                           ("openvino", "exported to ONNX, converted to OpenVINO IR, run by OpenVINO")):
        arms += [
            Arm(runtime, "", f"the model as trained (exact softmax) {route} ({RUNTIME_NOTE})", runtime=runtime,
                dtype="float32"),
            Arm(f"{runtime}-nystra", "", f"PnP-Nystra at the trained window (default parameters, bias pooled, cut "
                f"windows exact) {route}", attn_impl="nystra", nystra=dict(ours), runtime=runtime, dtype="float32"),
        ]
        if spandrel:
            arms.append(Arm(f"{runtime}-official", "", f"spandrel's model of the same weights (the official graph) "
                            f"{route}", backend="spandrel", runtime=runtime, dtype="float32"))
    bf16 = "with OpenVINO's bfloat16 inference precision (float32 in and out; CPUs with bfloat16 units)"
    arms.append(Arm("openvino-bf16", "", f"the model as trained (exact softmax) exported, run by OpenVINO {bf16}",
                    runtime="openvino", runtime_precision="bfloat16", dtype="float32"))
    if spandrel:
        arms.append(Arm("openvino-official-bf16", "", f"the official graph (spandrel's model exported) run by "
                        f"OpenVINO {bf16}", backend="spandrel", runtime="openvino", runtime_precision="bfloat16",
                        dtype="float32"))
    return arms


def sweep_arm(landmarks: int, window: int | None, recipe: dict, paper_form: bool, uformer: bool) -> Arm:
    """A PnP-Nystra arm of the landmarks sweep: trained window (default parameters, bias pooled, mask exact) or
    the enlarged window (the recipe's iterations and τ, paper form or ours)."""
    if window is None:
        return Arm(f"nystra-m{landmarks}", "", f"PnP-Nystra at the trained window with {landmarks} landmarks",
                   attn_impl="nystra", nystra={"landmarks": landmarks, "bias": "pooled", "mask": "exact"})
    form = {"bias": "drop", "mask": "drop"} if paper_form else {"bias": "pooled", "mask": "exact"}
    suffix = "-paper" if paper_form else ""
    return Arm(f"nystra-w{window}{suffix}-m{landmarks}", "", f"PnP-Nystra at window {window} with {landmarks} "
               f"landmarks ({'paper form' if paper_form else 'bias pooled, mask exact'})", attn_impl="nystra",
               window=window, nystra={"landmarks": landmarks, "iters": recipe["iters"], "tau": recipe["tau"],
                                      **form}, drop_modulator=paper_form and uformer)


def select_arms(available: dict[str, Arm], wanted: list[str] | tuple[str, ...], recipe: dict) -> list[Arm]:
    """Arms by name or letter; ``wW`` in a name stands for the recipe's window; unknown names raise."""
    by_letter = {a.letter: a for a in available.values() if a.letter}
    chosen: list[Arm] = []
    for item in wanted:
        key = item.replace("wW", f"w{recipe['window']}")
        arm = available.get(key) or by_letter.get(key)
        if arm is None:
            if key in SPANDREL_ARMS:
                continue  # spandrel has no copy of this architecture
            raise ValueError(f"unknown arm {item!r}; available: {', '.join(available)} (letters: "
                             f"{', '.join(by_letter)})")
        if arm not in chosen:
            chosen.append(arm)
    return chosen


def _drop_modulators(model: nn.Module) -> None:
    for module in model.modules():
        if hasattr(module, "modulator") and isinstance(module.modulator, nn.Embedding):
            module.modulator = None


def make_arm_model(base: nn.Module, arm: Arm, device: torch.device | str | None = None) -> nn.Module:
    """A model running ``arm``: a deep copy of ``base`` switched (window, attention, redo) or a spandrel model, on
    ``device`` (None: where ``base`` is), its blocks compiled for ``compile_blocks``; for an arm with a
    ``runtime``, that model's runner (:func:`~nystra_hub.inference.backends.make_runner`, default export cache)."""
    model = spandrel_model(base) if arm.backend == "spandrel" else _switched_copy(base, arm)
    if device is not None:
        model = model.to(device)  # before the runner: a CUDA graph captures the model where it is
    if arm.compile_blocks:
        # dynamic=None: the first shape compiles static, a block of another shape (another stage) triggers one
        # shape-generic compile instead of one compile per stage (Uformer has 9 stages).
        model.compile_blocks(dynamic=None)
    return model if arm.runtime == "torch" else make_runner(model, arm.runtime, precision=arm.runtime_precision)


def _switched_copy(base: nn.Module, arm: Arm) -> nn.Module:
    model = copy.deepcopy(base)
    if arm.window is not None:
        model.set_window_size(arm.window, method=arm.window_method)
    if arm.drop_modulator:
        _drop_modulators(model)
    register_baselines()  # the comparison arms (exact-paper, nystromformer, performer, chunked) run these
    model.set_attn_impl(arm.attn_impl, **(arm.nystra or {}))
    if arm.performer_features is not None:
        set_performer_features(model, arm.performer_features)
    if arm.plan:
        apply_plan(model, arm.plan)
    model.redo = arm.redo
    return model.eval()


def spandrel_model(base: nn.Module) -> nn.Module:
    """The same official state dict loaded through spandrel (a benchmark-only dependency)."""
    try:
        from spandrel import ModelLoader  # optional, heavy: only this arm needs it
    except ImportError as err:  # pragma: no cover
        raise RuntimeError("the spandrel arm needs spandrel (pip install 'nystra_hub[bench]')") from err
    state = {k: v.detach().clone() for k, v in base.state_dict().items()}
    descriptor = ModelLoader().load_from_state_dict(state)
    model = descriptor.model.eval()
    model.spandrel_arch = descriptor.architecture.id
    return model


# -- calling -----------------------------------------------------------------------------------------------------
PRECISION_NOTE = ("ours: float32 weights, half precision under autocast (residual stream, norms, softmax in float32), "
                  "a call with a NaN/Inf redone in float32; spandrel: model and input cast (how its users run half "
                  "precision)")


def forward_fn(model: nn.Module, source: ModelSource | None, protocol: str, dtype: torch.dtype = torch.float32, *,
               tile: int | None = None, tile_batch: int | None = None) -> Callable[[Tensor], Tensor]:
    """How an arm (``model``: :func:`make_arm_model`'s) is called on the (float32) benchmark input, returning float32.

    "forward": the raw model on the (already ranged) input; "official": the official test protocol on a [0, 1]
    image (spandrel models get our padding and crop around their forward, from ``source``). ``dtype``: see
    :data:`PRECISION_NOTE`; a spandrel model is cast in place. ``tile``: the raw forward's input restored through
    :func:`~nystra_hub.inference.restore.restore_tensor` in tiles of that side, ``tile_batch`` per forward."""
    ours = as_restoration_model(model)
    if tile is not None:
        return _tiled(model, ours, dtype, tile, tile_batch)
    if protocol == "forward":
        call = model
    elif isinstance(model, RestorationModel):
        call = model.official_inference
    else:
        call = functools.partial(source.protocol_model.official_inference, forward=model)
    if dtype == torch.float32:
        return call
    if ours is not None:  # our model or a runner of it
        return functools.partial(run_guarded, call, dtype=dtype, what="bench arm")
    model.to(dtype)
    return lambda x: call(x.to(dtype)).float()


def _tiled(model: nn.Module, ours: RestorationModel, dtype: torch.dtype, tile: int,
           tile_batch: int | None) -> Callable[[Tensor], Tensor]:
    """The raw forward's input (model range) restored in tiles, through ``model``'s runner when it is one."""
    backend = model if isinstance(model, Runner) else "torch"
    return lambda x: ours.to_model_range(restore_tensor(
        ours, ours.from_model_range(x), tile=tile, dtype=dtype, backend=backend, tile_batch=tile_batch))


def make_input(source: ModelSource, size: int, batch: int, protocol: str, device, dtype, seed: int) -> Tensor:
    """Uniform random [0, 1] images; for the raw forward mapped to the architecture's value range."""
    channels = source.protocol_model.in_channels
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, channels, size, size, generator=gen)
    if protocol == "forward":
        x = source.protocol_model.to_model_range(x)
    return x.to(device=device, dtype=dtype)

