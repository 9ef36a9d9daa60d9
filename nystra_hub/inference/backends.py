"""How a model's raw forward runs on a padded input: eagerly, compiled, or as an exported graph.

:func:`make_runner` returns a :class:`Runner`, a module called on the padded input in the forward's value range
(what ``official_pad`` and ``to_model_range`` give, or a tile of it) that returns the forward's output, as
``model(x)`` does. ``official_inference(x, forward=runner)`` runs the whole official protocol around it.

===============  ==================================================================================================
``torch``        the model itself (eager)
``compile``      ``torch.compile`` with inductor freezing (weights folded into the graph) under
                 ``torch.inference_mode``; compiled once per input shape (``dynamic=False``)
``cudagraphs``   the eager model captured as a CUDA graph once per input shape and precision, then replayed
                 (CUDA only: no per-kernel launch overhead; what that gains is not measured yet)
``onnxruntime``  the ONNX export (:mod:`nystra_hub.inference.export`) in an ONNX Runtime CPU session
``openvino``     the OpenVINO IR export compiled for the OpenVINO CPU plugin (float32 inference precision: on CPUs
                 with bfloat16 units the plugin's default would be bfloat16, not the same function;
                 ``precision="bfloat16"`` asks for it explicitly)
===============  ==================================================================================================

The export backends run float32 on the CPU, with ``threads`` intra-op threads (default: torch's count, so a
benchmark compares like with like). Graphs have static shapes: a runner keeps one session per input shape and
finds or writes its export in ``cache_dir`` (default ``$NYSTRA_HUB_CACHE`` or ``~/.cache/nystra_hub``, under
``exports/``), one folder per shape, named by what shapes the graph (model configuration and attention,
weights, shape, opset, versions of torch, nystra_hub and the exporters). Given ``exported=`` (a folder written
by :func:`nystra_hub.inference.export.export`), a runner loads that folder only, after checking that its ``export.json``
matches the model (variant, architecture, attention and Nyström parameters, weights) and the opset asked for.

The compiled and exported graphs have the forward's input checks taken out (a branch on the data), so their
runners check first: a 4-D float32 tensor with the model's channels and no NaN/Inf (the eager model checks
itself). A runner describes the model as it is when made: make it after switching attention or windows.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import importlib.util
import json
import os
import sys
from collections import OrderedDict
from collections.abc import Collection
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from nystra_hub.inference.export import (
    DEFAULT_OPSET,
    GRAPH_FILES,
    INPUT_NAME,
    ExportError,
    as_restoration_model,
    check_export_matches,
    describe_model,
    export,
    export_versions,
    read_export,
    require,
)
from nystra_hub.models.common import unwrap_model

BACKENDS = ("torch", "compile", "cudagraphs", "onnxruntime", "openvino")
BACKEND_CHOICES = (*BACKENDS, "auto")  # "auto": see auto_backend
# What "auto" runs on a CPU: the first of these whose runtime is installed, else eager torch. Measured on this
# project's 2-core CPU machines, float32, arms interleaved (benchmarks/bench-*-routes-cpu.json): OpenVINO running
# our exported graph was the fastest route measured (Uformer-B 512²: 2456 ms, ONNX Runtime 4412, eager 8224,
# torch.compile 10233), ONNX Runtime the second.
AUTO_CPU_PREFERENCE = ("openvino", "onnxruntime")
RUNTIME_MODULES = {"onnxruntime": ("onnx", "onnxscript", "onnxruntime"),
                   "openvino": ("openvino",)}  # converted from torch.export's program: no ONNX on the way
EXPORT_FORMATS = {"onnxruntime": "onnx", "openvino": "openvino"}  # the format each export backend writes
COMPILE_RECOMPILE_LIMIT = 64  # shapes a compiled runner may see (torch's default 8: a few whole images of varied size)


def default_cache_dir() -> Path:
    """``$NYSTRA_HUB_CACHE/exports``, else ``$XDG_CACHE_HOME/nystra_hub/exports`` (``~/.cache`` by default)."""
    if os.environ.get("NYSTRA_HUB_CACHE"):
        return Path(os.environ["NYSTRA_HUB_CACHE"]) / "exports"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nystra_hub" / "exports"


def check_backend(backend: str) -> str:
    if backend not in BACKEND_CHOICES:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKEND_CHOICES)}")
    return backend


def auto_backend(device: torch.device | str) -> str:
    """The backend ``"auto"`` stands for on ``device``: on a CPU the first installed runtime of
    :data:`AUTO_CPU_PREFERENCE` (each new input shape is exported once, about a minute for the base models, then
    cached), else eager torch; on a GPU eager torch (the exports run float32 on the CPU only)."""
    if torch.device(device).type != "cpu":
        return "torch"
    for backend in AUTO_CPU_PREFERENCE:
        if all(importlib.util.find_spec(module) is not None for module in RUNTIME_MODULES[backend]):
            return backend
    return "torch"


# The budget within which the automatic route runs OpenVINO in bfloat16 on a CPU with native bfloat16, per
# architecture: on each of its reference models, the worst held-out image at least 50 dB from the same graph in
# float32 and the held-out PSNR moved by at most 0.01 dB (mean of 4 images; the graph keeps the architecture's float32
# layers, nystra_hub.inference.float32_layers). Measured by benchmarks/openvino_bf16_quality.py, which also reports
# the golden cases (random-weight stress checks, not judged); each architecture's verdict is its spec's
# ``cpu_bfloat16_within_budget`` (tests/inference/test_route.py reads the JSON back).
BFLOAT16_BUDGET = {"min_psnr_vs_float32_db": 50.0, "max_heldout_delta_db": 0.01}
BFLOAT16_MEASUREMENT = "benchmarks/openvino-bf16-quality.json"
# Reference models trained after that measurement, which the verdicts therefore do not rest on yet (the run on them
# is owed: benchmarks/openvino_bf16_quality.py).
BFLOAT16_NOT_MEASURED: tuple[str, ...] = ()
NATIVE_BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")  # what OpenVINO's CPU plugin runs bfloat16 on natively


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU computes in bfloat16 natively (where OpenVINO's own default precision is bfloat16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:  # not Linux: float32, the safe choice
        return False
    return any(flag in flags for flag in NATIVE_BFLOAT16_FLAGS)


# How many forward calls of one input shape repay exporting that shape, by the runner's precision. Measured on this
# project's 2-core CPU machines (benchmarks/folder_route.py -> folder-route-cpu.json, commit 90d6488): the first
# export and compile of SwinIR-M x2 at 128² took 14.8 s and saved 0.80 s per call in float32 against eager torch
# (2.55 s), 1.77 s in bfloat16: repaid after 18.6 and 8.4 calls; Uformer-B at 256²: 18.5 s, repaid after 21.4 and
# 14.0 calls. The thresholds are the larger of the two with a margin of about 1.1x (earlier, costlier exports
# needed 40 and 24). A run that calls a shape fewer times runs it eagerly.
EXPORT_REPAID_AFTER = {"float32": 24, "bfloat16": 16}

# How many times faster the exported graph runs a call than eager torch float32, by precision: the smaller of the
# two models' ratios in the same measurement (SwinIR-M x2 128²: 2552.5 ms eager, 1756.0 OpenVINO float32, 784.7
# bfloat16; Uformer-B 256²: 1557.9, 693.0, 237.9).
EXPORT_SPEEDUP = {"float32": 1.45, "bfloat16": 3.25}


def plan_cost(calls: dict[tuple, int], cached: Collection[tuple], precision: str) -> float:
    """What a run making ``calls`` (input shape → number of calls) costs on the route :func:`choose_route` takes,
    in pixels run by eager torch: each shape eagerly, or exported (once, unless ``cached``) and run faster,
    whichever is cheaper. ``n`` calls of ``p`` pixels cost ``n·p`` eagerly, ``n·p/s + R·p·(1 - 1/s)`` exported
    (``s`` = :data:`EXPORT_SPEEDUP`, ``R`` = :data:`EXPORT_REPAID_AFTER`: the export costs what ``R`` calls save),
    so the export wins exactly when ``n >= R``. Compares ways of tiling one run."""
    speedup, repays = EXPORT_SPEEDUP[precision], EXPORT_REPAID_AFTER[precision]
    total = 0.0
    for shape, count in calls.items():
        pixels = shape[-2] * shape[-1] * (shape[0] if len(shape) == 4 else 1)
        export_cost = 0.0 if shape in cached else repays * pixels * (1 - 1 / speedup)
        total += min(count * pixels, count * pixels / speedup + export_cost)
    return total


@dataclasses.dataclass(frozen=True)
class Route:
    """What runs a restore and why: ``backend`` (a name of :data:`BACKENDS`), ``precision`` (the runner's:
    float32, or bfloat16 for openvino's own kernels), the input shapes the export backend runs (cached, or exported
    on first use; the others run eagerly) and a one-line ``reason`` to show the user."""
    backend: str
    precision: str
    reason: str
    export_shapes: frozenset = frozenset()


def route_precision(dtype: str = "auto", model: nn.Module | None = None) -> str:
    """The OpenVINO route's precision for ``dtype``: bfloat16 when asked, or for "auto" where the CPU has it natively
    and ``model``'s architecture was measured within :data:`BFLOAT16_BUDGET`; float32 otherwise."""
    spec = getattr(unwrap_model(model), "spec", None) if model is not None else None
    auto = dtype == "auto" and spec is not None and spec.cpu_bfloat16_within_budget and cpu_has_native_bfloat16()
    return "bfloat16" if dtype == "bfloat16" or auto else "float32"


def choose_route(device: torch.device | str, *, calls: dict[tuple, int], cached: Collection[tuple] = (),
                 dtype: str = "auto", model: nn.Module | None = None) -> Route:
    """The fastest installed route for ``model``'s run whose raw forward sees the input shapes ``calls`` (shape →
    number of calls: whole images and tiles, :func:`~nystra_hub.inference.restore.forward_shapes`), of which
    ``cached`` have an export on disk. On a CPU with OpenVINO: the exported graph for each shape that is cached or
    called often enough to repay its export (:data:`EXPORT_REPAID_AFTER`), in the precision of
    :func:`route_precision`, eager torch for the others; eager torch elsewhere."""
    device = torch.device(device)
    if device.type != "cpu":
        return Route("torch", "float32", f"eager torch on {device.type} (the exported graphs run on the CPU)")
    if auto_backend(device) != "openvino":
        return Route("torch", "float32", 'eager torch (OpenVINO, the fastest CPU route, is not installed: '
                                         'pip install "nystra_hub[openvino]")')
    precision = route_precision(dtype, model)
    repays = EXPORT_REPAID_AFTER[precision]
    fresh = {shape for shape, count in calls.items() if count >= repays and shape not in cached}
    ready = set(cached) & set(calls)
    total, shapes = sum(calls.values()), len(calls)
    if not fresh and not ready and (precision == "float32" or dtype == "auto"):
        return Route("torch", "float32", f"eager torch: {total} forward call(s) over {shapes} input shape(s), none "
                                         f"cached or called {repays} times, which repays its export (about half a "
                                         f"minute each); --backend openvino exports anyway")
    runs, eager = sum(calls[shape] for shape in fresh | ready), shapes - len(fresh | ready)
    hint = (" (--dtype bfloat16: about 2.5x faster on this CPU, but this architecture's bfloat16 output was not "
            f"measured within the quality budget, {BFLOAT16_MEASUREMENT})"
            if precision == "float32" and cpu_has_native_bfloat16() else "")
    return Route("openvino", precision, f"OpenVINO {precision} for {runs} of {total} forward call(s): "
                                        f"{len(ready)} input shape(s) exported before, {len(fresh)} exported now "
                                        f"(called {repays}+ times, which repays an export)"
                                        + (f"; eager float32 for the other {eager} shape(s)" if eager else "")
                                        + hint, frozenset(fresh | ready))


class Runner(nn.Module):
    """``runner(x) -> model(x)`` on a padded input, through one backend (module doc). ``model`` is the module
    whose forward runs (a nystra_hub model or, for comparisons, spandrel's)."""

    backend = "torch"

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @property
    def ours(self):
        """The nystra_hub model that runs, or None (spandrel's)."""
        return as_restoration_model(self.model)

    def check(self, x: Tensor) -> None:
        """What the raw forward checks before computing (the graphs have the checks taken out)."""
        if not isinstance(x, Tensor) or x.dim() != 4 or x.dtype != torch.float32:
            found = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"the {self.backend} runner expects a float32 (batch, channels, height, width) "
                             f"tensor, got {found}")
        if self.ours is not None and x.shape[1] != self.ours.in_channels:
            raise ValueError(f"the model takes {self.ours.in_channels} channel(s), got shape {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("the input contains NaN or Inf values")

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class CompiledRunner(Runner):
    """The model through ``torch.compile`` (inductor, weights frozen into the graph), one graph per shape."""

    backend = "compile"

    def __init__(self, model: nn.Module, **compile_kwargs) -> None:
        super().__init__(model)
        graph_model = copy.copy(model)  # shares parameters and submodules; only the flag below differs
        if self.ours is not None:
            graph_model.validate_inputs = False  # checked by the runner: a data-dependent branch breaks the graph
        options = {"freezing": True, **compile_kwargs.pop("options", {})}
        self.compiled = torch.compile(graph_model, dynamic=False, options=options, **compile_kwargs)
        _raise_recompile_limit(COMPILE_RECOMPILE_LIMIT)

    def forward(self, x: Tensor) -> Tensor:
        self.check(x)
        with torch.inference_mode():  # freezing folds the weights in only where no gradient can be asked for
            return self.compiled(x)


class CUDAGraphRunner(Runner):
    """The eager model captured as one CUDA graph per input shape and precision, then replayed.

    A restoration forward launches thousands of small kernels (Uformer-B: nine stages of windowed attention); a
    replay launches them all at once, without Python or launch overhead, which is what a fixed tile shape allows.
    The first call of a shape warms the model up on a side stream (building the window geometry it caches) and
    captures it into a static input/output pair; later calls copy the input in, replay and return a copy of the
    output. All graphs share one memory pool. Under ``torch.autocast`` the graph is captured with autocast's
    weight-cast cache off (a cached cast would be freed when the caller's autocast exits, under the graph)."""

    backend = "cudagraphs"

    def __init__(self, model: nn.Module, warmup: int = 2) -> None:
        super().__init__(model)
        device = next(model.parameters()).device
        if device.type != "cuda" or not torch.cuda.is_available():
            raise ValueError(f"the cudagraphs backend needs the model on a CUDA device, it is on {device}")
        self.graph_model = copy.copy(model)  # shares parameters and submodules; only the flag below differs
        if self.ours is not None:
            self.graph_model.validate_inputs = False  # a check reads the data back: not allowed while capturing
        self.warmup = warmup
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, Tensor, Tensor]] = {}

    def forward(self, x: Tensor) -> Tensor:
        self.check(x)
        autocast = torch.is_autocast_enabled("cuda")
        key = (tuple(x.shape), x.device, torch.get_autocast_dtype("cuda") if autocast else None)
        if key not in self.graphs:
            self.graphs[key] = self.capture(x, key[2])
        graph, static_in, static_out = self.graphs[key]
        static_in.copy_(x)
        graph.replay()
        return static_out.clone()

    def capture(self, x: Tensor, autocast_dtype: torch.dtype | None):
        """(graph, static input, static output) of the model on inputs shaped like ``x``."""
        static_in = x.clone()
        cast = (torch.autocast("cuda", dtype=autocast_dtype, cache_enabled=False) if autocast_dtype is not None
                else contextlib.nullcontext())
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side), cast:
            for _ in range(self.warmup):
                self.graph_model(static_in)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool), cast:
            static_out = self.graph_model(static_in)
        return graph, static_in, static_out


def _raise_recompile_limit(limit: int) -> None:
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # torch < 2.7
    setattr(config, name, max(getattr(config, name), limit))


# -- exported graphs -------------------------------------------------------------------------------------------
class OnnxRuntimeSession:
    """An exported ONNX graph in an ONNX Runtime CPU session: numpy float32 in, numpy float32 out."""

    def __init__(self, folder: Path, metadata: dict, threads: int) -> None:
        ort = require("onnxruntime", "the onnxruntime backend")
        if metadata["format"] != "onnx":
            raise ExportError(f"{folder} holds an OpenVINO IR; ONNX Runtime needs an ONNX export (format='onnx')")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(folder / GRAPH_FILES["onnx"][0]), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ExportError(f"{folder}: ONNX Runtime cannot load the graph ({err}); export again") from err

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, bool]:
        """(the output, whether the graph's nystra layers overflowed their redo: see :data:`OVERFLOW_NAME`)."""
        outputs = self.session.run(None, {INPUT_NAME: x})
        return outputs[0], len(outputs) > 1 and bool(outputs[1])


class OpenVINOSession:
    """An exported graph (OpenVINO IR, or ONNX: the plugin reads both) compiled for the OpenVINO CPU plugin, in
    float32 or, where asked, the plugin's bfloat16 inference precision (inputs and outputs stay float32)."""

    def __init__(self, folder: Path, metadata: dict, threads: int, precision: str = "float32") -> None:
        ov = require("openvino", "the openvino backend")
        graph = folder / GRAPH_FILES[metadata["format"]][0]
        config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": OPENVINO_PRECISIONS[precision],
                  "PERFORMANCE_HINT": "LATENCY"}
        try:
            self.compiled = ov.Core().compile_model(str(graph), "CPU", config)
        except Exception as err:  # noqa: BLE001 - OpenVINO raises RuntimeError and its own types
            raise ExportError(f"{folder}: OpenVINO cannot load the graph ({err}); export again") from err
        self.request = self.compiled.create_infer_request()

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, bool]:
        """(the output, whether the graph's nystra layers overflowed their redo: see :data:`OVERFLOW_NAME`)."""
        self.request.infer({0: x})
        out = self.request.get_output_tensor(0).data.copy()  # the request reuses its buffer next call
        return out, len(self.compiled.outputs) > 1 and bool(self.request.get_output_tensor(1).data)


SESSIONS = {"onnxruntime": OnnxRuntimeSession, "openvino": OpenVINOSession}
# OpenVINO's inference precisions by this package's dtype names. bfloat16 runs the matrix products in bfloat16 on
# CPUs with bfloat16 units (AVX-512 BF16, AMX) and is an approximation: measure its PSNR before relying on it.
OPENVINO_PRECISIONS = {"float32": "f32", "bfloat16": "bf16"}


class ExportedRunner(Runner):
    """The model's export, one session per input shape: from ``exported`` (one folder, one shape) or found or
    written in ``cache_dir`` on first use of a shape. ``export_shapes``: None exports every new shape; otherwise
    only these are exported, and a shape neither listed nor cached runs the eager model in float32 (its export would
    not repay itself: :func:`choose_route`)."""

    def __init__(self, model: nn.Module, backend: str, cache_dir: str | os.PathLike | None = None,
                 exported: str | os.PathLike | None = None, threads: int | None = None,
                 opset: int = DEFAULT_OPSET, precision: str = "float32",
                 export_shapes: Collection[tuple] | None = None) -> None:
        super().__init__(model)
        if precision != "float32" and (backend != "openvino" or precision not in OPENVINO_PRECISIONS):
            raise ValueError(f"precision {precision!r}: the {backend} backend runs "
                             f"{sorted(OPENVINO_PRECISIONS) if backend == 'openvino' else ['float32']}")
        self.precision = precision
        self.backend = backend
        require(backend, f"the {backend} backend")  # the backend's name is its package's
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.exported = Path(exported) if exported is not None else None
        self.threads = threads or torch.get_num_threads()
        self.opset = opset
        self.identity = describe_model(model)  # hashes the weights once
        self.export_shapes = None if export_shapes is None else {tuple(shape) for shape in export_shapes}
        self.sessions: dict[tuple[int, ...], OnnxRuntimeSession | OpenVINOSession | None] = {}  # None: eager
        self.exported_metadata = None
        if self.exported is not None:  # refuse a wrong folder now, not at the first image
            self.exported_metadata = read_export(self.exported)
            check_export_matches(self.exported_metadata, self.exported, self.identity, opset)

    def forward(self, x: Tensor) -> Tensor:
        self.check(x)
        shape = tuple(x.shape)
        if shape not in self.sessions:
            self.sessions[shape] = self.load(shape)
        if self.sessions[shape] is None:
            with torch.autocast(x.device.type, enabled=False):  # a bfloat16 route's eager shapes: float32
                return self.model(x)
        out, overflowed = self.sessions[shape](np.ascontiguousarray(x.detach().cpu().numpy()))
        if overflowed:
            print(f"nystra_hub: a nystra layer had more untrustworthy windows than the exported graph recomputes "
                  f"exactly (input {shape[-2]}x{shape[-1]}); this input runs in the eager model instead",
                  file=sys.stderr, flush=True)
            with torch.autocast(x.device.type, enabled=False):
                return self.model(x)
        return torch.from_numpy(out).to(x.device)

    def load(self, shape: tuple[int, ...]):
        """The session for input ``shape`` (its folder checked against the model, opset and shape), or None where
        the shape runs eagerly (not in ``export_shapes`` and not cached)."""
        if self.exported is None and self.export_shapes is not None and shape not in self.export_shapes \
                and not self.is_cached(shape):
            return None
        if self.exported is not None:
            folder, metadata = self.exported, self.exported_metadata
        else:
            folder, metadata = self.cached_export(shape)
        check_export_matches(metadata, folder, self.identity, self.opset, shape)
        if self.backend == "openvino":
            return OpenVINOSession(folder, metadata, self.threads, self.precision)
        return SESSIONS[self.backend](folder, metadata, self.threads)

    def cache_folder(self, shape: tuple[int, ...]) -> Path:
        return self.cache_dir / cache_folder_name(self.identity, EXPORT_FORMATS[self.backend], self.opset, shape)

    def is_cached(self, shape: tuple[int, ...]) -> bool:
        """Whether the cache holds a readable export of input ``shape`` for this model."""
        try:
            read_export(self.cache_folder(tuple(shape)))
        except ExportError:
            return False
        return True

    def cached_export(self, shape: tuple[int, ...]) -> tuple[Path, dict]:
        """(the cache folder of ``shape``, its metadata), exported now if missing or unreadable."""
        format = EXPORT_FORMATS[self.backend]
        folder = self.cache_folder(shape)
        try:
            return folder, read_export(folder)
        except ExportError:
            pass
        print(f"nystra_hub: exporting the graph for input {shape[-2]}x{shape[-1]} to {format} (first use of this "
              f"shape; about half a minute for a base model, then cached in {self.cache_dir})", file=sys.stderr)
        try:
            export(self.model, folder, format, size=shape[-2:], batch=shape[0], channels=shape[1],
                   opset=self.opset, overwrite=folder.exists(), progress=lambda stage: print(
                       f"nystra_hub: export {shape[-2]}x{shape[-1]}: {stage}", file=sys.stderr, flush=True))
        except FileExistsError:
            pass  # another process exported it meanwhile; read_export checks its folder
        return folder, read_export(folder)


def cache_folder_name(identity: dict, format: str, opset: int, shape: tuple[int, ...]) -> str:
    """``<variant or arch>-<attention>-b<batch>-<h>x<w>-<format>-<digest>``, readable in a listing; the digest
    covers everything that shapes the graph (the model's identity with its weights, format, opset, shape,
    versions)."""
    key = {"model": identity, "format": format, "opset": opset, "shape": list(shape),
           "versions": export_versions(format)}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    name = identity.get("variant") or identity.get("arch") or identity.get("module", "module").rsplit(".", 1)[-1]
    attention = identity.get("attn_impl", "module")  # spandrel's models: their own forward
    return f"{name}-{attention}-b{shape[0]}-{shape[-2]}x{shape[-1]}-{format}-{digest}"


def make_runner(model: nn.Module, backend: str = "torch", *, cache_dir: str | os.PathLike | None = None,
                exported: str | os.PathLike | None = None, threads: int | None = None,
                opset: int = DEFAULT_OPSET, precision: str = "float32", export_shapes: Collection[tuple] | None = None,
                **compile_kwargs) -> Runner:
    """A :class:`Runner` of ``model``'s raw forward through ``backend`` (module doc). ``cache_dir`` and
    ``exported``: where the export backends find their graphs (``cache_dir`` is unused by the others);
    ``threads``: their intra-op threads; ``precision``: "float32", or "bfloat16" for openvino
    (:data:`OPENVINO_PRECISIONS`); ``export_shapes``: the only new shapes the export backends export (None: all;
    :class:`ExportedRunner`); ``compile_kwargs``: passed to ``torch.compile`` (backend "compile")."""
    if check_backend(backend) == "auto":
        backend = auto_backend(next(model.parameters()).device)
    if exported is not None and backend not in EXPORT_FORMATS:
        raise ValueError(f"exported= is a folder for the export backends {tuple(EXPORT_FORMATS)}, not {backend!r}")
    if export_shapes is not None and backend not in EXPORT_FORMATS:
        raise ValueError(f"export_shapes= is for the export backends {tuple(EXPORT_FORMATS)}, not {backend!r}")
    if compile_kwargs and backend != "compile":
        raise TypeError(f"{sorted(compile_kwargs)} are torch.compile arguments; backend {backend!r} takes none")
    if backend in ("torch", "compile", "cudagraphs") and precision != "float32":
        raise ValueError(f"precision= is for the openvino backend; {backend!r} takes dtype= in restore")
    model = as_restoration_model(model) or model
    if backend == "torch":
        return Runner(model)
    if backend == "compile":
        return CompiledRunner(model, **compile_kwargs)
    if backend == "cudagraphs":
        return CUDAGraphRunner(model)
    return ExportedRunner(model, backend, cache_dir, exported, threads, opset, precision, export_shapes)


# Runners made by name (restore(..., backend="openvino")) kept for the next call on the same model: an export
# runner hashes the weights and compiles its graph once (0.63-0.67 s per call on the SwinIR reference model at 64²
# made afresh, 0.11 s reused). Few entries: each holds its model alive.
SHARED_RUNNERS = 4
_shared_runners: OrderedDict[tuple, Runner] = OrderedDict()


def model_state_key(model: nn.Module) -> tuple:
    """Changes whenever what a runner captured of ``model`` may have: its attention settings and windows, and
    any tensor replaced or modified in place (each tensor's storage and version counter; no hashing)."""
    settings = describe_model(model, with_weights=False)
    tensors = tuple((name, t.data_ptr(), t._version, t.dtype, t.device) for name, t in model.state_dict().items())
    return json.dumps(settings, sort_keys=True, default=str), tensors


def shared_runner(model: nn.Module, backend: str, *, cache_dir: str | os.PathLike | None = None,
                  precision: str = "float32") -> Runner:
    """:func:`make_runner` once per (model, its state, backend, cache folder, precision, threads): later calls
    get the same runner, its sessions loaded and compiled, as long as the model is unchanged."""
    key = (id(model), backend, str(cache_dir), precision, torch.get_num_threads(), model_state_key(model))
    runner = _shared_runners.get(key)
    if runner is None or runner.model is not (as_restoration_model(model) or model):
        runner = make_runner(model, backend, cache_dir=cache_dir, precision=precision)
        _shared_runners[key] = runner
        while len(_shared_runners) > SHARED_RUNNERS:
            _shared_runners.popitem(last=False)
    _shared_runners.move_to_end(key)
    return runner
