"""The round loop shared by the measurements (``bench`` on a CPU or GPU, the GPU run of
:mod:`nystra_hub.measure.gpu`): :func:`run_rounds` times every arm of one input, and each measurement writes what
it recorded (:class:`ArmRecord`) into its own report.

CUDA runs asynchronously: a call returns when its kernels are queued, not done. So a call is timed between two
synchronisations, and the CPU clock measures the device's work with the launch overhead a user also pays. Arms
are run in rounds whose order rotates by one each round, so drift over a run (clocks, temperature, other load)
hits every arm alike. An arm that fails (out of memory, a compile error) keeps its error and is left out of the
later rounds: one arm must not end a run whose other arms took minutes to build.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from nystra_hub.inference.precision import PrecisionFallbackWarning


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (a no-op on the CPU, which runs synchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_call(fn: Callable[[Tensor], Tensor], x: Tensor, device: torch.device) -> tuple[Tensor, float]:
    """(output, seconds) of one call ``fn(x)`` under inference mode, ``device`` synchronised before and after."""
    synchronize(device)
    with torch.inference_mode():
        start = time.perf_counter()
        out = fn(x)
        synchronize(device)
        elapsed = time.perf_counter() - start
    return out, elapsed


def call_with_fallbacks(fn: Callable[[Tensor], Tensor], x: Tensor, device: torch.device) -> tuple[Tensor, float, int]:
    """(output, seconds, float32 fallbacks) of one :func:`timed_call`; a fallback is a half-precision call redone
    in float32 because it produced a NaN/Inf (:func:`~nystra_hub.inference.precision.run_guarded`)."""
    (out, elapsed), fallbacks = _counting_fallbacks(timed_call, fn, x, device)
    return out, elapsed, fallbacks


def _counting_fallbacks(call: Callable, *args) -> tuple[object, int]:
    """(``call(*args)``, the float32 fallbacks it warned about; those warnings are not shown)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PrecisionFallbackWarning)
        result = call(*args)
    return result, sum(issubclass(w.category, PrecisionFallbackWarning) for w in caught)


def peak_call(fn: Callable[[Tensor], Tensor], x: Tensor, device: torch.device) -> tuple[Tensor, float, int, int]:
    """(output, seconds, peak bytes, bytes allocated before) of one :func:`timed_call` on a CUDA device, its
    high-water mark (``max_memory_allocated``) reset just before."""
    gc.collect()
    torch.cuda.empty_cache()
    synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    out, elapsed = timed_call(fn, x, device)
    return out, elapsed, torch.cuda.max_memory_allocated(device), before


def rotated(names: list[str], round_index: int) -> list[str]:
    """The order of ``names`` in round ``round_index``: rotated left by one per round (empty stays empty)."""
    if not names:
        return []
    shift = round_index % len(names)
    return names[shift:] + names[:shift]


def error_text(err: BaseException) -> str:
    """An error for the report: its type, its first 300 characters and, for a long one, its last 1200 (where a
    compiler's own message is: inductor's CppCompileError starts with the command line)."""
    text = str(err)
    if len(text) > 1500:
        text = f"{text[:300]} [...] {text[-1200:]}"
    return f"{type(err).__name__}: {text}"


def summarise(times: list[float]) -> dict:
    """Median, mean, min, max, interquartile range and standard deviation of ``times`` ({} when empty)."""
    if not times:
        return {}
    ordered = sorted(times)
    q = statistics.quantiles(ordered, n=4) if len(ordered) >= 2 else [ordered[0]] * 3
    return {"median_s": statistics.median(ordered), "mean_s": statistics.fmean(ordered), "min_s": ordered[0],
            "max_s": ordered[-1], "iqr_s": q[2] - q[0],
            "stdev_s": statistics.stdev(ordered) if len(ordered) > 1 else 0.0}


# -- the rounds ----------------------------------------------------------------------------------------------------
@dataclass
class ArmRecord:
    """What the rounds recorded of one arm (the measurements map it to their report's keys)."""

    error: str | None = None  # set before the rounds (an arm that could not be built or fit): never called
    warmup_times_s: list[float] = field(default_factory=list)
    times_s: list[float] = field(default_factory=list)
    output: Tensor | None = None  # the kept output (see run_rounds), as its ``keep`` made it
    output_shape: list[int] | None = None
    nonfinite_values: int | None = None  # in the kept output, before ``keep``
    fp32_fallbacks: int = 0  # in the call whose output was kept
    peak_bytes: int | None = None  # CUDA, the quality round


def detached(out: Tensor) -> Tensor:
    """The default ``keep``: the output in float32 on the CPU, as the arm returned it."""
    return out.detach().float().cpu()


def try_call(record: ArmRecord, name: str, fn: Callable[[Tensor], Tensor], x: Tensor, device: torch.device,
             log: Callable[[str], None], call: Callable = timed_call) -> tuple | None:
    """``call(fn, x, device)``, or None with the error kept in ``record`` when it failed: one arm failing (out
    of memory, a compile error) must not end the run. CUDA's cache is emptied after a failure (an OOM's)."""
    try:
        return call(fn, x, device)
    except Exception as err:  # noqa: BLE001 - reported per arm, not fatal
        record.error = error_text(err)
        log(f"  {name}: failed ({record.error[:200]})")
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return None


def run_rounds(fns: dict[str, Callable[[Tensor], Tensor]], x: Tensor, device: torch.device, *, warmup: int,
               runs: int, quality_round: bool = False, keep: Callable[[Tensor], Tensor] = detached,
               records: dict[str, ArmRecord] | None = None, log: Callable[[str], None] = print
               ) -> dict[str, ArmRecord]:
    """{arm: its record} of ``warmup`` untimed rounds, with ``quality_round`` one more round measuring peak
    memory (CUDA) and keeping the outputs, then ``runs`` timed rounds; every round calls every arm once, the
    order rotated by one each round (:func:`rotated`, round index counted over all rounds).

    The kept output of an arm (``keep(out)``, with its non-finite values and float32 fallbacks) is that of the
    quality round, or without one that of its first call. ``records``: the arms' records made before the rounds
    (an arm with an error is not called); an arm failing keeps its error and is left out of the later rounds."""
    records = {name: (records or {}).get(name) or ArmRecord() for name in fns}
    kinds = ["warmup"] * warmup + ["quality"] * quality_round + ["timed"] * runs
    started = time.perf_counter()
    for index, kind in enumerate(kinds):
        for name in rotated(list(fns), index):
            record = records[name]
            if record.error:
                continue
            keeps = kind == "quality" or (not quality_round and record.output_shape is None)
            _one_call(record, name, fns[name], x, device, log, kind, keep if keeps else None)
        if index == 0:
            spent = time.perf_counter() - started
            log(f"  round 1 took {spent:.1f}s; about {spent * (len(kinds) - 1):.0f}s more for timing")
    return records


def _one_call(record: ArmRecord, name: str, fn: Callable, x: Tensor, device: torch.device, log, kind: str,
              keep: Callable[[Tensor], Tensor] | None) -> None:
    """One call of one arm in a round of ``kind``; ``keep``: what is kept of its output (None: nothing)."""
    if keep is None:
        timed = try_call(record, name, fn, x, device, log)
        if timed is None:
            return
        out, seconds = timed
    else:
        memory = kind == "quality" and device.type == "cuda"
        kept = try_call(record, name, fn, x, device, log, lambda f, t, d: _kept_call(f, t, d, memory))
        if kept is None:
            return
        out, seconds, record.fp32_fallbacks, record.peak_bytes = kept
        record.nonfinite_values = int((~torch.isfinite(out)).sum())
        record.output, record.output_shape = keep(out), list(out.shape)
    if kind != "quality":
        (record.warmup_times_s if kind == "warmup" else record.times_s).append(seconds)
    del out


def _kept_call(fn: Callable, x: Tensor, device: torch.device, memory: bool) -> tuple[Tensor, float, int, int | None]:
    """(output, seconds, float32 fallbacks, peak bytes or None) of the call whose output is kept."""
    gc.collect()  # the quality round's peak is one forward's, not the garbage of earlier arms
    if memory:
        (out, seconds, peak, _), fallbacks = _counting_fallbacks(peak_call, fn, x, device)
        return out, seconds, fallbacks, peak
    (out, seconds), fallbacks = _counting_fallbacks(timed_call, fn, x, device)
    return out, seconds, fallbacks, None


def compare_outputs(records: dict[str, ArmRecord], reference: str | None, data_range: float) -> dict[str, dict]:
    """{arm: max_abs_diff, mean_abs_diff, psnr_db} of each kept output against the ``reference`` arm's (same
    shape only; PSNR over ``data_range``, ``math.inf`` when identical); {} without a reference output."""
    ref = records[reference].output if reference in records else None
    if ref is None:
        return {}
    out = {}
    for name, record in records.items():
        if record.output is None or record.output.shape != ref.shape:
            continue
        diff = record.output.double() - ref.double()
        mse = float(diff.square().mean())
        out[name] = {"max_abs_diff": float(diff.abs().max()), "mean_abs_diff": float(diff.abs().mean()),
                     "psnr_db": 10 * math.log10(data_range**2 / mse) if mse > 0 else math.inf}
    return out


# -- FLOPs and the matmul ceiling ------------------------------------------------------------------------------
def count_flops(fn: Callable[[Tensor], Tensor], x: Tensor) -> dict:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn(x)
    by_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return {"flops": int(counter.get_total_flops()), "flops_by_op": by_op}


class _OpBytes(TorchDispatchMode):
    """Sums the bytes every dispatched operation reads and writes: its tensor inputs and outputs, views excluded
    (they move nothing). Eager traffic as executed: a fused kernel counts its inputs and output only."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            tensors = [t for t in pytree.tree_leaves((args, kwargs, out)) if isinstance(t, Tensor)]
            self.bytes += sum(t.numel() * t.element_size() for t in tensors)
            self.ops += 1
        return out


def count_bytes(fn: Callable[[Tensor], Tensor], x: Tensor) -> dict:
    """Bytes read and written by the operations of one ``fn(x)`` as dispatched (:class:`_OpBytes`), and how many
    operations moved them: over a forward's time, the memory bandwidth it achieved at least."""
    with torch.inference_mode(), _OpBytes() as counter:
        fn(x)
    return {"op_bytes": counter.bytes, "ops": counter.ops}


def copy_roofline(device: torch.device, megabytes: int = 1024, runs: int = 5) -> dict:
    """The memory bandwidth this device reaches copying a ``megabytes`` buffer (GB/s read plus written, median of
    ``runs`` timed copies after one warm-up): the ceiling of the arms' achieved GB/s."""
    source = torch.empty(megabytes * 2**20, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    times = []
    for i in range(runs + 1):
        synchronize(device)
        start = time.perf_counter()
        target.copy_(source)
        synchronize(device)
        if i:
            times.append(time.perf_counter() - start)
    return {"gb_per_s": 2 * source.numel() / statistics.median(times) / 1e9,
            "method": f"Tensor.copy_ of {megabytes} MiB, read + written, median of {runs} after one warm-up"}


def gemm_roofline(device: torch.device, dtype: torch.dtype, shapes: tuple[tuple[int, int, int], ...],
                  runs: int = 5) -> dict:
    """The matmul rate this device reaches (GFLOP/s, median of ``runs`` timed calls after one warm-up) on
    ``shapes`` ((m, k, n) each; the best of them): the ceiling the arms' achieved GFLOP/s (``flops / median_s``)
    are compared with."""
    rates = {}
    for m, k, n in shapes:
        a = torch.randn(m, k, device=device, dtype=dtype)
        b = torch.randn(k, n, device=device, dtype=dtype)
        times = []
        for i in range(runs + 1):
            synchronize(device)
            start = time.perf_counter()
            torch.mm(a, b)
            synchronize(device)
            if i:  # the first call is the warm-up
                times.append(time.perf_counter() - start)
        rates[f"{m}x{k}@{k}x{n}"] = 2 * m * k * n / statistics.median(times) / 1e9
    return {"gflops_per_s": rates, "best_gflops_per_s": max(rates.values()),
            "method": f"torch.mm, median of {runs} calls after one warm-up, {str(dtype).removeprefix('torch.')}"}


def achieved_rates(entries: dict[str, dict], roofline: dict | None) -> None:
    """Per arm with counted FLOPs and a median: GFLOP/s achieved and its fraction of the GEMM roofline."""
    for entry in entries.values():
        if entry.get("flops") and entry.get("median_s"):
            entry["gflops_per_s"] = entry["flops"] / entry["median_s"] / 1e9
            if roofline:
                entry["roofline_fraction"] = entry["gflops_per_s"] / roofline["best_gflops_per_s"]
