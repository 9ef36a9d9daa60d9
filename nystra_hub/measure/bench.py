"""Speed, peak memory and FLOPs of the attention arms of one model (:func:`run_bench`; the command is
``nystra-hub bench``, :mod:`nystra_hub.cli.bench`).

Arms (see :func:`.arms.standard_arms`; W, m, iters, τ are the paper's recipe for the model,
:func:`.arms.paper_recipe`):

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
``performer-wW-paper``, ``nystra-bias{pooled,drop}-mask{exact,drop}``; the faster CPU routes
(:func:`.arms.runtime_arms`, float32): ``compile`` (ours through torch.compile), ``onnxruntime``, ``openvino`` (ours,
exact, exported), ``onnxruntime-nystra``, ``openvino-nystra``, ``onnxruntime-official``, ``openvino-official``
(spandrel's model exported: the official graph). Their export or compilation for a size runs once before the
timing (``prepare_s``) and before the CPU memory worker's measured forward; exports are cached
(``$NYSTRA_HUB_CACHE``, see :mod:`~nystra_hub.inference.backends`); torch's FLOP counter cannot see inside their
graphs (no
``flops``).

Method: all arms of a size live in one process and are run interleaved round-robin (``--warmup`` rounds, then
``--runs`` timed rounds; the arm order rotates every round), so machine drift hits every arm alike; CUDA is
synchronised around each call; the rounds are :func:`.timing.run_rounds`, the loop of the GPU run too. Medians,
per-run times and per-round paired ratios are recorded. Ratios are reported against (a), (f) and (c). Memory and
FLOPs are measured first, so an arm whose forward cannot fit in memory is recorded as an error and left out of the
timing instead of ending the run. Peak memory: CUDA ``max_memory_allocated`` over one forward; CPU: the peak
resident set size (VmHWM, reset through /proc/self/clear_refs) of one first forward in a fresh subprocess per arm,
which builds the same model and input (``peak_rss_bytes``, and ``peak_increase_bytes`` above the RSS just before the
forward). FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over one forward (matmuls, convolutions and fused
attention; elementwise ops, softmax and copies are not counted).

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
                     performer_features, plan, dtype, runtime: "torch"|"compile"|"onnxruntime"|"openvino",
                     runtime_precision, compile_blocks, redo, tiled, tile_batch}},  # .arms.Arm
     references: {"a": <name>, "f": <name>, "c": <name>, ["o": "openvino-official"]},  # ratios are against these
     roofline: {gflops_per_s: {"MxK@KxN": rate}, best_gflops_per_s, method},  # torch.mm on this device
     results: [{size, input_shape,
                arms: {<name>: {times_s: [...], warmup_times_s: [...], error: str|null, output_shape,
                                [prepare_s: the runtime arms' first, untimed call: export/compile and load],
                                median_s, mean_s, min_s, max_s, iqr_s, stdev_s,
                                max_abs_diff_vs_a, mean_abs_diff_vs_a, psnr_vs_a_db (null: identical),
                                speedup: {"a:<name>": x, "f:<name>": x, "c:<name>": x},   # median ref / median
                                paired_speedup: {...},                  # median over rounds of ref / arm
                                flops, flops_by_op: {"aten.mm": n, ...},
                                [flops_from: runtime arms, the eager arm of the same function],
                                gflops_per_s, roofline_fraction,        # flops / median_s, / the roofline
                                CPU: peak_rss_bytes, rss_before_bytes, peak_increase_bytes, memory_method
                                CUDA: peak_bytes, allocated_before_bytes, peak_increase_bytes, memory_method
                                [memory_error]}}}]}
"""

from __future__ import annotations

import gc
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from nystra_hub.inference.precision import resolve_dtype
from nystra_hub.measure.arms import (
    BENCH_DEFAULT,
    PRECISION_NOTE,
    Arm,
    ModelSource,
    forward_fn,
    make_arm_model,
    make_input,
    paper_recipe,
    plan_arms,
    resolve_model,
    select_arms,
    standard_arms,
)
from nystra_hub.measure.environment import environment, load_average
from nystra_hub.measure.timing import (
    ArmRecord,
    achieved_rates,
    compare_outputs,
    count_flops,
    error_text,
    gemm_roofline,
    peak_call,
    run_rounds,
    summarise,
    try_call,
)

SCHEMA_BENCH = "nystra_hub.bench/1"
# The command's default is a short run (one small size, a few minutes on a CPU for SwinIR-M); the measurements in
# benchmarks/ and the model cards use FULL_SIZES, which take hours on a CPU: --sizes 256 512 --runs 5.
DEFAULT_SIZES = (64,)
FULL_SIZES = (256, 512)
DEFAULT_RUNS = 3
REFERENCE_ARMS = ("a", "f", "c")  # ratios are reported against these (by letter)
# ...and against the best peer runtime on the official graph, when it runs (reference key "o")
PEER_REFERENCE = ("o", "openvino-official")
# The GEMM roofline: SwinIR-M's qkv projection of one 64x64 image (4096 tokens x 180 channels -> 540) and a
# square 1024 GEMM; the faster one is the attainable matmul rate on this device, threads and precision.
ROOFLINE_SHAPES = ((4096, 180, 540), (1024, 1024, 1024))


# -- memory and FLOPs --------------------------------------------------------------------------------------------
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
    fn = forward_fn(model, source, spec["protocol"], resolve_dtype(arm.dtype or spec["dtype"], "cpu"))
    x = make_input(source, spec["size"], spec["batch"], spec["protocol"], "cpu", torch.float32, spec["seed"])
    if arm.runtime != "torch":  # compiling or loading the (cached) export is not part of the forward measured
        with torch.inference_mode():
            fn(x)
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
        import resource  # Unix only, and only needed where /proc is missing

        with torch.inference_mode():
            fn(x)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        result.update(peak_rss_bytes=peak, rss_before_bytes=None, peak_increase_bytes=None,
                      memory_method="ru_maxrss of the subprocess (includes building the model)")
    if spec.get("flops") and arm.runtime == "torch":  # the counter sees no op inside a compiled/exported graph
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


def measure_cpu_memory(source: ModelSource, arm: Arm, size: int, settings: BenchSettings, flops: bool) -> dict:
    spec = {"model": source.spec, "checkpoint": source.checkpoint, "arm": arm.config(), "size": size,
            "batch": settings.batch, "dtype": settings.dtype, "threads": torch.get_num_threads(),
            "seed": settings.seed, "protocol": settings.protocol, "flops": flops}
    cmd = [sys.executable, "-c", "import sys, nystra_hub.measure.bench as b; sys.exit(b._worker_main())"]
    try:
        proc = subprocess.run(cmd, input=json.dumps(spec), capture_output=True, text=True,
                              timeout=settings.worker_timeout)
    except subprocess.TimeoutExpired:
        return {"memory_error": f"worker timed out after {settings.worker_timeout}s"}
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH-WORKER "):
            return json.loads(line[len("BENCH-WORKER "):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    if proc.returncode < 0:  # killed by a signal: SIGKILL is what the kernel's OOM killer sends
        return {"memory_error": f"worker killed by signal {-proc.returncode} (out of memory?)",
                "memory_killed": True}
    return {"memory_error": f"worker exited with {proc.returncode}: {' | '.join(tail)}"}


def measure_cuda_memory(fn: Callable, x: Tensor, device: torch.device, flops: bool) -> dict:
    out, _, peak, before = peak_call(fn, x, device)
    del out
    result = {"peak_bytes": peak, "allocated_before_bytes": before, "peak_increase_bytes": peak - before,
              "memory_method": CUDA_MEMORY_METHOD}
    if flops:
        result.update(count_flops(fn, x))
    return result


# -- statistics --------------------------------------------------------------------------------------------------
def borrow_flops(entries: dict[str, dict], arms: list[Arm]) -> None:
    """torch's FLOP counter cannot see inside an exported or compiled graph: a runtime arm gets the FLOPs of the
    eager arm computing the same function (same attention, window, Nyström parameters, plan), ``flops_from``."""
    def function(arm: Arm) -> tuple:  # the runner's precision changes how, not what, it computes
        return arm.attn_impl, arm.window, json.dumps(arm.nystra, sort_keys=True), json.dumps(arm.plan, sort_keys=True)

    counted = {function(a): a.name for a in arms if a.runtime == "torch" and entries[a.name].get("flops")}
    for arm in arms:
        entry = entries[arm.name]
        source = counted.get(function(arm))
        if arm.runtime != "torch" and not entry.get("flops") and source:
            entry["flops"], entry["flops_from"] = entries[source]["flops"], source


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
@dataclass(frozen=True)
class BenchSettings:
    """One bench run: the model, its arms and input sizes, and how they are measured (the options of
    ``nystra-hub bench``, which records its command line in ``command``)."""

    model: str  # a catalogue variant or a reference-model folder (:func:`.arms.resolve_model`)
    checkpoint: str | None = None  # the released checkpoint of a variant (else random seeded weights)
    sizes: list[int] = field(default_factory=lambda: list(DEFAULT_SIZES))
    arms: list[str] | None = None  # names or letters; None: BENCH_DEFAULT
    plans: list[str] = field(default_factory=list)  # per-layer plan files, one extra arm each
    runs: int = DEFAULT_RUNS
    warmup: int = 1
    device: str = "cpu"
    dtype: str = "float32"  # a DTYPE_NAMES entry ("auto" included)
    batch: int = 1
    threads: int | None = None  # torch CPU threads (None: torch's)
    protocol: str = "forward"  # or "official" (the official test protocol, padding included)
    window: int | None = None  # overrides the recipe's enlarged window
    memory: bool = True
    flops: bool = True
    worker_timeout: int = 3600  # seconds for a CPU memory subprocess
    seed: int = 0
    command: str = "nystra-hub bench"  # what the report records as the command that made it


def run_bench(settings: BenchSettings, log=print) -> dict:
    device = _bench_device(settings)
    dtype = resolve_dtype(settings.dtype, device)
    source = resolve_model(settings.model, settings.checkpoint)
    recipe = _bench_recipe(source, settings.window)
    arms = select_arms(standard_arms(source, recipe), settings.arms or BENCH_DEFAULT, recipe)
    arms += plan_arms(settings.plans)
    references = reference_arms(arms)
    base = source.build(settings.seed)
    models, build_errors = _build_arm_models(base, arms, device, log)
    session = BenchSession(settings, source, device, dtype, arms, models, build_errors, references, log)
    report = _report_header(session, base, recipe)
    report["roofline"] = session.roofline = gemm_roofline(device, dtype, ROOFLINE_SHAPES)
    log(f"GEMM roofline: {report['roofline']['best_gflops_per_s']:.0f} GFLOP/s")
    for size in settings.sizes:
        report["results"].append(_measure_size(session, size))
    report["environment"]["load_average_end"] = load_average()
    return report


@dataclass
class BenchSession:
    """What every step of one bench run shares: the settings, the arms and their models on the device."""

    settings: BenchSettings
    source: ModelSource
    device: torch.device
    dtype: torch.dtype
    arms: list[Arm]
    models: dict[str, nn.Module]  # the arms that could be built
    build_errors: dict[str, str]  # the arms that could not
    references: dict[str, str]  # letter -> arm name
    log: Callable[[str], None]
    roofline: dict | None = None

    @property
    def memory_on(self) -> bool:
        return self.settings.memory

    @property
    def flops_on(self) -> bool:
        return self.settings.flops


def _bench_device(settings: BenchSettings) -> torch.device:
    device = torch.device(settings.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    if settings.threads:
        torch.set_num_threads(settings.threads)
    return device


def _bench_recipe(source: ModelSource, window: int | None) -> dict:
    """The paper's recipe for the model, its enlarged window overridden by ``--window``."""
    recipe = paper_recipe(source.arch, source.task)
    if window:
        recipe = {**recipe, "window": window, "source": recipe["source"] + f"; window overridden to {window}"}
    return recipe


def reference_arms(arms: list[Arm]) -> dict[str, str]:
    """{letter: arm name} of the arms ratios are taken against (:data:`REFERENCE_ARMS`) among ``arms``."""
    references = {}
    for letter in REFERENCE_ARMS:
        found = [a.name for a in arms if a.letter == letter]
        if found:
            references[letter] = found[0]
    key, peer = PEER_REFERENCE
    if any(a.name == peer for a in arms):
        references[key] = peer
    return references


def _build_arm_models(base: nn.Module, arms: list[Arm], device, log) -> tuple[dict, dict]:
    """({arm: model on the device}, {arm: why it could not be built})."""
    models: dict[str, nn.Module] = {}
    build_errors: dict[str, str] = {}
    for arm in arms:
        try:
            models[arm.name] = make_arm_model(base, arm, device)  # float32: see PRECISION_NOTE
        except Exception as err:  # noqa: BLE001 - an arm that cannot be built is reported, not fatal
            build_errors[arm.name] = error_text(err)
            log(f"  {arm.name}: cannot build ({build_errors[arm.name]})")
    return models, build_errors


def _report_header(session: BenchSession, base: nn.Module, recipe: dict) -> dict:
    """The report without results: schema, command, model, recipe, environment, settings, arms."""
    settings, device = session.settings, session.device
    return {
        "schema": SCHEMA_BENCH,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": settings.command,
        "model": session.source.describe(base),
        "recipe": recipe,
        "environment": environment(device),
        "settings": {
            "device": str(device), "dtype": str(session.dtype).removeprefix("torch."), "precision": PRECISION_NOTE,
            "batch": settings.batch, "sizes": list(settings.sizes),
            "runs": settings.runs, "warmup": settings.warmup, "protocol": settings.protocol, "seed": settings.seed,
            "threads": torch.get_num_threads(),
            "input": "uniform random [0,1) (DehazeFormer's raw forward: mapped to [-1,1]), square, "
                     "batch x channels x size x size; for SR the size is the low-resolution input",
            "order": "per size: memory/FLOPs forward of every arm first (CPU: in subprocesses; an arm that "
                     "cannot fit is skipped), then warm-up rounds and timed rounds; every round runs every arm "
                     "once, the arm order rotated by one each round; all timed arms in one process",
            "timer": "time.perf_counter around one call under torch.inference_mode"
                     + (", torch.cuda.synchronize before and after" if device.type == "cuda" else ""),
            "memory": (CUDA_MEMORY_METHOD if device.type == "cuda" else CPU_MEMORY_METHOD) if session.memory_on
            else "off",
            "flops": "torch.utils.flop_counter.FlopCounterMode over one forward (matmul, conv, attention ops)"
                     if session.flops_on else "off",
        },
        "arms": {a.name: a.config() for a in session.arms},
        "references": session.references,
        "results": [],
    }


def _measure_size(session: BenchSession, size: int) -> dict:
    """One entry of ``results``: memory and FLOPs per arm, then the interleaved rounds
    (:func:`.timing.run_rounds`), then the differences to arm (a), the statistics and the ratios."""
    settings = session.settings
    session.log(f"size {size}: {len(session.models)} arms, {settings.warmup} warm-up + {settings.runs} timed rounds")
    x = make_input(session.source, size, settings.batch, settings.protocol, session.device, torch.float32,
                   settings.seed)
    fns = {arm.name: forward_fn(session.models[arm.name], session.source, settings.protocol,
                                getattr(torch, arm.dtype) if arm.dtype else session.dtype)
           for arm in session.arms if arm.name in session.models}
    records = {arm.name: ArmRecord(error=session.build_errors.get(arm.name)) for arm in session.arms}
    measured: dict[str, dict] = {arm.name: {} for arm in session.arms}  # prepare_s, memory, FLOPs
    _prepare_runtime_arms(session, records, measured, fns, x)
    _measure_before_timing(session, records, measured, fns, x, size)
    run_rounds(fns, x, session.device, warmup=settings.warmup, runs=settings.runs, records=records,
               log=session.log)
    low, high = session.source.protocol_model.spec.value_range if settings.protocol == "forward" else (0.0, 1.0)
    diffs = compare_outputs(records, session.references.get("a"), high - low)
    entries = {name: _entry(name, record, measured[name], diffs.get(name), session.log)
               for name, record in records.items()}
    ratios(entries, session.references)
    borrow_flops(entries, session.arms)
    achieved_rates(entries, session.roofline)
    return {"size": size, "input_shape": list(x.shape), "arms": entries}


def _prepare_runtime_arms(session: BenchSession, records: dict[str, ArmRecord], measured: dict[str, dict],
                          fns: dict[str, Callable], x: Tensor) -> None:
    """One untimed call of each runtime arm (compile, export and load its graph for this input), its time
    recorded as ``prepare_s``: the rounds then time the graph, not its making."""
    for arm in session.arms:
        if arm.runtime != "torch" and arm.name in fns and not records[arm.name].error:
            timed = try_call(records[arm.name], arm.name, fns[arm.name], x, session.device, session.log)
            if timed is not None:
                measured[arm.name]["prepare_s"] = timed[1]
                session.log(f"  {arm.name}: prepared in {timed[1]:.1f}s ({arm.runtime})")


def _measure_before_timing(session: BenchSession, records: dict[str, ArmRecord], measured: dict[str, dict],
                           fns: dict[str, Callable], x: Tensor, size: int) -> None:
    """Memory and FLOPs first: an arm whose forward cannot fit is found in a subprocess (CPU) or caught (CUDA)
    and left out of the timing instead of taking the whole run down."""
    if session.memory_on or session.flops_on:
        for arm in session.arms:
            if arm.name in fns and not records[arm.name].error:
                _measure_memory_and_flops(session, arm, fns[arm.name], x, size, measured[arm.name], records[arm.name])
    if session.device.type == "cpu" and session.memory_on:
        _skip_arms_that_cannot_fit(records, measured, session.log)


def _measure_memory_and_flops(session: BenchSession, arm: Arm, fn: Callable, x: Tensor, size: int, entry: dict,
                              record: ArmRecord) -> None:
    """Peak memory (CUDA: in process; CPU: a subprocess) and FLOPs of one forward of ``arm``, into ``entry``; an
    arm that cannot run gets its error in ``record``."""
    device = session.device
    flops = session.flops_on and arm.runtime == "torch"  # the counter sees no op inside a compiled/exported graph
    if device.type == "cuda" and session.memory_on:
        try:
            entry.update(measure_cuda_memory(fn, x, device, flops))
        except Exception as err:  # noqa: BLE001 - typically out of memory
            record.error = error_text(err)
            torch.cuda.empty_cache()
    elif session.memory_on:
        entry.update(measure_cpu_memory(session.source, arm, size, session.settings, flops))
        if entry.get("memory_killed"):
            record.error = entry["memory_error"]
    elif flops:
        try:
            entry.update(count_flops(fn, x))
        except Exception as err:  # noqa: BLE001
            record.error = error_text(err)
    session.log(f"  {arm.name}: peak {_fmt_bytes(entry.get('peak_rss_bytes', entry.get('peak_bytes')))}, "
                f"{(entry.get('flops') or 0) / 1e9:.2f} GFLOP"
                + (f"  [{record.error[:120]}]" if record.error else ""))


def _skip_arms_that_cannot_fit(records: dict[str, ArmRecord], measured: dict[str, dict], log) -> None:
    """Mark as skipped the arms whose measured forward needs more than 90 % of the memory available now."""
    available = _mem_available()
    for name, record in records.items():
        need = measured[name].get("peak_increase_bytes")
        if not record.error and need and available and need > 0.9 * available:
            record.error = (f"skipped: its forward needs {_fmt_bytes(need)} more than the "
                            f"{_fmt_bytes(available)} available")
            log(f"  {name}: {record.error}")


def _entry(name: str, record: ArmRecord, measured: dict, diff: dict | None, log) -> dict:
    """One arm's entry of a result: its times, error and measurements, the difference of its first output to
    arm (a)'s (max, mean, and PSNR over the output's value range; null when identical), its statistics."""
    entry = {"times_s": record.times_s, "warmup_times_s": record.warmup_times_s, "error": record.error, **measured}
    if record.output_shape is not None:
        entry["output_shape"] = record.output_shape
    if diff is not None:
        entry.update(max_abs_diff_vs_a=diff["max_abs_diff"], mean_abs_diff_vs_a=diff["mean_abs_diff"],
                     psnr_vs_a_db=None if diff["psnr_db"] == math.inf else diff["psnr_db"])
    entry.update(summarise(record.times_s))
    if record.times_s:
        log(f"  {name}: median {entry['median_s'] * 1e3:.1f} ms over {len(record.times_s)} runs")
    return entry


def _fmt_bytes(value) -> str:
    return "n/a" if value is None else f"{value / 2**20:.0f} MiB"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_worker_main())
