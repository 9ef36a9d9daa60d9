"""The GPU measurement behind the model cards' GPU columns (``benchmarks/gpu.sh`` runs it through
``benchmarks/gpu_bench.py``; schema ``nystra_hub.gpu_bench/1``).

One process, random (seeded) weights, synthetic inputs, no network, nothing from ``../shared``. For each model and
size, every arm is built from the same weights and run interleaved: one untimed warm-up round (compilation happens
there), one round measuring peak memory and output quality, then ``runs`` timed rounds with the arm order rotated
each round (:func:`.timing.run_rounds`, the loop bench runs too); medians are reported. Quality is PSNR against our
float32 exact output on the same input (outputs mapped to [0, 1] and clamped), plus the number of non-finite output
values. How close each arm comes to the hardware: the exact float32 forward's FLOPs (:data:`FLOPS_BASIS`) over
its median, against the matmul ceiling measured on the device for the arm's dtype (:func:`rooflines`).

The arms (:func:`arms_for`) are the routes a GPU user can take: float32, bfloat16 and float16 autocast with the
non-finite guard, spandrel cast to half precision (the official code path), fused SDPA, FlexAttention, our Triton
window-attention kernel and PnP-Nystra (its redo of untrustworthy windows bounded, one host synchronisation per
forward, or counted, one per layer) eager or ``torch.compile``-d per block, CUDA graphs, tiles batched into one
forward, and the paper's enlarged windows. Besides the cases: which fused SDPA kernel serves window attention
(:func:`sdpa_kernels`), compiled FlexAttention and the Triton kernel at the same shapes (:func:`flex_kernels`,
:func:`triton_kernels`), the host synchronisations of a nystra forward (:func:`host_syncs`), a float16 overflow
stress (:func:`fp16_stress`) and a profile of where the time goes (:func:`profile_arms`).

``GpuBenchSettings(dry_run=True)`` runs every code path on the CPU with tiny models and sizes in seconds (CI and
``tests/measure/test_gpu_bench.py`` run it), except what needs CUDA: the CUDA-graph and Triton arms (listed in
``skipped_arms``), peak memory (null), the kernel surveys and the synchronisation count (absent).
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import math
import os
import time
import traceback
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile

from nystra_hub.attention.core import fused_attention
from nystra_hub.attention.flex import flex_attention, flex_head_dim, window_score_mod
from nystra_hub.attention.triton_window import TRITON_IMPL, triton_window_attention
from nystra_hub.inference.export import as_restoration_model
from nystra_hub.inference.precision import run_guarded
from nystra_hub.io.images import atomic_write_json
from nystra_hub.io.variants import build_variant, get_variant
from nystra_hub.measure import environment as measure_environment
from nystra_hub.measure.arms import Arm, forward_fn, make_arm_model, paper_recipe
from nystra_hub.measure.metrics import psnr
from nystra_hub.measure.timing import (
    ArmRecord,
    achieved_rates,
    call_with_fallbacks,
    compare_outputs,
    copy_roofline,
    count_bytes,
    count_flops,
    error_text,
    gemm_roofline,
    run_rounds,
    summarise,
    synchronize,
)
from nystra_hub.models import ARCHITECTURES, build_model

SCHEMA = "nystra_hub.gpu_bench/1"
REPORT_NAME = "gpu-bench.json"
# The matmul ceilings the arms' rates are compared with, per compute dtype: a large square GEMM (the device's
# attainable dense rate) and SwinIR-M's qkv projection at 512² (262 144 tokens x 180 channels -> 540: what this
# model's largest matmuls can reach). The dry run uses small ones on the CPU.
GPU_ROOFLINE_SHAPES = ((8192, 8192, 8192), (262144, 180, 540))
DRY_ROOFLINE_SHAPES = ((256, 256, 256),)
ROOFLINE_DTYPES = ("float32", "bfloat16", "float16")
FLOPS_BASIS = ("torch.utils.flop_counter over one forward of the exact-fp32 arm, credited to every arm at that "
               "input: gflops_per_s is an exact-equivalent rate (an approximation doing less work scores higher)")


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


def gpu_arm(name: str, description: str, **fields) -> Arm:
    """An arm of the GPU run: no letter, float32 unless it names its dtype (the report records every arm's)."""
    return Arm(name, "", description, **{"dtype": "float32", **fields})


def arm_config(arm: Arm) -> dict:
    """An arm as the GPU report writes it: the keys of ``gpu_bench/1`` (``runner``: its runtime, ``compile``:
    compiled per block, ``precision``: autocast or cast) and the other fields of :class:`.arms.Arm`."""
    config = arm.config()
    config["runner"], config["compile"] = config.pop("runtime"), config.pop("compile_blocks")
    return {**config, "precision": arm.precision}


CUDA_ONLY_RUNNERS = ("cudagraphs",)
CUDA_ONLY_ATTENTION = (TRITON_IMPL,)  # its CPU run is Triton's interpreter: tests, not timings


def arms_for(arch: str, recipe: dict, tile: int | None = None) -> list[Arm]:
    """The GPU run's arms for ``arch`` (W: the recipe's enlarged window); ``tile``: the side of the tiled arms
    (None: none)."""
    w = recipe["window"]
    paper = {k: recipe[k] for k in ("landmarks", "iters", "tau")} | {"bias": "drop", "mask": "drop"}
    modulators = ARCHITECTURES[arch].spec.modulators  # the paper's recipe drops them too (Uformer's decoder)
    arms = []
    if ARCHITECTURES[arch].spec.spandrel:
        arms += [
            gpu_arm("spandrel-fp32", "spandrel (official code path), float32", backend="spandrel"),
            gpu_arm("spandrel-bf16", "spandrel, model and input cast to bfloat16 (chaiNNer's half mode)",
                    backend="spandrel", dtype="bfloat16"),
            gpu_arm("spandrel-fp16", "spandrel, model and input cast to float16 (what gives black images)",
                    backend="spandrel", dtype="float16"),
        ]
    arms += [
        gpu_arm("exact-fp32", "ours, exact softmax attention, float32 (the model as trained)"),
        gpu_arm("sdpa-fp32", "ours, exact fused SDPA (bias as additive mask), float32", attn_impl="sdpa"),
        gpu_arm("exact-bf16", "ours, exact softmax, bf16 autocast (fp32 residual stream, norms, softmax)",
                dtype="bfloat16"),
        gpu_arm("sdpa-bf16", "ours, exact fused SDPA, bf16 autocast", attn_impl="sdpa", dtype="bfloat16"),
        gpu_arm("exact-fp16", "ours, exact softmax, fp16 autocast + per-call non-finite check (fp32 redo)",
                dtype="float16"),
        gpu_arm("sdpa-fp16", "ours, exact fused SDPA, fp16 autocast + non-finite check", attn_impl="sdpa",
                dtype="float16"),
        gpu_arm("compile-bf16", "ours, SDPA, torch.compile per transformer block, bf16 autocast", attn_impl="sdpa",
                dtype="bfloat16", compile_blocks=True),
        gpu_arm("flex-compile-bf16", "ours, FlexAttention (bias and shift mask in score_mod, head dim padded to a "
                "power of two >= 16), torch.compile per transformer block, bf16 autocast", attn_impl="flex",
                dtype="bfloat16", compile_blocks=True),
        gpu_arm("triton-bf16", "ours, exact window attention in one Triton kernel (bias and shift mask read in the "
                "kernel, scores on chip, head dim padded inside the kernel), bf16 autocast", attn_impl="triton",
                dtype="bfloat16"),
        gpu_arm("nystra-bf16", "ours, PnP-Nystra at the trained window (bias pooled, cut windows exact; kernel and "
                "pseudo-inverse fp32), bf16 autocast elsewhere; a bounded redo of untrustworthy windows, checked "
                "once per forward", attn_impl="nystra", dtype="bfloat16"),
        gpu_arm("nystra-exact-count-bf16", "ours, PnP-Nystra as nystra-bf16, each layer redoing exactly its "
                "untrustworthy windows: a host synchronisation per layer", attn_impl="nystra", dtype="bfloat16",
                redo="exact-count"),
        gpu_arm("nystra-compile-bf16", "ours, PnP-Nystra as nystra-bf16 (bounded redo), torch.compile per "
                "transformer block", attn_impl="nystra", dtype="bfloat16", compile_blocks=True),
        gpu_arm("graph-exact-fp32", "ours, exact softmax, float32, captured once as a CUDA graph and replayed",
                runtime="cudagraphs"),
        gpu_arm("graph-exact-bf16", "ours, exact softmax, bf16 autocast, CUDA graph", dtype="bfloat16",
                runtime="cudagraphs"),
        gpu_arm("graph-sdpa-bf16", "ours, exact fused SDPA, bf16 autocast, CUDA graph", attn_impl="sdpa",
                dtype="bfloat16", runtime="cudagraphs"),
        gpu_arm("graph-triton-bf16", "ours, the Triton window-attention kernel, bf16 autocast, CUDA graph",
                attn_impl="triton", dtype="bfloat16", runtime="cudagraphs"),
    ]
    if tile:
        arms += [
            gpu_arm(f"tiles{tile}-exact-bf16", f"ours, restore in {tile}-px tiles, one tile per forward, exact, bf16",
                    dtype="bfloat16", tiled=True, tile_batch=1),
            gpu_arm(f"tiles{tile}x-exact-bf16", f"ours, restore in {tile}-px tiles, as many per forward as half the "
                    "free memory holds, exact, bf16", dtype="bfloat16", tiled=True),
            gpu_arm(f"tiles{tile}x-graph-exact-bf16", f"ours, {tile}-px tiles batched, exact, bf16, CUDA graph of "
                    "the tile batch", dtype="bfloat16", tiled=True, runtime="cudagraphs"),
        ]
    for dtype, tag in (("float32", "fp32"), ("bfloat16", "bf16")):
        arms += [
            gpu_arm(f"exact-w{w}-paper-{tag}", f"exact softmax at window {w}, bias and masks"
                    f"{' and modulators' if modulators else ''} dropped: the paper's 'Original' baseline, {dtype}",
                    attn_impl="exact-paper", dtype=dtype, window=w, drop_modulator=modulators),
            gpu_arm(f"nystra-w{w}-paper-{tag}", f"PnP-Nystra at window {w} with the paper's recipe and choices, "
                    f"{dtype}", attn_impl="nystra", dtype=dtype, window=w, nystra=paper, drop_modulator=modulators),
        ]
    return arms


# -- building and calling ---------------------------------------------------------------------------------------
def build_arm(base: nn.Module, arm: Arm, device: torch.device, tile: int | None = None
              ) -> Callable[[Tensor], Tensor]:
    """The arm's callable (:func:`.arms.forward_fn`): float32 input in the model's range -> float32 output."""
    if arm.redo == "auto" and device.type == "cpu":  # a dry run stands in for the GPU: what "auto" runs on CUDA
        arm = dataclasses.replace(arm, redo="bounded")
    model = make_arm_model(base, arm, device)
    ours = as_restoration_model(model)
    if ours is not None:
        ours.validate_inputs = False  # the benchmark input is finite; the check is a device sync per call
    return forward_fn(model, None, "forward", getattr(torch, arm.dtype), tile=tile if arm.tiled else None,
                      tile_batch=arm.tile_batch)


def make_input(model: nn.Module, size: int, device: torch.device, seed: int) -> Tensor:
    """A uniform random square image with ``model``'s input channels, in its forward's value range."""
    x = torch.rand(1, model.in_channels, size, size, generator=torch.Generator().manual_seed(seed))
    return model.to_model_range(x).to(device)


def to_unit(model: nn.Module, y: Tensor) -> Tensor:
    """An output of ``model``'s forward mapped to [0, 1] and clamped, in float32."""
    return model.from_model_range(y).float().clamp(0, 1)


# -- one model at one size --------------------------------------------------------------------------------------
def measure(fns: dict[str, Callable], x: Tensor, base: nn.Module, device: torch.device, runs: int, log) -> dict:
    """{arm: its row} for one input (:func:`.timing.run_rounds`): a warm-up round, a round for peak memory and
    quality (PSNR against the ``exact-fp32`` arm's output mapped to [0, 1], non-finite values), then ``runs``
    timed rounds in rotated order. An arm that fails keeps its error and is left out of the later rounds."""
    def keep(out: Tensor) -> Tensor:
        return to_unit(base, torch.nan_to_num(out, nan=0.0)).cpu()

    records = run_rounds(fns, x, device, warmup=1, runs=runs, quality_round=True, keep=keep, log=log)
    diffs = compare_outputs(records, "exact-fp32", data_range=1.0)
    return {name: _row(record, diffs.get(name)) for name, record in records.items()}


def _row(record: ArmRecord, diff: dict | None) -> dict:
    """One arm's row of a GPU result (``psnr_vs_exact_fp32``: "identical" for the reference itself)."""
    psnr_db = diff["psnr_db"] if diff else None
    return {"times_s": record.times_s, "warmup_s": record.warmup_times_s[0] if record.warmup_times_s else None,
            "peak_bytes": record.peak_bytes, "psnr_vs_exact_fp32": "identical" if psnr_db == math.inf else psnr_db,
            "max_abs_diff_vs_exact_fp32": diff["max_abs_diff"] if diff else None,
            "nonfinite_values": record.nonfinite_values, "fp32_fallbacks": record.fp32_fallbacks,
            "error": record.error, **summarise(record.times_s)}


def run_case(case: dict, settings: GpuBenchSettings, deadline: float, log, roofline: dict | None = None) -> dict:
    """One model's entry of ``cases``: its arms built once, then measured at each of its sizes until the
    ``deadline`` (a ``time.perf_counter`` value) has passed; rates against ``roofline`` ({dtype: ceiling})."""
    device = settings.device
    arch, recipe = case["arch"], paper_recipe(case["arch"], case["task"])
    torch.manual_seed(settings.seed)
    base = build_model(arch, **case["kwargs"]) if "variant" not in case else build_variant(case["variant"])
    base = base.eval()
    arms = _case_arms(case, settings, recipe)
    fns, errors, skipped = _build_case_arms(base, arms, device, case.get("tile"), log)
    out = {"model": case["name"], "arch": arch, "variant": case.get("variant"), "recipe": recipe,
           "parameters": sum(p.numel() for p in base.parameters()),
           "arms": {a.name: arm_config(a) for a in arms if a.name not in skipped}, "skipped_arms": skipped,
           "results": []}
    by_name = {a.name: a for a in arms}
    for size in case["sizes"]:
        if time.perf_counter() > deadline:
            out["results"].append({"size": size, "skipped": "time budget of the run spent"})
            log(f"  {case['name']} {size}: skipped (time budget)")
            continue
        sized = {n: f for n, f in fns.items() if _runs_at(case, by_name[n], size)}
        result = _measure_size(case, base, sized, errors, size, settings, log)
        add_rates(result, fns.get("exact-fp32"), by_name, roofline, settings, log)
        out["results"].append(result)
    del fns, base
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def _case_arms(case: dict, settings: GpuBenchSettings, recipe: dict) -> list[Arm]:
    """The arms a case runs: the wanted ones (the run's --arms, else the case's), compiled ones only where the
    case compiles at one of its sizes."""
    wanted = settings.arms or case.get("arms")
    compiles = bool(set(case.get("compile_sizes", case["sizes"])) & set(case["sizes"]))
    return [a for a in arms_for(case["arch"], recipe, case.get("tile"))
            if (not wanted or a.name in wanted) and (compiles or not a.compile_blocks)]


def _runs_at(case: dict, arm: Arm, size: int) -> bool:
    """Compiled arms run at the case's compile sizes, tiled ones at its tile sizes."""
    return ((size in case.get("compile_sizes", case["sizes"]) or not arm.compile_blocks)
            and (size in case.get("tile_sizes", []) or not arm.tiled))


def _build_case_arms(base: nn.Module, arms: list[Arm], device: torch.device, tile: int | None,
                     log) -> tuple[dict, dict, dict]:
    """({arm: its callable}, {arm: why it could not be built}, {arm: why it is skipped on this device})."""
    fns, errors, skipped = {}, {}, {}
    for arm in arms:
        if arm.runtime in CUDA_ONLY_RUNNERS and device.type != "cuda":
            skipped[arm.name] = f"the {arm.runtime} runner needs CUDA"
            continue
        if arm.attn_impl in CUDA_ONLY_ATTENTION and device.type != "cuda":
            skipped[arm.name] = f"attn_impl {arm.attn_impl!r} is timed on CUDA only"
            continue
        try:
            fns[arm.name] = build_arm(base, arm, device, tile)
        except Exception as err:  # noqa: BLE001 - an arm that cannot be built is reported, not fatal
            errors[arm.name] = error_text(err)
            log(f"    {arm.name}: cannot build ({errors[arm.name]})")
    return fns, errors, skipped


def _measure_size(case: dict, base: nn.Module, fns: dict, errors: dict, size: int, settings: GpuBenchSettings,
                  log) -> dict:
    """One entry of a case's ``results``: the arms measured on one input (arms that could not be built: their
    error)."""
    started = time.perf_counter()
    x = make_input(base, size, settings.device, settings.seed)
    table = measure(fns, x, base, settings.device, settings.rounds, log)
    table.update({name: {"error": err} for name, err in errors.items()})
    log_table(case["name"], size, table, log)
    return {"size": size, "input_shape": list(x.shape), "arms": table,
            "seconds": round(time.perf_counter() - started, 1)}


def add_rates(result: dict, exact: Callable | None, arms: dict[str, Arm], roofline: dict | None,
              settings: GpuBenchSettings, log) -> None:
    """The result's ``flops`` (:data:`FLOPS_BASIS`) and, per timed arm, ``gflops_per_s`` and ``roofline_fraction``
    against the ceiling of the arm's compute dtype."""
    if exact is None:
        return
    try:
        flops = count_flops(exact, make_input_like(result, settings))["flops"]
    except Exception as err:  # noqa: BLE001 - the rates are extra: their absence is recorded, the run goes on
        result["flops_error"] = error_text(err)
        return
    result.update(flops=flops, flops_basis=FLOPS_BASIS)
    for name, row in result["arms"].items():
        if row.get("median_s") and name in arms:
            row["flops"] = flops
            ceiling = (roofline or {}).get(arms[name].dtype or "float32")
            achieved_rates({name: row}, ceiling)
    log(f"    {flops / 1e12:.2f} TFLOP per forward; best "
        f"{max((r.get('gflops_per_s', 0) for r in result['arms'].values()), default=0) / 1e3:.1f} TFLOP/s")


def make_input_like(result: dict, settings: GpuBenchSettings) -> Tensor:
    """A random input of the result's shape on the run's device (FLOPs do not depend on the values)."""
    return torch.rand(*result["input_shape"], device=settings.device)


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
    q, k, v, bias = _kernel_inputs(device, head_dim, windows, heads)
    padded = flex_head_dim(head_dim, device.type)
    qp, kp, vp = (torch.nn.functional.pad(t, (0, padded - head_dim)) for t in (q, k, v))
    score_mod, scale = window_score_mod(bias, None), head_dim**-0.5

    def flex() -> Tensor:
        return compiled_flex(qp, kp, vp, score_mod=score_mod, scale=scale)[..., :head_dim]

    row = {"dtype": "bfloat16", "head_dim": head_dim, "flex_head_dim": padded, "windows": windows, "heads": heads}
    return _against_sdpa(row, "flex", flex, q, k, v, bias, scale, device)


def triton_kernels(device: torch.device, head_dims=(30, 32, 12, 16), windows: int = 4096,
                   heads: int = 6) -> list[dict]:
    """The Triton kernel (``attn_impl="triton"``'s call) against our fused SDPA on the windows of
    :func:`sdpa_kernels`, bfloat16, one row per head dim: its first call in seconds (Triton compiles it per head
    dim), milliseconds per call of both, the largest difference between them."""
    return [triton_kernel_row(device, d, windows, heads) for d in head_dims]


def triton_kernel_row(device: torch.device, head_dim: int, windows: int, heads: int) -> dict:
    """One row of :func:`triton_kernels`."""
    q, k, v, bias = _kernel_inputs(device, head_dim, windows, heads)
    scale = head_dim**-0.5
    module = types.SimpleNamespace(scale=scale, num_heads=heads)

    def kernel() -> Tensor:
        return triton_window_attention(module, q, k, v, bias, None, None)

    row = {"dtype": "bfloat16", "head_dim": head_dim, "windows": windows, "heads": heads}
    return _against_sdpa(row, "triton", kernel, q, k, v, bias, scale, device)


def _kernel_inputs(device: torch.device, head_dim: int, windows: int, heads: int) -> tuple[Tensor, ...]:
    """Random bfloat16 q, k, v of ``windows`` 8×8 windows and a (heads, 64, 64) bias."""
    q, k, v = (torch.randn(windows, heads, 64, head_dim, device=device, dtype=torch.bfloat16) for _ in range(3))
    return q, k, v, torch.randn(heads, 64, 64, device=device, dtype=torch.bfloat16)


def _against_sdpa(row: dict, name: str, fn: Callable[[], Tensor], q, k, v, bias, scale: float,
                  device: torch.device) -> dict:
    """``row`` plus ``{name}_first_call_s``, ``{name}_ms``, ``sdpa_ms`` and the largest difference of ``fn``'s
    output from our SDPA's (``max_abs_diff_vs_sdpa``), or ``error``."""
    def sdpa() -> Tensor:
        return fused_attention(q, k, v, bias, scale)

    try:
        start = time.perf_counter()
        with torch.inference_mode():
            out = fn()
            synchronize(device)
        row[f"{name}_first_call_s"] = round(time.perf_counter() - start, 2)
        row[f"{name}_ms"] = timed_ms(fn, device)
        row["sdpa_ms"] = timed_ms(sdpa, device)
        with torch.inference_mode():
            row["max_abs_diff_vs_sdpa"] = float((out.float() - sdpa().float()).abs().max())
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
    safe, _, fallbacks = call_with_fallbacks(lambda t: run_guarded(base, t, torch.float16, "stress"), x, device)
    res = {"model": "tiny swinir" if dry_run else "swinir-x2",
           "inflation": f"every mlp.fc2 bias + {settings.inflation:g}",
           "plain_fp16_nonfinite": int((~torch.isfinite(plain)).sum()),
           "ours_fp16_nonfinite": int((~torch.isfinite(safe)).sum()), "ours_fp32_fallbacks": fallbacks,
           "ours_fp16_psnr_vs_fp32": psnr(safe.clamp(0, 1).cpu(), ref.cpu(), data_range=1.0)}
    log(f"  fp16 stress: {res}")
    return res


# -- where the time goes -----------------------------------------------------------------------------------------------
PROFILED_VARIANTS = ("swinir-x2", "uformer-b-sidd")  # the two: SwinIR-M x2 and Uformer-B, at 512²


def profile_arms(settings: GpuBenchSettings, log, names=("exact-bf16", "sdpa-bf16")) -> dict:
    """Where the time of one forward goes, per model (SwinIR-M x2 and Uformer-B at 512²; dry run: the tiny SwinIR
    and Uformer) and arm (on CUDA the Triton kernel's arm too): :func:`profile_forward`'s table, with the copy
    bandwidth the GB/s are compared with."""
    device = settings.device
    cases = CASES_DRY[:2] if settings.dry_run else [_variant_case(n, [512]) for n in PROFILED_VARIANTS]
    if device.type == "cuda":
        names = (*names, "triton-bf16")  # on the CPU the kernel runs only in Triton's interpreter
    bandwidth = copy_roofline(device, megabytes=16 if settings.dry_run else 1024)
    out = {"copy_roofline": bandwidth, "models": []}
    for case in cases:
        torch.manual_seed(settings.seed)
        base = (build_variant(case["variant"]) if "variant" in case else build_model(case["arch"], **case["kwargs"]))
        x = make_input(base.eval(), case["sizes"][0], device, settings.seed)
        arms = {a.name: a for a in arms_for(case["arch"], paper_recipe(case["arch"], case["task"]))}
        entry = {"model": case["name"], "size": case["sizes"][0]}
        for name in names:
            entry[name] = profile_forward(build_arm(base, arms[name], device), x, device, bandwidth["gb_per_s"])
            log(f"  profile {case['name']} {name}: {entry[name]['wall_s'] * 1e3:.1f} ms, "
                f"{entry[name]['launches']} launches, {entry[name]['tflops_per_s']:.2f} TFLOP/s, "
                f"{entry[name]['gb_per_s']:.0f} GB/s; top: {entry[name]['top'][0]['name'][:60]}")
        out["models"].append(entry)
    return out


def profile_forward(fn: Callable[[Tensor], Tensor], x: Tensor, device: torch.device, peak_gb_per_s: float) -> dict:
    """One profiled forward after a warm-up: its wall time, the top 20 kernels (CPU: operations) by self time with
    their share of the total, kernel launches (CPU: operations) per forward, and the rates it reached: TFLOP/s
    (:func:`.timing.count_flops` of this arm) and GB/s (:func:`.timing.count_bytes`, the bytes its operations read
    and write as dispatched), the latter also as a fraction of the copy bandwidth."""
    call_with_fallbacks(fn, x, device)  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        _, seconds, _ = call_with_fallbacks(fn, x, device)
    on_device = device.type == "cuda"
    key = "self_device_time_total" if on_device else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, key, 0) > 0]
    if on_device:  # kernels, not the CPU-side operators that launched them
        events = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    total = sum(getattr(e, key) for e in events) or 1.0
    rows = sorted(events, key=lambda e: getattr(e, key), reverse=True)[:20]
    flops, moved = count_flops(fn, x)["flops"], count_bytes(fn, x)["op_bytes"]
    return {"wall_s": seconds, "sort_key": key, "self_us_total": round(total, 1),
            "launches": sum(e.count for e in events), "launches_counted": "CUDA kernels" if on_device else "CPU ops",
            "flops": flops, "tflops_per_s": flops / seconds / 1e12, "op_bytes": moved,
            "gb_per_s": moved / seconds / 1e9, "copy_bandwidth_fraction": moved / seconds / 1e9 / peak_gb_per_s,
            "top": [{"name": e.key[:160], "count": e.count, "self_us": round(float(getattr(e, key)), 1),
                     "share": round(getattr(e, key) / total, 4)} for e in rows]}


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
# 1 min) and the synchronisation count (15 s); the Triton arms and kernel survey (a few seconds of compilation per
# head dim and shape: about 30 s) and the profile's second model, Uformer-B, with its byte and FLOP counts (about
# 20 s; it runs before the cases). About 9 minutes in all: one device call (at most 10 minutes) in the 15 minutes
# of device time a session is lent, the machine's start taking 1-3 of them.
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
                    "triton_kernels": lambda: triton_kernels(device),
                    "host_syncs": lambda: host_syncs(settings, log), **sections}
    sections["roofline"] = lambda: rooflines(settings, log)
    sections["profile"] = lambda: profile_arms(settings, log)  # first: it decides what to work on next
    for name, section in sections.items():
        _guarded_section(report, name, section)
        atomic_write_json(path, report, indent=1)
    for case in CASES_DRY if settings.dry_run else cases_full():
        log(f"{case['name']}:")
        try:
            report["cases"].append(run_case(case, settings, started + settings.budget_s, log,
                                            report.get("roofline")))
        except Exception:  # noqa: BLE001 - one case failing must not end the run
            report["errors"].append({"case": case["name"], "traceback": traceback.format_exc()[-2000:]})
            log(report["errors"][-1]["traceback"])
        atomic_write_json(path, report, indent=1)
    report["seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_json(path, report, indent=1)
    log(f"wrote {path} in {report['seconds']} s")
    return report


def rooflines(settings: GpuBenchSettings, log) -> dict:
    """{dtype: :func:`.timing.gemm_roofline`} on the run's device, for each of :data:`ROOFLINE_DTYPES`."""
    shapes = DRY_ROOFLINE_SHAPES if settings.dry_run else GPU_ROOFLINE_SHAPES
    out = {name: gemm_roofline(settings.device, getattr(torch, name), shapes) for name in ROOFLINE_DTYPES}
    log("GEMM roofline: " + ", ".join(f"{k} {v['best_gflops_per_s'] / 1e3:.1f} TFLOP/s" for k, v in out.items()))
    return out


def _guarded_section(report: dict, name: str, section: Callable[[], object]) -> None:
    """``report[name] = section()``; a failure is recorded in ``report["errors"]`` with its traceback instead."""
    try:
        report[name] = section()
    except Exception:  # noqa: BLE001 - a section failing must not end the run
        report["errors"].append({"section": name, "traceback": traceback.format_exc()[-2000:]})
