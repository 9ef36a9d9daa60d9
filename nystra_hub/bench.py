"""``nystra-hub bench``: speed, peak memory and FLOPs of the attention arms of one model (a command, not a test).

Arms (see :func:`standard_arms`; W, m, iters, τ are the paper's recipe for the model, :func:`paper_recipe`):

====  ==========================  ===========================================================================
(a)   ``exact``                   the model as trained: exact softmax at the trained window, op for op
(b)   ``sdpa``                    exact, fused ``scaled_dot_product_attention``, trained window
(c)   ``exact-wW-paper``          exact at the enlarged window W, bias and masks dropped (Uformer: modulator
                                  dropped too): the paper's "Original", the baseline of its speedups
(c')  ``exact-wW``                exact at W with the bias table resized (bicubic) and masks kept
(d)   ``nystra``                  PnP-Nystra at the trained window, our default (bias pooled, mask exact)
(e)   ``nystra-wW-paper``         PnP-Nystra at W with the recipe, bias/mask (and Uformer modulator) dropped
(e')  ``nystra-wW``               PnP-Nystra at W with the recipe, bias pooled (resized table), mask exact
(f)   ``spandrel``                the same weights loaded through spandrel (SwinIR, Uformer): how users run
                                  these checkpoints today (official code path)
====  ==========================  ===========================================================================

Extra arms (``--arms``): ``sdpa-wW``, ``nystromformer``, ``performer``, ``nystromformer-wW-paper``,
``performer-wW-paper``, ``nystra-bias{pooled,drop}-mask{exact,drop}``.

Method: all arms of a size live in one process and are run interleaved round-robin (``--warmup`` rounds, then
``--runs`` timed rounds; the arm order rotates every round), so machine drift hits every arm alike; CUDA is
synchronised around each call. Medians, per-run times and per-round paired ratios are recorded. Ratios are
reported against (a), (f) and (c). Memory and FLOPs are measured first, so an arm whose forward cannot fit in
memory is recorded as an error and left out of the timing instead of ending the run. Peak memory: CUDA
``max_memory_allocated`` over one forward; CPU: the peak resident set size (VmHWM, reset through
/proc/self/clear_refs) of one first forward in a fresh subprocess per arm, which builds the same model and input
(``peak_rss_bytes``, and ``peak_increase_bytes`` above the RSS just before the forward). FLOPs:
``torch.utils.flop_counter.FlopCounterMode`` over one forward (matmuls, convolutions and fused attention;
elementwise ops, softmax and copies are not counted).

JSON (``schema: "nystra_hub.bench/1"``; times in seconds, memory in bytes)::

    {schema, created, command,
     model: {spec, kind: "variant"|"reference", name, arch, task, scale, trained_window, kwargs, weights,
             parameters},
     recipe: {window, landmarks, iters, tau, source},
     environment: {torch, python, platform, cpu_model, cpu_count, torch_threads, torch_interop_threads, device,
                   device_name, [cuda, cudnn, tf32_matmul], spandrel, nystra_hub, git_commit, load_average,
                   load_average_end},
     settings: {device, dtype, batch, sizes, runs, warmup, protocol, seed, threads, input, order, timer, memory,
                flops},
     arms: {<name>: {name, letter: "a".."f" | "", description, attn_impl, window (null: trained), nystra
                     (overrides or null), window_method, drop_modulator, backend: "nystra_hub"|"spandrel",
                     performer_features}},
     references: {"a": <name>, "f": <name>, "c": <name>},      # the arms ratios are taken against
     results: [{size, input_shape,
                arms: {<name>: {times_s: [...], warmup_times_s: [...], error: str|null, output_shape,
                                median_s, mean_s, min_s, max_s, iqr_s, stdev_s,
                                max_abs_diff_vs_a, mean_abs_diff_vs_a,
                                speedup: {"a:<name>": x, "f:<name>": x, "c:<name>": x},   # median ref / median
                                paired_speedup: {...},                  # median over rounds of ref / arm
                                flops, flops_by_op: {"aten.mm": n, ...},
                                CPU: peak_rss_bytes, rss_before_bytes, peak_increase_bytes, memory_method
                                CUDA: peak_bytes, allocated_before_bytes, peak_increase_bytes, memory_method
                                [memory_error]}}}]}
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import gc
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from .attention.baselines import register_baselines, set_performer_features
from .imageio import atomic_write_json
from .models import ARCHITECTURES, RestorationModel, build_model
from .models.common import ArchitectureSpec

SCHEMA_BENCH = "nystra_hub.bench/1"
DEFAULT_SIZES = (256, 512)
REFERENCE_ARMS = ("a", "f", "c")  # ratios are reported against these (by letter)


# -- models ------------------------------------------------------------------------------------------------------
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
            from .training import load_reference

            return load_reference(self.spec)[0]
        from .variants import build_variant, load_variant

        torch.manual_seed(seed)
        if self.checkpoint:
            return load_variant(self.name, self.checkpoint)
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
    if (path / "reference.json").is_file():
        info = json.loads((path / "reference.json").read_text())
        return ModelSource(spec=str(path), kind="reference", name=info.get("name", path.name), arch=info["arch"],
                           task=info["task"], scale=int(info.get("scale", 1)), window=int(info.get("window", 8)),
                           kwargs=info["kwargs"], info=info)
    from .variants import get_variant

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
    return {a.name: a for a in arms}


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
            if key == "f" or key == "spandrel":
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


def make_arm_model(base: nn.Module, arm: Arm) -> nn.Module:
    """A model running ``arm``: a deep copy of ``base`` switched (window, attention) or a spandrel model."""
    if arm.backend == "spandrel":
        return spandrel_model(base)
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
        from .plan import apply_plan

        apply_plan(model, arm.plan)
    return model.eval()


def spandrel_model(base: nn.Module) -> nn.Module:
    """The same official state dict loaded through spandrel (a benchmark-only dependency)."""
    try:
        from spandrel import ModelLoader
    except ImportError as err:  # pragma: no cover
        raise RuntimeError("the spandrel arm needs spandrel (pip install 'nystra_hub[bench]')") from err
    state = {k: v.detach().clone() for k, v in base.state_dict().items()}
    descriptor = ModelLoader().load_from_state_dict(state)
    model = descriptor.model.eval()
    model.spandrel_arch = descriptor.architecture.id
    return model


# -- calling -----------------------------------------------------------------------------------------------------
def forward_fn(model: nn.Module, source: ModelSource, protocol: str) -> Callable[[Tensor], Tensor]:
    """How an arm is called on the benchmark input.

    "forward": the raw model on the (already ranged) input; "official": the official test protocol on a [0, 1]
    image (spandrel models get our padding and crop around their forward)."""
    if protocol == "forward":
        return model
    if isinstance(model, RestorationModel):
        return model.official_inference
    return functools.partial(source.protocol_model.official_inference, forward=model)


def make_input(source: ModelSource, size: int, batch: int, protocol: str, device, dtype, seed: int) -> Tensor:
    """Uniform random [0, 1] images; for the raw forward mapped to the architecture's value range."""
    channels = source.protocol_model.in_channels
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, channels, size, size, generator=gen)
    if protocol == "forward":
        x = source.protocol_model.to_model_range(x)
    return x.to(device=device, dtype=dtype)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- environment -------------------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict:
    env = {
        "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
        "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(), "device": str(device),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        env.update(device_name=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(), tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
    else:
        env["device_name"] = env["cpu_model"]
    try:
        import spandrel

        env["spandrel"] = getattr(spandrel, "__version__", "unknown")
    except ImportError:
        env["spandrel"] = None
    from . import __version__

    env["nystra_hub"] = __version__
    env["git_commit"] = _git_commit()
    return env


def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[1]
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True,
                               timeout=10)
        if head.returncode:
            return None
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


# -- memory and FLOPs --------------------------------------------------------------------------------------------
def count_flops(fn: Callable[[Tensor], Tensor], x: Tensor) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn(x)
    by_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return {"flops": int(counter.get_total_flops()), "flops_by_op": by_op}


def _proc_status_kib(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


CPU_MEMORY_METHOD = ("peak resident set size (VmHWM) of one first forward in a fresh subprocess that builds the "
                     "same model and input; the high-water mark is reset (/proc/self/clear_refs) after building, "
                     "so peak_rss_bytes includes the weights, input and runtime, and peak_increase_bytes is the "
                     "peak minus the RSS just before the forward")
CUDA_MEMORY_METHOD = ("torch.cuda.max_memory_allocated over one forward after reset_peak_memory_stats "
                      "(peak_bytes), and minus memory_allocated before it (peak_increase_bytes)")


def _worker_main() -> int:
    """Subprocess entry: measure one arm's first-forward peak RSS (and FLOPs) and print JSON."""
    spec = json.loads(sys.stdin.read())
    torch.set_num_threads(spec["threads"])
    source = resolve_model(spec["model"], spec.get("checkpoint"))
    arm = Arm(**spec["arm"])
    base = source.build(spec["seed"])
    model = make_arm_model(base, arm)
    del base
    dtype = getattr(torch, spec["dtype"])
    model = model.to(dtype=dtype)
    fn = forward_fn(model, source, spec["protocol"])
    x = make_input(source, spec["size"], spec["batch"], spec["protocol"], "cpu", dtype, spec["seed"])
    gc.collect()
    result: dict = {}
    before = _proc_status_kib("VmRSS")
    if _reset_peak_rss() and before is not None:
        with torch.inference_mode():
            out = fn(x)
        peak = _proc_status_kib("VmHWM")
        result.update(peak_rss_bytes=peak * 1024, rss_before_bytes=before * 1024,
                      peak_increase_bytes=(peak - before) * 1024, memory_method=CPU_MEMORY_METHOD)
        del out
    else:  # pragma: no cover - not Linux
        import resource

        with torch.inference_mode():
            fn(x)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        result.update(peak_rss_bytes=peak, rss_before_bytes=None, peak_increase_bytes=None,
                      memory_method="ru_maxrss of the subprocess (includes building the model)")
    if spec.get("flops"):
        result.update(count_flops(fn, x))
    print("BENCH-WORKER " + json.dumps(result))
    return 0


def _mem_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def measure_cpu_memory(source: ModelSource, arm: Arm, size: int, args, flops: bool) -> dict:
    spec = {"model": source.spec, "checkpoint": source.checkpoint, "arm": arm.config(), "size": size,
            "batch": args.batch, "dtype": args.dtype, "threads": torch.get_num_threads(), "seed": args.seed,
            "protocol": args.protocol, "flops": flops}
    cmd = [sys.executable, "-c", "import sys, nystra_hub.bench as b; sys.exit(b._worker_main())"]
    try:
        proc = subprocess.run(cmd, input=json.dumps(spec), capture_output=True, text=True,
                              timeout=args.worker_timeout)
    except subprocess.TimeoutExpired:
        return {"memory_error": f"worker timed out after {args.worker_timeout}s"}
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH-WORKER "):
            return json.loads(line[len("BENCH-WORKER "):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    if proc.returncode < 0:  # killed by a signal: SIGKILL is what the kernel's OOM killer sends
        return {"memory_error": f"worker killed by signal {-proc.returncode} (out of memory?)",
                "memory_killed": True}
    return {"memory_error": f"worker exited with {proc.returncode}: {' | '.join(tail)}"}


def measure_cuda_memory(fn: Callable, x: Tensor, device: torch.device, flops: bool) -> dict:
    gc.collect()
    torch.cuda.empty_cache()
    _sync(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode():
        out = fn(x)
    _sync(device)
    peak = torch.cuda.max_memory_allocated(device)
    del out
    result = {"peak_bytes": peak, "allocated_before_bytes": before, "peak_increase_bytes": peak - before,
              "memory_method": CUDA_MEMORY_METHOD}
    if flops:
        result.update(count_flops(fn, x))
    return result


# -- statistics --------------------------------------------------------------------------------------------------
def summarise(times: list[float]) -> dict:
    if not times:
        return {}
    ordered = sorted(times)
    q = statistics.quantiles(ordered, n=4) if len(ordered) >= 2 else [ordered[0]] * 3
    return {"median_s": statistics.median(ordered), "mean_s": statistics.fmean(ordered), "min_s": ordered[0],
            "max_s": ordered[-1], "iqr_s": q[2] - q[0],
            "stdev_s": statistics.stdev(ordered) if len(ordered) > 1 else 0.0}


def ratios(results: dict[str, dict], references: dict[str, str]) -> None:
    """Add speedup (median ref / median arm) and paired speedup (median over rounds of ref/arm) per reference."""
    for entry in results.values():
        entry["speedup"], entry["paired_speedup"] = {}, {}
        for letter, ref in references.items():
            ref_entry = results.get(ref)
            if not ref_entry or not ref_entry.get("times_s") or not entry.get("times_s"):
                continue
            key = f"{letter}:{ref}"
            entry["speedup"][key] = ref_entry["median_s"] / entry["median_s"]
            pairs = [r / t for r, t in zip(ref_entry["times_s"], entry["times_s"])]
            entry["paired_speedup"][key] = statistics.median(pairs)


# -- the benchmark -----------------------------------------------------------------------------------------------
def run_bench(args: argparse.Namespace, log=print) -> dict:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    source = resolve_model(args.model, args.checkpoint)
    recipe = paper_recipe(source.arch, source.task)
    if args.window:
        recipe = {**recipe, "window": args.window, "source": recipe["source"] + f"; window overridden to "
                  f"{args.window}"}
    available = standard_arms(source, recipe)
    arms = select_arms(available, args.arms or BENCH_DEFAULT, recipe) + plan_arms(getattr(args, "plan", None))
    references = {}
    for letter in REFERENCE_ARMS:
        found = [a.name for a in arms if a.letter == letter]
        if found:
            references[letter] = found[0]
    base = source.build(args.seed)
    models: dict[str, nn.Module] = {}
    build_errors: dict[str, str] = {}
    for arm in arms:
        try:
            models[arm.name] = make_arm_model(base, arm).to(device=device, dtype=dtype)
        except Exception as err:  # noqa: BLE001 - an arm that cannot be built is reported, not fatal
            build_errors[arm.name] = f"{type(err).__name__}: {err}"
            log(f"  {arm.name}: cannot build ({build_errors[arm.name]})")
    memory_on = args.memory == "on"
    flops_on = args.flops == "on"
    report = {
        "schema": SCHEMA_BENCH,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": shlex.join(["nystra-hub", "bench", *args.argv]),
        "model": source.describe(base),
        "recipe": recipe,
        "environment": environment(device),
        "settings": {
            "device": str(device), "dtype": args.dtype, "batch": args.batch, "sizes": args.sizes,
            "runs": args.runs, "warmup": args.warmup, "protocol": args.protocol, "seed": args.seed,
            "threads": torch.get_num_threads(),
            "input": "uniform random [0,1) (DehazeFormer's raw forward: mapped to [-1,1]), square, "
                     "batch x channels x size x size; for SR the size is the low-resolution input",
            "order": "per size: memory/FLOPs forward of every arm first (CPU: in subprocesses; an arm that "
                     "cannot fit is skipped), then warm-up rounds and timed rounds; every round runs every arm "
                     "once, the arm order rotated by one each round; all timed arms in one process",
            "timer": "time.perf_counter around one call under torch.inference_mode"
                     + (", torch.cuda.synchronize before and after" if device.type == "cuda" else ""),
            "memory": (CUDA_MEMORY_METHOD if device.type == "cuda" else CPU_MEMORY_METHOD) if memory_on else "off",
            "flops": "torch.utils.flop_counter.FlopCounterMode over one forward (matmul, conv, attention ops)"
                     if flops_on else "off",
        },
        "arms": {a.name: a.config() for a in arms},
        "references": references,
        "results": [],
    }
    for size in args.sizes:
        log(f"size {size}: {len(models)} arms, {args.warmup} warm-up + {args.runs} timed rounds")
        x = make_input(source, size, args.batch, args.protocol, device, dtype, args.seed)
        entries: dict[str, dict] = {}
        fns: dict[str, Callable] = {}
        for arm in arms:
            entries[arm.name] = {"times_s": [], "warmup_times_s": [], "error": build_errors.get(arm.name)}
            if arm.name in models:
                fns[arm.name] = forward_fn(models[arm.name], source, args.protocol)
        # Memory and FLOPs first: an arm whose forward cannot fit is found in a subprocess (CPU) or caught (CUDA)
        # and left out of the timing instead of taking the whole run down.
        if memory_on or flops_on:
            for arm in arms:
                entry = entries[arm.name]
                if arm.name not in fns or entry["error"]:
                    continue
                if device.type == "cuda" and memory_on:
                    try:
                        entry.update(measure_cuda_memory(fns[arm.name], x, device, flops_on))
                    except Exception as err:  # noqa: BLE001 - typically out of memory
                        entry["error"] = f"{type(err).__name__}: {err}"
                        torch.cuda.empty_cache()
                elif memory_on:
                    entry.update(measure_cpu_memory(source, arm, size, args, flops_on))
                    if entry.get("memory_killed"):
                        entry["error"] = entry["memory_error"]
                elif flops_on:
                    try:
                        entry.update(count_flops(fns[arm.name], x))
                    except Exception as err:  # noqa: BLE001
                        entry["error"] = f"{type(err).__name__}: {err}"
                log(f"  {arm.name}: peak {_fmt_bytes(entry.get('peak_rss_bytes', entry.get('peak_bytes')))}, "
                    f"{(entry.get('flops') or 0) / 1e9:.2f} GFLOP"
                    + (f"  [{entry['error'][:120]}]" if entry["error"] else ""))
        if device.type == "cpu" and memory_on:
            available = _mem_available()
            for name, entry in entries.items():
                need = entry.get("peak_increase_bytes")
                if not entry["error"] and need and available and need > 0.9 * available:
                    entry["error"] = (f"skipped: its forward needs {_fmt_bytes(need)} more than the "
                                      f"{_fmt_bytes(available)} available")
                    log(f"  {name}: {entry['error']}")
        reference_out = None
        names = [a.name for a in arms if a.name in fns]
        total_rounds = args.warmup + args.runs
        round_start = time.perf_counter()
        for rnd in range(total_rounds):
            order = names[rnd % len(names):] + names[: rnd % len(names)] if names else []
            for name in order:
                entry = entries[name]
                if entry["error"]:
                    continue
                try:
                    _sync(device)
                    with torch.inference_mode():
                        t0 = time.perf_counter()
                        out = fns[name](x)
                        _sync(device)
                        elapsed = time.perf_counter() - t0
                except Exception as err:  # noqa: BLE001 - e.g. out of memory at a large size
                    entry["error"] = f"{type(err).__name__}: {err}"
                    log(f"  {name}: failed ({entry['error'][:200]})")
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    continue
                (entry["warmup_times_s"] if rnd < args.warmup else entry["times_s"]).append(elapsed)
                if "output_shape" not in entry:
                    entry["output_shape"] = list(out.shape)
                    if name == references.get("a"):
                        reference_out = out.detach().float().cpu()
                    entry["_out"] = out.detach().float().cpu()
                del out
            if rnd == 0:
                spent = time.perf_counter() - round_start
                log(f"  round 1 took {spent:.1f}s; about {spent * (total_rounds - 1):.0f}s more for timing")
        for name, entry in entries.items():
            out = entry.pop("_out", None)
            if out is not None and reference_out is not None and out.shape == reference_out.shape:
                diff = (out - reference_out).abs()
                entry["max_abs_diff_vs_a"] = float(diff.max())
                entry["mean_abs_diff_vs_a"] = float(diff.mean())
            entry.update(summarise(entry["times_s"]))
            if entry["times_s"]:
                log(f"  {name}: median {entry['median_s'] * 1e3:.1f} ms over {len(entry['times_s'])} runs")
        del reference_out
        ratios(entries, references)
        report["results"].append({"size": size, "input_shape": list(x.shape), "arms": entries})
        del x
    report["environment"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return report


def _fmt_bytes(value) -> str:
    return "n/a" if value is None else f"{value / 2**20:.0f} MiB"


# -- plots -------------------------------------------------------------------------------------------------------
def plot_bench(reports: list[dict], path: str | os.PathLike) -> Path:
    """Median time vs size per arm, and speedups vs (a) and (c), one row per report (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(reports), 3, figsize=(16, 4.5 * len(reports)), squeeze=False)
    for row, report in zip(axes, reports):
        sizes = [r["size"] for r in report["results"]]
        refs = report.get("references", {})
        for name, arm in report["arms"].items():
            label = f"({arm['letter']}) {name}" if arm.get("letter") else name
            med = [r["arms"].get(name, {}).get("median_s") for r in report["results"]]
            pts = [(s, m * 1e3) for s, m in zip(sizes, med) if m]
            if pts:
                row[0].plot(*zip(*pts), marker="o", label=label)
            for ax, letter in ((row[1], "a"), (row[2], "c")):
                key = f"{letter}:{refs.get(letter)}"
                sp = [(s, r["arms"].get(name, {}).get("speedup", {}).get(key)) for s, r in
                      zip(sizes, report["results"])]
                sp = [(s, v) for s, v in sp if v]
                if sp:
                    ax.plot(*zip(*sp), marker="o", label=label)
        env = report["environment"]
        title = f"{report['model']['name']} on {env.get('device_name')} ({report['settings']['threads']} threads)"
        row[0].set(xscale="log", yscale="log", xlabel="input side (px)", ylabel="median time (ms)", title=title)
        row[1].set(xscale="log", xlabel="input side (px)", ylabel="speedup", title=f"vs (a) {refs.get('a')}")
        row[2].set(xscale="log", xlabel="input side (px)", ylabel="speedup", title=f"vs (c) {refs.get('c')}")
        for ax in row:
            ax.set_xticks(sizes, [str(s) for s in sizes])
            ax.minorticks_off()
            ax.grid(True, alpha=0.3)
        row[1].axhline(1.0, color="k", lw=0.8)
        row[2].axhline(1.0, color="k", lw=0.8)
        row[0].legend(fontsize=7)
    return save_figure(fig, path)


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write a matplotlib figure as PNG (parent folders created) and close it; shared by bench and fidelity."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- command line ------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="catalogue variant (random weights unless --checkpoint) or a "
                                        "reference-model folder")
    parser.add_argument("--checkpoint", help="released checkpoint for the variant (loaded strictly)")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES),
                        help="square input sides (model input: LR side for SR); default 256 512")
    parser.add_argument("--arms", nargs="+", default=None,
                        help="arm names or letters (a b c c' d e e' f); 'wW' stands for the recipe window "
                             "(default: a b c c' d e e' f)")
    parser.add_argument("--list-arms", action="store_true", help="list the arms for --model and exit")
    parser.add_argument("--runs", type=int, default=5, help="timed rounds (median over them); default 5")
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up rounds; default 1")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--protocol", default="forward", choices=["forward", "official"],
                        help="'forward': the raw model on a size x size input (each pads to its window itself); "
                             "'official': the official test protocol (its padding included)")
    parser.add_argument("--window", type=int, default=None, help="override the recipe's enlarged window")
    parser.add_argument("--plan", nargs="+", metavar="JSON",
                        help="extra arms running per-layer plans (nystra-hub calibrate --out files)")
    parser.add_argument("--memory", default="on", choices=["on", "off"],
                        help="peak memory per arm (CPU: one subprocess forward per arm and size)")
    parser.add_argument("--flops", default="on", choices=["on", "off"], help="FLOPs per arm (one forward)")
    parser.add_argument("--worker-timeout", type=int, default=3600, help="seconds for a CPU memory subprocess")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="JSON output (default benchmarks/bench-<model>-<device>.json)")
    parser.add_argument("--plot", help="PNG output (default: the JSON path with .png)")
    parser.add_argument("--plot-only", nargs="+", metavar="JSON",
                        help="redraw the plot from existing bench JSON files (to --plot) and exit")


def run(args: argparse.Namespace) -> int:
    args.argv = getattr(args, "argv", None) or _argv_after("bench")
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
    report = run_bench(args, log=lambda m: print(m, flush=True))
    name = Path(args.model).name if Path(args.model).is_dir() else args.model
    out = Path(args.out or f"benchmarks/bench-{name}-{args.device.replace(':', '')}.json")
    atomic_write_json(out, report, indent=1)
    plot = plot_bench([report], args.plot or out.with_suffix(".png"))
    print(f"wrote {out} and {plot}")
    _print_table(report)
    return 0


def _argv_after(command: str) -> list[str]:
    argv = sys.argv[1:]
    return argv[argv.index(command) + 1:] if command in argv else argv


def _print_table(report: dict) -> None:
    refs = report["references"]
    for result in report["results"]:
        print(f"\nsize {result['size']} ({report['settings']['device']}, {report['settings']['threads']} threads)")
        print(f"{'arm':<26}{'median ms':>11}{'vs a':>8}{'vs f':>8}{'vs c':>8}{'peak MiB':>10}{'GFLOP':>9}")
        for name, entry in result["arms"].items():
            if entry.get("error") and not entry.get("times_s"):
                print(f"{name:<26}  error: {entry['error'][:80]}")
                continue
            cells = []
            for letter in ("a", "f", "c"):
                v = entry.get("speedup", {}).get(f"{letter}:{refs.get(letter)}")
                cells.append(f"{v:8.2f}" if v else f"{'-':>8}")
            peak = entry.get("peak_rss_bytes", entry.get("peak_bytes"))
            print(f"{name:<26}{entry.get('median_s', float('nan')) * 1e3:11.1f}{''.join(cells)}"
                  f"{(peak / 2**20 if peak else float('nan')):10.0f}{(entry.get('flops') or 0) / 1e9:9.2f}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_worker_main())
