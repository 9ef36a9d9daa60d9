"""The GPU measurement behind the model cards' GPU columns (``benchmarks/gpu.sh`` runs it through
``benchmarks/gpu_bench.py``; schema ``nystra_hub.gpu_bench/1``).

One process, random (seeded) weights, synthetic inputs, no network, nothing from ``../shared``. For each model and
size, every arm is built from the same weights and run interleaved: one untimed warm-up round (compilation happens
there), one round measuring peak memory and output quality, then ``runs`` timed rounds with the arm order rotated
each round (:mod:`.timing`, as bench does); medians are reported. Quality is PSNR against our float32 exact output
on the same input (outputs mapped to [0, 1] and clamped), plus the number of non-finite output values.

The arms (:func:`arms_for`) are the routes a GPU user can take: float32, bfloat16 and float16 autocast with the
non-finite guard, spandrel cast to half precision (the official code path), fused SDPA, FlexAttention and
PnP-Nystra (its redo of untrustworthy windows bounded, one host synchronisation per forward, or counted, one per
layer) eager or ``torch.compile``-d per block, CUDA graphs, tiles batched into one forward, and the paper's
enlarged windows. Besides the cases: which fused SDPA kernel serves window attention (:func:`sdpa_kernels`),
compiled FlexAttention at the same shapes (:func:`flex_kernels`), the host synchronisations of a nystra forward
(:func:`host_syncs`), a float16 overflow stress (:func:`fp16_stress`) and a profile of where the time goes
(:func:`profile_arms`).

``GpuBenchSettings(dry_run=True)`` runs every code path on the CPU with tiny models and sizes in seconds (CI and
``tests/measure/test_gpu_bench.py`` run it), except what needs CUDA: the CUDA-graph arms (listed in
``skipped_arms``), peak memory (null), the kernel surveys and the synchronisation count (absent).
"""

from __future__ import annotations

import copy
import gc
import math
import os
import statistics
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile

from nystra_hub.attention.core import fused_attention
from nystra_hub.attention.flex import flex_attention, flex_head_dim, window_score_mod
from nystra_hub.inference.backends import make_runner
from nystra_hub.inference.precision import PrecisionFallbackWarning, run_guarded
from nystra_hub.inference.restore import restore_tensor
from nystra_hub.io.images import atomic_write_json
from nystra_hub.io.variants import build_variant, get_variant
from nystra_hub.measure import environment as measure_environment
from nystra_hub.measure.arms import Arm, make_arm_model, paper_recipe
from nystra_hub.measure.metrics import psnr
from nystra_hub.measure.timing import rotated, synchronize, timed_call
from nystra_hub.models import ARCHITECTURES, build_model

SCHEMA = "nystra_hub.gpu_bench/1"
REPORT_NAME = "gpu-bench.json"


@dataclass(frozen=True)
class GpuBenchSettings:
    """One GPU run (the options of ``benchmarks/gpu_bench.py``)."""

    dry_run: bool = False  # the CPU, tiny models and sizes, one timed round: every code path in seconds
    runs: int = 5  # timed rounds (a dry run makes one)
    budget_s: float = 300  # no new size is started after this many seconds
    arms: list[str] | None = None  # only these arms (None: each case's own)
    seed: int = 0
    stress_bias: float | None = None  # added to every MLP output bias in the fp16 stress (None: see below)
    command: str = "benchmarks/gpu.sh"  # what the report records as the command that made it

    @property
    def device(self) -> torch.device:
        return torch.device("cpu" if self.dry_run else "cuda")

    @property
    def rounds(self) -> int:
        return 1 if self.dry_run else self.runs

    @property
    def inflation(self) -> float:
        """The fp16 stress's bias: 3000 overflows SwinIR-M's float16 residual stream; the tiny dry-run model
        needs 40000."""
        if self.stress_bias is not None:
            return self.stress_bias
        return 40000.0 if self.dry_run else 3000.0


@dataclass(frozen=True)
class GpuArm:
    name: str
    description: str
    backend: str = "nystra_hub"  # or "spandrel"
    attn_impl: str = "softmax"
    dtype: str = "float32"
    precision: str = "autocast"  # ours: float32 weights under autocast + non-finite guard; spandrel: "cast"
    compile: bool = False
    window: int | None = None
    nystra: dict | None = None
    drop_modulator: bool = False
    runner: str = "torch"  # what runs the forward: eager "torch", or "cudagraphs" (nystra_hub.inference.backends)
    tiled: bool = False  # through restore_tensor in tiles of the case's "tile" side
    tile_batch: int | None = None  # tiles per forward (None: as many as half the free GPU memory holds)
    redo: str = "auto"  # nystra's redo of untrustworthy windows (RestorationModel.redo): "auto" bounds it on CUDA


CUDA_ONLY_RUNNERS = ("cudagraphs",)


def arms_for(arch: str, recipe: dict, tile: int | None = None) -> list[GpuArm]:
    w = recipe["window"]
    paper = {k: recipe[k] for k in ("landmarks", "iters", "tau")} | {"bias": "drop", "mask": "drop"}
    modulators = ARCHITECTURES[arch].spec.modulators  # the paper's recipe drops them too (Uformer's decoder)
    arms = []
    if ARCHITECTURES[arch].spec.spandrel:
        arms += [
            GpuArm("spandrel-fp32", "spandrel (official code path), float32", "spandrel", precision="cast"),
            GpuArm("spandrel-bf16", "spandrel, model and input cast to bfloat16 (chaiNNer's half mode)",
                   "spandrel", dtype="bfloat16", precision="cast"),
            GpuArm("spandrel-fp16", "spandrel, model and input cast to float16 (what gives black images)",
                   "spandrel", dtype="float16", precision="cast"),
        ]
    arms += [
        GpuArm("exact-fp32", "ours, exact softmax attention, float32 (the model as trained)"),
        GpuArm("sdpa-fp32", "ours, exact fused SDPA (bias as additive mask), float32", attn_impl="sdpa"),
        GpuArm("exact-bf16", "ours, exact softmax, bf16 autocast (fp32 residual stream, norms, softmax)",
               dtype="bfloat16"),
        GpuArm("sdpa-bf16", "ours, exact fused SDPA, bf16 autocast", attn_impl="sdpa", dtype="bfloat16"),
        GpuArm("exact-fp16", "ours, exact softmax, fp16 autocast + per-call non-finite check (fp32 redo)",
               dtype="float16"),
        GpuArm("sdpa-fp16", "ours, exact fused SDPA, fp16 autocast + non-finite check", attn_impl="sdpa",
               dtype="float16"),
        GpuArm("compile-bf16", "ours, SDPA, torch.compile per transformer block, bf16 autocast", attn_impl="sdpa",
               dtype="bfloat16", compile=True),
        GpuArm("flex-compile-bf16", "ours, FlexAttention (bias and shift mask in score_mod, head dim padded to a "
               "power of two >= 16), torch.compile per transformer block, bf16 autocast", attn_impl="flex",
               dtype="bfloat16", compile=True),
        GpuArm("nystra-bf16", "ours, PnP-Nystra at the trained window (bias pooled, cut windows exact; kernel and "
               "pseudo-inverse fp32), bf16 autocast elsewhere; a bounded redo of untrustworthy windows, checked "
               "once per forward", attn_impl="nystra", dtype="bfloat16"),
        GpuArm("nystra-exact-count-bf16", "ours, PnP-Nystra as nystra-bf16, each layer redoing exactly its "
               "untrustworthy windows: a host synchronisation per layer", attn_impl="nystra", dtype="bfloat16",
               redo="exact-count"),
        GpuArm("nystra-compile-bf16", "ours, PnP-Nystra as nystra-bf16 (bounded redo), torch.compile per "
               "transformer block", attn_impl="nystra", dtype="bfloat16", compile=True),
        GpuArm("graph-exact-fp32", "ours, exact softmax, float32, captured once as a CUDA graph and replayed",
               runner="cudagraphs"),
        GpuArm("graph-exact-bf16", "ours, exact softmax, bf16 autocast, CUDA graph", dtype="bfloat16",
               runner="cudagraphs"),
        GpuArm("graph-sdpa-bf16", "ours, exact fused SDPA, bf16 autocast, CUDA graph", attn_impl="sdpa",
               dtype="bfloat16", runner="cudagraphs"),
    ]
    if tile:
        arms += [
            GpuArm(f"tiles{tile}-exact-bf16", f"ours, restore in {tile}-px tiles, one tile per forward, exact, bf16",
                   dtype="bfloat16", tiled=True, tile_batch=1),
            GpuArm(f"tiles{tile}x-exact-bf16", f"ours, restore in {tile}-px tiles, as many per forward as half the "
                   "free memory holds, exact, bf16", dtype="bfloat16", tiled=True),
            GpuArm(f"tiles{tile}x-graph-exact-bf16", f"ours, {tile}-px tiles batched, exact, bf16, CUDA graph of "
                   "the tile batch", dtype="bfloat16", tiled=True, runner="cudagraphs"),
        ]
    for dtype, tag in (("float32", "fp32"), ("bfloat16", "bf16")):
        arms += [
            GpuArm(f"exact-w{w}-paper-{tag}", f"exact softmax at window {w}, bias and masks"
                   f"{' and modulators' if modulators else ''} dropped: the paper's 'Original' baseline, {dtype}",
                   attn_impl="exact-paper", dtype=dtype, window=w, drop_modulator=modulators),
            GpuArm(f"nystra-w{w}-paper-{tag}", f"PnP-Nystra at window {w} with the paper's recipe and choices, "
                   f"{dtype}", attn_impl="nystra", dtype=dtype, window=w, nystra=paper, drop_modulator=modulators),
        ]
    return arms


# -- building and calling ---------------------------------------------------------------------------------------
def build_arm(base: nn.Module, arm: GpuArm, device: torch.device, tile: int | None = None
              ) -> Callable[[Tensor], Tensor]:
    """The arm's callable: float32 input in the model's range -> float32 output."""
    spec = Arm(arm.name, "", arm.description, attn_impl=arm.attn_impl, window=arm.window, nystra=arm.nystra,
               drop_modulator=arm.drop_modulator, backend="spandrel" if arm.backend == "spandrel" else "nystra_hub")
    model = make_arm_model(base, spec).to(device)
    dtype = getattr(torch, arm.dtype)
    if arm.precision == "cast":
        model = model.to(dtype)
        return lambda x: model(x.to(dtype)).float()
    model.validate_inputs = False  # the benchmark input is finite; the check is a device sync per call
    # A dry run stands in for the GPU: on its CPU, "auto" runs what it runs on CUDA (the bounded redo).
    model.redo = "bounded" if arm.redo == "auto" and device.type == "cpu" else arm.redo
    if arm.compile:
        # dynamic=None: the first shape compiles static, a block of another shape (another stage) triggers one
        # shape-generic compile instead of one compile per stage (Uformer has 9 stages).
        model.compile_blocks(dynamic=None)
    runner = make_runner(model, arm.runner)
    if arm.tiled:
        return lambda x: model.to_model_range(restore_tensor(
            model, model.from_model_range(x), tile=tile, dtype=dtype, backend=runner, tile_batch=arm.tile_batch))
    return lambda x: run_guarded(runner, x, dtype, what=arm.name)


def make_input(model: nn.Module, size: int, device: torch.device, seed: int) -> Tensor:
    """A uniform random square image with ``model``'s input channels, in its forward's value range."""
    x = torch.rand(1, model.in_channels, size, size, generator=torch.Generator().manual_seed(seed))
    return model.to_model_range(x).to(device)


def to_unit(model: nn.Module, y: Tensor) -> Tensor:
    """An output of ``model``'s forward mapped to [0, 1] and clamped, in float32."""
    return model.from_model_range(y).float().clamp(0, 1)


def call(fn: Callable, x: Tensor, device: torch.device) -> tuple[Tensor, float, int]:
    """(output, seconds, fp32 fallbacks) of one synchronised call (:func:`.timing.timed_call`); a fallback is a
    half-precision call redone in float32 because it produced a NaN/Inf."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PrecisionFallbackWarning)
        out, elapsed = timed_call(fn, x, device)
    fallbacks = sum(issubclass(w.category, PrecisionFallbackWarning) for w in caught)
    return out, elapsed, fallbacks


def error_text(err: BaseException) -> str:
    """An error for the report: its type, its first 300 characters and, for a long one, its last 1200 (where a
    compiler's own message is: inductor's CppCompileError starts with the command line)."""
    text = str(err)
    if len(text) > 1500:
        text = f"{text[:300]} [...] {text[-1200:]}"
    return f"{type(err).__name__}: {text}"


# -- one model at one size --------------------------------------------------------------------------------------
@dataclass
class ArmResult:
    times_s: list[float] = field(default_factory=list)
    warmup_s: float | None = None
    peak_bytes: int | None = None
    psnr_vs_exact_fp32: float | None = None
    max_abs_diff_vs_exact_fp32: float | None = None
    nonfinite_values: int | None = None
    fp32_fallbacks: int = 0
    error: str | None = None


def measure(fns: dict[str, Callable], x: Tensor, base: nn.Module, device: torch.device, runs: int, log) -> dict:
    """{arm: its row} for one input: a warm-up round, a round for peak memory and quality (PSNR against the
    ``exact-fp32`` arm's output, non-finite values), then ``runs`` timed rounds in rotated order. An arm that
    fails keeps its error and is left out of the later rounds."""
    results = {name: ArmResult() for name in fns}

    def guarded(name: str, step: Callable[[], None]) -> None:
        if results[name].error:
            return
        try:
            step()
        except Exception as err:  # noqa: BLE001 - one arm failing (OOM, compile) must not end the run
            results[name].error = error_text(err)
            log(f"    {name}: {results[name].error}")
            if device.type == "cuda":
                torch.cuda.empty_cache()

    for name, fn in fns.items():  # warm-up (compilation happens here)
        guarded(name, lambda n=name, f=fn: setattr(results[n], "warmup_s", call(f, x, device)[1]))
    outputs: dict[str, Tensor] = {}
    for name, fn in fns.items():  # memory and quality
        def quality(n=name, f=fn):
            gc.collect()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            out, _, fallbacks = call(f, x, device)
            if device.type == "cuda":
                results[n].peak_bytes = torch.cuda.max_memory_allocated(device)
            results[n].nonfinite_values = int((~torch.isfinite(out)).sum())
            results[n].fp32_fallbacks += fallbacks
            outputs[n] = to_unit(base, torch.nan_to_num(out, nan=0.0)).cpu()
        guarded(name, quality)
    reference = outputs.get("exact-fp32")
    for name, unit in outputs.items():
        if reference is not None and unit.shape == reference.shape:
            results[name].psnr_vs_exact_fp32 = psnr(unit, reference, data_range=1.0)
            results[name].max_abs_diff_vs_exact_fp32 = float((unit - reference).abs().max())
    outputs.clear()
    names = list(fns)
    for rnd in range(runs):
        for name in rotated(names, rnd):
            guarded(name, lambda n=name: results[n].times_s.append(call(fns[n], x, device)[1]))
    table = {}
    for name, res in results.items():
        row = asdict(res)
        if res.times_s:
            row["median_s"] = statistics.median(res.times_s)
        if row.get("psnr_vs_exact_fp32") == math.inf:
            row["psnr_vs_exact_fp32"] = "identical"
        table[name] = row
    return table


def run_case(case: dict, settings: GpuBenchSettings, deadline: float, log) -> dict:
    """One model's entry of ``cases``: its arms built once, then measured at each of its sizes until the
    ``deadline`` (a ``time.perf_counter`` value) has passed."""
    device = settings.device
    arch, kwargs = case["arch"], case["kwargs"]
    recipe = paper_recipe(arch, case["task"])
    torch.manual_seed(settings.seed)
    base = build_model(arch, **kwargs) if "variant" not in case else build_variant(case["variant"])
    base = base.eval()
    wanted = settings.arms or case.get("arms")
    compiles = bool(set(case.get("compile_sizes", case["sizes"])) & set(case["sizes"]))
    arms = [a for a in arms_for(arch, recipe, case.get("tile"))
            if (not wanted or a.name in wanted) and (compiles or not a.compile)]
    fns, errors, skipped = {}, {}, {}
    for arm in arms:
        if arm.runner in CUDA_ONLY_RUNNERS and device.type != "cuda":
            skipped[arm.name] = f"the {arm.runner} runner needs CUDA"
            continue
        try:
            fns[arm.name] = build_arm(base, arm, device, case.get("tile"))
        except Exception as err:  # noqa: BLE001
            errors[arm.name] = error_text(err)
            log(f"    {arm.name}: cannot build ({errors[arm.name]})")
    out = {"model": case["name"], "arch": arch, "variant": case.get("variant"), "recipe": recipe,
           "parameters": sum(p.numel() for p in base.parameters()),
           "arms": {a.name: asdict(a) for a in arms if a.name not in skipped}, "skipped_arms": skipped,
           "results": []}
    for size in case["sizes"]:
        sized = {n: f for n, f in fns.items() if (size in case.get("compile_sizes", case["sizes"])
                 or not out["arms"][n]["compile"]) and (size in case.get("tile_sizes", []) or not
                 out["arms"][n]["tiled"])}
        if time.perf_counter() > deadline:
            out["results"].append({"size": size, "skipped": "time budget of the run spent"})
            log(f"  {case['name']} {size}: skipped (time budget)")
            continue
        t_size = time.perf_counter()
        x = make_input(base, size, device, settings.seed)
        table = measure(sized, x, base, device, settings.rounds, log)
        for name, err in errors.items():
            table[name] = {"error": err}
        out["results"].append({"size": size, "input_shape": list(x.shape), "arms": table,
                               "seconds": round(time.perf_counter() - t_size, 1)})
        log_table(case["name"], size, table, log)
        del x
    del fns, base
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def log_table(name: str, size: int, table: dict, log) -> None:
    log(f"  {name} {size}x{size}:")
    ref = table.get("spandrel-fp32", {}).get("median_s")
    for arm, row in table.items():
        if row.get("median_s") is None:
            log(f"    {arm:<24} {str(row.get('error'))[:90]}")
            continue
        vs = f"{ref / row['median_s']:6.2f}x spandrel-fp32" if ref else ""
        peak = row.get("peak_bytes")
        log(f"    {arm:<24} {row['median_s'] * 1e3:9.2f} ms  {vs}  psnr {row.get('psnr_vs_exact_fp32')}  "
            f"nonfinite {row.get('nonfinite_values')}  peak {peak / 2**30 if peak else 0:.2f} GiB")


# -- SDPA kernel selection ----------------------------------------------------------------------------------------
def sdpa_kernels(device: torch.device, head_dims=(30, 32, 16, 12, 24, 48), windows: int = 4096) -> list[dict]:
    """Which fused SDPA backend runs window attention with a (heads, 64, 64) bias mask, per head dim and dtype."""
    rows = []
    backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION,
                SDPBackend.MATH]
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        for d in head_dims:
            heads = 6
            q, k, v = (torch.randn(windows, heads, 64, d, device=device, dtype=dtype) for _ in range(3))
            bias = torch.randn(heads, 64, 64, device=device, dtype=dtype)
            row = {"dtype": str(dtype).removeprefix("torch."), "head_dim": d, "windows": windows, "heads": heads}
            for backend in backends:
                try:
                    with sdpa_kernel([backend]), torch.inference_mode():
                        torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
                        synchronize(device)
                        t0 = time.perf_counter()
                        for _ in range(5):
                            torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
                        synchronize(device)
                    row[backend.name] = round((time.perf_counter() - t0) / 5 * 1e3, 4)
                except Exception as err:  # noqa: BLE001 - "no kernel for these inputs" is the answer
                    row[backend.name] = f"unavailable: {str(err).splitlines()[0][:160]}"
            row["default_kernels"] = default_sdpa_kernels(q, k, v, bias)
            rows.append(row)
    return rows


def timed_ms(fn: Callable[[], Tensor], device: torch.device, calls: int = 5) -> float:
    """Mean milliseconds of ``calls`` calls of ``fn`` after one untimed call, ``device`` synchronised around."""
    with torch.inference_mode():
        fn()
        synchronize(device)
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        synchronize(device)
    return round((time.perf_counter() - start) / calls * 1e3, 4)


def flex_kernels(device: torch.device, head_dims=(30, 32, 12, 16), windows: int = 4096, heads: int = 6) -> list[dict]:
    """Compiled FlexAttention (``attn_impl="flex"``'s call: bias in the score_mod, head dim padded) against our
    fused SDPA (``"sdpa"``'s call, head dim padded to a multiple of 8 on CUDA) on the windows of
    :func:`sdpa_kernels`, bfloat16, one row per head dim (:func:`flex_kernel_row`)."""
    compiled = torch.compile(flex_attention, dynamic=False)
    return [flex_kernel_row(compiled, device, d, windows, heads) for d in head_dims]


def flex_kernel_row(compiled_flex: Callable, device: torch.device, head_dim: int, windows: int, heads: int) -> dict:
    """Milliseconds per call of compiled flex and of our SDPA at ``head_dim``, flex's first call in seconds (its
    compilation: one per head dim, whose scale is a constant of the graph) and the largest difference between the
    two outputs."""
    q, k, v = (torch.randn(windows, heads, 64, head_dim, device=device, dtype=torch.bfloat16) for _ in range(3))
    bias = torch.randn(heads, 64, 64, device=device, dtype=torch.bfloat16)
    padded = flex_head_dim(head_dim, device.type)
    qp, kp, vp = (torch.nn.functional.pad(t, (0, padded - head_dim)) for t in (q, k, v))
    score_mod, scale = window_score_mod(bias, None), head_dim**-0.5

    def flex() -> Tensor:
        return compiled_flex(qp, kp, vp, score_mod=score_mod, scale=scale)[..., :head_dim]

    def sdpa() -> Tensor:
        return fused_attention(q, k, v, bias, scale)

    row = {"dtype": "bfloat16", "head_dim": head_dim, "flex_head_dim": padded, "windows": windows, "heads": heads}
    try:
        start = time.perf_counter()
        with torch.inference_mode():
            flex_out = flex()
            synchronize(device)
        row["flex_first_call_s"] = round(time.perf_counter() - start, 2)
        row["flex_compiled_ms"] = timed_ms(flex, device)
        row["sdpa_ms"] = timed_ms(sdpa, device)
        with torch.inference_mode():
            row["max_abs_diff_vs_sdpa"] = float((flex_out.float() - sdpa().float()).abs().max())
    except Exception as err:  # noqa: BLE001 - "no kernel for these inputs" is the answer
        row["error"] = error_text(err)
    return row


def host_syncs(settings: GpuBenchSettings, log, size: int = 128) -> list[dict]:
    """Host synchronisations in one forward of SwinIR-M x2 (``size``², bf16 autocast) per attention and nystra
    redo (:func:`count_syncs`). Expected: none for sdpa, about one per nystra layer (36) with ``"exact-count"``,
    one per forward with the bounded redo (``"auto"`` on CUDA), whose output must match exact-count's. CUDA only."""
    device = settings.device
    torch.manual_seed(settings.seed)
    base = build_variant("swinir-x2").eval()
    x = make_input(base, size, device, settings.seed)
    rows, outputs = [], {}
    for attn_impl, redo in (("sdpa", "auto"), ("nystra", "exact-count"), ("nystra", "auto")):
        model = copy.deepcopy(base).set_attn_impl(attn_impl).to(device)
        model.validate_inputs, model.redo = False, redo
        out, syncs = count_syncs(model, x)
        outputs[attn_impl, redo] = out
        rows.append({"model": "swinir-x2", "size": size, "attn_impl": attn_impl, "redo": redo,
                     "syncs_per_forward": syncs})
        log(f"  host syncs: {attn_impl} redo={redo}: {syncs}")
        del model
    bounded, counted = outputs["nystra", "auto"], outputs["nystra", "exact-count"]
    rows[-1]["max_abs_diff_vs_exact_count"] = float((bounded - counted).abs().max())
    return rows


def count_syncs(model: nn.Module, x: Tensor) -> tuple[Tensor, int]:
    """(float32 output, host synchronisations) of one bf16-autocast forward after a warm-up one (geometry caches
    filled), counted by CUDA's sync debug mode: one warning per synchronising call."""
    def forward() -> Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return model(x)

    timed_ms(forward, x.device, calls=1)
    with warnings.catch_warnings(record=True) as caught, torch.inference_mode():
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            out = forward().float()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return out, sum("synchroniz" in str(w.message) for w in caught)


def default_sdpa_kernels(q, k, v, bias) -> list[str]:
    """CUDA kernel names the default dispatch launches (profiler)."""
    with profile(activities=[ProfilerActivity.CUDA]) as prof, torch.inference_mode():
        torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        torch.cuda.synchronize()
    return sorted({e.key[:120] for e in prof.key_averages() if e.device_type.name == "CUDA"})


# -- fp16 overflow stress -----------------------------------------------------------------------------------------
def inflate_residual_stream(model: nn.Module, bias: float) -> nn.Module:
    """Add ``bias`` to every transformer MLP's output bias: the residual stream grows block after block by a
    constant, as in released SwinIR weights whose float16 runs overflow; the LayerNorms remove the constant, so
    the float32 run stays an ordinary output."""
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith("mlp.fc2"):
                module.bias.add_(bias)
    return model


def fp16_stress(settings: GpuBenchSettings, log) -> dict:
    """A plain float16 cast of an inflated model overflows; our float16 run must stay finite and close."""
    device, dry_run = settings.device, settings.dry_run
    torch.manual_seed(settings.seed)
    base = build_model("swinir", **CASES_DRY[0]["kwargs"]) if dry_run else build_variant("swinir-x2")
    base = inflate_residual_stream(base.eval(), settings.inflation).to(device)
    x = make_input(base, 32 if dry_run else 128, device, settings.seed)
    plain_model = copy.deepcopy(base).half()
    with torch.inference_mode():
        ref = base(x).float().clamp(0, 1)
        plain = plain_model(x.half()).float()
    safe, _, fallbacks = call(lambda t: run_guarded(base, t, torch.float16, "stress"), x, device)
    res = {"model": "tiny swinir" if dry_run else "swinir-x2",
           "inflation": f"every mlp.fc2 bias + {settings.inflation:g}",
           "plain_fp16_nonfinite": int((~torch.isfinite(plain)).sum()),
           "ours_fp16_nonfinite": int((~torch.isfinite(safe)).sum()), "ours_fp32_fallbacks": fallbacks,
           "ours_fp16_psnr_vs_fp32": psnr(safe.clamp(0, 1).cpu(), ref.cpu(), data_range=1.0)}
    log(f"  fp16 stress: {res}")
    return res


# -- where the time goes -----------------------------------------------------------------------------------------------
def profile_arms(settings: GpuBenchSettings, log, names=("exact-bf16", "sdpa-bf16")) -> dict:
    """torch.profiler over one forward of SwinIR-M x2 at 512² (dry run: the tiny model) per arm: the kernels (or CPU
    ops) that take the time, top 20, with the forward's wall time."""
    device, dry_run = settings.device, settings.dry_run
    case = CASES_DRY[0] if dry_run else _variant_case("swinir-x2", [512])
    torch.manual_seed(settings.seed)
    base = (build_model(case["arch"], **case["kwargs"]) if dry_run else build_variant("swinir-x2")).eval()
    x = make_input(base, case["sizes"][0], device, settings.seed)
    arms = {a.name: a for a in arms_for(case["arch"], paper_recipe(case["arch"], case["task"]))}
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    out = {"model": case["name"], "size": case["sizes"][0]}
    for name in names:
        fn = build_arm(base, arms[name], device)
        call(fn, x, device)  # warm-up
        with profile(activities=activities) as prof:
            _, seconds, _ = call(fn, x, device)
        key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
        rows = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0), reverse=True)[:20]
        out[name] = {"wall_s": seconds, "sort_key": key, "top": [
            {"name": e.key[:160], "count": e.count, "self_us": round(float(getattr(e, key, 0)), 1)} for e in rows]}
        log(f"  profile {name}: {seconds * 1e3:.1f} ms; top: {out[name]['top'][0]['name'][:80]}")
    return out


# -- cases and the run ---------------------------------------------------------------------------------------------
def _variant_case(name: str, sizes: list[int], compile_sizes: tuple[int, ...] = (512,)) -> dict:
    v = get_variant(name)
    # Compiled only at 512 (the targets' size): each further shape is another compilation of minutes.
    return {"name": name, "variant": name, "arch": v.arch, "task": v.task, "kwargs": v.kwargs, "sizes": sizes,
            "compile_sizes": list(compile_sizes)}


# Time on one H200 (2026-11-27, benchmarks/gpu/gpu-bench-h200.log; the sections and the 512² cases are what every
# run does, whatever its --budget-s): 393 s, of which the sections 40 s, SwinIR-M 106 s, Uformer-B 69 s (its
# compile-bf16 failed in seconds), DehazeFormer-B 178 s, 156 s of them compiling its five stages (compile-bf16,
# 68.8 ms: slower than eager SDPA's 48.6). Estimated since, not measured: compiled arms on SwinIR-M only (two block
# graphs each; flex, nystra and SDPA about a minute each to compile: +3 min), none on DehazeFormer-B (-2.6 min) or
# Uformer-B; the eager nystra-exact-count arm (+10 s over the three); the flex kernel survey (four compiles, about
# 1 min) and the synchronisation count (15 s). About 8.5 minutes in all: one device call (at most 10 minutes) in
# the 15 minutes of device time a session is lent, the machine's start taking 1-3 of them.
COMPILED_ARMS = ("compiled arms at 512² on SwinIR-M only: Uformer-B's nine stages and DehazeFormer-B's five take "
                 "minutes per arm to compile")


def cases_full() -> list[dict]:
    # The 512 runs (the targets) of all three models first, so a run cut short by its budget has them.
    swinir = _variant_case("swinir-x2", [512])
    uformer, dehaze = (_variant_case(n, [512], compile_sizes=()) for n in ("uformer-b-sidd", "dehazeformer-b-indoor"))
    # At 1024² the arms that answer "whole image or tiles, eager or graph" (a full arm set there costs minutes).
    large = ["spandrel-fp32", "exact-fp32", "exact-bf16", "sdpa-bf16", "graph-exact-bf16", "graph-sdpa-bf16",
             "tiles256-exact-bf16", "tiles256x-exact-bf16", "tiles256x-graph-exact-bf16"]
    tiles = {"tile": 256, "tile_sizes": [1024], "arms": large}  # DehazeFormer is never tiled (whole-image RLN)
    return [swinir, uformer, dehaze, {**swinir, "sizes": [1024], **tiles}, {**uformer, "sizes": [1024], **tiles},
            {**dehaze, "sizes": [1024], "arms": large}, {**swinir, "sizes": [256]}]


# The dry run: every arm on a tiny SwinIR, the arms whose code differs per architecture on the other two.
DRY_SUBSET = ["spandrel-fp32", "exact-fp32", "sdpa-bf16", "nystra-bf16", "exact-w32-paper-fp32",
              "nystra-w32-paper-fp32", "exact-w64-paper-fp32", "nystra-w64-paper-fp32"]
CASES_DRY = [
    {"name": "tiny-swinir-x2", "arch": "swinir", "task": "classical-sr", "sizes": [32], "tile": 96,
     "tile_sizes": [192],  # 96 px = 12 windows, the smallest tile restore accepts for SwinIR
     "kwargs": dict(upscale=2, in_chans=3, img_size=32, window_size=8, img_range=1.0, depths=[2], embed_dim=12,
                    num_heads=[2], mlp_ratio=2, upsampler="pixelshuffle", resi_connection="1conv")},
    {"name": "tiny-uformer", "arch": "uformer", "task": "denoise-real", "sizes": [128], "arms": DRY_SUBSET,
     "kwargs": dict(img_size=128, in_chans=3, dd_in=3, embed_dim=8, depths=[1] * 9, num_heads=[1, 1, 2, 2, 2, 2, 2,
                    1, 1], win_size=8, mlp_ratio=2.0, token_projection="linear", token_mlp="leff",
                    modulator=True)},
    {"name": "tiny-dehazeformer", "arch": "dehazeformer", "task": "dehaze", "sizes": [128], "arms": DRY_SUBSET,
     "kwargs": dict(in_chans=3, out_chans=4, window_size=8, embed_dims=[8, 16, 16, 16, 8], mlp_ratios=[2.0] * 5,
                    depths=[1, 1, 2, 1, 1], num_heads=[1, 2, 2, 1, 1], attn_ratio=[0.0, 0.5, 1.0, 0.0, 0.0],
                    conv_type=["DWConv"] * 5, norm_layer=["RLN"] * 5)},
]


def environment(device: torch.device) -> dict:
    """:func:`.environment.environment`, with the GPU's multiprocessors, memory and bfloat16 support."""
    env = measure_environment.environment(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(multiprocessors=props.multi_processor_count, memory_bytes=props.total_memory,
                   bf16_supported=torch.cuda.is_bf16_supported())
    return env


# -- the run -----------------------------------------------------------------------------------------------------------
def report_header(settings: GpuBenchSettings) -> dict:
    """The report before any measurement: schema, commit, command, environment, settings; empty cases."""
    device = settings.device
    return {"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "dry_run": settings.dry_run,
            # the GPU machine may get the checkout without its .git: gpu.sh's caller can name the commit
            "git_commit": os.environ.get("NYSTRA_COMMIT") or measure_environment.git_commit(),
            "command": settings.command,
            "environment": environment(device),
            "settings": {"runs": settings.rounds, "batch": 1, "seed": settings.seed, "input": "uniform random, "
                         "square, batch 1 (DehazeFormer: [-1, 1]); for SR the size is the low-resolution input",
                         "weights": "random (seeded) initialisation of the official configurations",
                         "timer": "time.perf_counter around one call, torch.cuda.synchronize before and after",
                         "order": "per size: a warm-up round, a memory/quality round, then timed rounds "
                                  "with the arm order rotated each round",
                         "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
                         "compiled_arms": COMPILED_ARMS},
            "cases": [], "errors": []}


def run_gpu_bench(settings: GpuBenchSettings, out_dir: str | os.PathLike, log=print) -> dict:
    """Measure everything and write ``out_dir/gpu-bench.json`` after each section and case, so that a run cut
    short (the GPU machine's time is lent by the minute) keeps what it measured; returns the report."""
    started = time.perf_counter()
    device = settings.device
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_bench: no CUDA device (use --dry-run on a CPU)")
    path = Path(out_dir) / REPORT_NAME
    report = report_header(settings)
    sections = {"fp16_stress": lambda: fp16_stress(settings, log)}
    if device.type == "cuda":
        sections = {"sdpa_kernels": lambda: sdpa_kernels(device), "flex_kernels": lambda: flex_kernels(device),
                    "host_syncs": lambda: host_syncs(settings, log), **sections}
    for name, section in sections.items():
        _guarded_section(report, name, section)
        atomic_write_json(path, report, indent=1)
    for case in CASES_DRY if settings.dry_run else cases_full():
        log(f"{case['name']}:")
        try:
            report["cases"].append(run_case(case, settings, started + settings.budget_s, log))
        except Exception:  # noqa: BLE001 - one case failing must not end the run
            report["errors"].append({"case": case["name"], "traceback": traceback.format_exc()[-2000:]})
            log(report["errors"][-1]["traceback"])
        atomic_write_json(path, report, indent=1)
    _guarded_section(report, "profile", lambda: profile_arms(settings, log))
    report["seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_json(path, report, indent=1)
    log(f"wrote {path} in {report['seconds']} s")
    return report


def _guarded_section(report: dict, name: str, section: Callable[[], object]) -> None:
    """``report[name] = section()``; a failure is recorded in ``report["errors"]`` with its traceback instead."""
    try:
        report[name] = section()
    except Exception:  # noqa: BLE001 - a section failing must not end the run
        report["errors"].append({"section": name, "traceback": traceback.format_exc()[-2000:]})
